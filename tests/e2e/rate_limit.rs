//! Rate limits per identity (`rate_limit` on a route) through the running gateway: two
//! processes sharing a real `redis-server` hold one user's limit together, another user is
//! unaffected, the window slides (the gateways' clocks are moved, not waited for), Redis down
//! admits (fail open, counted and logged), and without Redis each instance counts alone.

use crate::support;
use support::redis::RedisServer;
use support::*;

const SECRET: &str = "rate-limit-test-secret-0123456789abcdef";

/// Alice and bob at the real OP.
fn op_with_bob(origin: &str) -> RealOp {
    let mut cfg = op_config(origin, 3600);
    add_bob(&mut cfg);
    RealOp::start(&cfg)
}

/// GET `path` on `gw` with `cookie`: the status and the answer's headers.
async fn get(gw: &GatewayProcess, path: &str, cookie: &str) -> (u16, reqwest::header::HeaderMap) {
    let r = client()
        .get(gw.url(path))
        .header("Cookie", cookie)
        .header("Accept", "application/json")
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.headers().clone())
}

fn header<'h>(h: &'h reqwest::header::HeaderMap, name: &str) -> &'h str {
    h.get(name).map_or("", |v| v.to_str().unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn two_instances_sharing_redis_hold_one_users_limit_together() {
    let redis = RedisServer::start();
    let up = TestUpstream::start("app");
    let (port_a, port_b) = (free_port(), free_port());
    let origin = format!("http://127.0.0.1:{port_a}");
    let op = op_with_bob(&origin);
    let body = Toml::app_at_op(
        SECRET,
        "store = \"redis\"",
        &op.issuer,
        &origin,
        &up.address(),
    )
    .route(
        "api",
        &["/api"],
        "app",
        r#"provider = "op""#,
        r#"rate_limit = { per = "sub", requests = 5, window = "1m" }"#,
    )
    .raw(&format!(
        "[redis]\nurl = \"{}\"\ncommand_timeout = \"200ms\"\nconnect_timeout = \"500ms\"\n",
        redis.url()
    ))
    .build();
    let a = GatewayProcess::start_discovered(&body, port_a, "/app/").await;
    let b = GatewayProcess::start_discovered(&body, port_b, "/app/").await;
    let alice = sign_in(&a, ("alice", "wonderland")).await;
    let bob = sign_in(&a, ("bob", "builder")).await;

    // Five between the two instances; the sixth is refused by either.
    for gw in [&a, &b, &a, &b, &a] {
        assert_eq!(get(gw, "/api/x", &alice).await.0, 200);
    }
    for gw in [&a, &b] {
        let (status, h) = get(gw, "/api/x", &alice).await;
        assert_eq!(status, 429, "instance on port {}", gw.port);
        let wait: u64 = header(&h, "retry-after").parse().unwrap();
        assert!((1..=120).contains(&wait), "{wait}");
        assert_eq!(header(&h, "ratelimit-policy"), "\"api\";q=5;w=60");
        assert_eq!(header(&h, "ratelimit"), format!("\"api\";r=0;t={wait}"));
    }
    // Bob is counted apart, and alice's other routes are not limited.
    for _ in 0..5 {
        assert_eq!(get(&b, "/api/x", &bob).await.0, 200);
    }
    assert_eq!(get(&a, "/app/x", &alice).await.0, 200);
    assert!(
        redis.cli(&["--scan", "--pattern", "*rl:*"]).lines().count() >= 2,
        "the counts are the fleet's, in Redis"
    );
    let m = a.metrics().await;
    assert_eq!(
        metric_value(
            &m,
            r#"oidc_gateway_rate_limited_total{result="limited",route="api"}"#
        ),
        Some(1.0),
        "{m}"
    );

    // Two windows later alice's count has slid out, on both instances.
    a.advance_clock(120).await;
    b.advance_clock(120).await;
    assert_eq!(get(&b, "/api/x", &alice).await.0, 200);

    // Redis stalls: a session B holds in memory still passes, and the limit is not counted
    // (fail open), with a metric and a log line; no request waits past the command timeout.
    redis.signal("STOP");
    for _ in 0..8 {
        let started = std::time::Instant::now();
        let (status, _) = get(&b, "/api/x", &alice).await;
        assert_eq!(status, 200, "{}", b.log());
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }
    let m = b.metrics().await;
    assert!(
        metric_value(
            &m,
            r#"oidc_gateway_rate_limited_total{result="fail_open",route="api"}"#
        )
        .is_some_and(|n| n >= 1.0),
        "{m}"
    );
    b.log_containing(&["rate limit not counted, request admitted"]);
    redis.signal("CONT");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_redis_each_instance_counts_client_addresses_alone() {
    let up = TestUpstream::start("app");
    let body = Toml::new()
        .upstream("app", &up.address())
        .route(
            "public",
            &["/"],
            "app",
            "",
            r#"rate_limit = { per = "client_ip", requests = 3, window = "10s" }"#,
        )
        .build();
    let gw = GatewayProcess::start(&body);
    let get = |path: &'static str| {
        let req = client().get(gw.url(path));
        async move { req.send().await.unwrap().status().as_u16() }
    };
    for _ in 0..3 {
        assert_eq!(get("/x").await, 200);
    }
    assert_eq!(get("/x").await, 429);
    assert_eq!(
        get("/other").await,
        429,
        "the route's limit, whatever the path"
    );
    gw.advance_clock(20).await;
    assert_eq!(get("/x").await, 200, "the window slid on");
}
