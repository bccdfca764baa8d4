//! Token exchange toward upstreams (RFC 8693) against the real `oidc-provider`, which has the
//! grant registered (`tests/oidc-provider/server.mjs`): it checks the subject token is one of
//! its active access tokens, that the audience is one it issues for and the scopes within what
//! that audience allows, and mints a JWT for the audience. The upstream gets that token in place
//! of the user's own; the gateway reuses it, asks once for many requests, and refuses (403) or
//! pauses (503) rather than forward a request without it.

use crate::support;
use base64::Engine;
use serde_json::{Value, json};
use std::sync::atomic::Ordering;
use support::*;

const SECRET: &str = "exchange-test-session-secret-0123456789ab";
const ALICE: Option<(&str, &str)> = Some(("alice", "wonderland"));
const GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

struct Site {
    op: RealOp,
    gw: GatewayProcess,
    up: TestUpstream,
    origin: String,
}

async fn site() -> Site {
    let up = TestUpstream::start("orders");
    let port = free_port();
    let origin = format!("http://127.0.0.1:{port}");
    let mut cfg = op_config(&origin, 3600);
    cfg["token_exchange"] = json!({
        "orders-api": { "scope": "orders:read orders:write", "ttl": 600 }
    });
    let op = RealOp::start(&cfg);
    let exchange = |audience: &str, scope: &str| {
        format!("token_exchange = {{ audience = \"{audience}\", scope = \"{scope}\" }}")
    };
    let body = Toml::new()
        .session(SECRET, "")
        .provider(
            "op",
            &op.issuer,
            "gateway-secret-0123456789",
            &origin,
            // The user's own token goes in a header of its own, so the test sees it removed.
            "leeway = \"1s\"\nupstream_access_token_header = \"X-User-Token\"",
        )
        .upstream("orders", &up.address())
        .route("app", &["/app"], "orders", r#"provider = "op""#, "")
        .route(
            "orders",
            &["/orders"],
            "orders",
            r#"provider = "op""#,
            &exchange("orders-api", "orders:read"),
        )
        .route(
            "orders-write",
            &["/orders-write"],
            "orders",
            r#"provider = "op""#,
            &exchange("orders-api", "orders:write"),
        )
        .route(
            "billing",
            &["/billing"],
            "orders",
            r#"provider = "op""#,
            &exchange("billing-api", "billing:read"),
        )
        .route(
            "orders-admin",
            &["/orders-admin"],
            "orders",
            r#"provider = "op""#,
            &exchange("orders-api", "orders:admin"),
        )
        .route(
            "api",
            &["/api"],
            "orders",
            r#"provider = "op", methods = ["bearer"], audience_required = ["https://api.example.com"]"#,
            &exchange("orders-api", "orders:read"),
        )
        .build();
    let gw = GatewayProcess::start_discovered(&body, port, "/app/").await;
    Site { op, gw, up, origin }
}

impl Site {
    /// Signs alice in with a fresh browser.
    async fn sign_in(&self) -> Browser {
        let b = Browser::new();
        let page = b.navigate(&format!("{}/app/", self.origin), ALICE).await;
        assert_eq!(page.status, 200, "{}\n{}", page.body, self.gw.log());
        b
    }

    /// An API-style request as `b`.
    async fn get(&self, b: &Browser, path: &str) -> reqwest::Response {
        b.client
            .get(format!("{}{path}", self.origin))
            .header("Accept", "application/json")
            .send()
            .await
            .unwrap()
    }

    /// What the upstream was sent: the echoed request, from a 200.
    async fn upstream_saw(&self, b: &Browser, path: &str) -> Value {
        let r = self.get(b, path).await;
        assert_eq!(r.status(), 200, "{path}: {}", self.gw.log());
        r.json().await.unwrap()
    }

    async fn exchanges(&self) -> u64 {
        self.op.issued().await["grants"][GRANT]
            .as_u64()
            .unwrap_or(0)
    }

    async fn counted(&self, result: &str) -> f64 {
        let series =
            format!("oidc_gateway_token_exchanges_total{{provider=\"op\",result=\"{result}\"}}");
        metric_value(&self.gw.metrics().await, &series).unwrap_or(0.0)
    }
}

/// The one `name` header of an echoed request.
fn header<'a>(seen: &'a Value, name: &str) -> Option<&'a str> {
    let values = seen["headers"][name].as_array()?;
    assert_eq!(values.len(), 1, "{name}: {values:?}");
    values[0].as_str()
}

/// The claims of the bearer token in an echoed request's `Authorization`.
fn bearer_claims(seen: &Value) -> Value {
    let auth = header(seen, "authorization").expect("no Authorization upstream");
    let token = auth.strip_prefix("Bearer ").expect(auth);
    let payload = token.split('.').nth(1).expect(token);
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_route_sends_the_upstream_a_token_minted_for_it_and_reuses_it() {
    let s = site().await;
    let b = s.sign_in().await;

    // Without token_exchange, the upstream gets the user's own token.
    let plain = s.upstream_saw(&b, "/app/x").await;
    let own = header(&plain, "x-user-token")
        .expect("the user's token")
        .to_owned();
    assert!(header(&plain, "authorization").is_none());

    let seen = s.upstream_saw(&b, "/orders/1").await;
    let claims = bearer_claims(&seen);
    assert_eq!(claims["aud"], "orders-api");
    assert_eq!(claims["sub"], "alice-id");
    assert_eq!(claims["scope"], "orders:read");
    assert_eq!(claims["act"]["sub"], "gateway");
    assert!(
        header(&seen, "x-user-token").is_none(),
        "the user's own token went along: {seen}"
    );
    assert!(
        !seen.to_string().contains(&own),
        "the user's token leaked: {seen}"
    );
    assert_eq!(s.exchanges().await, 1);

    // Reused: the same token, no second call to the provider.
    let again = s.upstream_saw(&b, "/orders/2").await;
    assert_eq!(
        header(&again, "authorization"),
        header(&seen, "authorization")
    );
    assert_eq!(s.exchanges().await, 1);
    assert_eq!(s.counted("cached").await, 1.0);

    // Another scope is another token.
    let write = s.upstream_saw(&b, "/orders-write/1").await;
    assert_eq!(bearer_claims(&write)["scope"], "orders:write");
    assert_eq!(s.exchanges().await, 2);

    // Shortly before it expires (600 s), the token is exchanged again.
    s.gw.advance_clock(560).await;
    let later = s.upstream_saw(&b, "/orders/3").await;
    assert_eq!(s.exchanges().await, 3);
    assert_ne!(
        header(&later, "authorization"),
        header(&seen, "authorization")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn many_requests_at_once_make_one_exchange() {
    let s = site().await;
    let b = s.sign_in().await;
    // The provider takes its time: every request arrives while the exchange is in flight.
    s.op.token_delay(700).await;
    let requests = (0..20).map(|i| {
        let client = b.client.clone();
        let url = format!("{}/orders/{i}", s.origin);
        tokio::spawn(async move {
            let r = client
                .get(url)
                .header("Accept", "application/json")
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let seen: Value = r.json().await.unwrap();
            seen["headers"]["authorization"][0]
                .as_str()
                .unwrap()
                .to_owned()
        })
    });
    let mut tokens = Vec::new();
    for r in requests.collect::<Vec<_>>() {
        tokens.push(r.await.unwrap());
    }
    s.op.token_delay(0).await;
    tokens.dedup();
    assert_eq!(tokens.len(), 1, "every request got the same token");
    assert_eq!(s.exchanges().await, 1, "{}", s.gw.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_exchange_is_a_403_that_never_reaches_the_upstream() {
    let s = site().await;
    let b = s.sign_in().await;
    let before = s.up.hits.load(Ordering::SeqCst);
    for (path, says) in [
        ("/billing/1", "invalid_target"),
        ("/orders-admin/1", "invalid_scope"),
    ] {
        let r = s.get(&b, path).await;
        assert_eq!(r.status(), 403, "{path}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"], "token_exchange_refused", "{body}");
        let message = body.to_string();
        assert!(message.contains(says), "{path}: {message}");
    }
    assert_eq!(s.up.hits.load(Ordering::SeqCst), before);
    assert_eq!(s.counted("refused").await, 2.0);
    // A browser gets a page saying so.
    let page = b
        .client
        .get(format!("{}/billing/1", s.origin))
        .header("Accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 403);
    assert!(page.text().await.unwrap().contains("billing-api"));
    // The session itself is fine.
    s.upstream_saw(&b, "/orders/1").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bearer_token_is_exchanged_in_place_of_the_one_presented() {
    let s = site().await;
    let presented = client_credentials(&s.op).await;
    let seen = {
        let r = client()
            .get(s.gw.url("/api/orders"))
            .bearer_auth(&presented)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", s.gw.log());
        r.json::<Value>().await.unwrap()
    };
    let claims = bearer_claims(&seen);
    assert_eq!(claims["aud"], "orders-api");
    assert_eq!(claims["sub"], "gateway", "the client that got the token");
    assert!(!seen.to_string().contains(&presented), "{seen}");

    // A token the provider does not vouch for never gets that far: 401 before any exchange.
    let exchanges = s.exchanges().await;
    let r = client()
        .get(s.gw.url("/api/orders"))
        .bearer_auth("not-a-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(s.exchanges().await, exchanges);
}

#[tokio::test(flavor = "multi_thread")]
async fn with_the_provider_down_a_kept_token_still_serves_and_a_new_one_is_a_503() {
    let mut s = site().await;
    let b = s.sign_in().await;
    s.upstream_saw(&b, "/orders/1").await;
    let before = s.up.hits.load(Ordering::SeqCst);
    // The provider goes away.
    s.op.stop();
    assert!(
        client()
            .get(format!("{}/jwks", s.op.issuer))
            .send()
            .await
            .is_err()
    );

    s.upstream_saw(&b, "/orders/2").await;
    let started = std::time::Instant::now();
    let r = s.get(&b, "/orders-write/1").await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "token_exchange_unavailable", "{body}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert_eq!(s.up.hits.load(Ordering::SeqCst), before + 1);
    let log = s.gw.log_containing(&["token exchange failed"]);
    assert!(log.contains("token exchange failed"), "{log}");
}

/// A client-credentials JWT of the OP for `https://api.example.com`.
async fn client_credentials(op: &RealOp) -> String {
    let r = client()
        .post(format!("{}/token", op.issuer))
        .basic_auth("gateway", Some("gateway-secret-0123456789"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("resource", "https://api.example.com"),
            ("scope", "orders:read"),
        ])
        .send()
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    body["access_token"].as_str().expect("a token").to_owned()
}
