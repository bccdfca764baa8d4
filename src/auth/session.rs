//! The `session` method: the session cookie, its timeouts, renewal, and single-flight refresh.
//! This is the hot path of browser traffic: one in-memory lookup, no call to the provider while
//! the access token is valid.

use super::{Flight, OidcAuth, REFRESH_FAILURE_MEMORY, RefreshOutcome};
use crate::config::RouteAuth;
use crate::http::cookies::CookieAttrs;
use crate::metrics::{self, RouteMetrics, SessionResult};
use crate::session::store::Lookup;
use crate::session::{Session, now};
use pingora::http::RequestHeader;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the session method found.
pub(super) enum SessionOutcome {
    /// A valid session, and cookies to set (renewal or refresh).
    Valid(Arc<Session>, Vec<http::HeaderValue>),
    /// No usable session; cookies to clear (an invalid or expired one).
    None(Vec<http::HeaderValue>),
}

impl OidcAuth {
    pub(super) async fn session_method(
        &self,
        spec: &RouteAuth,
        req: &RequestHeader,
        route_metrics: &RouteMetrics,
        now: u64,
    ) -> SessionOutcome {
        let first = spec.providers[0];
        let (session, cookies_present) = match self.store.lookup(&req.headers) {
            Lookup::Absent => {
                route_metrics.session(SessionResult::Miss);
                return SessionOutcome::None(Vec::new());
            }
            Lookup::Invalid { cookies_present } => {
                route_metrics.session(SessionResult::Invalid);
                return SessionOutcome::None(self.store.expire_chunks(
                    0,
                    cookies_present,
                    self.attrs(first),
                ));
            }
            Lookup::Found {
                session,
                cache_hit,
                cookies_present,
            } => {
                metrics::session_cache(cache_hit);
                (session, cookies_present)
            }
        };
        // A session from another provider never satisfies this route.
        let Some(index) = spec.providers.iter().copied().find(|&p| {
            self.provider(p)
                .is_some_and(|c| *c.name == *session.data.provider)
        }) else {
            route_metrics.session(SessionResult::Invalid);
            return SessionOutcome::None(Vec::new());
        };
        let attrs = self.attrs(index);
        if session.check(now, &self.store.timeouts).is_err() {
            route_metrics.session(SessionResult::Expired);
            self.store.destroy(&session);
            return SessionOutcome::None(self.store.expire_chunks(0, cookies_present, attrs));
        }
        session.touch(now);
        route_metrics.session(SessionResult::Hit);
        let leeway = self.provider(index).map_or(Duration::ZERO, |c| c.leeway);

        if session.access_token_expired(now, leeway) {
            if session.data.refresh_token.is_some()
                // Boxed, like every call that may go to the provider: its future is kilobytes,
                // and inline it would be moved around on every request, not just on refresh.
                && let Some((fresh, pairs)) = Box::pin(self.refresh(index, &session)).await
            {
                return SessionOutcome::Valid(
                    fresh,
                    self.cookies_for(&pairs, cookies_present, attrs),
                );
            }
            if session.access_token_expired(now, Duration::ZERO) {
                // Expired and not refreshable: this session no longer proves anything.
                return SessionOutcome::None(Vec::new());
            }
            // Refresh failed but the token is still valid for a moment: serve the request.
        } else if session.needs_renewal(now, &self.store.timeouts) {
            let mut data = session.data.clone();
            data.renewed_at = now;
            if let Ok((fresh, pairs)) = self.store.update(session.sid, data) {
                return SessionOutcome::Valid(
                    fresh,
                    self.cookies_for(&pairs, cookies_present, attrs),
                );
            }
        }
        SessionOutcome::Valid(session, Vec::new())
    }

    fn cookies_for(
        &self,
        pairs: &[(String, String)],
        cookies_present: usize,
        attrs: &CookieAttrs,
    ) -> Vec<http::HeaderValue> {
        // The memory store's cookie (the id) does not change when the session does.
        if self.store.cookie_carries_session() {
            self.store.cookie_headers(pairs, cookies_present, attrs)
        } else {
            Vec::new()
        }
    }

    /// Refreshes the session's tokens once, however many requests of the session ask at the
    /// same time (a rotating refresh token may be used only once).
    async fn refresh(&self, index: usize, session: &Arc<Session>) -> RefreshOutcome {
        let flight = {
            let mut entry = self.inflight.entry(session.sid).or_insert_with(|| {
                Arc::new(Flight {
                    started: Instant::now(),
                    result: tokio::sync::OnceCell::new(),
                })
            });
            // A remembered failure expires; a finished success is never reused (the store has
            // the refreshed session by then).
            let stale = match entry.result.get() {
                Some(None) => entry.started.elapsed() > REFRESH_FAILURE_MEMORY,
                Some(Some(_)) => true,
                None => false,
            };
            if stale {
                *entry = Arc::new(Flight {
                    started: Instant::now(),
                    result: tokio::sync::OnceCell::new(),
                });
            }
            entry.clone()
        };
        let name = self
            .provider(index)
            .map(|p| p.name.clone())
            .unwrap_or_default();
        let outcome = flight
            .result
            .get_or_init(|| async {
                match crate::oidc::refresh::refresh(&self.providers, index, &session.data, now())
                    .await
                {
                    Ok(data) => match self.store.update(session.sid, data) {
                        Ok((fresh, pairs)) => {
                            metrics::token_refresh(&name, "succeeded");
                            Some((fresh, pairs))
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
}
