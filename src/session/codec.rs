//! What the cookie store seals: the session, deflated. Tokens are most of a session, and a JWS
//! is base64 text around JSON. So the tokens are packed in the form sessions keep them in memory
//! (`Token::compact`: the JSON header and claims as they are, the signature as raw bytes) after
//! the session's other fields as JSON, and the whole is deflated: deflate then sees the JSON
//! itself, which repeats across the two tokens and the claims. Every request of a cookie-store
//! session carries the result, so it is kept small (sizes in docs/performance.md). Only sealing
//! (login, renewal, refresh) and opening (a cache miss) pay for it; a request served from memory
//! does not.
//!
//! Compressing before encrypting leaks the compressed length. A cookie holds one user's own
//! session, and nothing a third party chooses is compressed with it, so that length is no
//! oracle for anyone else's secrets.

use super::{SessionData, Token};
use std::borrow::Cow;

/// First plaintext byte of a packed session (fields as JSON, then the tokens), deflated.
const PACKED: u8 = 2;
/// First plaintext byte of a session deflated as JSON only (cookies sealed before packing;
/// they still open). Cookies sealed before compression hold bare JSON, starting with `{`.
const DEFLATED: u8 = 1;
/// Largest inflated session accepted: far above any real one, low enough that a crafted
/// payload cannot make a request allocate much (it must also carry a valid seal).
const MAX_INFLATED: usize = 256 * 1024;
/// Deflate level: sealing is rare, so a good ratio matters more than speed.
const LEVEL: u8 = 9;
/// The JSON fields holding tokens: packed after the JSON, which keeps an empty string there.
const TOKEN_FIELDS: [&str; 3] = ["id_token", "access_token", "refresh_token"];

/// The plaintext to seal for `data`.
pub fn encode(data: &SessionData) -> Option<Vec<u8>> {
    let mut fields = serde_json::to_value(data).ok()?;
    let obj = fields.as_object_mut()?;
    for name in TOKEN_FIELDS {
        obj.insert(name.into(), "".into());
    }
    let json = serde_json::to_vec(&fields).ok()?;
    let refresh = data
        .refresh_token
        .as_ref()
        .map_or(Cow::Borrowed(&[][..]), Token::compact);
    let mut body = Vec::with_capacity(json.len() + 2048);
    for part in [
        &json[..],
        &data.id_token.compact(),
        &data.access_token.compact(),
        &refresh,
    ] {
        body.extend_from_slice(&u32::try_from(part.len()).ok()?.to_le_bytes());
        body.extend_from_slice(part);
    }
    let deflated = miniz_oxide::deflate::compress_to_vec(&body, LEVEL);
    let mut out = Vec::with_capacity(deflated.len() + 1);
    out.push(PACKED);
    out.extend_from_slice(&deflated);
    Some(out)
}

/// The session in an opened plaintext: packed, or from older cookies deflated or bare JSON.
pub fn decode(plain: &[u8]) -> Option<SessionData> {
    let (&kind, rest) = plain.split_first()?;
    match kind {
        PACKED => unpack(&inflate(rest)?),
        DEFLATED => serde_json::from_slice(&inflate(rest)?).ok(),
        b'{' => serde_json::from_slice(plain).ok(),
        _ => None,
    }
}

fn inflate(deflated: &[u8]) -> Option<Vec<u8>> {
    miniz_oxide::inflate::decompress_to_vec_with_limit(deflated, MAX_INFLATED).ok()
}

fn unpack(mut body: &[u8]) -> Option<SessionData> {
    let b = &mut body;
    let (json, id, access, refresh) = (part(b)?, part(b)?, part(b)?, part(b)?);
    let mut data: SessionData = serde_json::from_slice(json).ok()?;
    data.id_token = Token::from_compact(id)?;
    data.access_token = Token::from_compact(access)?;
    data.refresh_token = match refresh {
        [] => None,
        r => Some(Token::from_compact(r)?),
    };
    body.is_empty().then_some(data)
}

/// The next length-prefixed part of `body`.
fn part<'a>(body: &mut &'a [u8]) -> Option<&'a [u8]> {
    let (len, rest) = body.split_at_checked(4)?;
    let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
    let (part, rest) = rest.split_at_checked(len)?;
    *body = rest;
    Some(part)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::{Claims, Token};

    /// A session the size of a real one: three JWS-shaped tokens and a refresh token.
    fn session() -> SessionData {
        let b64 =
            |s: &str| base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, s);
        let sig = b64(&"\u{7}".repeat(64));
        let header = b64(r#"{"typ":"JWT","alg":"ES256","kid":"dev-9jxtF-1K"}"#);
        let id = b64(
            r#"{"iss":"https://idp.example.com","sub":"alice-0001","aud":"demo","exp":1795926785,"iat":1795919585,"nonce":"kqG2McvO48pZ0MiHB5v-hQ","email":"alice@example.com","name":"Alice"}"#,
        );
        let at = b64(
            r#"{"iss":"https://idp.example.com","sub":"alice-0001","aud":"api","client_id":"demo","scope":"openid email","iat":1795919585,"exp":1795926785,"jti":"YAVERQryKC2BneFG"}"#,
        );
        SessionData {
            provider: "dev".into(),
            sub: "alice-0001".into(),
            claims: Claims::default(),
            id_token: Token::new(&format!("{header}.{id}.{sig}")),
            access_token: Token::new(&format!("{header}.{at}.{sig}")),
            expires_at: Some(1_795_926_785),
            refresh_token: Some("Vx3oXfSx0G7nT2ZrOHTmYQk3Hq9k5Ch1mJcMEYqg3nE".into()),
            created_at: 1_795_919_585,
            renewed_at: 1_795_919_585,
        }
    }

    /// The encoding before packing: the session's JSON, deflated.
    fn deflated_json(data: &SessionData) -> Vec<u8> {
        let mut v = vec![DEFLATED];
        v.extend(miniz_oxide::deflate::compress_to_vec(
            &serde_json::to_vec(data).unwrap(),
            LEVEL,
        ));
        v
    }

    #[test]
    fn round_trip_is_smaller_than_deflated_json() {
        let data = session();
        let plain = encode(&data).unwrap();
        let before = deflated_json(&data);
        assert_eq!(plain[0], PACKED);
        assert!(
            plain.len() * 10 < before.len() * 8,
            "{} bytes packed vs {} of deflated JSON",
            plain.len(),
            before.len()
        );
        assert_eq!(decode(&plain).unwrap(), data);
        let no_refresh = SessionData {
            refresh_token: None,
            ..session()
        };
        assert_eq!(decode(&encode(&no_refresh).unwrap()).unwrap(), no_refresh);
    }

    #[test]
    fn cookies_from_older_encodings_still_decode() {
        let data = session();
        assert_eq!(decode(&deflated_json(&data)).unwrap(), data);
        assert_eq!(decode(&serde_json::to_vec(&data).unwrap()).unwrap(), data);
    }

    #[test]
    fn damaged_packing_is_refused() {
        let body = inflate(&encode(&session()).unwrap()[1..]).unwrap();
        let packed = |b: &[u8]| {
            let mut v = vec![PACKED];
            v.extend(miniz_oxide::deflate::compress_to_vec(b, LEVEL));
            v
        };
        assert!(decode(&packed(&body)).is_some());
        assert!(
            decode(&packed(&body[..body.len() - 1])).is_none(),
            "cut short"
        );
        let mut longer = body.clone();
        longer.push(0);
        assert!(decode(&packed(&longer)).is_none(), "trailing bytes");
    }

    #[test]
    fn garbage_and_oversized_payloads_are_refused() {
        assert!(decode(b"").is_none());
        assert!(decode(&[DEFLATED, 0xff, 0x00, 0x13]).is_none());
        assert!(decode(&[7, b'{', b'}']).is_none());
        // A small payload inflating past the limit (a "zip bomb") is refused, not allocated.
        let mut bomb = vec![DEFLATED];
        bomb.extend(miniz_oxide::deflate::compress_to_vec(
            &vec![b' '; MAX_INFLATED + 1],
            LEVEL,
        ));
        assert!(bomb.len() < 2048);
        assert!(decode(&bomb).is_none());
    }
}
