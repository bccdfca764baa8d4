//! Providers at run time: discovery and signing keys fetched in the background and cached in a
//! `DashMap`, so the request path only reads. An unknown key id triggers at most one JWKS fetch
//! per cool-down (shorter after a failure), so a storm of forged `kid`s cannot turn into traffic
//! at the identity provider.

use super::http::IdpHttp;
use super::jwks::BearerKeys;
use super::types::{Metadata, OidcClient};
use crate::config::{ClientAuth, Provider};
use crate::metrics;
use async_trait::async_trait;
use dashmap::DashMap;
use openidconnect::core::{CoreJsonWebKeySet, CoreJwsSigningAlgorithm};
use openidconnect::{AuthType, ClientId, ClientSecret, IssuerUrl, JsonWebKeySet, RedirectUrl};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Cool-down after a failed JWKS fetch (the configured one applies after a success).
const JWKS_RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);
/// Longest wait between discovery attempts while a provider is unreachable.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// What discovery produced for one provider.
pub struct Discovered {
    /// The discovery document, with the current JWKS.
    pub metadata: Metadata,
    /// A client built from it.
    pub client: OidcClient,
    /// ID-token algorithms accepted (advertised by the provider, never `none`).
    pub algs: Vec<CoreJwsSigningAlgorithm>,
    /// Keys for access tokens (bearer JWTs).
    pub bearer_keys: BearerKeys,
}

impl Discovered {
    /// Builds the client for `cfg` from a discovery document that already holds its JWKS.
    pub fn new(cfg: &Provider, metadata: Metadata) -> Result<Discovered, String> {
        let redirect =
            RedirectUrl::new(cfg.redirect_uri.clone()).map_err(|e| format!("redirect_uri: {e}"))?;
        let client = OidcClient::from_provider_metadata(
            metadata.clone(),
            ClientId::new(cfg.client_id.clone()),
            cfg.client_secret
                .as_ref()
                .map(|s| ClientSecret::new(s.expose().to_owned())),
        )
        .set_redirect_uri(redirect)
        .set_auth_type(match cfg.client_auth {
            ClientAuth::Basic => AuthType::BasicAuth,
            ClientAuth::Post => AuthType::RequestBody,
        });
        let mut algs: Vec<CoreJwsSigningAlgorithm> = metadata
            .id_token_signing_alg_values_supported()
            .iter()
            // `none` never; HMAC (keyed with the client secret, which the OP and every holder
            // of the secret share) only when asked for, even if the provider advertises it.
            .filter(|a| **a != CoreJwsSigningAlgorithm::None)
            .filter(|a| cfg.allow_hmac_id_tokens || !is_hmac(a))
            .cloned()
            .collect();
        if algs.is_empty() {
            algs.push(CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256);
        }
        if metadata.token_endpoint().is_none() {
            return Err("the discovery document has no token_endpoint".into());
        }
        let bearer_keys =
            BearerKeys::from_jwks(&serde_json::to_value(metadata.jwks()).unwrap_or_default());
        Ok(Discovered {
            metadata,
            client,
            algs,
            bearer_keys,
        })
    }

    /// The RFC 7662 introspection endpoint, if the provider has one.
    pub fn introspection_endpoint(&self) -> Option<&str> {
        self.metadata
            .additional_metadata()
            .additional_metadata
            .introspection_endpoint
            .as_deref()
    }

    /// The token revocation endpoint (RFC 7009), if the provider has one.
    pub fn revocation_endpoint(&self) -> Option<&str> {
        self.metadata
            .additional_metadata()
            .additional_metadata
            .revocation_endpoint
            .as_deref()
    }

    /// The RP-initiated logout endpoint, if the provider has one.
    pub fn end_session_endpoint(&self) -> Option<&openidconnect::EndSessionUrl> {
        self.metadata
            .additional_metadata()
            .end_session_endpoint
            .as_ref()
    }
}

struct JwksGate {
    last_attempt: Option<Instant>,
    last_ok: bool,
}

/// One configured provider.
pub struct ProviderHandle {
    /// Position in the configuration.
    pub index: usize,
    /// Its configuration.
    pub config: Provider,
    /// HTTP client with the provider's timeouts.
    pub http: IdpHttp,
    jwks_gate: tokio::sync::Mutex<JwksGate>,
}

/// Every provider, and what discovery found for each.
pub struct Providers {
    /// In configuration order.
    pub list: Vec<ProviderHandle>,
    discovered: DashMap<usize, Arc<Discovered>>,
}

impl Providers {
    /// Handles for the configured providers (nothing is fetched yet).
    pub fn new(configs: &[Provider]) -> Result<Providers, String> {
        let list = configs
            .iter()
            .enumerate()
            .map(|(index, config)| {
                Ok(ProviderHandle {
                    index,
                    http: IdpHttp::new(
                        config.connect_timeout,
                        config.timeout,
                        config.ca_file.as_deref(),
                    )
                    .map_err(|e| format!("provider {}: {e}", config.name))?,
                    config: config.clone(),
                    jwks_gate: tokio::sync::Mutex::new(JwksGate {
                        last_attempt: None,
                        last_ok: true,
                    }),
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Providers {
            list,
            discovered: DashMap::new(),
        })
    }

    /// The provider at `index`.
    pub fn handle(&self, index: usize) -> Option<&ProviderHandle> {
        self.list.get(index)
    }

    /// Installs discovery results obtained elsewhere (benches and tests without a network).
    pub fn install(&self, index: usize, discovered: Discovered) {
        self.discovered.insert(index, Arc::new(discovered));
    }

    /// Discovery results, if the provider has been reached.
    pub fn get(&self, index: usize) -> Option<Arc<Discovered>> {
        self.discovered.get(&index).map(|d| d.value().clone())
    }

    /// Fetches the discovery document and keys; the document's `issuer` must equal the configured
    /// one exactly (checked by `openidconnect`).
    pub async fn discover(&self, index: usize) -> Result<(), String> {
        let p = self.handle(index).ok_or("no such provider")?;
        let name = &p.config.name;
        let issuer = IssuerUrl::new(p.config.issuer.clone()).map_err(|e| format!("issuer: {e}"))?;
        let start = Instant::now();
        let result = Metadata::discover_async(issuer, &p.http).await;
        metrics::idp_request(name, "discovery", start.elapsed());
        let metadata = match result {
            Ok(m) => {
                metrics::jwks_fetch(name, "ok");
                m
            }
            Err(e) => {
                metrics::jwks_fetch(name, "error");
                return Err(format!("discovery failed: {}", error_chain(&e)));
            }
        };
        let discovered = Discovered::new(&p.config, metadata)?;
        self.discovered.insert(index, Arc::new(discovered));
        Ok(())
    }

    /// Fetches the JWKS again because a token named a key we do not have. Returns whether new
    /// keys were installed. At most one fetch runs at a time and at most one per cool-down.
    pub async fn refresh_keys(&self, index: usize) -> bool {
        let Some(p) = self.handle(index) else {
            return false;
        };
        let Some(current) = self.get(index) else {
            return false;
        };
        let mut gate = p.jwks_gate.lock().await;
        // Another request may have refreshed while this one waited for the lock.
        if self.get(index).is_some_and(|d| !Arc::ptr_eq(&d, &current)) {
            return true;
        }
        let cooldown = if gate.last_ok {
            p.config.jwks_refresh_cooldown
        } else {
            JWKS_RETRY_AFTER_FAILURE
        };
        if gate.last_attempt.is_some_and(|t| t.elapsed() < cooldown) {
            return false;
        }
        gate.last_attempt = Some(Instant::now());
        let start = Instant::now();
        let fetched: Result<CoreJsonWebKeySet, _> =
            JsonWebKeySet::fetch_async(current.metadata.jwks_uri(), &p.http).await;
        metrics::idp_request(&p.config.name, "jwks", start.elapsed());
        match fetched {
            Ok(jwks) => {
                gate.last_ok = true;
                metrics::jwks_fetch(&p.config.name, "ok");
                let metadata = current.metadata.clone().set_jwks(jwks);
                match Discovered::new(&p.config, metadata) {
                    Ok(d) => {
                        self.discovered.insert(index, Arc::new(d));
                        tracing::info!(provider = %p.config.name, "fetched new signing keys");
                        true
                    }
                    Err(e) => {
                        tracing::warn!(provider = %p.config.name, "cannot use new keys: {e}");
                        false
                    }
                }
            }
            Err(e) => {
                gate.last_ok = false;
                metrics::jwks_fetch(&p.config.name, "error");
                tracing::warn!(provider = %p.config.name, "JWKS fetch failed: {}", error_chain(&e));
                false
            }
        }
    }
}

fn is_hmac(alg: &CoreJwsSigningAlgorithm) -> bool {
    matches!(
        alg,
        CoreJwsSigningAlgorithm::HmacSha256
            | CoreJwsSigningAlgorithm::HmacSha384
            | CoreJwsSigningAlgorithm::HmacSha512
    )
}

/// Renders an error with its causes, for logs.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let text = c.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cur = c.source();
    }
    s
}

/// Keeps every provider's discovery and keys fresh: retries with backoff while a provider is
/// unreachable (the gateway keeps serving public routes meanwhile), then refreshes periodically.
pub struct DiscoveryService(pub Arc<Providers>);

#[async_trait]
impl BackgroundService for DiscoveryService {
    async fn start(&self, shutdown: ShutdownWatch) {
        let loops = self.0.list.iter().map(|p| {
            let providers = self.0.clone();
            let mut shutdown = shutdown.clone();
            async move {
                let mut backoff = Duration::from_secs(1);
                loop {
                    let wait = match providers.discover(p.index).await {
                        Ok(()) => {
                            tracing::info!(provider = %p.config.name, issuer = %p.config.issuer, "provider discovered");
                            backoff = Duration::from_secs(1);
                            p.config.discovery_refresh_interval
                        }
                        Err(e) => {
                            tracing::warn!(provider = %p.config.name, issuer = %p.config.issuer, retry_in = ?backoff, "{e}");
                            let wait = backoff;
                            backoff = (backoff * 2).min(MAX_BACKOFF);
                            wait
                        }
                    };
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = shutdown.changed() => return,
                    }
                }
            }
        });
        futures::future::join_all(loops).await;
    }
}
