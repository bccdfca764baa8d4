//! Refreshing a session's tokens, once however many of its requests ask at the same time:
//! providers that rotate refresh tokens (Okta, Auth0, Keycloak with rotation) revoke the whole
//! token family when one is redeemed twice. A failure is remembered for a few seconds, so the
//! session's other requests fail fast instead of queueing on a provider that is down.

use crate::metrics;
use crate::oidc::provider::Providers;
use crate::session::store::{Loaded, Sessions, SetCookies};
use crate::session::{Session, Sid};
use crate::{clock, http::cookies::CookieAttrs};
use dashmap::DashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a failed refresh is remembered.
const FAILURE_MEMORY: Duration = Duration::from_secs(10);

/// The refreshed session and the cookies that carry it, or `None` when the refresh failed.
pub type Refreshed = Option<(Arc<Session>, SetCookies)>;

struct Flight {
    started: Instant,
    result: tokio::sync::OnceCell<Refreshed>,
}

impl Flight {
    fn new() -> Arc<Flight> {
        Arc::new(Flight {
            started: Instant::now(),
            result: tokio::sync::OnceCell::new(),
        })
    }
}

/// Refreshes in flight, by session.
#[derive(Default)]
pub struct Refresher {
    inflight: DashMap<Sid, Arc<Flight>>,
}

impl Refresher {
    /// Refreshes the tokens of `loaded`'s session at provider `index` and saves the result.
    pub async fn refresh(
        &self,
        providers: &Providers,
        store: &Sessions,
        index: usize,
        loaded: &Loaded,
        attrs: &CookieAttrs,
    ) -> Refreshed {
        let session = loaded.session()?;
        let flight = {
            let mut entry = self.inflight.entry(session.sid).or_insert_with(Flight::new);
            // A remembered failure expires; a finished success is never reused (the store has
            // the refreshed session by then).
            let stale = match entry.result.get() {
                Some(None) => entry.started.elapsed() > FAILURE_MEMORY,
                Some(Some(_)) => true,
                None => false,
            };
            if stale {
                *entry = Flight::new();
            }
            entry.clone()
        };
        let name = providers
            .handle(index)
            .map(|p| p.config.name.clone())
            .unwrap_or_default();
        let outcome = flight
            .result
            .get_or_init(|| async {
                match crate::oidc::refresh::refresh(providers, index, &session.data, clock::now())
                    .await
                {
                    Ok(data) => match store.save(loaded, data, attrs).await {
                        Ok(saved) => {
                            metrics::token_refresh(&name, "succeeded");
                            Some(saved)
                        }
                        Err(e) => {
                            metrics::token_refresh(&name, "session_too_large");
                            tracing::warn!(provider = %name, "refreshed session not stored: {e}");
                            None
                        }
                    },
                    Err(e) => {
                        metrics::token_refresh(&name, "failed");
                        tracing::warn!(provider = %name, "token refresh failed: {e}");
                        None
                    }
                }
            })
            .await
            .clone();
        if outcome.is_some() {
            self.inflight
                .remove_if(&session.sid, |_, f| Arc::ptr_eq(f, &flight));
        }
        outcome
    }

    /// Forgets old flights (run periodically).
    pub fn sweep(&self) {
        self.inflight
            .retain(|_, f| f.started.elapsed() < FAILURE_MEMORY * 6);
    }
}
