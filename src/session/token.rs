//! Tokens as sessions keep them in memory. A JWS (three base64url parts) is stored decoded, a
//! quarter smaller — tokens are most of a session's size — and re-encoded when used, which is
//! rare (once per session for the upstream header, at logout, when sealing a cookie). Anything
//! else is kept as it is.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

const VERBATIM: u8 = 0;
const JWS: u8 = 1;

/// A token in compact form.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(Box<[u8]>);

impl Token {
    /// Stores `text` compactly when it is a JWS whose parts round-trip exactly.
    pub fn new(text: &str) -> Token {
        Token::jws(text).unwrap_or_else(|| {
            let mut v = Vec::with_capacity(text.len() + 1);
            v.push(VERBATIM);
            v.extend_from_slice(text.as_bytes());
            Token(v.into_boxed_slice())
        })
    }

    fn jws(text: &str) -> Option<Token> {
        let mut parts = text.split('.');
        let (h, p, s) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || h.is_empty() || p.is_empty() {
            return None;
        }
        let (h, p, s) = (
            B64.decode(h).ok()?,
            B64.decode(p).ok()?,
            B64.decode(s).ok()?,
        );
        let mut v = Vec::with_capacity(9 + h.len() + p.len() + s.len());
        v.push(JWS);
        v.extend_from_slice(&u32::try_from(h.len()).ok()?.to_le_bytes());
        v.extend_from_slice(&u32::try_from(p.len()).ok()?.to_le_bytes());
        v.extend_from_slice(&h);
        v.extend_from_slice(&p);
        v.extend_from_slice(&s);
        let token = Token(v.into_boxed_slice());
        // Non-canonical base64 (stray bits, padding) would not come back the same: keep it as is.
        (token.text() == text).then_some(token)
    }

    /// The compact form, for a sealed cookie (`from_compact` reads it back).
    pub fn compact(&self) -> &[u8] {
        &self.0
    }

    /// A token from its compact form; `None` when `bytes` is not one.
    pub fn from_compact(bytes: &[u8]) -> Option<Token> {
        let valid = match bytes.split_first()? {
            (&VERBATIM, text) => std::str::from_utf8(text).is_ok(),
            (&JWS, rest) => rest.split_at_checked(8).is_some_and(|(lens, parts)| {
                let h = u32::from_le_bytes([lens[0], lens[1], lens[2], lens[3]]) as usize;
                let p = u32::from_le_bytes([lens[4], lens[5], lens[6], lens[7]]) as usize;
                h.checked_add(p).is_some_and(|n| n <= parts.len())
            }),
            _ => false,
        };
        valid.then(|| Token(bytes.into()))
    }

    /// The token as text.
    pub fn text(&self) -> Cow<'_, str> {
        match self.0.split_first() {
            Some((&JWS, rest)) if rest.len() >= 8 => {
                let hl = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                let pl = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]) as usize;
                let body = &rest[8..];
                let (h, rest) = body.split_at(hl.min(body.len()));
                let (p, s) = rest.split_at(pl.min(rest.len()));
                Cow::Owned(format!(
                    "{}.{}.{}",
                    B64.encode(h),
                    B64.encode(p),
                    B64.encode(s)
                ))
            }
            Some((_, rest)) => String::from_utf8_lossy(rest),
            None => Cow::Borrowed(""),
        }
    }
}

impl From<&str> for Token {
    fn from(text: &str) -> Token {
        Token::new(text)
    }
}

impl From<String> for Token {
    fn from(text: String) -> Token {
        Token::new(&text)
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Tokens are secrets: never in debug output.
        write!(f, "Token(<{} bytes>)", self.0.len())
    }
}

impl Serialize for Token {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.text().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Token {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = Cow::<str>::deserialize(d)?;
        Ok(Token::new(&text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jws_round_trip_and_shrink() {
        let payload = format!(
            r#"{{"sub":"alice","email":"alice@example.com","groups":["admins","readers"],"n":{}}}"#,
            1_795_900_000u64
        );
        let jwt = format!(
            "{}.{}.{}",
            B64.encode(br#"{"alg":"ES256","kid":"k1"}"#),
            B64.encode(payload),
            B64.encode([7u8; 64])
        );
        let t = Token::new(&jwt);
        assert_eq!(t.text(), jwt);
        assert!(
            t.0.len() < jwt.len() * 80 / 100,
            "{} vs {}",
            t.0.len(),
            jwt.len()
        );
        assert!(
            !format!("{t:?}").contains("alice"),
            "tokens never appear in debug output"
        );
    }

    #[test]
    fn other_tokens_are_kept_verbatim() {
        for s in [
            "opaque-token_123",
            "a.b",
            "a.b.c.d",
            "",
            "not base64!.x.y",
            "YQ.YQ.YR",
        ] {
            assert_eq!(Token::new(s).text(), s, "{s}");
        }
    }

    #[test]
    fn compact_form_round_trips_and_is_checked() {
        for s in ["eyJhIjoxfQ.eyJiIjoyfQ.c2ln", "opaque-token_123", ""] {
            let t = Token::new(s);
            assert_eq!(Token::from_compact(t.compact()).unwrap().text(), s);
        }
        let jws = Token::new("eyJhIjoxfQ.eyJiIjoyfQ.c2ln");
        let bytes = jws.compact();
        assert!(Token::from_compact(&[]).is_none());
        assert!(Token::from_compact(&[9, b'x']).is_none(), "unknown tag");
        assert!(
            Token::from_compact(&[VERBATIM, 0xff]).is_none(),
            "not UTF-8"
        );
        assert!(
            Token::from_compact(&bytes[..5]).is_none(),
            "lengths cut short"
        );
        let mut long = bytes.to_vec();
        long[1] = 200;
        assert!(
            Token::from_compact(&long).is_none(),
            "parts longer than the token"
        );
    }

    #[test]
    fn serde_uses_the_text() {
        let t = Token::new("eyJhIjoxfQ.eyJiIjoyfQ.c2ln");
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(json, "\"eyJhIjoxfQ.eyJiIjoyfQ.c2ln\"");
        assert_eq!(serde_json::from_str::<Token>(&json).unwrap(), t);
    }
}
