//! Refreshing a session's tokens, once however many of its requests ask at the same time:
//! providers that rotate refresh tokens (Okta, Auth0, Keycloak with rotation) revoke the whole
//! token family when one is redeemed twice. A failure is remembered for a few seconds, so the
//! session's other requests fail fast instead of queueing on a provider that is down.
//!
//! In a fleet (`[redis]`) the same holds across instances: one instance takes a lease on the
//! session in Redis (renewed while the provider answers), re-reads the session in case another
//! refreshed it a moment ago, refreshes and saves with compare-and-set, then releases the
//! lease. The others never redeem the refresh token: they wait a bounded time for the new
//! version (Redis store), or go on with the access token while it is still valid.

use crate::config::ProviderId;
use crate::fleet::{Fleet, Lease};
use crate::metrics;
use crate::oidc::provider::Providers;
use crate::oidc::refresh::RefreshError;
use crate::session::store::{Loaded, SaveError, Sessions, SetCookies};
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
    /// Ended without trying (another instance held the lease): not a failure to remember,
    /// the next request tries again.
    deferred: std::sync::atomic::AtomicBool,
}

impl Flight {
    fn new() -> Arc<Flight> {
        Arc::new(Flight {
            started: Instant::now(),
            result: tokio::sync::OnceCell::new(),
            deferred: std::sync::atomic::AtomicBool::new(false),
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
        index: ProviderId,
        loaded: &Loaded,
        attrs: &CookieAttrs,
        fleet: Option<&Fleet>,
    ) -> Refreshed {
        let session = loaded.session()?;
        let flight = {
            let mut entry = self.inflight.entry(session.sid).or_insert_with(Flight::new);
            // A remembered failure expires; a finished success is never reused (the store has
            // the refreshed session by then).
            let stale = match entry.result.get() {
                Some(None) => {
                    entry.deferred.load(std::sync::atomic::Ordering::Relaxed)
                        || entry.started.elapsed() > FAILURE_MEMORY
                }
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
            .get_or_init(|| Box::pin(async {
                let lease = match fleet {
                    None => None,
                    Some(f) => match Box::pin(lease(f, session, lease_ttl(providers, index))).await {
                        Ok(Some(lease)) => Some(lease),
                        Ok(None) => {
                            // Another instance is refreshing this session.
                            metrics::token_refresh(&name, "elsewhere");
                            flight
                                .deferred
                                .store(true, std::sync::atomic::Ordering::Relaxed);
                            return Box::pin(
                                store.newer_version(loaded, providers_timeout(providers, index)),
                            )
                            .await;
                        }
                        Err(e) => {
                            // Without the lease a refresh could redeem the token twice.
                            metrics::token_refresh(&name, "failed");
                            tracing::warn!(provider = %name, "token refresh not attempted: {e}");
                            return None;
                        }
                    },
                };
                let job = Job {
                    providers,
                    store,
                    index,
                    loaded,
                    attrs,
                    name: &name,
                    fleet,
                };
                let outcome = Box::pin(job.run(lease.as_ref())).await;
                if let (Some(f), Some(lease)) = (fleet, lease) {
                    f.release(lease).await;
                }
                outcome
            }))
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

/// One refresh, as the instance holding the lease runs it.
struct Job<'a> {
    providers: &'a Providers,
    store: &'a Sessions,
    index: ProviderId,
    loaded: &'a Loaded,
    attrs: &'a CookieAttrs,
    name: &'a str,
    fleet: Option<&'a Fleet>,
}

impl Job<'_> {
    /// The refresh itself, with the lease held (in a fleet).
    async fn run(&self, lease: Option<&Lease>) -> Refreshed {
        let Job {
            providers,
            store,
            index,
            loaded,
            attrs,
            name,
            fleet,
        } = *self;
        let session = loaded.session()?;
        // Another instance may have refreshed just before this one took the lease.
        if lease.is_some()
            && let Some(newer) = store.newer_version(loaded, std::time::Duration::ZERO).await
        {
            return Some(newer);
        }
        let call = crate::oidc::refresh::refresh(providers, index, &session.data, clock::now());
        let refreshed = match (fleet, lease) {
            (Some(f), Some(l)) => Box::pin(renewing(f, l, lease_ttl(providers, index), call)).await,
            _ => Box::pin(call).await,
        };
        match refreshed {
            Ok(data) => match store.save(loaded, data, attrs).await {
                Ok(saved) => {
                    metrics::token_refresh(name, "succeeded");
                    Some(saved)
                }
                Err(SaveError::TooLarge(e)) => {
                    metrics::token_refresh(name, "session_too_large");
                    tracing::warn!(provider = %name, "refreshed session not stored: {e}");
                    None
                }
                Err(e) => {
                    metrics::token_refresh(name, "failed");
                    tracing::warn!(provider = %name, "refreshed session not stored: {e}");
                    None
                }
            },
            Err(e @ RefreshError::Rejected(_)) => {
                // The provider ended the grant (revoked, rotated away, user disabled): the
                // session ends on every instance, not just for this request.
                metrics::token_refresh(name, "rejected");
                tracing::info!(provider = %name, "session ended: {e}");
                store.clear(loaded, attrs).await;
                None
            }
            Err(e) => {
                metrics::token_refresh(name, "failed");
                tracing::warn!(provider = %name, "token refresh failed: {e}");
                None
            }
        }
    }
}

/// How long a refresh lease lives without renewal: longer than one call to the provider.
fn lease_ttl(providers: &Providers, index: ProviderId) -> Duration {
    providers_timeout(providers, index) * 2
}

fn providers_timeout(providers: &Providers, index: ProviderId) -> Duration {
    providers
        .handle(index)
        .map_or(Duration::from_secs(5), |p| p.config.timeout)
}

/// Takes the fleet-wide refresh lease on `session`.
async fn lease(
    fleet: &Fleet,
    session: &Session,
    ttl: Duration,
) -> Result<Option<Lease>, crate::fleet::FleetError> {
    let tag = session
        .remote
        .as_ref()
        .map_or_else(|| fleet.name(0, &session.sid), |r| r.tag);
    fleet.acquire("lk", &tag, ttl).await
}

/// Runs `call`, renewing `lease` while it runs, so a slow provider never lets the lease expire
/// under a refresh still in flight.
async fn renewing<T>(
    fleet: &Fleet,
    lease: &Lease,
    ttl: Duration,
    call: impl std::future::Future<Output = T>,
) -> T {
    tokio::pin!(call);
    let mut tick = tokio::time::interval(ttl / 3);
    tick.tick().await;
    loop {
        tokio::select! {
            out = &mut call => return out,
            _ = tick.tick() => {
                let _ = fleet.renew(lease, ttl).await;
            }
        }
    }
}
