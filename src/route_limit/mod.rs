//! Rate limits per identity on a route (`rate_limit`, Kong's per-consumer limiting): at most
//! `requests` per user, consumer or client address in any `window`.
//!
//! Counts are exact per key, over a sliding window (this window's count plus the last one's,
//! fading linearly), so no identity ever shares a counter with another: a flood of distinct
//! identities cannot push anyone else over. With `[redis]` the count is the fleet's (`shared`);
//! without it each instance counts alone, in a bounded map that forgets the least recently seen
//! key (forgetting only ever admits more).
//!
//! Redis unreachable: the request is admitted (limits fail open), counted in
//! `rate_limited_total{result="fail_open"}` and logged at most every ten seconds.

mod shared;

use crate::auth::{Credential, Identity};
use crate::clock;
use crate::config::{Config, LimitBy, RateLimit, RouteId};
use crate::fleet::Fleet;
use crate::http::responses::Reply;
use crate::metrics;
use crate::ratelimit::{self, Limited};
use sha2::{Digest, Sha256};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Keys a local limit remembers at once.
const MAX_KEYS: usize = ratelimit::MAX_CLIENTS;

/// The limits of every route (`None` for routes without one), by route index.
pub struct RouteLimits {
    limits: Vec<Option<RouteLimit>>,
    /// Provider names, so a user is the same key whether a session or a token proves them.
    providers: Vec<String>,
}

struct RouteLimit {
    name: Arc<str>,
    spec: RateLimit,
    counter: Counter,
    /// `RateLimit-Policy`, the same on every answer.
    policy: http::HeaderValue,
}

enum Counter {
    Local(Box<ratelimit::Limit>),
    Shared(shared::Window),
}

impl RouteLimits {
    /// The limits `config` asks for, counted in `fleet` when there is one.
    pub fn new(config: &Config, fleet: Option<&Arc<Fleet>>) -> RouteLimits {
        let limits = config
            .routes
            .iter()
            .map(|route| {
                let spec = route.rate_limit?;
                let window_ms = u64::try_from(spec.window.as_millis()).unwrap_or(u64::MAX);
                let counter = match fleet {
                    Some(f) => {
                        Counter::Shared(shared::Window::new(f.clone(), spec.requests, window_ms))
                    }
                    None => Counter::Local(Box::new(ratelimit::Limit::per_window(
                        spec.requests,
                        window_ms,
                        MAX_KEYS,
                    )?)),
                };
                metrics::init_rate_limited(&route.name, fleet.is_some());
                let policy = format!(
                    "\"{}\";q={};w={}",
                    route.name,
                    spec.requests,
                    spec.window.as_secs()
                );
                Some(RouteLimit {
                    name: route.name.as_str().into(),
                    spec,
                    counter,
                    policy: http::HeaderValue::from_str(&policy).ok()?,
                })
            })
            .collect();
        RouteLimits {
            limits,
            providers: config.providers.iter().map(|p| p.name.clone()).collect(),
        }
    }

    /// Counts the request against `route`'s limit, or refuses it with a 429 (carrying the
    /// cookies of a session renewed on the way). `identity`: who the route's auth found;
    /// `client`: the client address.
    pub async fn check(
        &self,
        route: RouteId,
        identity: Option<&mut Identity>,
        client: Option<IpAddr>,
    ) -> Result<(), Reply> {
        let Some(Some(limit)) = self.limits.get(route.index()) else {
            return Ok(());
        };
        let Some(key) = self.key(limit, identity.as_deref(), client) else {
            return Ok(());
        };
        let verdict = match &limit.counter {
            Counter::Local(l) => l.check_key(key_u128(&key), clock::now_ms()).map(|_| ()),
            Counter::Shared(w) => match w.check(&key, clock::now_ms()).await {
                Ok(v) => v,
                Err(e) => {
                    fail_open(&limit.name, &e);
                    return Ok(());
                }
            },
        };
        verdict.map_err(|Limited { retry_after }| {
            metrics::rate_limited(&limit.name, "limited");
            let cookies = identity.map(|id| std::mem::take(&mut id.set_cookies));
            limit
                .refusal(retry_after)
                .with_cookies(cookies.unwrap_or_default())
        })
    }

    /// What the request is counted by: its identity as the route names it, else its address;
    /// hashed with the route's name, without building strings on the request path.
    fn key(
        &self,
        limit: &RouteLimit,
        identity: Option<&Identity>,
        client: Option<IpAddr>,
    ) -> Option<[u8; 32]> {
        let who = identity
            .and_then(|id| match limit.spec.per {
                LimitBy::Sub => self
                    .user(id)
                    .map(|(provider, sub)| Who::User(provider, sub)),
                LimitBy::Consumer => id.consumer.map(|c| Who::Consumer(c.index())),
                LimitBy::ClientIp => None,
            })
            .or_else(|| client.map(|ip| Who::Address(ratelimit::client_key(ip))))?;
        let mut h = Sha256::new();
        h.update(limit.name.as_bytes());
        match who {
            Who::User(provider, sub) => {
                h.update(b"\0u\0");
                h.update(provider.as_bytes());
                h.update([0]);
                h.update(sub.as_bytes());
            }
            Who::Consumer(index) => {
                h.update(b"\0c\0");
                h.update(index.to_le_bytes());
            }
            Who::Address(address) => {
                h.update(b"\0a\0");
                h.update(address.to_le_bytes());
            }
        }
        Some(h.finalize().into())
    }

    /// The user behind `identity`: provider name and `sub`.
    fn user<'a>(&'a self, identity: &'a Identity) -> Option<(&'a str, &'a str)> {
        let provider = match &identity.credential {
            Credential::Session(s) => &*s.data.provider,
            Credential::Token(t) => self.providers.get(t.provider.index())?.as_str(),
            Credential::Anonymous => return None,
        };
        Some((provider, identity.sub()?))
    }
}

/// Whom a request is counted for.
enum Who<'a> {
    /// A user: provider name and `sub`.
    User(&'a str, &'a str),
    /// A mapped consumer, by its place in `[[consumers]]`.
    Consumer(usize),
    /// A client address (IPv6 by /64).
    Address(u128),
}

impl RouteLimit {
    /// The 429: `Retry-After`, and the IETF httpapi draft's `RateLimit-Policy` and `RateLimit`.
    fn refusal(&self, retry_after: u64) -> Reply {
        let detail = format!(
            "More than {} requests in {} s on route {}. Try again in {retry_after} s.",
            self.spec.requests,
            self.spec.window.as_secs(),
            self.name
        );
        let state = format!("\"{}\";r=0;t={retry_after}", self.name);
        // JSON even for browsers: the limits are for API clients, and a page adds nothing.
        Reply::error(429, "rate_limited", "Too many requests", &detail, false)
            .with_header(
                http::header::RETRY_AFTER,
                http::HeaderValue::from(retry_after),
            )
            .with_header(
                http::HeaderName::from_static("ratelimit-policy"),
                self.policy.clone(),
            )
            .with_header(
                http::HeaderName::from_static("ratelimit"),
                http::HeaderValue::from_str(&state).unwrap_or(http::HeaderValue::from_static("")),
            )
    }
}

/// The first 128 bits of a key, for the local map.
fn key_u128(key: &[u8; 32]) -> u128 {
    let mut b = [0u8; 16];
    b.copy_from_slice(&key[..16]);
    u128::from_le_bytes(b)
}

/// Admits a request Redis could not count: counted, and logged at most every ten seconds.
fn fail_open(route: &str, e: &crate::fleet::FleetError) {
    static LAST_LOG: AtomicU64 = AtomicU64::new(0);
    metrics::rate_limited(route, "fail_open");
    let now = clock::now();
    let last = LAST_LOG.load(Ordering::Relaxed);
    if now >= last.saturating_add(10)
        && LAST_LOG
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        tracing::warn!(
            route,
            "rate limit not counted, request admitted (Redis: {e})"
        );
    }
}
