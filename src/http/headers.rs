//! Request headers the gateway owns: `X-Forwarded-*` (believed only from trusted proxies) and
//! header scrubbing that catches every case and `_`/`-` spelling, because many upstream stacks
//! (CGI, WSGI, PHP) read `X_Forwarded_For` and `X-Forwarded-For` as the same variable.

use pingora::http::RequestHeader;
use std::net::IpAddr;

/// Headers that describe the client connection (address, host, scheme); only a trusted proxy
/// may send them. Upstream frameworks read any of them as the client's address or scheme.
pub const FORWARDING_HEADERS: &[&str] = &[
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-forwarded-scheme",
    "x-forwarded-ssl",
    "x-real-ip",
    "true-client-ip",
    "x-client-ip",
    "cf-connecting-ip",
    "x-cluster-client-ip",
    "fastly-client-ip",
];

/// Headers that make some upstream frameworks (Symfony, IIS, Rails, Express middleware) serve
/// another path or method than the request line names. The gateway routes on the request line
/// only, so these would let a client route past it: removed from every request.
pub const OVERRIDE_HEADERS: &[&str] = &[
    "x-original-url",
    "x-rewrite-url",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// Identity headers a client must never be able to send to an upstream.
pub const IDENTITY_HEADERS: &[&str] = &[
    "x-forwarded-user",
    "x-forwarded-email",
    "x-forwarded-groups",
    "x-forwarded-preferred-username",
    "x-forwarded-access-token",
    "x-userinfo",
    "x-id-token",
    "x-access-token",
    "x-credential-identifier",
    "x-authenticated-groups",
    "x-authenticated-userid",
    "x-anonymous-consumer",
    "x-remote-user",
    "remote-user",
    "x-user",
    "x-email",
];

/// Prefixes of identity header families.
pub const IDENTITY_PREFIXES: &[&str] = &["x-auth-request-", "x-consumer-"];

/// The identity and override headers removed from every request unless `[server] keep_headers`
/// names them: the defaults a deployment may opt out of.
pub fn default_scrubbed() -> impl Iterator<Item = &'static str> {
    IDENTITY_HEADERS.iter().chain(OVERRIDE_HEADERS).copied()
}

/// Why a request's header section was refused (400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// More than one `Authorization` field.
    #[error("send one Authorization header, not several")]
    DuplicateAuthorization,
    /// `Content-Length` values that differ or do not parse (RFC 9112 section 6.3).
    #[error("the Content-Length values disagree")]
    ContentLength,
    /// A `GET` or `HEAD` with a body: its content has no meaning (RFC 9110 section 9.3.1), and
    /// an upstream that does not read it would take it for the next request.
    #[error("a GET or HEAD request cannot carry a body")]
    BodyNotAllowed,
}

impl HeaderError {
    /// A short machine-readable reason, for JSON answers and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            HeaderError::DuplicateAuthorization => "duplicate_authorization",
            HeaderError::ContentLength => "bad_content_length",
            HeaderError::BodyNotAllowed => "body_not_allowed",
        }
    }
}

/// Refuses header sections two parties could read differently: several `Authorization` fields
/// (one checked, another used), disagreeing `Content-Length` values, and a body on a `GET` or
/// `HEAD` (which many upstreams never read, and would then parse as a request of its own).
pub fn check_framing(method: &http::Method, headers: &http::HeaderMap) -> Result<(), HeaderError> {
    if headers
        .get_all(http::header::AUTHORIZATION)
        .iter()
        .nth(1)
        .is_some()
    {
        return Err(HeaderError::DuplicateAuthorization);
    }
    let length = content_length(headers)?;
    if (method == http::Method::GET || method == http::Method::HEAD)
        && (length.is_some_and(|n| n > 0) || headers.contains_key(http::header::TRANSFER_ENCODING))
    {
        return Err(HeaderError::BodyNotAllowed);
    }
    Ok(())
}

/// The one `Content-Length` of a request, when every value (fields and comma-separated list
/// items) agrees.
fn content_length(headers: &http::HeaderMap) -> Result<Option<u64>, HeaderError> {
    let mut found = None;
    for value in headers.get_all(http::header::CONTENT_LENGTH) {
        let text = value.to_str().map_err(|_| HeaderError::ContentLength)?;
        for item in text.split(',') {
            let item = item.trim();
            if item.is_empty() || !item.bytes().all(|b| b.is_ascii_digit()) {
                return Err(HeaderError::ContentLength);
            }
            let n: u64 = item.parse().map_err(|_| HeaderError::ContentLength)?;
            match found {
                Some(prev) if prev != n => return Err(HeaderError::ContentLength),
                _ => found = Some(n),
            }
        }
    }
    Ok(found)
}

/// Sends agreeing duplicate `Content-Length` values (`5, 5` or two fields) upstream as one.
pub fn collapse_content_length(req: &mut RequestHeader) -> pingora::Result<()> {
    let mut values = req.headers.get_all(http::header::CONTENT_LENGTH).iter();
    let single = match (values.next(), values.next()) {
        (None, _) => return Ok(()),
        (Some(v), None) => !v.as_bytes().contains(&b','),
        _ => false,
    };
    if single {
        return Ok(());
    }
    match content_length(&req.headers) {
        Ok(Some(n)) => req.insert_header(http::header::CONTENT_LENGTH, n.to_string()),
        _ => Err(pingora::Error::explain(
            pingora::ErrorType::InvalidHTTPHeader,
            "disagreeing Content-Length values",
        )),
    }
}

/// A set of header names (lower case, `-` spelling) and name prefixes to remove.
#[derive(Debug, Clone, Default)]
pub struct HeaderSet {
    /// Exact names.
    pub names: Vec<String>,
    /// Prefixes such as `x-auth-request-`.
    pub prefixes: Vec<String>,
}

impl HeaderSet {
    /// A set from lists of names and prefixes (any case, either spelling).
    pub fn new<'a>(
        names: impl IntoIterator<Item = &'a str>,
        prefixes: impl IntoIterator<Item = &'a str>,
    ) -> HeaderSet {
        let norm = |s: &str| s.to_ascii_lowercase().replace('_', "-");
        let mut names: Vec<String> = names.into_iter().map(norm).collect();
        names.sort();
        names.dedup();
        HeaderSet {
            names,
            prefixes: prefixes.into_iter().map(norm).collect(),
        }
    }

    /// True when `name` (already lower case, as `http` stores it) is in the set under any
    /// `_`/`-` spelling.
    pub fn contains(&self, name: &str) -> bool {
        self.names.iter().any(|n| same_name(name, n))
            || self.prefixes.iter().any(|p| {
                name.len() > p.len()
                    && name.is_char_boundary(p.len())
                    && same_name(&name[..p.len()], p)
            })
    }
}

/// Compares a received header name with a canonical one, treating `_` as `-`.
fn same_name(received: &str, canonical: &str) -> bool {
    received.len() == canonical.len()
        && received
            .bytes()
            .zip(canonical.bytes())
            .all(|(r, c)| r == c || (r == b'_' && c == b'-'))
}

/// Removes every header in `set`, whatever its spelling.
pub fn scrub(req: &mut RequestHeader, set: &HeaderSet) {
    let doomed: Vec<http::HeaderName> = req
        .headers
        .keys()
        .filter(|k| set.contains(k.as_str()))
        .cloned()
        .collect();
    for name in doomed {
        req.remove_header(&name);
    }
}

/// The client connection as the gateway saw it.
#[derive(Debug, Clone, Copy)]
pub struct ClientConn<'a> {
    /// Peer IP of the TCP connection.
    pub ip: Option<IpAddr>,
    /// The peer is a configured trusted proxy.
    pub trusted: bool,
    /// The connection arrived on a TLS listener.
    pub tls: bool,
    /// Host the client asked for (Host header or HTTP/2 authority).
    pub host: &'a str,
}

/// Sets `X-Forwarded-For`, `-Proto` and `-Host`. From a trusted proxy the chain is extended
/// and its proto/host kept; from anyone else every forwarding header is replaced.
pub fn set_forwarded(req: &mut RequestHeader, conn: &ClientConn<'_>) -> pingora::Result<()> {
    let ip = conn.ip.map(|ip| ip.to_string()).unwrap_or_default();
    if conn.trusted {
        let chain = req
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>()
            .join(", ");
        let xff = if chain.is_empty() {
            ip
        } else {
            format!("{chain}, {ip}")
        };
        req.insert_header("x-forwarded-for", xff)?;
        if !req.headers.contains_key("x-forwarded-proto") {
            req.insert_header("x-forwarded-proto", proto(conn.tls))?;
        }
        if !req.headers.contains_key("x-forwarded-host") && !conn.host.is_empty() {
            req.insert_header("x-forwarded-host", conn.host)?;
        }
        return Ok(());
    }
    scrub(req, &FORWARDING);
    req.insert_header("x-forwarded-for", ip)?;
    req.insert_header("x-forwarded-proto", proto(conn.tls))?;
    if !conn.host.is_empty() {
        req.insert_header("x-forwarded-host", conn.host)?;
    }
    Ok(())
}

static FORWARDING: std::sync::LazyLock<HeaderSet> =
    std::sync::LazyLock::new(|| HeaderSet::new(FORWARDING_HEADERS.iter().copied(), []));

/// A static value: `insert_header` copies a `&str` value into a new allocation, not this.
fn proto(tls: bool) -> http::HeaderValue {
    http::HeaderValue::from_static(if tls { "https" } else { "http" })
}

/// The client's address: the peer's, or, when the peer is a trusted proxy, the nearest address
/// in `X-Forwarded-For` that is not one (walking from the right, as each proxy appends the
/// address it saw). An entry that is not an address ends the walk at the proxy that added it.
pub fn client_ip(
    peer: Option<IpAddr>,
    headers: &http::HeaderMap,
    trusted: &[ipnet::IpNet],
) -> Option<IpAddr> {
    let mut client = peer?;
    if !is_trusted(Some(client), trusted) {
        return Some(client);
    }
    let hops = headers
        .get_all("x-forwarded-for")
        .iter()
        .rev()
        .flat_map(|v| v.to_str().unwrap_or("").rsplit(','));
    for hop in hops {
        let Ok(ip) = hop.trim().parse::<IpAddr>() else {
            break;
        };
        client = ip;
        if !is_trusted(Some(ip), trusted) {
            break;
        }
    }
    Some(client)
}

/// True when `ip` lies in one of the trusted networks.
pub fn is_trusted(ip: Option<IpAddr>, trusted: &[ipnet::IpNet]) -> bool {
    let Some(ip) = ip else { return false };
    // An IPv4 client on a dual-stack socket shows up as ::ffff:a.b.c.d.
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    trusted.iter().any(|n| n.contains(&ip))
}

/// The host the client asked for: HTTP/1 `Host`, or the HTTP/2 `:authority`.
pub fn request_host(req: &RequestHeader) -> &str {
    req.headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri.authority().map(|a| a.as_str()))
        .unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    fn values(r: &RequestHeader, name: &str) -> Vec<String> {
        r.headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn untrusted_clients_cannot_spoof_any_spelling() {
        let mut r = req(&[
            ("X-Forwarded-For", "6.6.6.6"),
            ("x_forwarded_for", "6.6.6.6"),
            ("X-Real-IP", "6.6.6.6"),
            ("Forwarded", "for=6.6.6.6"),
            ("X-Forwarded-Proto", "https"),
            ("Accept", "*/*"),
        ]);
        let conn = ClientConn {
            ip: Some("10.1.2.3".parse().unwrap()),
            trusted: false,
            tls: false,
            host: "app.test",
        };
        set_forwarded(&mut r, &conn).unwrap();
        assert_eq!(values(&r, "x-forwarded-for"), vec!["10.1.2.3"]);
        assert!(r.headers.get("x_forwarded_for").is_none());
        assert!(r.headers.get("x-real-ip").is_none());
        assert!(r.headers.get("forwarded").is_none());
        assert_eq!(values(&r, "x-forwarded-proto"), vec!["http"]);
        assert_eq!(values(&r, "x-forwarded-host"), vec!["app.test"]);
        assert_eq!(values(&r, "accept"), vec!["*/*"]);
    }

    #[test]
    fn trusted_proxies_extend_the_chain() {
        let mut r = req(&[
            ("X-Forwarded-For", "1.1.1.1"),
            ("X-Forwarded-For", "2.2.2.2"),
            ("X-Forwarded-Proto", "https"),
        ]);
        let conn = ClientConn {
            ip: Some("127.0.0.1".parse().unwrap()),
            trusted: true,
            tls: false,
            host: "h",
        };
        set_forwarded(&mut r, &conn).unwrap();
        assert_eq!(
            values(&r, "x-forwarded-for"),
            vec!["1.1.1.1, 2.2.2.2, 127.0.0.1"]
        );
        assert_eq!(values(&r, "x-forwarded-proto"), vec!["https"]);
    }

    #[test]
    fn trust_checks_networks_and_mapped_addresses() {
        let nets = vec![
            "10.0.0.0/8".parse().unwrap(),
            "127.0.0.1/32".parse().unwrap(),
        ];
        assert!(is_trusted(Some("10.9.9.9".parse().unwrap()), &nets));
        assert!(is_trusted(Some("::ffff:127.0.0.1".parse().unwrap()), &nets));
        assert!(!is_trusted(Some("11.0.0.1".parse().unwrap()), &nets));
        assert!(!is_trusted(None, &nets));
    }

    #[test]
    fn client_ip_and_scheme_headers_pass_only_from_trusted_proxies() {
        let sent = [
            ("True-Client-IP", "6.6.6.6"),
            ("X-Client-IP", "6.6.6.6"),
            ("CF-Connecting-IP", "6.6.6.6"),
            ("X-Forwarded-Scheme", "https"),
            ("X_Forwarded_Ssl", "on"),
        ];
        let conn = |trusted| ClientConn {
            ip: Some("10.1.2.3".parse().unwrap()),
            trusted,
            tls: false,
            host: "h",
        };
        let mut r = req(&sent);
        set_forwarded(&mut r, &conn(false)).unwrap();
        for (name, _) in sent {
            assert!(
                r.headers.get(name).is_none(),
                "{name} from an untrusted client"
            );
        }
        let mut r = req(&sent);
        set_forwarded(&mut r, &conn(true)).unwrap();
        assert_eq!(values(&r, "true-client-ip"), vec!["6.6.6.6"]);
    }

    #[test]
    fn authorization_once_and_content_length_agreeing() {
        let map = |h: &[(&str, &str)]| req(h).headers.clone();
        assert_eq!(
            check_framing(&http::Method::POST, &map(&[("authorization", "Bearer a")])),
            Ok(())
        );
        assert_eq!(
            check_framing(
                &http::Method::POST,
                &map(&[("authorization", "Bearer a"), ("Authorization", "Bearer b")])
            ),
            Err(HeaderError::DuplicateAuthorization)
        );
        assert_eq!(
            check_framing(&http::Method::POST, &map(&[("content-length", "5, 5")])),
            Ok(())
        );
        for bad in [
            &[("content-length", "5, 6")][..],
            &[("content-length", "5"), ("content-length", "6")],
            &[("content-length", "-1")],
            &[("content-length", "5,")],
        ] {
            assert_eq!(
                check_framing(&http::Method::POST, &map(bad)),
                Err(HeaderError::ContentLength),
                "{bad:?}"
            );
        }
        let mut r = req(&[("content-length", "5"), ("Content-Length", "5")]);
        collapse_content_length(&mut r).unwrap();
        assert_eq!(values(&r, "content-length"), vec!["5"]);
        let mut r = req(&[("content-length", "7, 7")]);
        collapse_content_length(&mut r).unwrap();
        assert_eq!(values(&r, "content-length"), vec!["7"]);
        let get = |h: &[(&str, &str)]| check_framing(&http::Method::GET, &map(h));
        assert_eq!(get(&[("content-length", "0")]), Ok(()));
        assert_eq!(get(&[]), Ok(()));
        for body in [
            &[("content-length", "5")][..],
            &[("transfer-encoding", "chunked")],
        ] {
            assert_eq!(get(body), Err(HeaderError::BodyNotAllowed), "{body:?}");
            assert_eq!(
                check_framing(&http::Method::HEAD, &map(body)),
                Err(HeaderError::BodyNotAllowed)
            );
            assert_eq!(check_framing(&http::Method::POST, &map(body)), Ok(()));
        }
    }

    #[test]
    fn the_client_is_the_nearest_untrusted_hop() {
        let trusted: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let h = |xff: &str| req(&[("x-forwarded-for", xff)]).headers.clone();
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        let peer = ip("10.0.0.1");
        assert_eq!(
            client_ip(ip("6.6.6.6"), &h("1.2.3.4"), &trusted),
            ip("6.6.6.6"),
            "untrusted peer"
        );
        assert_eq!(
            client_ip(peer, &h("9.9.9.9, 1.2.3.4, 10.0.0.7"), &trusted),
            ip("1.2.3.4")
        );
        assert_eq!(
            client_ip(peer, &h("garbage, 10.0.0.7"), &trusted),
            ip("10.0.0.7")
        );
        assert_eq!(client_ip(peer, &http::HeaderMap::new(), &trusted), peer);
    }

    #[test]
    fn prefixes_match_any_spelling() {
        let set = HeaderSet::new(["X-Userinfo"], ["x-auth-request-"]);
        assert!(set.contains("x_auth_request_email"));
        assert!(set.contains("x-auth-request-user"));
        assert!(!set.contains("x-auth-request-"));
        assert!(set.contains("x_userinfo"));
        assert!(!set.contains("x-user"));
    }
}
