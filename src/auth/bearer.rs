//! Access tokens: JWTs in `Authorization: Bearer` (validated against the issuer's JWKS) and
//! opaque tokens (RFC 7662 introspection). Verified signatures and introspection answers are
//! cached by token, never past `exp`; the claim checks (issuer, audience, times, route rules)
//! run on every request.

use super::rules;
use crate::cache::BoundedCache;
use crate::config::ProviderId;
use crate::config::RouteAuth;
use crate::metrics;
use crate::oidc::idp_http::token_request;
use crate::oidc::jws::{JwsError, Unverified};
use crate::oidc::provider::{Providers, error_chain};
use http::{HeaderName, HeaderValue};
use jsonwebtoken::Validation;
use serde_json::{Map, Value};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

/// A token whose signature (or introspection) succeeded.
#[derive(Debug)]
pub struct VerifiedToken {
    /// Index of the provider that issued it.
    pub provider: ProviderId,
    /// Its claims (JWT payload or introspection response).
    pub claims: Map<String, Value>,
    /// Expiry (Unix seconds).
    pub exp: u64,
    /// Headers sent upstream for this token, computed once.
    pub upstream_headers: OnceLock<Box<[(HeaderName, HeaderValue)]>>,
    /// Its claims as `allow_if` expressions read them, built once (routes with a policy only).
    pub policy_claims: OnceLock<Box<cel_interpreter::Value>>,
}

impl VerifiedToken {
    /// `sub`, if present.
    pub fn sub(&self) -> Option<&str> {
        self.claims.get("sub").and_then(Value::as_str)
    }
}

/// Why a presented token was refused (always a 401 `invalid_token`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a JWT, or its parts do not decode.
    #[error("the token is malformed")]
    Malformed,
    /// `iss` is not one of the route's providers.
    #[error("the token's issuer is not accepted here")]
    UnknownIssuer,
    /// No key with the token's `kid`, even after fetching the keys again.
    #[error("the token is signed with an unknown key")]
    UnknownKey,
    /// The token's `alg` is not the algorithm of its key.
    #[error("the token's algorithm does not match its key")]
    Algorithm,
    /// The signature does not verify.
    #[error("the token's signature is invalid")]
    Signature,
    /// Expired, or not yet valid.
    #[error("the token is expired or not yet valid")]
    Expired,
    /// `exp` is missing.
    #[error("the token has no expiry")]
    NoExpiry,
    /// `aud` has none of the accepted audiences.
    #[error("the token is not meant for this service (audience)")]
    Audience,
    /// Introspection says the token is not active.
    #[error("the token is not active")]
    Inactive,
    /// The provider (discovery, keys or introspection) could not be reached.
    #[error("the token could not be checked right now")]
    Unavailable,
    /// The token is bound to a TLS client certificate (RFC 8705) the connection does not have,
    /// or the route takes only bound tokens.
    #[error("{0}")]
    Certificate(&'static str),
    /// The call to the provider was not made: the client is over its limit of introspection
    /// calls, or the instance is at its ceiling of calls to providers.
    #[error("too many token checks")]
    Refused(crate::ratelimit::Refused),
}

/// Caches of verified JWTs and introspection answers.
pub struct TokenCaches {
    jwt: BoundedCache<TokenKey, Arc<VerifiedToken>>,
    introspection: BoundedCache<TokenKey, Option<Arc<VerifiedToken>>>,
}

/// A cache key: the token's SHA-256, so the caches hold no bearer credentials (and a tenth of
/// the bytes). Collisions are out of reach, so equal keys mean equal tokens.
type TokenKey = [u8; 32];

fn token_key(token: &str) -> TokenKey {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes()).into()
}

impl TokenCaches {
    /// Caches of `capacity` entries each.
    pub fn new(capacity: usize) -> TokenCaches {
        TokenCaches {
            jwt: BoundedCache::new(capacity),
            introspection: BoundedCache::new(capacity),
        }
    }

    /// Drops expired entries.
    pub fn sweep(&self, now: u64) {
        self.jwt.sweep(now);
        self.introspection.sweep(now);
    }
}

/// Whether `token` has the shape of a JWS (three base64url parts).
pub fn looks_like_jwt(token: &str) -> bool {
    token.split('.').count() == 3
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// Validates a JWT access token for a route.
pub async fn verify_jwt(
    providers: &Providers,
    caches: &TokenCaches,
    spec: &RouteAuth,
    token: &str,
    now: u64,
) -> Result<Arc<VerifiedToken>, TokenError> {
    let key = token_key(token);
    let verified = match caches.jwt.get(&key, now) {
        // Verified earlier, maybe for another route: it must come from one of this route's providers.
        Some(v) if !spec.providers.contains(&v.provider) => return Err(TokenError::UnknownIssuer),
        Some(v) => v,
        None => {
            let v = Box::pin(verify_signature(providers, &spec.providers, token)).await?;
            caches.jwt.insert(key, v.clone(), v.exp, now);
            v
        }
    };
    check_claims(providers, spec, &verified, now, true)?;
    Ok(verified)
}

async fn verify_signature(
    providers: &Providers,
    allowed: &[ProviderId],
    token: &str,
) -> Result<Arc<VerifiedToken>, TokenError> {
    let jws = Unverified::read(providers, allowed, token)?;
    let claims = jws
        .verify(providers, |config, alg| {
            let mut v = Validation::new(alg);
            v.leeway = config.leeway.as_secs();
            // Audience and issuer are checked per route, on every request (`check_claims`).
            v.validate_aud = false;
            v.validate_nbf = true;
            v.required_spec_claims = ["exp".to_owned()].into();
            v
        })
        .await?;
    let exp = claims
        .get("exp")
        .and_then(Value::as_u64)
        .ok_or(TokenError::NoExpiry)?;
    Ok(Arc::new(VerifiedToken {
        provider: jws.provider,
        claims,
        exp,
        upstream_headers: OnceLock::new(),
        policy_claims: OnceLock::new(),
    }))
}

impl From<JwsError> for TokenError {
    fn from(e: JwsError) -> TokenError {
        match e {
            JwsError::UnknownIssuer => TokenError::UnknownIssuer,
            JwsError::UnknownKey => TokenError::UnknownKey,
            JwsError::Algorithm => TokenError::Algorithm,
            JwsError::Signature => TokenError::Signature,
            JwsError::Time => TokenError::Expired,
            JwsError::MissingClaim => TokenError::NoExpiry,
            JwsError::Unavailable => TokenError::Unavailable,
            JwsError::Malformed | JwsError::Audience | JwsError::Issuer => TokenError::Malformed,
        }
    }
}

/// The per-request checks on a verified token: times, issuer, audience.
fn check_claims(
    providers: &Providers,
    spec: &RouteAuth,
    t: &VerifiedToken,
    now: u64,
    jwt: bool,
) -> Result<(), TokenError> {
    let cfg = &providers
        .handle(t.provider)
        .ok_or(TokenError::Unavailable)?
        .config;
    let leeway = cfg.leeway.as_secs();
    if now >= t.exp.saturating_add(leeway) {
        return Err(TokenError::Expired);
    }
    let time = |k: &str| t.claims.get(k).and_then(Value::as_u64);
    if time("nbf").is_some_and(|nbf| nbf > now.saturating_add(leeway))
        || time("iat").is_some_and(|iat| iat > now.saturating_add(leeway))
    {
        return Err(TokenError::Expired);
    }
    if let Some(iss) = t.claims.get("iss").and_then(Value::as_str)
        && iss != cfg.issuer
    {
        return Err(TokenError::UnknownIssuer);
    }
    let audience_ok = if !spec.rules.audience.any_of.is_empty() {
        rules::satisfied(&spec.rules.audience, &t.claims)
    } else if jwt {
        // Default: tokens meant for this client.
        match t.claims.get("aud") {
            Some(Value::String(a)) => *a == cfg.client_id,
            Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(&cfg.client_id)),
            _ => false,
        }
    } else {
        true
    };
    if !audience_ok {
        return Err(TokenError::Audience);
    }
    Ok(())
}

/// Checks an opaque token at the first of the route's providers that has an introspection
/// endpoint and knows the token.
pub async fn introspect(
    providers: &Providers,
    caches: &TokenCaches,
    spec: &RouteAuth,
    token: &str,
    now: u64,
    admit: impl FnOnce() -> Result<(), crate::ratelimit::Refused>,
) -> Result<Arc<VerifiedToken>, TokenError> {
    let key = token_key(token);
    let verified = match caches.introspection.get(&key, now) {
        Some(Some(v)) if !spec.providers.contains(&v.provider) => {
            return Err(TokenError::UnknownIssuer);
        }
        Some(Some(v)) => v,
        Some(None) => return Err(TokenError::Inactive),
        None => {
            // A miss makes the gateway call the provider: the client's limit applies.
            admit().map_err(TokenError::Refused)?;
            let mut answer = Err(TokenError::Unavailable);
            for &p in &spec.providers {
                answer = Box::pin(introspect_at(providers, p, token, now)).await;
                if answer.is_ok() {
                    break;
                }
            }
            let handle = providers
                .handle(spec.providers[0])
                .ok_or(TokenError::Unavailable)?;
            match answer {
                Ok(v) => {
                    let cfg = &providers
                        .handle(v.provider)
                        .ok_or(TokenError::Unavailable)?
                        .config;
                    let until = v
                        .exp
                        .min(now.saturating_add(cfg.introspection_cache_ttl.as_secs()));
                    caches
                        .introspection
                        .insert(key, Some(v.clone()), until, now);
                    v
                }
                Err(TokenError::Inactive) => {
                    let until =
                        now.saturating_add(handle.config.introspection_negative_ttl.as_secs());
                    caches.introspection.insert(key, None, until, now);
                    return Err(TokenError::Inactive);
                }
                Err(e) => return Err(e),
            }
        }
    };
    check_claims(providers, spec, &verified, now, false)?;
    Ok(verified)
}

async fn introspect_at(
    providers: &Providers,
    index: ProviderId,
    token: &str,
    now: u64,
) -> Result<Arc<VerifiedToken>, TokenError> {
    let handle = providers.handle(index).ok_or(TokenError::Unavailable)?;
    let cfg = &handle.config;
    let d = providers
        .ready(index)
        .await
        .ok_or(TokenError::Unavailable)?;
    let endpoint = d.introspection_endpoint().ok_or(TokenError::Unavailable)?;
    let req = token_request(cfg, endpoint, token, "access_token").ok_or(TokenError::Unavailable)?;
    let start = Instant::now();
    let resp = handle.http.send(req).await;
    metrics::idp_request(&cfg.name, "introspection", start.elapsed());
    let resp = resp.map_err(|e| {
        tracing::warn!(provider = %cfg.name, "introspection failed: {}", error_chain(&e));
        TokenError::Unavailable
    })?;
    if !resp.status().is_success() {
        tracing::warn!(provider = %cfg.name, status = resp.status().as_u16(), "introspection refused");
        return Err(TokenError::Unavailable);
    }
    let claims: Map<String, Value> =
        serde_json::from_slice(resp.body()).map_err(|_| TokenError::Unavailable)?;
    if claims.get("active") != Some(&Value::Bool(true)) {
        return Err(TokenError::Inactive);
    }
    let exp = claims
        .get("exp")
        .and_then(Value::as_u64)
        .unwrap_or_else(|| now.saturating_add(cfg.introspection_cache_ttl.as_secs()));
    Ok(Arc::new(VerifiedToken {
        provider: index,
        claims,
        exp,
        upstream_headers: OnceLock::new(),
        policy_claims: OnceLock::new(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwt_shape() {
        assert!(looks_like_jwt("eyJh.eyJz.sig-_"));
        assert!(!looks_like_jwt("opaque-token"));
        assert!(!looks_like_jwt("a.b.c.d"));
        assert!(!looks_like_jwt("a.b.c d"));
    }
}
