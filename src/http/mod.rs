//! HTTP pieces the gateway writes itself: its own responses and the headers it owns.

pub mod body;
pub mod cookies;
pub mod failures;
pub mod headers;
pub mod path;
pub mod redirect;
pub mod responses;
pub mod target;
