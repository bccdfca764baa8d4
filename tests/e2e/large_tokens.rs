//! Entra-sized tokens against the real `oidc-provider`: a user in 200 groups (random GUIDs, as
//! Entra ID gives them) has an ID token of about 10 KB. Sign-in works with every session store;
//! the cookie store keeps the browser's `Cookie` header within `max_cookie_header_bytes` (8 KB,
//! nginx's default buffer) or refuses the sign-in saying why and which store to use; many tabs
//! signing in at once keep a bounded number of login cookies.

use crate::support;
use serde_json::Value;
use support::redis::RedisServer;
use support::*;

const SECRET: &str = "large-tokens-test-secret-0123456789abcdef";
const ALICE: Option<(&str, &str)> = Some(("alice", "wonderland"));

/// A random-looking GUID (Entra's group ids), the same for the same `i`.
fn guid(i: usize) -> String {
    use sha2::Digest;
    let h = sha2::Sha256::digest(i.to_le_bytes());
    let x: String = h.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &x[0..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..32]
    )
}

struct Site {
    op: RealOp,
    gw: GatewayProcess,
    _up: TestUpstream,
    _redis: Option<RedisServer>,
    origin: String,
}

/// A gateway with `session` lines (`store = ...`) in front of an OP whose alice is in
/// `groups` groups.
async fn site(session: &str, groups: usize) -> Site {
    site_with(session, groups, "").await
}

/// [`site`], with more `[[providers]]` lines.
async fn site_with(session: &str, groups: usize, provider_extra: &str) -> Site {
    site_full(session, groups, |_| provider_extra.to_owned(), |_| {}).await
}

/// [`site`], with `[[providers]]` lines made knowing the OP's issuer, and changes to alice.
async fn site_full(
    session: &str,
    groups: usize,
    provider_extra: impl FnOnce(&str) -> String,
    alice: impl FnOnce(&mut Value),
) -> Site {
    let up = TestUpstream::start("app");
    let port = free_port();
    let origin = format!("http://127.0.0.1:{port}");
    let mut cfg = op_config(&origin, 3600);
    cfg["accounts"][0]["claims"]["groups"] = (0..groups).map(guid).collect::<Vec<_>>().into();
    alice(&mut cfg["accounts"][0]);
    let op = RealOp::start(&cfg);
    let redis = session.contains("redis").then(RedisServer::start);
    let mut body = Toml::new()
        .session(SECRET, session)
        .provider(
            "op",
            &op.issuer,
            "gateway-secret-0123456789",
            &origin,
            &format!(
                "scopes = [\"openid\", \"profile\", \"email\"]\n{}",
                provider_extra(&op.issuer)
            ),
        )
        .upstream("app", &up.address())
        .route("app", &["/app"], "app", r#"provider = "op""#, "")
        .route(
            "last-group",
            &["/last-group"],
            "app",
            &format!(
                r#"provider = "op", groups_required = ["{}"]"#,
                guid(groups.saturating_sub(1))
            ),
            "",
        );
    if let Some(r) = &redis {
        body = body.raw(&format!("[redis]\nurl = \"{}\"", r.url()));
    }
    let gw = GatewayProcess::start_discovered(&body.build(), port, "/app/").await;
    Site {
        op,
        gw,
        _up: up,
        _redis: redis,
        origin,
    }
}

impl Site {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.origin)
    }

    /// An API-style request as `b`.
    async fn get(&self, b: &Browser, path: &str) -> reqwest::Response {
        b.client
            .get(self.url(path))
            .header("Accept", "application/json")
            .send()
            .await
            .unwrap()
    }

    async fn sessions_too_large(&self) -> f64 {
        let series = "oidc_gateway_logins_total{provider=\"op\",result=\"session_too_large\"}";
        metric_value(&self.gw.metrics().await, series).unwrap_or(0.0)
    }
}

/// The groups the session holds, as the gateway's userinfo endpoint gives them.
async fn groups_in_session(s: &Site, b: &Browser) -> usize {
    let r = s.get(b, "/oauth2/userinfo").await;
    assert_eq!(r.status(), 200);
    let info: Value = r.json().await.unwrap();
    info["claims"]["groups"].as_array().map_or(0, Vec::len)
}

#[tokio::test(flavor = "multi_thread")]
async fn two_hundred_groups_sign_in_with_each_store_within_8_kb_of_cookies() {
    for session in ["", "store = \"memory\"", "store = \"redis\""] {
        let s = site(session, 200).await;
        let b = Browser::new();
        let page = b.navigate(&s.url("/app/"), ALICE).await;
        assert_eq!(page.status, 200, "{session}: {}\n{}", page.body, s.gw.log());
        assert_eq!(groups_in_session(&s, &b).await, 200, "{session}");
        let cookie = b.cookie_header(&s.origin);
        assert!(
            cookie.len() <= 8192,
            "{session}: a {}-byte Cookie header",
            cookie.len()
        );
        // The next request, as the browser sends it, is served.
        let r = s.get(&b, "/app/again").await;
        assert_eq!(r.status(), 200, "{session}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_too_large_for_cookies_is_refused_saying_which_store_to_use() {
    let s = site("", 400).await;
    let b = Browser::new();
    let page = b.navigate(&s.url("/app/"), ALICE).await;
    assert_eq!(page.status, 500, "{}", page.body);
    assert!(
        page.body.contains("too large") && page.body.contains("store = &quot;redis&quot;"),
        "{}",
        page.body
    );
    assert_eq!(s.sessions_too_large().await, 1.0);
    let log = s.gw.log_containing(&["max_cookie_header_bytes (8192)"]);
    assert!(log.contains("store = \"redis\""), "{log}");
    // No cookie over the limit was set: the browser holds no session cookie at all.
    let cookie = b.cookie_header(&s.origin);
    assert!(cookie.len() < 8192, "{}", cookie.len());
    assert!(!cookie.contains("oidc_session="), "{cookie}");

    // Sessions kept on the server take the same user.
    let s = site("store = \"memory\"", 400).await;
    let b = Browser::new();
    assert_eq!(b.navigate(&s.url("/app/"), ALICE).await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_tabs_signing_in_at_once_keep_the_cookie_header_under_the_limit() {
    let s = site("", 200).await;
    let b = Browser::new();
    // Twenty tabs, signed out, each sent to the provider: each sign-in leaves a login cookie.
    let mut authorize = Vec::new();
    for i in 0..20 {
        let r = b
            .client
            .get(s.url(&format!("/app/tab/{i}")))
            .header("Accept", "text/html")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 302);
        authorize.push(r.headers()["location"].to_str().unwrap().to_owned());
    }
    let login_cookies = b
        .cookie_header(&s.origin)
        .split("; ")
        .filter(|c| !c.starts_with("oidc_session"))
        .count();
    assert!(
        login_cookies <= 5,
        "{login_cookies} login cookies: {}",
        b.cookie_header(&s.origin)
    );
    // Every tab finishes its sign-in. The oldest attempts were dropped: those tabs say the
    // sign-in did not belong to this browser any more, and starting again finds the session.
    // Every request stays under the limit.
    let mut restarted = 0;
    for (i, url) in authorize.iter().enumerate() {
        let mut page = b.navigate(url, ALICE).await;
        if page.status != 200 {
            assert!(page.body.contains("Sign-in"), "tab {i}: {}", page.body);
            restarted += 1;
            page = b.navigate(&s.url(&format!("/app/tab/{i}")), ALICE).await;
        }
        assert_eq!(page.status, 200, "tab {i}: {}", page.body);
        let cookie = b.cookie_header(&s.origin);
        assert!(cookie.len() <= 8192, "tab {i}: {} bytes", cookie.len());
    }
    // At least the fifteen dropped attempts started again; the sign-in that completed first
    // also ended the other tabs' attempts, whose 7.5 KB session would not fit beside them.
    assert!(restarted >= 15, "{restarted}");
}

#[tokio::test(flavor = "multi_thread")]
async fn identity_headers_stay_under_their_limit_leaving_out_whole_headers() {
    let s = site_with(
        "store = \"memory\"",
        200,
        "upstream_headers = { \"X-Groups\" = \"groups\", \"X-User\" = \"sub\" }\n\
         upstream_id_token_header = \"X-Id-Token\"\nupstream_user_info_header = \"X-Userinfo\"",
    )
    .await;
    let b = Browser::new();
    let page = b.navigate(&s.url("/app/"), ALICE).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let headers = page.json()["headers"].clone();
    let sent = |name: &str| headers[name][0].as_str().map(str::to_owned);
    // What upstreams authorize on is kept whole: the access token, every group, the user.
    assert!(sent("authorization").unwrap().starts_with("Bearer "));
    assert_eq!(sent("x-groups").unwrap().split(',').count(), 200);
    assert_eq!(sent("x-user").as_deref(), Some("alice-id"));
    // The 10 KB ID token and the user-info JSON would go over 8 KB: left out, not cut.
    assert_eq!(sent("x-id-token"), None, "{headers}");
    assert_eq!(sent("x-userinfo"), None);
    let identity: usize = ["authorization", "x-groups", "x-user"]
        .iter()
        .map(|h| h.len() + 2 + sent(h).unwrap().len() + 2)
        .sum();
    assert!(identity <= 8192, "{identity}");
    let log = s.gw.log_containing(&["identity headers left out"]);
    assert!(
        log.contains("x-id-token") && log.contains("x-userinfo"),
        "{log}"
    );
    let m = s.gw.metrics().await;
    assert_eq!(
        metric_value(
            &m,
            "oidc_gateway_identity_headers_left_out_total{provider=\"op\"}"
        ),
        Some(2.0),
        "{m}"
    );

    // A higher limit sends them all.
    let s = site_with(
        "store = \"memory\"",
        200,
        "upstream_id_token_header = \"X-Id-Token\"\nmax_identity_header_bytes = 65536",
    )
    .await;
    let page = Browser::new().navigate(&s.url("/app/"), ALICE).await;
    let token = page.json()["headers"]["x-id-token"][0]
        .as_str()
        .unwrap()
        .len();
    assert!(token > 10_000, "an Entra-sized ID token: {token} bytes");
}

/// Alice's sign-in in an overage: the session's claims, and the groups source's calls.
async fn overage_sign_in(s: &Site) -> (Browser, Value) {
    let b = Browser::new();
    let page = b.navigate(&s.url("/app/"), ALICE).await;
    assert_eq!(page.status, 200, "{}\n{}", page.body, s.gw.log());
    let r = s.get(&b, "/oauth2/userinfo").await;
    (b, r.json::<Value>().await.unwrap()["claims"].clone())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_groups_overage_is_filled_from_the_configured_url_page_by_page() {
    let s = site_full(
        "store = \"memory\"",
        250,
        |issuer| format!("groups_source = \"{issuer}/__test/groups\""),
        |alice| alice["groups_overage"] = true.into(),
    )
    .await;
    let (b, claims) = overage_sign_in(&s).await;
    let groups = claims["groups"].as_array().expect("groups");
    assert_eq!(groups.len(), 250);
    assert_eq!(groups[249], guid(249));
    assert!(claims.get("_claim_names").is_none(), "{claims}");
    assert!(claims.get("_claim_sources").is_none(), "{claims}");
    assert_eq!(
        s.op.issued().await["groups_requests"],
        3,
        "three pages of 100"
    );
    // A rule on the last group holds.
    let r = s.get(&b, "/last-group/").await;
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_groups_overage_is_filled_from_userinfo_when_asked() {
    let s = site_full(
        "store = \"memory\"",
        250,
        |_| "groups_source = \"userinfo\"".into(),
        |alice| {
            alice["groups_overage"] = true.into();
            alice["groups_in_userinfo"] = true.into();
        },
    )
    .await;
    let (_, claims) = overage_sign_in(&s).await;
    assert_eq!(claims["groups"].as_array().map(Vec::len), Some(250));
    assert_eq!(s.op.issued().await["groups_requests"], 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_groups_source_an_overage_is_logged_and_a_failing_source_refuses_the_sign_in() {
    let s = site_full(
        "store = \"memory\"",
        250,
        |_| String::new(),
        |alice| alice["groups_overage"] = true.into(),
    )
    .await;
    let (b, claims) = overage_sign_in(&s).await;
    assert!(claims.get("groups").is_none(), "{claims}");
    let log = s.gw.log_containing(&["groups_source is not set"]);
    assert!(log.contains("groups_source is not set"), "{log}");
    // Rules on groups refuse, as for any user without them.
    let r = s.get(&b, "/last-group/").await;
    assert_eq!(r.status(), 403);

    // A source that refuses the token: no session without the groups.
    let s = site_full(
        "store = \"memory\"",
        250,
        |issuer| format!("groups_source = \"{issuer}/__test/no-such-source\""),
        |alice| alice["groups_overage"] = true.into(),
    )
    .await;
    let b = Browser::new();
    let page = b.navigate(&s.url("/app/"), ALICE).await;
    assert_eq!(page.status, 502, "{}", page.body);
    assert!(page.body.contains("groups"), "{}", page.body);
    let m = s.gw.metrics().await;
    assert_eq!(
        metric_value(
            &m,
            "oidc_gateway_logins_total{provider=\"op\",result=\"groups_unavailable\"}"
        ),
        Some(1.0)
    );
    assert!(!b.cookie_header(&s.origin).contains("oidc_session="));

    // A source whose next page is on another origin: not followed, so the user's access token
    // never reaches it (a lenient server that records what it got), and no session.
    let elsewhere = TestUpstream::start("elsewhere");
    let next_to = format!("http://{}/steal", elsewhere.address());
    let s = site_full(
        "store = \"memory\"",
        250,
        |issuer| format!("groups_source = \"{issuer}/__test/groups?next_to={next_to}\""),
        |alice| alice["groups_overage"] = true.into(),
    )
    .await;
    let page = Browser::new().navigate(&s.url("/app/"), ALICE).await;
    assert_eq!(page.status, 502, "{}", page.body);
    assert_eq!(elsewhere.hits.load(std::sync::atomic::Ordering::SeqCst), 0);
    let log = s.gw.log_containing(&["another origin"]);
    assert!(log.contains("not followed"), "{log}");
}
