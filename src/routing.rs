//! Matching a request (host, canonical path, method) to a route. Runs on every request, so it
//! allocates nothing: hosts are looked up in hash maps, prefixes compared in place.

use crate::config::{Route, RouteId};
use crate::http::path;
use std::collections::HashMap;

/// A matched route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteMatch {
    /// Index into the configuration's routes.
    pub route: RouteId,
    /// Byte offset in the canonical path where the part after the matched prefix begins.
    pub rest: usize,
}

#[derive(Debug, Clone)]
struct Entry {
    prefix: Box<str>,
    methods: Box<[http::Method]>,
    route: usize,
}

/// Routes compiled for lookup. Precedence: an exact host beats a wildcard host (the longest
/// wildcard first), which beats routes without hosts; within a tier the longest path prefix
/// wins, then file order. A tier without a match falls through to the next.
#[derive(Debug, Default)]
pub struct RouteTable {
    exact: HashMap<Box<str>, Vec<Entry>>,
    /// (".example.org", entries), longest suffix first.
    wildcard: Vec<(Box<str>, Vec<Entry>)>,
    any_host: Vec<Entry>,
}

impl RouteTable {
    /// Compiles the configured routes.
    pub fn new(routes: &[Route]) -> Self {
        let mut t = RouteTable::default();
        for (idx, r) in routes.iter().enumerate() {
            for p in &r.paths {
                let entry = Entry {
                    prefix: p.as_str().into(),
                    methods: r.methods.clone().into(),
                    route: idx,
                };
                if r.hosts.is_empty() {
                    t.any_host.push(entry.clone());
                }
                for h in &r.hosts {
                    if let Some(suffix) = h.strip_prefix('*') {
                        match t.wildcard.iter_mut().find(|(s, _)| **s == *suffix) {
                            Some((_, list)) => list.push(entry.clone()),
                            None => t.wildcard.push((suffix.into(), vec![entry.clone()])),
                        }
                    } else {
                        t.exact
                            .entry(h.as_str().into())
                            .or_default()
                            .push(entry.clone());
                    }
                }
            }
        }
        // Stable sorts keep file order among equal prefixes.
        let by_prefix = |l: &mut Vec<Entry>| l.sort_by_key(|e| std::cmp::Reverse(e.prefix.len()));
        t.exact.values_mut().for_each(by_prefix);
        t.wildcard.iter_mut().for_each(|(_, l)| by_prefix(l));
        by_prefix(&mut t.any_host);
        t.wildcard.sort_by_key(|w| std::cmp::Reverse(w.0.len()));
        t
    }

    /// Finds the route for a request. `host` may carry a port and any case; `path` must be
    /// canonical (see [`path::canonicalize`]).
    pub fn find(&self, host: &str, path: &str, method: &http::Method) -> Option<RouteMatch> {
        let mut buf = [0u8; 253];
        let host = normalize_host(host, &mut buf);
        if !host.is_empty() {
            if let Some(m) = self
                .exact
                .get(host)
                .and_then(|l| first_match(l, path, method))
            {
                return Some(m);
            }
            for (suffix, list) in &self.wildcard {
                if host.len() > suffix.len()
                    && host.ends_with(&**suffix)
                    && let Some(m) = first_match(list, path, method)
                {
                    return Some(m);
                }
            }
        }
        first_match(&self.any_host, path, method)
    }
}

fn first_match(list: &[Entry], path: &str, method: &http::Method) -> Option<RouteMatch> {
    list.iter().find_map(|e| {
        if !e.methods.is_empty() && !e.methods.contains(method) {
            return None;
        }
        path::match_prefix(&e.prefix, path).map(|rest| RouteMatch {
            route: RouteId(e.route),
            rest,
        })
    })
}

/// Strips the port and a trailing dot and lower-cases into `buf` (without allocating).
/// Returns "" for hosts that cannot be a DNS name.
pub fn normalize_host<'a>(host: &'a str, buf: &'a mut [u8; 253]) -> &'a str {
    let host = if host.starts_with('[') {
        // IPv6 literal: keep as is up to the closing bracket.
        return host.split_inclusive(']').next().unwrap_or("");
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.len() > buf.len() {
        return "";
    }
    if !host.bytes().any(|c| c.is_ascii_uppercase()) {
        return host;
    }
    let out = &mut buf[..host.len()];
    out.copy_from_slice(host.as_bytes());
    out.make_ascii_lowercase();
    // Lower-casing ASCII keeps UTF-8 valid; fall back to "" rather than panic if it was not.
    std::str::from_utf8(out).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Auth, UpstreamId};
    use http::Method;

    fn route(name: &str, hosts: &[&str], paths: &[&str], methods: &[Method]) -> Route {
        Route {
            name: name.into(),
            hosts: hosts.iter().map(|s| s.to_string()).collect(),
            paths: paths.iter().map(|s| s.to_string()).collect(),
            methods: methods.to_vec(),
            upstream: UpstreamId(0),
            strip_path: false,
            preserve_host: true,
            preserve_post: None,
            auth: Auth::None,
            rate_limit: None,
        }
    }

    fn table() -> RouteTable {
        RouteTable::new(&[
            route("root", &[], &["/"], &[]),
            route("api", &[], &["/api"], &[]),
            route("api-v1-post", &[], &["/api/v1"], &[Method::POST]),
            route("exact", &["app.example.com"], &["/"], &[]),
            route("wild", &["*.example.com"], &["/", "/static"], &[]),
            route("deeper-wild", &["*.eu.example.com"], &["/"], &[]),
            route("exact-api-only", &["api.example.org"], &["/api"], &[]),
        ])
    }

    fn find(host: &str, path: &str, method: Method) -> Option<(usize, usize)> {
        table()
            .find(host, path, &method)
            .map(|m| (m.route.index(), m.rest))
    }

    #[test]
    fn longest_prefix_wins() {
        assert_eq!(find("x", "/", Method::GET), Some((0, 0)));
        assert_eq!(find("x", "/api/v1/items", Method::GET), Some((1, 4)));
        assert_eq!(find("x", "/api/v1/items", Method::POST), Some((2, 7)));
        assert_eq!(find("x", "/apiary", Method::GET), Some((0, 0)));
    }

    #[test]
    fn exact_host_beats_wildcard_and_deeper_wildcard_beats_shallower() {
        assert_eq!(find("app.example.com", "/x", Method::GET), Some((3, 0)));
        assert_eq!(
            find("APP.Example.com:8443", "/x", Method::GET),
            Some((3, 0))
        );
        assert_eq!(
            find("other.example.com", "/static/a", Method::GET),
            Some((4, 7))
        );
        assert_eq!(find("a.eu.example.com", "/", Method::GET), Some((5, 0)));
        assert_eq!(find("example.com", "/", Method::GET), Some((0, 0)));
    }

    #[test]
    fn a_tier_without_a_match_falls_through() {
        assert_eq!(find("api.example.org", "/api/x", Method::GET), Some((6, 4)));
        assert_eq!(find("api.example.org", "/other", Method::GET), Some((0, 0)));
    }

    #[test]
    fn nothing_matches_without_a_catch_all() {
        let t = RouteTable::new(&[route("a", &["a.test"], &["/a"], &[])]);
        assert_eq!(t.find("b.test", "/a", &Method::GET), None);
        assert_eq!(t.find("a.test", "/b", &Method::GET), None);
    }
}
