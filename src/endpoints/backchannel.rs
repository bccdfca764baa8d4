//! The back-channel logout endpoint (OpenID Connect Back-Channel Logout 1.0): the provider
//! POSTs a `logout_token` when a user's session ends there (logout elsewhere, an admin ending
//! it, an account disabled), and every gateway session of that IdP session (`sid`), or of that
//! user (`sub`) when no `sid` is named, ends on every instance.
//!
//! Answers: 200 when done; 400 `invalid_request` with the reason for a token that is not valid
//! (the provider does not retry those); 503 when the logout could not be recorded where every
//! instance sees it (Redis down: fail closed, so the provider retries).

use super::Endpoints;
use crate::http::responses::Reply;
use crate::metrics;
use crate::oidc::logout_token::{self, LogoutTokenError};
use crate::session::revocations::Subject;
use pingora::http::RequestHeader;
use std::time::Duration;

/// Largest request body accepted (a logout token is a few kilobytes at most).
pub const MAX_BODY: usize = 64 * 1024;

/// How long a `jti` is remembered: longer than a token can be accepted.
const JTI_MEMORY: Duration = Duration::from_secs(2 * logout_token::MAX_AGE + 600);

impl Endpoints {
    /// The providers whose back-channel logout path is `path`.
    fn backchannel_providers(&self, path: &str) -> Vec<crate::config::ProviderId> {
        self.auth
            .providers()
            .list
            .iter()
            .filter(|p| p.config.backchannel_logout_path == path)
            .map(|p| p.index)
            .collect()
    }

    /// Handles a back-channel logout request with its body (`None`: too large).
    pub(super) async fn backchannel_logout(
        &self,
        path: &str,
        req: &RequestHeader,
        body: Option<&[u8]>,
    ) -> Reply {
        if req.method != http::Method::POST {
            return Reply::empty(405)
                .with_header(http::header::ALLOW, http::HeaderValue::from_static("POST"));
        }
        let Some(body) = body else {
            return refuse("the request body is too large or arrived too slowly");
        };
        let form = match form_of(req, body) {
            Ok(f) => f,
            Err(e) => return refuse(e),
        };
        let candidates = self.backchannel_providers(path);
        let token = match logout_token::verify(
            self.auth.providers(),
            &candidates,
            &form,
            crate::clock::now(),
        )
        .await
        {
            Ok(t) => t,
            Err(LogoutTokenError::Unavailable) => {
                metrics::backchannel_logout("unavailable");
                return unavailable();
            }
            Err(e) => {
                metrics::backchannel_logout("invalid");
                tracing::info!("back-channel logout refused: {e}");
                return refuse(&e.to_string());
            }
        };
        let Some(provider) = self.auth.providers().handle(token.provider) else {
            return refuse("unknown provider");
        };
        let name = provider.config.name.as_str();
        // The jti is spent only once the revocation has taken effect, so a failure in between
        // (Redis stalled) is a 503 the provider retries, never a logout lost as a "replay".
        // Spent implies revoked; a retry after a failure revokes again, which is idempotent.
        let jti = format!("{name}\0{}", token.jti);
        match self.used_once.contains("jti", jti.as_bytes()).await {
            Ok(false) => {}
            Ok(true) => {
                metrics::backchannel_logout("replayed");
                return refuse("the logout token was already used (jti)");
            }
            Err(e) => {
                metrics::backchannel_logout("unavailable");
                tracing::warn!(provider = %name, "back-channel logout not recorded: {e}");
                return unavailable();
            }
        }
        // A `sid` names one IdP session; without one, every session of the user ends.
        let subject = match (&token.sid, &token.sub) {
            (Some(sid), _) => Subject::IdpSession(name, sid),
            (None, Some(sub)) => Subject::User(name, sub),
            (None, None) => return refuse("no sid or sub"),
        };
        if let Err(e) = Box::pin(self.auth.sessions().revoke(subject)).await {
            metrics::backchannel_logout("unavailable");
            tracing::warn!(provider = %name, "back-channel logout not shared: {e}");
            return unavailable();
        }
        // `false` here is the same token delivered twice at once: both revoked, both succeed.
        if let Err(e) = self
            .used_once
            .claim("jti", jti.as_bytes(), JTI_MEMORY)
            .await
        {
            metrics::backchannel_logout("unavailable");
            tracing::warn!(provider = %name, "back-channel logout's jti not recorded: {e}");
            return unavailable();
        }
        metrics::backchannel_logout("succeeded");
        tracing::info!(
            provider = %name,
            by = if token.sid.is_some() { "sid" } else { "sub" },
            "back-channel logout"
        );
        Reply::empty(200)
    }
}

/// The `logout_token` of a form-encoded body.
fn form_of(req: &RequestHeader, body: &[u8]) -> Result<String, &'static str> {
    let form = req
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !form {
        return Err("expected an application/x-www-form-urlencoded body");
    }
    let mut tokens = openidconnect::url::form_urlencoded::parse(body)
        .filter(|(k, _)| k == "logout_token")
        .map(|(_, v)| v.into_owned());
    match (tokens.next(), tokens.next()) {
        (Some(t), None) => Ok(t),
        (None, _) => Err("the logout_token parameter is missing"),
        (Some(_), Some(_)) => Err("the logout_token parameter is repeated"),
    }
}

fn refuse(reason: &str) -> Reply {
    Reply::json(
        400,
        &serde_json::json!({"error": "invalid_request", "error_description": reason}),
    )
}

fn unavailable() -> Reply {
    Reply::json(
        503,
        &serde_json::json!({"error": "temporarily_unavailable",
                            "error_description": "the logout could not be recorded; retry"}),
    )
    .with_header(
        http::header::RETRY_AFTER,
        http::HeaderValue::from_static("5"),
    )
}
