//! The rows an edge proxy really serves, each against nginx on the same certificate and
//! upstream: HTTPS with keep-alive (`wrk`), HTTP/2 over TLS (`h2load`), new TLS connections
//! (`wrk` with `Connection: close`: one handshake per request), and forward-auth (nginx's
//! `auth_request` to the gateway's decision, running the shipped snippet, against the gateway
//! proxying itself).

use super::*;

/// The ports of the edge rows.
pub struct EdgePorts {
    /// The gateway's TLS listener.
    pub gateway_tls: u16,
    /// nginx with TLS (HTTP/1.1 and h2 by ALPN), proxying to the upstream.
    pub nginx_tls: u16,
    /// nginx running `conf/forward-auth/nginx.conf` in front of the gateway.
    pub nginx_auth: u16,
}

/// A self-signed certificate for 127.0.0.1 (ECDSA P-256, as both servers get it), as PEM files.
pub fn certificate(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let key = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let (cert, pem) = (dir.join("edge-cert.pem"), dir.join("edge-key.pem"));
    std::fs::write(&cert, key.cert.pem()).unwrap();
    std::fs::write(&pem, key.signing_key.serialize_pem()).unwrap();
    (cert, pem)
}

/// The gateway's configuration with a TLS listener and a forward-auth decision added.
pub fn edge_gateway_config(d: &Path, p: &Ports, e: &EdgePorts, cert: &Path, key: &Path) -> String {
    gateway_config(d, p, "cookie").replace(
        "[metrics]",
        &format!(
            "[[server.tls]]\nlisten = \"127.0.0.1:{}\"\ncert = \"{}\"\nkey = \"{}\"\n\n\
             [[forward_auth]]\nauth = {{ provider = \"dev\" }}\n\n[metrics]",
            e.gateway_tls,
            cert.display(),
            key.display()
        ),
    )
}

/// nginx with the TLS listener and the forward-auth site.
pub fn start_edge_nginx(d: &Path, p: &Ports, e: &EdgePorts, cert: &Path, key: &Path) -> Proc {
    let snippet = include_str!("../../conf/forward-auth/nginx.conf")
        .replace("127.0.0.1:4180", &format!("127.0.0.1:{}", p.gateway))
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{}", p.upstream));
    let http = format!(
        r#"# As the gateway: no cap on requests per connection (nginx's 1000 would end each h2load
  # client's connection, which h2load counts as errors and does not reopen).
  keepalive_requests 100000000;
  upstream backend {{ server 127.0.0.1:{up}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{tls} ssl http2;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    location / {{ proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; }}
  }}
  server {{
    listen 127.0.0.1:{auth};
{snippet}
  }}"#,
        up = p.upstream,
        tls = e.nginx_tls,
        auth = e.nginx_auth,
        cert = cert.display(),
        key = key.display(),
    );
    run_nginx(d, "edge", &http)
}

/// One `h2load` run: `connections` clients, 10 streams each, for `seconds`.
pub fn h2load(url: &str, header: Option<&str>, seconds: u32, connections: u32) -> Wrk {
    let mut cmd = Command::new("h2load");
    cmd.args([
        "-c",
        &connections.to_string(),
        "-m",
        "10",
        "-t",
        "1",
        "-D",
        &seconds.to_string(),
    ]);
    if let Some(h) = header {
        cmd.args(["-H", h]);
    }
    let out = cmd.arg(url).output().expect("run h2load");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    // "finished in 10.00s, 41234.50 req/s, 3.02MB/s"
    let rps = text
        .lines()
        .find_map(|l| l.strip_prefix("finished in "))
        .and_then(|l| l.split(", ").nth(1)?.strip_suffix(" req/s")?.parse().ok())
        .unwrap_or(0.0);
    // "requests: 412345 total, 412395 started, 412345 done, 412345 succeeded, 0 failed, 0 errored, 0 timeout"
    let count = |what: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix("requests: "))
            .and_then(|l| {
                l.split(", ")
                    .find_map(|f| f.strip_suffix(what)?.trim().parse().ok())
            })
            .unwrap_or(0)
    };
    Wrk {
        rps,
        p50_ms: f64::NAN,
        p99_ms: f64::NAN,
        requests: count(" succeeded"),
        errors: count(" failed") + count(" errored") + count(" timeout"),
    }
}

/// `wrk` with every request on a new connection: a TLS handshake each. Its header line is
/// `Connection: close`, so the rows using it send no other.
pub fn wrk_new_connections(url: &str, _: Option<&str>, seconds: u32, connections: u32) -> Wrk {
    wrk(url, Some("Connection: close"), seconds, connections)
}

/// One target alone: its req/s and the CPU per request (µs, user + system) of `pids` and their
/// children.
pub fn cpu_per_request(load: Load, t: &Target, pids: &[u32], seconds: u32) -> (f64, f64) {
    let all: Vec<u32> = pids.iter().flat_map(|p| profile::family(*p)).collect();
    let before = profile::cpu_seconds(&all);
    let r = load(&t.1, t.2.as_deref(), seconds, 50);
    let after = profile::cpu_seconds(&all);
    assert!(r.errors == 0 && r.requests > 0, "{}: {r:?}", t.0);
    let cpu = (after.0 + after.1 - before.0 - before.1) * 1e6 / r.requests as f64;
    (r.rps, cpu)
}

/// An edge row: the gateway's target and nginx's, how they are loaded, and what runs each.
pub struct EdgeRow {
    pub what: &'static str,
    pub load: Load,
    pub gateway: Target,
    pub gateway_pids: Vec<u32>,
    pub nginx: Target,
    pub nginx_pids: Vec<u32>,
    /// The goal for the gateway's CPU per request over nginx's, if the issue set one.
    pub cpu_goal: Option<f64>,
}

/// What an edge row measured.
pub struct EdgeFigures {
    pub what: &'static str,
    pub paired: f64,
    pub gateway: (f64, f64),
    pub nginx: (f64, f64),
    pub cpu_goal: Option<f64>,
}

pub fn measure_edge(rows: &[EdgeRow], o: &Opts, pair_seconds: u32) -> Vec<EdgeFigures> {
    rows.iter()
        .map(|r| {
            for t in [&r.gateway, &r.nginx] {
                o.warm_up(r.load, &t.1, t.2.as_deref());
            }
            let paired = paired_load(
                r.load,
                &r.gateway,
                &r.nginx,
                o.rounds,
                pair_seconds,
                50,
                |r| r.errors == 0,
            );
            EdgeFigures {
                what: r.what,
                paired,
                gateway: cpu_per_request(r.load, &r.gateway, &r.gateway_pids, o.seconds),
                nginx: cpu_per_request(r.load, &r.nginx, &r.nginx_pids, o.seconds),
                cpu_goal: r.cpu_goal,
            }
        })
        .collect()
}

pub fn print_edge(figures: &[EdgeFigures], judged: bool) {
    println!(
        "edge rows: paired req/s ratio gateway / nginx, and CPU per request (µs, user + system, \
         of the proxy's own processes; forward-auth counts nginx and the gateway):"
    );
    for f in figures {
        let cpu_ratio = f.gateway.1 / f.nginx.1;
        let verdict = match f.cpu_goal {
            Some(g) if judged => format!("(CPU target <= {g:.1}x) {}", mark(cpu_ratio <= g)),
            Some(g) => format!("(CPU target <= {g:.1}x)"),
            None => String::new(),
        };
        println!(
            "  {:<26} {:>5.2}x  gateway {:>7.0} req/s {:>6.1} µs, nginx {:>7.0} req/s {:>6.1} µs: CPU {:.2}x {verdict}",
            f.what, f.paired, f.gateway.0, f.gateway.1, f.nginx.0, f.nginx.1, cpu_ratio
        );
    }
}
