//! Browser login against a real, certified OpenID Provider (`oidc-provider` from npm), driven
//! through the running gateway binary with a cookie-keeping client that fills the OP's forms.

use crate::support;

use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;

const SECRET: &str = "test-session-secret-0123456789abcdef-0123456789";

pub(crate) struct Setup {
    pub op: RealOp,
    pub gw: GatewayProcess,
    pub up: TestUpstream,
    pub origin: String,
}

fn gateway_body(issuer: &str, origin: &str, upstream: &str, session_extra: &str) -> String {
    Toml::new()
        .session("${SESSION_SECRET}", session_extra)
        .provider(
            "op",
            issuer,
            "${OP_CLIENT_SECRET}",
            origin,
            &format!(
                "logout_redirect_uri = \"{origin}/bye\"\nleeway = \"1s\"\nupstream_id_token_header = \"X-Id-Token\""
            ),
        )
        .upstream("app", upstream)
        .route("app", &["/app"], "app", r#"provider = "op""#, "")
        .route("public", &["/"], "app", "", "")
        .build()
}

async fn setup(access_token_ttl: u64, session_extra: &str) -> Setup {
    setup_with(access_token_ttl, session_extra, "").await
}

async fn setup_with(access_token_ttl: u64, session_extra: &str, provider_extra: &str) -> Setup {
    setup_op(access_token_ttl, session_extra, provider_extra, |_| {}).await
}

/// As [`setup_with`], with the OP's configuration changed by `adjust` first.
pub(crate) async fn setup_op(
    access_token_ttl: u64,
    session_extra: &str,
    provider_extra: &str,
    adjust: impl FnOnce(&mut serde_json::Value),
) -> Setup {
    let up = TestUpstream::start("app");
    let port = free_port();
    let origin = format!("http://127.0.0.1:{port}");
    let mut op_cfg = op_config(&origin, access_token_ttl);
    adjust(&mut op_cfg);
    let op = RealOp::start(&op_cfg);
    let body = gateway_body(&op.issuer, &origin, &up.address(), session_extra).replace(
        "leeway = \"1s\"",
        &format!("leeway = \"1s\"\n{provider_extra}"),
    );
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

fn session_cookie(b: &Browser, origin: &str) -> String {
    b.cookie_header(origin)
        .split("; ")
        .find(|c| c.starts_with("oidc_session="))
        .unwrap_or_else(|| panic!("no session cookie in {}", b.cookie_header(origin)))
        .trim_start_matches("oidc_session=")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_password_really_fails() {
    let s = setup(3600, "").await;
    let b = Browser::new();
    let page = b
        .navigate(
            &format!("{}/app/x", s.origin),
            Some(("alice", "not-her-password")),
        )
        .await;
    assert_eq!(page.status, 200);
    assert!(
        page.url.starts_with(&s.op.issuer),
        "still at the OP: {}",
        page.url
    );
    assert!(page.body.contains("Invalid username or password"));
    assert_eq!(s.up.hits.load(std::sync::atomic::Ordering::SeqCst), 0);
    assert!(!b.cookie_header(&s.origin).contains("oidc_session="));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_access_token_is_refreshed_once_for_parallel_requests() {
    let s = setup(3, "").await;
    let b = Arc::new(Browser::new());
    let url = format!("{}/app/r", s.origin);
    let page = b.navigate(&url, Some(("alice", "wonderland"))).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let first_token = page.json()["headers"]["authorization"][0]
        .as_str()
        .unwrap()
        .to_owned();

    // The access token expires (lifetime 3 s, leeway 1 s: the gateway's clock moves 3 s), then
    // parallel requests hit it. Counted from what the login left: on a slow machine its page
    // request may refresh already.
    let refreshed = "oidc_gateway_token_refresh_total{provider=\"op\",result=\"succeeded\"}";
    let before = metric_value(&s.gw.metrics().await, refreshed).unwrap_or(0.0);
    s.gw.advance_clock(3).await;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let b = b.clone();
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let r = b
                .client
                .get(&url)
                .header("Accept", "text/html")
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let json: serde_json::Value = r.json().await.unwrap_or_default();
            (
                status,
                json["headers"]["authorization"][0]
                    .as_str()
                    .unwrap_or("")
                    .to_owned(),
            )
        }));
    }
    let mut tokens = std::collections::HashSet::new();
    for t in tasks {
        let (status, token) = t.await.unwrap();
        assert_eq!(
            status,
            200,
            "a parallel request failed during refresh:\n{}",
            s.gw.log()
        );
        tokens.insert(token);
    }
    assert_eq!(
        tokens.len(),
        1,
        "all parallel requests share one refreshed token: {tokens:?}"
    );
    assert!(!tokens.contains(&first_token), "the token was refreshed");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let m = s.gw.metrics().await;
    assert_eq!(
        metric_value(&m, refreshed),
        Some(before + 1.0),
        "exactly one refresh (the provider rotates refresh tokens: a second use would revoke them)\n{m}"
    );
    // The rotated refresh token keeps working: expire again and refresh again.
    s.gw.advance_clock(3).await;
    let page = b.navigate(&url, None).await;
    assert_eq!(page.status, 200, "second refresh failed:\n{}", s.gw.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_session_needs_a_new_login() {
    let s = setup(3600, "idling_timeout = \"2s\"").await;
    let b = Browser::new();
    let url = format!("{}/app/idle", s.origin);
    assert_eq!(
        b.navigate(&url, Some(("alice", "wonderland"))).await.status,
        200
    );
    assert_eq!(b.navigate(&url, None).await.status, 200);
    s.gw.advance_clock(3).await;
    let r = b
        .client
        .get(&url)
        .header("Accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302, "an idle session must end");
    assert!(
        r.headers()["location"]
            .to_str()
            .unwrap()
            .starts_with(&s.op.issuer)
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let m = s.gw.metrics().await;
    assert_eq!(
        metric_value(
            &m,
            "oidc_gateway_session_lookups_total{result=\"expired\",route=\"app\"}"
        ),
        Some(1.0),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_old_cookie_kept_after_renewal_is_still_served_from_memory() {
    // Renewal every two seconds (a quarter of the idle timeout).
    let s = setup(3600, "idling_timeout = \"8s\"").await;
    let b = Browser::new();
    let url = format!("{}/app/renew", s.origin);
    assert_eq!(
        b.navigate(&url, Some(("alice", "wonderland"))).await.status,
        200
    );
    let session_cookies = || {
        b.cookie_header(&s.origin)
            .split("; ")
            .filter(|c| c.starts_with("oidc_session") && !c.contains("_login_"))
            .collect::<Vec<_>>()
            .join("; ")
    };
    let old = session_cookies();
    s.gw.advance_clock(3).await;
    assert_eq!(b.navigate(&url, None).await.status, 200);
    assert_ne!(
        session_cookies(),
        old,
        "the session was renewed: a new cookie"
    );

    // A client that never stores cookies (a script, a load generator) keeps the old one: it
    // is opened once, then recognised from memory like the current one. (On a slow machine
    // the session may be renewed again meanwhile; each renewal costs one more opening.)
    let cache = |m: &str, result: &str| {
        metric_value(
            m,
            &format!("oidc_gateway_session_cache_total{{result=\"{result}\"}}"),
        )
        .unwrap_or(0.0)
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before = s.gw.metrics().await;
    for _ in 0..10 {
        let r = client()
            .get(&url)
            .header("Cookie", &old)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", s.gw.log());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let after = s.gw.metrics().await;
    let (misses, hits) = (
        cache(&after, "miss") - cache(&before, "miss"),
        cache(&after, "hit") - cache(&before, "hit"),
    );
    assert!(
        (1.0..=3.0).contains(&misses) && misses + hits == 10.0,
        "one decryption (per renewal), then cache hits: {misses} misses, {hits} hits\n{after}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_store_keeps_only_an_id_in_the_cookie() {
    let s = setup(3600, "store = \"memory\"").await;
    let b = Browser::new();
    let url = format!("{}/app/m", s.origin);
    assert_eq!(
        b.navigate(&url, Some(("alice", "wonderland"))).await.status,
        200
    );
    let cookie = session_cookie(&b, &s.origin);
    assert_eq!(cookie.len(), 43, "a 256-bit id, nothing else: {cookie}");
    assert_eq!(b.navigate(&url, None).await.status, 200);
    let out = b.post(&format!("{}/oauth2/logout", s.origin)).await;
    assert_eq!(out.status(), 302);
    // Even with the old cookie replayed, the session is gone.
    let replay = client()
        .get(&url)
        .header("Cookie", format!("oidc_session={cookie}"))
        .header("Accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), 302);
}

#[tokio::test(flavor = "multi_thread")]
async fn tampered_truncated_foreign_and_oversized_cookies_get_a_fresh_login() {
    let s = setup(3600, "").await;
    let b = Browser::new();
    let url = format!("{}/app/t", s.origin);
    assert_eq!(
        b.navigate(&url, Some(("alice", "wonderland"))).await.status,
        200
    );
    let good = session_cookie(&b, &s.origin);
    let mid = good.len() / 2;
    let flipped = if &good[mid..=mid] == "A" { "B" } else { "A" };
    let tampered = format!("{}{flipped}{}", &good[..mid], &good[mid + 1..]);
    let truncated = good[..good.len() - 5].to_owned();
    let huge_chunk = "A".repeat(3900);
    let cases = vec![
        ("tampered", format!("oidc_session={tampered}")),
        ("truncated", format!("oidc_session={truncated}")),
        ("garbage", "oidc_session=%%%;;;".to_owned()),
        ("missing chunks", format!("oidc_session=4~{good}")),
        (
            "oversized",
            format!(
                "oidc_session=3~{huge_chunk}; oidc_session.1={huge_chunk}; oidc_session.2={huge_chunk}"
            ),
        ),
    ];
    for (what, cookie) in cases {
        let r = client()
            .get(&url)
            .header("Cookie", cookie)
            .header("Accept", "text/html")
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            302,
            "{what}: a bad cookie must lead to a fresh login"
        );
        assert!(
            r.headers()["location"]
                .to_str()
                .unwrap()
                .starts_with(&s.op.issuer),
            "{what}"
        );
    }
    // The untouched cookie still works.
    let r = client()
        .get(&url)
        .header("Cookie", format!("oidc_session={good}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(s.up.hits.load(std::sync::atomic::Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn spoofed_identity_headers_never_reach_the_upstream() {
    let s = setup(3600, "").await;
    let b = Browser::new();
    assert_eq!(
        b.navigate(
            &format!("{}/app/s", s.origin),
            Some(("alice", "wonderland"))
        )
        .await
        .status,
        200
    );
    let spoofs = [
        ("X-Auth-Request-User", "mallory"),
        ("x_auth_request_email", "mallory@evil.example"),
        ("X-AUTH-REQUEST-GROUPS", "admins"),
        ("X-Forwarded-User", "mallory"),
        ("x_forwarded_email", "mallory@evil.example"),
        ("X-Userinfo", "eyJzdWIiOiJtYWxsb3J5In0="),
        ("X-Id-Token", "forged"),
        ("X-Access-Token", "forged"),
        ("X-Consumer-ID", "admin"),
        ("x_consumer_username", "admin"),
        ("X-Credential-Identifier", "admin"),
        ("X-Authenticated-Groups", "admins"),
        ("Authorization", "Bearer forged"),
    ];
    for path in ["/app/s", "/public"] {
        let mut req = b.client.get(format!("{}{path}", s.origin));
        for (k, v) in spoofs {
            req = req.header(k, v);
        }
        let echo: serde_json::Value = req.send().await.unwrap().json().await.unwrap();
        let h = echo["headers"].as_object().unwrap();
        for (name, values) in h {
            if path == "/public" && name == "authorization" {
                // A public route forwards the client's own Authorization untouched.
                continue;
            }
            for v in values.as_array().unwrap() {
                let v = v.as_str().unwrap();
                assert!(
                    !v.contains("mallory")
                        && v != "forged"
                        && v != "admin"
                        && v != "admins"
                        && !v.contains("forged"),
                    "{path}: spoofed {name}: {v}"
                );
            }
        }
        for gone in [
            "x_auth_request_email",
            "x-forwarded-user",
            "x_forwarded_email",
            "x-userinfo",
            "x-access-token",
            "x-consumer-id",
            "x_consumer_username",
            "x-credential-identifier",
            "x-authenticated-groups",
            "x-auth-request-groups",
        ] {
            assert!(!h.contains_key(gone), "{path}: {gone} reached the upstream");
        }
        if path == "/app/s" {
            assert_eq!(h["x-auth-request-user"][0], "alice-id");
            assert_eq!(h["authorization"].as_array().unwrap().len(), 1);
            assert_ne!(
                h["authorization"][0], "Bearer forged",
                "the client's Authorization replaced by the session's token"
            );
        } else {
            assert!(
                !h.contains_key("x-auth-request-user"),
                "public route must carry no identity"
            );
        }
        assert!(
            !h.get("cookie")
                .is_some_and(|c| c.to_string().contains("oidc_session")),
            "{path}: session cookie leaked"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn post_login_and_logout_redirects_never_leave_the_origin() {
    let s = setup(3600, "").await;
    let b = Browser::new();
    let page = b
        .navigate(
            &format!("{}/app//evil.example.com/%2e%2e", s.origin),
            Some(("alice", "wonderland")),
        )
        .await;
    assert_eq!(page.status, 200);
    assert!(
        page.url.starts_with(&format!("{}/app/", s.origin)),
        "left the origin: {}",
        page.url
    );
    for t in &page.trail {
        assert!(
            t.starts_with(&s.origin) || t.starts_with(&s.op.issuer),
            "visited a foreign host: {t}"
        );
    }
    let out = b
        .client
        .post(format!("{}/oauth2/logout?rd=https://evil.example.com&post_logout_redirect_uri=https://evil.example.com", s.origin))
        .send()
        .await
        .unwrap();
    let loc = out.headers()["location"].to_str().unwrap();
    assert!(loc.starts_with(&s.op.issuer), "{loc}");
    assert!(!loc.contains("evil.example.com"), "{loc}");
}

/// The refresh token the gateway holds for the session in `b`'s cookies, read the way the
/// gateway reads it: its own config and cookie store, opened with the test's secret.
fn held_refresh_token(s: &Setup, b: &Browser) -> String {
    use oidc_gateway::session::store::{CookieStore, Loaded, LocalStore};
    let source = std::fs::read_to_string(&s.gw.config_path)
        .unwrap()
        .replace("${SESSION_SECRET}", SECRET)
        .replace("${OP_CLIENT_SECRET}", "gateway-secret-0123456789");
    let config = oidc_gateway::config::Config::parse(&source, &s.gw.config_path).unwrap();
    let store = CookieStore::new(config.session.as_ref().unwrap());
    let mut headers = http::HeaderMap::new();
    headers.insert(
        http::header::COOKIE,
        b.cookie_header(&s.origin).parse().unwrap(),
    );
    match store.load(&headers) {
        Loaded::Found { session, .. } => session
            .data
            .refresh_token
            .as_ref()
            .expect("the OP issues refresh tokens")
            .text()
            .into_owned(),
        other => panic!("no session in the browser's cookies: {other:?}"),
    }
}

/// Redeems `refresh_token` at the OP's token endpoint as the gateway's client.
async fn redeem(s: &Setup, refresh_token: &str) -> u16 {
    client()
        .post(format!("{}/token", s.op.issuer))
        .basic_auth("gateway", Some("gateway-secret-0123456789"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ])
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Waits (up to 5 s) until the gateway has revoked `n` tokens at the provider.
async fn wait_revoked(s: &Setup, n: f64) {
    let revoked = "oidc_gateway_token_revocations_total{provider=\"op\",result=\"revoked\"}";
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric_value(&s.gw.metrics().await, revoked) != Some(n) {
        assert!(
            Instant::now() < deadline,
            "tokens not revoked:\n{}\n{}",
            s.gw.log(),
            s.op.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn logout_revokes_the_refresh_token_at_the_provider() {
    let s = setup(3600, "").await;
    let url = format!("{}/app/x", s.origin);
    let leaving = Browser::new();
    let staying = Browser::new();
    for b in [&leaving, &staying] {
        let page = b.navigate(&url, Some(("alice", "wonderland"))).await;
        assert_eq!(page.status, 200, "{}", s.gw.log());
    }
    let leaving_rt = held_refresh_token(&s, &leaving);
    let staying_rt = held_refresh_token(&s, &staying);

    let out = leaving.post(&format!("{}/oauth2/logout", s.origin)).await;
    assert!(out.status().is_redirection(), "{}", out.status());
    // Revocation runs off the user's path: wait until the gateway says it is done. (Redeeming
    // the token to find out would use it up: the OP rotates refresh tokens.)
    wait_revoked(&s, 2.0).await;
    assert_eq!(
        redeem(&s, &leaving_rt).await,
        400,
        "the logged-out session's refresh token is refused at the provider"
    );
    // The other session's token was not touched: it still works at the provider.
    assert_eq!(redeem(&s, &staying_rt).await, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn private_key_jwt_signs_in_refreshes_and_revokes_without_a_client_secret() {
    // The OP knows the client only by its public key: a client secret would be refused.
    let keys = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/support/keys");
    let jwk: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{keys}/key1.jwk.json")).unwrap())
            .unwrap();
    let s = setup_op(
        2,
        "",
        &format!(
            "client_auth = \"private_key_jwt\"\nclient_private_key_file = \"{keys}/key1.pem\"\nclient_key_id = \"key1\""
        ),
        |op| {
            let client = &mut op["clients"][0];
            client.as_object_mut().unwrap().remove("client_secret");
            client["token_endpoint_auth_method"] = "private_key_jwt".into();
            client["token_endpoint_auth_signing_alg"] = "RS256".into();
            client["jwks"] = serde_json::json!({ "keys": [jwk] });
        },
    )
    .await;
    let b = Browser::new();
    let url = format!("{}/app/x", s.origin);
    let page = b.navigate(&url, Some(("alice", "wonderland"))).await;
    assert_eq!(
        page.status,
        200,
        "code exchange:\n{}\n{}",
        s.gw.log(),
        s.op.log()
    );

    // The access token lives 2 s: the next request refreshes it, with a fresh assertion. On a
    // slow machine the login's own page request may already have refreshed (leeway 1 s), so
    // count from what the login left.
    let refreshed = "oidc_gateway_token_refresh_total{provider=\"op\",result=\"succeeded\"}";
    let before = metric_value(&s.gw.metrics().await, refreshed).unwrap_or(0.0);
    s.gw.advance_clock(3).await;
    let r = b.client.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", s.gw.log());
    assert_eq!(
        metric_value(&s.gw.metrics().await, refreshed),
        Some(before + 1.0)
    );

    // Logout revokes both tokens at the revocation endpoint, authenticated the same way.
    let out = b.post(&format!("{}/oauth2/logout", s.origin)).await;
    assert!(out.status().is_redirection(), "{}", out.status());
    wait_revoked(&s, 2.0).await;
}
