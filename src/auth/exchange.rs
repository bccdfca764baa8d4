//! Tokens exchanged for a route's upstream (`token_exchange`, RFC 8693): the user's access
//! token (the session's, or the bearer token presented) is exchanged at its provider for one
//! minted for the upstream's audience. The answer is reused per (user's token, provider,
//! audience, scope) until shortly before it expires, and however many requests need the same
//! token at once, the provider is asked once. A refusal is a 403, an unreachable provider a
//! 503: a request never reaches the upstream without its token.

use super::{Authenticator, Credential, Denial, Denied, Identity};
use crate::cache::BoundedCache;
use crate::config::{ProviderId, TokenExchange};
use crate::metrics;
use crate::oidc::token_exchange::{ExchangeError, Exchanged, exchange};
use crate::ratelimit;
use dashmap::DashMap;
use std::net::IpAddr;
use std::sync::Arc;
use tokio::sync::OnceCell;

/// The cache key: a hash of the user's token, the provider, audience and scope, so the cache
/// holds no bearer credentials.
type Key = [u8; 32];

/// One exchange in flight: everyone who needs its token waits for the same answer.
type Flight = Arc<OnceCell<Result<Arc<Exchanged>, ExchangeError>>>;

/// Exchanged tokens, and the exchanges in flight.
pub struct Exchanges {
    cache: BoundedCache<Key, Arc<Exchanged>>,
    inflight: DashMap<Key, Flight>,
}

impl Exchanges {
    /// A cache of at most `capacity` tokens.
    pub fn new(capacity: usize) -> Exchanges {
        Exchanges {
            cache: BoundedCache::new(capacity),
            inflight: DashMap::new(),
        }
    }

    /// Drops expired tokens.
    pub fn sweep(&self, now: u64) {
        self.cache.sweep(now);
    }
}

fn key(subject: &str, provider: ProviderId, wanted: &TokenExchange) -> Key {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    // The provider as a fixed-width number, then each text after its length: no two different
    // inputs hash the same bytes, and nothing is allocated on a request that finds its token.
    h.update((provider.index() as u64).to_be_bytes());
    for part in [
        subject,
        &wanted.audience,
        wanted.scope.as_deref().unwrap_or(""),
    ] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    h.finalize().into()
}

/// Until when an exchanged token is handed out again: shortly before it expires (a tenth of
/// its life, at most a minute), so the upstream never gets one about to lapse; a token without
/// a stated lifetime is not reused.
fn reuse_until(t: &Exchanged, now: u64) -> u64 {
    match t.expires_at {
        Some(exp) => {
            let margin = (exp.saturating_sub(now) / 10).clamp(1, 60);
            exp.saturating_sub(margin)
        }
        None => now,
    }
}

impl Authenticator {
    /// The token the route's upstream gets in place of the user's own (the route's
    /// `token_exchange` is `wanted`); `id` is authenticated and authorized, `bearer` the token
    /// the request presented.
    pub(super) async fn exchange_for_upstream(
        &self,
        wanted: &TokenExchange,
        mut id: Identity,
        bearer: Option<&str>,
        client: Option<IpAddr>,
        now: u64,
    ) -> Result<Identity, Denied> {
        let (provider, subject) = match &id.credential {
            Credential::Session(s) => (
                self.provider_index(&s.data.provider),
                Some(s.data.access_token.text().into_owned()),
            ),
            Credential::Token(t) => (Some(t.provider), bearer.map(str::to_owned)),
            Credential::Anonymous => (None, None),
        };
        let (Some(provider), Some(subject)) = (provider, subject) else {
            // The validator keeps anonymous and optional routes apart from token_exchange.
            return Err(Denial::Misconfigured("no user token to exchange for the upstream").into());
        };
        let name = self.provider(provider).map_or("", |p| p.name.as_str());
        let k = key(&subject, provider, wanted);
        if let Some(t) = self.exchanges.cache.get(&k, now) {
            metrics::token_exchange(name, "cached");
            id.upstream_token = Some(t);
            return Ok(id);
        }
        let flight = self.exchanges.inflight.entry(k).or_default().clone();
        let answer = flight
            .get_or_init(|| async {
                // A miss makes the gateway call the provider: the instance's ceiling applies.
                if let Err(refused) = ratelimit::admit(None, self.provider_calls(), client) {
                    return Err(ExchangeError::Failed(match refused {
                        ratelimit::Refused::Busy => "provider_call_limit reached".into(),
                        ratelimit::Refused::Client(_) => "client limit reached".into(),
                    }));
                }
                let made = exchange(&self.providers, provider, &subject, wanted, now).await;
                let made = made.map(Arc::new);
                if let Ok(t) = &made {
                    self.exchanges
                        .cache
                        .insert(k, t.clone(), reuse_until(t, now), now);
                }
                made
            })
            .await
            .clone();
        self.exchanges
            .inflight
            .remove_if(&k, |_, f| Arc::ptr_eq(f, &flight));
        match answer {
            Ok(t) => {
                metrics::token_exchange(name, "exchanged");
                id.upstream_token = Some(t);
                Ok(id)
            }
            Err(ExchangeError::Refused(reason)) => {
                metrics::token_exchange(name, "refused");
                tracing::info!(provider = name, audience = %wanted.audience, "token exchange refused: {reason}");
                Err(Denial::ExchangeRefused {
                    audience: wanted.audience.clone(),
                    reason,
                }
                .into())
            }
            Err(ExchangeError::Failed(why)) => {
                metrics::token_exchange(name, "failed");
                tracing::warn!(provider = name, audience = %wanted.audience, "token exchange failed: {why}");
                Err(Denial::ExchangeUnavailable.into())
            }
        }
    }

    /// The index of the provider named `name`.
    fn provider_index(&self, name: &str) -> Option<ProviderId> {
        self.providers
            .list
            .iter()
            .position(|p| p.config.name == name)
            .map(ProviderId)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wanted(audience: &str, scope: Option<&str>) -> TokenExchange {
        TokenExchange {
            audience: audience.into(),
            scope: scope.map(str::to_owned),
        }
    }

    #[test]
    fn each_part_of_the_key_counts_and_parts_do_not_run_together() {
        let base = key("tok", ProviderId(0), &wanted("orders", Some("read")));
        for other in [
            key("tok2", ProviderId(0), &wanted("orders", Some("read"))),
            key("tok", ProviderId(1), &wanted("orders", Some("read"))),
            key("tok", ProviderId(0), &wanted("billing", Some("read"))),
            key("tok", ProviderId(0), &wanted("orders", Some("write"))),
            key("tok", ProviderId(0), &wanted("orders", None)),
            key("to", ProviderId(0), &wanted("korders", Some("read"))),
        ] {
            assert_ne!(base, other);
        }
        assert_eq!(
            base,
            key("tok", ProviderId(0), &wanted("orders", Some("read")))
        );
    }

    #[test]
    fn a_token_is_reused_until_shortly_before_it_expires() {
        let t = |exp| Exchanged {
            authorization: http::HeaderValue::from_static("Bearer t"),
            expires_at: exp,
        };
        assert_eq!(reuse_until(&t(Some(1300)), 1000), 1270);
        assert_eq!(reuse_until(&t(Some(1000 + 3600)), 1000), 4540);
        assert_eq!(reuse_until(&t(Some(1005)), 1000), 1004);
        assert_eq!(reuse_until(&t(None), 1000), 1000, "no lifetime: not reused");
    }
}
