//! TLS and HTTP/2 from the attacker's side, against the real binary with a TLS listener that
//! offers h2: rapid reset (CVE-2023-44487), CONTINUATION floods (CVE-2024-27316 family), a
//! HEADERS frame that never ends, SETTINGS / PING / WINDOW_UPDATE floods, a zero-window stall
//! on a large response, TLS handshakes that never finish and a ClientHello trickled a byte at
//! a time.
//!
//! Each attack runs while a bystander (reqwest over h2) keeps asking for a page: the test
//! checks the bystander's worst latency, that the attacking connection is closed within a
//! bound, and that the gateway's resident memory stays bounded. The attacker speaks raw frames
//! (hand-written here on purpose: no client library would send them).

use crate::support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The client connection preface.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0;
const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const PING: u8 = 6;
const GOAWAY: u8 = 7;
const WINDOW_UPDATE: u8 = 8;
const CONTINUATION: u8 = 9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

/// Worst bystander latency allowed while an attack runs (a debug build on two busy cores).
const RESPONSIVE: Duration = Duration::from_millis(1500);

/// One attack at a time: the bystander's latency measures the gateway under one attack, not
/// two cores shared by eight floods and their attackers.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Edge {
    gw: GatewayProcess,
    _up: TestUpstream,
    _certs: tempfile::TempDir,
    tls_port: u16,
    cert_der: Vec<u8>,
    client: reqwest::Client,
    /// Last, so the gateway has stopped before the next test takes its turn.
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

/// The gateway with a TLS listener (h2 on) in front of a test upstream, with `server_extra`
/// `[server]` lines.
async fn start(server_extra: &str) -> Edge {
    let turn = ONE_AT_A_TIME.lock().await;
    let key = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let certs = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (certs.path().join("cert.pem"), certs.path().join("key.pem"));
    std::fs::write(&cert_path, key.cert.pem()).unwrap();
    std::fs::write(&key_path, key.signing_key.serialize_pem()).unwrap();
    let up = TestUpstream::start("app");
    let tls_port = free_port();
    let extra = format!(
        "{server_extra}\n[[server.tls]]\nlisten = \"127.0.0.1:{tls_port}\"\ncert = \"{}\"\nkey = \"{}\"\n",
        cert_path.display(),
        key_path.display()
    );
    let gw = GatewayProcess::start_with(GatewayOptions {
        body: &Toml::new()
            .upstream("app", &up.address())
            .route("all", &[], "app", "", "")
            .build(),
        server_extra: &extra,
        ..Default::default()
    });
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(key.cert.pem().as_bytes()).unwrap())
        .tls_built_in_root_certs(false)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let edge = Edge {
        gw,
        _up: up,
        _certs: certs,
        tls_port,
        cert_der: key.cert.der().to_vec(),
        client,
        _turn: turn,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while edge.client.get(edge.url("/ready")).send().await.is_err() {
        assert!(
            Instant::now() < deadline,
            "no TLS answer\n{}",
            edge.gw.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    edge
}

impl Edge {
    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.tls_port)
    }

    fn tls_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert_der.clone().into()).unwrap();
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec()];
        Arc::new(config)
    }

    /// A TLS connection that negotiated h2, nothing sent on it yet.
    async fn tls_h2(&self) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", self.tls_port))
            .await
            .unwrap();
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let tls = tokio_rustls::TlsConnector::from(self.tls_config())
            .connect(name, tcp)
            .await
            .unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        tls
    }

    /// A TLS connection that negotiated h2, its preface and an empty SETTINGS sent.
    async fn h2(&self) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
        let mut tls = self.tls_h2().await;
        tls.write_all(PREFACE).await.unwrap();
        tls.write_all(&frame(SETTINGS, 0, 0, &[])).await.unwrap();
        tls
    }

    /// A ClientHello for this listener, as bytes.
    fn client_hello(&self) -> Vec<u8> {
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let mut conn = rustls::ClientConnection::new(self.tls_config(), name).unwrap();
        let mut out = Vec::new();
        conn.write_tls(&mut out).unwrap();
        out
    }

    /// The gateway's resident memory, in KiB.
    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.gw.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }
}

/// An HTTP/2 frame.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = Vec::with_capacity(9 + payload.len());
    f.extend_from_slice(&len.to_be_bytes()[1..]);
    f.push(kind);
    f.push(flags);
    f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An HPACK header block for `GET https://127.0.0.1<path>`: static-table `:method GET` and
/// `:scheme https`, then `:path` and `:authority` as literals with indexed names.
fn get_block(path: &str) -> Vec<u8> {
    let mut b = vec![0x82, 0x87];
    for (index, value) in [(0x04u8, path), (0x01, "127.0.0.1")] {
        assert!(value.len() < 127);
        b.push(index);
        b.push(value.len() as u8);
        b.extend_from_slice(value.as_bytes());
    }
    b
}

/// What a bystander saw: requests made, failures, the worst latency.
#[derive(Debug, Default)]
struct Seen {
    requests: usize,
    failures: Vec<String>,
    worst: Duration,
}

/// Asks for a page every 50 ms until `stop`.
fn bystander(edge: &Edge, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<Seen> {
    let client = edge.client.clone();
    let url = edge.url("/bystander");
    tokio::spawn(async move {
        let mut seen = Seen::default();
        while !stop.load(Ordering::Relaxed) {
            let started = Instant::now();
            match client.get(&url).send().await {
                Ok(r) if r.status() == 200 => {}
                Ok(r) => seen.failures.push(r.status().to_string()),
                Err(e) => seen.failures.push(e.to_string()),
            }
            seen.requests += 1;
            seen.worst = seen.worst.max(started.elapsed());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        seen
    })
}

/// How an attacking connection ended: after how long, and the GOAWAY error code if one came.
#[derive(Debug)]
struct Ended {
    after: Option<Duration>,
    goaway: Option<u32>,
    resets: usize,
}

/// Reads frames from `r` until the connection ends or `limit` passes.
async fn until_closed(mut r: impl AsyncReadExt + Unpin, limit: Duration) -> Ended {
    let started = Instant::now();
    let mut buf = Vec::new();
    let mut ended = Ended {
        after: None,
        goaway: None,
        resets: 0,
    };
    let mut chunk = vec![0u8; 65536];
    loop {
        let left = limit.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, r.read(&mut chunk)).await {
            Err(_) => return ended,
            Ok(Ok(0)) | Ok(Err(_)) => {
                ended.after = Some(started.elapsed());
                return ended;
            }
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
        while buf.len() >= 9 {
            let len = u32::from_be_bytes([0, buf[0], buf[1], buf[2]]) as usize;
            if buf.len() < 9 + len {
                break;
            }
            match buf[3] {
                GOAWAY if len >= 8 => {
                    ended.goaway = Some(u32::from_be_bytes([buf[13], buf[14], buf[15], buf[16]]))
                }
                RST_STREAM => ended.resets += 1,
                _ => {}
            }
            buf.drain(..9 + len);
        }
    }
}

/// Runs `attack` (which writes to the connection until it fails or gives up) with a
/// bystander beside it; returns how the connection ended, what the bystander saw and how much
/// the gateway's memory grew (KiB).
async fn under_attack<F, Fut>(edge: &Edge, limit: Duration, attack: F) -> (Ended, Seen, i64)
where
    F: FnOnce(tokio::io::WriteHalf<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let before = edge.rss_kib();
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = bystander(edge, stop.clone());
    let (r, w) = tokio::io::split(edge.h2().await);
    let writer = tokio::spawn(attack(w));
    let ended = until_closed(r, limit).await;
    let grew = edge.rss_kib() as i64 - before as i64;
    // A little longer, so the bystander also covers the time right after the attack.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    writer.abort();
    (ended, watcher.await.unwrap(), grew)
}

fn assert_held(what: &str, ended: &Ended, seen: &Seen, grew: i64, within: Duration, edge: &Edge) {
    eprintln!(
        "{what}: closed after {:?} (GOAWAY {:?}, {} resets); bystander {} requests, worst {:?}, \
         failures {:?}; memory {grew:+} KiB",
        ended.after, ended.goaway, ended.resets, seen.requests, seen.worst, seen.failures
    );
    let after = ended
        .after
        .unwrap_or_else(|| panic!("{what}: the connection is still open\n{}", edge.gw.log()));
    assert!(after <= within, "{what}: closed only after {after:?}");
    assert!(
        seen.requests > 0 && seen.failures.is_empty(),
        "{what}: {seen:?}"
    );
    assert!(
        seen.worst < RESPONSIVE,
        "{what}: a bystander waited {:?}",
        seen.worst
    );
    assert!(grew < 64 * 1024, "{what}: memory grew by {grew} KiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rapid_reset_is_cut_off_and_others_are_served() {
    let edge = start("").await;
    let (ended, seen, grew) = under_attack(&edge, Duration::from_secs(10), |mut w| async move {
        // HEADERS then RST_STREAM at once, 200 streams per write, as fast as the socket takes.
        let mut id = 1u32;
        loop {
            let mut batch = Vec::new();
            for _ in 0..200 {
                batch.extend(frame(
                    HEADERS,
                    END_HEADERS | END_STREAM,
                    id,
                    &get_block("/"),
                ));
                batch.extend(frame(RST_STREAM, 0, id, &8u32.to_be_bytes()));
                id += 2;
            }
            if w.write_all(&batch).await.is_err() || id > 2_000_000 {
                return;
            }
        }
    })
    .await;
    assert_held(
        "rapid reset",
        &ended,
        &seen,
        grew,
        Duration::from_secs(5),
        &edge,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paced_rapid_reset_costs_no_more_than_the_requests_it_cancels() {
    // Slow enough that each stream is accepted (and its request started) before its reset
    // arrives, which the h2 crate's count of streams reset before acceptance does not see.
    // Such a client is a fast client: what matters is that a reset stops the work it
    // started, so the work in progress never outgrows the connection's stream limit.
    let edge = start("").await;
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = bystander(&edge, stop.clone());
    let before = edge.rss_kib();
    let (_r, mut w) = tokio::io::split(edge.h2().await);
    let mut id = 1u32;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(5) {
        let mut pair = frame(
            HEADERS,
            END_HEADERS | END_STREAM,
            id,
            &get_block("/slow?ms=500"),
        );
        pair.extend(frame(RST_STREAM, 0, id, &8u32.to_be_bytes()));
        id += 2;
        w.write_all(&pair).await.unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let grew = edge.rss_kib() as i64 - before as i64;
    stop.store(true, Ordering::Relaxed);
    let seen = watcher.await.unwrap();
    let log = edge.gw.log_containing(&["path=\"/slow\""]);
    let cancelled: Vec<f64> = log
        .lines()
        .filter(|l| l.contains("path=\"/slow\""))
        .filter_map(|l| {
            l.split("duration_ms=")
                .nth(1)?
                .split(' ')
                .next()?
                .parse()
                .ok()
        })
        .collect();
    eprintln!(
        "paced rapid reset: {} streams, {} logged, slowest {:?} ms; bystander {} requests, \
         worst {:?}; memory {grew:+} KiB",
        id / 2,
        cancelled.len(),
        cancelled.iter().copied().fold(0.0, f64::max),
        seen.requests,
        seen.worst
    );
    assert!(cancelled.len() > 500, "{} requests seen", cancelled.len());
    // Each request ended at its reset, long before the upstream's 500 ms answer.
    assert!(cancelled.iter().all(|&ms| ms < 250.0), "{cancelled:?}");
    assert!(!log.contains("path=\"/slow\" route=\"all\" status=200"));
    assert!(
        seen.failures.is_empty() && seen.worst < RESPONSIVE,
        "{seen:?}"
    );
    assert!(grew < 64 * 1024, "memory grew by {grew} KiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_continuation_flood_is_cut_off_and_others_are_served() {
    let edge = start("").await;
    let (ended, seen, grew) = under_attack(&edge, Duration::from_secs(10), |mut w| async move {
        let _ = w.write_all(&frame(HEADERS, 0, 1, &get_block("/"))).await;
        // Header bytes that never end: literal fields of 1 KB values, 16 KB a frame.
        let mut field = vec![0x00, 0x01, b'x', 0x7f, 0x81, 0x07];
        field.extend(std::iter::repeat_n(b'a', 1024));
        let payload: Vec<u8> = field.iter().copied().cycle().take(16_384).collect();
        let f = frame(CONTINUATION, 0, 1, &payload);
        for _ in 0..100_000 {
            if w.write_all(&f).await.is_err() {
                return;
            }
        }
    })
    .await;
    assert_held(
        "CONTINUATION flood",
        &ended,
        &seen,
        grew,
        Duration::from_secs(5),
        &edge,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_header_block_that_never_ends_is_closed_at_the_idle_timeout() {
    let edge = start("keepalive_timeout = \"2s\"").await;
    let (ended, seen, grew) = under_attack(&edge, Duration::from_secs(10), |mut w| async move {
        let _ = w.write_all(&frame(HEADERS, 0, 1, &get_block("/"))).await;
        // Then silence, holding the connection open.
        tokio::time::sleep(Duration::from_secs(30)).await;
    })
    .await;
    assert_held(
        "slow HEADERS",
        &ended,
        &seen,
        grew,
        Duration::from_secs(4),
        &edge,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn settings_ping_and_window_update_floods_are_cut_off_or_harmless() {
    // Frames that open no stream leave the connection idle: it ends at the idle timeout.
    let edge = start("keepalive_timeout = \"2s\"").await;
    for (what, f) in [
        (
            "SETTINGS flood",
            frame(SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 100]),
        ),
        ("PING flood", frame(PING, 0, 0, &[7; 8])),
        (
            "WINDOW_UPDATE flood",
            frame(WINDOW_UPDATE, 0, 0, &1u32.to_be_bytes()),
        ),
    ] {
        // The attacker never reads: every ACK and PONG the gateway owes piles up on its side.
        let (ended, seen, grew) =
            under_attack(&edge, Duration::from_secs(10), |mut w| async move {
                let batch: Vec<u8> = f.iter().copied().cycle().take(f.len() * 1000).collect();
                for _ in 0..2_000 {
                    if w.write_all(&batch).await.is_err() {
                        return;
                    }
                }
            })
            .await;
        assert_held(what, &ended, &seen, grew, Duration::from_secs(4), &edge);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_zero_window_stall_on_a_large_response_is_reset_at_the_write_timeout() {
    let edge = start("response_write_timeout = \"2s\"\nkeepalive_timeout = \"2s\"").await;
    let (ended, seen, grew) = under_attack(&edge, Duration::from_secs(15), |mut w| async move {
        // No window for any stream's data, then 20 requests for 8 MB each.
        let _ = w
            .write_all(&frame(SETTINGS, 0, 0, &[0, 4, 0, 0, 0, 0]))
            .await;
        for i in 0..20u32 {
            let _ = w
                .write_all(&frame(
                    HEADERS,
                    END_HEADERS | END_STREAM,
                    2 * i + 1,
                    &get_block("/big?mb=8"),
                ))
                .await;
        }
        tokio::time::sleep(Duration::from_secs(60)).await;
    })
    .await;
    assert_held(
        "zero-window stall",
        &ended,
        &seen,
        grew,
        Duration::from_secs(8),
        &edge,
    );
    let _ = DATA;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tls_handshakes_that_never_finish_are_closed_at_the_handshake_timeout() {
    let edge = start("tls_handshake_timeout = \"2s\"").await;
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = bystander(&edge, stop.clone());
    let before = edge.rss_kib();
    // Two hundred connections that send nothing, and one that trickles its ClientHello.
    let mut silent = Vec::new();
    for _ in 0..200 {
        silent.push(
            tokio::net::TcpStream::connect(("127.0.0.1", edge.tls_port))
                .await
                .unwrap(),
        );
    }
    let hello = edge.client_hello();
    let mut trickled = tokio::net::TcpStream::connect(("127.0.0.1", edge.tls_port))
        .await
        .unwrap();
    let (r, mut w) = trickled.split();
    let started = Instant::now();
    let trickle = async move {
        for b in hello {
            if w.write_all(&[b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let ended = tokio::select! {
        e = until_closed(r, Duration::from_secs(10)) => e,
        _ = trickle => until_closed(trickled.split().0, Duration::from_secs(10)).await,
    };
    let grew = edge.rss_kib() as i64 - before as i64;
    let mut closed = 0;
    for s in &mut silent {
        let mut b = [0u8; 16];
        if matches!(
            tokio::time::timeout(Duration::from_millis(500), s.read(&mut b)).await,
            Ok(Ok(0)) | Ok(Err(_))
        ) {
            closed += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let seen = watcher.await.unwrap();
    assert_eq!(
        closed,
        200,
        "silent handshakes closed after {:?}",
        started.elapsed()
    );
    assert_held(
        "trickled ClientHello",
        &ended,
        &seen,
        grew,
        Duration::from_secs(4),
        &edge,
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_configured_h2_limits_are_what_the_gateway_announces() {
    let edge = start("h2_max_concurrent_streams = 7\nh2_max_header_list_size = 4096").await;
    let mut tls = edge.h2().await;
    // The server's first frame is its SETTINGS: (id, value) pairs of six bytes.
    let mut head = [0u8; 9];
    tls.read_exact(&mut head).await.unwrap();
    assert_eq!(head[3], SETTINGS);
    let mut payload = vec![0u8; u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize];
    tls.read_exact(&mut payload).await.unwrap();
    let settings: Vec<(u16, u32)> = payload
        .chunks(6)
        .map(|c| {
            (
                u16::from_be_bytes([c[0], c[1]]),
                u32::from_be_bytes([c[2], c[3], c[4], c[5]]),
            )
        })
        .collect();
    // SETTINGS_MAX_CONCURRENT_STREAMS (3) and SETTINGS_MAX_HEADER_LIST_SIZE (6).
    assert!(settings.contains(&(3, 7)), "{settings:?}");
    assert!(settings.contains(&(6, 4096)), "{settings:?}");
    // And a request whose headers are larger is not served.
    let r = edge
        .client
        .get(edge.url("/big-header"))
        .header("x-pad", "a".repeat(8192))
        .send()
        .await;
    assert!(r.map(|r| r.status() != 200).unwrap_or(true));
}
