//! API access and authorization through the running gateway: bearer JWTs and introspection
//! against the real `oidc-provider` OP, then rules, consumers, several providers and modes with
//! tokens minted by the test (signed by keys the hostile test OP publishes).

use crate::support;

use serde_json::{Value, json};
use std::time::{Duration, Instant};
use support::*;

const SECRET: &str = "api-test-session-secret-0123456789abcdef";

async fn wait_for(gw: &GatewayProcess, path: &str, bearer: &str) {
    // Discovery runs in the background; until it is done tokens cannot be checked.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = client()
            .get(gw.url(path))
            .bearer_auth(bearer)
            .send()
            .await
            .unwrap();
        if r.status() != 503 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "provider never discovered:\n{}",
            gw.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// GET `path` with `Authorization: Bearer token`.
async fn bearer_get(gw: &GatewayProcess, path: &str, token: &str) -> reqwest::Response {
    client()
        .get(gw.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

// ---------------------------------------------------------------- real OP (oidc-provider)

async fn client_credentials(op: &RealOp, resource: &str, scope: &str) -> String {
    let r = client()
        .post(format!("{}/token", op.issuer))
        .basic_auth("gateway", Some("gateway-secret-0123456789"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("resource", resource),
            ("scope", scope),
        ])
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    assert_eq!(status, 200, "token request failed: {body}");
    body["access_token"].as_str().unwrap().to_owned()
}

/// A gateway for the real OP: the session, the provider (with `provider_extra`) and upstream
/// `api`; routes are added by each test.
fn real_op_gateway(op: &RealOp, up: &TestUpstream, provider_extra: &str) -> Toml {
    Toml::new()
        .session(SECRET, "")
        .provider(
            "op",
            &op.issuer,
            "gateway-secret-0123456789",
            "http://127.0.0.1:1",
            provider_extra,
        )
        .upstream("api", &up.address())
}

fn real_op(resources: Value, client_credentials_ttl: u64) -> RealOp {
    let mut cfg = op_config("http://127.0.0.1:1", 3600);
    cfg["resource_servers"] = resources;
    cfg["ttl"]["ClientCredentials"] = client_credentials_ttl.into();
    RealOp::start(&cfg)
}

#[tokio::test(flavor = "multi_thread")]
async fn real_op_jwt_access_tokens_on_bearer_routes() {
    // Client-credentials tokens live 5 s here, so the test can watch one expire.
    let op = real_op(
        json!({
            "https://api.example.com": { "scope": "orders:read orders:write", "audience": "https://api.example.com", "accessTokenFormat": "jwt" },
            "https://short.example.com": { "scope": "orders:read", "audience": "https://short.example.com", "accessTokenFormat": "jwt" }
        }),
        5,
    );
    let other = real_op(
        json!({
            "https://api.example.com": { "scope": "orders:read", "audience": "https://api.example.com", "accessTokenFormat": "jwt" }
        }),
        600,
    );
    let up = TestUpstream::start("api");
    let bearer_for = |audience: &str| {
        format!(r#"provider = "op", methods = ["bearer"], audience_required = ["{audience}"]"#)
    };
    let body = real_op_gateway(&op, &up, "leeway = \"1s\"")
        .route(
            "orders",
            &["/orders"],
            "api",
            &(bearer_for("https://api.example.com") + r#", scopes_required = ["orders:read"]"#),
            "",
        )
        .route(
            "elsewhere",
            &["/elsewhere"],
            "api",
            &bearer_for("https://other.example.com"),
            "",
        )
        .route(
            "short",
            &["/short"],
            "api",
            &bearer_for("https://short.example.com"),
            "",
        )
        .build();
    let gw = GatewayProcess::start(&body);
    let probe = client_credentials(&op, "https://api.example.com", "orders:read").await;
    wait_for(&gw, "/orders", &probe).await;
    let hits_before = up.hits.load(std::sync::atomic::Ordering::SeqCst);
    let short = client_credentials(&op, "https://short.example.com", "orders:read").await;
    let short_issued = Instant::now();
    let token = client_credentials(&op, "https://api.example.com", "orders:read").await;
    assert_eq!(token.split('.').count(), 3, "a JWT access token: {token}");

    let r = bearer_get(&gw, "/orders/1", &token).await;
    assert_eq!(r.status(), 200);
    let echo: Value = r.json().await.unwrap();
    assert_eq!(
        echo["headers"]["authorization"][0],
        format!("Bearer {token}"),
        "the token itself goes upstream"
    );
    assert_eq!(
        echo["headers"]["x-auth-request-user"][0], "gateway",
        "sub of a client-credentials token is the client"
    );

    // Same token, route requiring another audience: 401 invalid_token.
    let r = bearer_get(&gw, "/elsewhere", &token).await;
    assert_eq!(r.status(), 401);
    let www = www_authenticate(&r).to_owned();
    assert!(
        www.starts_with("Bearer realm=\"op\"") && www.contains("error=\"invalid_token\""),
        "{www}"
    );
    assert!(www.contains("audience"), "{www}");
    assert_eq!(r.headers()["content-type"], "application/json");

    // A token from another issuer.
    let foreign = client_credentials(&other, "https://api.example.com", "orders:read").await;
    let r = bearer_get(&gw, "/orders/1", &foreign).await;
    assert_eq!(r.status(), 401);
    assert!(www_authenticate(&r).contains("issuer"));

    // An expired token (5 s lifetime, 1 s leeway), accepted (and cached) while it was valid.
    assert_eq!(bearer_get(&gw, "/short", &short).await.status(), 200);
    tokio::time::sleep(Duration::from_millis(7200).saturating_sub(short_issued.elapsed())).await;
    let r = bearer_get(&gw, "/short", &short).await;
    assert_eq!(r.status(), 401, "an expired token, even cached, is refused");
    assert!(www_authenticate(&r).contains("expired"));

    // Insufficient scope: a valid token without orders:read.
    let writer = client_credentials(&op, "https://api.example.com", "orders:write").await;
    let r = bearer_get(&gw, "/orders/1", &writer).await;
    assert_eq!(r.status(), 403);
    assert!(www_authenticate(&r).contains("error=\"insufficient_scope\""));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "insufficient_scope");

    // No token at all.
    let r = client().get(gw.url("/orders/1")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer realm=\"op\"");
    // Garbage presented as a token is a 401, never "no credential".
    let r = bearer_get(&gw, "/orders/1", "garbage").await;
    assert!(www_authenticate(&r).contains("invalid_token"));
    assert_eq!(
        up.hits.load(std::sync::atomic::Ordering::SeqCst) - hits_before,
        2,
        "only the valid requests reached the upstream"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn real_op_opaque_tokens_through_introspection_and_revocation() {
    let op = real_op(json!({}), 600);
    let up = TestUpstream::start("api");
    // Whole-second expiry: a "5s" entry lasts at least 4 s, room for the calls made while it
    // must still be cached.
    let body = real_op_gateway(&op, &up, "introspection_cache_ttl = \"5s\"")
        .route(
            "opaque",
            &["/opaque"],
            "api",
            r#"provider = "op", methods = ["introspection"], scopes_required = ["orders:read"]"#,
            "",
        )
        .build();
    let gw = GatewayProcess::start(&body);
    let token = client_credentials(&op, "https://opaque.example.com", "orders:read").await;
    assert_ne!(token.split('.').count(), 3, "an opaque token: {token}");
    wait_for(&gw, "/opaque", &token).await;
    let r = bearer_get(&gw, "/opaque", &token).await;
    assert_eq!(r.status(), 200);

    // Revoke it at the OP: the cached answer holds for at most introspection_cache_ttl.
    let revoked = client()
        .post(format!("{}/token/revocation", op.issuer))
        .basic_auth("gateway", Some("gateway-secret-0123456789"))
        .form(&[("token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    let before = op.request_count().await;
    assert_eq!(
        bearer_get(&gw, "/opaque", &token).await.status(),
        200,
        "cached"
    );
    assert_eq!(
        op.request_count().await,
        before,
        "a cached answer makes no call to the OP"
    );
    // The test clock's hostile path: only `POST ?advance=<seconds>` on the metrics listener
    // moves it; anything else is refused and moves nothing (the answer is still cached), and
    // the proxy listener has no such path.
    let clock = format!("http://127.0.0.1:{}/test/clock", gw.metrics_port);
    for (method, query) in [
        (reqwest::Method::GET, "?advance=60"),
        (reqwest::Method::POST, "?advance=-60"),
        (reqwest::Method::POST, "?advance=1e9"),
        (reqwest::Method::POST, "?advance=60&advance=60"),
        (reqwest::Method::POST, ""),
    ] {
        let r = client()
            .request(method.clone(), format!("{clock}{query}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{method} {query}");
    }
    let r = client()
        .post(gw.url("/test/clock?advance=60"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "the proxy listener has no clock");
    assert_eq!(
        bearer_get(&gw, "/opaque", &token).await.status(),
        200,
        "still cached: the clock did not move"
    );
    // The cache entry ends (the gateway's clock moves past its 5 s).
    gw.advance_clock(6).await;
    let r = bearer_get(&gw, "/opaque", &token).await;
    assert_eq!(
        r.status(),
        401,
        "revoked token accepted after the cache entry ended"
    );
    assert!(www_authenticate(&r).contains("not active"));
}

// ---------------------------------------------------------------- minted tokens

struct Minted {
    a: HostileOp,
    b: HostileOp,
    gw: GatewayProcess,
    _up: TestUpstream,
    origin: String,
}

impl Minted {
    fn token(&self, issuer: &str, extra: Value) -> String {
        let now = unix_now();
        let mut claims =
            json!({"iss": issuer, "sub": "alice", "aud": "gateway", "exp": now + 300, "iat": now});
        for (k, v) in extra.as_object().unwrap() {
            claims[k] = v.clone();
        }
        mint(&claims, "key1")
    }

    fn a(&self, extra: Value) -> String {
        self.token(&self.a.issuer, extra)
    }

    async fn get(
        &self,
        path: &str,
        token: Option<&str>,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let mut req = client().get(format!("{}{path}", self.origin));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        (status, headers, r.json().await.unwrap_or(Value::Null))
    }
}

async fn minted() -> Minted {
    let a = HostileOp::start(Attack::None);
    let b = HostileOp::start(Attack::None);
    let up = TestUpstream::start("api");
    let port = free_port();
    let origin = format!("http://127.0.0.1:{port}");
    let route = |name: &str, auth: &str| {
        format!(
            "[[routes]]\nname = \"{name}\"\npaths = [\"/{name}\"]\nupstream = \"api\"\nauth = {{ {auth} }}\n"
        )
    };
    let mut body = format!(
        r#"
[session]
secrets = ["{SECRET}"]
[[providers]]
name = "a"
issuer = "{ia}"
client_id = "gateway"
client_secret = "s"
redirect_uri = "{origin}/oauth2/a/callback"
logout_path = "/oauth2/a/logout"
[[providers]]
name = "b"
issuer = "{ib}"
client_id = "gateway"
client_secret = "s"
redirect_uri = "{origin}/oauth2/b/callback"
logout_path = "/oauth2/b/logout"

[[consumers]]
username = "Yoda"
custom_id = "e5634b31-d67f-4661-a6fb-b6cb77849bcf"
groups = ["jedi"]
[[consumers]]
username = "Han"
[[consumers]]
username = "guest"

[[upstreams]]
name = "api"
targets = ["{up}"]
"#,
        ia = a.issuer,
        ib = b.issuer,
        up = up.address()
    );
    for (name, auth) in [
        (
            "orders",
            r#"provider = "a", methods = ["bearer"], scopes_required = ["orders:read"], groups_required = ["admins", "ops oncall"]"#,
        ),
        (
            "realm",
            r#"provider = "a", methods = ["bearer"], roles_required = ["billing"], roles_claim = ["realm_access", "roles"]"#,
        ),
        (
            "browser-rules",
            r#"provider = "a", methods = ["bearer", "session"], groups_required = ["admins"]"#,
        ),
        (
            "by-username",
            r#"provider = "a", methods = ["bearer"], consumer_claim = ["sub"], consumer_by = ["username"]"#,
        ),
        (
            "by-custom-id",
            r#"provider = "a", methods = ["bearer"], consumer_claim = ["sub"], consumer_by = ["custom_id"]"#,
        ),
        (
            "consumer-optional",
            r#"provider = "a", methods = ["bearer"], consumer_claim = ["sub"], consumer_optional = true"#,
        ),
        (
            "jedi-only",
            r#"provider = "a", methods = ["bearer"], consumer_claim = ["sub"], consumer_groups_required = ["jedi"]"#,
        ),
        (
            "anonymous",
            r#"provider = "a", methods = ["bearer"], anonymous = "guest""#,
        ),
        (
            "pseudo",
            r#"provider = "a", methods = ["bearer"], credential_claim = ["sub"], authenticated_groups_claim = ["groups"]"#,
        ),
        (
            "optional",
            r#"provider = "a", methods = ["bearer"], mode = "optional""#,
        ),
        (
            "preflight",
            r#"provider = "a", methods = ["bearer"], run_on_preflight = false"#,
        ),
        (
            "mfa-api",
            r#"provider = "a", methods = ["bearer"], acr_values = ["urn:mfa", "urn:hwk"], max_age = "10m""#,
        ),
        ("only-a", r#"provider = "a", methods = ["bearer"]"#),
        ("only-b", r#"provider = "b", methods = ["bearer"]"#),
        ("a-or-b", r#"providers = ["a", "b"], methods = ["bearer"]"#),
        ("session-a", r#"provider = "a""#),
        ("session-b", r#"provider = "b""#),
    ] {
        body.push_str(&route(name, auth));
    }
    let gw = GatewayProcess::start_with(GatewayOptions {
        body: &body,
        port: Some(port),
        ..Default::default()
    });
    let m = Minted {
        a,
        b,
        gw,
        _up: up,
        origin,
    };
    let probe = m.a(json!({}));
    wait_for(&m.gw, "/only-a", &probe).await;
    let probe_b = m.token(&m.b.issuer, json!({}));
    wait_for(&m.gw, "/only-b", &probe_b).await;
    m
}

/// Step-up on an API route (RFC 9470): a bearer token's `acr` must be one of the route's
/// `acr_values` and its `auth_time` within `max_age`; otherwise 401
/// `insufficient_user_authentication` saying what is asked, and nothing reaches the upstream.
#[tokio::test(flavor = "multi_thread")]
async fn bearer_tokens_must_meet_the_routes_step_up() {
    let m = minted().await;
    let now = unix_now();
    let ok = m.a(json!({"acr": "urn:hwk", "auth_time": now - 30}));
    let (status, _, echo) = m.get("/mfa-api", Some(&ok)).await;
    assert_eq!(status, 200, "{}", m.gw.log());
    assert_eq!(echo["uri"], "/mfa-api");
    for (what, claims) in [
        (
            "a weaker acr",
            json!({"acr": "urn:pwd", "auth_time": now - 30}),
        ),
        ("no acr", json!({"auth_time": now - 30})),
        (
            "an acr that is not a string",
            json!({"acr": ["urn:mfa"], "auth_time": now - 30}),
        ),
        (
            "an old auth_time",
            json!({"acr": "urn:mfa", "auth_time": now - 700}),
        ),
        ("no auth_time", json!({"acr": "urn:mfa"})),
    ] {
        let (status, headers, body) = m.get("/mfa-api", Some(&m.a(claims))).await;
        assert_eq!(status, 401, "{what}");
        let www = headers["www-authenticate"].to_str().unwrap();
        assert!(
            www.contains("error=\"insufficient_user_authentication\"")
                && www.contains("acr_values=\"urn:mfa urn:hwk\"")
                && www.ends_with("max_age=600"),
            "{what}: {www}"
        );
        assert_eq!(body["error"], "insufficient_user_authentication", "{what}");
    }
    // A route without step-up takes the weaker token as before.
    let weak = m.a(json!({"acr": "urn:pwd"}));
    assert_eq!(m.get("/only-a", Some(&weak)).await.0, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn scope_and_group_rules_use_kong_semantics() {
    let m = minted().await;
    let ok = [
        json!({"scope": "orders:read", "groups": ["admins"]}),
        json!({"scope": "profile orders:read", "groups": ["ops", "oncall"]}),
    ];
    for claims in ok {
        let (s, _, _) = m.get("/orders", Some(&m.a(claims.clone()))).await;
        assert_eq!(s, 200, "{claims}");
    }
    let refused = [
        json!({"scope": "orders:read", "groups": ["ops"]}),
        json!({"scope": "profile", "groups": ["admins"]}),
        json!({"groups": ["admins"]}),
    ];
    for claims in refused {
        let (s, h, body) = m.get("/orders", Some(&m.a(claims.clone()))).await;
        assert_eq!(s, 403, "{claims}");
        assert!(
            h["www-authenticate"]
                .to_str()
                .unwrap()
                .contains("error=\"insufficient_scope\"")
        );
        assert_eq!(body["error"], "insufficient_scope");
        assert!(body["message"].as_str().unwrap().contains("rule"), "{body}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn nested_role_claims_and_html_403_pages() {
    let m = minted().await;
    let billing = m.a(json!({"realm_access": {"roles": ["billing", "x"]}}));
    assert_eq!(m.get("/realm", Some(&billing)).await.0, 200);
    let other = m.a(json!({"realm_access": {"roles": ["x"]}}));
    assert_eq!(m.get("/realm", Some(&other)).await.0, 403);
    let r = client()
        .get(format!("{}/realm", m.origin))
        .bearer_auth(&other)
        .header("Accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(r.text().await.unwrap().contains("Access denied"));
}

#[tokio::test(flavor = "multi_thread")]
async fn consumers_are_mapped_like_kong() {
    let m = minted().await;
    let (s, _, echo) = m
        .get("/by-username", Some(&m.a(json!({"sub": "Yoda"}))))
        .await;
    assert_eq!(s, 200);
    let h = &echo["headers"];
    assert_eq!(h["x-consumer-username"][0], "Yoda");
    assert_eq!(
        h["x-consumer-custom-id"][0],
        "e5634b31-d67f-4661-a6fb-b6cb77849bcf"
    );
    assert_eq!(h["x-consumer-id"][0].as_str().unwrap().len(), 36, "a UUID");

    let (s, _, echo) = m
        .get(
            "/by-custom-id",
            Some(&m.a(json!({"sub": "e5634b31-d67f-4661-a6fb-b6cb77849bcf"}))),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(echo["headers"]["x-consumer-username"][0], "Yoda");
    // by custom_id only: a username does not match.
    assert_eq!(
        m.get("/by-custom-id", Some(&m.a(json!({"sub": "Yoda"}))))
            .await
            .0,
        403
    );

    // No consumer: 403, unless consumer_optional.
    let (s, _, body) = m
        .get("/by-username", Some(&m.a(json!({"sub": "stranger"}))))
        .await;
    assert_eq!(s, 403);
    assert!(body["message"].as_str().unwrap().contains("consumer"));
    let (s, _, echo) = m
        .get("/consumer-optional", Some(&m.a(json!({"sub": "stranger"}))))
        .await;
    assert_eq!(s, 200);
    assert!(echo["headers"].get("x-consumer-id").is_none());

    // consumer_groups_required: Yoda is a jedi, Han is not.
    assert_eq!(
        m.get("/jedi-only", Some(&m.a(json!({"sub": "Yoda"}))))
            .await
            .0,
        200
    );
    assert_eq!(
        m.get("/jedi-only", Some(&m.a(json!({"sub": "Han"}))))
            .await
            .0,
        403
    );

    // Anonymous: without a credential, and with an invalid one.
    for token in [None, Some("not-a-valid-token")] {
        let (s, _, echo) = m.get("/anonymous", token).await;
        assert_eq!(s, 200, "{token:?}");
        assert_eq!(echo["headers"]["x-anonymous-consumer"][0], "true");
        assert_eq!(echo["headers"]["x-consumer-username"][0], "guest");
    }

    // Pseudo-consumer: credential and groups from claims, no mapping.
    let (s, _, echo) = m
        .get(
            "/pseudo",
            Some(&m.a(json!({"sub": "svc-42", "groups": ["admins", "ops"]}))),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(echo["headers"]["x-credential-identifier"][0], "svc-42");
    assert_eq!(echo["headers"]["x-authenticated-groups"][0], "admins,ops");
}

#[tokio::test(flavor = "multi_thread")]
async fn spoofed_consumer_headers_are_removed() {
    let m = minted().await;
    let r = client()
        .get(format!("{}/only-a", m.origin))
        .bearer_auth(m.a(json!({})))
        .header("X-Consumer-Username", "admin")
        .header("x_consumer_id", "1")
        .header("X-Consumer-Custom-ID", "admin")
        .header("X-Credential-Identifier", "admin")
        .header("X-Anonymous-Consumer", "false")
        .header("X-Authenticated-Groups", "admins")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let echo: Value = r.json().await.unwrap();
    for h in [
        "x-consumer-username",
        "x_consumer_id",
        "x-consumer-custom-id",
        "x-credential-identifier",
        "x-anonymous-consumer",
        "x-authenticated-groups",
    ] {
        assert!(
            echo["headers"].get(h).is_none(),
            "{h} reached the upstream: {}",
            echo["headers"]
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_providers_keep_their_tokens_and_sessions_apart() {
    let m = minted().await;
    let from_a = m.a(json!({}));
    let from_b = m.token(&m.b.issuer, json!({}));
    assert_eq!(m.get("/only-a", Some(&from_a)).await.0, 200);
    assert_eq!(m.get("/only-b", Some(&from_b)).await.0, 200);
    let (s, h, _) = m.get("/only-b", Some(&from_a)).await;
    assert_eq!(s, 401, "a token of provider a on provider b's route");
    assert!(h["www-authenticate"].to_str().unwrap().contains("issuer"));
    assert_eq!(m.get("/only-a", Some(&from_b)).await.0, 401);
    assert_eq!(m.get("/a-or-b", Some(&from_a)).await.0, 200);
    assert_eq!(m.get("/a-or-b", Some(&from_b)).await.0, 200);

    // A browser session from provider a does not open provider b's route.
    let b = Browser::new();
    let page = b.navigate(&format!("{}/session-a", m.origin), None).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(
        b.navigate(&format!("{}/session-a", m.origin), None)
            .await
            .status,
        200
    );
    let r = b
        .client
        .get(format!("{}/session-b", m.origin))
        .header("Accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    assert!(
        r.headers()["location"]
            .to_str()
            .unwrap()
            .starts_with(&m.b.issuer),
        "sent to provider b to sign in"
    );
    // And the session passes rules on a mixed route only if it meets them (alice has no groups).
    let r = b
        .client
        .get(format!("{}/browser-rules", m.origin))
        .header("Accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}

#[tokio::test(flavor = "multi_thread")]
async fn optional_mode_preflight_and_forged_tokens() {
    let m = minted().await;
    let (s, _, echo) = m.get("/optional", None).await;
    assert_eq!(s, 200);
    assert!(echo["headers"].get("x-auth-request-user").is_none());
    let (s, _, echo) = m.get("/optional", Some(&m.a(json!({"sub": "bob"})))).await;
    assert_eq!(s, 200);
    assert_eq!(echo["headers"]["x-auth-request-user"][0], "bob");
    assert_eq!(
        m.get("/optional", Some("a.b.c")).await.0,
        401,
        "a present but invalid token is refused"
    );

    let preflight = |path: &str| {
        client()
            .request(reqwest::Method::OPTIONS, format!("{}{path}", m.origin))
            .header("Origin", "https://spa.example.com")
            .header("Access-Control-Request-Method", "POST")
            .send()
    };
    assert_eq!(
        preflight("/preflight").await.unwrap().status(),
        200,
        "run_on_preflight = false lets CORS preflight through"
    );
    assert_eq!(preflight("/only-a").await.unwrap().status(), 401);

    // Forged tokens: unknown key, HS256 with the public key, expired, wrong audience.
    let now = unix_now();
    let base =
        json!({"iss": m.a.issuer, "sub": "alice", "aud": "gateway", "exp": now + 300, "iat": now});
    let mut expired = base.clone();
    expired["exp"] = (now - 120).into();
    let mut wrong_aud = base.clone();
    wrong_aud["aud"] = "someone-else".into();
    let mut no_exp = base.clone();
    no_exp.as_object_mut().unwrap().remove("exp");
    for (what, token) in [
        ("unknown kid", mint(&base, "key3")),
        (
            "hs256 with the public key",
            mint_hs_with_public_key(&base, "key1"),
        ),
        ("expired", mint(&expired, "key1")),
        ("wrong audience", mint(&wrong_aud, "key1")),
        ("no exp", mint(&no_exp, "key1")),
    ] {
        let (s, h, _) = m.get("/only-a", Some(&token)).await;
        assert_eq!(s, 401, "{what}");
        assert!(
            h["www-authenticate"]
                .to_str()
                .unwrap()
                .contains("invalid_token"),
            "{what}"
        );
    }
}
