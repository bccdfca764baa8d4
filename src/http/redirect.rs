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

#[cfg(test)]
mod tests {
    use super::*;

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
