//! oidc-gateway: an edge reverse proxy on Pingora that puts OpenID Connect login in front of any
//! HTTP service. The binary is a thin CLI over this library; tests and benches use it directly.

pub mod access_log;
pub mod admin;
pub mod admin_api;
pub mod auth;
pub mod bind_check;
pub mod cache;
pub mod claims;
pub mod clock;
pub mod config;
pub mod connections;
pub mod crypto;
#[cfg(feature = "demo")]
pub mod demo;
#[cfg(feature = "demo")]
pub mod devidp;
pub mod endpoints;
pub mod fleet;
pub mod h2;
pub mod handshake;
pub mod http;
pub mod kept;
pub mod logging;
pub mod metrics;
pub mod oidc;
pub mod proxy;
pub mod ratelimit;
pub mod readiness;
pub mod route_limit;
pub mod routing;
pub mod server;
pub mod session;
pub mod signals;
pub mod telemetry;
pub mod upgrade;
pub mod upstream;
