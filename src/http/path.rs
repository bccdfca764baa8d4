//! The one canonical request path. Routing, auth decisions and the upstream all see the same
//! form, so no encoding trick can make the gateway and the upstream disagree about a path.
//!
//! Rules: percent-escapes are decoded where the byte is safe in a path and kept (upper-case)
//! otherwise; `.` and `..` segments are resolved (never above the root, also when written as
//! `..;params` like Tomcat reads them); empty segments (`//`) collapse. An encoded `/` or `\`
//! is refused unless allowed; control characters and broken escapes are always refused.

use std::borrow::Cow;

/// Why a path was refused (the request gets a 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path does not start with `/`.
    #[error("the path must start with '/'")]
    NotAbsolute,
    /// A `%` not followed by two hex digits.
    #[error("the path has an invalid percent-escape")]
    BadEscape,
    /// A control character (possibly percent-encoded).
    #[error("the path contains a control character")]
    ControlChar,
    /// `%2F` or `%5C`, or a raw backslash.
    #[error("the path contains an encoded slash or a backslash")]
    EncodedSlash,
}

/// Returns the canonical form of `raw` (the path part of the request target, no query), which
/// may be any bytes: the request line is not always UTF-8.
///
/// Borrows `raw` when it is already canonical, which is the common case.
pub fn canonicalize<R: AsRef<[u8]> + ?Sized>(
    raw: &R,
    allow_encoded_slashes: bool,
) -> Result<Cow<'_, str>, PathError> {
    let raw = raw.as_ref();
    if raw.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    if is_canonical(raw) {
        // A canonical path is ASCII, so this never falls through.
        if let Ok(s) = std::str::from_utf8(raw) {
            return Ok(Cow::Borrowed(s));
        }
    }
    slow(raw, allow_encoded_slashes).map(Cow::Owned)
}

fn is_canonical(b: &[u8]) -> bool {
    let mut prev_slash = false;
    for (i, &c) in b.iter().enumerate() {
        match c {
            b'/' => {
                if prev_slash {
                    return false;
                }
                prev_slash = true;
                continue;
            }
            b'.' if prev_slash => {
                // "/." followed by end, '/', ';' or ".." followed by those: a dot segment.
                let rest = &b[i + 1..];
                let rest = rest.strip_prefix(b".").unwrap_or(rest);
                if rest.is_empty() || rest[0] == b'/' || rest[0] == b';' {
                    return false;
                }
            }
            // A segment with an empty name ("/;x") is dropped like "//", as Tomcat does.
            b';' if prev_slash => return false,
            _ if !is_safe(c) => return false,
            _ => {}
        }
        prev_slash = false;
    }
    true
}

/// Bytes kept literally in a canonical path segment: RFC 3986 unreserved, sub-delims, `:`, `@`.
fn is_safe(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&c)
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

fn push_escaped(out: &mut String, c: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    out.push(HEX[(c >> 4) as usize] as char);
    out.push(HEX[(c & 15) as usize] as char);
}

fn slow(b: &[u8], allow_encoded_slashes: bool) -> Result<String, PathError> {
    // Encode each segment canonically, then resolve dot segments on the encoded form (where
    // "%2E" has already become ".").
    let mut segments: Vec<String> = Vec::new();
    let mut current = String::new();
    let mut i = 1;
    let mut trailing_slash = false;
    loop {
        if i >= b.len() {
            push_segment(&mut segments, std::mem::take(&mut current));
            break;
        }
        if b[i] == b'/' {
            push_segment(&mut segments, std::mem::take(&mut current));
            i += 1;
            trailing_slash = i == b.len();
            continue;
        }
        let (c, escaped) = if b[i] == b'%' {
            let (Some(h), Some(l)) = (
                b.get(i + 1).and_then(|&x| hex(x)),
                b.get(i + 2).and_then(|&x| hex(x)),
            ) else {
                return Err(PathError::BadEscape);
            };
            i += 3;
            ((h << 4) | l, true)
        } else {
            i += 1;
            (b[i - 1], false)
        };
        if c < 0x20 || c == 0x7f {
            return Err(PathError::ControlChar);
        }
        if (c == b'/' && escaped) || c == b'\\' {
            if !allow_encoded_slashes {
                return Err(PathError::EncodedSlash);
            }
            push_escaped(&mut current, c);
        } else if is_safe(c) {
            current.push(c as char);
        } else {
            push_escaped(&mut current, c);
        }
    }
    let mut out = String::with_capacity(b.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() || (trailing_slash && !segments.is_empty()) {
        out.push('/');
    }
    Ok(out)
}

/// Adds one segment, resolving `.` and `..` (also `..;x`, which servlet containers treat as `..`).
fn push_segment(segments: &mut Vec<String>, seg: String) {
    match seg.split(';').next().unwrap_or("") {
        "" | "." => {}
        ".." => {
            segments.pop();
        }
        _ => segments.push(seg),
    }
}

/// If the canonical `path` lies under `prefix` (segment-wise, ignoring `;params` in the path),
/// returns the byte offset where the rest of the path begins.
pub fn match_prefix(prefix: &str, path: &str) -> Option<usize> {
    if prefix == "/" {
        return Some(0);
    }
    let mut pos = 0;
    let p = path.as_bytes();
    for want in prefix[1..].split('/') {
        if p.get(pos) != Some(&b'/') {
            return None;
        }
        let start = pos + 1;
        let end = p[start..]
            .iter()
            .position(|&c| c == b'/')
            .map_or(p.len(), |e| start + e);
        let seg = &p[start..end];
        let name = seg.split(|&c| c == b';').next().unwrap_or(seg);
        if name != want.as_bytes() {
            return None;
        }
        pos = end;
    }
    Some(pos)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(p: &str) -> Result<String, PathError> {
        canonicalize(p, false).map(|c| c.into_owned())
    }

    #[test]
    fn canonical_paths_are_borrowed() {
        for p in ["/", "/a", "/a/b/", "/a.b/c..d/.e", "/a;b=c", "/~user/x@y:z"] {
            assert!(
                matches!(canonicalize(p, false), Ok(Cow::Borrowed(_))),
                "{p}"
            );
        }
    }

    #[test]
    fn dot_segments_and_double_slashes_resolve() {
        assert_eq!(canon("/a/../b").unwrap(), "/b");
        assert_eq!(canon("/a/./b").unwrap(), "/a/b");
        assert_eq!(canon("/../../etc/passwd").unwrap(), "/etc/passwd");
        // An empty-named segment with parameters would otherwise hide "/admin" from routing.
        assert_eq!(canon("/;x/admin").unwrap(), "/admin");
        assert_eq!(canon("/;").unwrap(), "/");
        assert_eq!(canon("//a///b").unwrap(), "/a/b");
        assert_eq!(canon("/a/b/..").unwrap(), "/a");
        assert_eq!(canon("/a/..").unwrap(), "/");
        assert_eq!(canon("/a/b/").unwrap(), "/a/b/");
        assert_eq!(canon("/public/..;/admin").unwrap(), "/admin");
    }

    #[test]
    fn escapes_decode_when_safe_and_normalise_otherwise() {
        assert_eq!(canon("/%61dmin").unwrap(), "/admin");
        assert_eq!(canon("/%2e%2E/admin").unwrap(), "/admin");
        assert_eq!(canon("/a%20b").unwrap(), "/a%20b");
        assert_eq!(canon("/a%3fb").unwrap(), "/a%3Fb");
        assert_eq!(canon("/%25").unwrap(), "/%25");
        assert_eq!(canon("/caf%C3%A9").unwrap(), "/caf%C3%A9");
    }

    #[test]
    fn dangerous_paths_are_refused() {
        assert_eq!(canon("/admin%2Fx"), Err(PathError::EncodedSlash));
        assert_eq!(canon("/a%5c..%5cadmin"), Err(PathError::EncodedSlash));
        assert_eq!(canon("/a\\b"), Err(PathError::EncodedSlash));
        assert_eq!(canon("/a%00"), Err(PathError::ControlChar));
        assert_eq!(canon("/a%0d%0a"), Err(PathError::ControlChar));
        assert_eq!(canon("/a%zz"), Err(PathError::BadEscape));
        assert_eq!(canon("/a%2"), Err(PathError::BadEscape));
        assert_eq!(canon("a"), Err(PathError::NotAbsolute));
        assert_eq!(canonicalize("/a%2Fb", true).unwrap(), "/a%2Fb");
    }

    #[test]
    fn prefixes_match_on_segment_boundaries() {
        assert_eq!(match_prefix("/", "/anything"), Some(0));
        assert_eq!(match_prefix("/api", "/api"), Some(4));
        assert_eq!(match_prefix("/api", "/api/v1"), Some(4));
        assert_eq!(match_prefix("/api", "/apix"), None);
        assert_eq!(match_prefix("/api/v1", "/api/v1/x"), Some(7));
        assert_eq!(match_prefix("/api/v1", "/api"), None);
        assert_eq!(match_prefix("/api", "/"), None);
        // Path parameters never hide a segment from a rule.
        assert_eq!(match_prefix("/admin", "/admin;jsessionid=1/x"), Some(19));
        assert_eq!(match_prefix("/app/admin", "/app;x/admin"), Some(12));
    }
}
