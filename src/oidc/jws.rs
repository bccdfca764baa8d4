//! Verifying a JWS a provider signed (ID tokens, access tokens, logout tokens): the token's `iss`
//! picks the provider among those accepted, so keys are kept apart per issuer; its `kid` picks
//! the key, and an unknown `kid` fetches the provider's JWKS once more (with the provider's
//! cool-down); the algorithm must suit the key (an ID token's must also be one the provider
//! advertises, and HMAC is keyed with the client secret only where allowed); then `jsonwebtoken`
//! checks the signature and the registered claims the caller asks for, and the times are checked
//! against the gateway's clock.

use super::provider::{Providers, is_hmac};
use crate::clock;
use crate::config::Provider;
use crate::config::ProviderId;
use jsonwebtoken::{Algorithm, DecodingKey, Header, Validation};
use serde_json::{Map, Value};
use std::borrow::Cow;

/// Why a JWS was refused. Each caller maps these to its own answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JwsError {
    /// Not a signed JWT, or its parts do not decode.
    #[error("not a signed JWT")]
    Malformed,
    /// `iss` is none of the accepted providers.
    #[error("issued by no provider accepted here")]
    UnknownIssuer,
    /// No key with the token's `kid`, even after fetching the keys again.
    #[error("signed by a key the provider does not publish")]
    UnknownKey,
    /// The token's `alg` is not its key's.
    #[error("signed with an algorithm not allowed for it")]
    Algorithm,
    /// The signature does not verify.
    #[error("the signature does not verify")]
    Signature,
    /// `exp` passed, or `nbf` is still ahead.
    #[error("expired, or not valid yet")]
    Time,
    /// A claim the caller requires is missing.
    #[error("a required claim is missing")]
    MissingClaim,
    /// `aud` is not one the caller accepts.
    #[error("meant for another audience")]
    Audience,
    /// `iss` is not the one the caller's validation names.
    #[error("issued by another issuer")]
    Issuer,
    /// The provider's keys could not be had.
    #[error("the provider's keys are unavailable")]
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
        let header = jsonwebtoken::decode_header(token).map_err(|_| refusal_of(token))?;
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
        validation: impl Fn(&Provider, Algorithm) -> Validation,
    ) -> Result<Map<String, Value>, JwsError> {
        self.verify_as(providers, Signed::WithKeyAlg, validation)
            .await
    }

    /// [`verify`](Self::verify), with the algorithms `signed` allows.
    pub async fn verify_as(
        &self,
        providers: &Providers,
        signed: Signed,
        validation: impl Fn(&Provider, Algorithm) -> Validation,
    ) -> Result<Map<String, Value>, JwsError> {
        let config = &providers
            .handle(self.provider)
            .ok_or(JwsError::UnknownIssuer)?
            .config;
        let alg = self.header.alg;
        let mut refetched = false;
        loop {
            let d = providers
                .ready(self.provider)
                .await
                .ok_or(JwsError::Unavailable)?;
            let advertised = match signed {
                Signed::WithKeyAlg => None,
                Signed::AsIdToken if d.algs.contains(&alg) => Some(d.algs.as_slice()),
                Signed::AsIdToken => return Err(JwsError::Algorithm),
            };
            let key = if is_hmac(alg) {
                // Keyed with the client secret: only where the provider's ID tokens may be.
                let secret = advertised
                    .and(config.shared_secret())
                    .ok_or(JwsError::Algorithm)?;
                Cow::Owned(DecodingKey::from_secret(secret.as_bytes()))
            } else {
                let Some(key) = d.keys.find(self.header.kid.as_deref()) else {
                    if !refetched && providers.refresh_keys(self.provider).await {
                        refetched = true;
                        continue;
                    }
                    return Err(JwsError::UnknownKey);
                };
                if !key.suits(alg, advertised) {
                    return Err(JwsError::Algorithm);
                }
                Cow::Borrowed(&key.key)
            };
            return decode(self.token, &key, validation(config, alg));
        }
    }
}

/// Which algorithms a token may be signed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signed {
    /// Its key's own (access and logout tokens).
    WithKeyAlg,
    /// One the provider advertises for ID tokens (never `none`; HMAC keyed with the client
    /// secret only when the provider allows it), and one its key suits.
    AsIdToken,
}

/// Checks `token`'s signature and the claims `v` asks for; times against [`clock::now`], so a
/// test that moves the clock moves token lifetimes too.
fn decode(
    token: &str,
    key: &DecodingKey,
    mut v: Validation,
) -> Result<Map<String, Value>, JwsError> {
    let (exp, nbf, leeway) = (v.validate_exp, v.validate_nbf, v.leeway);
    v.validate_exp = false;
    v.validate_nbf = false;
    let claims = jsonwebtoken::decode::<Map<String, Value>>(token, key, &v)
        .map(|data| data.claims)
        .map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::MissingRequiredClaim(_) => JwsError::MissingClaim,
                ErrorKind::InvalidAudience => JwsError::Audience,
                ErrorKind::InvalidIssuer => JwsError::Issuer,
                ErrorKind::InvalidAlgorithm => JwsError::Algorithm,
                ErrorKind::InvalidSignature => JwsError::Signature,
                _ => JwsError::Malformed,
            }
        })?;
    let time = |name: &str| match claims.get(name) {
        None => Ok(None),
        Some(t) => numeric_date(t).map(Some).ok_or(JwsError::Malformed),
    };
    let now = clock::now();
    if exp && time("exp")?.is_some_and(|exp| exp.saturating_add(leeway) < now) {
        return Err(JwsError::Time);
    }
    if nbf && time("nbf")?.is_some_and(|nbf| nbf > now.saturating_add(leeway)) {
        return Err(JwsError::Time);
    }
    Ok(claims)
}

/// Why a token whose header `jsonwebtoken` cannot read is refused: a header naming an
/// algorithm it does not know (`none` above all) is an algorithm refusal, anything else is not
/// a JWS. Only classifies a refusal: nothing read here is trusted.
fn refusal_of(token: &str) -> JwsError {
    use base64::Engine as _;
    let names_alg = token
        .split('.')
        .next()
        .and_then(|h| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(h)
                .ok()
        })
        .and_then(|h| serde_json::from_slice::<Value>(&h).ok())
        .is_some_and(|h| h.get("alg").is_some_and(Value::is_string));
    if names_alg {
        JwsError::Algorithm
    } else {
        JwsError::Malformed
    }
}

/// A JWT NumericDate as whole seconds (RFC 7519 allows fractions; negative is nonsense).
pub fn numeric_date(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| {
        v.as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0)
            .map(|f| f as u64)
    })
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
        providers_with("", &["RS256"], true)
    }

    /// The same, with `extra` provider keys, the ID-token algorithms advertised, and key1
    /// published with its `alg` or without.
    fn providers_with(extra: &str, algs: &[&str], key_alg: bool) -> Providers {
        let cfg = Config::parse(
            &format!(
                r#"
[session]
secrets = ["jws-test-secret-jws-test-secret-0123456789"]
[[providers]]
name = "idp"
issuer = "https://idp.example.com"
client_id = "gateway"
redirect_uri = "https://app.example.com/oauth2/callback"
{extra}
[[upstreams]]
name = "api"
targets = ["127.0.0.1:3000"]
[[routes]]
name = "api"
upstream = "api"
auth = {{ provider = "idp", methods = ["bearer"] }}
"#
            ),
            std::path::Path::new("jws-test.toml"),
        )
        .unwrap();
        let mut jwk: Value = serde_json::from_str(
            &std::fs::read_to_string(format!("{KEYS}/key1.jwk.json")).unwrap(),
        )
        .unwrap();
        if !key_alg {
            jwk.as_object_mut().unwrap().remove("alg");
        }
        let metadata: Metadata = serde_json::from_value(json!({
            "issuer": "https://idp.example.com",
            "authorization_endpoint": "https://idp.example.com/authorize",
            "token_endpoint": "https://idp.example.com/token",
            "jwks_uri": "http://127.0.0.1:1/jwks",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": algs,
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
            // `alg: none`, unsigned: refused for its algorithm.
            (
                format!(
                    "eyJhbGciOiJub25lIn0.{}.",
                    key1(claims()).split('.').nth(1).unwrap()
                ),
                JwsError::Algorithm,
            ),
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

    /// Verifies `token` the way ID tokens are.
    async fn as_id_token(p: &Providers, token: &str) -> Result<Map<String, Value>, JwsError> {
        Unverified::read(p, &[ProviderId(0)], token)?
            .verify_as(p, Signed::AsIdToken, strict)
            .await
    }

    fn hmac(alg: Algorithm, secret: &str) -> String {
        jsonwebtoken::encode(
            &Header::new(alg),
            &claims(),
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn an_id_token_must_use_an_advertised_algorithm_its_key_suits() {
        let rs256 = sign("key1.pem", "key1", Algorithm::RS256, claims());
        let ps256 = sign("key1.pem", "key1", Algorithm::PS256, claims());
        let p = providers_with("", &["RS256"], true);
        assert!(as_id_token(&p, &rs256).await.is_ok());
        assert_eq!(
            as_id_token(&p, &ps256).await.err(),
            Some(JwsError::Algorithm)
        );

        // Advertised, but key1 names RS256: the key decides.
        let p = providers_with("", &["RS256", "PS256"], true);
        assert_eq!(
            as_id_token(&p, &ps256).await.err(),
            Some(JwsError::Algorithm)
        );
        // A key without `alg` verifies the RSA algorithms advertised, and only those.
        let p = providers_with("", &["PS256"], false);
        assert!(as_id_token(&p, &ps256).await.is_ok());
        assert_eq!(
            as_id_token(&p, &rs256).await.err(),
            Some(JwsError::Algorithm)
        );
        // Access tokens stay with the key's own algorithm (RS256 for an RSA key without `alg`).
        assert_eq!(
            Unverified::read(&p, &[ProviderId(0)], &ps256)
                .unwrap()
                .verify(&p, strict)
                .await
                .err(),
            Some(JwsError::Algorithm)
        );
    }

    #[tokio::test]
    async fn hmac_id_tokens_need_the_client_secret_the_advert_and_the_option() {
        let secret = "client-secret-client-secret-0123";
        let allowed = format!("client_secret = \"{secret}\"\nallow_hmac_id_tokens = true");
        let p = providers_with(&allowed, &["RS256", "HS256"], true);
        assert!(
            as_id_token(&p, &hmac(Algorithm::HS256, secret))
                .await
                .is_ok()
        );
        assert_eq!(
            as_id_token(&p, &hmac(Algorithm::HS256, "another-secret"))
                .await
                .err(),
            Some(JwsError::Signature)
        );
        assert_eq!(
            as_id_token(&p, &hmac(Algorithm::HS384, secret)).await.err(),
            Some(JwsError::Algorithm),
            "not advertised"
        );
        // Never for an access token, which anyone holding the secret could mint.
        let token = hmac(Algorithm::HS256, secret);
        let u = Unverified::read(&p, &[ProviderId(0)], &token).unwrap();
        assert_eq!(u.verify(&p, strict).await.err(), Some(JwsError::Algorithm));

        // Advertised, but not allowed here.
        let p = providers_with(
            &format!("client_secret = \"{secret}\""),
            &["RS256", "HS256"],
            true,
        );
        assert_eq!(
            as_id_token(&p, &hmac(Algorithm::HS256, secret)).await.err(),
            Some(JwsError::Algorithm)
        );
        // Allowed, but the client authenticates with a key: no shared secret to check with.
        let p = providers_with(
            &format!(
                "client_secret = \"{secret}\"\nallow_hmac_id_tokens = true\n\
                 client_auth = \"private_key_jwt\"\nclient_private_key_file = \"{KEYS}/key2.pem\""
            ),
            &["RS256", "HS256"],
            true,
        );
        assert_eq!(
            as_id_token(&p, &hmac(Algorithm::HS256, secret)).await.err(),
            Some(JwsError::Algorithm)
        );
    }

    #[tokio::test]
    async fn not_before_is_checked_when_asked_and_dates_may_have_fractions() {
        let p = providers();
        let now = crate::clock::now();
        let mut c = claims();
        c["exp"] = json!(now as f64 + 300.5);
        c["nbf"] = json!(now + 200);
        let token = sign("key1.pem", "key1", Algorithm::RS256, c);
        let nbf = |mut v: Validation| {
            v.validate_nbf = true;
            v
        };
        let u = Unverified::read(&p, &[ProviderId(0)], &token).unwrap();
        assert_eq!(
            u.verify(&p, |c, a| nbf(strict(c, a))).await.err(),
            Some(JwsError::Time),
            "not valid yet"
        );
        assert!(
            u.verify(&p, strict).await.is_ok(),
            "nbf is only checked when asked"
        );
        let mut c = claims();
        c["exp"] = json!("tomorrow");
        let token = sign("key1.pem", "key1", Algorithm::RS256, c);
        // A required exp that is not a date is none; an optional one is malformed.
        assert_eq!(check(&token).await.err(), Some(JwsError::MissingClaim));
        let optional = |c: &Provider, a| {
            let mut v = strict(c, a);
            v.required_spec_claims.remove("exp");
            v
        };
        let u = Unverified::read(&p, &[ProviderId(0)], &token).unwrap();
        assert_eq!(
            u.verify(&p, optional).await.err(),
            Some(JwsError::Malformed)
        );
    }
}
