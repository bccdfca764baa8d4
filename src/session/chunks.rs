//! The session cookie's wire form. A value too long for one cookie is split into chunks:
//! `name` = `"<count>~<part 0>"`, then `name.1`, `name.2`, ... The count makes a leftover chunk
//! from an older, longer session harmless. Sizes and chunk counts are capped: an oversized or
//! incomplete cookie is treated as absent, never as an error.

use crate::http::cookies;

/// Bytes of value per cookie (browsers allow about 4096 per cookie including name/attributes).
pub const CHUNK_SIZE: usize = 3800;
/// Most chunks a session may use.
pub const MAX_CHUNKS: usize = 5;
/// Highest chunk index looked at when cleaning up leftovers.
const MAX_SEEN_INDEX: usize = 16;

/// The chunks of a session cookie as presented by the client.
#[derive(Debug, Clone, Copy)]
pub struct Presented<'a> {
    parts: [&'a str; MAX_CHUNKS],
    len: usize,
    /// One more than the highest `name.N` index present (for deleting leftovers).
    pub cookies_present: usize,
}

impl<'a> Presented<'a> {
    /// The value parts, in order.
    pub fn parts(&self) -> &[&'a str] {
        &self.parts[..self.len]
    }

    /// Total length of the value.
    pub fn len(&self) -> usize {
        self.parts().iter().map(|p| p.len()).sum()
    }

    /// Whether the value is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the value equals `value`, without joining the parts.
    pub fn equals(&self, value: &str) -> bool {
        let mut rest = value;
        for p in self.parts() {
            match rest.strip_prefix(p) {
                Some(r) => rest = r,
                None => return false,
            }
        }
        rest.is_empty()
    }

    /// The whole value (joins chunks).
    pub fn joined(&self) -> String {
        self.parts().concat()
    }
}

/// What the request carries under the session cookie name.
#[derive(Debug, Clone, Copy)]
pub enum Read<'a> {
    /// No session cookie.
    Absent,
    /// A cookie that cannot be a session (incomplete, oversized).
    Invalid {
        /// How many chunks to delete.
        cookies_present: usize,
    },
    /// A complete value.
    Value(Presented<'a>),
}

/// Reads the session cookie `name` and its chunks from every `Cookie` header.
pub fn read<'a>(headers: &'a http::HeaderMap, name: &str) -> Read<'a> {
    let mut base: Option<&str> = None;
    let mut chunks: [Option<&str>; MAX_CHUNKS] = [None; MAX_CHUNKS];
    let mut present = 0usize;
    for (n, v) in cookies::all(headers) {
        if n == name {
            base.get_or_insert(v);
            present = present.max(1);
        } else if let Some(idx) = n
            .strip_prefix(name)
            .and_then(|r| r.strip_prefix('.'))
            .and_then(|i| i.parse::<usize>().ok())
            .filter(|i| (1..MAX_SEEN_INDEX).contains(i))
        {
            present = present.max(idx + 1);
            if idx < MAX_CHUNKS {
                chunks[idx].get_or_insert(v);
            }
        }
    }
    let Some(base) = base else {
        return if present > 0 {
            Read::Invalid {
                cookies_present: present,
            }
        } else {
            Read::Absent
        };
    };
    let invalid = Read::Invalid {
        cookies_present: present,
    };
    // "<count>~" can only be the first two bytes (MAX_CHUNKS < 10); never scan the whole value.
    let (count, first) = match base.as_bytes() {
        [c @ b'0'..=b'9', b'~', ..] => match usize::from(c - b'0') {
            c if (2..=MAX_CHUNKS).contains(&c) => (c, &base[2..]),
            _ => return invalid,
        },
        _ => (1, base),
    };
    let mut parts = [""; MAX_CHUNKS];
    parts[0] = first;
    for (i, part) in parts.iter_mut().enumerate().take(count).skip(1) {
        match chunks[i] {
            Some(v) => *part = v,
            None => return invalid,
        }
    }
    if parts[..count].iter().any(|p| p.len() > CHUNK_SIZE + 8) {
        return invalid;
    }
    Read::Value(Presented {
        parts,
        len: count,
        cookies_present: present,
    })
}

/// Splits `value` into cookie (name, value) pairs; `None` when it needs more than the maximum.
pub fn split(name: &str, value: &str) -> Option<Vec<(String, String)>> {
    if value.len() <= CHUNK_SIZE {
        return Some(vec![(name.to_owned(), value.to_owned())]);
    }
    let count = value.len().div_ceil(CHUNK_SIZE);
    if count > MAX_CHUNKS {
        return None;
    }
    // Session values are base64url plus '.', so every byte is a char boundary.
    let parts: Vec<&str> = value
        .as_bytes()
        .chunks(CHUNK_SIZE)
        .map(|c| std::str::from_utf8(c).unwrap_or(""))
        .collect();
    Some(
        parts
            .iter()
            .enumerate()
            .map(|(i, p)| {
                if i == 0 {
                    (name.to_owned(), format!("{count}~{p}"))
                } else {
                    (format!("{name}.{i}"), (*p).to_owned())
                }
            })
            .collect(),
    )
}

/// Whether a cookie name belongs to the session cookie `name` (the base or a chunk).
pub fn is_session_cookie(cookie: &str, name: &str) -> bool {
    cookie == name
        || cookie
            .strip_prefix(name)
            .and_then(|r| r.strip_prefix('.'))
            .is_some_and(|i| !i.is_empty() && i.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(String, String)]) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        // One header per cookie, as HTTP/2 clients send them.
        for (n, v) in pairs {
            h.append(http::header::COOKIE, format!("{n}={v}").parse().unwrap());
        }
        h
    }

    #[test]
    fn small_values_use_one_cookie() {
        let pairs = split("s", "abc").unwrap();
        assert_eq!(pairs, vec![("s".to_owned(), "abc".to_owned())]);
        let h = headers(&pairs);
        let Read::Value(p) = read(&h, "s") else {
            panic!()
        };
        assert!(p.equals("abc"));
        assert_eq!(p.joined(), "abc");
    }

    #[test]
    fn large_values_round_trip_through_chunks() {
        let value: String = std::iter::repeat_n("abcdefghij", 1000).collect();
        let pairs = split("s", &value).unwrap();
        assert_eq!(pairs.len(), 3);
        assert_eq!(pairs[1].0, "s.1");
        let h = headers(&pairs);
        let Read::Value(p) = read(&h, "s") else {
            panic!()
        };
        assert!(p.equals(&value));
        assert!(!p.equals(&value[1..]));
        assert_eq!(p.joined(), value);
        assert_eq!(p.cookies_present, 3);
    }

    #[test]
    fn missing_chunks_and_oversized_values_are_invalid() {
        let value: String = std::iter::repeat_n("x", 9000).collect();
        let mut pairs = split("s", &value).unwrap();
        pairs.remove(1);
        assert!(matches!(
            read(&headers(&pairs), "s"),
            Read::Invalid { cookies_present: 3 }
        ));
        assert!(split("s", &"y".repeat(CHUNK_SIZE * MAX_CHUNKS + 1)).is_none());
        for bad_count in ["9~abc", "1~abc", "0~abc"] {
            let bad = vec![("s".to_owned(), bad_count.to_owned())];
            assert!(
                matches!(read(&headers(&bad), "s"), Read::Invalid { .. }),
                "{bad_count}"
            );
        }
        let huge = vec![("s".to_owned(), "z".repeat(CHUNK_SIZE + 100))];
        assert!(matches!(read(&headers(&huge), "s"), Read::Invalid { .. }));
        assert!(matches!(read(&headers(&[]), "s"), Read::Absent));
    }

    #[test]
    fn recognises_chunk_names() {
        assert!(is_session_cookie("s", "s"));
        assert!(is_session_cookie("s.3", "s"));
        assert!(!is_session_cookie("s.x", "s"));
        assert!(!is_session_cookie("s_login_abc", "s"));
        assert!(!is_session_cookie("session", "s"));
    }
}
