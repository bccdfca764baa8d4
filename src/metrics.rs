//! Every Prometheus metric the gateway exports, registered once in the default registry (which
//! the metrics listener serves). Label values are bounded: route, upstream and target names come
//! from the configuration, never from requests. Per-route handles are resolved once so the request
//! path does no label lookups.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
};
use std::sync::{LazyLock, OnceLock};

/// Prefix of every metric name.
pub const PREFIX: &str = "oidc_gateway";

/// Latency buckets (seconds) suited to a proxy: 100 µs to 30 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(format!("{PREFIX}_{name}"), help), labels)
        .expect("metric definitions are static and valid");
    register(Box::new(c.clone()));
    c
}

fn gauge_vec(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(format!("{PREFIX}_{name}"), help), labels)
        .expect("metric definitions are static and valid");
    register(Box::new(g.clone()));
    g
}

fn histogram_vec(name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let h = HistogramVec::new(
        HistogramOpts::new(format!("{PREFIX}_{name}"), help).buckets(LATENCY_BUCKETS.to_vec()),
        labels,
    )
    .expect("metric definitions are static and valid");
    register(Box::new(h.clone()));
    h
}

fn register(c: Box<dyn prometheus::core::Collector>) {
    // Registering twice only happens if a test builds two gateways in one process; the first
    // registration keeps serving, so the error is safe to ignore.
    let _ = prometheus::register(c);
}

/// `http_requests_total{route,status}`
pub static HTTP_REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "http_requests_total",
        "Requests answered, by route and status.",
        &["route", "status"],
    )
});

/// `http_request_duration_seconds{route}`
pub static HTTP_DURATION: LazyLock<HistogramVec> = LazyLock::new(|| {
    histogram_vec(
        "http_request_duration_seconds",
        "Time from request start to the end of the response, by route.",
        &["route"],
    )
});

/// `upstream_request_duration_seconds{upstream}`
pub static UPSTREAM_DURATION: LazyLock<HistogramVec> = LazyLock::new(|| {
    histogram_vec(
        "upstream_request_duration_seconds",
        "Time from choosing an upstream target until its response header arrived.",
        &["upstream"],
    )
});

/// `upstream_target_healthy{upstream,target}`
pub static TARGET_HEALTHY: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    gauge_vec(
        "upstream_target_healthy",
        "1 when the target passes its health check, else 0.",
        &["upstream", "target"],
    )
});

/// `upstream_connect_failures_total{upstream,target}`
pub static CONNECT_FAILURES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "upstream_connect_failures_total",
        "Failed connection attempts to an upstream target.",
        &["upstream", "target"],
    )
});

/// `build_info{version}`
pub static BUILD_INFO: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    gauge_vec(
        "build_info",
        "Always 1; labelled with the gateway's version.",
        &["version"],
    )
});

/// `session_lookups_total{route,result}`
pub static SESSION_LOOKUPS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "session_lookups_total",
        "Session checks on protected routes: hit (valid session), miss (none), expired, invalid.",
        &["route", "result"],
    )
});

/// `session_cache_total{result}`
pub static SESSION_CACHE: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "session_cache_total",
        "Session lookups answered from memory (hit) or by opening the cookie (miss).",
        &["result"],
    )
});

/// `logins_total{provider,result}`
pub static LOGINS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "logins_total",
        "Browser logins: started, succeeded, and each failure reason.",
        &["provider", "result"],
    )
});

/// `token_refresh_total{provider,result}`
pub static TOKEN_REFRESH: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "token_refresh_total",
        "Access-token refreshes, by outcome.",
        &["provider", "result"],
    )
});

/// `jwks_fetch_total{provider,result}`
pub static JWKS_FETCH: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "jwks_fetch_total",
        "Signing-key (JWKS) fetches, by outcome.",
        &["provider", "result"],
    )
});

/// `idp_request_duration_seconds{provider,endpoint}`
pub static IDP_DURATION: LazyLock<HistogramVec> = LazyLock::new(|| {
    histogram_vec(
        "idp_request_duration_seconds",
        "Calls to identity providers, by endpoint (discovery, jwks, token, userinfo, refresh).",
        &["provider", "endpoint"],
    )
});

static CACHE_HIT: LazyLock<IntCounter> =
    LazyLock::new(|| SESSION_CACHE.with_label_values(&["hit"]));
static CACHE_MISS: LazyLock<IntCounter> =
    LazyLock::new(|| SESSION_CACHE.with_label_values(&["miss"]));

/// Counts a session lookup served from memory or not.
pub fn session_cache(hit: bool) {
    if hit {
        CACHE_HIT.inc()
    } else {
        CACHE_MISS.inc()
    }
}

/// Creates a provider's and the session cache's main series at zero, so dashboards and alerts
/// see them before the first login.
pub fn init_provider(provider: &str) {
    LazyLock::force(&CACHE_HIT);
    LazyLock::force(&CACHE_MISS);
    for result in ["started", "succeeded"] {
        LOGINS.with_label_values(&[provider, result]);
    }
    for result in ["succeeded", "failed", "rejected"] {
        TOKEN_REFRESH.with_label_values(&[provider, result]);
    }
    for result in ["ok", "error"] {
        JWKS_FETCH.with_label_values(&[provider, result]);
    }
    for result in ["revoked", "failed"] {
        REVOCATIONS.with_label_values(&[provider, result]);
    }
}

/// Records one call to a provider.
pub fn idp_request(provider: &str, endpoint: &str, elapsed: std::time::Duration) {
    IDP_DURATION
        .with_label_values(&[provider, endpoint])
        .observe(elapsed.as_secs_f64());
    // Every call to a provider passes here: its span too.
    crate::telemetry::idp_call(provider, endpoint, elapsed);
}

/// `provider_metadata_age_seconds{provider}`
pub static METADATA_AGE: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    gauge_vec(
        "provider_metadata_age_seconds",
        "Seconds since the discovery document and keys in use were fetched from the provider \
         (absent while none are known).",
        &["provider"],
    )
});

/// Sets the age of a provider's discovery and keys; `None` removes the series (none known).
pub fn provider_metadata_age(provider: &str, age: Option<u64>) {
    match age {
        Some(a) => METADATA_AGE
            .with_label_values(&[provider])
            .set(i64::try_from(a).unwrap_or(i64::MAX)),
        None => {
            let _ = METADATA_AGE.remove_label_values(&[provider]);
        }
    }
}

/// Counts a JWKS fetch.
pub fn jwks_fetch(provider: &str, result: &str) {
    JWKS_FETCH.with_label_values(&[provider, result]).inc();
}

/// Counts a login event (`started`, `succeeded` or a failure reason).
pub fn login(provider: &str, result: &str) {
    LOGINS.with_label_values(&[provider, result]).inc();
}

/// `token_revocations_total{provider,result}`
pub static REVOCATIONS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "token_revocations_total",
        "Tokens revoked at the provider at logout (revoked) or not (failed).",
        &["provider", "result"],
    )
});

/// Counts a token revocation outcome.
pub fn revocation(provider: &str, result: &str) {
    REVOCATIONS.with_label_values(&[provider, result]).inc();
}

/// `identity_headers_left_out_total{provider}`
pub static IDENTITY_HEADERS_LEFT_OUT: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "identity_headers_left_out_total",
        "Identity headers not sent upstream because they would take a session's or token's identity headers over max_identity_header_bytes (counted once per session or token and instance).",
        &["provider"],
    )
});

/// Counts identity headers left out for size.
pub fn identity_headers_left_out(provider: &str, headers: usize) {
    IDENTITY_HEADERS_LEFT_OUT
        .with_label_values(&[provider])
        .inc_by(headers as u64);
}

/// `policy_errors_total{realm}`
pub static POLICY_ERRORS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "policy_errors_total",
        "Requests refused because a route's allow_if could not decide (a missing claim, a type error): each is a 403.",
        &["realm"],
    )
});

/// Counts an `allow_if` that could not decide.
pub fn policy_error(realm: &str) {
    POLICY_ERRORS.with_label_values(&[realm]).inc();
}

/// `admin_calls_total{call,status}`
pub static ADMIN_CALLS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "admin_calls_total",
        "Admin API calls, by call (status, list_sessions, revoke_user, revoke_session, check_config, unknown) and status (401: no valid token, 403: not in the group).",
        &["call", "status"],
    )
});

/// The admin API's refusal series at zero, so an alert on them sees the series at once.
pub fn init_admin_calls(calls: &[&str]) {
    for call in calls {
        for status in ["401", "403"] {
            ADMIN_CALLS.with_label_values(&[call, status]);
        }
    }
}

/// Counts an admin API call and its answer.
pub fn admin_call(call: &str, status: u16) {
    ADMIN_CALLS
        .with_label_values(&[call, &status.to_string()])
        .inc();
}

/// `rate_limited_total{route,result}`
pub static RATE_LIMITED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "rate_limited_total",
        "Requests a route's rate_limit acted on: limited (answered 429), fail_open (admitted uncounted: Redis did not answer).",
        &["route", "result"],
    )
});

/// A limited route's series at zero (`fail_open` only where Redis counts).
pub fn init_rate_limited(route: &str, shared: bool) {
    RATE_LIMITED.with_label_values(&[route, "limited"]);
    if shared {
        RATE_LIMITED.with_label_values(&[route, "fail_open"]);
    }
}

/// Counts a request a route's `rate_limit` refused or could not count.
pub fn rate_limited(route: &str, result: &str) {
    RATE_LIMITED.with_label_values(&[route, result]).inc();
}

/// `token_exchanges_total{provider,result}`
pub static TOKEN_EXCHANGES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "token_exchanges_total",
        "Tokens for upstreams (token_exchange): cached (reused), exchanged (minted by the provider), refused (403), failed (503).",
        &["provider", "result"],
    )
});

/// Counts a token exchange outcome.
pub fn token_exchange(provider: &str, result: &str) {
    TOKEN_EXCHANGES.with_label_values(&[provider, result]).inc();
}

/// `backchannel_logouts_total{result}`
pub static BACKCHANNEL_LOGOUTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "backchannel_logouts_total",
        "Back-channel logout requests: succeeded, invalid (a bad logout token), replayed (a jti seen before), unavailable (not recorded: Redis or the provider's keys).",
        &["result"],
    )
});

/// Counts a back-channel logout outcome.
pub fn backchannel_logout(result: &str) {
    BACKCHANNEL_LOGOUTS.with_label_values(&[result]).inc();
}

/// Counts a token refresh outcome.
pub fn token_refresh(provider: &str, result: &str) {
    TOKEN_REFRESH.with_label_values(&[provider, result]).inc();
}

/// `redis_commands_total{command,result}`
pub static REDIS_COMMANDS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "redis_commands_total",
        "Redis commands by result: ok, error (Redis refused), unavailable (no answer in time), breaker_open (not sent).",
        &["command", "result"],
    )
});

/// `redis_command_duration_seconds{command}`
pub static REDIS_DURATION: LazyLock<HistogramVec> = LazyLock::new(|| {
    histogram_vec(
        "redis_command_duration_seconds",
        "Time of one Redis command, connection included.",
        &["command"],
    )
});

/// `redis_local_cache_total{result}`
pub static REDIS_LOCAL_CACHE: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "redis_local_cache_total",
        "Redis-store session loads answered from the in-process cache (hit) or from Redis (miss).",
        &["result"],
    )
});

/// One `(command, result)` pair's series.
type RedisSeries = (&'static str, &'static str, IntCounter, Option<Histogram>);

thread_local! {
    /// Series handles of [`redis_command`], looked up once per thread: with `local_cache_ttl =
    /// "0s"` every request records a command, and the lookups by label were 0.5% of that
    /// request's CPU (0.2% now). The few names are static strings.
    static REDIS_SERIES: std::cell::RefCell<Vec<RedisSeries>> = const {
        std::cell::RefCell::new(Vec::new())
    };
}

/// Records one Redis command.
pub fn redis_command(command: &'static str, result: &'static str, elapsed: std::time::Duration) {
    REDIS_SERIES.with_borrow_mut(|all| {
        let i = all
            .iter()
            .position(|(c, r, ..)| *c == command && *r == result)
            .unwrap_or_else(|| {
                let observed = (result != "breaker_open")
                    .then(|| REDIS_DURATION.with_label_values(&[command]));
                all.push((
                    command,
                    result,
                    REDIS_COMMANDS.with_label_values(&[command, result]),
                    observed,
                ));
                all.len() - 1
            });
        let (_, _, count, duration) = &all[i];
        count.inc();
        if let Some(d) = duration {
            d.observe(elapsed.as_secs_f64());
        }
    });
}

static LOCAL_HIT: LazyLock<IntCounter> =
    LazyLock::new(|| REDIS_LOCAL_CACHE.with_label_values(&["hit"]));
static LOCAL_MISS: LazyLock<IntCounter> =
    LazyLock::new(|| REDIS_LOCAL_CACHE.with_label_values(&["miss"]));

/// Counts a Redis-store load answered from memory or not.
pub fn redis_local_cache(hit: bool) {
    if hit { &LOCAL_HIT } else { &LOCAL_MISS }.inc();
}

/// `requests_refused_total{reason}`
pub static REFUSED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "requests_refused_total",
        "Requests the gateway refused before routing or to protect itself: bad_method, \
         bad_target, bad_path, duplicate_authorization, bad_content_length, body_not_allowed, \
         header_timeout, body_too_slow, too_many_connections, rate_limited, provider_busy, \
         tls_handshake_timeout.",
        &["reason"],
    )
});

/// The reasons `requests_refused_total` counts.
pub const REFUSAL_REASONS: &[&str] = &[
    "bad_method",
    "bad_target",
    "bad_path",
    "duplicate_authorization",
    "bad_content_length",
    "body_not_allowed",
    "header_timeout",
    "body_too_slow",
    "too_many_connections",
    "rate_limited",
    "provider_busy",
    "tls_handshake_timeout",
    "dpop",
    "certificate_bound",
];

/// Counts a refused request (`reason` is one of [`REFUSAL_REASONS`]).
pub fn refused(reason: &str) {
    REFUSED.with_label_values(&[reason]).inc();
}

/// Outcome of a session check, for `session_lookups_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionResult {
    /// A valid session.
    Hit = 0,
    /// No session cookie.
    Miss = 1,
    /// A session past one of its timeouts.
    Expired = 2,
    /// A cookie that does not open (tampered, unknown, other provider).
    Invalid = 3,
}

impl SessionResult {
    fn label(self) -> &'static str {
        match self {
            SessionResult::Hit => "hit",
            SessionResult::Miss => "miss",
            SessionResult::Expired => "expired",
            SessionResult::Invalid => "invalid",
        }
    }
}

/// Registers every metric so `/metrics` lists them before the first request.
pub fn init() {
    // `process_cpu_seconds_total`, `process_resident_memory_bytes`, `process_open_fds`, ...
    register(Box::new(
        prometheus::process_collector::ProcessCollector::for_self(),
    ));
    BUILD_INFO
        .with_label_values(&[env!("CARGO_PKG_VERSION")])
        .set(1);
    LazyLock::force(&HTTP_REQUESTS);
    // Every reason at zero, so alerts and dashboards see the series before the first refusal.
    for reason in REFUSAL_REASONS {
        REFUSED.with_label_values(&[reason]);
    }
    for result in ["succeeded", "invalid", "replayed", "unavailable"] {
        BACKCHANNEL_LOGOUTS.with_label_values(&[result]);
    }
    LazyLock::force(&HTTP_DURATION);
    LazyLock::force(&UPSTREAM_DURATION);
    LazyLock::force(&TARGET_HEALTHY);
    LazyLock::force(&CONNECT_FAILURES);
    LazyLock::force(&SESSION_LOOKUPS);
    LazyLock::force(&SESSION_CACHE);
    LazyLock::force(&LOGINS);
    LazyLock::force(&TOKEN_REFRESH);
    LazyLock::force(&JWKS_FETCH);
    LazyLock::force(&IDP_DURATION);
}

/// Request metrics of one route (or of the gateway's own answers), resolved once.
pub struct RouteMetrics {
    name: Box<str>,
    duration: Histogram,
    /// Counter per status code 100..=599, created on first use.
    by_status: Box<[OnceLock<IntCounter>]>,
    /// Session lookup counters by [`SessionResult`], created on first use.
    sessions: [OnceLock<IntCounter>; 4],
}

impl RouteMetrics {
    /// Handles for the route label `name`.
    pub fn new(name: &str) -> Self {
        RouteMetrics {
            name: name.into(),
            duration: HTTP_DURATION.with_label_values(&[name]),
            by_status: (100..600).map(|_| OnceLock::new()).collect(),
            sessions: Default::default(),
        }
    }

    /// Creates this route's session series at zero, so dashboards see them before traffic.
    pub fn init_sessions(&self) {
        for r in [
            SessionResult::Hit,
            SessionResult::Miss,
            SessionResult::Expired,
            SessionResult::Invalid,
        ] {
            self.sessions[r as usize]
                .get_or_init(|| SESSION_LOOKUPS.with_label_values(&[&*self.name, r.label()]));
        }
    }

    /// Counts one session check on this route.
    pub fn session(&self, result: SessionResult) {
        self.sessions[result as usize]
            .get_or_init(|| SESSION_LOOKUPS.with_label_values(&[&*self.name, result.label()]))
            .inc();
    }

    /// Counts one answered request.
    pub fn observe(&self, status: u16, seconds: f64) {
        self.duration.observe(seconds);
        let idx = usize::from(status.clamp(100, 599) - 100);
        if let Some(slot) = self.by_status.get(idx) {
            slot.get_or_init(|| {
                let mut buf = itoa::Buffer::new();
                HTTP_REQUESTS.with_label_values(&[&*self.name, buf.format(status)])
            })
            .inc();
        }
    }
}

/// Metrics of one upstream target, resolved once.
pub struct TargetMetrics {
    /// `upstream_target_healthy`
    pub healthy: IntGauge,
    /// `upstream_connect_failures_total`
    pub connect_failures: IntCounter,
}

impl TargetMetrics {
    /// Handles for (`upstream`, `target`).
    pub fn new(upstream: &str, target: &str) -> Self {
        TargetMetrics {
            healthy: TARGET_HEALTHY.with_label_values(&[upstream, target]),
            connect_failures: CONNECT_FAILURES.with_label_values(&[upstream, target]),
        }
    }
}
