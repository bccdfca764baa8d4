//! Browser login against a real, certified OpenID Provider (`oidc-provider` from npm), driven
//! through the running gateway binary with a cookie-keeping client that fills the OP's forms.

mod support;

use std::time::{Duration, Instant};
use support::*;

const SECRET: &str = "test-session-secret-0123456789abcdef-0123456789";

struct Setup {
    op: RealOp,
    gw: GatewayProcess,
    up: TestUpstream,
    origin: String,
}

fn gateway_body(issuer: &str, origin: &str, upstream: &str, session_extra: &str) -> String {
    format!(
        r#"
[session]
secrets = ["${{SESSION_SECRET}}"]
{session_extra}

[[providers]]
name = "op"
issuer = "{issuer}"
client_id = "gateway"
client_secret = "${{OP_CLIENT_SECRET}}"
redirect_uri = "{origin}/oauth2/callback"
logout_redirect_uri = "{origin}/bye"
leeway = "1s"
upstream_id_token_header = "X-Id-Token"

[[upstreams]]
name = "app"
targets = ["{upstream}"]

[[routes]]
name = "app"
paths = ["/app"]
upstream = "app"
auth = {{ provider = "op" }}

[[routes]]
name = "public"
paths = ["/"]
upstream = "app"
"#
    )
}

async fn setup(access_token_ttl: u64, session_extra: &str) -> Setup {
    let up = TestUpstream::start("app");
    let port = free_port();
    let origin = format!("http://127.0.0.1:{port}");
    let op = RealOp::start(&op_config(&origin, access_token_ttl));
    let body = gateway_body(&op.issuer, &origin, &up.address(), session_extra);
    let gw = GatewayProcess::start_with(GatewayOptions {
        body: &body,
        port: Some(port),
        env: &[
            ("SESSION_SECRET", SECRET),
            ("OP_CLIENT_SECRET", "gateway-secret-0123456789"),
        ],
        ..Default::default()
    });
    wait_discovered(&gw).await;
    Setup { op, gw, up, origin }
}

/// Discovery runs in the background: until it is done a login answers 503.
async fn wait_discovered(gw: &GatewayProcess) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = client()
            .get(gw.url("/app/"))
            .header("Accept", "text/html")
            .send()
            .await
            .unwrap();
        if r.status() == 302 {
            return;
        }
        assert_eq!(
            r.status(),
            503,
            "unexpected answer while waiting for discovery"
        );
        assert!(
            Instant::now() < deadline,
            "provider never discovered:\n{}",
            gw.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn login_then_session_without_idp_traffic_then_logout() {
    let s = setup(3600, "").await;
    let b = Browser::new();
    let url = format!("{}/app/hello?x=1", s.origin);

    // Unauthenticated: a redirect to the OP's authorization endpoint with state, nonce, PKCE.
    let first = b
        .client
        .get(&url)
        .header("Accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 302);
    let loc = first.headers()["location"].to_str().unwrap().to_owned();
    assert!(loc.starts_with(&format!("{}/auth?", s.op.issuer)), "{loc}");
    for p in [
        "state=",
        "nonce=",
        "code_challenge=",
        "code_challenge_method=S256",
        "scope=openid",
    ] {
        assert!(loc.contains(p), "{p} missing from {loc}");
    }
    let login_cookie = first
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect::<Vec<_>>();
    assert!(
        login_cookie
            .iter()
            .any(|c| c.starts_with("oidc_session_login_")
                && c.contains("HttpOnly")
                && c.contains("SameSite=Lax")),
        "{login_cookie:?}"
    );
    assert_eq!(
        s.up.hits.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the upstream saw an unauthenticated request"
    );

    // Log in through the OP's real forms; land on the original URL, served by the upstream.
    let page = b.navigate(&url, Some(("alice", "wonderland"))).await;
    assert_eq!(
        page.status,
        200,
        "{}\ntrail: {:?}\n{}",
        page.body,
        page.trail,
        s.gw.log()
    );
    assert_eq!(page.url, url);
    let echo = page.json();
    assert_eq!(echo["uri"], "/app/hello?x=1");
    let h = &echo["headers"];
    assert_eq!(h["x-auth-request-user"][0], "alice-id");
    assert_eq!(h["x-auth-request-email"][0], "alice@example.com");
    assert!(
        h["authorization"][0]
            .as_str()
            .unwrap()
            .starts_with("Bearer "),
        "{h}"
    );
    assert!(h["x-id-token"][0].as_str().unwrap().split('.').count() == 3);
    let cookies_upstream = h["cookie"].to_string();
    assert!(
        !cookies_upstream.contains("oidc_session"),
        "gateway cookies leaked upstream: {cookies_upstream}"
    );

    // Next request: served from the session, no traffic at the OP.
    let before = s.op.request_count().await;
    for _ in 0..5 {
        let page = b.navigate(&url, None).await;
        assert_eq!(page.status, 200);
        assert_eq!(page.json()["headers"]["x-auth-request-user"][0], "alice-id");
    }
    assert_eq!(
        s.op.request_count().await,
        before,
        "session requests must not call the IdP"
    );

    // The userinfo endpoint describes the session (claims, never tokens).
    let info = b
        .navigate(&format!("{}/oauth2/userinfo", s.origin), None)
        .await;
    assert_eq!(info.status, 200);
    let info_json = info.json();
    assert_eq!(info_json["sub"], "alice-id");
    assert_eq!(info_json["claims"]["email"], "alice@example.com");
    assert!(
        !info.body.contains("eyJ"),
        "userinfo must not expose tokens: {}",
        info.body
    );

    // Logout (POST): session destroyed, redirect to the OP's end_session with id_token_hint.
    let out = b.post(&format!("{}/oauth2/logout", s.origin)).await;
    assert_eq!(out.status(), 302);
    let end = out.headers()["location"].to_str().unwrap().to_owned();
    assert!(
        end.starts_with(&format!("{}/session/end?", s.op.issuer)),
        "{end}"
    );
    assert!(
        end.contains("id_token_hint=")
            && end.contains("client_id=gateway")
            && end.contains("post_logout_redirect_uri="),
        "{end}"
    );
    let cleared = out
        .headers()
        .get_all("set-cookie")
        .iter()
        .any(|v| v.to_str().unwrap().starts_with("oidc_session=;"));
    assert!(cleared, "logout must clear the session cookie");
    let again = b
        .client
        .get(&url)
        .header("Accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(
        again.status(),
        302,
        "after logout the protected page asks for login again"
    );
}
