//! Pushed Authorization Requests (RFC 9126) for browser sign-ins: the authorization request's
//! parameters (state, nonce, PKCE challenge, redirect URI, scopes, step-up) go to the
//! provider's PAR endpoint over the back channel, with client authentication; the browser is
//! sent to the authorization endpoint with only `client_id` and the `request_uri` the provider
//! gave. Nothing of the attempt shows in the browser's history or the provider's access logs.

use super::form_post;
use super::provider::{Discovered, ProviderHandle};
use crate::config::Par;

/// Why a sign-in could not be pushed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParError {
    /// `pushed_authorization_requests = "required"`, and discovery has no PAR endpoint.
    #[error(
        "pushed_authorization_requests = \"required\", but the provider's discovery document has no pushed_authorization_request_endpoint"
    )]
    NotAdvertised,
    /// The provider refused the pushed request (an OAuth error).
    #[error("the provider refused the pushed authorization request: {0}")]
    Refused(String),
    /// The PAR endpoint could not be reached or answered badly.
    #[error("the pushed authorization request failed: {0}")]
    Failed(String),
}

/// The PAR endpoint to push to, `None` when sign-ins go straight to the browser.
pub fn endpoint(mode: Par, d: &Discovered) -> Result<Option<&str>, ParError> {
    let extra = &d.metadata.additional_metadata().additional_metadata;
    let advertised = extra.pushed_authorization_request_endpoint.as_deref();
    match (mode, advertised) {
        (Par::Off, _) => Ok(None),
        (Par::Auto, found) => Ok(found),
        (Par::Required, Some(found)) => Ok(Some(found)),
        (Par::Required, None) => Err(ParError::NotAdvertised),
    }
}

/// The provider's answer.
#[derive(serde::Deserialize)]
struct Answer {
    request_uri: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// Pushes the parameters of `authorize_url` (the URL a browser would otherwise be sent to) to
/// `endpoint`; the URL to send the browser to instead.
pub async fn push(
    handle: &ProviderHandle,
    endpoint: &str,
    authorize_url: &str,
) -> Result<String, ParError> {
    let cfg = &handle.config;
    let mut url = openidconnect::url::Url::parse(authorize_url)
        .map_err(|e| ParError::Failed(format!("the authorization URL: {e}")))?;
    let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    // `client_form` adds the client id itself for every method but Basic.
    let params: Vec<(&str, &str)> = pairs
        .iter()
        .filter(|(k, _)| k != "client_id" || cfg.client_auth == crate::config::ClientAuth::Basic)
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let (status, answer): (_, Answer) = form_post::post(handle, endpoint, &params, "par")
        .await
        .map_err(ParError::Failed)?;
    if let Some(refused) = form_post::oauth_error(status, answer.error, answer.error_description) {
        return Err(ParError::Refused(refused));
    }
    let request_uri = answer
        .request_uri
        .filter(|u| status.is_success() && !u.is_empty())
        .ok_or_else(|| {
            ParError::Failed(format!(
                "the PAR endpoint answered {status} without a request_uri"
            ))
        })?;
    url.query_pairs_mut()
        .clear()
        .append_pair("client_id", &cfg.client_id)
        .append_pair("request_uri", &request_uri);
    Ok(url.into())
}
