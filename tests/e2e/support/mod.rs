//! Shared pieces of the end-to-end tests: real processes and servers on 127.0.0.1.

pub mod browser;
pub mod config;
pub mod faults;
pub mod front;
pub mod gateway;
pub mod hostile_op;
pub mod lenient;
pub mod op;
pub mod otlp;
pub mod pki;
pub mod redis;
pub mod upstream;

pub use browser::*;
pub use config::*;
pub use gateway::*;
pub use hostile_op::*;
pub use lenient::*;
pub use op::*;
pub use otlp::*;
pub use pki::*;
pub use upstream::*;

/// An HTTP client that never reuses connections (so each request sees the listener).
pub fn fresh_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .unwrap()
}

/// An HTTP client with keep-alive and no redirects.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .unwrap()
}

/// The `WWW-Authenticate` challenge of an answer (empty when it has none).
pub fn www_authenticate(r: &reqwest::Response) -> String {
    r.headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}
