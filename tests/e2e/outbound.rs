//! Calls to the provider through a real forward proxy (Debian's tinyproxy, started by the
//! test), whose log shows what went through it: with `http_proxy`, discovery, keys, token,
//! userinfo, introspection and revocation all do; the environment's `HTTP_PROXY` is followed by
//! default and ignored with `proxy_from_env = false`; `no_proxy` goes direct.

use crate::support;
use support::front::FrontProxy;
use support::*;

const SECRET: &str = "outbound-test-session-secret-0123456789ab";
const CLIENT_SECRET: &str = "gateway-secret-0123456789";

/// The requests the proxy forwarded to `origin` (`http://127.0.0.1:PORT`), as
/// "METHOD path" lines.
fn forwarded(proxy: &FrontProxy, origin: &str) -> Vec<String> {
    proxy
        .logs()
        .lines()
        .filter_map(|l| {
            let request = l.split_once("): ")?.1;
            let (method, rest) = request.split_once(' ')?;
            let path = rest.strip_prefix(origin)?.split(' ').next()?;
            Some(format!("{method} {path}"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_call_to_the_provider_goes_through_the_configured_proxy() {
    let proxy = FrontProxy::tinyproxy();
    let up = TestUpstream::start("app");
    let port = free_port();
    let origin = format!("http://127.0.0.1:{port}");
    let op = RealOp::start(&op_config(&origin, 3600));
    let body = Toml::new()
        .session(SECRET, "")
        .provider(
            "op",
            &op.issuer,
            CLIENT_SECRET,
            &origin,
            &format!("http_proxy = \"http://127.0.0.1:{}\"", proxy.port),
        )
        .upstream("app", &up.address())
        .route("app", &["/app"], "app", r#"provider = "op""#, "")
        .route(
            "opaque",
            &["/opaque"],
            "app",
            r#"provider = "op", methods = ["introspection"]"#,
            "",
        )
        .build();
    // A configured proxy wins over the environment's (here one that answers nothing).
    let gw = GatewayProcess::start_with(GatewayOptions {
        body: &body,
        port: Some(port),
        env: &[
            ("HTTP_PROXY", "http://127.0.0.1:1"),
            ("http_proxy", "http://127.0.0.1:1"),
        ],
        ..Default::default()
    });
    gw.wait_discovered("/app/").await;
    let said = format!(
        "calls to the provider go through the proxy http://127.0.0.1:{} (http_proxy)",
        proxy.port
    );
    let log = gw.log_containing(&[&said]);
    assert!(log.contains(&said), "{log}");

    // Sign in (token, userinfo), present an opaque token (introspection), sign out (revocation).
    let b = Browser::new();
    let page = b
        .navigate(&format!("{origin}/app/"), Some(("alice", "wonderland")))
        .await;
    assert_eq!(page.status, 200, "{}", gw.log());
    let opaque = {
        let r = client()
            .post(format!("{}/token", op.issuer))
            .basic_auth("gateway", Some(CLIENT_SECRET))
            .form(&[
                ("grant_type", "client_credentials"),
                ("resource", "https://opaque.example.com"),
                ("scope", "orders:read"),
            ])
            .send()
            .await
            .unwrap();
        let v: serde_json::Value = r.json().await.unwrap();
        v["access_token"].as_str().unwrap().to_owned()
    };
    let r = client()
        .get(format!("{origin}/opaque/"))
        .bearer_auth(&opaque)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", gw.log());
    let out = b.post(&format!("{origin}/oauth2/logout")).await;
    assert!(out.status().is_redirection(), "{}", out.status());
    // Revocation runs off the user's path: wait until the gateway has done it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !gw
        .metrics()
        .await
        .contains("oidc_gateway_token_revocations_total{provider=\"op\",result=\"revoked\"}")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no revocation:\n{}",
            gw.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    let seen = forwarded(&proxy, &op.issuer);
    for call in [
        "GET /.well-known/openid-configuration",
        "GET /jwks",
        "POST /token",
        "GET /me",
        "POST /token/introspection",
        "POST /token/revocation",
    ] {
        assert!(
            seen.iter().any(|s| s == call),
            "{call} did not go through the proxy: {seen:?}\n{}",
            proxy.logs()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_environments_proxy_is_followed_by_default_ignored_when_told_and_no_proxy_goes_direct()
{
    let proxy = FrontProxy::tinyproxy();
    let proxy_url = format!("http://127.0.0.1:{}", proxy.port);
    let start = |op: &HostileOp, provider_extra: &str, env: &[(&str, &str)]| {
        let port = free_port();
        let origin = format!("http://127.0.0.1:{port}");
        let body = Toml::new()
            .session(SECRET, "")
            .provider("op", &op.issuer, CLIENT_SECRET, &origin, provider_extra)
            .upstream("app", "127.0.0.1:9")
            .route("app", &["/app"], "app", r#"provider = "op""#, "")
            .build();
        GatewayProcess::start_with(GatewayOptions {
            body: &body,
            port: Some(port),
            env,
            ..Default::default()
        })
    };
    let (followed, ignored, bypassed) = (
        HostileOp::start(Attack::None),
        HostileOp::start(Attack::None),
        HostileOp::start(Attack::None),
    );
    // The default: HTTP_PROXY is followed, and the start-up log says so.
    let env_proxy = [("HTTP_PROXY", proxy_url.as_str())];
    let a = start(&followed, "", &env_proxy);
    // proxy_from_env = false: the same environment is ignored.
    let b = start(&ignored, "proxy_from_env = false", &env_proxy);
    // no_proxy: the configured proxy is skipped for the provider's host.
    let c = start(
        &bypassed,
        &format!("http_proxy = \"{proxy_url}\"\nno_proxy = [\"127.0.0.1\"]"),
        &[],
    );
    for gw in [&a, &b, &c] {
        gw.wait_discovered("/app/").await;
    }
    for (gw, said) in [
        (&a, "through the proxy in HTTP_PROXY"),
        (&b, "direct (proxy_from_env = false)"),
        (&c, "except to 127.0.0.1"),
    ] {
        let log = gw.log_containing(&[said]);
        assert!(log.contains(said), "{log}");
    }
    let through = |op: &HostileOp| forwarded(&proxy, &op.issuer);
    assert!(
        through(&followed).contains(&"GET /.well-known/openid-configuration".to_owned()),
        "{}",
        proxy.logs()
    );
    assert!(through(&ignored).is_empty(), "{}", proxy.logs());
    assert!(through(&bypassed).is_empty(), "{}", proxy.logs());
}

/// A provider that authenticates its client by the TLS client certificate (RFC 8705
/// `tls_client_auth`): the real OP behind nginx, which terminates TLS, asks for a client
/// certificate and passes it on. The gateway trusts the test CA (`ca_file`) and presents
/// `client_cert_file`; a certificate the provider has not registered is refused.
#[tokio::test(flavor = "multi_thread")]
async fn a_provider_requiring_a_client_certificate_accepts_the_configured_one_only() {
    let pki = Pki::new();
    let tls_port = free_port();
    let issuer = format!("https://127.0.0.1:{tls_port}");
    let up = TestUpstream::start("app");
    let (port_ok, port_bad) = (free_port(), free_port());
    let origin = |p: u16| format!("http://127.0.0.1:{p}");
    let mut cfg = op_config(&origin(port_ok), 3600);
    cfg["issuer"] = issuer.clone().into();
    cfg["client_cert_header"] = "x-ssl-client-cert".into();
    let client = &mut cfg["clients"][0];
    client.as_object_mut().unwrap().remove("client_secret");
    client["token_endpoint_auth_method"] = "tls_client_auth".into();
    client["tls_client_auth_subject_dn"] = "CN=gateway".into();
    client["redirect_uris"] = serde_json::json!([
        format!("{}/oauth2/callback", origin(port_ok)),
        format!("{}/oauth2/callback", origin(port_bad)),
    ]);
    let op = RealOp::start(&cfg);
    let _tls = FrontProxy::nginx(&format!(
        "    listen 127.0.0.1:{tls_port} ssl;\n\
         ssl_certificate {srv};\nssl_certificate_key {srv_key};\n\
         ssl_client_certificate {ca};\nssl_verify_client optional;\n\
         location / {{\n  proxy_pass {listen};\n  proxy_set_header Host $http_host;\n\
         proxy_set_header X-Forwarded-Proto https;\n\
         proxy_set_header X-SSL-Client-Cert $ssl_client_escaped_cert;\n}}\n",
        srv = pki.path("server.pem"),
        srv_key = pki.path("server.key"),
        ca = pki.path("ca.pem"),
        listen = op.listen,
    ));
    let gateway = |port: u16, cert: &str| {
        let body = Toml::new()
            .session(SECRET, "")
            .provider(
                "op",
                &issuer,
                "unused",
                &origin(port),
                &format!(
                    "client_auth = \"tls_client_auth\"\nca_file = \"{}\"\n\
                     client_cert_file = \"{}\"\nclient_key_file = \"{}\"",
                    pki.path("ca.pem"),
                    pki.path(&format!("{cert}.pem")),
                    pki.path(&format!("{cert}.key")),
                ),
            )
            .upstream("app", &up.address())
            .route("app", &["/app"], "app", r#"provider = "op""#, "")
            .build();
        GatewayProcess::start_with(GatewayOptions {
            body: &body,
            port: Some(port),
            ..Default::default()
        })
    };
    let (ok, bad) = (gateway(port_ok, "gateway"), gateway(port_bad, "intruder"));
    ok.wait_discovered("/app/").await;
    bad.wait_discovered("/app/").await;
    let ca = std::fs::read(pki.path("ca.pem")).unwrap();

    // The registered certificate: the code exchange and userinfo pass, the user is signed in.
    let b = Browser::trusting(&ca);
    let page = b
        .navigate(
            &format!("{}/app/", origin(port_ok)),
            Some(("alice", "wonderland")),
        )
        .await;
    assert_eq!(
        page.status,
        200,
        "{}\n{}\n{}",
        page.body,
        ok.log(),
        op.log()
    );

    // Another certificate of the same CA: the provider refuses the client at the token
    // endpoint, and the callback says the sign-in could not be completed.
    let b = Browser::trusting(&ca);
    let page = b
        .navigate(
            &format!("{}/app/", origin(port_bad)),
            Some(("alice", "wonderland")),
        )
        .await;
    assert_eq!(page.status, 502, "{}\n{}", page.body, bad.log());
    let log = bad.log_containing(&["token_exchange_failed"]);
    assert!(log.contains("invalid_client"), "{log}");
}

/// The unhappy path: the configured proxy does not answer. The provider is never reached
/// directly instead (no silent bypass); sign-in answers 503, and `/readyz` says what failed.
#[tokio::test(flavor = "multi_thread")]
async fn a_proxy_that_is_down_makes_sign_in_unavailable_and_readyz_says_why() {
    let op = HostileOp::start(Attack::None);
    let dead = free_port(); // nothing listens there
    let port = free_port();
    let origin = format!("http://127.0.0.1:{port}");
    let body = Toml::new()
        .session(SECRET, "")
        .provider(
            "op",
            &op.issuer,
            CLIENT_SECRET,
            &origin,
            &format!("http_proxy = \"http://127.0.0.1:{dead}\"\nconnect_timeout = \"1s\""),
        )
        .upstream("app", "127.0.0.1:9")
        .route("app", &["/app"], "app", r#"provider = "op""#, "")
        .build();
    let gw = GatewayProcess::start_with(GatewayOptions {
        body: &body,
        port: Some(port),
        ..Default::default()
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let ready = loop {
        let (status, ready) = gw.readyz().await;
        let ready: serde_json::Value = serde_json::from_str(&ready).unwrap_or_default();
        let error = ready["providers"]["op"]["error"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if !error.is_empty() && error != "no attempt has finished yet" {
            assert_eq!(status, 503, "{ready}");
            break ready;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{ready}\n{}",
            gw.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let r = client()
        .get(gw.url("/app/"))
        .header("Accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503, "{ready}");
    let reached = op.state.requests.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(reached, 0, "the provider was reached around the proxy");
    let log = gw.log_containing(&["discovery failed"]);
    assert!(log.contains("discovery failed"), "{log}");
}
