//! Providers at run time: discovery and signing keys fetched in the background and cached in a
//! `DashMap`, so the request path only reads. An unknown key id triggers at most one JWKS fetch
//! per cool-down (shorter after a failure), so a storm of forged `kid`s cannot turn into traffic
//! at the identity provider.
//!
//! The last good document and keys are saved under `state_dir` (see `persisted`) and loaded at
//! start, so a restart while the provider is down keeps verifying; they are used for at most the
//! provider's `max_stale`. A request arriving while the first discovery is in flight waits for it
//! (bounded by the provider's timeout) instead of failing at once.

use super::idp_http::IdpHttp;
use super::jwks::SigningKeys;
use super::persisted::{LoadError, MetadataFiles};
use super::types::{Metadata, OidcClient};
use crate::config::ProviderId;
use crate::config::{ClientAuth, Provider};
use crate::{clock, metrics};
use async_trait::async_trait;
use dashmap::DashMap;
use jsonwebtoken::Algorithm;
use openidconnect::core::CoreJsonWebKeySet;
use openidconnect::{AuthType, ClientId, ClientSecret, IssuerUrl, JsonWebKeySet, RedirectUrl};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Cool-down after a failed JWKS fetch (the configured one applies after a success).
const JWKS_RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);
/// Longest wait between discovery attempts while a provider is unreachable.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How long a reachability probe's answer is trusted before a login start asks for a new one.
const REACH_TTL: Duration = Duration::from_secs(2);

/// What discovery produced for one provider.
pub struct Discovered {
    /// The discovery document, with the current JWKS.
    pub metadata: Metadata,
    /// A client built from it.
    pub client: OidcClient,
    /// ID-token algorithms accepted (advertised by the provider, never `none`).
    pub algs: Vec<Algorithm>,
    /// Keys for the tokens it signs (ID tokens, access tokens, logout tokens).
    pub keys: SigningKeys,
    /// When the document and keys were fetched from the provider (Unix seconds).
    pub fetched_at: u64,
}

impl Discovered {
    /// Builds the client for `cfg` from a discovery document that already holds its JWKS.
    pub fn new(cfg: &Provider, metadata: Metadata) -> Result<Discovered, String> {
        let redirect =
            RedirectUrl::new(cfg.redirect_uri.clone()).map_err(|e| format!("redirect_uri: {e}"))?;
        // With private_key_jwt the secret is never sent: the client id goes in the body, the
        // signed assertion is added to each call (`assertion`). With tls_client_auth the TLS
        // connection's client certificate authenticates, and the client id goes in the body.
        let secret = cfg.shared_secret().map(|s| ClientSecret::new(s.to_owned()));
        let client = OidcClient::from_provider_metadata(
            metadata.clone(),
            ClientId::new(cfg.client_id.clone()),
            secret,
        )
        .set_redirect_uri(redirect)
        .set_auth_type(match cfg.client_auth {
            ClientAuth::Basic => AuthType::BasicAuth,
            ClientAuth::Post | ClientAuth::PrivateKeyJwt | ClientAuth::TlsClientAuth => {
                AuthType::RequestBody
            }
        });
        let mut algs: Vec<Algorithm> = metadata
            .id_token_signing_alg_values_supported()
            .iter()
            // `none` never (it has no `Algorithm`), nor one `jsonwebtoken` cannot check; HMAC
            // (keyed with the client secret, which the OP and every holder of the secret share)
            // only when asked for, even if the provider advertises it.
            .filter_map(|a| serde_json::to_value(a).ok()?.as_str()?.parse().ok())
            .filter(|a| cfg.allow_hmac_id_tokens || !is_hmac(*a))
            .collect();
        if algs.is_empty() {
            algs.push(Algorithm::RS256);
        }
        if metadata.token_endpoint().is_none() {
            return Err("the discovery document has no token_endpoint".into());
        }
        let keys =
            SigningKeys::from_jwks(&serde_json::to_value(metadata.jwks()).unwrap_or_default());
        Ok(Discovered {
            metadata,
            client,
            algs,
            keys,
            fetched_at: clock::now(),
        })
    }

    /// The token endpoint (discovery without one is refused).
    pub fn token_endpoint(&self) -> &str {
        self.metadata.token_endpoint().map_or("", |u| u.as_str())
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

/// The last reachability probe of a provider.
struct Reach {
    checked: Option<Instant>,
    ok: bool,
    probing: bool,
}

/// One configured provider.
pub struct ProviderHandle {
    /// Position in the configuration.
    pub index: ProviderId,
    /// Its configuration.
    pub config: Provider,
    /// HTTP client with the provider's timeouts.
    pub http: IdpHttp,
    jwks_gate: tokio::sync::Mutex<JwksGate>,
    /// True while a discovery attempt runs (and before the first one starts).
    discovering: tokio::sync::watch::Sender<bool>,
    reach: std::sync::Mutex<Reach>,
    /// Why the last discovery failed, verbatim (`None` after a success).
    last_error: std::sync::Mutex<Option<Arc<str>>>,
}

impl ProviderHandle {
    /// Why the last discovery attempt failed, verbatim; `None` if it succeeded (or none ran).
    pub fn last_error(&self) -> Option<Arc<str>> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }

    fn note_discovery(&self, result: &Result<(), String>) {
        if let Ok(mut last) = self.last_error.lock() {
            *last = result.as_ref().err().map(|e| Arc::from(e.as_str()));
        }
    }

    fn note_reach(&self, ok: bool) {
        if let Ok(mut reach) = self.reach.lock() {
            *reach = Reach {
                checked: Some(Instant::now()),
                ok,
                probing: false,
            };
        }
    }
}

/// Every provider, and what discovery found for each.
pub struct Providers {
    /// In configuration order.
    pub list: Vec<ProviderHandle>,
    discovered: DashMap<ProviderId, Arc<Discovered>>,
    files: Option<MetadataFiles>,
}

/// What readiness reports of one provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Availability {
    /// Discovery and keys are known, fetched this many seconds ago.
    Known {
        /// Seconds since they were fetched from the provider.
        age: u64,
    },
    /// Nothing usable: never reached, and nothing saved (or too old).
    Missing,
}

impl Providers {
    /// Handles for the configured providers (nothing is fetched yet).
    pub fn new(configs: &[Provider]) -> Result<Providers, String> {
        let list = configs
            .iter()
            .enumerate()
            .map(|(index, config)| {
                tracing::info!(
                    provider = %config.name,
                    "calls to the provider go {}",
                    config.outbound.describe()
                );
                Ok(ProviderHandle {
                    index: ProviderId(index),
                    http: IdpHttp::new(
                        config.connect_timeout,
                        config.timeout,
                        config.ca_file.as_deref(),
                        &config.outbound,
                    )
                    .map_err(|e| format!("provider {}: {e}", config.name))?,
                    config: config.clone(),
                    jwks_gate: tokio::sync::Mutex::new(JwksGate {
                        last_attempt: None,
                        last_ok: true,
                    }),
                    discovering: tokio::sync::watch::Sender::new(true),
                    reach: std::sync::Mutex::new(Reach {
                        checked: None,
                        ok: true,
                        probing: false,
                    }),
                    last_error: std::sync::Mutex::new(None),
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Providers {
            list,
            discovered: DashMap::new(),
            files: None,
        })
    }

    /// Saves each successful discovery to `files`, and installs what they hold now (at most
    /// `max_stale` old) so that requests can be verified before the provider answers.
    pub fn persist_to(&mut self, files: MetadataFiles) {
        let now = clock::now();
        for p in &self.list {
            let name = &p.config.name;
            let loaded = files.load(&p.config, now).and_then(|(metadata, at)| {
                let mut d = Discovered::new(&p.config, metadata).map_err(LoadError::Invalid)?;
                d.fetched_at = at;
                Ok(d)
            });
            match loaded {
                Ok(d) => {
                    tracing::info!(provider = %name, age_s = now.saturating_sub(d.fetched_at), "loaded saved discovery and keys");
                    self.discovered.insert(p.index, Arc::new(d));
                }
                Err(LoadError::Missing) => {}
                Err(e) => {
                    tracing::warn!(provider = %name, "saved discovery and keys not used: {e}")
                }
            }
        }
        self.files = Some(files);
    }

    /// The provider at `index`.
    pub fn handle(&self, index: ProviderId) -> Option<&ProviderHandle> {
        self.list.get(index.index())
    }

    /// Installs discovery results obtained elsewhere (benches and tests without a network).
    pub fn install(&self, index: ProviderId, discovered: Discovered) {
        self.discovered.insert(index, Arc::new(discovered));
    }

    /// Discovery results, if the provider has been reached.
    pub fn get(&self, index: ProviderId) -> Option<Arc<Discovered>> {
        self.discovered.get(&index).map(|d| d.value().clone())
    }

    /// Discovery results; while the provider's discovery is in flight and nothing is known yet,
    /// waits for it, at most the provider's timeout.
    pub async fn ready(&self, index: ProviderId) -> Option<Arc<Discovered>> {
        if let Some(d) = self.get(index) {
            return Some(d);
        }
        let p = self.handle(index)?;
        let mut busy = p.discovering.subscribe();
        if *busy.borrow_and_update() {
            let _ = tokio::time::timeout(p.config.timeout, busy.wait_for(|b| !*b)).await;
        }
        self.get(index)
    }

    /// Whether the provider answered its last reachability probe (a GET of its discovery
    /// document). When that answer is older than [`REACH_TTL`], a new probe starts in the
    /// background and this answer is used meanwhile: no login start waits for a probe, and one
    /// that would send the browser to a provider the gateway cannot reach (so the callback
    /// could not complete) gets a clear 503 instead.
    pub fn reachable(this: &Arc<Providers>, index: ProviderId) -> bool {
        let Some(p) = this.handle(index) else {
            return false;
        };
        let Ok(mut reach) = p.reach.lock() else {
            return true;
        };
        let fresh = reach.checked.is_some_and(|t| t.elapsed() < REACH_TTL);
        if !fresh && !reach.probing {
            reach.probing = true;
            let providers = this.clone();
            tokio::spawn(async move {
                let Some(p) = providers.handle(index) else {
                    return;
                };
                let url = format!(
                    "{}/.well-known/openid-configuration",
                    p.config.issuer.trim_end_matches('/')
                );
                let start = Instant::now();
                let answered = p.http.inner().get(url).send().await;
                metrics::idp_request(&p.config.name, "probe", start.elapsed());
                let failed = match answered {
                    Ok(r) if r.status().is_server_error() => Some(format!(
                        "probe: the discovery document answered {}",
                        r.status()
                    )),
                    Ok(_) => None,
                    Err(e) => Some(format!("probe: {}", error_chain(&e))),
                };
                if let Some(e) = &failed {
                    tracing::warn!(provider = %p.config.name, "provider unreachable: sign-ins get 503 until it answers: {e}");
                    p.note_discovery(&Err(e.clone()));
                }
                p.note_reach(failed.is_none());
            });
        }
        reach.ok
    }

    /// Whether the provider's discovery and keys are known, and how old they are at `now`.
    pub fn availability(&self, index: ProviderId, now: u64) -> Availability {
        match self.get(index) {
            Some(d) => Availability::Known {
                age: now.saturating_sub(d.fetched_at),
            },
            None => Availability::Missing,
        }
    }

    /// Sets `provider_metadata_age_seconds` for every provider (at scrape time).
    pub fn export_ages(&self, now: u64) {
        for p in &self.list {
            let age = match self.availability(p.index, now) {
                Availability::Known { age } => Some(age),
                Availability::Missing => None,
            };
            metrics::provider_metadata_age(&p.config.name, age);
        }
    }

    /// Forgets discovery results older than the provider's `max_stale` (the provider has been
    /// unreachable that long). Returns whether it did.
    fn drop_if_stale(&self, index: ProviderId, now: u64) -> bool {
        let Some(p) = self.handle(index) else {
            return false;
        };
        let stale = self
            .get(index)
            .is_some_and(|d| now.saturating_sub(d.fetched_at) > p.config.max_stale.as_secs());
        if stale {
            self.discovered.remove(&index);
            tracing::error!(provider = %p.config.name, max_stale = ?p.config.max_stale, "discovery and keys are older than max_stale: no longer used");
        }
        stale
    }

    /// Runs discovery for each provider in `needed` that nothing is known of yet, on a runtime and
    /// with HTTP clients of its own (for use before the server's runtimes exist), for at most
    /// `timeout` in all. Returns the names of those still unknown.
    pub fn discover_now(&self, needed: &[ProviderId], timeout: Duration) -> Vec<String> {
        let missing: Vec<ProviderId> = needed
            .iter()
            .copied()
            .filter(|&i| self.get(i).is_none())
            .collect();
        if !missing.is_empty() {
            let configs: Vec<Provider> = self.list.iter().map(|p| p.config.clone()).collect();
            let fetched = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
                .and_then(|rt| {
                    let own = Providers::new(&configs)?;
                    rt.block_on(async {
                        let all = futures::future::join_all(missing.iter().map(|&i| {
                            let (own, configs) = (&own, &configs);
                            async move {
                                if let Err(e) = own.discover(i).await {
                                    tracing::warn!(provider = %configs[i.index()].name, "{e}");
                                }
                            }
                        }));
                        let _ = tokio::time::timeout(timeout, all).await;
                    });
                    Ok(own)
                });
            match fetched {
                Ok(own) => {
                    for (i, d) in own.discovered.into_iter() {
                        if let (Some(p), Ok(d)) = (self.handle(i), Arc::try_unwrap(d)) {
                            self.install_fetched(p, d);
                        }
                    }
                }
                Err(e) => tracing::warn!("cannot run discovery before start: {e}"),
            }
        }
        needed
            .iter()
            .filter(|&&i| self.get(i).is_none())
            .filter_map(|&i| self.handle(i).map(|p| p.config.name.clone()))
            .collect()
    }

    /// Installs fresh results and saves them under `state_dir`.
    fn install_fetched(&self, p: &ProviderHandle, discovered: Discovered) {
        if let Some(files) = &self.files
            && let Err(e) = files.save(&p.config, &discovered.metadata, discovered.fetched_at)
        {
            tracing::warn!(provider = %p.config.name, "cannot save discovery and keys: {e}");
        }
        self.discovered.insert(p.index, Arc::new(discovered));
    }

    /// Fetches the discovery document and keys; the document's `issuer` must equal the configured
    /// one exactly (checked by `openidconnect`).
    pub async fn discover(&self, index: ProviderId) -> Result<(), String> {
        let p = self.handle(index).ok_or("no such provider")?;
        p.discovering.send_replace(true);
        let result = self.fetch_discovery(p).await;
        p.discovering.send_replace(false);
        result
    }

    async fn fetch_discovery(&self, p: &ProviderHandle) -> Result<(), String> {
        let result = self.fetch_discovery_once(p).await;
        if result.is_ok() {
            p.note_reach(true);
        }
        p.note_discovery(&result);
        result
    }

    async fn fetch_discovery_once(&self, p: &ProviderHandle) -> Result<(), String> {
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
        self.install_fetched(p, discovered);
        Ok(())
    }

    /// Fetches the JWKS again because a token named a key we do not have. Returns whether new
    /// keys were installed. At most one fetch runs at a time and at most one per cool-down.
    pub async fn refresh_keys(&self, index: ProviderId) -> bool {
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
                        self.install_fetched(p, d);
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

/// Whether `alg` is an HMAC, keyed with a shared secret.
pub fn is_hmac(alg: Algorithm) -> bool {
    matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
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
                            providers.drop_if_stale(p.index, clock::now());
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
