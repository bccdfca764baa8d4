//! The Redis connection of a fleet instance: one server, a Sentinel-watched master or a Cluster,
//! behind one `query`. Every command has the configured timeout and is counted; a circuit
//! breaker keeps a Redis that is down from adding a timeout to every request meanwhile.
//!
//! Connections are made lazily and remade after errors, so the gateway starts, and recovers,
//! whatever Redis is doing: a Sentinel master is looked up again after a failure (the client
//! library resolves it only when connecting).

use super::per_thread::PerThread;
use crate::config::{RedisSettings, RedisTopology};
use crate::metrics;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, FromRedisValue, IntoConnectionInfo, Pipeline, RedisFuture, Value};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// Consecutive failures after which Redis is not asked for a while.
const BREAKER_FAILURES: u32 = 3;
/// How long an open breaker refuses at once before one request tries again.
const BREAKER_OPEN: Duration = Duration::from_secs(1);

/// Why a command did not give an answer.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// Redis cannot be reached, or did not answer in time.
    #[error("Redis is unavailable: {0}")]
    Unavailable(String),
    /// Redis answered with an error, or with something unexpected.
    #[error("Redis refused the command: {0}")]
    Refused(String),
}

/// A connection to Redis, whatever its topology.
pub struct RedisClient {
    conn: Conn,
    timeout: Duration,
    breaker: Breaker,
    /// Clients for subscriptions: the server, or each Cluster seed (a PUBLISH reaches every
    /// node of a Cluster); a Sentinel's master is looked up each time.
    subscribe_to: Vec<redis::Client>,
    next_seed: std::sync::atomic::AtomicUsize,
    /// Called when Redis answers again after the breaker had opened: whatever was published
    /// meanwhile may have been missed.
    recovered: std::sync::OnceLock<Box<dyn Fn() + Send + Sync>>,
}

enum Conn {
    /// One server: a connection per sending thread, and one on the Redis runtime for callers
    /// outside any runtime.
    Single {
        per_thread: PerThread,
        shared: ConnectionManager,
    },
    Sentinel(Mutex<SentinelState>),
    Cluster {
        client: redis::cluster::ClusterClient,
        conn: Mutex<Option<ClusterConnection>>,
    },
}

struct SentinelState {
    sentinel: redis::sentinel::SentinelClient,
    master: Option<ConnectionManager>,
    config: ConnectionManagerConfig,
}

/// One connection handle for a command.
#[derive(Clone)]
enum Handle {
    Manager(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Handle {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Handle::Manager(c) => c.req_packed_command(cmd),
            Handle::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Handle::Manager(c) => c.req_packed_commands(pipeline, offset, count),
            Handle::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Handle::Manager(c) => c.get_db(),
            Handle::Cluster(c) => c.get_db(),
        }
    }
}

/// The connection details of one server (credentials, TLS roots) for `url`.
pub fn server_info(s: &RedisSettings, url: &str) -> Result<redis::ConnectionInfo, String> {
    let info = url
        .into_connection_info()
        .map_err(|e| format!("Redis URL {url:?}: {e}"))?;
    let mut redis = info.redis_settings().clone();
    if let Some(u) = &s.username {
        redis = redis.set_username(u);
    }
    if let Some(p) = &s.password {
        redis = redis.set_password(p.expose());
    }
    Ok(info.set_redis_settings(redis))
}

/// A client for one server, trusting `ca_file` when given.
pub fn server_client(s: &RedisSettings, url: &str) -> Result<redis::Client, String> {
    let info = server_info(s, url)?;
    let client = match &s.ca_file {
        Some(ca) => {
            let root_cert = std::fs::read(ca).map_err(|e| format!("{}: {e}", ca.display()))?;
            redis::Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(root_cert),
                },
            )
        }
        None => redis::Client::open(info),
    };
    client.map_err(|e| format!("Redis {url:?}: {e}"))
}

/// The runtime Sentinel and Cluster connections live on (and a single server's, for callers
/// outside any runtime). Pingora runs each service on runtimes of its own, and the gateway is
/// built before any of them runs; such a connection's driver task must run on a runtime that
/// lives as long as the process, whichever runtime sends it commands. One small runtime of our
/// own is that place, and it is never dropped. (A single server's connections are made per
/// sending thread instead: `per_thread.rs`.)
static RUNTIME: std::sync::LazyLock<tokio::runtime::Runtime> = std::sync::LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("redis")
        .enable_all()
        .build()
        .expect("a one-thread Tokio runtime for Redis connections")
});

/// Runs `f` (which may spawn a connection's driver) on the Redis runtime.
async fn on_runtime<T: Send + 'static>(
    f: impl std::future::Future<Output = T> + Send + 'static,
) -> Result<T, FleetError> {
    RUNTIME
        .spawn(f)
        .await
        .map_err(|e| FleetError::Unavailable(e.to_string()))
}

impl RedisClient {
    /// A client for `[redis]`; nothing is connected yet.
    pub fn new(s: &RedisSettings) -> Result<RedisClient, String> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(s.connect_timeout))
            .set_response_timeout(Some(s.command_timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let mut subscribe_to = Vec::new();
        let conn = match &s.topology {
            RedisTopology::Single(url) => {
                let client = server_client(s, url)?;
                subscribe_to.push(client.clone());
                let _on = RUNTIME.enter();
                Conn::Single {
                    shared: ConnectionManager::new_lazy_with_config(client.clone(), config.clone())
                        .map_err(|e| format!("Redis {url:?}: {e}"))?,
                    per_thread: PerThread::new(client, config),
                }
            }
            RedisTopology::Sentinel { master, nodes, tls } => {
                let mut redis = redis::RedisConnectionInfo::default();
                if let Some(u) = &s.username {
                    redis = redis.set_username(u);
                }
                if let Some(p) = &s.password {
                    redis = redis.set_password(p.expose());
                }
                let mut node = redis::sentinel::SentinelNodeConnectionInfo::default()
                    .set_redis_connection_info(redis);
                if *tls {
                    node = node.set_tls_mode(redis::TlsMode::Secure);
                }
                let sentinel = redis::sentinel::SentinelClient::build(
                    nodes.clone(),
                    master.clone(),
                    Some(node),
                    redis::sentinel::SentinelServerType::Master,
                )
                .map_err(|e| format!("Redis Sentinel: {e}"))?;
                Conn::Sentinel(Mutex::new(SentinelState {
                    sentinel,
                    master: None,
                    config,
                }))
            }
            RedisTopology::Cluster(nodes) => {
                for n in nodes {
                    subscribe_to.push(server_client(s, n)?);
                }
                let infos = nodes
                    .iter()
                    .map(|n| server_info(s, n))
                    .collect::<Result<Vec<_>, _>>()?;
                let client = redis::cluster::ClusterClient::builder(infos)
                    .connection_timeout(s.connect_timeout)
                    .response_timeout(s.command_timeout)
                    .retries(1)
                    .build()
                    .map_err(|e| format!("Redis Cluster: {e}"))?;
                Conn::Cluster {
                    client,
                    conn: Mutex::new(None),
                }
            }
        };
        Ok(RedisClient {
            conn,
            timeout: s.command_timeout,
            breaker: Breaker::default(),
            subscribe_to,
            next_seed: Default::default(),
            recovered: std::sync::OnceLock::new(),
        })
    }

    /// Sets what to do when Redis answers again after an outage (once).
    pub fn on_recovered(&self, f: Box<dyn Fn() + Send + Sync>) {
        let _ = self.recovered.set(f);
    }

    fn succeeded(&self) {
        if self.breaker.success()
            && let Some(f) = self.recovered.get()
        {
            f();
        }
    }

    /// A client to subscribe with: the server, the current Sentinel master, or the next
    /// Cluster seed.
    pub async fn subscriber_client(&self) -> Result<redis::Client, FleetError> {
        if let Conn::Sentinel(state) = &self.conn {
            let mut st = state.lock().await;
            return tokio::time::timeout(self.timeout * 10, st.sentinel.async_get_client())
                .await
                .map_err(|_| FleetError::Unavailable("Sentinel did not answer".into()))?
                .map_err(|e| FleetError::Unavailable(e.to_string()));
        }
        let i = self.next_seed.fetch_add(1, Ordering::Relaxed);
        self.subscribe_to
            .get(i % self.subscribe_to.len().max(1))
            .cloned()
            .ok_or_else(|| FleetError::Unavailable("no Redis to subscribe to".into()))
    }

    async fn handle(&self) -> Result<Handle, FleetError> {
        let unavailable = |e: redis::RedisError| FleetError::Unavailable(e.to_string());
        match &self.conn {
            Conn::Single { per_thread, shared } => match per_thread.current() {
                Some(made) => made.map(Handle::Manager).map_err(unavailable),
                None => Ok(Handle::Manager(shared.clone())),
            },
            Conn::Sentinel(state) => {
                let mut st = state.lock().await;
                if let Some(m) = &st.master {
                    return Ok(Handle::Manager(m.clone()));
                }
                let client = st.sentinel.async_get_client().await.map_err(unavailable)?;
                let m = {
                    let _on = RUNTIME.enter();
                    ConnectionManager::new_lazy_with_config(client, st.config.clone())
                        .map_err(unavailable)?
                };
                st.master = Some(m.clone());
                Ok(Handle::Manager(m))
            }
            Conn::Cluster { client, conn } => {
                let mut c = conn.lock().await;
                if let Some(c) = c.as_ref() {
                    return Ok(Handle::Cluster(c.clone()));
                }
                let client = client.clone();
                let fresh = on_runtime(async move { client.get_async_connection().await })
                    .await?
                    .map_err(unavailable)?;
                *c = Some(fresh.clone());
                Ok(Handle::Cluster(fresh))
            }
        }
    }

    /// Forgets a connection that failed, so the next command makes a new one (and a Sentinel
    /// is asked for the master again).
    async fn reset(&self) {
        match &self.conn {
            Conn::Single { .. } => {}
            Conn::Sentinel(state) => state.lock().await.master = None,
            Conn::Cluster { conn, .. } => *conn.lock().await = None,
        }
    }

    /// Runs `cmd` (its name, for metrics, is `name`), within the command timeout.
    pub async fn query<T: FromRedisValue>(
        &self,
        name: &'static str,
        cmd: &Cmd,
    ) -> Result<T, FleetError> {
        self.run(
            name,
            |mut h| async move { cmd.query_async::<T>(&mut h).await },
        )
        .await
    }

    /// Runs `pipeline` atomically or not as it was built; counted under `name`.
    pub async fn pipeline<T: FromRedisValue>(
        &self,
        name: &'static str,
        pipeline: &Pipeline,
    ) -> Result<T, FleetError> {
        self.run(name, |mut h| async move {
            pipeline.query_async::<T>(&mut h).await
        })
        .await
    }

    /// Runs a Lua script (EVALSHA, loading it when needed).
    pub async fn script<T: FromRedisValue>(
        &self,
        name: &'static str,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, FleetError> {
        self.run(name, |mut h| async move {
            invocation.invoke_async::<T>(&mut h).await
        })
        .await
    }

    async fn run<T, F, Fut>(&self, name: &'static str, f: F) -> Result<T, FleetError>
    where
        F: FnOnce(Handle) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        if !self.breaker.allows() {
            metrics::redis_command(name, "breaker_open", Duration::ZERO);
            return Err(FleetError::Unavailable("circuit breaker open".into()));
        }
        let start = Instant::now();
        let handle = match tokio::time::timeout(self.timeout, self.handle()).await {
            Ok(Ok(h)) => h,
            Ok(Err(e)) => return Err(self.failed(name, start, e).await),
            Err(_) => {
                return Err(self
                    .failed(
                        name,
                        start,
                        FleetError::Unavailable("connect timed out".into()),
                    )
                    .await);
            }
        };
        match tokio::time::timeout(self.timeout, f(handle)).await {
            Ok(Ok(v)) => {
                self.succeeded();
                metrics::redis_command(name, "ok", start.elapsed());
                Ok(v)
            }
            Ok(Err(e)) if is_connection_error(&e) => Err(self
                .failed(name, start, FleetError::Unavailable(e.to_string()))
                .await),
            Ok(Err(e)) => {
                // Redis answered: it is up, whatever it said.
                self.succeeded();
                metrics::redis_command(name, "error", start.elapsed());
                Err(FleetError::Refused(e.to_string()))
            }
            Err(_) => Err(self
                .failed(
                    name,
                    start,
                    FleetError::Unavailable("command timed out".into()),
                )
                .await),
        }
    }

    async fn failed(&self, name: &'static str, start: Instant, e: FleetError) -> FleetError {
        metrics::redis_command(name, "unavailable", start.elapsed());
        self.breaker.failure();
        self.reset().await;
        e
    }

    /// Whether Redis answers a PING now (readiness).
    pub async fn ping(&self) -> bool {
        self.query::<String>("PING", &redis::cmd("PING"))
            .await
            .is_ok()
    }
}

/// Errors that say nothing about the command and everything about the connection (including
/// a Sentinel master that became a replica).
fn is_connection_error(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_unrecoverable_error()
        || e.to_string().contains("READONLY")
}

/// Opens after [`BREAKER_FAILURES`] failures in a row; then lets one request through every
/// [`BREAKER_OPEN`].
#[derive(Default)]
struct Breaker {
    failures: AtomicU32,
    /// When it opened (Unix ms), 0 when closed.
    opened_at: AtomicU64,
}

/// Milliseconds of wall-clock time (never 0, which means "closed").
fn millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_millis() as u64)
        .max(1)
}

impl Breaker {
    fn allows(&self) -> bool {
        let opened = self.opened_at.load(Ordering::Relaxed);
        if opened == 0 {
            return true;
        }
        let now = millis();
        // One trial per open period: whoever moves the mark forward goes.
        now.saturating_sub(opened) >= BREAKER_OPEN.as_millis() as u64
            && self
                .opened_at
                .compare_exchange(opened, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
    }

    /// Records an answer; true when it follows failures (the breaker open or not): Redis is
    /// back, and what was published meanwhile may have been missed.
    fn success(&self) -> bool {
        // Read first: the common case (no failure) then writes nothing shared.
        if self.failures.load(Ordering::Relaxed) == 0 && self.opened_at.load(Ordering::Relaxed) == 0
        {
            return false;
        }
        let failed = self.failures.swap(0, Ordering::Relaxed) > 0;
        self.opened_at.swap(0, Ordering::Relaxed) != 0 || failed
    }

    fn failure(&self) {
        if self.failures.fetch_add(1, Ordering::Relaxed) + 1 >= BREAKER_FAILURES {
            let _ =
                self.opened_at
                    .compare_exchange(0, millis(), Ordering::AcqRel, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_breaker_opens_after_failures_and_tries_again_later() {
        let b = Breaker::default();
        assert!(b.allows());
        for _ in 0..BREAKER_FAILURES {
            b.failure();
        }
        assert!(!b.allows(), "open");
        b.opened_at
            .store(millis().saturating_sub(2_000).max(1), Ordering::Relaxed);
        assert!(b.allows(), "one trial after the open period");
        assert!(!b.allows(), "only one");
        assert!(b.success(), "a success after failures is a recovery");
        assert!(b.allows());
        assert!(!b.success(), "a success after successes is not");
        b.failure();
        assert!(b.success(), "even one failure may have lost a message");
    }
}
