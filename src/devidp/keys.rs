//! The development IdP's signing key: ECDSA P-256 (ES256), generated at start with `ring`,
//! used through `jsonwebtoken`. Nothing is persisted: a restart invalidates every token.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde_json::{Map, Value};

/// A freshly generated signing key and its public JWK.
pub struct SigningKey {
    encoding: EncodingKey,
    decoding: DecodingKey,
    kid: String,
    /// The public key as a JWK.
    pub jwk: Value,
}

impl SigningKey {
    /// Generates a new P-256 key.
    pub fn generate() -> Result<SigningKey, String> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| "cannot generate a key")?;
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .map_err(|_| "cannot load the generated key")?;
        // Uncompressed point: 0x04 || X (32 bytes) || Y (32 bytes).
        let public = pair.public_key().as_ref();
        if public.len() != 65 {
            return Err("unexpected public key encoding".into());
        }
        let (x, y) = (B64.encode(&public[1..33]), B64.encode(&public[33..65]));
        let kid = format!("dev-{}", &B64.encode(crate::crypto::random_bytes::<6>()));
        let decoding = DecodingKey::from_ec_components(&x, &y).map_err(|e| e.to_string())?;
        Ok(SigningKey {
            encoding: EncodingKey::from_ec_der(pkcs8.as_ref()),
            decoding,
            jwk: serde_json::json!({"kty": "EC", "crv": "P-256", "x": x, "y": y, "kid": kid, "use": "sig", "alg": "ES256"}),
            kid,
        })
    }

    /// Signs `claims` as an ES256 JWT with this key's `kid`.
    pub fn sign(&self, claims: &Value, typ: &str) -> Result<String, String> {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        header.typ = Some(typ.to_owned());
        jsonwebtoken::encode(&header, claims, &self.encoding).map_err(|e| e.to_string())
    }

    /// Verifies a token this key signed (the IdP's own access tokens, at userinfo).
    pub fn verify(&self, token: &str, issuer: &str) -> Option<Map<String, Value>> {
        let mut v = Validation::new(Algorithm::ES256);
        v.set_issuer(&[issuer]);
        v.validate_aud = false;
        jsonwebtoken::decode::<Map<String, Value>>(token, &self.decoding, &v)
            .ok()
            .map(|d| d.claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_and_verifies() {
        let k = SigningKey::generate().unwrap();
        let exp = crate::clock::now() + 60;
        let t = k
            .sign(
                &serde_json::json!({"iss": "http://127.0.0.1:1", "sub": "alice", "exp": exp}),
                "JWT",
            )
            .unwrap();
        assert_eq!(k.verify(&t, "http://127.0.0.1:1").unwrap()["sub"], "alice");
        assert!(k.verify(&t, "http://other").is_none());
        assert!(
            SigningKey::generate()
                .unwrap()
                .verify(&t, "http://127.0.0.1:1")
                .is_none()
        );
        assert_eq!(k.jwk["kty"], "EC");
    }
}
