//! Upstream pools: target selection (Pingora's load balancers), active health checks, and the
//! `HttpPeer` each request connects to, with every timeout from the configuration.

use crate::config::{self, Balance, HashKey, HealthCheckKind};
use crate::metrics::{TargetMetrics, UPSTREAM_DURATION};
use async_trait::async_trait;
use pingora::http::RequestHeader;
use pingora::lb::discovery::Static;
use pingora::lb::health_check::{HealthCheck, HealthObserve, HttpHealthCheck, TcpHealthCheck};
use pingora::lb::selection::{BackendIter, BackendSelection, Consistent, Random, RoundRobin};
use pingora::lb::{Backend, Backends, LoadBalancer};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use pingora::upstreams::peer::HttpPeer;
use prometheus::Histogram;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// How far a selector may search for a healthy target.
const MAX_SELECT_ITERATIONS: usize = 256;

/// One upstream target with its ready-made peer and metric handles.
struct PoolTarget {
    label: String,
    peer: HttpPeer,
    metrics: Arc<TargetMetrics>,
}

enum Selector {
    RoundRobin(Arc<LoadBalancer<RoundRobin>>),
    Random(Arc<LoadBalancer<Random>>),
    Consistent(Arc<LoadBalancer<Consistent>>),
}

impl Selector {
    fn backends(&self) -> &Backends {
        match self {
            Selector::RoundRobin(lb) => lb.backends(),
            Selector::Random(lb) => lb.backends(),
            Selector::Consistent(lb) => lb.backends(),
        }
    }
}

/// A pool of targets for one `[[upstreams]]` entry.
pub struct UpstreamPool {
    /// The upstream's name (metrics and logs).
    pub name: Box<str>,
    /// Further targets to try after a failed connect.
    pub retries: usize,
    /// What consistent hashing hashes, if it is used.
    pub hash_key: Option<HashKey>,
    /// Host header sent when a route does not preserve the client's.
    pub host_header: http::HeaderValue,
    /// `upstream_request_duration_seconds{upstream}`
    pub duration: Histogram,
    selector: Selector,
    /// The one target of a single-target upstream, to ask its readiness without a selection
    /// (which clones a `Backend`, with an allocation, for every request).
    only: Option<Backend>,
    targets: Vec<PoolTarget>,
}

/// Targets already tried by one request, as a bit set of target indices.
#[derive(Debug, Default, Clone, Copy)]
pub struct Tried(u128);

impl Tried {
    fn contains(self, idx: usize) -> bool {
        idx < 128 && self.0 & (1 << idx) != 0
    }
    /// Marks a target as tried.
    pub fn insert(&mut self, idx: usize) {
        if idx < 128 {
            self.0 |= 1 << idx;
        }
    }
    /// How many targets were tried.
    pub fn count(self) -> usize {
        self.0.count_ones() as usize
    }
}

impl UpstreamPool {
    /// Builds the pool; the returned health checker (if any) must run as a background service.
    pub fn new(cfg: &config::Upstream) -> (UpstreamPool, Option<HealthChecker>) {
        let targets: Vec<PoolTarget> = cfg
            .targets
            .iter()
            .map(|t| {
                let label = t.addr.to_string();
                let mut peer = HttpPeer::new(t.addr, cfg.tls, cfg.sni.clone());
                let o = &mut peer.options;
                o.connection_timeout = Some(cfg.connect_timeout);
                o.total_connection_timeout = Some(cfg.connect_timeout * 2);
                o.read_timeout = Some(cfg.read_timeout);
                o.write_timeout = Some(cfg.write_timeout);
                o.idle_timeout = Some(cfg.idle_timeout);
                let metrics = Arc::new(TargetMetrics::new(&cfg.name, &label));
                metrics.healthy.set(1);
                PoolTarget {
                    label,
                    peer,
                    metrics,
                }
            })
            .collect();

        let backends: BTreeSet<Backend> = cfg
            .targets
            .iter()
            .enumerate()
            .map(|(idx, t)| {
                let mut b = Backend {
                    addr: pingora::protocols::l4::socket::SocketAddr::Inet(t.addr),
                    weight: t.weight,
                    ext: http::Extensions::new(),
                };
                b.ext.insert(idx);
                b
            })
            .collect();
        let only = (backends.len() == 1)
            .then(|| backends.iter().next().cloned())
            .flatten();
        let gauges: Vec<Arc<TargetMetrics>> = targets.iter().map(|t| t.metrics.clone()).collect();
        let health = cfg
            .health_check
            .as_ref()
            .map(|h| health_check(h, cfg, gauges));

        let (selector, checker) = match cfg.balance {
            Balance::RoundRobin => {
                let (lb, hc) = balancer::<RoundRobin>(backends, health);
                (
                    Selector::RoundRobin(lb.clone()),
                    hc.map(|hc| HealthChecker::new(lb, hc)),
                )
            }
            Balance::Random => {
                let (lb, hc) = balancer::<Random>(backends, health);
                (
                    Selector::Random(lb.clone()),
                    hc.map(|hc| HealthChecker::new(lb, hc)),
                )
            }
            Balance::ConsistentHash(_) => {
                let (lb, hc) = balancer::<Consistent>(backends, health);
                (
                    Selector::Consistent(lb.clone()),
                    hc.map(|hc| HealthChecker::new(lb, hc)),
                )
            }
        };
        let host_header = cfg
            .host_header
            .as_deref()
            .and_then(|h| http::HeaderValue::from_str(h).ok())
            .or_else(|| http::HeaderValue::from_str(&targets[0].label).ok())
            .unwrap_or_else(|| http::HeaderValue::from_static("localhost"));
        let pool = UpstreamPool {
            name: cfg.name.as_str().into(),
            retries: cfg.retries,
            hash_key: match &cfg.balance {
                Balance::ConsistentHash(k) => Some(k.clone()),
                _ => None,
            },
            host_header,
            duration: UPSTREAM_DURATION.with_label_values(&[&cfg.name]),
            selector,
            only,
            targets,
        };
        (pool, checker)
    }

    /// Picks a healthy target not yet tried; `key` feeds consistent hashing.
    pub fn select(&self, key: &[u8], tried: Tried) -> Option<usize> {
        if let Some(only) = &self.only {
            return (!tried.contains(0) && self.selector.backends().ready(only)).then_some(0);
        }
        let accept = |b: &Backend, healthy: bool| {
            healthy && b.ext.get::<usize>().is_some_and(|&i| !tried.contains(i))
        };
        let backend = match &self.selector {
            Selector::RoundRobin(lb) => lb.select_with(key, MAX_SELECT_ITERATIONS, accept),
            Selector::Random(lb) => lb.select_with(key, MAX_SELECT_ITERATIONS, accept),
            Selector::Consistent(lb) => lb.select_with(key, MAX_SELECT_ITERATIONS, accept),
        }?;
        backend.ext.get::<usize>().copied()
    }

    /// Picks a target for a request from `client` with `headers`: [`select`](Self::select)
    /// with the pool's consistent-hash key, if it has one.
    pub fn select_for(
        &self,
        client: Option<&SocketAddr>,
        headers: &http::HeaderMap,
        tried: Tried,
    ) -> Option<usize> {
        let mut ip_buf = [0u8; 16];
        let key = match &self.hash_key {
            Some(k) => hash_key(k, client, headers, &mut ip_buf),
            None => &[],
        };
        self.select(key, tried)
    }

    /// A peer for target `idx`, with the upstream's timeouts.
    pub fn peer(&self, idx: usize) -> Option<Box<HttpPeer>> {
        self.targets.get(idx).map(|t| Box::new(t.peer.clone()))
    }

    /// The target's address as shown in logs and metrics.
    pub fn target_label(&self, idx: usize) -> &str {
        self.targets.get(idx).map_or("", |t| t.label.as_str())
    }

    /// Counts a failed connection attempt to target `idx`.
    pub fn connect_failed(&self, idx: usize) {
        if let Some(t) = self.targets.get(idx) {
            t.metrics.connect_failures.inc();
        }
    }

    /// Targets passing their health check now (every target when there is no check).
    pub fn healthy(&self) -> usize {
        fn count<S>(lb: &LoadBalancer<S>) -> usize
        where
            S: BackendSelection + 'static,
            S::Iter: BackendIter,
        {
            let b = lb.backends();
            b.get_backend().iter().filter(|t| b.ready(t)).count()
        }
        match &self.selector {
            Selector::RoundRobin(lb) => count(lb),
            Selector::Random(lb) => count(lb),
            Selector::Consistent(lb) => count(lb),
        }
    }

    /// Number of targets.
    pub fn len(&self) -> usize {
        self.targets.len()
    }

    /// True when the pool has no targets (never, for a validated configuration).
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }
}

fn balancer<S>(
    backends: BTreeSet<Backend>,
    health: Option<(Box<dyn HealthCheck + Send + Sync>, Duration)>,
) -> (Arc<LoadBalancer<S>>, Option<Duration>)
where
    S: BackendSelection + Send + Sync + 'static,
    S::Iter: BackendIter,
{
    let mut b = Backends::new(Static::new(backends));
    let interval = health.map(|(hc, interval)| {
        b.set_health_check(hc);
        interval
    });
    let lb = LoadBalancer::<S>::from_backends(b);
    // Static discovery never blocks or fails: this only publishes the target list.
    let _ = futures::executor::block_on(lb.update());
    (Arc::new(lb), interval)
}

fn health_check(
    h: &config::HealthCheck,
    cfg: &config::Upstream,
    gauges: Vec<Arc<TargetMetrics>>,
) -> (Box<dyn HealthCheck + Send + Sync>, Duration) {
    let observer = Box::new(HealthGauges {
        gauges,
        upstream: cfg.name.clone(),
    });
    let check: Box<dyn HealthCheck + Send + Sync> = match &h.kind {
        HealthCheckKind::Tcp => {
            let mut c = TcpHealthCheck::new();
            c.peer_template.options.connection_timeout = Some(h.timeout);
            c.consecutive_success = h.healthy_threshold;
            c.consecutive_failure = h.unhealthy_threshold;
            c.health_changed_callback = Some(observer);
            c
        }
        HealthCheckKind::Http { path, host } => {
            let host_name = host
                .clone()
                .unwrap_or_else(|| cfg.targets[0].addr.to_string());
            let mut c = HttpHealthCheck::new(&host_name, cfg.tls);
            if let Ok(mut req) = RequestHeader::build("GET", path.as_bytes(), None) {
                let _ = req.insert_header("Host", &host_name);
                let _ = req.insert_header(
                    "User-Agent",
                    concat!("oidc-gateway/", env!("CARGO_PKG_VERSION")),
                );
                c.req = req;
            }
            c.peer_template.options.connection_timeout = Some(h.timeout);
            c.peer_template.options.read_timeout = Some(h.timeout);
            c.consecutive_success = h.healthy_threshold;
            c.consecutive_failure = h.unhealthy_threshold;
            c.health_changed_callback = Some(observer);
            Box::new(c)
        }
    };
    (check, h.interval)
}

/// Mirrors health changes into the `upstream_target_healthy` gauge and the log.
struct HealthGauges {
    upstream: String,
    gauges: Vec<Arc<TargetMetrics>>,
}

#[async_trait]
impl HealthObserve for HealthGauges {
    async fn observe(&self, target: &Backend, healthy: bool) {
        if let Some(m) = target.ext.get::<usize>().and_then(|&i| self.gauges.get(i)) {
            m.healthy.set(i64::from(healthy));
        }
        if healthy {
            tracing::info!(upstream = %self.upstream, target = %target.addr, "upstream target is healthy again");
        } else {
            tracing::warn!(upstream = %self.upstream, target = %target.addr, "upstream target failed its health check");
        }
    }
}

/// Runs one pool's health checks every interval until shutdown.
pub struct HealthChecker {
    run: Box<dyn Fn() -> futures::future::BoxFuture<'static, ()> + Send + Sync>,
    interval: Duration,
}

impl HealthChecker {
    fn new<S>(lb: Arc<LoadBalancer<S>>, interval: Duration) -> Self
    where
        S: BackendSelection + Send + Sync + 'static,
        S::Iter: BackendIter,
    {
        HealthChecker {
            run: Box::new(move || {
                let lb = lb.clone();
                Box::pin(async move { lb.backends().run_health_check(true).await })
            }),
            interval,
        }
    }
}

/// One background service for every pool's health checks (one runtime, not one per upstream).
pub struct HealthChecks(pub Vec<HealthChecker>);

#[async_trait]
impl BackgroundService for HealthChecks {
    async fn start(&self, shutdown: ShutdownWatch) {
        let loops = self.0.iter().map(|c| {
            let mut shutdown = shutdown.clone();
            async move {
                let mut tick = tokio::time::interval(c.interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = tick.tick() => (c.run)().await,
                        _ = shutdown.changed() => return,
                    }
                }
            }
        });
        futures::future::join_all(loops).await;
    }
}

/// The consistent-hash key of a request: the client IP or a header value.
pub fn hash_key<'a>(
    key: &HashKey,
    client: Option<&SocketAddr>,
    headers: &'a http::HeaderMap,
    ip_buf: &'a mut [u8; 16],
) -> &'a [u8] {
    match key {
        HashKey::Header(name) => headers.get(name).map_or(&[][..], |v| v.as_bytes()),
        HashKey::ClientIp => match client.map(|a| a.ip()) {
            Some(std::net::IpAddr::V4(ip)) => {
                ip_buf[..4].copy_from_slice(&ip.octets());
                &ip_buf[..4]
            }
            Some(std::net::IpAddr::V6(ip)) => {
                *ip_buf = ip.octets();
                &ip_buf[..]
            }
            None => &[],
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(balance: Balance, addrs: &[&str]) -> config::Upstream {
        config::Upstream {
            name: "u".into(),
            targets: addrs
                .iter()
                .map(|a| config::Target {
                    addr: a.parse().unwrap(),
                    weight: 1,
                })
                .collect(),
            balance,
            health_check: None,
            connect_timeout: Duration::from_millis(300),
            read_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(5),
            retries: 1,
            tls: false,
            sni: String::new(),
            host_header: None,
        }
    }

    #[test]
    fn round_robin_spreads_and_skips_tried_targets() {
        let (pool, checker) = UpstreamPool::new(&upstream(
            Balance::RoundRobin,
            &["127.0.0.1:1", "127.0.0.1:2"],
        ));
        assert!(checker.is_none());
        let picks: Vec<usize> = (0..4)
            .filter_map(|_| pool.select(b"", Tried::default()))
            .collect();
        assert_eq!(picks.iter().filter(|&&i| i == 0).count(), 2, "{picks:?}");
        let mut tried = Tried::default();
        tried.insert(0);
        for _ in 0..4 {
            assert_eq!(pool.select(b"", tried), Some(1));
        }
        tried.insert(1);
        assert_eq!(pool.select(b"", tried), None);
    }

    #[test]
    fn a_single_target_is_chosen_only_while_ready_and_untried() {
        let (pool, _) = UpstreamPool::new(&upstream(Balance::RoundRobin, &["127.0.0.1:1"]));
        assert_eq!(pool.select(b"", Tried::default()), Some(0));
        let mut tried = Tried::default();
        tried.insert(0);
        assert_eq!(pool.select(b"", tried), None);
        let only = pool.only.clone().unwrap();
        pool.selector.backends().set_enable(&only, false);
        assert_eq!(pool.select(b"", Tried::default()), None);
        pool.selector.backends().set_enable(&only, true);
        assert_eq!(pool.select(b"", Tried::default()), Some(0));
    }

    #[test]
    fn consistent_hash_is_sticky() {
        let addrs = ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"];
        let (pool, _) = UpstreamPool::new(&upstream(
            Balance::ConsistentHash(HashKey::ClientIp),
            &addrs,
        ));
        let first = pool.select(b"client-a", Tried::default());
        for _ in 0..10 {
            assert_eq!(pool.select(b"client-a", Tried::default()), first);
        }
    }

    #[test]
    fn peers_carry_configured_timeouts() {
        let (pool, _) = UpstreamPool::new(&upstream(Balance::Random, &["127.0.0.1:1"]));
        let peer = pool.peer(0).unwrap();
        assert_eq!(
            peer.options.connection_timeout,
            Some(Duration::from_millis(300))
        );
        assert_eq!(peer.options.read_timeout, Some(Duration::from_secs(5)));
        assert_eq!(pool.host_header, "127.0.0.1:1");
    }
}
