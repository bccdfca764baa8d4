//! The authorization code flow: the redirect to the provider (state, nonce, PKCE S256), and the
//! callback: code exchange, ID-token validation (with `at_hash`), and userinfo with a matching
//! `sub`.

use super::client_assertion;
use super::idp_http::IdpHttpError;
use super::provider::{Discovered, Providers, error_chain};
use super::state::LoginState;
use super::step_up::{Shortfall, shortfall};
use super::types::UserInfoClaims;
use super::verify::{IdTokenError, verify_id_token};
use crate::config::ProviderId;
use crate::config::StepUp;
use crate::metrics;
use crate::session::SessionData;
use openidconnect::core::{CoreAuthPrompt, CoreAuthenticationFlow};
use openidconnect::{
    AuthenticationContextClass, AuthorizationCode, CsrfToken, Nonce, OAuth2TokenResponse,
    PkceCodeChallenge, PkceCodeVerifier, RequestTokenError, Scope, SubjectIdentifier,
    TokenResponse as _, UserInfoError,
};
use std::time::Instant;

/// Builds the authorization redirect and the attempt to remember in the login cookie, asking
/// for the route's `step_up` (`acr_values`, `max_age`, `prompt=login`) when it has one.
pub fn authorization_request(
    d: &Discovered,
    cfg: &crate::config::Provider,
    return_to: String,
    now: u64,
    step_up: Option<&StepUp>,
) -> (String, LoginState) {
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let mut req = d
        .client
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .set_pkce_challenge(challenge);
    for s in cfg.scopes.iter().filter(|s| *s != "openid") {
        req = req.add_scope(Scope::new(s.clone()));
    }
    if let Some(step) = step_up {
        for acr in &step.acr_values {
            req = req.add_auth_context_value(AuthenticationContextClass::new(acr.clone()));
        }
        if let Some(age) = step.max_age {
            req = req.set_max_age(age);
        }
        if step.prompt_login {
            req = req.add_prompt(CoreAuthPrompt::Login);
        }
    }
    let (url, state, nonce) = req.url();
    let st = LoginState {
        state: state.secret().clone(),
        nonce: nonce.secret().clone(),
        verifier: verifier.secret().clone(),
        return_to,
        provider: cfg.name.as_str().into(),
        created_at: now,
        post: false,
        acr_values: step_up.map(|s| s.acr_values.clone()).unwrap_or_default(),
        max_age: step_up.and_then(|s| s.max_age).map(|d| d.as_secs()),
    };
    (url.to_string(), st)
}

/// Why a callback did not produce a session.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// The provider's discovery data is not available.
    #[error("the identity provider is unavailable")]
    Unavailable,
    /// The code exchange failed.
    #[error("code exchange failed: {0}")]
    TokenExchange(String),
    /// The token or userinfo endpoint did not answer within the provider's timeout.
    #[error("the identity provider did not answer in time")]
    Timeout,
    /// The token response could not be read (e.g. an ID token without `sub` or `iat`).
    #[error("invalid token response: {0}")]
    TokenResponse(String),
    /// The token response had no ID token.
    #[error("the token response has no id_token")]
    NoIdToken,
    /// The ID token was refused.
    #[error("ID token refused: {0}")]
    IdToken(#[from] IdTokenError),
    /// `at_hash` does not match the access token.
    #[error("at_hash does not match the access token")]
    AccessTokenHash,
    /// The userinfo request failed.
    #[error("userinfo failed: {0}")]
    UserInfo(String),
    /// Userinfo returned another subject.
    #[error("userinfo subject does not match the ID token")]
    UserInfoSubject,
    /// The ID token says the groups are elsewhere, and `groups_source` could not give them.
    #[error("the user's groups could not be had: {0}")]
    Groups(String),
    /// The sign-in asked for a step-up (`acr_values`, `max_age`) the ID token does not show.
    #[error("the ID token does not meet the step-up asked for ({})", .0.reason())]
    StepUp(Shortfall),
}

impl LoginError {
    /// A short reason for metrics (`logins_total{result}`).
    pub fn reason(&self) -> &'static str {
        match self {
            LoginError::Unavailable => "provider_unavailable",
            LoginError::TokenExchange(_) => "token_exchange_failed",
            LoginError::Timeout => "idp_timeout",
            LoginError::TokenResponse(_) => "token_response_invalid",
            LoginError::NoIdToken => "no_id_token",
            LoginError::IdToken(e) => e.reason(),
            LoginError::AccessTokenHash => "at_hash_mismatch",
            LoginError::UserInfo(_) => "userinfo_failed",
            LoginError::UserInfoSubject => "userinfo_sub_mismatch",
            LoginError::Groups(_) => "groups_unavailable",
            LoginError::StepUp(short) => short.reason(),
        }
    }
}

/// Exchanges the code and validates everything; returns the new session's contents.
pub async fn complete(
    providers: &Providers,
    index: ProviderId,
    code: &str,
    st: &LoginState,
    now: u64,
) -> Result<SessionData, LoginError> {
    let handle = providers.handle(index).ok_or(LoginError::Unavailable)?;
    let cfg = &handle.config;
    let d = providers
        .ready(index)
        .await
        .ok_or(LoginError::Unavailable)?;

    let start = Instant::now();
    let mut request = d
        .client
        .exchange_code(AuthorizationCode::new(code.to_owned()))
        .map_err(|e| LoginError::TokenExchange(e.to_string()))?
        .set_pkce_verifier(PkceCodeVerifier::new(st.verifier.clone()));
    for (k, v) in client_assertion::params(cfg, d.token_endpoint())
        .into_iter()
        .flatten()
    {
        request = request.add_extra_param(k, v);
    }
    let exchange = request.request_async(&handle.http).await;
    metrics::idp_request(&cfg.name, "token", start.elapsed());
    let token = exchange.map_err(|e| match e {
        RequestTokenError::Parse(e, _) => LoginError::TokenResponse(e.to_string()),
        RequestTokenError::Request(e) => {
            transport(&e).unwrap_or_else(|| LoginError::TokenExchange(error_chain(&e)))
        }
        e => LoginError::TokenExchange(error_chain(&e)),
    })?;

    let id_token = token.id_token().ok_or(LoginError::NoIdToken)?.to_string();
    let verified = verify_id_token(providers, index, &id_token, Some(&st.nonce)).await?;
    if !verified.matches_access_token(token.access_token().secret()) {
        return Err(LoginError::AccessTokenHash);
    }

    let mut identity = verified.identity();
    let sub = verified.sub;
    // What this attempt asked for, the new ID token must show: a provider that ignored
    // `acr_values` or `max_age` does not get a weaker session through.
    if let Some(step) = st.step_up()
        && let Some(short) = shortfall(&step, &identity, now, cfg.leeway.as_secs())
    {
        return Err(LoginError::StepUp(short));
    }
    if let Some(scope) = scope_claim(&token) {
        identity.insert("scope".into(), scope);
    }
    if let Some(extra) = userinfo(handle, &d, token.access_token(), &sub).await? {
        identity.extend(extra);
    }
    let overage = super::groups::overage(&verified.claims);
    super::groups::resolve(
        handle,
        token.access_token().secret(),
        overage,
        &mut identity,
    )
    .await
    .map_err(LoginError::Groups)?;

    Ok(SessionData {
        provider: cfg.name.as_str().into(),
        sub: sub.into(),
        claims: crate::session::Claims::derive(&id_token, identity),
        id_token: id_token.into(),
        access_token: token.access_token().secret().as_str().into(),
        expires_at: token.expires_in().map(|d| now.saturating_add(d.as_secs())),
        refresh_token: token.refresh_token().map(|r| r.secret().as_str().into()),
        created_at: now,
        renewed_at: now,
    })
}

/// The userinfo claims for `sub`, when the provider has the endpoint and it is enabled; its
/// `sub` must be the same (checked by `openidconnect`).
pub(crate) async fn userinfo(
    handle: &super::provider::ProviderHandle,
    d: &Discovered,
    access_token: &openidconnect::AccessToken,
    sub: &str,
) -> Result<Option<serde_json::Map<String, serde_json::Value>>, LoginError> {
    let cfg = &handle.config;
    if !cfg.use_userinfo || d.client.user_info_url().is_none() {
        return Ok(None);
    }
    let start = Instant::now();
    let request = d
        .client
        .user_info(
            access_token.clone(),
            Some(SubjectIdentifier::new(sub.to_owned())),
        )
        .map_err(|e| LoginError::UserInfo(e.to_string()))?;
    let result: Result<UserInfoClaims, _> = request.request_async(&handle.http).await;
    metrics::idp_request(&cfg.name, "userinfo", start.elapsed());
    match result {
        Ok(info) => match serde_json::to_value(&info) {
            Ok(serde_json::Value::Object(claims)) => Ok(Some(crate::claims::identity(claims))),
            _ => Ok(None),
        },
        Err(UserInfoError::ClaimsVerification(_)) => Err(LoginError::UserInfoSubject),
        Err(UserInfoError::Request(e)) => {
            Err(transport(&e).unwrap_or_else(|| LoginError::UserInfo(error_chain(&e))))
        }
        Err(e) => Err(LoginError::UserInfo(error_chain(&e))),
    }
}

/// A call that failed for want of the provider, not for what it answered: it did not answer
/// in time (504), or could not be reached or dropped the connection, as a restarting provider
/// does to kept-alive connections (503: try again).
fn transport(e: &IdpHttpError) -> Option<LoginError> {
    match e {
        IdpHttpError::Request(r) if r.is_timeout() => Some(LoginError::Timeout),
        IdpHttpError::Request(r) if r.is_connect() || r.is_request() => {
            Some(LoginError::Unavailable)
        }
        _ => None,
    }
}

/// Granted scopes as a `scope` claim, for `scopes_required` on session routes.
pub(crate) fn scope_claim(token: &super::types::TokenResponse) -> Option<serde_json::Value> {
    let scopes = token.scopes()?;
    let granted: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
    Some(granted.join(" ").into())
}
