//! End-to-end load benchmark, side by side in one run on 127.0.0.1:
//!
//! - a fast upstream and Debian's nginx as a plain reverse proxy (the baseline peer), and a
//!   minimal Pingora proxy with default settings (the second baseline, `bare.rs`);
//! - the gateway (the real binary) with three routes to the same upstream: no auth, session
//!   (cookie store) and bearer JWT; the development IdP to log in once and mint a token; as a
//!   control, the no-auth route carrying the session cookie (bytes without the check);
//! - `wrk` against each target, several rounds, then one table with req/s, p50/p99, the
//!   gateway's peak RSS and the ratios that matter;
//! - logins per second (full code flow; gateway time per login net of IdP calls, from its
//!   own metrics) and memory per in-memory session.
//!
//! `cargo bench --bench load` runs it fully (release build). Under `cargo test` (no `--bench`
//! argument) or with `--quick` it runs each target for 1 s and only checks that every row
//! answered as expected, so CI keeps it working without running it for long.

use std::io::Read;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod bare;
mod edge;
mod flows;
mod memory;
mod processes;
mod profile;
mod redis;
mod report;
mod traced;
mod wrk;

use edge::*;
use flows::*;
use memory::*;
use processes::*;
use redis::*;
use report::*;
use traced::*;
use wrk::*;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BIN: &str = env!("CARGO_BIN_EXE_oidc-gateway");
const SESSION_SECRET: &str = "load-test-session-secret-0123456789abcdef";
const CLIENT_SECRET: &str = "load-test-client-secret";

struct Opts {
    /// `--hold N`: after setup, print the targets and the gateway's PID and wait N seconds
    /// (for profiling with perf/wrk by hand), then stop.
    hold: Option<u64>,
    /// `--profile`: the per-request cost breakdown instead of the table (see `profile.rs`).
    profile: bool,
    quick: bool,
    seconds: u32,
    rounds: usize,
    connections: u32,
    logins: usize,
    session_counts: Vec<usize>,
}

impl Opts {
    /// Loads a target for a second before it is measured, so the figures are of a warm process.
    /// The quick pass judges no figure, so it skips this and saves about 25 s of the test run.
    fn warm_up(&self, load: Load, url: &str, header: Option<&str>) {
        if !self.quick {
            load(url, header, 1, self.connections);
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--bare-pingora") {
        let port = |k: usize| args.get(i + k).and_then(|p| p.parse().ok());
        let (Some(listen), Some(upstream)) = (port(1), port(2)) else {
            panic!("usage: --bare-pingora LISTEN_PORT UPSTREAM_PORT");
        };
        bare::serve(listen, upstream);
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--memory-child") {
        let (Some(n), Some(state)) = (
            args.get(i + 1).and_then(|n| n.parse().ok()),
            args.get(i + 2),
        ) else {
            panic!("usage: --memory-child SESSIONS idle|active");
        };
        println!("{}", session_memory(n, state == "idle"));
        return;
    }
    let quick = !args.iter().any(|a| a == "--bench") || args.iter().any(|a| a == "--quick");
    let hold = args
        .iter()
        .position(|a| a == "--hold")
        .and_then(|i| args.get(i + 1)?.parse().ok());
    let profile = args.iter().any(|a| a == "--profile");
    let opts = if quick {
        Opts {
            hold,
            profile,
            quick,
            seconds: 1,
            rounds: 1,
            connections: 50,
            logins: 10,
            session_counts: vec![2_000],
        }
    } else {
        Opts {
            hold,
            profile,
            quick,
            seconds: 10,
            rounds: 5,
            connections: 50,
            logins: 200,
            session_counts: vec![100_000, 1_000_000],
        }
    };
    for (tool, package) in [
        ("wrk", "wrk"),
        ("nginx", "nginx-light"),
        ("h2load", "nghttp2-client"),
    ] {
        require(tool, package);
    }
    if args.iter().any(|a| a == "--memory-only") {
        print_memory(&memory_report(&opts.session_counts));
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(&opts));
}

/// Everything a run measures, started and ready.
struct Started {
    /// Processes that only need to stay up (nginx, the bare proxies, the IdP, the twin).
    _keep: Vec<Proc>,
    /// The nginx proxy's and the first bare Pingora's PIDs (for `--profile`).
    nginx_pid: u32,
    bare_pid: u32,
    /// The gateway under test (restarted with the memory store later).
    gateway: Proc,
    /// Its config file.
    config: std::path::PathBuf,
    origin: String,
    origin2: String,
    idp: String,
}

/// Starts nginx, the two bare Pingora proxies, the development IdP and the two gateways, and
/// waits until every one listens and both gateways have discovered the IdP.
async fn start_all(d: &Path, p: &Ports) -> Started {
    let [_upstream, _nginx] = start_nginx(d, p);
    let bare = |port: u16| {
        spawn(
            Command::new(std::env::current_exe().unwrap()).args([
                "--bare-pingora",
                &port.to_string(),
                &p.upstream.to_string(),
            ]),
            &d.join(format!("bare-pingora-{port}.log")),
        )
    };
    let (_bare, _bare2) = (bare(p.bare), bare(p.bare2));
    let _idp = spawn(
        Command::new(BIN)
            .args([
                "dev-idp",
                "--port",
                &p.idp.to_string(),
                "--gateway-port",
                &p.gateway.to_string(),
            ])
            // Tokens outlive the run: a refresh in the middle would measure the IdP, not the gateway.
            .args(["--access-token-ttl", "7200"])
            .env("CLIENT_SECRET", CLIENT_SECRET),
        &d.join("idp.log"),
    );
    let config = d.join("gateway.toml");
    std::fs::write(&config, gateway_config(d, p, "cookie")).unwrap();
    let gateway = spawn(
        Command::new(BIN).args(["run", "--config"]).arg(&config),
        &d.join("gateway.log"),
    );
    // A second, identical gateway (same secrets, so it accepts the same cookies): the partner
    // in paired runs, so a route is never paired with another route of the same process.
    let config2 = d.join("gateway2.toml");
    let text2 = gateway_config(d, p, "cookie")
        .replace(
            &format!("127.0.0.1:{}", p.gateway),
            &format!("127.0.0.1:{}", p.gateway2),
        )
        .replace(
            &format!("127.0.0.1:{}", p.metrics),
            &format!("127.0.0.1:{}", p.metrics2),
        )
        .replace("/gw.", "/gw2.");
    std::fs::write(&config2, text2).unwrap();
    let _gateway2 = spawn(
        Command::new(BIN).args(["run", "--config"]).arg(&config2),
        &d.join("gateway2.log"),
    );
    for (port, what) in [
        (p.upstream, "upstream"),
        (p.nginx, "nginx"),
        (p.bare, "bare Pingora"),
        (p.bare2, "second bare Pingora"),
        (p.idp, "dev IdP"),
        (p.gateway, "gateway"),
        (p.gateway2, "second gateway"),
    ] {
        wait_port(port, what);
    }
    let origin = format!("http://127.0.0.1:{}", p.gateway);
    let idp = format!("http://127.0.0.1:{}", p.idp);
    wait_discovered(&origin).await;
    let origin2 = format!("http://127.0.0.1:{}", p.gateway2);
    wait_discovered(&origin2).await;
    Started {
        nginx_pid: _nginx.0.id(),
        bare_pid: _bare.0.id(),
        _keep: vec![_upstream, _nginx, _bare, _bare2, _idp, _gateway2],
        gateway,
        config,
        origin,
        origin2,
        idp,
    }
}

/// Warms every target up, then measures them in rounds, interleaved; the median of each.
fn measure_rounds(targets: &[Target], o: &Opts) -> Vec<Wrk> {
    for (_, url, header) in targets {
        o.warm_up(wrk, url, header.as_deref());
    }
    let mut results: Vec<Vec<Wrk>> = vec![Vec::new(); targets.len()];
    for _ in 0..o.rounds {
        for (i, (name, url, header)) in targets.iter().enumerate() {
            let r = wrk(url, header.as_deref(), o.seconds, o.connections);
            assert_eq!(
                r.errors, 0,
                "{name}: {} non-2xx/3xx responses or socket errors",
                r.errors
            );
            assert!(r.requests > 0, "{name}: no requests completed");
            results[i].push(r);
        }
    }
    results.iter().map(|rs| median(rs)).collect()
}

async fn run(o: &Opts) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let [
        upstream,
        nginx,
        bare,
        bare2,
        gateway,
        gateway2,
        idp,
        metrics,
        metrics2,
    ] = free_ports();
    let p = Ports {
        upstream,
        nginx,
        bare,
        bare2,
        gateway,
        gateway2,
        idp,
        metrics,
        metrics2,
    };

    let Started {
        _keep,
        nginx_pid,
        bare_pid,
        mut gateway,
        config,
        origin,
        origin2,
        idp,
    } = start_all(d, &p).await;

    let cookie = login(&origin, "/session/").await;
    let token = mint_token(&idp).await;
    let targets: Vec<Target> = vec![
        (
            "nginx (plain proxy)",
            format!("http://127.0.0.1:{}/", p.nginx),
            None,
        ),
        (
            "bare Pingora proxy",
            format!("http://127.0.0.1:{}/", p.bare),
            None,
        ),
        ("gateway, no auth", format!("{origin}/noauth/"), None),
        (
            "gateway, session",
            format!("{origin}/session/"),
            Some(format!("Cookie: {cookie}")),
        ),
        (
            "gateway, bearer",
            format!("{origin}/bearer/"),
            Some(format!("Authorization: Bearer {token}")),
        ),
        // A control, not a target: the no-auth route carrying the same session cookie, to
        // separate what checking a session costs from what carrying its bytes costs.
        (
            "no auth + same cookie",
            format!("{origin}/noauth/"),
            Some(format!("Cookie: {cookie}")),
        ),
        // A browser without a session: the redirect to the IdP, with a sealed login cookie
        // (state, nonce, PKCE) made for every request.
        (
            "sign-in redirect (302)",
            format!("{origin}/session/"),
            Some("Accept: text/html".to_owned()),
        ),
        // The session route with a two-clause `allow_if` (CEL) rule.
        (
            "gateway, session + allow_if",
            format!("{origin}/policy/"),
            Some(format!("Cookie: {cookie}")),
        ),
    ];
    // Every target must answer as expected before it is measured.
    for (name, url, header) in &targets {
        let expected = if name.contains("302") { 302 } else { 200 };
        assert_eq!(
            status_of(url, header.as_deref()).await,
            expected,
            "{name} does not answer {expected}"
        );
    }

    if o.profile {
        let gw = gateway.0.id();
        let subject = |t: &Target, pid: u32| profile::Subject {
            name: t.0,
            url: t.1.clone(),
            header: t.2.clone(),
            pid,
        };
        let subjects = [
            subject(&targets[0], nginx_pid),
            subject(&targets[1], bare_pid),
            subject(&targets[2], gw),
            subject(&targets[3], gw),
        ];
        let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/profiles");
        let mut costs = profile::profile(&subjects, o.seconds, &out);
        // The session route again with the Redis store asked on every request (`0s`): the
        // gateway's own processes only (Redis's CPU is the Redis server's).
        let [redis_port] = free_ports();
        let _redis = start_redis(d, redis_port);
        drop(gateway);
        std::fs::write(&config, redis_gateway_config(d, &p, redis_port, "0s")).unwrap();
        let gateway = spawn(
            Command::new(BIN).args(["run", "--config"]).arg(&config),
            &d.join("gateway-redis-0s.log"),
        );
        wait_port(p.gateway, "gateway (Redis store)");
        wait_discovered(&origin).await;
        let redis_cookie = login(&origin, "/session/").await;
        let redis_subject = profile::Subject {
            name: "gateway, session (Redis 0s)",
            url: format!("{origin}/session/"),
            header: Some(format!("Cookie: {redis_cookie}")),
            pid: gateway.0.id(),
        };
        costs.extend(profile::profile(&[redis_subject], o.seconds, &out));
        profile::print_costs(&costs, o.seconds, &out);
        return;
    }

    if let Some(secs) = o.hold {
        println!("gateway pid {}", gateway.0.id());
        for (name, url, header) in &targets {
            println!(
                "{name}: wrk -t2 -c50 -d10s --latency {} {url}",
                header
                    .as_ref()
                    .map(|h| format!("-H '{h}'"))
                    .unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_secs(secs)).await;
        return;
    }

    let med = measure_rounds(&targets, o);
    let peak_rss = peak_rss_kib(gateway.0.id());

    // The same ratios from paired runs (see `paired`), always two processes: the first two
    // pairs (a process against its twin) show the method's noise.
    let pair_seconds = if o.quick { 1 } else { 6 };
    let bare2: Target = (
        "second bare Pingora",
        format!("http://127.0.0.1:{}/", p.bare2),
        None,
    );
    let noauth2: Target = (
        "second gateway, no auth",
        format!("{origin2}/noauth/"),
        None,
    );
    // The twin's session route: the same cookie store and secrets, so the same cookie.
    let session2: Target = (
        "second gateway, session",
        format!("{origin2}/session/"),
        targets[3].2.clone(),
    );
    o.warm_up(wrk, &bare2.1, None);
    o.warm_up(wrk, &noauth2.1, None);
    o.warm_up(wrk, &session2.1, session2.2.as_deref());
    let pair = |a: &Target, b: &Target| paired(a, b, o.rounds, pair_seconds, o.connections);
    let mut pairs: Vec<Ratio> = vec![
        ("bare Pingora / its twin", pair(&targets[1], &bare2), None),
        ("no-auth / its twin", pair(&targets[2], &noauth2), None),
        ("session / no-auth", pair(&targets[3], &noauth2), Some(0.95)),
        ("bearer / no-auth", pair(&targets[4], &noauth2), Some(0.90)),
        ("session / its twin", pair(&targets[3], &session2), None),
        (
            "session + allow_if / session",
            pair(&targets[7], &session2),
            Some(0.97),
        ),
        ("sign-in 302 / no-auth", pair(&targets[6], &noauth2), None),
        (
            "no-auth + cookie / no-auth",
            pair(&targets[5], &noauth2),
            None,
        ),
        (
            "no-auth / bare Pingora",
            pair(&targets[2], &targets[1]),
            Some(1.0),
        ),
        (
            "no-auth / nginx",
            pair(&targets[2], &targets[0]),
            Some(0.60),
        ),
    ];

    // The same gateway with the memory store: the session cookie is a 43-byte id instead of
    // the sealed session, which separates the cost of checking a session from that of carrying
    // a few kilobytes of cookie on every request.
    drop(gateway);
    std::fs::write(&config, gateway_config(d, &p, "memory")).unwrap();
    gateway = spawn(
        Command::new(BIN).args(["run", "--config"]).arg(&config),
        &d.join("gateway-memory.log"),
    );
    wait_port(p.gateway, "gateway (memory store)");
    wait_discovered(&origin).await;
    let memory_cookie = login(&origin, "/session/").await;
    let memory_targets: [Target; 2] = [
        ("memory store, no auth", format!("{origin}/noauth/"), None),
        (
            "gateway, session (memory)",
            format!("{origin}/session/"),
            Some(format!("Cookie: {memory_cookie}")),
        ),
    ];
    let memory_med = measure_rounds(&memory_targets, o);
    // Its partner: the second gateway's no-auth route (the store plays no part there).
    let memory_paired = pair(&memory_targets[1], &noauth2);

    let (logins_per_sec, gateway_ms_per_login) = logins(&origin, &p, o.logins).await;
    let memory = memory_report(&o.session_counts);
    pairs.push(("session / no-auth, memory st.", memory_paired, Some(0.95)));

    // The Redis store, with its local cache and without (every request asks Redis).
    let [redis_port] = free_ports();
    let _redis = start_redis(d, redis_port);
    let mut redis_figures = Vec::new();
    for (label, ttl, target) in [
        ("session / no-auth, redis st.", "5s", 0.95),
        ("session / no-auth, redis 0s", "0s", 0.70),
    ] {
        drop(gateway);
        std::fs::write(&config, redis_gateway_config(d, &p, redis_port, ttl)).unwrap();
        gateway = spawn(
            Command::new(BIN).args(["run", "--config"]).arg(&config),
            &d.join(format!("gateway-redis-{ttl}.log")),
        );
        wait_port(p.gateway, "gateway (Redis store)");
        wait_discovered(&origin).await;
        let cookie = login(&origin, "/session/").await;
        let t: Target = (
            "gateway, session (redis)",
            format!("{origin}/session/"),
            Some(format!("Cookie: {cookie}")),
        );
        o.warm_up(wrk, &t.1, t.2.as_deref());
        let before = redis_calls(redis_port);
        let run = wrk(&t.1, t.2.as_deref(), o.seconds, o.connections);
        assert_eq!(run.errors, 0, "{label}: errors");
        let per_request = (redis_calls(redis_port) - before) as f64 / run.requests.max(1) as f64;
        pairs.push((label, pair(&t, &noauth2), Some(target)));
        redis_figures.push((ttl, cookie.len(), run.rps, per_request));
    }
    // Tracing on, every request sampled: what it costs a request with and without a session.
    let (sink, sink_counts) = start_sink().await;
    drop(gateway);
    std::fs::write(&config, traced_gateway_config(d, &p, &sink)).unwrap();
    gateway = spawn(
        Command::new(BIN).args(["run", "--config"]).arg(&config),
        &d.join("gateway-traced.log"),
    );
    wait_port(p.gateway, "gateway (traced)");
    wait_discovered(&origin).await;
    let traced_cookie = login(&origin, "/session/").await;
    let traced: [Target; 2] = [
        ("gateway traced, no auth", format!("{origin}/noauth/"), None),
        (
            "gateway traced, session",
            format!("{origin}/session/"),
            Some(format!("Cookie: {traced_cookie}")),
        ),
    ];
    for t in &traced {
        o.warm_up(wrk, &t.1, t.2.as_deref());
    }
    pairs.push(("no-auth traced / no-auth", pair(&traced[0], &noauth2), None));
    pairs.push(("session traced / no-auth", pair(&traced[1], &noauth2), None));
    // Give the exporter a moment to send its last batches.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let exported = (
        sink_counts.posts.load(std::sync::atomic::Ordering::Relaxed),
        sink_counts.bytes.load(std::sync::atomic::Ordering::Relaxed),
    );
    assert!(exported.0 > 0, "the traced gateway exported nothing");

    // A flood of sign-in starts from one address, past its limit: what the 429 costs.
    drop(gateway);
    std::fs::write(
        &config,
        gateway_config(d, &p, "cookie").replace("login_rate_limit = 0", "login_rate_limit = 5"),
    )
    .unwrap();
    gateway = spawn(
        Command::new(BIN).args(["run", "--config"]).arg(&config),
        &d.join("gateway-limited.log"),
    );
    wait_port(p.gateway, "gateway (sign-in limit)");
    // Not `wait_discovered`: its requests would spend the limit.
    wait_ready(p.metrics).await;
    let flood: Target = (
        "sign-in flood (429)",
        format!("{origin}/session/"),
        Some("Accept: text/html".to_owned()),
    );
    let limit_spent = |r: &Wrk| r.requests > 0 && r.requests - r.errors.min(r.requests) <= 10;
    o.warm_up(wrk, &flood.1, flood.2.as_deref());
    let flood_run = wrk(&flood.1, flood.2.as_deref(), o.seconds, o.connections);
    assert!(
        limit_spent(&flood_run),
        "the flood was not refused: {flood_run:?}"
    );
    assert_eq!(status_of(&flood.1, flood.2.as_deref()).await, 429);
    pairs.push((
        "sign-in 429 / no-auth",
        paired_load(
            wrk_one_thread,
            &flood,
            &noauth2,
            o.rounds,
            pair_seconds,
            o.connections,
            limit_spent,
        ),
        None,
    ));

    // The edge rows: TLS, HTTP/2, handshakes and forward-auth, each against nginx.
    let [gateway_tls, nginx_tls, nginx_auth] = free_ports();
    let e = EdgePorts {
        gateway_tls,
        nginx_tls,
        nginx_auth,
    };
    let (cert, key) = certificate(d);
    drop(gateway);
    std::fs::write(&config, edge_gateway_config(d, &p, &e, &cert, &key)).unwrap();
    gateway = spawn(
        Command::new(BIN).args(["run", "--config"]).arg(&config),
        &d.join("gateway-edge.log"),
    );
    let edge_nginx = start_edge_nginx(d, &p, &e, &cert, &key);
    for (port, what) in [
        (p.gateway, "gateway (edge)"),
        (e.gateway_tls, "gateway TLS"),
        (e.nginx_tls, "nginx TLS"),
        (e.nginx_auth, "nginx forward-auth"),
    ] {
        wait_port(port, what);
    }
    wait_discovered(&origin).await;
    let edge_cookie = Some(format!("Cookie: {}", login(&origin, "/session/").await));
    let (gw, ngx) = (gateway.0.id(), edge_nginx.0.id());
    let tls = |port: u16, path: &str| format!("https://127.0.0.1:{port}{path}");
    let edge_rows = [
        ("HTTPS keep-alive", "nginx, HTTPS", wrk as Load, Some(1.3)),
        (
            "HTTP/2 over TLS (h2load)",
            "nginx, HTTP/2",
            h2load as Load,
            None,
        ),
        (
            "new TLS connections",
            "nginx, new TLS connections",
            wrk_new_connections as Load,
            None,
        ),
    ]
    .map(|(what, nginx, load, cpu_goal)| EdgeRow {
        what,
        load,
        gateway: (what, tls(e.gateway_tls, "/noauth/"), None),
        gateway_pids: vec![gw],
        nginx: (nginx, tls(e.nginx_tls, "/"), None),
        nginx_pids: vec![ngx],
        cpu_goal,
    });
    let auth_row = EdgeRow {
        what: "forward-auth (session)",
        load: wrk,
        gateway: (
            "gateway, session",
            format!("{origin}/session/"),
            edge_cookie.clone(),
        ),
        gateway_pids: vec![gw],
        nginx: (
            "nginx auth_request + gateway",
            format!("http://127.0.0.1:{}/", e.nginx_auth),
            edge_cookie,
        ),
        nginx_pids: vec![ngx, gw],
        cpu_goal: None,
    };
    for row in edge_rows.iter().chain([&auth_row]) {
        for t in [&row.gateway, &row.nginx] {
            if row.what.contains("h2load") {
                continue;
            }
            assert_eq!(
                status_of(&t.1, t.2.as_deref()).await,
                200,
                "{}: {}",
                row.what,
                t.0
            );
        }
    }
    let mut all_rows: Vec<EdgeRow> = edge_rows.into();
    all_rows.push(auth_row);
    let edge_figures = measure_edge(&all_rows, o, pair_seconds);
    drop(edge_nginx);

    let redis_sessions = if o.quick { 2_000 } else { 100_000 };
    let redis_bytes = redis_session_memory(redis_port, redis_sessions).await;

    print_report(&Results {
        opts: o,
        targets: &targets,
        med: &med,
        memory_med: &memory_med,
        cookie_len: cookie.len(),
        memory_cookie_len: memory_cookie.len(),
        pairs: &pairs,
        pair_seconds,
        peak_rss_kib: peak_rss,
        logins_per_sec,
        gateway_ms_per_login,
        memory: &memory,
    });
    print_edge(&edge_figures, !o.quick);
    println!(
        "sign-in flood past the limit: {:.0} req/s of 429, p99 {:.2} ms",
        flood_run.rps, flood_run.p99_ms
    );
    for (ttl, cookie_len, rps, per_request) in redis_figures {
        println!(
            "redis store, local_cache_ttl = {ttl}: {rps:.0} req/s, cookie {cookie_len} bytes, {per_request:.4} Redis commands per request"
        );
    }
    println!(
        "tracing on: {} OTLP exports, {:.1} MiB of spans",
        exported.0,
        exported.1 as f64 / (1024.0 * 1024.0)
    );
    println!(
        "redis store: {redis_sessions} sessions take {redis_bytes:.0} bytes of Redis memory each ({:.0} MiB)",
        redis_bytes * redis_sessions as f64 / (1024.0 * 1024.0)
    );
    drop(gateway);
}
