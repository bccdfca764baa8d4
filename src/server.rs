//! Config → Pingora services: the proxy with its listeners, the metrics listener and the
//! background health checks. On `--upgrade`, the providers are made ready before the sockets are
//! taken over (see `upgrade`).

use crate::admin::AdminApp;
use crate::auth::Authenticator;
use crate::bind_check;
use crate::config::Config;
use crate::connections;
use crate::endpoints::{Endpoints, Sweeper};
use crate::fleet::pubsub::Subscriber;
use crate::fleet::{Fleet, Invalidation};
use crate::handshake::HandshakeDeadline;
use crate::metrics;
use crate::oidc::provider::DiscoveryService;
use crate::proxy::Gateway;
use crate::readiness::Readiness;
use crate::telemetry::TraceExport;
use crate::upgrade;
use crate::upstream::{HealthChecks, UpstreamPool};
use pingora::apps::http_app::HttpServer;
use pingora::listeners::tls::TlsSettings;
use pingora::server::Server;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::services::background::background_service;
use pingora::services::listening::Service;
use std::sync::Arc;

/// How the process was asked to start.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunMode {
    /// Take the listening sockets over from a running instance (zero-downtime upgrade).
    pub upgrade: bool,
    /// Detach and write the PID file.
    pub daemon: bool,
}

/// Builds a ready-to-run Pingora server for `config`.
pub fn build(config: Config, mode: RunMode) -> Result<Server, String> {
    let s = &config.server;
    let (opt, conf) = pingora_options(s, mode);
    // Pingora would retry a port in use for ever; an upgrade takes its sockets over instead.
    if !mode.upgrade {
        let mut addrs = s.listen.to_vec();
        addrs.extend(s.tls.iter().map(|t| t.listen));
        addrs.extend(config.metrics.as_ref().map(|m| m.listen));
        bind_check::check(&addrs)?;
    }
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    metrics::init();

    let mut pools = Vec::with_capacity(config.upstreams.len());
    let mut checkers = Vec::new();
    for u in &config.upstreams {
        let (pool, checker) = UpstreamPool::new(u);
        pools.push(pool);
        checkers.extend(checker);
    }
    let pools: Arc<[UpstreamPool]> = pools.into();

    // The fleet's shared state, when `[redis]` is configured (sessions name their keys with the
    // session secrets).
    let fleet = match (&config.redis, &config.session) {
        (Some(r), Some(s)) => Some(Arc::new(Fleet::new(r, &s.secrets)?)),
        _ => None,
    };
    let oidc = Authenticator::new(&config, fleet.clone())?.map(Arc::new);
    let endpoints = oidc
        .clone()
        .map(|auth| Arc::new(Endpoints::new(&config, auth, fleet.clone())));
    let readiness = Arc::new(Readiness::new(
        &config,
        oidc.as_ref().map(|a| a.providers().clone()),
        pools.clone(),
        fleet.clone(),
    ));
    if mode.upgrade {
        if let Some(auth) = &oidc {
            upgrade::wait_until_ready(
                auth.providers(),
                readiness.used_providers(),
                s.upgrade_ready_timeout,
            );
        }
        upgrade::signal_old(&s.pid_file);
    }
    // With `--upgrade`, this takes the listening sockets over from the running process.
    server.bootstrap();
    if let (Some(auth), Some(endpoints)) = (&oidc, &endpoints) {
        add_auth_services(&mut server, auth, endpoints, fleet.as_ref());
    }

    let listen = s.listen.clone();
    let tls = s.tls.clone();
    let metrics_listen = config.metrics.as_ref().map(|m| m.listen);
    let tracing = config.tracing.clone();

    let limits = connections::Limits {
        max_connections: s.max_connections,
        header_timeout: s.request_header_timeout,
        keepalive: s.keepalive_timeout,
    };
    let route_limits = crate::route_limit::RouteLimits::new(&config, fleet.as_ref());
    if let (Some(admin), Some(auth)) = (config.admin.clone(), &oidc) {
        let listen = admin.listen;
        let api = crate::admin_api::AdminApi::new(&config, admin, auth.clone(), readiness.clone());
        let mut service = Service::new(
            "oidc-gateway admin API".to_owned(),
            HttpServer::new_app(api),
        );
        service.add_tcp(&listen.to_string());
        service.threads = Some(1);
        server.add_service(service);
    }
    let h2 = h2_options(s);
    let tls_handshake_timeout = s.tls_handshake_timeout;
    let mut http = pingora::proxy::http_proxy(
        &server.configuration,
        Gateway::new(config, pools, endpoints, route_limits),
    );
    http.h2_options = Some(h2);
    let handshakes = (!tls.is_empty()).then(|| HandshakeDeadline::new(tls_handshake_timeout));
    let mut proxy = Service::new(
        "oidc-gateway proxy".to_owned(),
        connections::Guarded::new(http, limits, handshakes.clone()),
    );
    if let Some(h) = handshakes {
        proxy.endpoints().set_pre_tls_callback(h);
    }
    for addr in &listen {
        proxy.add_tcp(&addr.to_string());
    }
    for t in &tls {
        let (cert, key) = (t.cert.to_string_lossy(), t.key.to_string_lossy());
        let mut settings = TlsSettings::intermediate(&cert, &key)
            .map_err(|e| format!("TLS listener {}: cannot load {cert} / {key}: {e}", t.listen))?;
        if t.h2 {
            settings.enable_h2();
        }
        if let Some(ca) = &t.client_ca {
            settings.set_client_cert_verifier(client_verifier(ca).map_err(|e| {
                format!(
                    "TLS listener {}: client_ca_file {}: {e}",
                    t.listen,
                    ca.display()
                )
            })?);
        }
        proxy.add_tls_with_settings(&t.listen.to_string(), None, settings);
    }
    server.add_service(proxy);

    add_side_services(
        &mut server,
        metrics_listen,
        readiness,
        tracing.as_ref(),
        checkers,
        mode,
    )?;
    Ok(server)
}

/// Pingora's options for `s`, started as `mode` says.
fn pingora_options(s: &crate::config::Server, mode: RunMode) -> (Opt, ServerConf) {
    let conf = ServerConf {
        threads: s.threads,
        work_stealing: s.work_stealing,
        grace_period_seconds: Some(ceil_secs(s.grace_period)),
        graceful_shutdown_timeout_seconds: Some(ceil_secs(s.shutdown_timeout)),
        pid_file: s.pid_file.clone(),
        upgrade_sock: s.upgrade_socket.clone(),
        upstream_keepalive_pool_size: s.upstream_keepalive_pool_size,
        daemon: mode.daemon,
        ..ServerConf::default()
    };
    let opt = Opt {
        upgrade: mode.upgrade,
        daemon: mode.daemon,
        ..Opt::default()
    };
    (opt, conf)
}

/// The background work of OpenID Connect: provider discovery, sweeping, and in a fleet the
/// invalidations other instances publish.
fn add_auth_services(
    server: &mut Server,
    auth: &Arc<Authenticator>,
    endpoints: &Arc<Endpoints>,
    fleet: Option<&Arc<Fleet>>,
) {
    if let Some(fleet) = fleet {
        let handler = auth.sessions().invalidator();
        let mut sub = background_service(
            "Redis invalidations",
            Subscriber::new(fleet.clone(), handler.clone()),
        );
        sub.threads = Some(1);
        server.add_service(sub);
        // Back from an outage: messages may have been missed meanwhile.
        fleet
            .redis
            .on_recovered(Box::new(move || handler(Invalidation::All)));
    }
    let mut discovery = background_service(
        "provider discovery",
        DiscoveryService(auth.providers().clone()),
    );
    discovery.threads = Some(1);
    server.add_service(discovery);
    let mut sweeper = background_service("session sweeper", Sweeper(endpoints.clone()));
    sweeper.threads = Some(1);
    server.add_service(sweeper);
}

/// The metrics listener, the trace exporter and the upstream health checks, when configured.
fn add_side_services(
    server: &mut Server,
    metrics_listen: Option<std::net::SocketAddr>,
    readiness: Arc<Readiness>,
    tracing: Option<&crate::config::TracingSettings>,
    checkers: Vec<crate::upstream::HealthChecker>,
    mode: RunMode,
) -> Result<(), String> {
    if let Some(addr) = metrics_listen {
        let mut admin = Service::new(
            "oidc-gateway metrics".to_owned(),
            HttpServer::new_app(AdminApp { readiness }),
        );
        admin.add_tcp(&addr.to_string());
        admin.threads = Some(1);
        server.add_service(admin);
    }
    if let Some(t) = tracing {
        if !mode.daemon {
            crate::telemetry::install(t)?;
        }
        let mut export = background_service("trace export", TraceExport(t.clone()));
        export.threads = Some(1);
        server.add_service(export);
    }
    if !checkers.is_empty() {
        let mut hc = background_service("upstream health checks", HealthChecks(checkers));
        hc.threads = Some(1);
        server.add_service(hc);
    }
    Ok(())
}

/// Verifies client certificates against the CAs in `ca`, when a client sends one (none is
/// asked of clients that have none: the routes decide what a certificate is needed for).
fn client_verifier(
    ca: &std::path::Path,
) -> Result<Arc<dyn pingora::tls::ClientCertVerifier>, String> {
    let mut roots = pingora::tls::RootCertStore::empty();
    pingora::tls::load_ca_file_into_store(ca, &mut roots).map_err(|e| e.to_string())?;
    pingora::tls::WebPkiClientVerifier::builder(Arc::new(roots))
        .allow_unauthenticated()
        .build()
        .map_err(|e| e.to_string())
}

/// HTTP/2 settings for client connections: Pingora's bounded defaults with the configured
/// stream and header-list limits. The `h2` crate's own limits stay: 20 streams reset before
/// they were accepted (rapid reset) and 1,024 errors a connection causes end it with GOAWAY.
fn h2_options(s: &crate::config::Server) -> pingora::protocols::http::v2::server::H2Options {
    let mut o = pingora::protocols::http::v2::server::default_h2_options();
    o.max_concurrent_streams(s.h2_max_concurrent_streams);
    o.max_header_list_size(s.h2_max_header_list_size);
    o
}

/// Pingora counts these periods in whole seconds; never round a grace period down to zero.
fn ceil_secs(d: std::time::Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}
