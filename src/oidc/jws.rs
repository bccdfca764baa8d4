//! Verifying a JWS a provider signed (access tokens, logout tokens): the token's `iss` picks the
//! provider among those accepted, so keys are kept apart per issuer; its `kid` picks the key, and
//! an unknown `kid` fetches the provider's JWKS once more (with the provider's cool-down); the
//! algorithm comes from the key, never from the token; then `jsonwebtoken` checks the signature
//! and the registered claims the caller asks for. ID tokens go through `openidconnect` instead
//! (`verify.rs`), with the same refetch rule.

use super::provider::Providers;
use crate::config::Provider;
use crate::config::ProviderId;
use jsonwebtoken::{Header, Validation};
use serde_json::{Map, Value};

/// Why a JWS was refused. Each caller maps these to its own answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwsError {
    /// Not a signed JWT, or its parts do not decode.
    Malformed,
    /// `iss` is none of the accepted providers.
    UnknownIssuer,
    /// No key with the token's `kid`, even after fetching the keys again.
    UnknownKey,
    /// The token's `alg` is not its key's.
    Algorithm,
    /// The signature does not verify.
    Signature,
    /// `exp` passed, or `nbf` is still ahead.
    Time,
    /// A claim the caller requires is missing.
    MissingClaim,
    /// `aud` is not one the caller accepts.
    Audience,
    /// `iss` is not the one the caller's validation names.
    Issuer,
    /// The provider's keys could not be had.
    Unavailable,
}

/// A token whose `iss` names an accepted provider, before its signature is checked.
pub struct Unverified<'t> {
    /// Index of the provider its `iss` names.
    pub provider: ProviderId,
    /// Its JOSE header.
    pub header: Header,
    token: &'t str,
}

impl<'t> Unverified<'t> {
    /// Reads `token`'s header and `iss`, and finds that issuer among `accepted`.
    pub fn read(
        providers: &Providers,
        accepted: &[ProviderId],
        token: &'t str,
    ) -> Result<Unverified<'t>, JwsError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| JwsError::Malformed)?;
        let iss = crate::claims::jwt_payload(token)
            .and_then(|p| p.get("iss")?.as_str().map(str::to_owned))
            .ok_or(JwsError::Malformed)?;
        let provider = *accepted
            .iter()
            .find(|&&p| providers.handle(p).is_some_and(|h| h.config.issuer == iss))
            .ok_or(JwsError::UnknownIssuer)?;
        Ok(Unverified {
            provider,
            header,
            token,
        })
    }

    /// Checks the signature with the provider's key for the token's `kid`, and the claims
    /// `validation` asks for (given the provider's config and the key's algorithm). Waits for
    /// the provider's first discovery if it is in flight.
    pub async fn verify(
        &self,
        providers: &Providers,
        validation: impl Fn(&Provider, jsonwebtoken::Algorithm) -> Validation,
    ) -> Result<Map<String, Value>, JwsError> {
        let config = &providers
            .handle(self.provider)
            .ok_or(JwsError::UnknownIssuer)?
            .config;
        let mut refetched = false;
        loop {
            let d = providers
                .ready(self.provider)
                .await
                .ok_or(JwsError::Unavailable)?;
            let Some(key) = d.bearer_keys.find(self.header.kid.as_deref()) else {
                if !refetched && providers.refresh_keys(self.provider).await {
                    refetched = true;
                    continue;
                }
                return Err(JwsError::UnknownKey);
            };
            if key.alg != self.header.alg {
                return Err(JwsError::Algorithm);
            }
            let v = validation(config, key.alg);
            return jsonwebtoken::decode::<Map<String, Value>>(self.token, &key.key, &v)
                .map(|data| data.claims)
                .map_err(|e| {
                    use jsonwebtoken::errors::ErrorKind;
                    match e.kind() {
                        ErrorKind::ExpiredSignature | ErrorKind::ImmatureSignature => {
                            JwsError::Time
                        }
                        ErrorKind::MissingRequiredClaim(_) => JwsError::MissingClaim,
                        ErrorKind::InvalidAudience => JwsError::Audience,
                        ErrorKind::InvalidIssuer => JwsError::Issuer,
                        ErrorKind::InvalidAlgorithm => JwsError::Algorithm,
                        ErrorKind::InvalidSignature => JwsError::Signature,
                        _ => JwsError::Malformed,
                    }
                });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::oidc::provider::Discovered;
    use crate::oidc::types::Metadata;
    use jsonwebtoken::{Algorithm, EncodingKey};
    use serde_json::json;

    const KEYS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/support/keys");

    /// One provider whose JWKS holds key1; its jwks_uri is a closed port, so a refetch fails at
    /// once (no network is needed: this runs in a namespace without one too).
    fn providers() -> Providers {
        let cfg = Config::parse(
            r#"
[session]
secrets = ["jws-test-secret-jws-test-secret-0123456789"]
[[providers]]
name = "idp"
issuer = "https://idp.example.com"
client_id = "gateway"
redirect_uri = "https://app.example.com/oauth2/callback"
[[upstreams]]
name = "api"
targets = ["127.0.0.1:3000"]
[[routes]]
name = "api"
upstream = "api"
auth = { provider = "idp", methods = ["bearer"] }
"#,
            std::path::Path::new("jws-test.toml"),
        )
        .unwrap();
        let jwk: Value = serde_json::from_str(
            &std::fs::read_to_string(format!("{KEYS}/key1.jwk.json")).unwrap(),
        )
        .unwrap();
        let metadata: Metadata = serde_json::from_value(json!({
            "issuer": "https://idp.example.com",
            "authorization_endpoint": "https://idp.example.com/authorize",
            "token_endpoint": "https://idp.example.com/token",
            "jwks_uri": "http://127.0.0.1:1/jwks",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
        }))
        .unwrap();
        let metadata = metadata.set_jwks(serde_json::from_value(json!({ "keys": [jwk] })).unwrap());
        let providers = Providers::new(&cfg.providers).unwrap();
        providers.install(
            ProviderId(0),
            Discovered::new(&cfg.providers[0], metadata).unwrap(),
        );
        providers
    }

    fn sign(key_file: &str, kid: &str, alg: Algorithm, claims: Value) -> String {
        let pem = std::fs::read(format!("{KEYS}/{key_file}")).unwrap();
        let mut header = Header::new(alg);
        header.kid = Some(kid.into());
        jsonwebtoken::encode(&header, &claims, &EncodingKey::from_rsa_pem(&pem).unwrap()).unwrap()
    }

    fn claims() -> Value {
        let now = crate::clock::now();
        json!({"iss": "https://idp.example.com", "aud": "gateway", "sub": "alice",
               "iat": now, "exp": now + 300})
    }

    /// The audience and `exp` required, as a logout token or an access token would ask.
    fn strict(config: &Provider, alg: Algorithm) -> Validation {
        let mut v = Validation::new(alg);
        v.leeway = 0;
        v.set_issuer(&[&config.issuer]);
        v.set_audience(&[&config.client_id]);
        v.required_spec_claims = ["exp".to_owned(), "aud".to_owned()].into();
        v
    }

    async fn check(token: &str) -> Result<Map<String, Value>, JwsError> {
        let p = providers();
        Unverified::read(&p, &[ProviderId(0)], token)?
            .verify(&p, strict)
            .await
    }

    #[tokio::test]
    async fn a_good_token_verifies_and_names_its_provider() {
        let p = providers();
        let token = sign("key1.pem", "key1", Algorithm::RS256, claims());
        let u = Unverified::read(&p, &[ProviderId(0)], &token).unwrap();
        assert_eq!(u.provider, ProviderId(0));
        assert_eq!(u.verify(&p, strict).await.unwrap()["sub"], "alice");
    }

    #[tokio::test]
    async fn each_rejection_has_its_reason() {
        let with = |k: &str, v: Value| {
            let mut c = claims();
            match v {
                Value::Null => c.as_object_mut().unwrap().remove(k),
                v => c.as_object_mut().unwrap().insert(k.into(), v),
            };
            c
        };
        let key1 = |c: Value| sign("key1.pem", "key1", Algorithm::RS256, c);
        let past = crate::clock::now() - 600;
        let cases = [
            ("not a JWT".to_owned(), JwsError::Malformed),
            (key1(with("iss", Value::Null)), JwsError::Malformed),
            (
                key1(with("iss", json!("https://evil.example"))),
                JwsError::UnknownIssuer,
            ),
            // key2's kid is not in the JWKS, and the refetch fails.
            (
                sign("key2.pem", "key2", Algorithm::RS256, claims()),
                JwsError::UnknownKey,
            ),
            // key1 is an RS256 key: a token may not choose another algorithm for it.
            (
                sign("key1.pem", "key1", Algorithm::RS384, claims()),
                JwsError::Algorithm,
            ),
            // Signed by key2, naming key1.
            (
                sign("key2.pem", "key1", Algorithm::RS256, claims()),
                JwsError::Signature,
            ),
            (key1(with("exp", json!(past))), JwsError::Time),
            (key1(with("exp", Value::Null)), JwsError::MissingClaim),
            (key1(with("aud", json!("someone-else"))), JwsError::Audience),
        ];
        for (token, want) in cases {
            assert_eq!(check(&token).await.err(), Some(want), "{token}");
        }
    }

    #[tokio::test]
    async fn a_token_from_a_provider_not_accepted_here_is_an_unknown_issuer() {
        let p = providers();
        let token = sign("key1.pem", "key1", Algorithm::RS256, claims());
        assert_eq!(
            Unverified::read(&p, &[], &token).err(),
            Some(JwsError::UnknownIssuer)
        );
    }
}
