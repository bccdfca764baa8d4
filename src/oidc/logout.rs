//! RP-initiated logout: the provider's `end_session_endpoint` with `id_token_hint`,
//! `post_logout_redirect_uri` and `client_id`.

use super::provider::Discovered;
use super::types::IdToken;
use openidconnect::{ClientId, LogoutRequest, PostLogoutRedirectUrl};
use std::str::FromStr;

/// The URL to send the browser to, when the provider supports RP-initiated logout.
pub fn end_session_url(
    d: &Discovered,
    cfg: &crate::config::Provider,
    id_token: Option<&str>,
) -> Option<String> {
    let endpoint = d.end_session_endpoint()?.clone();
    let mut req = LogoutRequest::from(endpoint).set_client_id(ClientId::new(cfg.client_id.clone()));
    if let Some(t) = id_token.and_then(|t| IdToken::from_str(t).ok()) {
        req = req.set_id_token_hint(&t);
    }
    if let Some(uri) = cfg
        .logout_redirect_uri
        .as_ref()
        .and_then(|u| PostLogoutRedirectUrl::new(u.clone()).ok())
    {
        req = req.set_post_logout_redirect_uri(uri);
    }
    Some(req.http_get_url().to_string())
}
