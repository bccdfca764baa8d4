//! Security tests from the attacker's side: the real binary, raw sockets, odd request lines and a
//! *lenient* upstream that records what it received (`support/lenient.rs`). nginx or hyper in
//! front would refuse most of these inputs themselves and hide a gateway that forwards them.
//!
//! The invariant under test: the upstream receives exactly the request that was routed and
//! authorized — the same method, the same (canonical) path — or the gateway answers 4xx itself.

use crate::support;

use proptest::prelude::*;
use std::time::Duration;
use support::*;

const SECRET: &str = "security-test-session-secret-0123456789";

/// `/` and `/api2` reads are public (upstream `public`); `/admin` and `/api2` writes need a
/// bearer token (upstream `private`). The provider is never reachable: no request in these
/// tests carries a credential, so none may reach `private`, and nothing that reaches `public`
/// may be, by any lenient reading, an `/admin` request or an `/api2` write.
fn layout(public: &LenientUpstream, private: &LenientUpstream) -> String {
    let bearer = r#"provider = "idp", methods = ["bearer"]"#;
    Toml::new()
        .session(SECRET, "")
        .provider(
            "idp",
            "http://127.0.0.1:1/unreachable",
            "gateway-secret",
            "http://127.0.0.1:1",
            "timeout = \"200ms\"",
        )
        .upstream("public", &public.address())
        .upstream("private", &private.address())
        .route("site", &[], "public", "", "")
        .route("admin", &["/admin"], "private", bearer, "")
        .route(
            "api2-read",
            &["/api2"],
            "public",
            "",
            "methods = [\"GET\", \"HEAD\"]",
        )
        .route(
            "api2-write",
            &["/api2"],
            "private",
            bearer,
            "methods = [\"POST\", \"PUT\", \"PATCH\", \"DELETE\"]",
        )
        .build()
}

/// How a lenient upstream (werkzeug, `http.server`) reads a request line: the method
/// upper-cased; a target without a leading '/' rooted; scheme and authority dropped; query and
/// fragment cut; every escape decoded, backslashes as slashes, `;params` dropped from segment
/// names, dot segments resolved. Returns (method, segments).
fn lenient_view(method: &[u8], target: &[u8]) -> (String, Vec<String>) {
    let method = String::from_utf8_lossy(method).to_ascii_uppercase();
    let mut t = target.to_vec();
    for scheme in [&b"http://"[..], b"https://", b"HTTP://", b"HTTPS://"] {
        if t.starts_with(scheme) {
            let rest = t[scheme.len()..].to_vec();
            let slash = rest.iter().position(|&b| b == b'/').unwrap_or(rest.len());
            t = rest[slash..].to_vec();
        }
    }
    let cut = t
        .iter()
        .position(|&b| b == b'?' || b == b'#')
        .unwrap_or(t.len());
    let decoded = percent_encoding::percent_decode(&t[..cut]).collect::<Vec<u8>>();
    let text = String::from_utf8_lossy(&decoded).replace('\\', "/");
    let mut segments: Vec<String> = Vec::new();
    for seg in text.split('/') {
        match seg.split(';').next().unwrap_or("") {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            name => segments.push(name.to_owned()),
        }
    }
    (method, segments)
}

/// Whether a request, read leniently, is one the layout protects.
fn is_protected(method: &[u8], target: &[u8]) -> bool {
    let (m, segs) = lenient_view(method, target);
    let first = segs.first().map(String::as_str);
    first == Some("admin")
        || (first == Some("api2") && matches!(m.as_str(), "POST" | "PUT" | "PATCH" | "DELETE"))
}

fn method() -> impl Strategy<Value = String> {
    // Upper-case methods more often than their odd spellings, so both outcomes are common.
    prop::sample::select(vec![
        "GET", "GET", "GET", "POST", "POST", "DELETE", "HEAD", "OPTIONS", "GET", "get", "Get",
        "gET", "HEAD", "head", "POST", "post", "PoSt", "PUT", "put", "PATCH", "patch", "DELETE",
        "delete", "Delete", "OPTIONS", "options", "TRACE", "PROPFIND", "M-SEARCH", "CONNECT",
    ])
    .prop_map(str::to_owned)
}

fn segment() -> impl Strategy<Value = Vec<u8>> {
    let pieces: Vec<&'static [u8]> = vec![
        b"admin",
        b"ADMIN",
        b"%61dmin",
        b"adm%69n",
        b"%61%64%6D%69%6E",
        b"api2",
        b"%61pi2",
        b"x",
        b".",
        b"..",
        b"%2e",
        b"%2E%2e",
        b".%2e",
        b"",
        b"admin;x=1",
        b";x",
        b"..;",
        b"%2f",
        b"%2Fadmin",
        b"%5c",
        b"\\",
        b"\\admin",
        b"a%20b",
        b"%3f",
        b"%23",
        b"\xff",
        b"caf\xc3\xa9",
        b"%00",
        b"%",
        b"%zz",
    ];
    prop::sample::select(pieces).prop_map(<[u8]>::to_vec)
}

/// Request-targets in every form: origin, rootless, absolute (matching Host or not), asterisk,
/// authority and query-only.
fn target(port: u16) -> impl Strategy<Value = Vec<u8>> {
    let path = (prop::collection::vec(segment(), 0..5), 0..3usize).prop_map(|(segs, sep)| {
        let sep: &[u8] = [&b"/"[..], b"//", b"/"][sep];
        segs.join(sep)
    });
    let query = prop::sample::select(vec![&b""[..], b"?q=1", b"?/admin", b"?x=%2F", b"#frag"]);
    let form = 0..8usize;
    (form, path, query).prop_map(move |(form, path, query)| {
        let mut t = match form {
            0..=2 => [&b"/"[..], &path].concat(),
            3 => path.clone(),
            4 => [format!("http://127.0.0.1:{port}/").as_bytes(), &path].concat(),
            5 => [&b"http://elsewhere.test/"[..], &path].concat(),
            6 => b"*".to_vec(),
            _ => [format!("127.0.0.1:{port}").as_bytes(), &path].concat(),
        };
        t.extend_from_slice(query);
        t
    })
}

#[test]
fn what_is_routed_is_what_is_forwarded_property() {
    let public = LenientUpstream::start();
    let private = LenientUpstream::start();
    let gw = GatewayProcess::start(&layout(&public, &private));
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 400,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let port = gw.port;
    let (forwarded, refused) = (std::cell::Cell::new(0usize), std::cell::Cell::new(0usize));
    let result = runner.run(&(method(), target(port)), |(method, target)| {
        let mut req = method.as_bytes().to_vec();
        req.push(b' ');
        req.extend_from_slice(&target);
        req.extend_from_slice(
            format!(" HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n").as_bytes(),
        );
        let resp = raw_request(port, &req, Duration::from_secs(5));
        let reached_public = public.take();
        let reached_private = private.take();
        let shown = format!("{method} {}", target.escape_ascii());
        prop_assert!(
            reached_private.is_empty(),
            "{shown:?} reached the protected upstream without a credential: {:?}",
            reached_private[0].line_lossy()
        );
        match reached_public.as_slice() {
            [] => {
                refused.set(refused.get() + 1);
                prop_assert!(
                    (400..500).contains(&resp.status),
                    "{shown:?}: nothing forwarded, so the gateway must answer 4xx itself, got {}",
                    resp.text
                )
            }
            [got] => {
                forwarded.set(forwarded.get() + 1);
                let (m, t) = (got.method(), got.target());
                prop_assert!(
                    !is_protected(m, t),
                    "BYPASS: {shown:?} reached the public upstream as {:?}",
                    got.line_lossy()
                );
                prop_assert!(
                    !m.iter().any(u8::is_ascii_lowercase) && m == method.as_bytes(),
                    "{shown:?}: method forwarded as {:?}",
                    got.line_lossy()
                );
                let origin_form = t.first() == Some(&b'/');
                prop_assert!(
                    origin_form || (t == b"*" && m == b"OPTIONS"),
                    "{shown:?}: target forwarded in another form: {:?}",
                    got.line_lossy()
                );
                if origin_form {
                    let path = t.split(|&b| b == b'?').next().unwrap_or(t);
                    let path = std::str::from_utf8(path).expect("a forwarded path is ASCII");
                    let canon = oidc_gateway::http::path::canonicalize(path.as_bytes(), false);
                    prop_assert!(
                        canon.as_deref() == Ok(path),
                        "{shown:?}: forwarded path {path:?} is not canonical ({canon:?})"
                    );
                }
            }
            many => prop_assert!(false, "{shown:?}: {} requests upstream", many.len()),
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}\n--- gateway log ---\n{}", gw.log());
    }
    // Both outcomes must be exercised, or the property says nothing.
    eprintln!("forwarded {}, refused {}", forwarded.get(), refused.get());
    assert!(
        forwarded.get() >= 30 && refused.get() >= 30,
        "forwarded {}, refused {}",
        forwarded.get(),
        refused.get()
    );
}

/// A raw HTTP/1.1 request with `Connection: close` and the given extra header lines.
fn raw(port: u16, line: &str, headers: &[&str]) -> RawResponse {
    let mut req = format!("{line}\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    raw_request(port, req.as_bytes(), Duration::from_secs(5))
}

#[test]
fn targets_and_methods_that_were_bypasses_are_refused_and_logged_as_sent() {
    let public = LenientUpstream::start();
    let private = LenientUpstream::start();
    let gw = GatewayProcess::start(&layout(&public, &private));
    for line in [
        "GET admin HTTP/1.1",
        "GET admin/x HTTP/1.1",
        "GET admin?x=1 HTTP/1.1",
        "GET %61dmin HTTP/1.1",
        "GET %2fadmin HTTP/1.1",
        "post /api2 HTTP/1.1",
        "Delete /api2 HTTP/1.1",
        "PoSt /api2 HTTP/1.1",
        "GET * HTTP/1.1",
    ] {
        let r = raw(gw.port, line, &[]);
        assert_eq!(r.status, 400, "{line}: {}", r.text);
        assert!(r.text.contains("\"error\":\"bad_"), "{line}: {}", r.text);
    }
    // Pingora itself refuses an absolute-form authority that is not the Host.
    let r = raw(gw.port, "GET http://elsewhere.test/admin HTTP/1.1", &[]);
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(public.count() + private.count(), 0, "{:?}", public.take());

    // What is routed is what is forwarded, and what the access log says.
    let r = raw(gw.port, "GET /x/..;/%61dmin HTTP/1.1", &[]);
    assert_eq!(r.status, 401, "the canonical path is /admin: {}", r.text);
    let r = raw(gw.port, "GET /docs/x/./%2e%2E/b?q=%2F HTTP/1.1", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(public.take()[0].line_lossy(), "GET /docs/b?q=%2F HTTP/1.1");
    let r = raw(gw.port, "OPTIONS * HTTP/1.1", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(public.take()[0].line_lossy(), "OPTIONS * HTTP/1.1");

    let expected = [
        r#"method="GET" path="/admin" route="admin" status=401"#,
        r#"path="admin?x=1" route="-" status=400"#,
        r#"method="post" path="/api2" route="-" status=400"#,
        r#"path="/docs/b" route="site" status=200"#,
    ];
    let log = gw.log_containing(&expected);
    for line in expected {
        assert!(log.contains(line), "{line}:\n{log}");
    }
}

/// Waits until the gateway has the provider's keys (discovery runs in the background).
fn wait_for_keys(gw: &GatewayProcess, path: &str, token: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let r = raw(
            gw.port,
            &format!("GET {path} HTTP/1.1"),
            &[&format!("Authorization: Bearer {token}")],
        );
        if r.status == 200 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never ready: {}\n{}",
            r.text,
            gw.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn authorization_reaches_the_upstream_only_as_the_gateway_vouches_for_it() {
    let op = HostileOp::start(Attack::None);
    let up = LenientUpstream::start();
    let mut toml = Toml::new()
        .session(SECRET, "")
        .provider("op", &op.issuer, "s", "http://127.0.0.1:1", "")
        .raw("[[consumers]]\nusername = \"guest\"")
        .upstream("up", &up.address());
    for (name, auth) in [
        ("bearer", r#"provider = "op", methods = ["bearer"]"#),
        (
            "optional",
            r#"provider = "op", methods = ["bearer"], mode = "optional""#,
        ),
        (
            "anonymous",
            r#"provider = "op", methods = ["bearer"], anonymous = "guest""#,
        ),
        (
            "preflight",
            r#"provider = "op", methods = ["bearer"], run_on_preflight = false"#,
        ),
        ("public", ""),
    ] {
        toml = toml.route(name, &[&format!("/{name}")], "up", auth, "");
    }
    let gw = GatewayProcess::start(&toml.build());
    let now = unix_now();
    let token = mint(
        &serde_json::json!({"iss": op.issuer, "sub": "alice", "aud": "gateway", "exp": now + 300, "iat": now}),
        "key1",
    );
    wait_for_keys(&gw, "/bearer", &token);
    up.take();

    let forwarded_authorization = |line: &str, headers: &[&str]| -> (u16, Option<Vec<String>>) {
        let r = raw(gw.port, line, headers);
        let got = up.take();
        assert!(got.len() <= 1);
        (
            r.status,
            got.first().map(|g| g.header_values("authorization")),
        )
    };
    let basic = "Authorization: Basic YWxpY2U6c2VjcmV0";
    let forged = "Authorization: Bearer forged.token.here";
    let valid = format!("Authorization: Bearer {token}");
    let none: Option<Vec<String>> = Some(vec![]);

    // Optional mode, no credential accepted: the client's header does not pass as if vouched for.
    assert_eq!(
        forwarded_authorization("GET /optional HTTP/1.1", &[basic]),
        (200, none.clone())
    );
    // The anonymous consumer: neither a foreign scheme nor a refused token passes.
    assert_eq!(
        forwarded_authorization("GET /anonymous HTTP/1.1", &[basic]),
        (200, none.clone())
    );
    assert_eq!(
        forwarded_authorization("GET /anonymous HTTP/1.1", &[forged]),
        (200, none.clone())
    );
    // A CORS preflight let through unauthenticated.
    assert_eq!(
        forwarded_authorization(
            "OPTIONS /preflight HTTP/1.1",
            &[
                "Origin: https://spa.test",
                "Access-Control-Request-Method: POST",
                basic
            ]
        ),
        (200, none.clone())
    );
    // The validated token is forwarded, once.
    assert_eq!(
        forwarded_authorization("GET /bearer HTTP/1.1", &[&valid]),
        (200, Some(vec![format!("Bearer {token}")]))
    );
    assert_eq!(
        forwarded_authorization("GET /optional HTTP/1.1", &[&valid]),
        (200, Some(vec![format!("Bearer {token}")]))
    );
    // Check the first, forward both: refused, on every route.
    for path in ["/bearer", "/optional", "/public"] {
        assert_eq!(
            forwarded_authorization(&format!("GET {path} HTTP/1.1"), &[&valid, forged]),
            (400, None),
            "{path}"
        );
    }
    // Public routes are not the gateway's to authenticate: one header passes as sent.
    assert_eq!(
        forwarded_authorization("GET /public HTTP/1.1", &[basic]),
        (200, Some(vec!["Basic YWxpY2U6c2VjcmV0".to_owned()]))
    );
}

#[test]
fn override_client_ip_scheme_and_identity_headers_never_pass_from_clients() {
    let up = LenientUpstream::start();
    let gw = GatewayProcess::start_with(GatewayOptions {
        body: &Toml::new()
            .upstream("up", &up.address())
            .route("site", &[], "up", "", "")
            .build(),
        server_extra: "scrub_headers = [\"X-Tenant\"]\nkeep_headers = [\"X-Email\"]",
        ..Default::default()
    });
    let sent = [
        "X-Original-URL: /admin",
        "X-Rewrite-URL: /admin",
        "X-HTTP-Method-Override: DELETE",
        "X_HTTP_Method_Override: DELETE",
        "True-Client-IP: 6.6.6.6",
        "X-Client-IP: 6.6.6.6",
        "CF-Connecting-IP: 6.6.6.6",
        "X-Forwarded-Scheme: https",
        "X-Forwarded-Ssl: on",
        "X-User: admin",
        "X_User: admin",
        "X-Tenant: other",
        "X-Email: kept@example.com",
        "Accept: */*",
    ];
    let r = raw(gw.port, "GET /x HTTP/1.1", &sent);
    assert_eq!(r.status, 200, "{}", r.text);
    let got = up.take().pop().unwrap();
    let names: Vec<String> = got
        .headers
        .iter()
        .map(|(n, _)| n.to_ascii_lowercase())
        .collect();
    for gone in [
        "x-original-url",
        "x-rewrite-url",
        "x-http-method-override",
        "x_http_method_override",
        "true-client-ip",
        "x-client-ip",
        "cf-connecting-ip",
        "x-forwarded-scheme",
        "x-forwarded-ssl",
        "x-user",
        "x_user",
        "x-tenant",
    ] {
        assert!(
            !names.contains(&gone.to_owned()),
            "{gone} reached the upstream: {names:?}"
        );
    }
    assert_eq!(
        got.header_values("x-email"),
        vec!["kept@example.com"],
        "keep_headers"
    );
    assert_eq!(got.header_values("accept"), vec!["*/*"]);
    assert_eq!(got.header_values("x-forwarded-for"), vec!["127.0.0.1"]);

    // Content-Length: agreeing duplicates go upstream as one value; disagreeing ones are refused.
    let post = |cl: &[&str]| {
        let mut req = format!(
            "POST /form HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n",
            gw.port
        );
        for v in cl {
            req.push_str(&format!("Content-Length: {v}\r\n"));
        }
        req.push_str("\r\nhello");
        raw_request(gw.port, req.as_bytes(), Duration::from_secs(5))
    };
    assert_eq!(post(&["5", "5"]).status, 200);
    assert_eq!(post(&["5, 5"]).status, 200);
    for got in up.take() {
        assert_eq!(
            got.header_values("content-length"),
            vec!["5"],
            "{:?}",
            got.headers
        );
        assert_eq!(got.body, b"hello");
    }
    assert_eq!(post(&["5", "6"]).status, 400);
    assert_eq!(post(&["5, 6"]).status, 400);
    assert_eq!(up.count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn one_account_logging_in_again_and_again_evicts_idle_sessions_not_active_ones() {
    const CAP: usize = 128;
    let op = HostileOp::start(Attack::None);
    let up = TestUpstream::start("app");
    // The attacker's logins are throttled by default; this test is about eviction.
    let (gw, origin) = login_gateway(
        &op,
        &up,
        &format!("store = \"memory\"\nmemory_max_sessions = {CAP}"),
        "login_rate_limit = 0",
    );
    let app = format!("{origin}/app");
    let login = || async {
        let b = Browser::new();
        // Discovery runs in the background: retry until the sign-in redirect works.
        for _ in 0..100 {
            let page = b.navigate(&app, None).await;
            if page.status == 200 {
                return b;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("could not sign in:\n{}", gw.log());
    };
    let signed_in = |b: &Browser| {
        let b = b.client.get(&app).header("Accept", "text/html").send();
        async move { b.await.unwrap().status() == 200 }
    };
    // Half the capacity signs in and goes idle; four users keep browsing.
    let mut idle = Vec::new();
    for _ in 0..CAP / 2 {
        idle.push(login().await);
    }
    let mut active = Vec::new();
    for _ in 0..4 {
        active.push(login().await);
    }
    // One account signs in ten times the capacity, four logins at a time.
    for round in 0..(10 * CAP / 4) {
        futures_util::future::join_all((0..4).map(|_| login())).await;
        for (i, b) in active.iter().enumerate() {
            assert!(
                signed_in(b).await,
                "active user {i} was signed out after {} logins",
                4 * (round + 1)
            );
        }
    }
    let mut idle_left = 0;
    for b in &idle {
        idle_left += usize::from(signed_in(b).await);
    }
    assert_eq!(idle_left, 0, "idle sessions are evicted before active ones");
}

/// Reads from `s` until the peer closes or `limit` passes; returns (closed, elapsed, bytes).
fn read_until_closed(s: &mut std::net::TcpStream, limit: Duration) -> (bool, Duration, String) {
    use std::io::Read;
    let start = std::time::Instant::now();
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let mut out = Vec::new();
    while start.elapsed() < limit {
        let mut buf = [0u8; 4096];
        match s.read(&mut buf) {
            Ok(0) => {
                return (
                    true,
                    start.elapsed(),
                    String::from_utf8_lossy(&out).into_owned(),
                );
            }
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => {
                return (
                    true,
                    start.elapsed(),
                    String::from_utf8_lossy(&out).into_owned(),
                );
            }
        }
    }
    (
        false,
        start.elapsed(),
        String::from_utf8_lossy(&out).into_owned(),
    )
}

fn slow_client_gateway(up: &LenientUpstream, server_extra: &str) -> GatewayProcess {
    GatewayProcess::start_with(GatewayOptions {
        body: &Toml::new()
            .upstream("up", &up.address())
            .raw("read_timeout = \"5s\"")
            .route("site", &[], "up", "", "")
            .build(),
        server_extra,
        ..Default::default()
    })
}

#[test]
fn a_request_header_trickled_a_line_at_a_time_is_cut_off_at_the_deadline() {
    use std::io::Write;
    let up = LenientUpstream::start();
    let gw = slow_client_gateway(&up, "request_header_timeout = \"1s\"");
    // Slowloris: each line resets Pingora's per-read timeout; the whole header has one deadline.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
    let trickle = std::thread::spawn({
        let mut s = s.try_clone().unwrap();
        move || {
            for i in 0..20 {
                std::thread::sleep(Duration::from_millis(250));
                if s.write_all(format!("X-Pad-{i}: y\r\n").as_bytes()).is_err() {
                    return i;
                }
            }
            20
        }
    });
    let (closed, after, _) = read_until_closed(&mut s, Duration::from_secs(4));
    assert!(closed, "the connection is still open after {after:?}");
    assert!(
        after < Duration::from_millis(2500),
        "closed only after {after:?}"
    );
    assert!(trickle.join().unwrap() < 20);
    assert_eq!(up.count(), 0);

    // An idle keep-alive connection is not a slow header: the deadline starts with the request.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    s.write_all(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(1800));
    s.write_all(b"GET /two HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let (closed, _, text) = read_until_closed(&mut s, Duration::from_secs(4));
    assert!(
        closed && text.matches("HTTP/1.1 200").count() == 2,
        "{text}"
    );
    assert_eq!(up.take().len(), 2);
    let metrics = raw_request(
        gw.metrics_port,
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .text;
    assert_eq!(
        metric_value(
            &metrics,
            "oidc_gateway_requests_refused_total{reason=\"header_timeout\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
}

/// The keep-alive idle limit holds on plain HTTP/1 (the gateway's keep-alive loop waits for the
/// next request under it): a connection that goes quiet after an answer is closed on time,
/// one that sends its next request in time is served.
#[test]
fn an_idle_keep_alive_connection_is_closed_at_the_idle_limit() {
    use std::io::Write;
    let up = LenientUpstream::start();
    let gw = slow_client_gateway(&up, "keepalive_timeout = \"1s\"");
    let mut s = std::net::TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    s.write_all(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    s.write_all(b"GET /two HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let (closed, after, text) = read_until_closed(&mut s, Duration::from_secs(5));
    assert!(closed, "still open after {after:?}");
    assert_eq!(text.matches("HTTP/1.1 200").count(), 2, "{text}");
    // Counted from the second answer, which came at once: about 1 s, not Pingora's 60 s.
    assert!(
        after >= Duration::from_millis(900) && after < Duration::from_millis(2500),
        "closed after {after:?}"
    );
    assert_eq!(up.take().len(), 2);
}

#[test]
fn a_request_body_below_the_minimum_rate_gets_408() {
    use std::io::Write;
    let up = LenientUpstream::start();
    let gw = slow_client_gateway(
        &up,
        "request_body_timeout = \"1s\"\nrequest_body_min_rate = 100",
    );
    let head =
        "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n";

    // One byte every 200 ms never waits long enough for the idle limit, but is far below the rate.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    let trickle = std::thread::spawn({
        let mut s = s.try_clone().unwrap();
        move || {
            for _ in 0..40 {
                std::thread::sleep(Duration::from_millis(200));
                if s.write_all(b"x").is_err() {
                    return;
                }
            }
        }
    });
    let (closed, after, text) = read_until_closed(&mut s, Duration::from_secs(6));
    assert!(
        closed && text.starts_with("HTTP/1.1 408"),
        "after {after:?}: {text}"
    );
    assert!(after < Duration::from_secs(3), "{after:?}");
    trickle.join().unwrap();

    // A body that stops: the idle limit.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(&[b'x'; 500]).unwrap();
    let (closed, after, text) = read_until_closed(&mut s, Duration::from_secs(6));
    assert!(
        closed && text.starts_with("HTTP/1.1 408"),
        "after {after:?}: {text}"
    );

    // A body at a normal pace goes through.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(&[b'x'; 1000]).unwrap();
    let (_, _, text) = read_until_closed(&mut s, Duration::from_secs(6));
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let got = up.take();
    assert_eq!(got.last().map(|g| g.body.len()), Some(1000));
}

#[test]
fn connections_beyond_max_connections_are_refused_at_once() {
    use std::io::Write;
    let up = LenientUpstream::start();
    let gw = slow_client_gateway(&up, "max_connections = 3");
    // Three connections held open, idle (the readiness probe of the test harness is long gone).
    std::thread::sleep(Duration::from_millis(200));
    let held: Vec<std::net::TcpStream> = (0..3)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", gw.port)).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut extra = std::net::TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    let _ = extra.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let (closed, after, text) = read_until_closed(&mut extra, Duration::from_secs(3));
    assert!(closed && after < Duration::from_secs(1), "{after:?}");
    assert!(
        text.starts_with("HTTP/1.1 503") && text.contains("too_many_connections"),
        "{text}"
    );
    assert_eq!(up.count(), 0);
    // A slot freed is a slot to use.
    drop(held);
    std::thread::sleep(Duration::from_millis(300));
    let r = raw(gw.port, "GET / HTTP/1.1", &[]);
    assert_eq!(r.status, 200, "{}", r.text);
}

/// A gateway in front of the hostile OP with one browser-login route, `/app`.
fn login_gateway(
    op: &HostileOp,
    up: &TestUpstream,
    session_extra: &str,
    server_extra: &str,
) -> (GatewayProcess, String) {
    let port = free_port();
    let origin = format!("http://127.0.0.1:{port}");
    let gw = GatewayProcess::start_with(GatewayOptions {
        body: &Toml::new()
            .session(SECRET, session_extra)
            .provider("op", &op.issuer, "gateway-secret", &origin, "")
            .upstream("app", &up.address())
            .route("app", &["/app"], "app", r#"provider = "op""#, "")
            .build(),
        port: Some(port),
        server_extra,
        ..Default::default()
    });
    (gw, origin)
}

#[tokio::test(flavor = "multi_thread")]
async fn anonymous_clients_cannot_make_the_gateway_call_the_token_endpoint_freely() {
    let op = HostileOp::start(Attack::None);
    let up = TestUpstream::start("app");
    let (gw, origin) = login_gateway(
        &op,
        &up,
        "",
        "login_rate_limit = 10\ntrusted_proxies = [\"127.0.0.1/32\"]",
    );
    let c = client();
    // Discovery runs in the background; a 503 until it is done does not count.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while c
        .get(format!("{origin}/app"))
        .header("Accept", "text/html")
        .header("X-Forwarded-For", "198.51.100.99")
        .send()
        .await
        .unwrap()
        .status()
        != 302
    {
        assert!(std::time::Instant::now() < deadline, "{}", gw.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let token_calls_before = op
        .state
        .token_requests
        .load(std::sync::atomic::Ordering::SeqCst);

    // The review's attack: a login start, then its callback with the state and a bogus code.
    let attack = |xff: &'static str| {
        let c = c.clone();
        let origin = origin.clone();
        async move {
            let start = c
                .get(format!("{origin}/app"))
                .header("Accept", "text/html")
                .header("X-Forwarded-For", xff)
                .send()
                .await
                .unwrap();
            if start.status() != 302 {
                return (
                    start.status().as_u16(),
                    start.headers().get("retry-after").cloned(),
                    start.text().await.unwrap(),
                );
            }
            let cookie = start.headers()["set-cookie"]
                .to_str()
                .unwrap()
                .split(';')
                .next()
                .unwrap()
                .to_owned();
            let location = start.headers()["location"].to_str().unwrap().to_owned();
            let url = url::Url::parse(&location).unwrap();
            let state = url
                .query_pairs()
                .find(|(k, _)| k == "state")
                .unwrap()
                .1
                .into_owned();
            let cb = c
                .get(format!("{origin}/oauth2/callback?state={state}&code=bogus"))
                .header("Cookie", cookie)
                .header("X-Forwarded-For", xff)
                .send()
                .await
                .unwrap();
            (
                cb.status().as_u16(),
                cb.headers().get("retry-after").cloned(),
                cb.text().await.unwrap(),
            )
        }
    };
    let mut limited = 0;
    for _ in 0..40 {
        let (status, retry_after, body) = attack("203.0.113.7").await;
        if status == 429 {
            limited += 1;
            let wait: u64 = retry_after.unwrap().to_str().unwrap().parse().unwrap();
            assert!((1..=120).contains(&wait));
            assert!(
                body.contains("Too many sign-in attempts") && body.contains("try again in"),
                "{body}"
            );
        }
    }
    assert_eq!(limited, 30, "10 attempts a minute per client, then 429");
    let token_calls = op
        .state
        .token_requests
        .load(std::sync::atomic::Ordering::SeqCst)
        - token_calls_before;
    assert!(
        token_calls <= 10,
        "{token_calls} token calls for one anonymous client"
    );
    // The limit is per client: another address behind the trusted proxy is not affected.
    let (status, _, _) = attack("203.0.113.8").await;
    assert_ne!(status, 429);
    let metrics = gw.metrics().await;
    assert!(
        metric_value(
            &metrics,
            "oidc_gateway_requests_refused_total{reason=\"rate_limited\"}"
        ) >= Some(30.0),
        "{metrics}"
    );
}

/// A gateway whose `/opaque` takes tokens checked by introspection at `op`, trusting the
/// loopback proxy's `X-Forwarded-For`, with `server_extra` limits.
fn introspection_gateway(op: &RealOp, up: &LenientUpstream, server_extra: &str) -> GatewayProcess {
    GatewayProcess::start_with(GatewayOptions {
        body: &Toml::new()
            .session(SECRET, "")
            .provider(
                "op",
                &op.issuer,
                "gateway-secret-0123456789",
                "http://127.0.0.1:1",
                "",
            )
            .upstream("api", &up.address())
            .route(
                "opaque",
                &["/opaque"],
                "api",
                r#"provider = "op", methods = ["introspection"]"#,
                "",
            )
            .build(),
        server_extra: &format!("{server_extra}\ntrusted_proxies = [\"127.0.0.1/32\"]"),
        ..Default::default()
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn introspection_misses_are_limited_per_client() {
    let op = RealOp::start(&op_config("http://127.0.0.1:1", 600));
    let up = LenientUpstream::start();
    let gw = introspection_gateway(&op, &up, "introspection_rate_limit = 3");
    let check = |token: String, xff: &'static str| {
        let c = client();
        let url = gw.url("/opaque");
        async move {
            let r = c
                .get(url)
                .bearer_auth(token)
                .header("X-Forwarded-For", xff)
                .send()
                .await
                .unwrap();
            (
                r.status().as_u16(),
                r.headers()
                    .get("www-authenticate")
                    .map(|v| v.to_str().unwrap().to_owned()),
            )
        }
    };
    // Wait for discovery from another address, so its probes do not spend this client's budget.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (status, _) = check("probe".into(), "198.51.100.1").await;
        if status != 503 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{}", gw.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Every unknown token is a cache miss and an introspection call at the provider.
    for i in 0..3 {
        assert_eq!(check(format!("opaque-{i}"), "203.0.113.7").await.0, 401);
    }
    assert_eq!(check("opaque-3".into(), "203.0.113.7").await.0, 429);
    // A known answer is cached, so it costs the provider nothing and is not limited.
    assert_eq!(check("opaque-0".into(), "203.0.113.7").await.0, 401);
    assert_eq!(check("opaque-3".into(), "203.0.113.8").await.0, 401);
}

/// The lenient upstream's `Cookie` headers of its next request, as bytes.
fn cookies_received(up: &LenientUpstream) -> Vec<Vec<u8>> {
    let got = up.take();
    assert_eq!(got.len(), 1, "{got:?}");
    got[0]
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("cookie"))
        .map(|(_, v)| v.clone())
        .collect()
}

#[test]
fn a_latin1_cookie_does_not_hide_the_gateways_cookies_from_the_strip() {
    // A browser keeps `Set-Cookie: pref=caf\xe9` from any upstream or sibling subdomain and sends
    // the byte back beside the gateway's own cookies; the old code read such a header as
    // not-UTF-8 and skipped it whole, so nothing in it was stripped.
    let up = LenientUpstream::start();
    let gw = GatewayProcess::start(
        &Toml::new()
            .session(SECRET, "")
            .provider(
                "idp",
                "http://127.0.0.1:1/unreachable",
                "gateway-secret",
                "http://127.0.0.1:1",
                "timeout = \"200ms\"",
            )
            .upstream("up", &up.address())
            .route(
                "optional",
                &["/opt"],
                "up",
                r#"provider = "idp", methods = ["bearer"], mode = "optional""#,
                "",
            )
            .route("public", &[], "up", "", "")
            .build(),
    );
    for path in ["/public", "/opt/x"] {
        let mut req =
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n").into_bytes();
        req.extend_from_slice(
            b"Cookie: pref=caf\xe9; oidc_session=stolen-session; theme=dark\r\n\
              Cookie: oidc_session.1=chunk; x=\xff\xfe; oidc_session_login_abc=attempt\r\n\r\n",
        );
        let r = raw_request(gw.port, &req, Duration::from_secs(5));
        assert_eq!(r.status, 200, "{path}: {}", r.text);
        assert_eq!(
            cookies_received(&up),
            vec![b"pref=caf\xe9; theme=dark; x=\xff\xfe".to_vec()],
            "{path}: the gateway's cookies are removed, the others pass byte for byte"
        );
    }
    // A header with nothing of the gateway's is forwarded as it came.
    let mut req = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n".to_vec();
    req.extend_from_slice(b"Cookie: pref=caf\xe9;lone\r\n\r\n");
    assert_eq!(
        raw_request(gw.port, &req, Duration::from_secs(5)).status,
        200
    );
    assert_eq!(cookies_received(&up), vec![b"pref=caf\xe9;lone".to_vec()]);
}

/// Sends `n` sign-in starts (`GET /app`, a browser's navigation) one after the other on one
/// keep-alive connection from the loopback address `from`; the statuses it got.
async fn sign_in_starts_from(port: u16, from: std::net::Ipv4Addr, n: usize) -> Vec<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind((from, 0).into()).unwrap();
    let mut s = socket.connect(([127, 0, 0, 1], port).into()).await.unwrap();
    let mut statuses = Vec::new();
    let mut buf = Vec::new();
    for _ in 0..n {
        s.write_all(b"GET /app HTTP/1.1\r\nHost: x\r\nAccept: text/html\r\n\r\n")
            .await
            .unwrap();
        // One response: its head, then Content-Length bytes of body.
        let mut chunk = [0u8; 4096];
        let (head_end, length) = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                break (end + 4, length);
            }
            let got = tokio::time::timeout(Duration::from_secs(20), s.read(&mut chunk))
                .await
                .expect("the gateway answers")
                .unwrap();
            assert!(got > 0, "closed after {statuses:?}");
            buf.extend_from_slice(&chunk[..got]);
        };
        while buf.len() < head_end + length {
            let got = s.read(&mut chunk).await.unwrap();
            assert!(got > 0, "closed mid-body");
            buf.extend_from_slice(&chunk[..got]);
        }
        statuses.push(std::str::from_utf8(&buf[9..12]).unwrap().parse().unwrap());
        buf.drain(..head_end + length);
    }
    statuses
}

#[tokio::test(flavor = "multi_thread")]
async fn thousands_of_addresses_each_under_the_limit_never_lock_out_a_new_one() {
    // The review's flood: many source addresses, each under its own limit. The old limiter's
    // count-min sketch (4 x 1,024 cells) filled up, and every client never seen got 429.
    let op = HostileOp::start(Attack::None);
    let up = TestUpstream::start("app");
    let (gw, origin) = login_gateway(&op, &up, "", "login_rate_limit = 5");
    gw.wait_discovered("/app").await;
    let addr = |i: u32| std::net::Ipv4Addr::from(0x7f01_0000 + i);
    let started = std::time::Instant::now();
    let mut flood = tokio::task::JoinSet::new();
    let next = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    for _ in 0..48 {
        let next = next.clone();
        let port = gw.port;
        flood.spawn(async move {
            let mut limited = 0;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= 4_000 {
                    return limited;
                }
                let got = sign_in_starts_from(port, addr(i), 4).await;
                assert_eq!(got.len(), 4, "{got:?}");
                limited += got.iter().filter(|&&s| s == 429).count();
            }
        });
    }
    let limited: usize = flood.join_all().await.into_iter().sum();
    assert_eq!(limited, 0, "no address went over its own limit");
    eprintln!(
        "16,000 sign-in starts from 4,000 addresses in {:?}",
        started.elapsed()
    );

    // Addresses that never sent a request are not limited by any of that.
    for i in 0..20 {
        let fresh = std::net::Ipv4Addr::new(127, 200, 0, i + 1);
        assert_eq!(
            sign_in_starts_from(gw.port, fresh, 1).await,
            vec![302],
            "{fresh}"
        );
    }
    // A flooding address is still held to its own limit, exactly.
    assert_eq!(
        sign_in_starts_from(gw.port, addr(7), 2).await,
        vec![302, 429]
    );
    // And a new browser signs in from start to end.
    let b = Browser::from_address(Some(std::net::Ipv4Addr::new(127, 201, 0, 1).into()));
    let page = b
        .navigate(&format!("{origin}/app/after-the-flood"), None)
        .await;
    assert_eq!(page.status, 200, "{}\n{:?}", page.body, page.trail);
    assert_eq!(page.json()["headers"]["x-auth-request-user"][0], "alice");
}

#[test]
fn an_upgrade_header_does_not_lift_the_body_deadlines() {
    use std::io::Write;
    let up = LenientUpstream::start();
    let gw = slow_client_gateway(
        &up,
        "request_body_timeout = \"1s\"\nrequest_body_min_rate = 100",
    );
    // The old code took `Upgrade:` as a tunnel before the upstream agreed to anything, and let
    // this body trickle for as long as the client liked.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    s.write_all(
        b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\
          Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    )
    .unwrap();
    let trickle = std::thread::spawn({
        let mut s = s.try_clone().unwrap();
        move || {
            for _ in 0..25 {
                std::thread::sleep(Duration::from_millis(400));
                if s.write_all(b"x").is_err() {
                    return;
                }
            }
        }
    });
    let (closed, after, text) = read_until_closed(&mut s, Duration::from_secs(8));
    assert!(closed, "still open after {after:?}: {text}");
    assert!(
        after < Duration::from_secs(4),
        "closed only after {after:?}"
    );
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
    trickle.join().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn clients_that_never_read_do_not_hold_connection_slots() {
    use tokio::io::AsyncWriteExt;
    let up = TestUpstream::start("big");
    let gw = GatewayProcess::start_with(GatewayOptions {
        body: &Toml::new()
            .upstream("up", &up.address())
            .route("site", &[], "up", "", "")
            .build(),
        server_extra: "max_connections = 5\nresponse_write_timeout = \"2s\"",
        ..Default::default()
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Five clients with a small receive buffer ask for 16 MB each and never read.
    let mut hogs = Vec::new();
    for _ in 0..5 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut s = socket
            .connect(([127, 0, 0, 1], gw.port).into())
            .await
            .unwrap();
        s.write_all(b"GET /big?mb=16 HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        hogs.push(s);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let port = gw.port;
    let status = move || tokio::task::block_in_place(|| raw(port, "GET / HTTP/1.1", &[]));
    let r = status();
    assert_eq!(r.status, 503, "the five hold every slot: {}", r.text);
    // Their writes stall; past response_write_timeout the gateway gives up on them. (Before
    // there was a write deadline, new clients got 503 for 80 s.)
    let deadline = std::time::Instant::now() + Duration::from_secs(6);
    loop {
        let r = status();
        if r.status == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still refused: {}\n{}",
            r.text,
            gw.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(hogs);
}

#[test]
fn a_get_with_a_body_is_refused_and_nothing_reaches_the_upstream() {
    // A lenient upstream does not read a GET's body, and takes it for the next request on the
    // pooled connection: here a request to /admin that no route or rule ever saw.
    let public = LenientUpstream::start();
    let private = LenientUpstream::start();
    let gw = GatewayProcess::start(&layout(&public, &private));
    let smuggled = "GET /admin HTTP/1.1\r\nHost: x\r\nX-Auth-Request-User: admin\r\n\r\n";
    for (method, framing, body) in [
        (
            "GET",
            format!("Content-Length: {}", smuggled.len()),
            smuggled.to_owned(),
        ),
        (
            "GET",
            "Transfer-Encoding: chunked".to_owned(),
            format!("{:x}\r\n{smuggled}\r\n0\r\n\r\n", smuggled.len()),
        ),
        (
            "HEAD",
            format!("Content-Length: {}", smuggled.len()),
            smuggled.to_owned(),
        ),
    ] {
        let req = format!(
            "{method} /docs HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{framing}\r\n\r\n{body}"
        );
        let r = raw_request(gw.port, req.as_bytes(), Duration::from_secs(5));
        assert_eq!(r.status, 400, "{method} {framing}: {}", r.text);
        if method == "GET" {
            assert!(r.text.contains("body_not_allowed"), "{}", r.text);
        }
    }
    assert_eq!(public.count() + private.count(), 0, "{:?}", public.take());
    // A GET without a body (or with an empty one) goes through as before.
    let r = raw(gw.port, "GET /docs HTTP/1.1", &["Content-Length: 0"]);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(public.take()[0].line_lossy(), "GET /docs HTTP/1.1");
}

#[test]
fn an_optional_route_passes_a_browser_without_a_credential_whatever_its_methods() {
    // `mode = "optional"` with the default methods used to send browsers to sign in (and API
    // clients got 401): `authorization_code` answered before `optional` was looked at.
    let up = LenientUpstream::start();
    let gw = GatewayProcess::start(
        &Toml::new()
            .session(SECRET, "")
            .provider(
                "idp",
                "http://127.0.0.1:1/unreachable",
                "gateway-secret",
                "http://127.0.0.1:1",
                "timeout = \"200ms\"",
            )
            .upstream("up", &up.address())
            .route(
                "optional",
                &[],
                "up",
                r#"provider = "idp", mode = "optional""#,
                "",
            )
            .build(),
    );
    for accept in ["text/html", "application/json"] {
        let r = raw(
            gw.port,
            "GET /page HTTP/1.1",
            &[&format!("Accept: {accept}"), "X-Auth-Request-User: mallory"],
        );
        assert_eq!(r.status, 200, "{accept}: {}", r.text);
        let got = up.take();
        assert!(got[0].header_values("x-auth-request-user").is_empty());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn past_the_provider_call_ceiling_only_repeat_callers_wait() {
    let op = RealOp::start(&op_config("http://127.0.0.1:1", 600));
    let up = LenientUpstream::start();
    let gw = introspection_gateway(&op, &up, "provider_call_limit = 1");
    let c = client();
    let check = |token: String, xff: String| {
        let r = c
            .get(gw.url("/opaque"))
            .bearer_auth(token)
            .header("X-Forwarded-For", xff)
            .send();
        async move {
            let r = r.await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut n = 0;
    while check("probe".into(), format!("198.51.100.{}", n % 200 + 1))
        .await
        .0
        == 503
    {
        assert!(std::time::Instant::now() < deadline, "{}", gw.log());
        n += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // One call a second: a client calling again and again soon waits (503, retry in 1 s)...
    let mut busy = 0;
    for i in 0..6 {
        let (status, body) = check(format!("opaque-{i}"), "203.0.113.7".into()).await;
        match status {
            401 => {}
            503 => {
                assert!(body.contains("provider_busy"), "{body}");
                busy += 1;
            }
            other => panic!("{other}: {body}"),
        }
    }
    assert!(busy >= 1, "the ceiling never held a repeat caller");
    // ...while a client's first call of the minute always goes through.
    for i in 1..=5 {
        let (status, body) = check(format!("first-{i}"), format!("192.0.2.{i}")).await;
        assert_eq!(status, 401, "{body}");
    }
}
