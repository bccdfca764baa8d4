//! The request line as the gateway accepts it: what is routed must be what is forwarded.
//!
//! Pingora keeps the raw request-target for the wire and anchors its `Uri` to `/` when the
//! target is not in origin form, so `GET admin HTTP/1.1` reads as `/` while a lenient upstream
//! (werkzeug, Python's `http.server`) serves it as `/admin`. Likewise `post /x` misses a
//! `POST`-only route while those upstreams upper-case the method. So the gateway reads the raw
//! target itself, accepts only the forms it can canonicalise, and refuses everything else:
//!
//! - origin form `/path?query`: the path is canonicalised; the client's bytes go upstream only
//!   when they already are the canonical path;
//! - absolute form `http://host/path?query`: the authority must be the `Host`; the upstream gets
//!   the canonical origin form;
//! - `*`, for `OPTIONS` only: routed as `/`, forwarded as `*`;
//! - a method with a lower-case letter is refused, never routed by a case-sensitive miss.

use crate::http::path::{self, PathError};
use pingora::http::RequestHeader;
use pingora::protocols::http::authority::{RawTargetAuthority, raw_target_authority};
use std::borrow::Cow;

/// The request-target the gateway routes, authorizes, forwards and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target<'a> {
    /// The canonical path (`/` for `OPTIONS *`).
    pub path: Cow<'a, str>,
    /// The query after `?`, forwarded as the client sent it.
    pub query: Option<&'a [u8]>,
    /// How the upstream request line must carry it.
    pub forward: Forward,
}

/// What the upstream request line carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forward {
    /// The client's own bytes: they are the canonical origin-form target.
    AsSent,
    /// The canonical path and the query, in origin form.
    Canonical,
    /// `*` (`OPTIONS *`).
    Asterisk,
}

/// Why a request line was refused (400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The method has lower-case letters.
    #[error("methods are case-sensitive: send the method in upper case")]
    Method,
    /// Not origin form, absolute form or `OPTIONS *`.
    #[error("the request-target must be a path starting with '/'")]
    Form,
    /// `*` with another method than `OPTIONS`.
    #[error("'*' is a request-target only for OPTIONS")]
    Asterisk,
    /// An absolute-form target whose scheme is not http(s) or whose authority is not the Host.
    #[error("the request-target's host does not match the Host header")]
    Authority,
    /// The path cannot be canonicalised.
    #[error("{0}")]
    Path(#[from] PathError),
}

impl Refusal {
    /// A short machine-readable reason, for JSON answers and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::Method => "bad_method",
            Refusal::Form | Refusal::Asterisk | Refusal::Authority => "bad_target",
            Refusal::Path(_) => "bad_path",
        }
    }
}

/// Reads the request's method and target.
pub fn read(req: &RequestHeader, allow_encoded_slashes: bool) -> Result<Target<'_>, Refusal> {
    if req.method.as_str().bytes().any(|b| b.is_ascii_lowercase()) {
        return Err(Refusal::Method);
    }
    let raw = req.raw_path();
    if raw == b"*" {
        return if req.method == http::Method::OPTIONS {
            Ok(Target {
                path: Cow::Borrowed("/"),
                query: None,
                forward: Forward::Asterisk,
            })
        } else {
            Err(Refusal::Asterisk)
        };
    }
    if raw.first() == Some(&b'/') {
        let (p, query) = split_query(raw);
        let path = path::canonicalize(p, allow_encoded_slashes)?;
        let forward = match path {
            Cow::Borrowed(_) => Forward::AsSent,
            Cow::Owned(_) => Forward::Canonical,
        };
        return Ok(Target {
            path,
            query,
            forward,
        });
    }
    let RawTargetAuthority::Absolute {
        scheme,
        authority,
        path_and_query,
    } = raw_target_authority(raw)
    else {
        return Err(Refusal::Form);
    };
    let host = req.headers.get(http::header::HOST).map(|h| h.as_bytes());
    let http_scheme = scheme.eq_ignore_ascii_case(b"http") || scheme.eq_ignore_ascii_case(b"https");
    if !http_scheme || !host.is_some_and(|h| h.eq_ignore_ascii_case(authority)) {
        return Err(Refusal::Authority);
    }
    let (p, query) = match path_and_query.first() {
        None => (&b"/"[..], None),
        Some(b'?') => (&b"/"[..], Some(&path_and_query[1..])),
        Some(b'/') => split_query(path_and_query),
        Some(_) => return Err(Refusal::Form),
    };
    Ok(Target {
        path: path::canonicalize(p, allow_encoded_slashes)?,
        query,
        forward: Forward::Canonical,
    })
}

fn split_query(target: &[u8]) -> (&[u8], Option<&[u8]>) {
    match memchr::memchr(b'?', target) {
        Some(i) => (&target[..i], Some(&target[i + 1..])),
        None => (target, None),
    }
}

impl Target<'_> {
    /// The origin-form target for the upstream when the client's bytes are not it;
    /// `path` is the canonical path, or what is left of it after `strip_path`.
    pub fn upstream_bytes(&self, path: &str) -> Option<Vec<u8>> {
        match self.forward {
            Forward::Asterisk => return None,
            Forward::AsSent if path == self.path => return None,
            _ => {}
        }
        let mut out = Vec::with_capacity(path.len() + self.query.map_or(0, |q| q.len() + 1));
        out.extend_from_slice(path.as_bytes());
        if let Some(q) = self.query {
            out.push(b'?');
            out.extend_from_slice(q);
        }
        Some(out)
    }
}

/// The raw request-target, escaped for a log line (bytes outside printable ASCII as `\xNN`).
pub fn escaped_raw(req: &RequestHeader) -> String {
    req.raw_path().escape_ascii().to_string()
}

/// `path`, with `?query` when there is one.
pub fn with_query(path: &str, query: Option<&str>) -> String {
    match query {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, target: &[u8], host: Option<&str>) -> RequestHeader {
        let mut r = RequestHeader::build(method, target, None).unwrap();
        if let Some(h) = host {
            r.insert_header("host", h).unwrap();
        }
        r
    }

    fn read_one(
        method: &str,
        target: &[u8],
    ) -> Result<(String, Option<Vec<u8>>, Forward), Refusal> {
        let r = req(method, target, Some("app.test"));
        read(&r, false).map(|t| (t.path.into_owned(), t.query.map(<[u8]>::to_vec), t.forward))
    }

    #[test]
    fn origin_form_is_canonicalised_and_kept_when_already_canonical() {
        assert_eq!(
            read_one("GET", b"/a/b?x=1"),
            Ok(("/a/b".into(), Some(b"x=1".to_vec()), Forward::AsSent))
        );
        assert_eq!(
            read_one("GET", b"/x/../%61dmin?q"),
            Ok(("/admin".into(), Some(b"q".to_vec()), Forward::Canonical))
        );
        assert_eq!(
            read_one("GET", b"/caf\xc3\xa9"),
            Ok(("/caf%C3%A9".into(), None, Forward::Canonical))
        );
    }

    #[test]
    fn targets_not_in_origin_form_are_refused() {
        for t in [
            &b"admin"[..],
            b"admin/x",
            b"admin?x=1",
            b"%61dmin",
            b"%2fadmin",
            b"?x",
            b"app.test:80",
            b"mailto:x@y",
            b"http:/\\app.test/admin",
        ] {
            let r = read_one("GET", t);
            assert!(
                matches!(r, Err(Refusal::Form | Refusal::Authority)),
                "{}: {r:?}",
                t.escape_ascii()
            );
        }
    }

    #[test]
    fn absolute_form_must_name_the_host_and_goes_upstream_in_origin_form() {
        assert_eq!(
            read_one("GET", b"http://APP.test/x/./admin?q=1"),
            Ok(("/x/admin".into(), Some(b"q=1".to_vec()), Forward::Canonical))
        );
        assert_eq!(
            read_one("GET", b"https://app.test?q"),
            Ok(("/".into(), Some(b"q".to_vec()), Forward::Canonical))
        );
        assert_eq!(
            read_one("GET", b"http://other.test/admin"),
            Err(Refusal::Authority)
        );
        assert_eq!(
            read_one("GET", b"ftp://app.test/admin"),
            Err(Refusal::Authority)
        );
        let no_host = req("GET", b"http://app.test/", None);
        assert_eq!(read(&no_host, false), Err(Refusal::Authority));
    }

    #[test]
    fn asterisk_only_for_options_and_methods_only_in_upper_case() {
        assert_eq!(
            read_one("OPTIONS", b"*"),
            Ok(("/".into(), None, Forward::Asterisk))
        );
        assert_eq!(read_one("GET", b"*"), Err(Refusal::Asterisk));
        for m in ["post", "Delete", "PoSt", "get", "oPTIONS"] {
            assert_eq!(read_one(m, b"/api2"), Err(Refusal::Method), "{m}");
        }
        assert!(read_one("PROPFIND", b"/").is_ok());
        assert!(read_one("M-SEARCH", b"/").is_ok());
    }

    #[test]
    fn the_upstream_target_is_the_path_routed_plus_the_query() {
        let r = req("GET", b"/a/../b?x=%2F", Some("h"));
        let t = read(&r, false).unwrap();
        assert_eq!(t.upstream_bytes(&t.path), Some(b"/b?x=%2F".to_vec()));
        let r = req("GET", b"/api/v1?x", Some("h"));
        let t = read(&r, false).unwrap();
        assert_eq!(t.upstream_bytes(&t.path), None, "already canonical");
        assert_eq!(
            t.upstream_bytes("/v1"),
            Some(b"/v1?x".to_vec()),
            "stripped prefix"
        );
        let r = req("OPTIONS", b"*", Some("h"));
        let t = read(&r, false).unwrap();
        assert_eq!(t.upstream_bytes(&t.path), None);
    }
}
