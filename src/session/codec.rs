//! What the cookie store seals: the session's JSON, deflated. Tokens are most of a session and
//! are base64 text, which deflate shrinks by about a third, so every request of a cookie-store
//! session carries a third fewer cookie bytes (1.7 KB → 1.1 KB with the development IdP's
//! tokens), and fewer sessions need a second cookie chunk. Only sealing (login, renewal,
//! refresh) and opening (a cache miss) pay for it; a request served from memory does not.
//!
//! Compressing before encrypting leaks the compressed length. A cookie holds one user's own
//! session, and nothing a third party chooses is compressed with it, so that length is no
//! oracle for anyone else's secrets.

use super::SessionData;

/// First plaintext byte of a deflated session. Cookies sealed before compression hold bare
/// JSON, which starts with `{`, and still open.
const DEFLATED: u8 = 1;
/// Largest inflated session accepted: far above any real one, low enough that a crafted
/// payload cannot make a request allocate much (it must also carry a valid seal).
const MAX_INFLATED: usize = 256 * 1024;
/// Deflate level: sealing is rare, so a good ratio matters more than speed.
const LEVEL: u8 = 9;

/// The plaintext to seal for `data`.
pub fn encode(data: &SessionData) -> Option<Vec<u8>> {
    let json = serde_json::to_vec(data).ok()?;
    let deflated = miniz_oxide::deflate::compress_to_vec(&json, LEVEL);
    let mut out = Vec::with_capacity(deflated.len() + 1);
    out.push(DEFLATED);
    out.extend_from_slice(&deflated);
    Some(out)
}

/// The session in an opened plaintext, deflated or (older cookies) bare JSON.
pub fn decode(plain: &[u8]) -> Option<SessionData> {
    match plain.first()? {
        &DEFLATED => {
            let json =
                miniz_oxide::inflate::decompress_to_vec_with_limit(&plain[1..], MAX_INFLATED)
                    .ok()?;
            serde_json::from_slice(&json).ok()
        }
        b'{' => serde_json::from_slice(plain).ok(),
        _ => None,
    }
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

    #[test]
    fn round_trip_is_smaller_than_the_json() {
        let data = session();
        let plain = encode(&data).unwrap();
        let json = serde_json::to_vec(&data).unwrap();
        assert_eq!(plain[0], DEFLATED);
        assert!(
            plain.len() * 10 < json.len() * 8,
            "{} bytes deflated vs {} of JSON",
            plain.len(),
            json.len()
        );
        assert_eq!(decode(&plain).unwrap(), data);
    }

    #[test]
    fn bare_json_from_older_cookies_still_decodes() {
        let data = session();
        assert_eq!(decode(&serde_json::to_vec(&data).unwrap()).unwrap(), data);
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
