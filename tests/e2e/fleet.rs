//! Fleet mode end to end: two gateway processes (A and B, as behind a load balancer) sharing
//! one real `redis-server`, logging in at the real `oidc-provider` OP. Each test starts its own
//! Redis, OP, upstream and gateways on loopback, and stops them when it ends.

use crate::support;

use std::time::{Duration, Instant};
use support::redis::{ClusterSet, RedisServer, SENTINEL_MASTER, SentinelSet};
use support::*;

const SECRET: &str = "fleet-session-secret-0123456789abcdef-0123456789";
const ALICE: Option<(&str, &str)> = Some(("alice", "wonderland"));

/// Where the fleet's Redis runs.
enum Topology {
    Single(RedisServer),
    Sentinel(SentinelSet),
    Cluster(ClusterSet),
}

impl Topology {
    /// The `[redis]` lines that reach it.
    fn config(&self) -> String {
        match self {
            Topology::Single(r) => format!("url = \"{}\"", r.url()),
            Topology::Sentinel(s) => format!(
                "sentinel = {{ master = \"{SENTINEL_MASTER}\", nodes = [\"redis://127.0.0.1:{}\"] }}",
                s.port
            ),
            Topology::Cluster(c) => format!("cluster_nodes = {}", c.config_nodes()),
        }
    }

    /// The single node (tests that stop or inspect it).
    fn single(&self) -> &RedisServer {
        match self {
            Topology::Single(r) => r,
            _ => panic!("not a single node"),
        }
    }
}

struct Fleet {
    redis: Topology,
    op: RealOp,
    up: TestUpstream,
    a: GatewayProcess,
    b: GatewayProcess,
    /// The public origin (A's): the redirect URI both instances use.
    origin: String,
    body: String,
}

impl Fleet {
    /// Redis, the OP (access tokens living `access_ttl` seconds) and two gateways with
    /// `[session] store = store`; `op_extra` is merged into the OP's config.
    async fn start(store: &str, access_ttl: u64, op_extra: serde_json::Value) -> Fleet {
        Self::start_on(
            Topology::Single(RedisServer::start()),
            store,
            access_ttl,
            op_extra,
        )
        .await
    }

    /// Like [`start`](Self::start), with extra `[[providers]]` lines.
    async fn start_with_provider(store: &str, access_ttl: u64, provider_extra: &str) -> Fleet {
        Self::start_full(
            Topology::Single(RedisServer::start()),
            store,
            access_ttl,
            serde_json::json!({}),
            provider_extra,
        )
        .await
    }

    /// Like [`start`](Self::start), with Redis in `redis`.
    async fn start_on(
        redis: Topology,
        store: &str,
        access_ttl: u64,
        op_extra: serde_json::Value,
    ) -> Fleet {
        Self::start_full(redis, store, access_ttl, op_extra, "").await
    }

    async fn start_full(
        redis: Topology,
        store: &str,
        access_ttl: u64,
        op_extra: serde_json::Value,
        provider_extra: &str,
    ) -> Fleet {
        let up = TestUpstream::start("app");
        let (port_a, port_b) = (free_port(), free_port());
        let origin = format!("http://127.0.0.1:{port_a}");
        let mut op_cfg = op_config(&origin, access_ttl);
        merge(&mut op_cfg, op_extra);
        if op_cfg["backchannel_logout"] == true {
            op_cfg["clients"][0]["backchannel_logout_uri"] =
                format!("{origin}/oauth2/backchannel-logout").into();
            op_cfg["clients"][0]["backchannel_logout_session_required"] = true.into();
        }
        let op = RealOp::start(&op_cfg);
        let body = Toml::new()
            .session(
                "${SESSION_SECRET}",
                &format!("store = \"{store}\"\nidling_timeout = \"1h\""),
            )
            .provider(
                "op",
                &op.issuer,
                "${OP_CLIENT_SECRET}",
                &origin,
                &format!(
                    "leeway = \"1s\"\nupstream_id_token_header = \"X-Id-Token\"\n{provider_extra}"
                ),
            )
            .upstream("app", &up.address())
            // A form posted without a session waits for its sign-in in Redis (not with cookies).
            .route(
                "app",
                &["/app"],
                "app",
                r#"provider = "op""#,
                if store == "cookie" {
                    ""
                } else {
                    "preserve_post = true"
                },
            )
            .raw(&format!(
                "[redis]\n{}\ncommand_timeout = \"200ms\"\nconnect_timeout = \"500ms\"\n",
                redis.config()
            ))
            .build();
        let a = start_gateway(&body, port_a);
        let b = start_gateway(&body, port_b);
        a.wait_discovered("/app/").await;
        b.wait_discovered("/app/").await;
        Fleet {
            redis,
            op,
            up,
            a,
            b,
            origin,
            body,
        }
    }

    /// Stops both gateways and starts them again on the same ports.
    async fn restart(&mut self) {
        let (pa, pb) = (self.a.port, self.b.port);
        self.a.signal("KILL");
        self.b.signal("KILL");
        self.a.wait_exit(Duration::from_secs(5));
        self.b.wait_exit(Duration::from_secs(5));
        self.a = start_gateway(&self.body, pa);
        self.b = start_gateway(&self.body, pb);
        self.a.wait_discovered("/app/").await;
        self.b.wait_discovered("/app/").await;
    }

    /// Logs alice in through `gw` with a fresh browser; the session cookie's value.
    async fn login(&self, gw: &GatewayProcess) -> (Browser, String) {
        login(gw, &self.origin).await
    }

    async fn issued(&self) -> serde_json::Value {
        self.op.issued().await
    }
}

/// Logs alice in through `gw` with a fresh browser; the session cookie's value.
async fn login(gw: &GatewayProcess, origin: &str) -> (Browser, String) {
    let b = Browser::new();
    let page = b.navigate(&gw.url("/app/x"), ALICE).await;
    assert_eq!(
        page.status,
        200,
        "{}\n{:?}\n{}",
        page.body,
        page.trail,
        gw.log()
    );
    let cookie = b
        .cookie_header(origin)
        .split("; ")
        .find_map(|c| c.strip_prefix("oidc_session="))
        .expect("a session cookie")
        .to_owned();
    (b, cookie)
}

fn start_gateway(body: &str, port: u16) -> GatewayProcess {
    start_gateway_with(body, port, "")
}

fn start_gateway_with(body: &str, port: u16, server_extra: &str) -> GatewayProcess {
    GatewayProcess::start_with(GatewayOptions {
        body,
        port: Some(port),
        server_extra,
        env: &[
            ("SESSION_SECRET", SECRET),
            ("OP_CLIENT_SECRET", "gateway-secret-0123456789"),
        ],
        ..Default::default()
    })
}

fn merge(into: &mut serde_json::Value, extra: serde_json::Value) {
    if let (Some(into), serde_json::Value::Object(extra)) = (into.as_object_mut(), extra) {
        for (k, v) in extra {
            into.insert(k, v);
        }
    }
}

/// GET /app/x on `gw` with the session cookie `cookie`: the status, and the user the upstream
/// was told about.
async fn use_session(gw: &GatewayProcess, cookie: &str) -> (u16, Option<String>) {
    let r = client()
        .get(gw.url("/app/x"))
        .header("Accept", "text/html")
        .header("Cookie", format!("oidc_session={cookie}"))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let user = if status == 200 {
        let v: serde_json::Value = r.json().await.unwrap();
        v["headers"]["x-auth-request-user"][0]
            .as_str()
            .map(str::to_owned)
    } else {
        None
    };
    (status, user)
}

async fn assert_served(gw: &GatewayProcess, cookie: &str, what: &str) {
    let (status, user) = use_session(gw, cookie).await;
    assert_eq!(
        (status, user.as_deref()),
        (200, Some("alice-id")),
        "{what}\n{}",
        gw.log()
    );
}

/// Polls until `gw` refuses `cookie` (asks for a login); how long that took.
async fn refused_within(gw: &GatewayProcess, cookie: &str, limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let (status, _) = use_session(gw, cookie).await;
        if status == 302 {
            return started.elapsed();
        }
        assert_eq!(status, 200, "{}", gw.log());
        assert!(
            started.elapsed() < limit,
            "still served after {limit:?}\n{}",
            gw.log()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn readyz(gw: &GatewayProcess) -> (u16, String) {
    gw.readyz().await
}

/// POST /oauth2/logout on `gw` with `cookie`.
async fn logout(gw: &GatewayProcess, cookie: &str) {
    let r = client()
        .post(gw.url("/oauth2/logout"))
        .header("Accept", "text/html")
        .header("Cookie", format!("oidc_session={cookie}"))
        .header("Origin", format!("http://127.0.0.1:{}", gw.port))
        .form(&[("x", "")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302, "{}", gw.log());
}

/// The session id and key a Redis-store cookie carries, opened with the session secret the
/// way the gateway opens it (white box: to search a Redis dump for them).
fn cookie_ids(cookie: &str) -> Vec<u8> {
    let secrets = [oidc_gateway::config::Secret::new(SECRET)];
    let sealer = oidc_gateway::crypto::Sealer::new(&secrets, "oidc-gateway redis session cookie");
    let (plain, _) = sealer
        .open_indexed(b"oidc_session", cookie)
        .expect("the cookie opens with the session secret");
    assert_eq!(plain.len(), 64, "a session id and a key");
    plain
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// Whether `hay` holds a JWT in clear: `eyJ` (a JSON header, base64url), at least ten more
/// base64url characters, a dot, and `eyJ` again (the payload). Three bytes alone are not
/// enough: encrypted session data can hold `eyJ` by chance (it did, once).
fn holds_jwt(hay: &[u8]) -> bool {
    let b64url = |c: &u8| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'_';
    (0..hay.len()).any(|i| {
        hay[i..].starts_with(b"eyJ") && {
            let run = hay[i + 3..].iter().take_while(|c| b64url(c)).count();
            run >= 10 && hay[i + 3 + run..].starts_with(b".eyJ")
        }
    })
}

#[test]
fn a_jwt_in_clear_is_told_from_bytes_that_spell_eyj_by_chance() {
    let jwt = crate::support::faults::bearer_token("https://op.example", "alice");
    assert!(holds_jwt(format!("\u{1}x{jwt}\u{2}").as_bytes()));
    assert!(!holds_jwt(b"\x93\x00eyJ\xff\x10eyJ"));
    assert!(!holds_jwt(b"eyJshort.eyJ"));
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_cross_nodes_logout_reaches_every_node_restarts_keep_both_and_redis_reveals_nothing()
 {
    let mut f = Fleet::start("redis", 3600, serde_json::json!({})).await;

    // Log in through A; B serves the same cookie, a small one.
    let (_b1, kept) = f.login(&f.a).await;
    assert!(kept.len() < 200, "a ticket, not the session: {kept}");
    assert_served(&f.b, &kept, "B serves a session made on A").await;
    let (_b2, ended) = f.login(&f.b).await;
    assert_served(&f.a, &ended, "A serves a session made on B").await;
    assert_served(&f.b, &ended, "B has it cached").await;

    // Log out on A: B, which holds the session in its local cache, refuses it within 200 ms.
    logout(&f.a, &ended).await;
    let took = refused_within(&f.b, &ended, Duration::from_millis(200)).await;
    println!("B refused the logged-out session after {took:?}");
    assert_eq!(use_session(&f.a, &ended).await.0, 302);
    assert_served(&f.b, &kept, "another session is untouched").await;

    // Kill every pub/sub connection, then log out at once: the message may be lost, yet B
    // refuses within 5 s (it resubscribes and drops its cache; its cache lives 5 s at most).
    let (_b3, third) = f.login(&f.a).await;
    assert_served(&f.b, &third, "B caches the third session").await;
    f.redis.single().cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    logout(&f.a, &third).await;
    refused_within(&f.b, &third, Duration::from_secs(5)).await;

    // Restart both: the live session survives, the logged-out ones stay dead.
    f.restart().await;
    assert_served(&f.a, &kept, "A after the restart").await;
    assert_served(&f.b, &kept, "B after the restart").await;
    for gw in [&f.a, &f.b] {
        assert_eq!(use_session(gw, &ended).await.0, 302, "{}", gw.log());
        assert_eq!(use_session(gw, &third).await.0, 302, "{}", gw.log());
    }

    // A Redis dump reveals no token, no session id, no session key.
    let dump = f.redis.single().dump_all();
    assert!(!dump.is_empty());
    let issued = f.issued().await;
    let refresh_tokens: Vec<String> = issued["refresh_tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_owned())
        .collect();
    assert!(!refresh_tokens.is_empty(), "the OP issued refresh tokens");
    let ids = cookie_ids(&kept);
    let (sid, key) = ids.split_at(32);
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    for (k, v) in &dump {
        let mut all = k.as_bytes().to_vec();
        all.extend_from_slice(v);
        assert!(!holds_jwt(&all), "{k} holds a JWT");
        for rt in &refresh_tokens {
            assert!(!contains(&all, rt.as_bytes()), "{k} holds a refresh token");
        }
        for secret in [sid, key] {
            assert!(!contains(&all, secret), "{k} holds a raw session id or key");
            assert!(!contains(&all, b64.encode(secret).as_bytes()), "{k}");
            assert!(
                !contains(&all, oidc_gateway::fleet::hex(secret).as_bytes()),
                "{k}"
            );
        }
        assert!(!contains(&all, kept.as_bytes()), "{k} holds the cookie");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn with_the_cookie_store_a_logout_is_refused_by_every_node_and_after_restarts() {
    let mut f = Fleet::start("cookie", 3600, serde_json::json!({})).await;
    let (_b1, kept) = f.login(&f.a).await;
    let (_b2, ended) = f.login(&f.a).await;
    assert_served(&f.b, &ended, "B opens A's cookie").await;
    logout(&f.a, &ended).await;
    refused_within(&f.b, &ended, Duration::from_millis(200)).await;
    // Restarted, both still refuse it (the marks are read back from Redis), and serve the other.
    f.restart().await;
    for gw in [&f.a, &f.b] {
        assert_eq!(use_session(gw, &ended).await.0, 302, "{}", gw.log());
        assert_served(gw, &kept, "the live session after the restart").await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_callback_raced_on_two_nodes_succeeds_exactly_once() {
    let f = Fleet::start("redis", 3600, serde_json::json!({})).await;
    for round in 0..3 {
        let b = Browser::new();
        let page = b
            .navigate_until(
                &f.a.url("/app/x"),
                ALICE,
                Some(&format!("{}/oauth2/callback", f.origin)),
            )
            .await;
        let query = page
            .url
            .split_once('?')
            .map(|(_, q)| q.to_owned())
            .unwrap_or_else(|| panic!("no callback reached: {:?}", page.trail));
        let deliver = |gw: &GatewayProcess| {
            let req = b
                .client
                .get(format!("{}?{query}", gw.url("/oauth2/callback")))
                .header("Accept", "text/html")
                .send();
            async move { req.await.unwrap() }
        };
        let (ra, rb) = tokio::join!(deliver(&f.a), deliver(&f.b));
        let won = |r: &reqwest::Response| {
            r.status() == 302
                && r.headers().get_all("set-cookie").iter().any(|c| {
                    c.to_str().unwrap().starts_with("oidc_session=")
                        && !c.to_str().unwrap().starts_with("oidc_session=;")
                })
        };
        let winners = [won(&ra), won(&rb)].iter().filter(|w| **w).count();
        assert_eq!(
            winners,
            1,
            "round {round}: A {} B {}\n{}\n{}",
            ra.status(),
            rb.status(),
            f.a.log(),
            f.b.log()
        );
        let loser = if won(&ra) { rb } else { ra };
        assert_eq!(loser.status(), 400, "the replay is refused");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_form_posted_to_a_without_a_session_is_posted_again_after_signing_in_on_b() {
    let f = Fleet::start("redis", 3600, serde_json::json!({})).await;
    let b = Browser::new();
    let form = [
        ("title", "Order #7 & more"),
        ("comment", "two\r\nlines <b>é</b>"),
        ("csrf", "app-token-1"),
    ];
    let post = |url: String, origin: &str| {
        b.client
            .post(url)
            .header("Accept", "text/html,application/xhtml+xml")
            .header("Origin", origin)
            .form(&form)
            .send()
    };

    // A cross-site form is not kept: 401 as for any POST without a session.
    let foreign = post(f.a.url("/app/submit?from=form"), "http://evil.example")
        .await
        .unwrap();
    assert_eq!(foreign.status(), 401);
    // Nor is a page of the same host under another scheme (the site is http here).
    let other_scheme = f.a.url("").replace("http://", "https://");
    let other_scheme = post(
        f.a.url("/app/submit?from=form"),
        other_scheme.trim_end_matches('/'),
    )
    .await
    .unwrap();
    assert_eq!(other_scheme.status(), 401);
    assert!(kept_forms(&f).is_empty());

    // Posted to A without a session: kept, and the browser is sent to sign in.
    let a_origin = f.a.url("");
    let a_origin = a_origin.trim_end_matches('/');
    let r = post(f.a.url("/app/submit?from=form"), a_origin)
        .await
        .unwrap();
    assert_eq!(r.status(), 302, "{}", f.a.log());
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with(&f.op.issuer), "{location}");

    // Redis holds the form sealed: none of its text is readable there.
    let dump = f.redis.single().dump_all();
    let kept: Vec<_> = dump.iter().filter(|(k, _)| k.contains("pp:")).collect();
    assert_eq!(
        kept.len(),
        1,
        "one kept form: {:?}",
        dump.iter().map(|d| &d.0).collect::<Vec<_>>()
    );
    for (_, v) in &kept {
        for needle in [&b"Order"[..], b"app-token-1", b"lines", b"title="] {
            assert!(!contains(v, needle), "the kept form is readable in Redis");
        }
    }

    // Signed in at the OP; the callback lands on B, which answers the page re-posting the form.
    let page = b
        .navigate_until(
            &location,
            ALICE,
            Some(&format!("{}/oauth2/callback", f.origin)),
        )
        .await;
    let query = page.url.split_once('?').map(|(_, q)| q.to_owned()).unwrap();
    let r = b
        .client
        .get(format!("{}?{query}", f.b.url("/oauth2/callback")))
        .header("Accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", f.b.log());
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    let html = r.text().await.unwrap();
    let nonce = csp
        .split("'nonce-")
        .nth(1)
        .and_then(|n| n.split('\'').next())
        .unwrap();
    assert!(
        html.contains(&format!("<script nonce=\"{nonce}\">")),
        "{html}"
    );
    assert_eq!(form_action(&html).as_deref(), Some("/app/submit?from=form"));
    let fields = hidden_fields(&html);
    let sent: Vec<(String, String)> = form
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    assert_eq!(fields, sent, "the page carries exactly the fields posted");
    assert!(
        kept_forms(&f).is_empty(),
        "taken once: nothing left in Redis"
    );

    // What the page's script does: post the fields, now with the new session.
    let echo: serde_json::Value = b
        .client
        .post(f.b.url("/app/submit?from=form"))
        .header("Origin", a_origin)
        .form(&fields)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["uri"], "/app/submit?from=form");
    assert_eq!(echo["headers"]["x-auth-request-user"][0], "alice-id");
    let received: Vec<(String, String)> = form_urlencoded_pairs(echo["body"].as_str().unwrap());
    assert_eq!(received, sent, "the upstream got the original fields");

    // The same callback again (a replay) does not post the form a second time.
    let again = b
        .client
        .get(format!("{}?{query}", f.a.url("/oauth2/callback")))
        .header("Accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 400);

    // One client cannot fill Redis with forms: a few wait at once, then 503 (its back button
    // still has the form).
    let b_origin = f.b.url("");
    let b_origin = b_origin.trim_end_matches('/');
    let anyone = fresh_client();
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let r = anyone
            .post(f.b.url("/app/submit?from=form"))
            .header("Accept", "text/html")
            .header("Origin", b_origin)
            .form(&form)
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
    }
    assert_eq!(statuses, [302, 302, 302, 302, 503], "{}", f.b.log());
    assert_eq!(kept_forms(&f).len(), 4);
}

fn kept_forms(f: &Fleet) -> Vec<String> {
    f.redis
        .single()
        .dump_all()
        .into_iter()
        .map(|(k, _)| k)
        .filter(|k| k.contains("pp:"))
        .collect()
}

fn form_urlencoded_pairs(body: &str) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body.as_bytes())
        .map(|(n, v)| (n.into_owned(), v.into_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_concurrent_requests_over_two_nodes_refresh_once() {
    // Access tokens live 5 s; the OP rotates refresh tokens, so a second redemption of the same
    // one would be an invalid_grant (and revoke the family).
    let f = Fleet::start("redis", 5, serde_json::json!({})).await;
    let (_b, cookie) = f.login(&f.a).await;
    assert_served(&f.b, &cookie, "B before the refresh").await;
    refresh_once_over_two_nodes(&f, &cookie).await;
}

/// Lets the access token of `cookie` expire (both nodes' clocks move 5 s), then sends 50
/// concurrent requests split over A and B: exactly one refresh at the OP, no invalid_grant,
/// every request served. Tokens must live 5 s: expiry counts whole seconds and the leeway is
/// 1 s, so the refreshed token is then good for at least 3 s, longer than the 50 requests take
/// on a loaded machine.
async fn refresh_once_over_two_nodes(f: &Fleet, cookie: &str) {
    let before = f.issued().await["grants"]["refresh_token"]
        .as_u64()
        .unwrap_or(0);
    f.a.advance_clock(5).await;
    f.b.advance_clock(5).await;
    let mut tasks = Vec::new();
    for i in 0..50 {
        let gw_url = if i % 2 == 0 {
            f.a.url("/app/x")
        } else {
            f.b.url("/app/x")
        };
        let cookie = cookie.to_owned();
        tasks.push(tokio::spawn(async move {
            let r = client()
                .get(gw_url)
                .header("Accept", "text/html")
                .header("Cookie", format!("oidc_session={cookie}"))
                .send()
                .await
                .unwrap();
            r.status().as_u16()
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    let issued = f.issued().await;
    assert_eq!(
        issued["grants"]["refresh_token"].as_u64(),
        Some(before + 1),
        "exactly one refresh at the OP: {issued}\nA:\n{}\nB:\n{}",
        f.a.log(),
        f.b.log()
    );
    assert_eq!(issued["invalid_grant"].as_u64(), Some(0), "{issued}");
    assert!(
        statuses.iter().all(|s| *s == 200),
        "every request served: {statuses:?}\nA:\n{}\nB:\n{}",
        f.a.log(),
        f.b.log()
    );
    // Both nodes go on with the refreshed session.
    assert_served(&f.a, cookie, "A after the refresh").await;
    assert_served(&f.b, cookie, "B after the refresh").await;
}

/// Tests 1 and 3 on Sentinel and Cluster: sessions cross nodes, a logout reaches the other
/// node, (Sentinel) the master dies and the replica takes over, refresh happens once.
async fn sessions_logout_and_refresh_on(redis: Topology) {
    let mut f = Fleet::start_on(redis, "redis", 5, serde_json::json!({})).await;
    let (_b1, kept) = f.login(&f.a).await;
    let (_b2, ended) = f.login(&f.b).await;
    assert_served(&f.b, &kept, "B serves A's session").await;
    assert_served(&f.a, &ended, "A serves B's session").await;
    logout(&f.a, &ended).await;
    refused_within(&f.b, &ended, Duration::from_millis(200)).await;

    if let Topology::Sentinel(s) = &mut f.redis {
        s.wait_replicated();
        s.kill_master();
        // Both nodes find the new master before the refresh, which must reach it.
        for gw in [&f.a, &f.b] {
            let deadline = Instant::now() + Duration::from_secs(15);
            while gw.readyz().await.0 != 200 {
                assert!(
                    Instant::now() < deadline,
                    "not ready after the failover:\n{}",
                    gw.log()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    // Everything written before (the session, the revocation) is there after a failover.
    refresh_once_over_two_nodes(&f, &kept).await;
    for gw in [&f.a, &f.b] {
        assert_eq!(use_session(gw, &ended).await.0, 302, "{}", gw.log());
    }
    // New logins and logouts work (on the new master).
    let (_b3, third) = f.login(&f.b).await;
    assert_served(&f.a, &third, "A serves a session made after the failover").await;
    logout(&f.b, &third).await;
    refused_within(&f.a, &third, Duration::from_secs(1)).await;
    if let Topology::Cluster(c) = &f.redis {
        let dump = c.dump_all();
        assert!(
            dump.len() > 3,
            "keys spread over the cluster: {}",
            dump.len()
        );
        for (k, v) in &dump {
            assert!(!holds_jwt(v) && !holds_jwt(k.as_bytes()), "{k} holds a JWT");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn on_sentinel_sessions_logout_and_refresh_survive_killing_the_master() {
    sessions_logout_and_refresh_on(Topology::Sentinel(SentinelSet::start())).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn on_a_cluster_sessions_logout_and_refresh_work_across_slots() {
    sessions_logout_and_refresh_on(Topology::Cluster(ClusterSet::start())).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_the_refresh_lease_holder_mid_refresh_lets_another_node_refresh_later() {
    // Calls to the OP time out after 1 s, so a refresh lease lives 2 s without renewal.
    let mut f = Fleet::start_with_provider("redis", 3, "timeout = \"1s\"").await;
    let (_b, cookie) = f.login(&f.a).await;
    assert_served(&f.b, &cookie, "B before").await;
    // On a slow machine those requests may have refreshed already: count from here.
    let before = f.issued().await["grants"]["refresh_token"]
        .as_u64()
        .unwrap_or(0);
    // The access token (3 s) expires on both nodes.
    f.a.advance_clock(4).await;
    f.b.advance_clock(4).await;

    // A takes the lease and calls the token endpoint, which holds the request; A dies.
    f.op.token_delay(3_000).await;
    let in_flight = {
        let url = f.a.url("/app/x");
        let cookie = cookie.clone();
        tokio::spawn(async move {
            let _ = client()
                .get(url)
                .header("Cookie", format!("oidc_session={cookie}"))
                .send()
                .await;
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    f.a.signal("KILL");
    f.a.wait_exit(Duration::from_secs(5));
    let _ = in_flight.await;
    f.op.token_delay(0).await;

    // The lease expires; B refreshes with the refresh token A never redeemed.
    let started = Instant::now();
    loop {
        let (status, user) = use_session(&f.b, &cookie).await;
        if status == 200 {
            assert_eq!(user.as_deref(), Some("alice-id"));
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "B never refreshed: {status}\n{}",
            f.b.log()
        );
        // Each refused try is a login start: stay under login_rate_limit.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let issued = f.issued().await;
    assert_eq!(
        issued["grants"]["refresh_token"].as_u64(),
        Some(before + 1),
        "{issued}"
    );
    assert_eq!(issued["invalid_grant"].as_u64(), Some(0), "{issued}");

    // Nothing deleted comes back: log out on B, restart A, A refuses it.
    logout(&f.b, &cookie).await;
    let port = f.a.port;
    f.a = start_gateway(&f.body, port);
    f.a.wait_discovered("/app/").await;
    assert_eq!(use_session(&f.a, &cookie).await.0, 302, "{}", f.a.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_stopped_hits_are_served_misses_get_503_fast_cookies_are_kept_and_all_recovers() {
    let f = Fleet::start("redis", 3600, serde_json::json!({})).await;
    let (_b1, cached) = f.login(&f.a).await;
    let (_b2, uncached) = f.login(&f.a).await;
    // A holds both (it created them); B only the first.
    assert_served(&f.b, &cached, "B caches the first").await;

    assert_eq!(readyz(&f.b).await.0, 200);
    f.redis.single().signal("STOP");
    assert_served(&f.b, &cached, "a cache hit needs no Redis").await;
    let started = Instant::now();
    let r = client()
        .get(f.b.url("/app/x"))
        .header("Accept", "text/html")
        .header("Cookie", format!("oidc_session={uncached}"))
        .send()
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(r.status(), 503, "{}", f.b.log());
    assert!(r.headers().contains_key("retry-after"));
    assert!(
        !r.headers()
            .get_all("set-cookie")
            .iter()
            .any(|c| c.to_str().unwrap().starts_with("oidc_session=")),
        "the cookie is kept"
    );
    assert!(took < Duration::from_secs(1), "answered in {took:?}");
    // A login cannot complete without Redis either (fail closed), and says so quickly.
    let started = Instant::now();
    let b = Browser::new();
    let page = b.navigate(&f.a.url("/app/y"), ALICE).await;
    assert_eq!(page.status, 503, "{}\n{}", page.body, f.a.log());
    assert!(started.elapsed() < Duration::from_secs(5));

    let (status, body) = readyz(&f.b).await;
    assert_eq!(
        (status, body.contains(r#""redis":"unavailable""#)),
        (503, true),
        "{body}"
    );

    f.redis.single().signal("CONT");
    // Everything recovers by itself.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _) = use_session(&f.b, &uncached).await;
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "B never recovered:\n{}",
            f.b.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The local cache was flushed on recovery: the first session is read from Redis again.
    let misses = || async {
        metric_value(
            &f.b.metrics().await,
            "oidc_gateway_redis_local_cache_total{result=\"miss\"}",
        )
        .unwrap_or(0.0)
    };
    let before = misses().await;
    assert_served(&f.b, &cached, "the first session after recovery").await;
    assert_eq!(
        misses().await,
        before + 1.0,
        "read from Redis, not the old cache"
    );
    assert_eq!(readyz(&f.b).await.0, 200);
    f.login(&f.b).await;
    let _ = &f.up;
}

#[tokio::test(flavor = "multi_thread")]
async fn without_redis_a_cookie_store_logout_survives_a_restart_through_state_dir() {
    let up = TestUpstream::start("app");
    let port = free_port();
    let origin = format!("http://127.0.0.1:{port}");
    let op = RealOp::start(&op_config(&origin, 3600));
    let state = tempfile::tempdir().unwrap();
    let body = Toml::new()
        .session("${SESSION_SECRET}", "store = \"cookie\"")
        .provider("op", &op.issuer, "${OP_CLIENT_SECRET}", &origin, "")
        .upstream("app", &up.address())
        .route("app", &["/app"], "app", r#"provider = "op""#, "")
        .build();
    let server_extra = format!("state_dir = \"{}\"", state.path().join("state").display());
    let mut gw = start_gateway_with(&body, port, &server_extra);
    gw.wait_discovered("/app/").await;
    let (_b1, kept) = login(&gw, &origin).await;
    let (_b2, ended) = login(&gw, &origin).await;
    logout(&gw, &ended).await;
    assert_eq!(use_session(&gw, &ended).await.0, 302);

    gw.signal("KILL");
    gw.wait_exit(Duration::from_secs(5));
    let gw = start_gateway_with(&body, port, &server_extra);
    gw.wait_discovered("/app/").await;
    assert_eq!(
        use_session(&gw, &ended).await.0,
        302,
        "the logged-out cookie is still refused after a restart\n{}",
        gw.log()
    );
    assert_served(&gw, &kept, "the live session after the restart").await;
    assert!(state.path().join("state/revocations").is_file());
}

/// A logout token signed by the OP's own key, with `header` and `claims` merged over a valid
/// one for `sid` (or `sub` only, when `sid` is `None`).
async fn logout_token(
    op: &RealOp,
    sid: Option<&str>,
    header: serde_json::Value,
    claims: serde_json::Value,
) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut payload = serde_json::json!({
        "iss": op.issuer,
        "aud": "gateway",
        "iat": now,
        "exp": now + 120,
        "jti": format!("jti-{}", rand_suffix()),
        "sub": "alice-id",
        "events": {"http://schemas.openid.net/event/backchannel-logout": {}},
    });
    if let Some(sid) = sid {
        payload["sid"] = sid.into();
    }
    merge(&mut payload, claims);
    if let Some(p) = payload.as_object_mut() {
        p.retain(|_, v| !v.is_null());
    }
    let mut h = serde_json::json!({"typ": "logout+jwt"});
    merge(&mut h, header);
    let r: serde_json::Value = client()
        .post(format!("{}/__test/sign", op.issuer))
        .form(&[("header", h.to_string()), ("payload", payload.to_string())])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    r["jwt"].as_str().unwrap().to_owned()
}

fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// POSTs `token` to `gw`'s back-channel logout endpoint; the status and body.
async fn backchannel(gw: &GatewayProcess, token: &str) -> (u16, String) {
    let r = client()
        .post(gw.url("/oauth2/backchannel-logout"))
        .form(&[("logout_token", token)])
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    assert_eq!(
        r.headers()
            .get("cache-control")
            .map(|v| v.to_str().unwrap()),
        Some("no-store")
    );
    (status, r.text().await.unwrap())
}

/// The ID token's `sid` of the session `cookie`, as the upstream saw it (`X-Id-Token`).
async fn idp_sid(gw: &GatewayProcess, cookie: &str) -> String {
    let r = client()
        .get(gw.url("/app/x"))
        .header("Cookie", format!("oidc_session={cookie}"))
        .send()
        .await
        .unwrap();
    let v: serde_json::Value = r.json().await.unwrap();
    let auth = v["headers"]["authorization"][0]
        .as_str()
        .unwrap_or_default();
    let _ = auth;
    let id_token = v["headers"]["x-id-token"][0]
        .as_str()
        .expect("the ID token upstream");
    let payload = id_token.split('.').nth(1).unwrap();
    use base64::Engine;
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    claims["sid"].as_str().expect("a sid claim").to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idp_initiated_logout_ends_the_session_on_both_nodes() {
    let f = Fleet::start(
        "redis",
        3600,
        serde_json::json!({"backchannel_logout": true}),
    )
    .await;
    let (browser, cookie) = f.login(&f.a).await;
    let (_other_browser, other) = f.login(&f.b).await;
    assert_served(&f.b, &cookie, "B before the logout").await;
    assert_served(&f.a, &cookie, "A before the logout").await;

    // The user signs out at the OP (its end-session page, confirmed): the OP tells the
    // gateway through the back channel.
    let page = browser
        .navigate(&format!("{}/session/end", f.op.issuer), None)
        .await;
    let xsrf = form_value(&page.body, "xsrf").expect("the OP's sign-out form");
    let done = browser
        .client
        .post(format!("{}/session/end/confirm", f.op.issuer))
        .form(&[("xsrf", xsrf.as_str()), ("logout", "yes")])
        .send()
        .await
        .unwrap();
    assert!(done.status().is_redirection() || done.status().is_success());
    refused_within(&f.a, &cookie, Duration::from_secs(5)).await;
    refused_within(&f.b, &cookie, Duration::from_secs(1)).await;
    let issued = f.issued().await;
    assert_eq!(issued["backchannel"]["ok"].as_u64(), Some(1), "{issued}");
    // Another browser's session (another IdP session) is untouched.
    assert_served(&f.a, &other, "another IdP session").await;
    assert_served(&f.b, &other, "another IdP session").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_logout_tokens_get_400_and_a_sub_token_ends_every_older_session_of_the_user() {
    let f = Fleet::start(
        "redis",
        3600,
        serde_json::json!({"backchannel_logout": true}),
    )
    .await;
    let (_b1, first) = f.login(&f.a).await;
    let (_b2, second) = f.login(&f.b).await;
    let sid = idp_sid(&f.a, &first).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();

    use serde_json::json;
    let stale = logout_token(
        &f.op,
        Some(&sid),
        json!({}),
        json!({"iat": now - 3600, "exp": null}),
    )
    .await;
    let nonce = logout_token(&f.op, Some(&sid), json!({}), json!({"nonce": "n"})).await;
    let no_events = logout_token(&f.op, Some(&sid), json!({}), json!({"events": null})).await;
    let wrong_typ = logout_token(&f.op, Some(&sid), json!({"typ": "JWT"}), json!({})).await;
    let wrong_aud =
        logout_token(&f.op, Some(&sid), json!({}), json!({"aud": "someone-else"})).await;
    let no_subject = logout_token(&f.op, None, json!({}), json!({"sub": null})).await;
    // alg=none: the same claims, unsigned.
    let signed = logout_token(&f.op, Some(&sid), json!({}), json!({})).await;
    let payload = signed.split('.').nth(1).unwrap();
    use base64::Engine;
    let none_header = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(br#"{"alg":"none","typ":"logout+jwt"}"#);
    let alg_none = format!("{none_header}.{payload}.");
    let tampered = {
        let mut parts: Vec<String> = signed.split('.').map(str::to_owned).collect();
        let mut claims: serde_json::Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(&parts[1])
                .unwrap(),
        )
        .unwrap();
        claims["sub"] = "mallory".into();
        parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims.to_string());
        parts.join(".")
    };
    for (what, token) in [
        ("stale iat", &stale),
        ("nonce", &nonce),
        ("no events", &no_events),
        ("typ JWT", &wrong_typ),
        ("another audience", &wrong_aud),
        ("neither sid nor sub", &no_subject),
        ("alg none", &alg_none),
        ("a changed claim", &tampered),
    ] {
        let (status, body) = backchannel(&f.a, token).await;
        assert_eq!(status, 400, "{what}: {body}");
        assert!(body.contains("invalid_request"), "{what}: {body}");
    }
    assert_served(&f.a, &first, "nothing ended by bad tokens").await;

    // A valid token by sid: 200, once; its replay (on the other node) is refused.
    let by_sid = logout_token(&f.op, Some(&sid), json!({}), json!({})).await;
    assert_eq!(backchannel(&f.a, &by_sid).await.0, 200, "{}", f.a.log());
    let (status, body) = backchannel(&f.b, &by_sid).await;
    assert_eq!(status, 400, "a replayed jti: {body}");
    assert!(body.contains("jti"), "{body}");
    refused_within(&f.b, &first, Duration::from_millis(500)).await;
    assert_served(&f.b, &second, "another IdP session survives a sid logout").await;

    // By sub only: every session of alice issued until then ends, on both nodes.
    let by_sub = logout_token(&f.op, None, json!({}), json!({})).await;
    assert_eq!(backchannel(&f.b, &by_sub).await.0, 200, "{}", f.b.log());
    refused_within(&f.a, &second, Duration::from_millis(500)).await;
    refused_within(&f.b, &second, Duration::from_millis(500)).await;
    // Marks have one-second resolution: a login a second later is not caught by it.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let (_b3, later) = f.login(&f.a).await;
    assert_served(&f.a, &later, "a login after the logout survives").await;
    assert_served(&f.b, &later, "a login after the logout survives").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn without_redis_back_channel_logout_ends_memory_store_sessions_of_this_instance() {
    let up = TestUpstream::start("app");
    let port = free_port();
    let origin = format!("http://127.0.0.1:{port}");
    let op = RealOp::start(&op_config(&origin, 3600));
    let body = Toml::new()
        .session("${SESSION_SECRET}", "store = \"memory\"")
        .provider("op", &op.issuer, "${OP_CLIENT_SECRET}", &origin, "")
        .upstream("app", &up.address())
        .route("app", &["/app"], "app", r#"provider = "op""#, "")
        .build();
    let gw = start_gateway(&body, port);
    gw.wait_discovered("/app/").await;
    let (_b1, first) = login(&gw, &origin).await;
    let (_b2, second) = login(&gw, &origin).await;
    let token = logout_token(&op, None, serde_json::json!({}), serde_json::json!({})).await;
    assert_eq!(backchannel(&gw, &token).await.0, 200, "{}", gw.log());
    for cookie in [&first, &second] {
        assert_eq!(use_session(&gw, cookie).await.0, 302, "{}", gw.log());
    }
    let (status, _) = backchannel(&gw, &token).await;
    assert_eq!(status, 400, "a replayed jti, without Redis too");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_logout_token_refused_with_503_while_redis_stalls_succeeds_when_the_provider_retries() {
    let f = Fleet::start(
        "redis",
        3600,
        serde_json::json!({"backchannel_logout": true}),
    )
    .await;
    let (_b1, cookie) = f.login(&f.a).await;
    let sid = idp_sid(&f.a, &cookie).await;
    assert_served(&f.b, &cookie, "B before the logout").await;
    let token = logout_token(
        &f.op,
        Some(&sid),
        serde_json::json!({}),
        serde_json::json!({}),
    )
    .await;

    // Redis stalls: the logout cannot be shared, so the provider is told to retry.
    f.redis.single().signal("STOP");
    let (status, body) = backchannel(&f.a, &token).await;
    assert_eq!(status, 503, "{body}");
    assert_served(&f.b, &cookie, "B never heard of it").await;
    f.redis.single().signal("CONT");

    // The provider's retry of the same token is not a replay: the old code had spent the jti
    // before the revocation failed, and answered 400 "already used" with the session alive.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (status, body) = loop {
        let (status, body) = backchannel(&f.a, &token).await;
        if status != 503 || Instant::now() > deadline {
            break (status, body);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status, 200, "the retry: {body}\n{}", f.a.log());
    refused_within(&f.b, &cookie, Duration::from_secs(1)).await;
    refused_within(&f.a, &cookie, Duration::from_secs(1)).await;
    // Spent now, with its revocation: a later replay is refused on either node.
    for gw in [&f.a, &f.b] {
        let (status, body) = backchannel(gw, &token).await;
        assert_eq!(status, 400, "{body}");
        assert!(body.contains("jti"), "{body}");
    }
}
