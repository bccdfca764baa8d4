//! Refreshing an expired access token with the refresh token. A new ID token in the response is
//! validated (same subject) and refreshes the claims; its absence is fine.

use super::login::{scope_claim, userinfo};
use super::provider::{Providers, error_chain};
use super::verify::verify_id_token;
use crate::config::ProviderId;
use crate::metrics;
use crate::session::SessionData;
use openidconnect::{OAuth2TokenResponse, RefreshToken, TokenResponse as _};
use std::time::Instant;

/// Why a refresh failed.
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    /// The provider refused the refresh token (`invalid_grant`): the session is over.
    #[error("the provider refused the refresh token: {0}")]
    Rejected(String),
    /// Anything else (the provider down, a bad answer): the session may refresh later.
    #[error("{0}")]
    Failed(String),
}

impl From<String> for RefreshError {
    fn from(e: String) -> RefreshError {
        RefreshError::Failed(e)
    }
}

impl From<&str> for RefreshError {
    fn from(e: &str) -> RefreshError {
        RefreshError::Failed(e.into())
    }
}

/// Returns the session contents after a successful refresh.
pub async fn refresh(
    providers: &Providers,
    index: ProviderId,
    old: &SessionData,
    now: u64,
) -> Result<SessionData, RefreshError> {
    let handle = providers.handle(index).ok_or("no such provider")?;
    let d = providers
        .get(index)
        .ok_or("the identity provider is unavailable")?;
    let rt = old.refresh_token.as_ref().ok_or("no refresh token")?;
    let start = Instant::now();
    let refresh_token = RefreshToken::new(rt.text().into_owned());
    let mut request = d
        .client
        .exchange_refresh_token(&refresh_token)
        .map_err(|e| e.to_string())?;
    for (k, v) in super::client_assertion::params(&handle.config, d.token_endpoint())
        .into_iter()
        .flatten()
    {
        request = request.add_extra_param(k, v);
    }
    let result = request.request_async(&handle.http).await;
    metrics::idp_request(&handle.config.name, "refresh", start.elapsed());
    let token = match result {
        Ok(t) => t,
        Err(openidconnect::RequestTokenError::ServerResponse(r))
            if *r.error() == openidconnect::core::CoreErrorResponseType::InvalidGrant =>
        {
            return Err(RefreshError::Rejected(r.to_string()));
        }
        Err(e) => return Err(RefreshError::Failed(error_chain(&e))),
    };

    let mut data = old.clone();
    let mut claims = old.claims().clone();
    let mut overage = false;
    if let Some(id_token) = token.id_token() {
        // Refreshed ID tokens carry no nonce of ours.
        let id_token = id_token.to_string();
        let verified = verify_id_token(providers, index, &id_token, None)
            .await
            .map_err(|e| e.to_string())?;
        if verified.sub != *old.sub {
            return Err("the refreshed ID token names another subject".into());
        }
        // Fresh claims replace the old ones: a group removed at the provider is gone here too.
        claims = verified.identity();
        overage = super::groups::overage(&verified.claims);
        data.id_token = id_token.into();
    }
    if let Some(info) = userinfo(handle, &d, token.access_token(), &old.sub)
        .await
        .map_err(|e| e.to_string())?
    {
        claims.extend(info);
    }
    super::groups::resolve(handle, token.access_token().secret(), overage, &mut claims).await?;
    if let Some(scope) = scope_claim(&token) {
        claims.insert("scope".into(), scope);
    }
    data.claims = crate::session::Claims::derive(&data.id_token.text(), claims);
    data.access_token = token.access_token().secret().as_str().into();
    data.expires_at = token.expires_in().map(|d| now.saturating_add(d.as_secs()));
    // Providers that rotate refresh tokens send a new one; others keep the old one valid.
    if let Some(rt) = token.refresh_token() {
        data.refresh_token = Some(rt.secret().as_str().into());
    }
    data.renewed_at = now;
    Ok(data)
}
