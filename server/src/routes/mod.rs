//! HTTP routes that are more than a page: the documents API, staff sign-in, account admin.

pub mod admin;
pub mod auth;
pub mod documents;
pub mod workspace;
