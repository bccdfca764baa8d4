//! What the client gets when proxying fails: the status for a Pingora error, the page for it,
//! and the deadline a slow request body is held to.

use crate::http::responses::Reply;
use pingora::ErrorSource;
use pingora::prelude::*;

/// The gateway's page (or JSON) for a failed proxy attempt with `status`.
pub fn reply(status: u16, html: bool) -> Reply {
    let (code, title, detail) = match status {
        504 => (
            "upstream_timeout",
            "Gateway timeout",
            "The upstream server did not answer in time.",
        ),
        503 => (
            "no_healthy_upstream",
            "Service unavailable",
            "No healthy upstream server is available. Try again shortly.",
        ),
        400 => (
            "bad_request",
            "Bad request",
            "The request could not be read.",
        ),
        408 => (
            "request_timeout",
            "Request timeout",
            "The request arrived too slowly.",
        ),
        s if s < 500 => ("bad_request", "Bad request", "The request was refused."),
        _ => (
            "bad_gateway",
            "Bad gateway",
            "The upstream server could not be reached or sent an invalid response.",
        ),
    };
    Reply::error(status, code, title, detail, html)
}

/// Whether a request body that has brought `bytes` after `elapsed` is below the minimum rate:
/// it gets `timeout`, plus one second for each `min_rate` bytes (as Apache's mod_reqtimeout).
pub fn body_too_slow(
    elapsed: std::time::Duration,
    bytes: u64,
    timeout: std::time::Duration,
    min_rate: u64,
) -> bool {
    if min_rate == 0 {
        return false;
    }
    let allowed = timeout.as_secs_f64() + bytes as f64 / min_rate as f64;
    elapsed.as_secs_f64() > allowed
}

/// The status for a failed proxy attempt: timeouts are 504, other upstream failures 502; a
/// client too slow to send its request gets 408.
pub fn status(e: &Error) -> u16 {
    match e.etype() {
        HTTPStatus(code) => *code,
        ReadTimedout if e.esource() == &ErrorSource::Downstream => 408,
        ConnectTimedout | ReadTimedout | WriteTimedout => 504,
        _ => match e.esource() {
            ErrorSource::Upstream => 502,
            ErrorSource::Downstream => match e.etype() {
                WriteError | ReadError | ConnectionClosed => 0,
                _ => 400,
            },
            ErrorSource::Internal | ErrorSource::Unset => 500,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_body_gets_its_timeout_plus_a_second_per_min_rate_bytes() {
        let t = Duration::from_secs(10);
        let s = Duration::from_secs;
        assert!(!body_too_slow(s(9), 0, t, 1024));
        assert!(body_too_slow(s(11), 0, t, 1024));
        assert!(!body_too_slow(s(11), 2048, t, 1024));
        assert!(body_too_slow(s(13), 2048, t, 1024));
        assert!(!body_too_slow(s(3600), 0, t, 0), "0 disables the minimum");
    }
}
