//! OpenTelemetry traces end to end: the gateway exports over OTLP/HTTP to a collector running in
//! the test (it decodes the protobuf as a real one would), while a browser-like client signs in
//! at the in-test OP and then uses its session. The span trees, the `traceparent` the upstream
//! receives, and who may continue a trace are checked.

use crate::support;

use support::*;

const SECRET: &str = "tracing-test-session-secret-0123456789abcdef";
const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

struct Setup {
    _up: TestUpstream,
    gw: GatewayProcess,
    origin: String,
}

/// The in-test OP, an upstream and a gateway exporting to `collector` (`server_extra`: more
/// `[server]` lines).
fn start(collector: &OtlpCollector, server_extra: &str) -> (Setup, HostileOp) {
    let op = HostileOp::start(Attack::None);
    let port = free_port();
    let s = start_gateway(collector, &op.issuer, "gateway-secret", port, server_extra);
    (s, op)
}

/// An upstream and a gateway on `port` signing in at `issuer`, exporting to `collector`.
fn start_gateway(
    collector: &OtlpCollector,
    issuer: &str,
    client_secret: &str,
    port: u16,
    server_extra: &str,
) -> Setup {
    let up = TestUpstream::start("app");
    let origin = format!("http://127.0.0.1:{port}");
    let body = Toml::new()
        .session(SECRET, "")
        .provider("op", issuer, client_secret, &origin, "")
        .upstream("app", &up.address())
        .route("app", &["/app"], "app", r#"provider = "op""#, "")
        .route("public", &["/public"], "app", "", "")
        .raw(&format!(
            "[tracing]\notlp_endpoint = \"{}\"\nservice_name = \"gateway-under-test\"\nsample_ratio = 1.0\n",
            collector.endpoint
        ))
        .build();
    let gw = GatewayProcess::start_with(GatewayOptions {
        body: &body,
        port: Some(port),
        server_extra,
        // Export each batch within 100 ms rather than the SDK's 5 s.
        env: &[("OTEL_BSP_SCHEDULE_DELAY", "100")],
        ..Default::default()
    });
    Setup {
        _up: up,
        gw,
        origin,
    }
}

fn children<'a>(spans: &'a [SpanRecord], parent: &SpanRecord) -> Vec<&'a SpanRecord> {
    spans
        .iter()
        .filter(|s| s.parent_id == parent.span_id && s.trace_id == parent.trace_id)
        .collect()
}

fn one<'a>(
    spans: &'a [SpanRecord],
    what: &str,
    found: impl Fn(&SpanRecord) -> bool,
) -> &'a SpanRecord {
    let all: Vec<&SpanRecord> = spans.iter().filter(|s| found(s)).collect();
    assert_eq!(all.len(), 1, "{what}: {all:#?}");
    all[0]
}

/// `child` lies within `parent`, in time and in the tree.
fn assert_child(child: &SpanRecord, parent: &SpanRecord) {
    assert_eq!(
        child.trace_id, parent.trace_id,
        "{} in {}",
        child.name, parent.name
    );
    assert_eq!(
        child.parent_id, parent.span_id,
        "{} under {}",
        child.name, parent.name
    );
    assert!(
        child.start_ns >= parent.start_ns && child.end_ns <= parent.end_ns,
        "{} ({}..{}) within {} ({}..{})",
        child.name,
        child.start_ns,
        child.end_ns,
        parent.name,
        parent.start_ns,
        parent.end_ns
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_login_and_a_proxied_request_export_their_span_trees() {
    let collector = OtlpCollector::start().await;
    let (s, _op) = start(&collector, "");
    s.gw.wait_discovered("/app/").await;
    let b = Browser::new();
    let page = b.navigate(&format!("{}/app/private", s.origin), None).await;
    assert_eq!(page.status, 200, "{}\n{}", page.body, s.gw.log());

    // The callback: a server span, its endpoint span, and the provider calls inside that.
    let is_callback =
        |s: &SpanRecord| s.kind == 2 && s.attr("url.path") == Some("/oauth2/callback");
    let spans = collector.wait_for("for the callback", is_callback).await;
    let callback = one(&spans, "callback server span", is_callback);
    assert_eq!(callback.service, "gateway-under-test");
    assert_eq!(callback.attr("http.response.status_code"), Some("302"));
    let endpoint = one(&spans, "callback endpoint span", |x| {
        x.name == "callback" && x.parent_id == callback.span_id
    });
    assert_child(endpoint, callback);
    let calls: Vec<&str> = children(&spans, endpoint)
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(calls, ["idp token", "idp userinfo"], "{spans:#?}");
    for call in children(&spans, endpoint) {
        assert_child(call, endpoint);
        assert_eq!(call.kind, 3, "a client span");
        assert_eq!(call.attr("oidc_gateway.provider"), Some("op"));
    }
    // Discovery and keys ran in the background: traces of their own.
    let discovery = spans
        .iter()
        .find(|x| x.name == "idp discovery")
        .expect("a discovery span");
    assert!(discovery.parent_id.is_empty(), "{discovery:#?}");

    // The signed-in request: route, authenticate, upstream; and the upstream's traceparent.
    let echo = page.json();
    let traceparent = echo["headers"]["traceparent"][0]
        .as_str()
        .unwrap()
        .to_owned();
    let proxied = |x: &SpanRecord| {
        x.kind == 2 && x.name == "GET app" && x.attr("http.response.status_code") == Some("200")
    };
    let spans = collector.wait_for("for the proxied request", proxied).await;
    let server = one(&spans, "proxied server span", proxied);
    assert_eq!(server.attr("http.route"), Some("app"));
    assert_eq!(server.attr("url.path"), Some("/app/private"));
    let kids = children(&spans, server);
    let names: Vec<&str> = kids.iter().map(|k| k.name.as_str()).collect();
    assert_eq!(names, ["authenticate", "upstream app"], "{spans:#?}");
    for k in &kids {
        assert_child(k, server);
    }
    let upstream = kids[1];
    assert_eq!(upstream.kind, 3);
    assert_eq!(
        traceparent,
        format!("00-{}-{}-01", upstream.trace_id, upstream.span_id),
        "the upstream continues the trace under the gateway's upstream span"
    );
    // No provider call while a session is used.
    assert!(children(&spans, kids[0]).is_empty(), "{spans:#?}");
    // A query never reaches a span (a callback's holds the code).
    assert!(
        spans
            .iter()
            .all(|x| x.attributes.iter().all(|(_, v)| !v.contains("code=")))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_logout_traces_its_revocations_at_the_real_op() {
    let collector = OtlpCollector::start().await;
    let port = free_port();
    let op = RealOp::start(&op_config(&format!("http://127.0.0.1:{port}"), 3600));
    let s = start_gateway(
        &collector,
        &op.issuer,
        "gateway-secret-0123456789",
        port,
        "",
    );
    s.gw.wait_discovered("/app/").await;
    let b = Browser::new();
    let page = b
        .navigate(&s.gw.url("/app/x"), Some(("alice", "wonderland")))
        .await;
    assert_eq!(page.status, 200, "{}\n{}", page.body, s.gw.log());

    // The revocations run after the answer, in the background: still under the logout's span.
    assert_eq!(b.post(&s.gw.url("/oauth2/logout")).await.status(), 302);
    let spans = collector
        .wait_until("for both revocations", |spans| {
            spans.iter().filter(|x| x.name == "idp revocation").count() == 2
        })
        .await;
    let logout = one(&spans, "logout endpoint span", |x| x.name == "logout");
    let under: Vec<&str> = children(&spans, logout)
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(under, ["idp revocation", "idp revocation"], "{spans:#?}");
}

/// GET `path` on `s` as a client continuing a trace of its own (`traceparent`, `tracestate`):
/// the upstream's echo of the request, and the gateway's server span for it.
async fn get_with_client_trace(
    s: &Setup,
    collector: &OtlpCollector,
    path: &str,
) -> (serde_json::Value, SpanRecord) {
    let echo: serde_json::Value = client()
        .get(s.gw.url(path))
        .header("traceparent", format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"))
        .header("tracestate", "client=forged")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let is_it = |x: &SpanRecord| x.kind == 2 && x.attr("url.path") == Some(path);
    let spans = collector.wait_for(path, is_it).await;
    (echo, one(&spans, path, is_it).clone())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_traceparent_is_continued_only_from_trusted_proxies() {
    let collector = OtlpCollector::start().await;
    let (untrusting, _op1) = start(&collector, "");
    let (trusting, _op2) = start(&collector, "trusted_proxies = [\"127.0.0.1/32\"]");

    // From anyone: a trace of the gateway's own; the client's ids and state go nowhere.
    let (echo, server) = get_with_client_trace(&untrusting, &collector, "/public/untrusted").await;
    let got = echo["headers"]["traceparent"][0].as_str().unwrap();
    assert!(!got.contains(CLIENT_TRACE), "{got}");
    assert!(echo["headers"]["tracestate"].is_null(), "{echo}");
    assert!(server.parent_id.is_empty(), "a new trace: {server:#?}");
    assert_ne!(server.trace_id, CLIENT_TRACE);

    // From a trusted proxy: the trace goes on.
    let (echo, server) = get_with_client_trace(&trusting, &collector, "/public/trusted").await;
    let got = echo["headers"]["traceparent"][0].as_str().unwrap();
    assert!(got.starts_with(&format!("00-{CLIENT_TRACE}-")), "{got}");
    assert_eq!(server.trace_id, CLIENT_TRACE);
    assert_eq!(server.parent_id, CLIENT_SPAN);
}

#[tokio::test(flavor = "multi_thread")]
async fn without_tracing_a_client_traceparent_passes_unchanged() {
    // Off, the gateway is not part of the trace: it neither starts one nor breaks the client's.
    let up = TestUpstream::start("app");
    let body = Toml::new()
        .upstream("app", &up.address())
        .route("public", &["/public"], "app", "", "")
        .build();
    let gw = GatewayProcess::start(&body);
    let sent = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let echo: serde_json::Value = client()
        .get(gw.url("/public/x"))
        .header("traceparent", &sent)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(echo["headers"]["traceparent"][0], sent.as_str());
}
