//! HTTP routes that are more than a page: the documents API.

pub mod documents;
