//! The `session` method: a browser session as a route's credential — its timeouts, renewal, and
//! refresh when its access token has expired. This is the hot path of browser traffic: one
//! in-memory lookup, no call to the provider while the access token is valid.

use super::Authenticator;
use crate::config::RouteAuth;
use crate::metrics::{self, RouteMetrics, SessionResult};
use crate::session::Session;
use crate::session::store::{Loaded, SetCookies};
use pingora::http::RequestHeader;
use std::sync::Arc;
use std::time::Duration;

/// What the session method found.
pub(super) enum SessionOutcome {
    /// A valid session, and cookies to set (renewal or refresh).
    Valid(Arc<Session>, SetCookies),
    /// No usable session, and the cookies that clear an invalid or expired one (none when
    /// there was no session cookie).
    NoSession {
        /// `Set-Cookie` values that delete it.
        clear: SetCookies,
    },
    /// The session store cannot be asked right now.
    Unavailable,
}

impl Authenticator {
    pub(super) async fn session_method(
        &self,
        spec: &RouteAuth,
        req: &RequestHeader,
        route_metrics: &RouteMetrics,
        now: u64,
    ) -> SessionOutcome {
        let first = spec.providers[0];
        let loaded = self.store.load(&req.headers).await;
        let session = match &loaded {
            Loaded::Absent => {
                route_metrics.session(SessionResult::Miss);
                return SessionOutcome::NoSession { clear: Vec::new() };
            }
            Loaded::Invalid { .. } => {
                route_metrics.session(SessionResult::Invalid);
                return SessionOutcome::NoSession {
                    clear: self.store.discard(&loaded, self.cookie_attrs(first)).await,
                };
            }
            // Not a missing session: the store cannot tell. The cookie stays.
            Loaded::Unavailable { .. } => return SessionOutcome::Unavailable,
            Loaded::Found {
                session, cache_hit, ..
            } => {
                metrics::session_cache(*cache_hit);
                session
            }
        };
        // A session from another provider never satisfies this route.
        let Some(index) = spec.providers.iter().copied().find(|&p| {
            self.provider(p)
                .is_some_and(|c| *c.name == *session.data.provider)
        }) else {
            route_metrics.session(SessionResult::Invalid);
            return SessionOutcome::NoSession { clear: Vec::new() };
        };
        let attrs = self.cookie_attrs(index);
        if session.check(now, self.store.timeouts()).is_err() {
            route_metrics.session(SessionResult::Expired);
            return SessionOutcome::NoSession {
                clear: self.store.discard(&loaded, attrs).await,
            };
        }
        session.touch(now);
        route_metrics.session(SessionResult::Hit);
        let leeway = self.provider(index).map_or(Duration::ZERO, |c| c.leeway);

        if session.access_token_expired(now, leeway) {
            if session.data.refresh_token.is_some()
                && let Some((fresh, cookies)) = Box::pin(self.refresher.refresh(
                    &self.providers,
                    &self.store,
                    index,
                    &loaded,
                    attrs,
                    self.fleet.as_deref(),
                ))
                .await
            {
                return SessionOutcome::Valid(fresh, cookies);
            }
            if session.access_token_expired(now, Duration::ZERO) {
                // Expired and not refreshable: this session no longer proves anything.
                return SessionOutcome::NoSession { clear: Vec::new() };
            }
            // Refresh failed but the token is still valid for a moment: serve the request.
        } else if session.needs_renewal(now, self.store.timeouts()) {
            let mut data = session.data.clone();
            data.renewed_at = now;
            if let Ok((fresh, cookies)) = self.store.save(&loaded, data, attrs).await {
                return SessionOutcome::Valid(fresh, cookies);
            }
        }
        SessionOutcome::Valid(session.clone(), Vec::new())
    }
}
