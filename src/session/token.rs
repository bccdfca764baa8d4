//! Tokens as sessions keep them in memory. A JWS (three base64url parts) is stored decoded, a
//! quarter smaller — tokens are most of a session's size — and re-encoded when used, which is
//! rare (once per session for the upstream header, at logout, when sealing a cookie). Anything
//! else is kept as it is.
//!
//! The memory store squeezes its tokens further: deflated against a dictionary made of the
//! first tokens it stored. Tokens of one provider share most of their text (header, issuer,
//! audience, claim names and often values), so each token shrinks to roughly what is its own
//! (signature, subject, times, nonce): about a third with the development IdP's. Expanding one
//! costs a few microseconds, paid when a session's upstream headers are built (its first
//! request, or its first after being idle), at refresh and at logout.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::cell::RefCell;
use std::sync::OnceLock;

const VERBATIM: u8 = 0;
const JWS: u8 = 1;
/// A JWS compact form deflated against `DICTIONARY`: tag, u32 length expanded, deflate data.
const SQUEEZED: u8 = 2;

/// What squeezed tokens are deflated against; set once per process, never changed.
static DICTIONARY: OnceLock<Box<[u8]>> = OnceLock::new();

/// A token in compact form.
#[derive(Clone)]
pub struct Token(Box<[u8]>);

/// Equal when the text is: a squeezed token equals the same token unsqueezed.
impl PartialEq for Token {
    fn eq(&self, other: &Token) -> bool {
        self.0 == other.0 || self.compact() == other.compact()
    }
}

impl Eq for Token {}

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
    pub fn compact(&self) -> Cow<'_, [u8]> {
        match self.0.split_first() {
            Some((&SQUEEZED, rest)) => Cow::Owned(
                DICTIONARY
                    .get()
                    .and_then(|d| expand(d, rest))
                    .unwrap_or_default(),
            ),
            _ => Cow::Borrowed(&self.0),
        }
    }

    /// Makes the headers and claims of `sample` the dictionary of squeezed tokens, unless one is
    /// set already. Signatures are left out: they are random, so no help, and without them the
    /// dictionary is no credential.
    pub fn prime(sample: &[&Token]) {
        if DICTIONARY.get().is_some() {
            return;
        }
        let mut dictionary = Vec::new();
        for token in sample {
            let compact = token.compact();
            if let Some((&JWS, rest)) = compact.split_first()
                && let Some((header, claims, _)) = jws_parts(rest)
            {
                dictionary.extend_from_slice(header);
                dictionary.extend_from_slice(claims);
            }
        }
        // Opaque tokens make no dictionary: wait for a sample with a JWS.
        if !dictionary.is_empty() {
            let _ = DICTIONARY.set(dictionary.into_boxed_slice());
        }
    }

    /// This token deflated against the dictionary (see the module), when that is smaller.
    pub fn squeezed(&self) -> Token {
        if self.0.first() == Some(&JWS)
            && let Some(deflated) = DICTIONARY.get().and_then(|d| squeeze(d, &self.0))
            && deflated.len() + 5 < self.0.len()
            && let Ok(len) = u32::try_from(self.0.len())
        {
            let mut v = Vec::with_capacity(deflated.len() + 5);
            v.push(SQUEEZED);
            v.extend_from_slice(&len.to_le_bytes());
            v.extend_from_slice(&deflated);
            return Token(v.into_boxed_slice());
        }
        self.clone()
    }

    /// A token from its compact form; `None` when `bytes` is not one.
    pub fn from_compact(bytes: &[u8]) -> Option<Token> {
        let valid = match bytes.split_first()? {
            (&VERBATIM, text) => std::str::from_utf8(text).is_ok(),
            (&JWS, rest) => jws_parts(rest).is_some(),
            _ => false,
        };
        valid.then(|| Token(bytes.into()))
    }

    /// The token as text.
    pub fn text(&self) -> Cow<'_, str> {
        match self.0.first() {
            Some(&SQUEEZED) => Cow::Owned(text_of(&self.compact()).into_owned()),
            _ => text_of(&self.0),
        }
    }
}

/// The text of a token's compact form.
fn text_of(compact: &[u8]) -> Cow<'_, str> {
    match compact.split_first() {
        Some((&JWS, rest)) => jws_parts(rest).map_or(Cow::Borrowed(""), |(h, p, s)| {
            Cow::Owned(format!(
                "{}.{}.{}",
                B64.encode(h),
                B64.encode(p),
                B64.encode(s)
            ))
        }),
        Some((_, rest)) => String::from_utf8_lossy(rest),
        None => Cow::Borrowed(""),
    }
}

/// Header, claims and signature of a JWS compact form (after its tag), if its lengths fit.
fn jws_parts(rest: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    let (lens, body) = rest.split_at_checked(8)?;
    let h = u32::from_le_bytes([lens[0], lens[1], lens[2], lens[3]]) as usize;
    let p = u32::from_le_bytes([lens[4], lens[5], lens[6], lens[7]]) as usize;
    let (header, rest) = body.split_at_checked(h)?;
    let (claims, signature) = rest.split_at_checked(p)?;
    Some((header, claims, signature))
}

thread_local! {
    // Set up once per thread: a fresh deflate state allocates and clears a few hundred KB.
    static DEFLATE: RefCell<flate2::Compress> =
        RefCell::new(flate2::Compress::new(flate2::Compression::default(), false));
    static INFLATE: RefCell<flate2::Decompress> = RefCell::new(flate2::Decompress::new(false));
}

/// `compact` deflated against `dictionary`.
fn squeeze(dictionary: &[u8], compact: &[u8]) -> Option<Vec<u8>> {
    DEFLATE.with_borrow_mut(|z| {
        z.reset();
        z.set_dictionary(dictionary).ok()?;
        let mut out = Vec::with_capacity(compact.len() + 64);
        let status = z
            .compress_vec(compact, &mut out, flate2::FlushCompress::Finish)
            .ok()?;
        (status == flate2::Status::StreamEnd).then_some(out)
    })
}

/// The compact form back from a squeezed token's bytes after the tag.
fn expand(dictionary: &[u8], squeezed: &[u8]) -> Option<Vec<u8>> {
    let (len, deflated) = squeezed.split_at_checked(4)?;
    let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
    INFLATE.with_borrow_mut(|z| {
        z.reset(false);
        z.set_dictionary(dictionary).ok()?;
        let mut out = Vec::with_capacity(len);
        let status = z
            .decompress_vec(deflated, &mut out, flate2::FlushDecompress::Finish)
            .ok()?;
        (status == flate2::Status::StreamEnd && out.len() == len).then_some(out)
    })
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
            assert_eq!(Token::from_compact(&t.compact()).unwrap().text(), s);
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

    /// An ES256 token shaped like the development IdP's, for user `n`.
    fn dev_token(n: u32) -> String {
        let payload = format!(
            r#"{{"iss":"http://127.0.0.1:8081","sub":"user-{n:04}","aud":"demo","iat":1795900000,"exp":1795903600,"nonce":"Po5vm6IWNlt{n:04}aoEFjEQ","email":"user-{n:04}@example.com","email_verified":true,"name":"User {n}","groups":["admins","readers"]}}"#
        );
        let sig: Vec<u8> = (0..64u32).map(|i| (i * 37 + n * 101 % 251) as u8).collect();
        format!(
            "{}.{}.{}",
            B64.encode(br#"{"alg":"ES256","kid":"dev-bEXXlQHX","typ":"JWT"}"#),
            B64.encode(payload),
            B64.encode(sig)
        )
    }

    #[test]
    fn squeezing_against_a_dictionary_halves_a_token_and_is_lossless() {
        let first = Token::new(&dev_token(1));
        let dictionary: Vec<u8> = first.0[9..first.0.len() - 64].to_vec();
        let other = Token::new(&dev_token(2));
        let squeezed = squeeze(&dictionary, &other.0).unwrap();
        assert!(
            squeezed.len() * 2 < other.0.len(),
            "{} of {}",
            squeezed.len(),
            other.0.len()
        );
        let mut tagged = (other.0.len() as u32).to_le_bytes().to_vec();
        tagged.extend_from_slice(&squeezed);
        assert_eq!(expand(&dictionary, &tagged).unwrap(), &other.0[..]);
        tagged.pop();
        assert!(expand(&dictionary, &tagged).is_none(), "damaged data");
    }

    #[test]
    fn squeezed_tokens_read_back_as_the_same_text() {
        // The process-wide dictionary may come from another test's tokens: only the round trip
        // is certain here (the size is checked above with a known dictionary).
        Token::prime(&[&Token::new(&dev_token(1))]);
        for text in [dev_token(3), "opaque-refresh-token".to_owned()] {
            let token = Token::new(&text);
            let squeezed = token.squeezed();
            assert_eq!(squeezed.text(), text);
            assert_eq!(squeezed.compact(), token.compact());
            assert_eq!(squeezed.squeezed().text(), text, "squeezing twice");
            assert_eq!(squeezed, token, "equal to the same token unsqueezed");
        }
        let opaque = Token::new("opaque-refresh-token");
        assert_eq!(opaque.squeezed().0, opaque.0, "only a JWS is squeezed");
    }

    #[test]
    fn serde_uses_the_text() {
        let t = Token::new("eyJhIjoxfQ.eyJiIjoyfQ.c2ln");
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(json, "\"eyJhIjoxfQ.eyJiIjoyfQ.c2ln\"");
        assert_eq!(serde_json::from_str::<Token>(&json).unwrap(), t);
    }
}
