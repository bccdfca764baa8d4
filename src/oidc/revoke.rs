//! Token revocation at logout (RFC 7009): a local logout ends the gateway's session, but the
//! refresh token it held would stay usable at the provider until it expires. When the provider
//! advertises a `revocation_endpoint`, the refresh token is revoked (at most providers that also
//! ends the access tokens issued with it), then the access token, where the provider accepts it.
//!
//! Best effort: the call runs in the background with the provider's timeouts, and a failure is
//! logged and counted, never shown to the user who is signing out.

use super::idp_http::token_request;
use super::provider::Providers;
use crate::config::ProviderId;
use crate::metrics;
use std::sync::Arc;
use std::time::Instant;

/// The tokens of a session that has just ended.
#[derive(Debug, Default)]
pub struct Ended {
    /// Its refresh token, if it had one.
    pub refresh_token: Option<String>,
    /// Its access token.
    pub access_token: Option<String>,
}

/// Revokes `tokens` at provider `index` in the background (when it can revoke at all).
pub fn revoke_in_background(providers: Arc<Providers>, index: ProviderId, tokens: Ended) {
    // Without a runtime (unit tests) there is nothing to run the call on; the gateway always has
    // one.
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        // The trace of the logout that ended the session follows the calls (a no-op untraced).
        let call = async move { revoke(&providers, index, tokens).await };
        rt.spawn(opentelemetry::context::FutureExt::with_current_context(
            call,
        ));
    }
}

/// Revokes the refresh token, then the access token; returns how many the provider accepted.
pub async fn revoke(providers: &Providers, index: ProviderId, tokens: Ended) -> usize {
    let (Some(handle), Some(d)) = (providers.handle(index), providers.get(index)) else {
        return 0;
    };
    let Some(endpoint) = d.revocation_endpoint() else {
        return 0;
    };
    let cfg = &handle.config;
    let mut accepted = 0;
    let tokens = [
        ("refresh_token", tokens.refresh_token),
        ("access_token", tokens.access_token),
    ];
    for (kind, token) in tokens {
        let Some(req) = token.and_then(|t| token_request(cfg, endpoint, &t, kind)) else {
            continue;
        };
        let start = Instant::now();
        let result = handle.http.send(req).await;
        metrics::idp_request(&cfg.name, "revocation", start.elapsed());
        // RFC 7009 section 2.2: 200 whether or not the token was still valid.
        match result {
            Ok(resp) if resp.status().is_success() => {
                accepted += 1;
                metrics::revocation(&cfg.name, "revoked");
            }
            Ok(resp) => {
                metrics::revocation(&cfg.name, "failed");
                tracing::warn!(provider = %cfg.name, token = kind, status = resp.status().as_u16(), "token revocation refused");
            }
            Err(e) => {
                metrics::revocation(&cfg.name, "failed");
                tracing::warn!(provider = %cfg.name, token = kind, "token revocation failed: {e}");
            }
        }
    }
    accepted
}
