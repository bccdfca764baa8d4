//! The one redirect validator. Every place that sends a browser to a URL that came through the
//! browser (the post-login return URL) asks it first, so no endpoint becomes an open redirect.

/// Returns `candidate` when it is a same-origin relative reference: exactly one leading `/`,
/// not `//` or `/\`, and no control characters, whitespace or backslashes anywhere (browsers
/// treat `\` as `/` and strip tabs and newlines, which turns "/\evil.com" into "//evil.com").
pub fn same_origin_path(candidate: &str) -> Option<&str> {
    let b = candidate.as_bytes();
    if b.first() != Some(&b'/') || matches!(b.get(1), Some(b'/') | Some(b'\\')) {
        return None;
    }
    if b.iter().any(|&c| c <= 0x20 || c == 0x7f || c == b'\\') {
        return None;
    }
    // Percent-encoded slashes and backslashes right after the first '/' are decoded by some
    // servers and clients into a scheme-relative URL.
    let lower = candidate.get(1..4).map(str::to_ascii_lowercase);
    if matches!(lower.as_deref(), Some("%2f") | Some("%5c")) {
        return None;
    }
    Some(candidate)
}

/// The path (and query) of `candidate` when it names a place on `host` itself: a same-origin
/// path, or an absolute `http(s)` URL whose authority is `host` (as the `rd` of a forward-auth
/// sign-in carries it). Anything else (another host, another scheme, userinfo) is refused.
pub fn on_host(candidate: &str, host: &str) -> Option<String> {
    if candidate.starts_with('/') {
        return same_origin_path(candidate).map(str::to_owned);
    }
    let url = openidconnect::url::Url::parse(candidate).ok()?;
    let authority = match (url.host_str(), url.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_owned(),
        _ => return None,
    };
    if !matches!(url.scheme(), "http" | "https")
        || !url.username().is_empty()
        || url.password().is_some()
        || !authority.eq_ignore_ascii_case(host)
    {
        return None;
    }
    let target = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    };
    same_origin_path(&target).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_host_keeps_only_places_on_the_same_host() {
        let host = "app.example.com";
        assert_eq!(on_host("/a?b=1", host).as_deref(), Some("/a?b=1"));
        assert_eq!(
            on_host("https://app.example.com/x/y?z", host).as_deref(),
            Some("/x/y?z")
        );
        assert_eq!(
            on_host("https://APP.example.com:8443/", "app.example.com:8443").as_deref(),
            Some("/")
        );
        for bad in [
            "https://evil.example.com/",
            "//evil.example.com/",
            "https://app.example.com.evil.com/",
            "https://user@app.example.com/",
            "javascript:alert(1)",
            "https://app.example.com:444/",
            "/\\evil.com",
        ] {
            assert_eq!(on_host(bad, host), None, "{bad}");
        }
    }

    #[test]
    fn relative_paths_pass() {
        for ok in ["/", "/app?x=1", "/a/b#frag", "/a//b", "/%2e%2e/x"] {
            assert_eq!(same_origin_path(ok), Some(ok), "{ok}");
        }
    }

    #[test]
    fn everything_that_can_leave_the_origin_is_refused() {
        for bad in [
            "",
            "//evil.com",
            "/\\evil.com",
            "\\\\evil.com",
            "https://evil.com",
            "http:/evil.com",
            "javascript:alert(1)",
            "/\tevil",
            "/ /evil.com",
            "/\n/evil.com",
            "/%2F/evil.com",
            "/%5cevil.com",
            "evil.com",
            "/a\\b",
            " /a",
        ] {
            assert_eq!(same_origin_path(bad), None, "{bad:?}");
        }
    }
}
