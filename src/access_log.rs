//! One access-log line per request (target `access`), in the format of the rest of the log:
//! text by default, one JSON object with `--log-format json`. The query string is never
//! logged: it may carry codes or tokens.
//!
//! The line is formatted here, straight into a per-thread buffer, and handed to the log's sink
//! (`logging::access_line`): `tracing`'s formatter (field visitors, `fmt` machinery, a fresh
//! timestamp rendering per line) was one of the largest costs under load (docs/performance.md).
//! `tracing`'s filter still decides whether the line is written (`[log] level`, `RUST_LOG`).

use crate::logging;
use serde::Serialize;
use std::cell::RefCell;
use std::io::Write;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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

impl Entry<'_> {
    /// Server errors, and requests that failed before any status was sent, are warnings.
    fn is_warning(&self) -> bool {
        self.status >= 500 || (self.status == 0 && self.error.is_some())
    }
}

/// Writes the line: server errors at WARN, everything else at INFO.
pub fn log(e: &Entry<'_>) {
    let warn = e.is_warning();
    let enabled = if warn {
        tracing::enabled!(target: "access", tracing::Level::WARN)
    } else {
        tracing::enabled!(target: "access", tracing::Level::INFO)
    };
    let Some(json) = logging::access_json().filter(|_| enabled) else {
        return;
    };
    LINE.with_borrow_mut(|line| {
        line.buf.clear();
        line.stamp(SystemTime::now());
        if json {
            line.json(e);
        } else {
            line.text(e);
        }
        logging::access_line(&line.buf);
    });
}

thread_local! {
    static LINE: RefCell<Line> = const { RefCell::new(Line::new()) };
}

/// A thread's line buffer, and its timestamp rendering cached per second.
struct Line {
    buf: Vec<u8>,
    /// The Unix second `prefix` renders.
    second: u64,
    /// `2026-11-29T02:36:34.`
    prefix: [u8; 20],
    /// The current line's `2026-11-29T02:36:34.175987Z`.
    stamp: [u8; 27],
}

impl Line {
    const fn new() -> Line {
        Line {
            buf: Vec::new(),
            second: u64::MAX,
            prefix: [0; 20],
            stamp: [0; 27],
        }
    }

    fn stamp(&mut self, now: SystemTime) {
        let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        if since.as_secs() != self.second {
            self.second = since.as_secs();
            let at =
                chrono::DateTime::from_timestamp(since.as_secs() as i64, 0).unwrap_or_default();
            let mut w = &mut self.prefix[..];
            let _ = write!(w, "{}.", at.format("%Y-%m-%dT%H:%M:%S"));
        }
        self.stamp[..20].copy_from_slice(&self.prefix);
        let micros = since.subsec_micros();
        for (i, d) in self.stamp[20..26].iter_mut().enumerate() {
            *d = b'0' + (micros / 10u32.pow(5 - i as u32) % 10) as u8;
        }
        self.stamp[26] = b'Z';
    }

    /// `2026-11-29T02:36:34.175987Z  INFO access: request method="GET" path="/" ...`, the
    /// layout of `tracing`'s default formatter.
    fn text(&mut self, e: &Entry<'_>) {
        let b = &mut self.buf;
        b.extend_from_slice(&self.stamp);
        b.extend_from_slice(if e.is_warning() {
            b"  WARN access: request"
        } else {
            b"  INFO access: request"
        });
        quoted(b, " method=", e.method);
        quoted(b, " path=", e.path);
        quoted(b, " route=", e.route);
        b.extend_from_slice(b" status=");
        b.extend_from_slice(itoa::Buffer::new().format(e.status).as_bytes());
        quoted(b, " upstream=", e.upstream);
        quoted(b, " target=", e.target);
        let micros = e.duration.as_micros();
        let _ = write!(b, " duration_ms={}.{:03}", micros / 1000, micros % 1000);
        if let Some(ip) = e.client {
            let _ = write!(b, " client={ip}");
        }
        if let Some(user) = e.user {
            quoted(b, " user=", user);
        }
        if let Some(err) = e.error {
            quoted(b, " error=", &err.to_string());
        }
        b.push(b'\n');
    }

    /// The object `tracing`'s JSON formatter writes for the same event (flattened fields).
    fn json(&mut self, e: &Entry<'_>) {
        let stamp = std::str::from_utf8(&self.stamp).unwrap_or_default();
        let line = JsonLine {
            timestamp: stamp,
            level: if e.is_warning() { "WARN" } else { "INFO" },
            method: e.method,
            path: e.path,
            route: e.route,
            status: e.status,
            upstream: e.upstream,
            upstream_target: e.target,
            duration_ms: e.duration.as_micros() as f64 / 1000.0,
            client: e.client,
            user: e.user,
            error: e.error.map(|e| e.to_string()),
            message: "request",
            target: "access",
        };
        if serde_json::to_writer(&mut self.buf, &line).is_ok() {
            self.buf.push(b'\n');
        } else {
            self.buf.clear();
        }
    }
}

#[derive(Serialize)]
struct JsonLine<'a> {
    timestamp: &'a str,
    level: &'static str,
    method: &'a str,
    path: &'a str,
    route: &'a str,
    status: u16,
    upstream: &'a str,
    /// Named `target` in text lines; in JSON `target` is the event's, as in every other line.
    upstream_target: &'a str,
    duration_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    client: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    message: &'static str,
    target: &'static str,
}

/// ` key="value"`, escaped as `{:?}` escapes a string (what `tracing` writes for `&str` fields).
fn quoted(b: &mut Vec<u8>, key: &str, value: &str) {
    b.extend_from_slice(key.as_bytes());
    if value
        .bytes()
        .all(|c| (0x20..0x7f).contains(&c) && c != b'"' && c != b'\\')
    {
        b.push(b'"');
        b.extend_from_slice(value.as_bytes());
        b.push(b'"');
    } else {
        let _ = write!(b, "{value:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry<'a>() -> Entry<'a> {
        Entry {
            user: Some("al\"ice"),
            method: "GET",
            path: "/reports",
            route: "app",
            status: 200,
            upstream: "app",
            target: "10.0.2.20:3000",
            duration: Duration::from_micros(2_640),
            client: Some(IpAddr::from([10, 0, 0, 5])),
            error: None,
        }
    }

    fn line(json: bool, e: &Entry<'_>, at: SystemTime) -> String {
        let mut l = Line::new();
        l.stamp(at);
        if json {
            l.json(e)
        } else {
            l.text(e)
        }
        String::from_utf8(l.buf).unwrap()
    }

    const AT: u64 = 1_795_919_794; // 2026-11-29T02:36:34Z

    #[test]
    fn text_line_has_every_field_quoted_and_escaped() {
        let at = UNIX_EPOCH + Duration::from_micros(AT * 1_000_000 + 175_987);
        assert_eq!(
            line(false, &entry(), at),
            "2026-11-29T02:36:34.175987Z  INFO access: request method=\"GET\" path=\"/reports\" \
             route=\"app\" status=200 upstream=\"app\" target=\"10.0.2.20:3000\" \
             duration_ms=2.640 client=10.0.0.5 user=\"al\\\"ice\"\n"
        );
    }

    #[test]
    fn server_errors_are_warnings_and_carry_the_error() {
        let err = pingora::Error::explain(pingora::ErrorType::ConnectRefused, "no \"answer\"");
        let e = Entry {
            status: 502,
            user: None,
            client: None,
            error: Some(&err),
            ..entry()
        };
        let text = line(false, &e, UNIX_EPOCH + Duration::from_secs(AT));
        assert!(text.starts_with("2026-11-29T02:36:34.000000Z  WARN access: request "));
        assert!(text.contains(" status=502 "));
        assert!(!text.contains("user=") && !text.contains("client="));
        assert!(text.contains(" error=\"") && text.contains("\\\"answer\\\""));

        let v: serde_json::Value =
            serde_json::from_str(&line(true, &e, UNIX_EPOCH + Duration::from_secs(AT))).unwrap();
        assert_eq!(v["level"], "WARN");
        assert!(v["error"].as_str().unwrap().contains("\"answer\""));
        assert!(v.get("user").is_none());
    }

    #[test]
    fn json_line_is_one_object_with_typed_fields() {
        let at = UNIX_EPOCH + Duration::from_micros(AT * 1_000_000 + 5);
        let text = line(true, &entry(), at);
        assert!(text.ends_with("}\n") && text.matches('\n').count() == 1);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["timestamp"], "2026-11-29T02:36:34.000005Z");
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["status"], 200);
        assert_eq!(v["duration_ms"], 2.64);
        assert_eq!(v["client"], "10.0.0.5");
        assert_eq!(v["user"], "al\"ice");
        assert_eq!(v["message"], "request");
        assert_eq!(v["target"], "access");
        assert_eq!(v["upstream_target"], "10.0.2.20:3000");
    }

    #[test]
    fn the_cached_second_is_rendered_again_when_the_second_changes() {
        let mut l = Line::new();
        l.stamp(UNIX_EPOCH + Duration::from_secs(AT));
        l.stamp(UNIX_EPOCH + Duration::from_millis(AT * 1000 + 1_500));
        assert_eq!(&l.stamp[..], b"2026-11-29T02:36:35.500000Z");
    }
}
