//! ID-token validation, shared by login and refresh: `openidconnect` checks the signature (the
//! algorithm must be one the provider advertises, never `none`; HS* only with the client secret;
//! the key from JWKS must suit the algorithm), `iss`, `aud`, `exp`, and the nonce; this module
//! adds leeway, an `iat` check, `azp`, and one JWKS refetch when the key id is unknown.

use super::provider::{Discovered, Providers};
use super::types::{IdToken, IdTokenClaims};
use crate::config::ProviderId;
use openidconnect::{ClaimsVerificationError, NonceVerifier, SignatureVerificationError};
use std::sync::Arc;

/// Why an ID token was refused.
#[derive(Debug, thiserror::Error)]
pub enum IdTokenError {
    /// The provider's discovery data is not available.
    #[error("provider unavailable")]
    Unavailable,
    /// A check failed.
    #[error("{0}")]
    Claims(#[from] ClaimsVerificationError),
    /// `azp` missing with several audiences, or naming another client.
    #[error("{0}")]
    AuthorizedParty(String),
}

impl IdTokenError {
    /// A short reason for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            IdTokenError::Unavailable => "provider_unavailable",
            IdTokenError::Claims(ClaimsVerificationError::InvalidNonce(_)) => "nonce_mismatch",
            IdTokenError::Claims(ClaimsVerificationError::Expired(_)) => "id_token_expired",
            IdTokenError::Claims(ClaimsVerificationError::InvalidIssuer(_)) => "id_token_issuer",
            IdTokenError::Claims(ClaimsVerificationError::InvalidAudience(_))
            | IdTokenError::AuthorizedParty(_) => "id_token_audience",
            IdTokenError::Claims(ClaimsVerificationError::SignatureVerification(_)) => {
                "id_token_signature"
            }
            IdTokenError::Claims(_) => "id_token_invalid",
        }
    }
}

/// Validates `token` for provider `index`, fetching the JWKS once more if its key is unknown.
/// Returns the claims and the discovery state that verified them.
pub async fn verify_id_token<N>(
    providers: &Providers,
    index: ProviderId,
    token: &IdToken,
    nonce: N,
) -> Result<(IdTokenClaims, Arc<Discovered>), IdTokenError>
where
    N: NonceVerifier + Clone,
{
    let handle = providers.handle(index).ok_or(IdTokenError::Unavailable)?;
    let mut discovered = providers.get(index).ok_or(IdTokenError::Unavailable)?;
    let mut refetched = false;
    loop {
        match verify_once(&discovered, &handle.config, token, nonce.clone()) {
            Err(IdTokenError::Claims(ClaimsVerificationError::SignatureVerification(
                SignatureVerificationError::NoMatchingKey,
            ))) if !refetched => {
                refetched = true;
                if !providers.refresh_keys(index).await {
                    return Err(IdTokenError::Claims(
                        ClaimsVerificationError::SignatureVerification(
                            SignatureVerificationError::NoMatchingKey,
                        ),
                    ));
                }
                discovered = providers.get(index).ok_or(IdTokenError::Unavailable)?;
            }
            other => return other.map(|claims| (claims, discovered)),
        }
    }
}

/// Validates `token` with the keys `d` holds (no refetch).
pub fn verify_once<N: NonceVerifier>(
    d: &Discovered,
    cfg: &crate::config::Provider,
    token: &IdToken,
    nonce: N,
) -> Result<IdTokenClaims, IdTokenError> {
    let leeway =
        chrono::Duration::from_std(cfg.leeway).unwrap_or_else(|_| chrono::Duration::seconds(30));
    let verifier = d
        .client
        .id_token_verifier()
        .set_allowed_algs(d.algs.clone())
        // Extra audiences are allowed only with a matching `azp`, checked below.
        .set_other_audience_verifier_fn(|_| true)
        // Tolerate clock skew on `exp` ...
        .set_time_fn(move || chrono::Utc::now() - leeway)
        // ... and refuse tokens issued in the future.
        .set_issue_time_verifier_fn(move |iat| {
            if iat > chrono::Utc::now() + leeway {
                Err(format!("issued in the future ({iat})"))
            } else {
                Ok(())
            }
        });
    let claims = token.claims(&verifier, nonce)?.clone();
    let client_id = cfg.client_id.as_str();
    match claims.authorized_party() {
        Some(azp) if azp.as_str() != client_id => {
            return Err(IdTokenError::AuthorizedParty(format!(
                "azp {:?} is not this client",
                azp.as_str()
            )));
        }
        None if claims.audiences().len() > 1 => {
            return Err(IdTokenError::AuthorizedParty(
                "several audiences but no azp".into(),
            ));
        }
        _ => {}
    }
    Ok(claims)
}

/// Identity claims of a verified ID token, without token bookkeeping (times, nonce, hashes).
pub fn identity_claims(claims: &IdTokenClaims) -> serde_json::Map<String, serde_json::Value> {
    match serde_json::to_value(claims) {
        Ok(serde_json::Value::Object(m)) => crate::claims::identity(m),
        _ => serde_json::Map::new(),
    }
}
