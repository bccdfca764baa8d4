//! What `/readyz` decides: the gateway can serve only when every provider a route uses has
//! discovery and keys (fresh or saved), every upstream has a healthy target, and Redis, when
//! configured, answers. A load balancer can then tell a gateway that cannot verify anything from
//! one that can.

use crate::clock;
use crate::config::{Auth, Config};
use crate::fleet::Fleet;
use crate::oidc::provider::{Availability, Providers};
use crate::upstream::UpstreamPool;
use serde_json::{Map, Value, json};
use std::sync::Arc;

/// The dependencies readiness looks at.
pub struct Readiness {
    providers: Option<Arc<Providers>>,
    /// Indices of the providers some route uses (a configured but unused one does not count).
    used: Vec<crate::config::ProviderId>,
    pools: Arc<[UpstreamPool]>,
    fleet: Option<Arc<Fleet>>,
}

/// The verdict, and a JSON body naming what is missing.
pub struct Report {
    /// Everything needed is there.
    pub ready: bool,
    /// `{"ready": .., "missing": [..], "providers": {..}, "upstreams": {..}, "redis": ..}`
    pub body: Value,
}

impl Readiness {
    /// Readiness of the gateway built from `config`.
    pub fn new(
        config: &Config,
        providers: Option<Arc<Providers>>,
        pools: Arc<[UpstreamPool]>,
        fleet: Option<Arc<Fleet>>,
    ) -> Readiness {
        let mut used: Vec<crate::config::ProviderId> = config
            .routes
            .iter()
            .filter_map(|r| match &r.auth {
                Auth::Oidc(a) => Some(a.providers.iter().copied()),
                Auth::None => None,
            })
            .flatten()
            .collect();
        used.sort_unstable();
        used.dedup();
        Readiness {
            providers,
            used,
            pools,
            fleet,
        }
    }

    /// Indices of the providers some route uses.
    pub fn used_providers(&self) -> &[crate::config::ProviderId] {
        &self.used
    }

    /// The providers, for the age metric exported at scrape time.
    pub fn providers(&self) -> Option<&Providers> {
        self.providers.as_deref()
    }

    /// Checks every dependency now. Redis behind an open circuit breaker is reported at once.
    pub async fn check(&self) -> Report {
        let now = clock::now();
        let mut missing = Vec::new();
        let mut providers = Map::new();
        if let Some(all) = &self.providers {
            for &i in &self.used {
                let Some(p) = all.handle(i) else { continue };
                let error = p.last_error();
                let keys = all.get(i).map_or(0, |d| d.keys.len());
                let state = match all.availability(i, now) {
                    Availability::Known { age } => match error {
                        // Serving from what it has, but the last refresh failed: say why.
                        Some(e) => {
                            json!({"status": "ok", "age_seconds": age, "keys": keys, "last_error": &*e})
                        }
                        None => json!({"status": "ok", "age_seconds": age, "keys": keys}),
                    },
                    Availability::Missing => {
                        missing.push(format!("provider {}", p.config.name));
                        json!({
                            "status": "missing",
                            "detail": "no discovery document and keys yet",
                            "error": error.as_deref().unwrap_or("no attempt has finished yet"),
                        })
                    }
                };
                providers.insert(p.config.name.clone(), state);
            }
        }
        let mut upstreams = Map::new();
        for pool in self.pools.iter() {
            let healthy = pool.healthy();
            if healthy == 0 {
                missing.push(format!("upstream {}", pool.name));
            }
            upstreams.insert(
                pool.name.to_string(),
                json!({"healthy": healthy, "targets": pool.len()}),
            );
        }
        let redis = match &self.fleet {
            None => Value::Null,
            Some(f) if f.redis.ping().await => json!("ok"),
            Some(_) => {
                missing.push("redis".to_owned());
                json!("unavailable")
            }
        };
        let ready = missing.is_empty();
        Report {
            ready,
            body: json!({
                "ready": ready,
                "missing": missing,
                "providers": providers,
                "upstreams": upstreams,
                "redis": redis,
            }),
        }
    }
}
