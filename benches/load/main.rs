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
mod flows;
mod memory;
mod processes;
mod report;
mod wrk;

use flows::*;
use memory::*;
use processes::*;
use report::*;
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
    quick: bool,
    seconds: u32,
    rounds: usize,
    connections: u32,
    logins: usize,
    session_counts: Vec<usize>,
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
    let opts = if quick {
        Opts {
            hold,
            quick,
            seconds: 1,
            rounds: 1,
            connections: 50,
            logins: 10,
            session_counts: vec![10_000],
        }
    } else {
        Opts {
            hold,
            quick,
            seconds: 10,
            rounds: 5,
            connections: 50,
            logins: 200,
            session_counts: vec![100_000, 1_000_000],
        }
    };
    for tool in ["wrk", "nginx"] {
        let found = Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {tool}"))
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            found,
            "{tool} is required (Debian packages wrk and nginx-light; .ci/run installs them)"
        );
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

    let _nginx = start_nginx(d, &p);
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
    std::fs::write(&config, gateway_config(d, &p, "cookie")).unwrap();
    let mut gateway = spawn(
        Command::new(BIN).args(["run", "--config"]).arg(&config),
        &d.join("gateway.log"),
    );
    // A second, identical gateway (same secrets, so it accepts the same cookies): the partner
    // in paired runs, so a route is never paired with another route of the same process.
    let config2 = d.join("gateway2.toml");
    let text2 = gateway_config(d, &p, "cookie")
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
    ];
    // Every target must answer 200 before it is measured.
    for (name, url, header) in &targets {
        let mut req = reqwest::Client::new().get(url);
        if let Some((k, v)) = header.as_deref().and_then(|h| h.split_once(": ")) {
            req = req.header(k, v);
        }
        let status = req.send().await.unwrap().status();
        assert_eq!(status, 200, "{name} does not answer 200");
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

    // Warm up connections and caches, then measure in rounds (targets interleaved).
    for (_, url, header) in &targets {
        wrk(url, header.as_deref(), 1, o.connections);
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
    let peak_rss = peak_rss_kib(gateway.0.id());
    let med: Vec<Wrk> = results.iter().map(|rs| median(rs)).collect();

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
    wrk(&bare2.1, None, 1, o.connections);
    wrk(&noauth2.1, None, 1, o.connections);
    let pair = |a: &Target, b: &Target| paired(a, b, o.rounds, pair_seconds, o.connections);
    let mut pairs: Vec<Ratio> = vec![
        ("bare Pingora / its twin", pair(&targets[1], &bare2), None),
        ("no-auth / its twin", pair(&targets[2], &noauth2), None),
        ("session / no-auth", pair(&targets[3], &noauth2), Some(0.95)),
        ("bearer / no-auth", pair(&targets[4], &noauth2), Some(0.90)),
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
    let memory_targets = [
        (format!("{origin}/noauth/"), None),
        (
            format!("{origin}/session/"),
            Some(format!("Cookie: {memory_cookie}")),
        ),
    ];
    for (url, header) in &memory_targets {
        wrk(url, header.as_deref(), 1, o.connections);
    }
    let mut memory_results: Vec<Vec<Wrk>> = vec![Vec::new(); 2];
    for _ in 0..o.rounds {
        for (i, (url, header)) in memory_targets.iter().enumerate() {
            let r = wrk(url, header.as_deref(), o.seconds, o.connections);
            assert_eq!(
                r.errors, 0,
                "memory store: {} non-2xx/3xx responses or socket errors",
                r.errors
            );
            memory_results[i].push(r);
        }
    }
    let memory_med: Vec<Wrk> = memory_results.iter().map(|rs| median(rs)).collect();
    // Its partner: the second gateway's no-auth route (the store plays no part there).
    let memory_session: Target = (
        "gateway, session (memory)",
        memory_targets[1].0.clone(),
        memory_targets[1].1.clone(),
    );
    let memory_paired = pair(&memory_session, &noauth2);

    let (logins_per_sec, gateway_ms_per_login) = logins(&origin, &p, o.logins).await;
    let memory = memory_report(&o.session_counts);

    println!();
    println!(
        "oidc-gateway load benchmark — {} round(s) x {} s per target, wrk -t2 -c{}, all on 127.0.0.1{}",
        o.rounds,
        o.seconds,
        o.connections,
        if o.quick {
            " (QUICK MODE: a smoke test, not a measurement)"
        } else {
            ""
        }
    );
    println!(
        "{:<22} {:>10} {:>10} {:>10}",
        "target", "req/s", "p50", "p99"
    );
    for ((name, _, _), r) in targets.iter().zip(&med) {
        println!(
            "{name:<22} {:>10.0} {:>8.2}ms {:>8.2}ms",
            r.rps, r.p50_ms, r.p99_ms
        );
    }
    let (nginx, bare, noauth, session, bearer) = (&med[0], &med[1], &med[2], &med[3], &med[4]);
    println!();
    println!(
        "ratios (same run){}:",
        if o.quick {
            " — quick mode, debug build: not judged"
        } else {
            ""
        }
    );
    report_ratios(
        &[
            ("session / no-auth", session.rps / noauth.rps, Some(0.95)),
            ("bearer / no-auth", bearer.rps / noauth.rps, Some(0.90)),
            ("no-auth / nginx", noauth.rps / nginx.rps, Some(0.60)),
            ("no-auth / bare Pingora", noauth.rps / bare.rps, Some(1.0)),
            ("session / no-auth + cookie", session.rps / med[5].rps, None),
            (
                "session / no-auth, memory st.",
                memory_med[1].rps / memory_med[0].rps,
                Some(0.95),
            ),
        ],
        !o.quick,
    );
    println!(
        "  (session cookie: {} bytes with the cookie store, {} with the memory store)",
        cookie.len(),
        memory_cookie.len()
    );
    let dp99 = session.p99_ms - noauth.p99_ms;
    println!(
        "  {:<30} {:>+6.2} ms  (target <= 1 ms) {}",
        "p99 session - p99 no-auth",
        dp99,
        if o.quick { "" } else { mark(dp99 <= 1.0) }
    );
    println!(
        "paired ratios: two processes loaded at the same moment (wrk -t1 -c{} each), median of \
         {} x {} s; a route of one gateway is paired with the no-auth route of its twin:",
        o.connections / 2,
        o.rounds,
        pair_seconds
    );
    pairs.push(("session / no-auth, memory st.", memory_paired, Some(0.95)));
    report_ratios(&pairs, !o.quick);
    println!("gateway peak RSS: {:.1} MiB", peak_rss as f64 / 1024.0);
    println!(
        "logins: {logins_per_sec:.0}/s end to end with the dev IdP ({} logins, 4 at a time); gateway time per login net of IdP calls: {gateway_ms_per_login:.2} ms",
        o.logins
    );
    print_memory(&memory);
    drop(gateway);
}
