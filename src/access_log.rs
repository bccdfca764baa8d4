//! One access-log line per request, through `tracing` (target `access`), so `--log-format json`
//! turns it into a JSON object. The query string is never logged: it may carry codes or tokens.

use std::net::IpAddr;
use std::time::Duration;

/// Route label for requests that matched no route.
pub const UNROUTED: &str = "-";

/// Route label for the gateway's own endpoints (login callback, logout, userinfo).
pub const GATEWAY_ENDPOINT: &str = "_gateway";

/// What one request did.
pub struct Entry<'a> {
    /// Authenticated subject, if any.
    pub user: Option<&'a str>,
    /// Request method.
    pub method: &'a str,
    /// Request path without the query.
    pub path: &'a str,
    /// Route name or [`UNROUTED`].
    pub route: &'a str,
    /// Status sent (0 when the client went away first).
    pub status: u16,
    /// Upstream name, empty when none was used.
    pub upstream: &'a str,
    /// Upstream target address, empty when none was used.
    pub target: &'a str,
    /// Time from request start to the end of the response.
    pub duration: Duration,
    /// Client IP.
    pub client: Option<IpAddr>,
    /// The error that ended the request, if any.
    pub error: Option<&'a pingora::Error>,
}

/// Emits the line: server errors at WARN, everything else at INFO.
pub fn log(e: &Entry<'_>) {
    let duration_ms = e.duration.as_secs_f64() * 1000.0;
    let client = e.client.map(tracing::field::display);
    let error = e.error.map(tracing::field::display);
    if e.status >= 500 || (e.status == 0 && e.error.is_some()) {
        tracing::warn!(target: "access", method = e.method, path = e.path, route = e.route, status = e.status,
            upstream = e.upstream, target = e.target, duration_ms, client, user = e.user, error, "request");
    } else {
        tracing::info!(target: "access", method = e.method, path = e.path, route = e.route, status = e.status,
            upstream = e.upstream, target = e.target, duration_ms, client, user = e.user, error, "request");
    }
}
