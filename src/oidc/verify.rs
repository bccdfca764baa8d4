//! ID-token validation, shared by login and refresh. The provider-JWS verifier (`jws.rs`) checks
//! what every provider token needs: the algorithm (one the provider advertises, never `none`,
//! HMAC only keyed with the client secret and when allowed), the key (one JWKS refetch for an
//! unknown `kid`), the signature, `iss`, `aud` and `exp` with leeway. This module adds what is
//! particular to ID tokens: `sub`, an `iat` not in the future, `azp`, the nonce and `at_hash`.

use super::jws::{JwsError, Signed, Unverified, numeric_date};
use super::provider::Providers;
use crate::clock;
use crate::config::{Provider, ProviderId};
use crate::crypto::ct_eq;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};

/// Why an ID token was refused.
#[derive(Debug, thiserror::Error)]
pub enum IdTokenError {
    /// The provider's discovery data is not available.
    #[error("provider unavailable")]
    Unavailable,
    /// The signature or a registered claim (`iss`, `aud`, `exp`) does not hold.
    #[error("{0}")]
    Jws(JwsError),
    /// `sub` or `iat` is missing.
    #[error("no {0} claim")]
    Missing(&'static str),
    /// `iat` is later than now plus the leeway.
    #[error("issued in the future ({0})")]
    IssuedInFuture(u64),
    /// The nonce is missing or not the one this sign-in sent.
    #[error("the nonce is not this sign-in's")]
    Nonce,
    /// `azp` missing with several audiences, or naming another client.
    #[error("{0}")]
    AuthorizedParty(&'static str),
}

impl From<JwsError> for IdTokenError {
    fn from(e: JwsError) -> IdTokenError {
        match e {
            JwsError::Unavailable => IdTokenError::Unavailable,
            e => IdTokenError::Jws(e),
        }
    }
}

impl IdTokenError {
    /// A short reason for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            IdTokenError::Unavailable => "provider_unavailable",
            IdTokenError::Nonce => "nonce_mismatch",
            IdTokenError::Jws(JwsError::Time) | IdTokenError::IssuedInFuture(_) => {
                "id_token_expired"
            }
            IdTokenError::Jws(JwsError::UnknownIssuer | JwsError::Issuer) => "id_token_issuer",
            IdTokenError::Jws(JwsError::Audience) | IdTokenError::AuthorizedParty(_) => {
                "id_token_audience"
            }
            IdTokenError::Jws(JwsError::UnknownKey | JwsError::Algorithm | JwsError::Signature) => {
                "id_token_signature"
            }
            IdTokenError::Jws(_) | IdTokenError::Missing(_) => "id_token_invalid",
        }
    }
}

/// A verified ID token's claims, and the algorithm it was signed with (for `at_hash`).
#[derive(Debug)]
pub struct IdToken {
    /// Every claim, as signed.
    pub claims: Map<String, Value>,
    /// Its `sub`.
    pub sub: String,
    alg: Algorithm,
}

impl IdToken {
    /// Identity claims, without token bookkeeping (times, nonce, hashes).
    pub fn identity(&self) -> Map<String, Value> {
        crate::claims::identity(self.claims.clone())
    }

    /// Whether `access_token` is the one the token's `at_hash` names (true without one: it is
    /// optional in the code flow).
    pub fn matches_access_token(&self, access_token: &str) -> bool {
        match self.claims.get("at_hash") {
            None => true,
            Some(Value::String(h)) => {
                ct_eq(h.as_bytes(), token_hash(self.alg, access_token).as_bytes())
            }
            Some(_) => false,
        }
    }
}

/// Validates `token` as an ID token of provider `index` for this client; `nonce` is the one
/// the sign-in sent (`None` for refreshed tokens, which carry none of ours).
pub async fn verify_id_token(
    providers: &Providers,
    index: ProviderId,
    token: &str,
    nonce: Option<&str>,
) -> Result<IdToken, IdTokenError> {
    let cfg = &providers
        .handle(index)
        .ok_or(IdTokenError::Unavailable)?
        .config;
    let jws = Unverified::read(providers, &[index], token)?;
    let claims = jws
        .verify_as(providers, Signed::AsIdToken, validation)
        .await?;
    check_claims(claims, cfg, jws.header.alg, nonce, clock::now())
}

/// What every ID token must carry: this provider's `iss`, this client among its audiences,
/// an `exp` still ahead (with the provider's leeway), and a `sub`.
fn validation(cfg: &Provider, alg: Algorithm) -> Validation {
    let mut v = Validation::new(alg);
    v.leeway = cfg.leeway.as_secs();
    v.set_issuer(&[&cfg.issuer]);
    // Extra audiences are allowed only with a matching `azp` (`check_claims`).
    v.set_audience(&[&cfg.client_id]);
    v.required_spec_claims = ["iss", "aud", "exp", "sub"].map(String::from).into();
    v
}

/// The checks particular to ID tokens, on claims whose signature, `iss`, `aud` and `exp` hold.
fn check_claims(
    claims: Map<String, Value>,
    cfg: &Provider,
    alg: Algorithm,
    nonce: Option<&str>,
    now: u64,
) -> Result<IdToken, IdTokenError> {
    let sub = claims
        .get("sub")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or(IdTokenError::Missing("sub"))?
        .to_owned();
    let iat = claims
        .get("iat")
        .and_then(numeric_date)
        .ok_or(IdTokenError::Missing("iat"))?;
    if iat > now.saturating_add(cfg.leeway.as_secs()) {
        return Err(IdTokenError::IssuedInFuture(iat));
    }
    if let Some(expected) = nonce {
        let got = claims.get("nonce").and_then(Value::as_str).unwrap_or("");
        if !ct_eq(got.as_bytes(), expected.as_bytes()) {
            return Err(IdTokenError::Nonce);
        }
    }
    let audiences = match claims.get("aud") {
        Some(Value::Array(a)) => a.len(),
        _ => 1,
    };
    match claims.get("azp") {
        Some(azp) if azp.as_str() != Some(cfg.client_id.as_str()) => {
            return Err(IdTokenError::AuthorizedParty("azp is not this client"));
        }
        None if audiences > 1 => {
            return Err(IdTokenError::AuthorizedParty(
                "several audiences but no azp",
            ));
        }
        _ => {}
    }
    Ok(IdToken { claims, sub, alg })
}

/// The `at_hash` of `token` in an ID token signed with `alg` (OIDC Core 3.1.3.6): the left
/// half of its hash with the algorithm's SHA-2, base64url. Ed25519 hashes with SHA-512.
pub fn token_hash(alg: Algorithm, token: &str) -> String {
    use Algorithm::*;
    use sha2::{Digest, Sha256, Sha384, Sha512};
    let digest = match alg {
        HS256 | RS256 | PS256 | ES256 => Sha256::digest(token).to_vec(),
        HS384 | RS384 | PS384 | ES384 => Sha384::digest(token).to_vec(),
        HS512 | RS512 | PS512 | EdDSA => Sha512::digest(token).to_vec(),
    };
    URL_SAFE_NO_PAD.encode(&digest[..digest.len() / 2])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use serde_json::json;

    fn provider() -> Provider {
        let cfg = Config::parse(
            r#"
[session]
secrets = ["verify-test-secret-verify-test-secret-0123"]
[[providers]]
name = "idp"
issuer = "https://idp.example.com"
client_id = "gateway"
redirect_uri = "https://app.example.com/oauth2/callback"
leeway = "30s"
[[upstreams]]
name = "app"
targets = ["127.0.0.1:3000"]
[[routes]]
name = "app"
upstream = "app"
auth = { provider = "idp" }
"#,
            std::path::Path::new("verify-test.toml"),
        )
        .unwrap();
        cfg.providers[0].clone()
    }

    const NOW: u64 = 1_800_000_000;

    fn claims(extra: Value) -> Map<String, Value> {
        let mut c = json!({"iss": "https://idp.example.com", "aud": "gateway", "sub": "alice",
                           "iat": NOW, "exp": NOW + 300, "nonce": "n-1"});
        for (k, v) in extra.as_object().unwrap() {
            match v {
                Value::Null => c.as_object_mut().unwrap().remove(k),
                v => c.as_object_mut().unwrap().insert(k.clone(), v.clone()),
            };
        }
        c.as_object().unwrap().clone()
    }

    fn check(extra: Value, nonce: Option<&str>) -> Result<IdToken, IdTokenError> {
        check_claims(claims(extra), &provider(), Algorithm::RS256, nonce, NOW)
    }

    #[test]
    fn a_good_token_gives_its_subject_and_identity_without_bookkeeping() {
        let t = check(json!({"email": "a@example.com"}), Some("n-1")).unwrap();
        assert_eq!(t.sub, "alice");
        let identity = t.identity();
        assert_eq!(identity["email"], "a@example.com");
        for gone in ["iat", "exp", "nonce", "aud", "iss"] {
            assert!(!identity.contains_key(gone), "{gone} in {identity:?}");
        }
    }

    #[test]
    fn each_id_token_rejection_has_its_reason() {
        let cases = [
            (json!({"sub": null}), Some("n-1"), "id_token_invalid"),
            (json!({"sub": ""}), Some("n-1"), "id_token_invalid"),
            (json!({"iat": null}), Some("n-1"), "id_token_invalid"),
            (json!({"iat": NOW + 31}), Some("n-1"), "id_token_expired"),
            (json!({"nonce": "n-2"}), Some("n-1"), "nonce_mismatch"),
            (json!({"nonce": null}), Some("n-1"), "nonce_mismatch"),
            (
                json!({"aud": ["gateway", "other"]}),
                None,
                "id_token_audience",
            ),
            (json!({"azp": "other"}), None, "id_token_audience"),
            (
                json!({"aud": ["gateway", "other"], "azp": "other"}),
                None,
                "id_token_audience",
            ),
        ];
        for (extra, nonce, reason) in cases {
            let e = check(extra.clone(), nonce).expect_err(&extra.to_string());
            assert_eq!(e.reason(), reason, "{extra}: {e}");
        }
    }

    #[test]
    fn what_may_pass_passes() {
        // Within the leeway, no nonce asked for (a refresh), and several audiences with azp.
        check(json!({"iat": NOW + 30}), Some("n-1")).unwrap();
        check(json!({"nonce": null}), None).unwrap();
        check(
            json!({"aud": ["gateway", "other"], "azp": "gateway"}),
            Some("n-1"),
        )
        .unwrap();
    }

    #[test]
    fn at_hash_is_the_left_half_of_the_algorithms_hash() {
        // OIDC Core's example (A.3): this access token's RS256 at_hash is the one shown.
        let token = "jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y";
        assert_eq!(
            token_hash(Algorithm::RS256, token),
            "77QmUPtjPfzWtF2AnpK9RQ"
        );
        assert_eq!(token_hash(Algorithm::ES384, token).len(), 32);
        assert_eq!(token_hash(Algorithm::EdDSA, token).len(), 43);
        let mut t = check(json!({}), None).unwrap();
        assert!(
            t.matches_access_token("anything"),
            "no at_hash: nothing to match"
        );
        t.claims
            .insert("at_hash".into(), "77QmUPtjPfzWtF2AnpK9RQ".into());
        assert!(t.matches_access_token(token));
        assert!(!t.matches_access_token("another-token"));
        t.claims.insert("at_hash".into(), json!(7));
        assert!(!t.matches_access_token(token));
    }
}
