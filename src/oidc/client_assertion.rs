//! `private_key_jwt` client authentication (RFC 7523, OpenID Connect Core section 9): instead of
//! a shared secret, each call to the token, introspection or revocation endpoint carries a
//! short-lived JWT signed with the client's private key, whose public half the provider holds.

use crate::config::Provider;
use crate::{clock, crypto};
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};

/// `client_assertion_type` for a JWT bearer assertion.
pub const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// How long an assertion is valid: long enough for one call, too short to be worth stealing.
const LIFETIME_SECS: u64 = 60;

/// The form parameters that authenticate the client at `endpoint` (the assertion's audience),
/// when the provider uses `private_key_jwt`; `None` otherwise, or if signing fails.
pub fn params(cfg: &Provider, endpoint: &str) -> Option<[(&'static str, String); 2]> {
    let key = cfg.client_key.as_ref()?;
    let now = clock::now();
    let jti = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(crypto::random_bytes::<16>());
    let claims = serde_json::json!({
        "iss": cfg.client_id,
        "sub": cfg.client_id,
        "aud": endpoint,
        "jti": jti,
        "iat": now,
        "exp": now + LIFETIME_SECS,
    });
    let mut header = Header::new(key.alg);
    header.kid = key.kid.clone();
    let pem = key.pem.expose().as_bytes();
    let signing = match key.alg {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(pem),
        _ => EncodingKey::from_ec_pem(pem),
    }
    .ok()?;
    let jwt = jsonwebtoken::encode(&header, &claims, &signing)
        .map_err(|e| tracing::error!(provider = %cfg.name, "cannot sign the client assertion: {e}"))
        .ok()?;
    Some([
        ("client_assertion_type", ASSERTION_TYPE.to_owned()),
        ("client_assertion", jwt),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::path::Path;

    const KEYS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/support/keys");

    fn parse(provider_extra: &str) -> Result<Config, String> {
        let text = format!(
            "[session]\nsecrets = [\"assertion-test-secret-0123456789abcdef\"]\n\
             [[providers]]\nname = \"op\"\nissuer = \"https://idp.example.com\"\nclient_id = \"gw\"\n\
             redirect_uri = \"https://app.example.com/oauth2/callback\"\n{provider_extra}\n"
        );
        Config::parse(&text, Path::new("p.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn an_assertion_is_a_short_jwt_for_one_endpoint_signed_by_the_client_key() {
        let c = parse(&format!(
            "client_auth = \"private_key_jwt\"\nclient_private_key_file = \"{KEYS}/key1.pem\"\nclient_key_id = \"key1\""
        ))
        .unwrap();
        let p = &c.providers[0];
        let [(t, kind), (a, jwt)] = params(p, "https://idp.example.com/token").unwrap();
        assert_eq!(
            (t, kind.as_str(), a),
            ("client_assertion_type", ASSERTION_TYPE, "client_assertion")
        );
        let public = std::fs::read(format!("{KEYS}/key1.pub.pem")).unwrap();
        let mut v = jsonwebtoken::Validation::new(Algorithm::RS256);
        v.set_audience(&["https://idp.example.com/token"]);
        let data = jsonwebtoken::decode::<serde_json::Value>(
            &jwt,
            &jsonwebtoken::DecodingKey::from_rsa_pem(&public).unwrap(),
            &v,
        )
        .unwrap();
        assert_eq!(data.header.kid.as_deref(), Some("key1"));
        let c = data.claims;
        assert_eq!(
            (c["iss"].as_str(), c["sub"].as_str()),
            (Some("gw"), Some("gw"))
        );
        assert_eq!(c["exp"].as_u64().unwrap() - c["iat"].as_u64().unwrap(), 60);
        let (_, again) = params(p, "https://idp.example.com/token").unwrap()[1].clone();
        let again = jsonwebtoken::decode::<serde_json::Value>(
            &again,
            &jsonwebtoken::DecodingKey::from_rsa_pem(&public).unwrap(),
            &v,
        )
        .unwrap();
        assert_ne!(
            c["jti"], again.claims["jti"],
            "every assertion has its own jti"
        );
    }

    #[test]
    fn an_ec_p256_key_signs_es256() {
        let pair = rcgen::KeyPair::generate().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ec.pem");
        std::fs::write(&file, pair.serialize_pem()).unwrap();
        let c = parse(&format!(
            "client_auth = \"private_key_jwt\"\nclient_private_key_file = \"{}\"",
            file.display()
        ))
        .unwrap();
        let p = &c.providers[0];
        assert_eq!(p.client_key.as_ref().unwrap().alg, Algorithm::ES256);
        let [_, (_, jwt)] = params(p, "https://idp.example.com/introspect").unwrap();
        let mut v = jsonwebtoken::Validation::new(Algorithm::ES256);
        v.set_audience(&["https://idp.example.com/introspect"]);
        let public = pair.public_key_pem();
        jsonwebtoken::decode::<serde_json::Value>(
            &jwt,
            &jsonwebtoken::DecodingKey::from_ec_pem(public.as_bytes()).unwrap(),
            &v,
        )
        .unwrap();
    }

    #[test]
    fn the_key_is_required_checked_and_only_used_with_private_key_jwt() {
        let e = parse("client_auth = \"private_key_jwt\"").unwrap_err();
        assert!(e.contains("providers[0].client_private_key_file"), "{e}");
        let e = parse(&format!(
            "client_auth = \"private_key_jwt\"\nclient_private_key_file = \"{KEYS}/key1.pub.pem\""
        ))
        .unwrap_err();
        assert!(e.contains("no RSA or EC P-256 private key"), "{e}");
        let e = parse(&format!(
            "client_secret = \"s\"\nclient_private_key_file = \"{KEYS}/key1.pem\""
        ))
        .unwrap_err();
        assert!(e.contains("only used with client_auth"), "{e}");
    }
}
