//! Pushed Authorization Requests (RFC 9126) against the real `oidc-provider` with
//! `features.pushedAuthorizationRequests`: the browser is sent to the provider with only
//! `client_id` and `request_uri`, with each client authentication method; `required` without
//! the endpoint is a clear 503; `off` sends the parameters through the browser.

use crate::login_real_op::setup_op;
use crate::support::*;

/// Signs alice in through `s`'s gateway; the authorization request the browser was sent to.
async fn signed_in_through(s: &crate::login_real_op::Setup, what: &str) -> url::Url {
    let b = Browser::new();
    let url = format!("{}/app/x", s.origin);
    let page = b.navigate(&url, Some(("alice", "wonderland"))).await;
    assert_eq!(page.status, 200, "{what}:\n{}\n{}", s.gw.log(), s.op.log());
    authorization_request(&page.trail)
}

/// The authorization request the browser was sent to on its way to signing in.
fn authorization_request(trail: &[String]) -> url::Url {
    let found = trail
        .iter()
        .find(|u| u.contains("/auth?") || u.contains("/auth/"))
        .unwrap_or_else(|| panic!("no authorization request in {trail:#?}"));
    url::Url::parse(found).unwrap()
}

fn params(u: &url::Url) -> Vec<String> {
    let mut keys: Vec<String> = u.query_pairs().map(|(k, _)| k.into_owned()).collect();
    keys.sort();
    keys
}

#[tokio::test(flavor = "multi_thread")]
async fn sign_ins_are_pushed_with_every_client_authentication() {
    let keys = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/support/keys");
    let jwk: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{keys}/key1.jwk.json")).unwrap())
            .unwrap();
    for (method, provider_extra) in [
        ("client_secret_basic", String::new()),
        (
            "client_secret_post",
            "client_auth = \"client_secret_post\"".to_owned(),
        ),
        (
            "private_key_jwt",
            format!(
                "client_auth = \"private_key_jwt\"\nclient_private_key_file = \"{keys}/key1.pem\"\nclient_key_id = \"key1\""
            ),
        ),
    ] {
        let s = setup_op(3600, "", &provider_extra, |op| {
            op["par"] = true.into();
            op["clients"][0]["require_pushed_authorization_requests"] = true.into();
            let client = &mut op["clients"][0];
            client["token_endpoint_auth_method"] = method.into();
            if method == "private_key_jwt" {
                client.as_object_mut().unwrap().remove("client_secret");
                client["token_endpoint_auth_signing_alg"] = "RS256".into();
                client["jwks"] = serde_json::json!({ "keys": [jwk] });
            }
        })
        .await;
        let sent = signed_in_through(&s, method).await;
        assert_eq!(
            params(&sent),
            ["client_id", "request_uri"],
            "{method}: the browser carried {sent}"
        );
        assert!(
            sent.query_pairs()
                .any(|(k, v)| k == "request_uri"
                    && v.starts_with("urn:ietf:params:oauth:request_uri:")),
            "{sent}"
        );
        // One push per sign-in started (the readiness probe's included).
        let m = s.gw.metrics().await;
        let pushes = metric_value(
            &m,
            r#"oidc_gateway_idp_request_duration_seconds_count{endpoint="par",provider="op"}"#,
        );
        let started = metric_value(
            &m,
            r#"oidc_gateway_logins_total{provider="op",result="started"}"#,
        );
        assert!(pushes.is_some() && pushes == started, "{method}: {m}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn required_without_the_endpoint_is_a_clear_503_and_off_uses_the_browser() {
    // The provider does not offer PAR; the gateway insists. (Until discovery is done the
    // answer is a 503 too, saying so.)
    let up = TestUpstream::start("app");
    let port = free_port();
    let origin = format!("http://127.0.0.1:{port}");
    let op = RealOp::start(&op_config(&origin, 3600));
    let body = Toml::new()
        .session("par-test-secret-0123456789abcdef0123", "")
        .provider(
            "op",
            &op.issuer,
            "gateway-secret-0123456789",
            &origin,
            "pushed_authorization_requests = \"required\"",
        )
        .upstream("app", &up.address())
        .route("app", &["/app"], "app", r#"provider = "op""#, "")
        .build();
    let gw = GatewayProcess::start_with(GatewayOptions {
        body: &body,
        port: Some(port),
        ..Default::default()
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let r = client()
            .get(gw.url("/app/x"))
            .header("Accept", "text/html")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 503);
        if r.text()
            .await
            .unwrap()
            .contains("pushed_authorization_request_endpoint")
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{}", gw.log());
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    gw.log_containing(&["sign-in not started", "pushed_authorization_requests"]);

    // The provider offers it; `off` keeps the parameters in the front channel.
    let s = setup_op(3600, "", "pushed_authorization_requests = \"off\"", |op| {
        op["par"] = true.into();
    })
    .await;
    let sent = signed_in_through(&s, "off").await;
    for p in ["state", "nonce", "code_challenge", "redirect_uri"] {
        assert!(
            params(&sent).iter().any(|k| k == p),
            "{p} missing from {sent}"
        );
    }
}
