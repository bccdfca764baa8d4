//! End-to-end tests of the gateway core: the real binary, real upstream servers, real HTTP.

use crate::support;

use serde_json::Value;
use std::time::{Duration, Instant};
use support::*;

async fn get_json(client: &reqwest::Client, url: &str, host: Option<&str>) -> (u16, Value) {
    let mut req = client.get(url);
    if let Some(h) = host {
        req = req.header("Host", h);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread")]
async fn routes_by_host_and_longest_path_prefix() {
    let a = TestUpstream::start("a");
    let b = TestUpstream::start("b");
    let c = TestUpstream::start("c");
    let d = TestUpstream::start("d");
    let gw = GatewayProcess::start(&format!(
        r#"
[[upstreams]]
name = "a"
targets = ["{a}"]
[[upstreams]]
name = "b"
targets = ["{b}"]
[[upstreams]]
name = "c"
targets = ["{c}"]
[[upstreams]]
name = "d"
targets = ["{d}"]
host_header = "internal.d"

[[routes]]
name = "default"
upstream = "a"
[[routes]]
name = "api"
paths = ["/api"]
upstream = "c"
strip_path = true
[[routes]]
name = "exact-host"
hosts = ["app.example.com"]
upstream = "b"
[[routes]]
name = "wildcard-host"
hosts = ["*.example.com"]
upstream = "d"
preserve_host = false
"#,
        a = a.address(),
        b = b.address(),
        c = c.address(),
        d = d.address()
    ));
    let client = client();
    let url = gw.url("/x/y?q=1");

    let (s, body) = get_json(&client, &url, None).await;
    assert_eq!((s, body["server"].as_str()), (200, Some("a")));
    assert_eq!(body["uri"], "/x/y?q=1");

    // Exact host beats wildcard, whatever the case and port.
    let (_, body) = get_json(&client, &url, Some("APP.example.com:8080")).await;
    assert_eq!(body["server"], "b");
    assert_eq!(
        body["headers"]["host"][0], "APP.example.com:8080",
        "preserve_host keeps Host"
    );

    let (_, body) = get_json(&client, &url, Some("other.example.com")).await;
    assert_eq!(body["server"], "d");
    assert_eq!(
        body["headers"]["host"][0], "internal.d",
        "preserve_host = false sends the upstream's host"
    );
    assert_eq!(body["headers"]["x-forwarded-host"][0], "other.example.com");

    // Longest prefix, on segment boundaries; strip_path removes the prefix, keeps the query.
    let (_, body) = get_json(&client, &gw.url("/api/v1/items?x=%2F"), None).await;
    assert_eq!(body["server"], "c");
    assert_eq!(body["uri"], "/v1/items?x=%2F");
    let (_, body) = get_json(&client, &gw.url("/api"), None).await;
    assert_eq!(body["uri"], "/");
    let (_, body) = get_json(&client, &gw.url("/apiary"), None).await;
    assert_eq!(body["server"], "a");

    // The canonical path is what is matched and what is forwarded.
    let (_, body) = get_json(&client, &gw.url("/x/..//%61pi/./v2"), None).await;
    assert_eq!(
        (body["server"].as_str(), body["uri"].as_str()),
        (Some("c"), Some("/v2"))
    );
    let resp = client
        .get(gw.url("/api%2F..%2Fadmin"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
}

#[tokio::test(flavor = "multi_thread")]
async fn unmatched_requests_get_404_as_json_or_html() {
    let a = TestUpstream::start("a");
    let gw = GatewayProcess::start(&format!(
        "[[upstreams]]\nname = \"a\"\ntargets = [\"{}\"]\n[[routes]]\nname = \"only\"\nhosts = [\"only.test\"]\nupstream = \"a\"\n",
        a.address()
    ));
    let client = client();
    let resp = client.get(gw.url("/nope")).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let len: usize = resp.headers()["content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "not_found");
    assert!(len > 0);

    let resp = client
        .get(gw.url("/nope"))
        .header("Accept", "text/html,*/*")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(resp.headers().contains_key("content-security-policy"));
    assert!(resp.text().await.unwrap().contains("No route matches"));
    assert_eq!(a.hits.load(std::sync::atomic::Ordering::SeqCst), 0);
    assert!(
        !gw.log().contains("ERROR"),
        "a 404 is not an error:\n{}",
        gw.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn round_robin_spreads_across_targets() {
    let a = TestUpstream::start("a");
    let b = TestUpstream::start("b");
    let gw = GatewayProcess::start(&format!(
        "[[upstreams]]\nname = \"pool\"\ntargets = [\"{}\", \"{}\"]\n[[routes]]\nname = \"r\"\nupstream = \"pool\"\n",
        a.address(),
        b.address()
    ));
    let client = client();
    let mut seen = std::collections::HashMap::new();
    for _ in 0..20 {
        let (s, body) = get_json(&client, &gw.url("/"), None).await;
        assert_eq!(s, 200);
        *seen
            .entry(body["server"].as_str().unwrap().to_owned())
            .or_insert(0) += 1;
    }
    assert_eq!(seen.get("a"), Some(&10), "{seen:?}");
    assert_eq!(seen.get("b"), Some(&10), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_target_is_retried_then_marked_unhealthy_and_all_down_is_503() {
    let mut a = TestUpstream::start("a");
    let mut b = TestUpstream::start("b");
    let gw = GatewayProcess::start(&format!(
        r#"[[upstreams]]
name = "pool"
targets = ["{}", "{}"]
health_check = {{ kind = "http", path = "/healthz", interval = "200ms", timeout = "1s" }}
connect_timeout = "500ms"
retries = 1
[[routes]]
name = "r"
upstream = "pool"
"#,
        a.address(),
        b.address()
    ));
    let client = fresh_client();
    for _ in 0..4 {
        assert_eq!(client.get(gw.url("/")).send().await.unwrap().status(), 200);
    }
    b.kill();
    // Straight after the kill the health check has not noticed yet: retries carry the requests.
    for i in 0..20 {
        let resp = client.get(gw.url("/")).send().await.unwrap();
        assert_eq!(resp.status(), 200, "request {i} after the kill");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["server"], "a");
    }
    let gauge = format!(
        "oidc_gateway_upstream_target_healthy{{target=\"{}\",upstream=\"pool\"}}",
        b.address()
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let m = gw.metrics().await;
        if metric_value(&m, &gauge) == Some(0.0) {
            let alive = format!(
                "oidc_gateway_upstream_target_healthy{{target=\"{}\",upstream=\"pool\"}}",
                a.address()
            );
            assert_eq!(metric_value(&m, &alive), Some(1.0));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "gauge never showed the dead target:\n{m}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    a.kill();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        // Keep-alive client: the 503 must leave the connection usable.
        let client = support::client();
        let resp = client
            .get(gw.url("/"))
            .header("Accept", "application/json")
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        if status == 503 {
            assert!(resp.headers().contains_key("content-length"));
            assert_ne!(
                resp.headers()
                    .get("connection")
                    .map(|v| v.to_str().unwrap()),
                Some("close")
            );
            let body: Value = resp.json().await.unwrap();
            assert_eq!(body["error"], "no_healthy_upstream");
            break;
        }
        assert_eq!(
            status, 502,
            "while the health check catches up, a failed retry is a 502"
        );
        assert!(Instant::now() < deadline, "never answered 503");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn forwarded_headers_are_set_by_the_gateway_and_spoofs_dropped() {
    let a = TestUpstream::start("a");
    let body = format!(
        "[[upstreams]]\nname = \"a\"\ntargets = [\"{}\"]\n[[routes]]\nname = \"r\"\nupstream = \"a\"\n",
        a.address()
    );
    // Untrusted client (no trusted proxies): every forwarding header is the gateway's own.
    let gw = GatewayProcess::start(&body);
    let resp = client()
        .get(gw.url("/"))
        .header("X-Forwarded-For", "6.6.6.6")
        .header("X_Forwarded_For", "6.6.6.6")
        .header("X-Real-IP", "6.6.6.6")
        .header("X-Forwarded-Proto", "https")
        .header("Forwarded", "for=6.6.6.6")
        .send()
        .await
        .unwrap();
    let echo: Value = resp.json().await.unwrap();
    let h = &echo["headers"];
    assert_eq!(h["x-forwarded-for"], serde_json::json!(["127.0.0.1"]));
    assert_eq!(h["x-forwarded-proto"], serde_json::json!(["http"]));
    assert!(
        h.get("x_forwarded_for").is_none()
            && h.get("x-real-ip").is_none()
            && h.get("forwarded").is_none(),
        "{h}"
    );

    // From a trusted proxy the chain is extended.
    let gw = GatewayProcess::start_with(GatewayOptions {
        body: &body,
        server_extra: "trusted_proxies = [\"127.0.0.0/8\"]",
        ..Default::default()
    });
    let resp = client()
        .get(gw.url("/"))
        .header("X-Forwarded-For", "203.0.113.7")
        .header("X-Forwarded-Proto", "https")
        .send()
        .await
        .unwrap();
    let echo: Value = resp.json().await.unwrap();
    assert_eq!(
        echo["headers"]["x-forwarded-for"],
        serde_json::json!(["203.0.113.7, 127.0.0.1"])
    );
    assert_eq!(
        echo["headers"]["x-forwarded-proto"],
        serde_json::json!(["https"])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_requests_by_route_and_status() {
    let a = TestUpstream::start("a");
    let gw = GatewayProcess::start(&format!(
        "[[upstreams]]\nname = \"a\"\ntargets = [\"{}\"]\n[[routes]]\nname = \"app\"\npaths = [\"/app\"]\nupstream = \"a\"\n",
        a.address()
    ));
    let client = client();
    for _ in 0..3 {
        assert_eq!(
            client.get(gw.url("/app/x")).send().await.unwrap().status(),
            200
        );
    }
    for _ in 0..2 {
        assert_eq!(
            client.get(gw.url("/other")).send().await.unwrap().status(),
            404
        );
    }
    // The access log and the metrics are written after the response: give them a moment.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let m = gw.metrics().await;
    assert_eq!(
        metric_value(
            &m,
            "oidc_gateway_http_requests_total{route=\"app\",status=\"200\"}"
        ),
        Some(3.0),
        "{m}"
    );
    assert_eq!(
        metric_value(
            &m,
            "oidc_gateway_http_requests_total{route=\"-\",status=\"404\"}"
        ),
        Some(2.0),
        "{m}"
    );
    assert_eq!(
        metric_value(
            &m,
            "oidc_gateway_http_request_duration_seconds_count{route=\"app\"}"
        ),
        Some(3.0)
    );
    assert_eq!(
        metric_value(
            &m,
            "oidc_gateway_upstream_request_duration_seconds_count{upstream=\"a\"}"
        ),
        Some(3.0)
    );
    assert_eq!(
        metric_value(
            &m,
            &format!(
                "oidc_gateway_upstream_connect_failures_total{{target=\"{}\",upstream=\"a\"}}",
                a.address()
            )
        ),
        Some(0.0)
    );
    assert_eq!(
        metric_value(
            &m,
            &format!(
                "oidc_gateway_build_info{{version=\"{}\"}}",
                env!("CARGO_PKG_VERSION")
            )
        ),
        Some(1.0)
    );
    let health = reqwest::get(format!("http://127.0.0.1:{}/healthz", gw.metrics_port))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let log = gw.log_containing(&["route=\"app\"", "status=200"]);
    assert!(
        log.contains("route=\"app\"") && log.contains("status=200"),
        "access log missing:\n{log}"
    );
}

/// The access log through the running binary: every field, no query string, JSON with
/// `--log-format json`, and the level filter still applied (`RUST_LOG=warn` keeps only 5xx).
#[tokio::test(flavor = "multi_thread")]
async fn access_log_lines_in_text_and_json_never_with_the_query() {
    let a = TestUpstream::start("a");
    let dead = free_port();
    let body = format!(
        "[[upstreams]]\nname = \"a\"\ntargets = [\"{}\"]\n[[upstreams]]\nname = \"dead\"\ntargets = [\"127.0.0.1:{dead}\"]\nretries = 0\n\
         [[routes]]\nname = \"app\"\npaths = [\"/app\"]\nupstream = \"a\"\n\
         [[routes]]\nname = \"dead\"\npaths = [\"/dead\"]\nupstream = \"dead\"\n",
        a.address()
    );
    let start = |args: &'static [&'static str], env: &'static [(&'static str, &'static str)]| {
        GatewayProcess::start_with(GatewayOptions {
            body: &body,
            args,
            env,
            ..Default::default()
        })
    };
    let (text, json, quiet) = (
        start(&[], &[]),
        start(&["--log-format", "json"], &[]),
        start(&[], &[("RUST_LOG", "warn")]),
    );
    let client = client();
    for gw in [&text, &json, &quiet] {
        let r = client
            .get(gw.url("/app/x?code=SECRET-CODE"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let r = client.get(gw.url("/dead")).send().await.unwrap();
        assert_eq!(r.status(), 502);
    }
    // Lines are flushed ten times a second: wait for them.
    let log = text.log_containing(&["INFO access: request", "WARN access: request"]);
    let line = log
        .lines()
        .find(|l| l.contains("INFO access: request") && l.contains("route=\"app\""))
        .unwrap_or_else(|| panic!("no access line:\n{log}"));
    for field in [
        "method=\"GET\"",
        "path=\"/app/x\"",
        "status=200",
        "upstream=\"a\"",
        &format!("target=\"{}\"", a.address()),
        "client=127.0.0.1",
        "duration_ms=",
    ] {
        assert!(line.contains(field), "{field} missing from {line}");
    }
    assert!(
        log.lines()
            .any(|l| l.contains("WARN access: request") && l.contains("status=502")),
        "{log}"
    );

    let log = json.log_containing(&["\"route\":\"app\"", "\"status\":502"]);
    let lines: Vec<Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["target"] == "access")
        .collect();
    let ok = lines
        .iter()
        .find(|v| v["route"] == "app")
        .unwrap_or_else(|| panic!("no JSON access line:\n{log}"));
    assert_eq!(ok["level"], "INFO");
    assert_eq!(ok["status"], 200);
    assert_eq!(ok["path"], "/app/x");
    assert_eq!(ok["upstream_target"], a.address());
    assert!(ok["duration_ms"].as_f64().is_some_and(|ms| ms > 0.0));
    assert!(
        lines
            .iter()
            .any(|v| v["level"] == "WARN" && v["status"] == 502)
    );
    // Pingora's own lines (through the `log` crate) are there, without the build machine's
    // paths that `tracing-log` attached to them (`log.file`).
    assert!(log.contains("Bootstrap"), "{log}");
    assert!(
        !log.contains("log.file") && !log.contains(".cargo/registry"),
        "{log}"
    );

    let log = quiet.log_containing(&["WARN access: request"]);
    assert!(
        !log.contains("INFO access") && log.contains("WARN access: request"),
        "RUST_LOG=warn keeps only the 5xx line:\n{log}"
    );
    for log in [text.log(), json.log(), quiet.log()] {
        assert!(!log.contains("SECRET-CODE"), "query string logged:\n{log}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn read_timeout_is_a_504_and_refused_connect_a_502() {
    let a = TestUpstream::start("a");
    let dead = free_port();
    let gw = GatewayProcess::start(&format!(
        r#"[[upstreams]]
name = "slow"
targets = ["{}"]
read_timeout = "300ms"
[[upstreams]]
name = "dead"
targets = ["127.0.0.1:{dead}"]
retries = 0
[[routes]]
name = "slow"
paths = ["/slow"]
upstream = "slow"
[[routes]]
name = "dead"
paths = ["/dead"]
upstream = "dead"
"#,
        a.address()
    ));
    let client = client();
    let resp = client.get(gw.url("/slow?ms=2000")).send().await.unwrap();
    assert_eq!(resp.status(), 504);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "upstream_timeout");
    let resp = client.get(gw.url("/dead")).send().await.unwrap();
    assert_eq!(resp.status(), 502);
    assert_eq!(
        resp.headers()["connection"],
        "close",
        "the connection ends after a failed proxy attempt"
    );
    assert!(resp.headers().contains_key("content-length"));
}

#[tokio::test(flavor = "multi_thread")]
async fn websocket_upgrades_pass_through() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let a = TestUpstream::start("a");
    let gw = GatewayProcess::start_with(GatewayOptions {
        body: &format!(
            "[[upstreams]]\nname = \"a\"\ntargets = [\"{}\"]\n[[routes]]\nname = \"r\"\nupstream = \"a\"\n",
            a.address()
        ),
        // A WebSocket may be idle for long: request-body deadlines do not apply to it.
        server_extra: "request_body_timeout = \"1s\"\nrequest_body_min_rate = 1000",
        ..Default::default()
    });
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{}/ws", gw.port))
        .await
        .unwrap();
    for (i, pause) in [0, 1500].into_iter().enumerate() {
        tokio::time::sleep(Duration::from_millis(pause)).await;
        ws.send(Message::Text(format!("hi {i}").into()))
            .await
            .unwrap();
        let reply = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap_or_else(|e| panic!("message {i}: {e}\n{}", gw.log()));
        assert_eq!(reply.into_text().unwrap().as_str(), format!("echo: hi {i}"));
    }
}

/// An upstream that answers `101` the moment it accepts a connection, then echoes what it
/// reads: the answer is already waiting when the proxy starts relaying, which is what a busy
/// machine produces by chance (the flake this test pins down: a tunnel closed at once).
fn eager_upgrade_upstream() -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            std::thread::spawn(move || {
                let _ = conn.write_all(
                    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
                );
                // The request header, then the tunnel's bytes, echoed.
                let mut seen = Vec::new();
                let Some(head_end) = read_until_blank_line(&mut conn, &mut seen) else {
                    return;
                };
                if conn.write_all(&seen[head_end + 4..]).is_err() {
                    return;
                }
                let mut buf = [0u8; 4096];
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 || conn.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[test]
fn an_upgrade_answered_at_once_keeps_its_tunnel() {
    use std::io::{Read, Write};
    let gw = GatewayProcess::start(&format!(
        "[[upstreams]]\nname = \"a\"\ntargets = [\"{}\"]\n[[routes]]\nname = \"r\"\nupstream = \"a\"\n",
        eager_upgrade_upstream()
    ));
    for attempt in 0..100 {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(
            b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        )
        .unwrap();
        let mut got = Vec::new();
        assert!(
            read_until_blank_line(&mut s, &mut got).is_some(),
            "attempt {attempt}: closed before the 101"
        );
        assert!(got.starts_with(b"HTTP/1.1 101"), "attempt {attempt}");
        s.write_all(b"ping").unwrap();
        let mut echo = [0u8; 4];
        s.read_exact(&mut echo).unwrap_or_else(|e| {
            panic!("attempt {attempt}: the tunnel closed before its first message came back: {e}")
        });
        assert_eq!(&echo, b"ping", "attempt {attempt}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_finishes_in_flight_requests_then_exits() {
    let a = TestUpstream::start("a");
    let mut gw = GatewayProcess::start_with(GatewayOptions {
        body: &format!(
            "[[upstreams]]\nname = \"a\"\ntargets = [\"{}\"]\n[[routes]]\nname = \"r\"\nupstream = \"a\"\n",
            a.address()
        ),
        grace_period: "3s",
        ..Default::default()
    });
    let url = gw.url("/slow?ms=1500");
    let in_flight =
        tokio::spawn(async move { client().get(url).send().await.map(|r| r.status().as_u16()) });
    // Signal once the request has reached the upstream: it is in flight, not still queued.
    let deadline = Instant::now() + Duration::from_secs(10);
    while a.hits.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        assert!(
            Instant::now() < deadline,
            "the request never reached the upstream"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    gw.signal("TERM");
    let status = in_flight
        .await
        .unwrap()
        .expect("in-flight request failed during shutdown");
    assert_eq!(status, 200);
    let exit = tokio::task::block_in_place(|| gw.wait_exit(Duration::from_secs(10)));
    assert!(
        exit.is_some(),
        "gateway did not exit after the grace period:\n{}",
        gw.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn upgrade_handover_loses_no_request() {
    let a = TestUpstream::start("a");
    let mut old = GatewayProcess::start(&format!(
        "[[upstreams]]\nname = \"a\"\ntargets = [\"{}\"]\n[[routes]]\nname = \"r\"\nupstream = \"a\"\n",
        a.address()
    ));
    let url = old.url("/");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let load = tokio::spawn(async move {
        let client = fresh_client();
        let (mut ok, mut failed) = (0u32, Vec::new());
        while !stop2.load(std::sync::atomic::Ordering::SeqCst) {
            match client.get(&url).send().await {
                Ok(r) if r.status() == 200 => ok += 1,
                Ok(r) => failed.push(format!("status {}", r.status())),
                Err(e) => failed.push(e.to_string()),
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        (ok, failed)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut new = old.start_upgrade();
    tokio::time::sleep(Duration::from_millis(500)).await;
    old.signal("QUIT");
    let exited = tokio::task::block_in_place(|| old.wait_exit(Duration::from_secs(20)));
    assert!(exited.is_some(), "old process did not exit:\n{}", old.log());
    // The new process now serves alone.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (ok, failed) = load.await.unwrap();
    assert!(
        failed.is_empty(),
        "{} failures during the handover: {failed:?}\nnew:\n{}",
        failed.len(),
        new.log()
    );
    assert!(ok > 50, "only {ok} requests went through");
    assert_eq!(
        client().get(new.url("/")).send().await.unwrap().status(),
        200
    );
    assert!(new.wait_exit(Duration::from_millis(10)).is_none());
    // A normal reload is not an error: the new process waits for the sockets without saying
    // "ERROR ... No incoming socket transfer" each second (Pingora's own wording).
    for (who, log) in [("new", new.log()), ("old", old.log())] {
        assert!(!log.contains("ERROR"), "{who}:\n{log}");
    }
}
