//! HTTP routes that are more than a page: the documents API, staff sign-in, account admin,
//! API keys and the REST API v1.

pub mod admin;
pub mod api_keys_admin;
pub mod api_v1;
pub mod auth;
pub mod documents;
pub mod workspace;
