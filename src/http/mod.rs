//! HTTP pieces the gateway writes itself: its own responses and the headers it owns.

pub mod headers;
pub mod responses;
