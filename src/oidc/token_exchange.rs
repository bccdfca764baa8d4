//! OAuth 2.0 Token Exchange (RFC 8693) at the provider's token endpoint: the user's access
//! token in, a token minted for one upstream (its `audience`, narrowed to a `scope`) out.

use super::form_post;
use super::provider::Providers;
use crate::config::{ProviderId, TokenExchange};
use serde::Deserialize;

/// The grant type of a token exchange.
pub const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// The token type of an OAuth access token, asked for and given.
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

/// A token the provider minted for an upstream.
#[derive(Debug)]
pub struct Exchanged {
    /// `Bearer <token>`, as the upstream gets it.
    pub authorization: http::HeaderValue,
    /// When it expires (Unix seconds), if the provider said.
    pub expires_at: Option<u64>,
}

/// Why an exchange produced no token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExchangeError {
    /// The provider answered with an OAuth error (`invalid_target`, `invalid_scope`,
    /// `invalid_grant`, `unauthorized_client`...): this user's token is not exchanged for it.
    #[error("the provider refused the exchange: {0}")]
    Refused(String),
    /// The provider could not be reached, did not answer in time, or answered nonsense.
    #[error("the token exchange failed: {0}")]
    Failed(String),
}

/// The token endpoint's answer, success or error (RFC 8693 section 2.2, RFC 6749 5.2).
#[derive(Deserialize)]
struct Answer {
    access_token: Option<String>,
    issued_token_type: Option<String>,
    token_type: Option<String>,
    expires_in: Option<u64>,
    error: Option<String>,
    error_description: Option<String>,
}

/// Exchanges `subject_token` (an access token of provider `index`) for one meant for
/// `wanted.audience` with `wanted.scope`.
pub async fn exchange(
    providers: &Providers,
    index: ProviderId,
    subject_token: &str,
    wanted: &TokenExchange,
    now: u64,
) -> Result<Exchanged, ExchangeError> {
    let handle = providers
        .handle(index)
        .ok_or_else(|| ExchangeError::Failed("no such provider".into()))?;
    let d = providers
        .ready(index)
        .await
        .ok_or_else(|| ExchangeError::Failed("the identity provider is unavailable".into()))?;
    let mut params = vec![
        ("grant_type", GRANT_TYPE),
        ("subject_token", subject_token),
        ("subject_token_type", ACCESS_TOKEN_TYPE),
        ("requested_token_type", ACCESS_TOKEN_TYPE),
        ("audience", wanted.audience.as_str()),
    ];
    if let Some(scope) = &wanted.scope {
        params.push(("scope", scope));
    }
    let (status, answer) = form_post::post(handle, d.token_endpoint(), &params, "token_exchange")
        .await
        .map_err(ExchangeError::Failed)?;
    read(status, answer, now)
}

/// What an answer means: a token (a Bearer access token), a refusal (a 4xx with an OAuth error),
/// or a failure.
fn read(status: http::StatusCode, a: Answer, now: u64) -> Result<Exchanged, ExchangeError> {
    if let Some(refused) = form_post::oauth_error(status, a.error, a.error_description) {
        return Err(ExchangeError::Refused(refused));
    }
    if !status.is_success() {
        return Err(ExchangeError::Failed(format!(
            "the token endpoint answered {status}"
        )));
    }
    let token = a
        .access_token
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ExchangeError::Failed("the answer has no access_token".into()))?;
    // Only a token the upstream can take as a Bearer access token is forwarded.
    if a.issued_token_type.as_deref().unwrap_or(ACCESS_TOKEN_TYPE) != ACCESS_TOKEN_TYPE
        || !a
            .token_type
            .as_deref()
            .unwrap_or("Bearer")
            .eq_ignore_ascii_case("bearer")
    {
        return Err(ExchangeError::Failed(format!(
            "the provider issued a {} of type {}, not a Bearer access token",
            a.issued_token_type.as_deref().unwrap_or("token"),
            a.token_type.as_deref().unwrap_or("Bearer")
        )));
    }
    let authorization = http::HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| ExchangeError::Failed("the issued token cannot be sent in a header".into()))?;
    Ok(Exchanged {
        authorization,
        expires_at: a.expires_in.map(|s| now.saturating_add(s)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn answer(status: u16, body: serde_json::Value) -> Result<Exchanged, ExchangeError> {
        read(
            http::StatusCode::from_u16(status).unwrap(),
            serde_json::from_value(body).unwrap(),
            1000,
        )
    }

    #[test]
    fn a_bearer_access_token_is_taken_with_its_lifetime() {
        let t = answer(
            200,
            json!({"access_token": "minted", "issued_token_type": ACCESS_TOKEN_TYPE,
                   "token_type": "Bearer", "expires_in": 60}),
        )
        .unwrap();
        assert_eq!(t.authorization, "Bearer minted");
        assert_eq!(t.expires_at, Some(1060));
        let t = answer(
            200,
            json!({"access_token": "minted", "token_type": "bearer"}),
        )
        .unwrap();
        assert_eq!(t.expires_at, None);
    }

    #[test]
    fn an_oauth_error_is_a_refusal_and_anything_else_a_failure() {
        assert_eq!(
            answer(
                400,
                json!({"error": "invalid_target", "error_description": "not for you"})
            )
            .unwrap_err(),
            ExchangeError::Refused("invalid_target (not for you)".into())
        );
        assert!(matches!(
            answer(500, json!({"error": "server_error"})),
            Err(ExchangeError::Failed(_))
        ));
        for body in [
            json!({}),
            json!({"access_token": ""}),
            json!({"access_token": "x", "token_type": "N_A",
                   "issued_token_type": "urn:ietf:params:oauth:token-type:jwt"}),
            json!({"access_token": "x", "token_type": "DPoP"}),
            json!({"access_token": "bad\nheader"}),
        ] {
            assert!(
                matches!(answer(200, body.clone()), Err(ExchangeError::Failed(_))),
                "{body}"
            );
        }
    }
}
