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

/// `N` distinct free ports: each is held until all are chosen, as the kernel may hand a
/// just-released port out again.
fn free_ports<const N: usize>() -> [u16; N] {
    let held: Vec<std::net::TcpListener> = (0..N)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    std::array::from_fn(|i| held[i].local_addr().unwrap().port())
}

fn wait_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} did not start on port {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Stops its process when dropped, so an assertion never leaves servers behind. SIGTERM first:
/// an nginx master killed outright would leave its workers running.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(cmd: &mut Command, log: &Path) -> Proc {
    let out = std::fs::File::create(log).unwrap();
    Proc(
        cmd.stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out))
            .spawn()
            .unwrap(),
    )
}

#[derive(Default)]
struct Ports {
    upstream: u16,
    nginx: u16,
    bare: u16,
    bare2: u16,
    gateway: u16,
    idp: u16,
    metrics: u16,
    gateway2: u16,
    metrics2: u16,
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

/// One line of a ratio table: what, the ratio, its target (`None`: a control or a calibration).
type Ratio = (&'static str, f64, Option<f64>);

fn report_ratios(rows: &[Ratio], judged: bool) {
    for &(what, ratio, target) in rows {
        let (target, verdict) = match target {
            Some(t) => (
                format!(">= {t:.2}"),
                if judged { mark(ratio >= t) } else { "" },
            ),
            None if what.contains("twin") => ("1.00: the method's noise".to_owned(), ""),
            None => ("none; a control".to_owned(), ""),
        };
        println!("  {what:<30} {ratio:>6.2}x     (target {target}) {verdict}");
    }
}

fn mark(ok: bool) -> &'static str {
    if ok { "ok" } else { "MISSED" }
}

fn start_nginx(dir: &Path, p: &Ports) -> Proc {
    let conf = format!(
        r#"daemon off;
worker_processes 2;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {dir}/body;
  proxy_temp_path {dir}/proxy;
  upstream backend {{ server 127.0.0.1:{up}; keepalive 64; }}
  server {{ listen 127.0.0.1:{up}; location / {{ return 200 "hello from the upstream\n"; }} }}
  server {{
    listen 127.0.0.1:{px};
    location / {{ proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; }}
  }}
}}
"#,
        dir = dir.display(),
        up = p.upstream,
        px = p.nginx
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).unwrap();
    spawn(
        Command::new("nginx")
            .arg("-c")
            .arg(&path)
            .arg("-p")
            .arg(dir),
        &dir.join("nginx.log"),
    )
}

fn gateway_config(dir: &Path, p: &Ports, store: &str) -> String {
    format!(
        r#"[server]
listen = ["127.0.0.1:{gw}"]
pid_file = "{dir}/gw.pid"
upgrade_socket = "{dir}/gw.sock"
grace_period = "1s"

[metrics]
listen = "127.0.0.1:{metrics}"

[session]
store = "{store}"
secrets = ["{SESSION_SECRET}"]

[[providers]]
name = "dev"
issuer = "http://127.0.0.1:{idp}"
client_id = "demo"
client_secret = "{CLIENT_SECRET}"
redirect_uri = "http://127.0.0.1:{gw}/oauth2/callback"

[[upstreams]]
name = "up"
targets = ["127.0.0.1:{up}"]

[[routes]]
name = "noauth"
paths = ["/noauth"]
upstream = "up"

[[routes]]
name = "session"
paths = ["/session"]
upstream = "up"
auth = {{ provider = "dev" }}

[[routes]]
name = "bearer"
paths = ["/bearer"]
upstream = "up"
auth = {{ provider = "dev", methods = ["bearer"], audience_required = ["demo-api"] }}
"#,
        dir = dir.display(),
        gw = p.gateway,
        metrics = p.metrics,
        idp = p.idp,
        up = p.upstream
    )
}

fn client(jar: bool) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10));
    if jar {
        b = b.cookie_store(true);
    }
    b.build().unwrap()
}

async fn wait_discovered(origin: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = client(false)
            .get(format!("{origin}/session/"))
            .header("Accept", "text/html")
            .send()
            .await
            .unwrap();
        if r.status() == 302 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the gateway never discovered the dev IdP"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One full authorization-code login as alice; returns the gateway's session cookie header.
async fn login(origin: &str, path: &str) -> String {
    let c = client(true);
    let start = c
        .get(format!("{origin}{path}"))
        .header("Accept", "text/html")
        .send()
        .await
        .unwrap();
    let authorize = location(&start);
    let form = c
        .get(&authorize)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let request = form
        .split("name=\"request\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("login form");
    let idp_origin = authorize.split("/authorize").next().unwrap().to_owned();
    let after = c
        .post(format!("{idp_origin}/login"))
        .form(&[
            ("request", request),
            ("username", "alice"),
            ("password", "wonderland"),
        ])
        .send()
        .await
        .unwrap();
    let callback = location(&after);
    let back = c.get(&callback).send().await.unwrap();
    assert_eq!(back.status(), 302, "callback failed");
    let cookies: Vec<String> = back
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok()?.split(';').next().map(str::to_owned))
        .filter(|c| c.starts_with("oidc_session") && !c.contains("_login_"))
        .collect();
    assert!(!cookies.is_empty(), "no session cookie");
    cookies.join("; ")
}

fn location(r: &reqwest::Response) -> String {
    r.headers()
        .get("location")
        .expect("a redirect")
        .to_str()
        .unwrap()
        .to_owned()
}

async fn mint_token(idp: &str) -> String {
    let v: serde_json::Value = client(false)
        .post(format!("{idp}/token"))
        .basic_auth("demo-api-client", Some("demo-api-secret"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("resource", "demo-api"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["access_token"].as_str().expect("a token").to_owned()
}

#[derive(Clone, Debug)]
struct Wrk {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    requests: u64,
    errors: u64,
}

fn wrk(url: &str, header: Option<&str>, seconds: u32, connections: u32) -> Wrk {
    wrk_threads(2, url, header, seconds, connections)
}

/// The median over `rounds` of `a`'s req/s divided by `b`'s, both loaded **at the same moment**
/// (one `wrk` thread and half the connections each). Both then meet the same machine state, so
/// the ratio measures what a request costs each of them; on this shared VM back-to-back runs of
/// one target vary by ±20%, a pair by about ±5%.
fn paired(a: &Target, b: &Target, rounds: usize, seconds: u32, connections: u32) -> f64 {
    let mut ratios: Vec<f64> = (0..rounds)
        .map(|_| {
            let (ra, rb) = std::thread::scope(|s| {
                let one = move |t: &Target| {
                    wrk_threads(1, &t.1, t.2.as_deref(), seconds, connections / 2)
                };
                let ha = s.spawn(move || one(a));
                let hb = s.spawn(move || one(b));
                (ha.join().unwrap(), hb.join().unwrap())
            });
            for (t, r) in [(a, &ra), (b, &rb)] {
                assert!(
                    r.errors == 0 && r.requests > 0,
                    "{}: {} errors, {} requests in a paired run",
                    t.0,
                    r.errors,
                    r.requests
                );
            }
            ra.rps / rb.rps
        })
        .collect();
    ratios.sort_by(f64::total_cmp);
    ratios[ratios.len() / 2]
}

/// A load target: name, URL and an optional header line.
type Target = (&'static str, String, Option<String>);

fn wrk_threads(
    threads: u32,
    url: &str,
    header: Option<&str>,
    seconds: u32,
    connections: u32,
) -> Wrk {
    let mut cmd = Command::new("wrk");
    cmd.args([
        &format!("-t{threads}"),
        &format!("-c{connections}"),
        &format!("-d{seconds}s"),
        "--latency",
    ]);
    if let Some(h) = header {
        cmd.args(["-H", h]);
    }
    let out = cmd.arg(url).output().expect("run wrk");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let field = |prefix: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix).map(|v| v.trim().to_owned()))
    };
    let ms = |v: &str| {
        let (num, unit) = v.split_at(v.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(v.len()));
        let n: f64 = num.parse().unwrap_or(f64::NAN);
        match unit {
            "us" => n / 1000.0,
            "ms" => n,
            "s" => n * 1000.0,
            _ => f64::NAN,
        }
    };
    let socket_errors: u64 = field("Socket errors:")
        .map(|s| {
            s.split(',')
                .filter_map(|p| p.split_whitespace().last()?.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    Wrk {
        rps: field("Requests/sec:")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0),
        p50_ms: field("50%").map_or(f64::NAN, |v| ms(&v)),
        p99_ms: field("99%").map_or(f64::NAN, |v| ms(&v)),
        requests: text
            .lines()
            .find(|l| l.contains("requests in"))
            .and_then(|l| l.split_whitespace().next()?.parse().ok())
            .unwrap_or(0),
        errors: field("Non-2xx or 3xx responses:")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
            + socket_errors,
    }
}

fn median(rs: &[Wrk]) -> Wrk {
    let mut sorted = rs.to_vec();
    sorted.sort_by(|a, b| a.rps.total_cmp(&b.rps));
    sorted[sorted.len() / 2].clone()
}

fn peak_rss_kib(pid: u32) -> u64 {
    let mut s = String::new();
    let _ = std::fs::File::open(format!("/proc/{pid}/status"))
        .and_then(|mut f| f.read_to_string(&mut s));
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Logins per second (4 at a time), and the gateway's own time per login: its callback
/// latency minus the time its calls to the IdP took, both from its metrics.
async fn logins(origin: &str, p: &Ports, n: usize) -> (f64, f64) {
    let metrics_url = format!("http://127.0.0.1:{}/metrics", p.metrics);
    let before = scrape(&metrics_url).await;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..4 {
        let origin = origin.to_owned();
        tasks.push(tokio::spawn(async move {
            for i in (w..n).step_by(4) {
                login(&origin, &format!("/session/{i}")).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let per_sec = n as f64 / start.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = scrape(&metrics_url).await;
    let delta = |series: &str| sum_series(&after, series) - sum_series(&before, series);
    let callback_seconds =
        delta("oidc_gateway_http_request_duration_seconds_sum{route=\"_gateway\"}");
    let idp_seconds = delta("oidc_gateway_idp_request_duration_seconds_sum{endpoint=\"token\"")
        + delta("oidc_gateway_idp_request_duration_seconds_sum{endpoint=\"userinfo\"");
    (
        per_sec,
        (callback_seconds - idp_seconds) * 1000.0 / n as f64,
    )
}

async fn scrape(url: &str) -> String {
    client(false)
        .get(url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Sum of every sample whose line starts with `prefix` (labels may follow).
fn sum_series(metrics: &str, prefix: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Resident memory of `n` memory-store sessions shaped like the dev IdP's (ES256 tokens),
/// measured in this process: (MiB, bytes per session).
fn b64(bytes: &[u8]) -> String {
    base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, bytes)
}

/// Session `i`'s ID token, access token and claims, shaped like the dev IdP's (ES256, the same
/// claims, a nonce, a `jti` and signatures of their own; the store never checks signatures, so
/// these are random bytes).
fn dev_idp_tokens(
    i: usize,
    now: u64,
) -> (String, String, serde_json::Map<String, serde_json::Value>) {
    use oidc_gateway::crypto::random_bytes;
    let sub = format!("user-{i:08}");
    let identity = serde_json::json!({
        "sub": sub, "email": format!("{sub}@example.com"), "email_verified": true,
        "name": format!("User {i}"), "preferred_username": sub, "groups": ["admins", "readers"],
        "auth_time": now - (i as u64 % 3600),
    });
    let mut id = identity.clone();
    id["iss"] = "http://127.0.0.1:8081".into();
    id["aud"] = "demo".into();
    id["nonce"] = b64(&random_bytes::<16>()).into();
    id["iat"] = now.into();
    id["exp"] = (now + 3600).into();
    let access = serde_json::json!({
        "iss": "http://127.0.0.1:8081", "sub": sub, "aud": "demo", "client_id": "demo",
        "scope": "openid email profile", "iat": now, "exp": now + 300,
        "jti": b64(&random_bytes::<12>()),
    });
    let jws = |header: &str, payload: &serde_json::Value| {
        format!(
            "{}.{}.{}",
            b64(header.as_bytes()),
            b64(payload.to_string().as_bytes()),
            b64(&random_bytes::<64>())
        )
    };
    let mut claims = identity.as_object().unwrap().clone();
    claims.insert("scope".into(), "openid email profile".into());
    (
        jws(r#"{"alg":"ES256","kid":"dev-bEXXlQHX","typ":"JWT"}"#, &id),
        jws(
            r#"{"typ":"at+jwt","alg":"ES256","kid":"dev-bEXXlQHX"}"#,
            &access,
        ),
        claims,
    )
}

fn session_memory(n: usize, idle: bool) -> f64 {
    use oidc_gateway::auth::identity;
    use oidc_gateway::config::{SameSite, Secret, SessionSettings, SessionStoreKind};
    use oidc_gateway::crypto::random_bytes;
    use oidc_gateway::session::store::SessionStore;
    use oidc_gateway::session::{SessionData, now};
    let settings = SessionSettings {
        store: SessionStoreKind::Memory {
            max_sessions: n + 1,
        },
        secrets: vec![Secret::new(SESSION_SECRET)],
        cookie_name: "s".into(),
        cookie_path: "/".into(),
        cookie_domain: None,
        same_site: SameSite::Lax,
        rolling_timeout: Duration::from_secs(3600),
        idling_timeout: Duration::from_secs(3600),
        absolute_timeout: Duration::from_secs(86400),
        cache_size: 0,
        login_timeout: Duration::from_secs(600),
        max_login_cookies: 5,
        userinfo_path: "/oauth2/userinfo".into(),
    };
    let store = SessionStore::new(&settings);
    // The provider settings of the benchmark's gateway: its upstream headers are what a
    // session's first request builds and keeps.
    let config = oidc_gateway::config::Config::parse(
        &gateway_config(Path::new("/tmp"), &Ports::default(), "memory"),
        Path::new("gateway.toml"),
    )
    .unwrap();
    let provider = &config.providers[0];
    let before = resident_bytes();
    let now = now();
    for i in 0..n {
        let (id_token, access_token, claims) = dev_idp_tokens(i, now);
        let data = SessionData {
            provider: "dev".into(),
            sub: format!("user-{i:08}").into(),
            claims: oidc_gateway::session::Claims::derive(&id_token, claims),
            id_token: id_token.as_str().into(),
            access_token: access_token.as_str().into(),
            expires_at: Some(now + 300),
            refresh_token: Some(b64(&random_bytes::<32>()).into()),
            created_at: now,
            renewed_at: now,
        };
        let (session, _) = store.create(data).unwrap();
        // Its first request (the redirect after login), as `OidcAuth::identify` does it.
        session
            .upstream_headers
            .get_or_init(|| identity::session_headers(provider, &session).into());
        drop(session);
        // A minute later the sweeper slims it; sweeping in batches lets later sessions reuse
        // what earlier ones gave back, as in a running gateway.
        if idle && (i + 1) % 10_000 == 0 {
            store.sweep(now + 61);
        }
    }
    if idle {
        store.sweep(now + 61);
    }
    let grown = resident_bytes().saturating_sub(before) as f64;
    assert_eq!(store.len(), n);
    grown / n as f64
}

/// `session_memory` in a fresh process (`--memory-child`), so no measurement inherits memory
/// an earlier one freed: bytes per session.
fn session_memory_alone(n: usize, idle: bool) -> f64 {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--memory-child",
            &n.to_string(),
            if idle { "idle" } else { "active" },
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim().parse().unwrap_or_else(|_| {
        panic!(
            "memory measurement failed: {text} {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Memory-store sessions, each used once: (count, bytes each once idle, bytes each while all
/// are active).
type Memory = (usize, f64, f64);

fn memory_report(counts: &[usize]) -> Vec<Memory> {
    counts
        .iter()
        .map(|&n| {
            (
                n,
                session_memory_alone(n, true),
                session_memory_alone(n, false),
            )
        })
        .collect()
}

fn print_memory(memory: &[Memory]) {
    for &(n, idle, active) in memory {
        let mib = |per: f64| per * n as f64 / (1024.0 * 1024.0);
        println!(
            "memory store: {n} sessions, each used once: {idle:.0} bytes per session once idle ({:.0} MiB), {active:.0} while all were active in the last minute ({:.0} MiB)",
            mib(idle),
            mib(active)
        );
    }
}

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages * 4096
}
