//! Cookies: reading every `Cookie` header (HTTP/2 clients send several), writing the gateway's
//! `Set-Cookie` headers with safe attributes, and removing the gateway's own cookies before a
//! request goes upstream. Parsing and formatting are the `cookie` crate's.

use cookie::Cookie;
use http::HeaderValue;
use pingora::http::RequestHeader;
use std::time::Duration;

/// Attributes of every cookie the gateway sets.
#[derive(Debug, Clone)]
pub struct CookieAttrs {
    /// `Path`
    pub path: String,
    /// `Domain` (host-only when `None`).
    pub domain: Option<String>,
    /// `SameSite`
    pub same_site: cookie::SameSite,
    /// `Secure`
    pub secure: bool,
}

/// `Path=/`, host-only, `SameSite=Lax`, not `Secure` (plain-http development).
impl Default for CookieAttrs {
    fn default() -> Self {
        CookieAttrs {
            path: "/".into(),
            domain: None,
            same_site: cookie::SameSite::Lax,
            secure: false,
        }
    }
}

/// Every `cookie-pair` of every `Cookie` header, as the client sent its bytes (whitespace
/// around it trimmed, empty pieces skipped).
///
/// Cookies are bytes, not text: browsers store a `Set-Cookie: pref=caf\xe9` from any upstream
/// or sibling subdomain and send the Latin-1 byte back. Reading a whole header as UTF-8 would
/// then hide the gateway's own cookies in it, so the split is done on bytes and only each
/// pair is judged on its own.
///
/// This runs on every request to a protected route, and a cookie-store session is a few
/// kilobytes: `cookie::Cookie::split_parse` walks every character of every value several times
/// (about 600 ns for a 2.6 KB session, most of a session check). Splitting a `Cookie` header
/// is only RFC 6265 section 4.2.1 (`cookie-pair *( ";" SP cookie-pair )`), so it is done here
/// with a SIMD byte search; the `cookie` crate still writes every `Set-Cookie`.
fn pieces(headers: &http::HeaderMap) -> impl Iterator<Item = &[u8]> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .flat_map(|v| {
            let s = v.as_bytes();
            let mut start = 0;
            memchr::memchr_iter(b';', s)
                .chain(std::iter::once(s.len()))
                .map(move |end| {
                    let piece = &s[start..end];
                    start = end + 1;
                    piece.trim_ascii()
                })
        })
        .filter(|p| !p.is_empty())
}

/// A pair's name and value as bytes; `None` without `=` or with an empty name.
fn split_pair(piece: &[u8]) -> Option<(&[u8], &[u8])> {
    let eq = memchr::memchr(b'=', piece)?;
    let name = piece[..eq].trim_ascii();
    (!name.is_empty()).then(|| (name, piece[eq + 1..].trim_ascii()))
}

/// Every (name, value) pair in every `Cookie` header, in order. Pairs without `=`, with an
/// empty name, or whose name or value is not UTF-8 (someone else's Latin-1 cookie; the
/// gateway's own are ASCII) are skipped, one by one.
pub fn all(headers: &http::HeaderMap) -> impl Iterator<Item = (&str, &str)> {
    pieces(headers).filter_map(|piece| {
        let (name, value) = split_pair(piece)?;
        Some((
            std::str::from_utf8(name).ok()?,
            std::str::from_utf8(value).ok()?,
        ))
    })
}

/// The first cookie called `name`.
pub fn get<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    all(headers).find(|(n, _)| *n == name).map(|(_, v)| v)
}

/// A `Set-Cookie` value: HttpOnly always; `max_age` `None` makes a browser-session cookie.
pub fn set(name: &str, value: &str, attrs: &CookieAttrs, max_age: Option<Duration>) -> HeaderValue {
    let mut c = Cookie::build((name.to_owned(), value.to_owned()))
        .path(attrs.path.clone())
        .http_only(true)
        .same_site(attrs.same_site)
        // Browsers refuse SameSite=None without Secure.
        .secure(attrs.secure || attrs.same_site == cookie::SameSite::None);
    if let Some(d) = &attrs.domain {
        c = c.domain(d.clone());
    }
    if let Some(age) = max_age {
        c = c.max_age(cookie::time::Duration::seconds(
            age.as_secs().min(i64::MAX as u64) as i64,
        ));
    }
    // Names and values are ours (base64url and fixed names), so they are valid header text.
    HeaderValue::from_str(&c.build().to_string()).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// A `Set-Cookie` value that deletes the cookie `name`.
pub fn expire(name: &str, attrs: &CookieAttrs) -> HeaderValue {
    set(name, "", attrs, Some(Duration::ZERO))
}

/// The request's cookies for which `ours` is false, byte for byte, joined into one `Cookie`
/// value (empty when none are left).
pub fn others(headers: &http::HeaderMap, ours: impl Fn(&str) -> bool) -> Vec<u8> {
    let mut kept: Vec<u8> = Vec::new();
    for piece in pieces(headers).filter(|p| !is_named(p, &ours)) {
        if !kept.is_empty() {
            kept.extend_from_slice(b"; ");
        }
        kept.extend_from_slice(piece);
    }
    kept
}

/// The length of the `Cookie` header a browser sends after a response setting `set`: the
/// request's cookies that stay (those `replaced` is false for, and not set again), then every
/// cookie `set` sets (not those it deletes), joined with `"; "`.
pub fn header_len_after(
    headers: &http::HeaderMap,
    set: &[HeaderValue],
    replaced: impl Fn(&str) -> bool,
) -> usize {
    let setting: Vec<Cookie<'_>> = set
        .iter()
        .filter_map(|v| Cookie::parse(v.to_str().ok()?).ok())
        .collect();
    let kept = others(headers, |name| {
        replaced(name) || setting.iter().any(|c| c.name() == name)
    });
    let new = setting
        .iter()
        .filter(|c| c.max_age() != Some(cookie::time::Duration::ZERO))
        .map(|c| c.name().len() + 1 + c.value().len());
    new.fold(kept.len(), |len, pair| match len {
        0 => pair,
        n => n + 2 + pair,
    })
}

/// Whether the pair `piece` has a (UTF-8) name for which `ours` is true.
fn is_named(piece: &[u8], ours: impl Fn(&str) -> bool) -> bool {
    split_pair(piece).is_some_and(|(name, _)| std::str::from_utf8(name).is_ok_and(ours))
}

/// Removes the cookies for which `ours` is true from the request, leaving the rest byte for
/// byte (merged into one `Cookie` header). Untouched when none are ours.
pub fn strip(req: &mut RequestHeader, ours: impl Fn(&str) -> bool) {
    if !pieces(&req.headers).any(|p| is_named(p, &ours)) {
        return;
    }
    let kept = others(&req.headers, ours);
    req.remove_header(&http::header::COOKIE);
    // Every byte came from a header value, so the joined value is one too.
    if !kept.is_empty()
        && let Ok(v) = HeaderValue::from_bytes(&kept)
    {
        let _ = req.insert_header(http::header::COOKIE, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(secure: bool) -> CookieAttrs {
        CookieAttrs {
            path: "/".into(),
            domain: None,
            same_site: cookie::SameSite::Lax,
            secure,
        }
    }

    #[test]
    fn reads_every_cookie_header() {
        let mut h = http::HeaderMap::new();
        h.append(http::header::COOKIE, "a=1; b=2".parse().unwrap());
        h.append(http::header::COOKIE, "c=3".parse().unwrap());
        h.append(
            http::header::COOKIE,
            "garbage; d=4;;  e = 5 ; =nameless; f=a=b".parse().unwrap(),
        );
        let all: Vec<_> = all(&h).collect();
        assert_eq!(
            all,
            vec![
                ("a", "1"),
                ("b", "2"),
                ("c", "3"),
                ("d", "4"),
                ("e", "5"),
                ("f", "a=b")
            ]
        );
        assert_eq!(get(&h, "c"), Some("3"));
    }

    #[test]
    fn set_cookie_has_safe_defaults() {
        let v = set("s", "v", &attrs(true), Some(Duration::from_secs(60)));
        let s = v.to_str().unwrap();
        for part in [
            "s=v",
            "HttpOnly",
            "SameSite=Lax",
            "Secure",
            "Path=/",
            "Max-Age=60",
        ] {
            assert!(s.contains(part), "{s} lacks {part}");
        }
        assert!(
            !set("s", "v", &attrs(false), None)
                .to_str()
                .unwrap()
                .contains("Secure")
        );
        assert!(
            expire("s", &attrs(false))
                .to_str()
                .unwrap()
                .contains("Max-Age=0")
        );
    }

    #[test]
    fn strips_only_our_cookies() {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        r.append_header("Cookie", "app=1; oidc_session=secret")
            .unwrap();
        r.append_header("Cookie", "oidc_session.1=more; other=2")
            .unwrap();
        strip(&mut r, |n| {
            n == "oidc_session" || n.starts_with("oidc_session.")
        });
        let v: Vec<_> = r.headers.get_all("cookie").iter().collect();
        assert_eq!(v, vec!["app=1; other=2"]);
        let mut only = RequestHeader::build("GET", b"/", None).unwrap();
        only.append_header("Cookie", "oidc_session=x").unwrap();
        strip(&mut only, |n| n == "oidc_session");
        assert!(only.headers.get("cookie").is_none());
    }

    #[test]
    fn a_latin1_cookie_hides_nothing_and_passes_through_byte_for_byte() {
        let latin1 =
            HeaderValue::from_bytes(b"pref=caf\xe9; oidc_session=s1; lone; x=\xff\xfe").unwrap();
        let mut h = http::HeaderMap::new();
        h.append(http::header::COOKIE, latin1.clone());
        assert_eq!(get(&h, "oidc_session"), Some("s1"));
        assert_eq!(all(&h).collect::<Vec<_>>(), vec![("oidc_session", "s1")]);

        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        r.append_header("Cookie", latin1).unwrap();
        strip(&mut r, |n| n == "oidc_session");
        let v: Vec<_> = r.headers.get_all("cookie").iter().collect();
        assert_eq!(v, vec![&b"pref=caf\xe9; lone; x=\xff\xfe"[..]]);
    }

    #[test]
    fn strip_leaves_a_header_without_our_cookies_untouched() {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        r.append_header("Cookie", "a=1;b=2").unwrap();
        r.append_header("Cookie", "c=3").unwrap();
        strip(&mut r, |n| n == "oidc_session");
        let v: Vec<_> = r.headers.get_all("cookie").iter().collect();
        assert_eq!(v, vec!["a=1;b=2", "c=3"]);
    }

    #[test]
    fn the_next_cookie_header_counts_what_stays_and_what_is_set() {
        let mut h = http::HeaderMap::new();
        h.insert(
            http::header::COOKIE,
            HeaderValue::from_static("app=1; s=old; s.1=old2; login_x=st"),
        );
        let attrs = CookieAttrs::default();
        let set_now = [
            set("s", "new-value", &attrs, None),
            expire("s.1", &attrs),
            expire("login_x", &attrs),
        ];
        // app=1; s=new-value
        assert_eq!(
            header_len_after(&h, &set_now, |_| false),
            "app=1; s=new-value".len()
        );
        // A cookie the caller says is replaced is gone even if not deleted here.
        assert_eq!(
            header_len_after(&h, &[], |n| n.starts_with("login_")),
            "app=1; s=old; s.1=old2".len()
        );
        assert_eq!(
            header_len_after(&http::HeaderMap::new(), &set_now[..1], |_| false),
            11
        );
    }
}
