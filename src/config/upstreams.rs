//! The validated form of `[[upstreams]]`: targets, balancing and health checks.

use std::net::SocketAddr;
use std::time::Duration;

/// A pool of upstream targets.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// Name used by routes and in metrics.
    pub name: String,
    /// Resolved targets.
    pub targets: Vec<Target>,
    /// How a target is chosen.
    pub balance: Balance,
    /// Active health checking; `None` treats every target as healthy.
    pub health_check: Option<HealthCheck>,
    /// TCP (and TLS) connect timeout.
    pub connect_timeout: Duration,
    /// Timeout for each read from the upstream.
    pub read_timeout: Duration,
    /// Timeout for each write to the upstream.
    pub write_timeout: Duration,
    /// How long an idle kept-alive upstream connection is kept.
    pub idle_timeout: Duration,
    /// Further targets tried when connecting fails.
    pub retries: usize,
    /// Connect with TLS.
    pub tls: bool,
    /// SNI and certificate name for TLS.
    pub sni: String,
    /// Host header sent when a route does not preserve the client's.
    pub host_header: Option<String>,
}

/// One upstream server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Resolved address.
    pub addr: SocketAddr,
    /// Relative share of traffic.
    pub weight: usize,
}

/// Target selection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Balance {
    /// Each target in turn (weighted).
    RoundRobin,
    /// A random target (weighted).
    Random,
    /// The same key goes to the same target while it is healthy.
    ConsistentHash(HashKey),
}

/// What consistent hashing hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    /// The client's IP address.
    ClientIp,
    /// The value of a request header.
    Header(http::HeaderName),
}

/// Active health check settings.
#[derive(Debug, Clone)]
pub struct HealthCheck {
    /// TCP connect or HTTP GET.
    pub kind: HealthCheckKind,
    /// Time between checks.
    pub interval: Duration,
    /// Connect and read timeout of one check.
    pub timeout: Duration,
    /// Consecutive successes to become healthy again.
    pub healthy_threshold: usize,
    /// Consecutive failures to become unhealthy.
    pub unhealthy_threshold: usize,
}

/// The kind of health check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthCheckKind {
    /// A TCP connection can be opened.
    Tcp,
    /// `GET path` answers 200.
    Http {
        /// Request path.
        path: String,
        /// Host header (default: the target address).
        host: Option<String>,
    },
}
