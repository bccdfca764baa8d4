//! A form posted without a session, kept across the sign-in it starts (`preserve_post`, as
//! mod_auth_openidc's `OIDCPreservePost`). The body waits on the server — sealed, under a name
//! derived from the attempt's `state`, in this process or in Redis as the sessions do — and is
//! taken once by the callback, which answers a page whose single nonce'd script posts it again
//! to the original address.
//!
//! Only a same-origin HTML form post is kept: a cross-site page could otherwise have its form
//! posted with the session the victim is about to create (login CSRF carrying a payload).

use crate::crypto::{self, Sealer};
use crate::fleet::{Fleet, FleetError};
use crate::http::headers::request_host;
use crate::http::responses::{Reply, escape, wants_html};
use crate::kept::Kept;
use base64::Engine;
use dashmap::DashMap;
use pingora::http::RequestHeader;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Most form bytes kept at once by this process (here or in Redis), over all sign-ins (64 MiB).
const MAX_TOTAL_BYTES: usize = 64 << 20;

/// Most forms one client address may have waiting at once: a browser whose session ended may
/// send a few from its tabs; more is someone filling the store.
const MAX_PER_CLIENT: usize = 4;

/// The kind of kept value a form is (its Redis keys are `<prefix>pp:{...}`).
const KIND: &str = "pp";

/// The content type a kept form must have.
const FORM: &str = "application/x-www-form-urlencoded";

/// Whether a POST without a session may have its body kept: a same-origin HTML form
/// (`application/x-www-form-urlencoded`, not an XHR) announcing at most `max` bytes.
pub fn qualifies(req: &RequestHeader, max: usize) -> bool {
    let h = &req.headers;
    let header = |name: http::header::HeaderName| h.get(name).and_then(|v| v.to_str().ok());
    let is_form = header(http::header::CONTENT_TYPE).is_some_and(|t| {
        t.split(';')
            .next()
            .is_some_and(|essence| essence.trim().eq_ignore_ascii_case(FORM))
    });
    let fits = match header(http::header::CONTENT_LENGTH) {
        Some(n) => n.trim().parse::<usize>().is_ok_and(|n| n <= max),
        None => h.contains_key(http::header::TRANSFER_ENCODING),
    };
    req.method == http::Method::POST
        && is_form
        && fits
        && wants_html(h)
        && !h.contains_key("x-requested-with")
        && same_origin(req)
}

/// The browser says the form comes from a page of this host: `Origin` names it, or, without
/// `Origin`, `Sec-Fetch-Site` is `same-origin`. Anything else (a foreign or `null` origin, or a
/// client that says nothing) is not trusted with a replay after sign-in.
fn same_origin(req: &RequestHeader) -> bool {
    let h = &req.headers;
    if let Some(origin) = h.get(http::header::ORIGIN) {
        let authority = origin
            .to_str()
            .ok()
            .and_then(|o| o.split_once("://"))
            .map(|(_, rest)| rest);
        return authority.is_some_and(|a| a.eq_ignore_ascii_case(request_host(req)));
    }
    h.get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"same-origin"))
}

/// Whether the form's `Origin`, when it names one, has `scheme` (the site's own): an `http`
/// page on the same host is another origin, and one a network attacker can serve. Without
/// `Origin`, `Sec-Fetch-Site: same-origin` has compared schemes already.
pub fn origin_has_scheme(req: &RequestHeader, scheme: &str) -> bool {
    match req.headers.get(http::header::ORIGIN) {
        Some(origin) => origin
            .to_str()
            .ok()
            .and_then(|o| o.split_once("://"))
            .is_some_and(|(s, _)| s.eq_ignore_ascii_case(scheme)),
        None => true,
    }
}

/// The fields of a form body, or `None` when it is not well-formed UTF-8 form data (a page could
/// not post it again unchanged).
pub fn fields(body: &[u8]) -> Option<Vec<(String, String)>> {
    // `form_urlencoded` replaces invalid UTF-8 silently; check the decoded whole first (the
    // delimiters are ASCII, so the whole is valid exactly when every name and value is).
    let plus_as_space: Vec<u8> = body
        .iter()
        .map(|&b| if b == b'+' { b' ' } else { b })
        .collect();
    percent_encoding::percent_decode(&plus_as_space)
        .decode_utf8()
        .ok()?;
    Some(form_urlencoded::parse(body).into_owned().collect())
}

/// The page that posts `fields` again to `action` (a same-origin path): one script, allowed by
/// its nonce and nothing else, submits the form; without scripts, a button does. The script
/// calls the prototype's `submit`: a field named `submit` (a PHP form's button) hides the form's
/// own method.
pub fn resubmit_page(action: &str, fields: &[(String, String)]) -> Reply {
    let nonce =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(crypto::random_bytes::<18>());
    let inputs: String = fields
        .iter()
        .map(|(n, v)| {
            format!(
                "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
                attribute(n),
                attribute(v)
            )
        })
        .collect();
    let body = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Signed in</title></head>\
<body><form id=\"resubmit\" method=\"post\" action=\"{action}\" accept-charset=\"utf-8\">{inputs}\
<p>You are signed in. Sending the form you submitted&hellip;</p><noscript><button type=\"submit\">Continue</button></noscript></form>\
<script nonce=\"{nonce}\">HTMLFormElement.prototype.submit.call(document.getElementById(\"resubmit\"));</script></body></html>\n",
        action = attribute(action),
    );
    let csp = format!(
        "default-src 'none'; script-src 'nonce-{nonce}'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    );
    Reply {
        status: 200,
        headers: Vec::new(),
        content_type: "text/html; charset=utf-8",
        body: body.into(),
    }
    .with_header(
        http::header::CONTENT_SECURITY_POLICY,
        // The nonce is base64url: the value is always a valid header.
        http::HeaderValue::from_str(&csp)
            .unwrap_or(http::HeaderValue::from_static("default-src 'none'")),
    )
    // The post must carry this origin (`no-referrer` would make it `Origin: null`, which
    // upstream CSRF checks refuse), but not this page's address, which holds the code.
    .with_header(
        http::header::REFERRER_POLICY,
        http::HeaderValue::from_static("strict-origin"),
    )
}

/// Escapes an attribute value; line breaks as character references, which HTML parsing leaves
/// as they are (a literal CR would become LF, and the form would change).
fn attribute(s: &str) -> String {
    escape(s).replace('\r', "&#13;").replace('\n', "&#10;")
}

/// Why a form could not be kept.
#[derive(Debug, thiserror::Error)]
pub enum KeepError {
    /// This process holds as many kept forms as it allows.
    #[error("too many forms are waiting for a sign-in")]
    Full,
    /// This client has as many forms waiting as one client may.
    #[error("this client has {MAX_PER_CLIENT} forms waiting for a sign-in already")]
    ClientLimit,
    /// Redis did not take it.
    #[error("{0}")]
    Store(#[from] FleetError),
}

/// A form this process kept, or put in Redis, and what it counts against.
struct Waiting {
    /// Expiry (Unix seconds).
    until: u64,
    /// Sealed size, counted against [`MAX_TOTAL_BYTES`].
    bytes: usize,
    /// Counted against [`MAX_PER_CLIENT`].
    client: Option<IpAddr>,
}

/// Forms waiting for the sign-in they started. Whether they wait here or in Redis, this process
/// counts what it has put there until it is taken or expires: a client without a session can
/// only ever hold [`MAX_PER_CLIENT`] forms, and all of them together [`MAX_TOTAL_BYTES`].
pub struct PreservedPosts {
    sealer: Sealer,
    /// The sealed forms: in Redis (`store = "redis"`: the callback may reach another
    /// instance), or in this process.
    kept: Kept,
    /// What this process counts, by attempt `state`.
    waiting: DashMap<Box<str>, Waiting>,
    bytes: AtomicUsize,
    per_client: DashMap<Option<IpAddr>, usize>,
    /// Most sealed bytes at once ([`MAX_TOTAL_BYTES`]).
    max_total: usize,
}

impl PreservedPosts {
    /// Keeps forms in Redis when `fleet` is given (the sessions' Redis), else in this process.
    pub fn new(secrets: &[crate::config::Secret], fleet: Option<Arc<Fleet>>) -> PreservedPosts {
        PreservedPosts {
            sealer: Sealer::new(secrets, "oidc-gateway preserved post"),
            kept: Kept::new(secrets, fleet),
            waiting: DashMap::new(),
            bytes: AtomicUsize::new(0),
            per_client: DashMap::new(),
            max_total: MAX_TOTAL_BYTES,
        }
    }

    /// Keeps `body`, posted by `client`, for the attempt `state` until `ttl` has passed.
    pub async fn keep(
        &self,
        state: &str,
        body: &[u8],
        client: Option<IpAddr>,
        ttl: Duration,
        now: u64,
    ) -> Result<(), KeepError> {
        let sealed = self.sealer.seal(state.as_bytes(), body);
        let len = sealed.len();
        self.reserve(client, len, now)?;
        if let Err(e) = self
            .kept
            .put(KIND, state.as_bytes(), sealed.as_bytes(), ttl)
            .await
        {
            self.release(client, len);
            return Err(e.into());
        }
        let waiting = Waiting {
            until: now.saturating_add(ttl.as_secs()),
            bytes: len,
            client,
        };
        if let Some(old) = self.waiting.insert(state.into(), waiting) {
            self.release(old.client, old.bytes);
        }
        Ok(())
    }

    /// Counts a form of `len` sealed bytes from `client`, or says which limit it is over;
    /// expired forms, which count until swept, are swept before saying no.
    fn reserve(&self, client: Option<IpAddr>, len: usize, now: u64) -> Result<(), KeepError> {
        self.try_reserve(client, len).or_else(|_| {
            self.sweep(now);
            self.try_reserve(client, len)
        })
    }

    /// Both counts go up first and back down when over, so concurrent calls cannot pass a
    /// limit together.
    fn try_reserve(&self, client: Option<IpAddr>, len: usize) -> Result<(), KeepError> {
        let mine = {
            let mut n = self.per_client.entry(client).or_insert(0);
            *n += 1;
            *n
        };
        let total = self.bytes.fetch_add(len, Ordering::Relaxed) + len;
        if mine <= MAX_PER_CLIENT && total <= self.max_total {
            return Ok(());
        }
        self.release(client, len);
        Err(if mine > MAX_PER_CLIENT {
            KeepError::ClientLimit
        } else {
            KeepError::Full
        })
    }

    /// Uncounts a form of `len` sealed bytes from `client`.
    fn release(&self, client: Option<IpAddr>, len: usize) {
        self.bytes.fetch_sub(len, Ordering::Relaxed);
        if let Some(mut n) = self.per_client.get_mut(&client) {
            *n = n.saturating_sub(1);
        }
        self.per_client.remove_if(&client, |_, n| *n == 0);
    }

    /// The body kept for `state`, removed as it is taken (a callback is good once); `None` when
    /// there is none, it expired, or it does not open.
    pub async fn take(&self, state: &str, now: u64) -> Option<Vec<u8>> {
        let here = self.waiting.remove(state).map(|(_, w)| {
            self.release(w.client, w.bytes);
            w
        });
        // In this process, what it counted decides; in Redis, another instance may have kept
        // it, and Redis decides.
        let expired_here = here.is_none_or(|w| now >= w.until);
        let sealed = match self.kept.take(KIND, state.as_bytes()).await {
            Ok(_) if expired_here && !self.kept.is_shared() => None,
            Ok(sealed) => sealed,
            Err(e) => {
                tracing::warn!("a form kept across sign-in could not be read: {e}");
                None
            }
        };
        let sealed = String::from_utf8(sealed?).ok()?;
        self.sealer.open(state.as_bytes(), &sealed)
    }

    /// Drops (or stops counting, for Redis) forms whose sign-in can no longer complete.
    pub fn sweep(&self, now: u64) {
        self.kept.sweep();
        self.waiting.retain(|_, w| {
            let keep = w.until > now;
            if !keep {
                self.release(w.client, w.bytes);
            }
            keep
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn post(headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("POST", b"/app/submit", None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    const FORM_POST: &[(&str, &str)] = &[
        ("host", "app.example"),
        ("origin", "https://app.example"),
        ("content-type", "application/x-www-form-urlencoded"),
        ("content-length", "20"),
        ("accept", "text/html,*/*"),
    ];

    fn without(name: &str) -> Vec<(&'static str, &'static str)> {
        FORM_POST
            .iter()
            .copied()
            .filter(|(n, _)| *n != name)
            .collect()
    }

    fn with(name: &'static str, value: &'static str) -> Vec<(&'static str, &'static str)> {
        let mut h = without(name);
        h.push((name, value));
        h
    }

    #[test]
    fn only_a_same_origin_html_form_post_within_the_limit_is_kept() {
        assert!(qualifies(&post(FORM_POST), 64));
        assert!(qualifies(
            &post(&with(
                "content-type",
                "Application/X-WWW-Form-Urlencoded; charset=UTF-8"
            )),
            64
        ));
        assert!(!qualifies(&post(FORM_POST), 19), "over the limit");
        assert!(!qualifies(
            &post(&with("content-type", "multipart/form-data; boundary=x")),
            64
        ));
        assert!(!qualifies(
            &post(&with("content-type", "application/json")),
            64
        ));
        assert!(!qualifies(&post(&with("accept", "application/json")), 64));
        assert!(!qualifies(
            &post(&with("x-requested-with", "XMLHttpRequest")),
            64
        ));
        assert!(
            !qualifies(&post(&without("content-length")), 64),
            "no length, not chunked"
        );
        let mut get = post(FORM_POST);
        get.set_method(http::Method::GET);
        assert!(!qualifies(&get, 64));
    }

    #[test]
    fn a_cross_site_or_unknown_origin_is_not_replayed_after_sign_in() {
        assert!(!qualifies(
            &post(&with("origin", "https://evil.example")),
            64
        ));
        assert!(!qualifies(
            &post(&with("origin", "https://app.example.evil.example")),
            64
        ));
        assert!(!qualifies(&post(&with("origin", "null")), 64));
        assert!(
            !qualifies(&post(&without("origin")), 64),
            "nothing says where it came from"
        );
        let mut fetch = without("origin");
        fetch.push(("sec-fetch-site", "same-origin"));
        assert!(qualifies(&post(&fetch), 64));
        let mut fetch = without("origin");
        fetch.push(("sec-fetch-site", "same-site"));
        assert!(
            !qualifies(&post(&fetch), 64),
            "a sibling subdomain is another origin"
        );
        // The scheme is part of the origin: an http page of an https site's host is not it.
        let https = post(FORM_POST);
        assert!(origin_has_scheme(&https, "https"));
        assert!(!origin_has_scheme(&https, "http"));
        let http_page = post(&with("origin", "http://app.example"));
        assert!(qualifies(&http_page, 64) && !origin_has_scheme(&http_page, "https"));
        assert!(
            origin_has_scheme(&post(&fetch), "https"),
            "no Origin: Sec-Fetch-Site"
        );
    }

    #[test]
    fn form_fields_decode_strictly() {
        assert_eq!(
            fields(b"a=1&b=x+y%26z&empty=&flag&c=%C3%BC"),
            Some(vec![
                ("a".into(), "1".into()),
                ("b".into(), "x y&z".into()),
                ("empty".into(), "".into()),
                ("flag".into(), "".into()),
                ("c".into(), "ü".into()),
            ])
        );
        assert_eq!(fields(b""), Some(vec![]));
        assert_eq!(
            fields(b"a=%FF"),
            None,
            "not UTF-8: a page would post it changed"
        );
    }

    #[test]
    fn the_resubmit_page_escapes_everything_and_allows_only_its_own_script() {
        let r = resubmit_page(
            "/app/submit?x=1&y=\"2\"",
            &[("n\"ame".into(), "<script>alert(1)</script>\r\nline".into())],
        );
        let body = std::str::from_utf8(&r.body).unwrap();
        assert!(body.contains("action=\"/app/submit?x=1&amp;y=&quot;2&quot;\""));
        assert!(body.contains("name=\"n&quot;ame\""));
        assert!(body.contains("value=\"&lt;script&gt;alert(1)&lt;/script&gt;&#13;&#10;line\""));
        assert_eq!(body.matches("<script").count(), 1);
        let h = r.header().unwrap();
        let csp: Vec<_> = h
            .headers
            .get_all("content-security-policy")
            .iter()
            .collect();
        assert_eq!(
            csp.len(),
            1,
            "the page's own policy replaces the default one"
        );
        let csp = csp[0].to_str().unwrap();
        let nonce = csp
            .split("'nonce-")
            .nth(1)
            .and_then(|s| s.split('\'').next())
            .unwrap();
        assert!(body.contains(&format!("<script nonce=\"{nonce}\">")));
        assert!(csp.contains("form-action 'self'") && csp.contains("default-src 'none'"));
        let again = resubmit_page("/", &[]);
        assert_ne!(again.headers, r.headers, "a fresh nonce per page");
    }

    #[tokio::test]
    async fn a_kept_form_is_taken_once_by_its_own_state_and_expires() {
        let secrets = [Secret::new("0123456789abcdef0123456789abcdef")];
        let posts = PreservedPosts::new(&secrets, None);
        let ttl = Duration::from_secs(300);
        posts
            .keep("state-a", b"a=1", None, ttl, 1000)
            .await
            .unwrap();
        assert_eq!(posts.take("state-b", 1001).await, None);
        assert_eq!(
            posts.take("state-a", 1001).await.as_deref(),
            Some(&b"a=1"[..])
        );
        assert_eq!(posts.take("state-a", 1001).await, None, "taken once");
        posts
            .keep("state-c", b"c=1", None, ttl, 1000)
            .await
            .unwrap();
        assert_eq!(posts.take("state-c", 1300).await, None, "expired");
        posts
            .keep("state-d", b"d=1", None, ttl, 1000)
            .await
            .unwrap();
        posts.sweep(1300);
        assert!(posts.waiting.is_empty() && posts.per_client.is_empty());
        assert_eq!(posts.bytes.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn one_client_keeps_at_most_a_few_forms_at_once() {
        let secrets = [Secret::new("0123456789abcdef0123456789abcdef")];
        let posts = PreservedPosts::new(&secrets, None);
        let ttl = Duration::from_secs(300);
        let (a, b) = (
            Some(IpAddr::from([192, 0, 2, 1])),
            Some(IpAddr::from([192, 0, 2, 2])),
        );
        for i in 0..MAX_PER_CLIENT {
            posts
                .keep(&format!("a-{i}"), b"x=1", a, ttl, 1000)
                .await
                .unwrap();
        }
        assert!(matches!(
            posts.keep("a-more", b"x=1", a, ttl, 1000).await,
            Err(KeepError::ClientLimit)
        ));
        posts.keep("b-0", b"x=1", b, ttl, 1000).await.unwrap();
        // A form taken, or expired, no longer counts.
        assert!(posts.take("a-0", 1001).await.is_some());
        posts.keep("a-again", b"x=1", a, ttl, 1001).await.unwrap();
        posts.keep("a-late", b"x=1", a, ttl, 2000).await.unwrap();
        assert_eq!(posts.per_client.get(&a).map(|n| *n), Some(1));
    }

    #[tokio::test]
    async fn this_process_keeps_at_most_its_total() {
        let secrets = [Secret::new("0123456789abcdef0123456789abcdef")];
        let mut posts = PreservedPosts::new(&secrets, None);
        posts.max_total = 4 << 20;
        let big = vec![b'a'; 256 << 10];
        let ttl = Duration::from_secs(300);
        let mut kept = 0;
        for i in 0..100u8 {
            let client = Some(IpAddr::from([10, 0, 0, i]));
            match posts
                .keep(&format!("state-{i}"), &big, client, ttl, 1000)
                .await
            {
                Ok(()) => kept += 1,
                Err(KeepError::Full) => break,
                Err(e) => panic!("{e}"),
            }
        }
        // Sealed forms are base64 (4/3 larger, plus nonce and tag): 11 of 256 KiB fit in 4 MiB.
        assert_eq!(kept, 11, "kept {kept} forms of 256 KiB");
        // Once they expire, there is room again.
        posts.keep("late", &big, None, ttl, 2000).await.unwrap();
    }
}
