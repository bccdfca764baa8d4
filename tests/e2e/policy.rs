//! Route policies against the real `oidc-provider`: `allow_if` (CEL) and oauth2-proxy's email
//! rules (`email_domains`, `emails`, `emails_file`; an email the provider has not verified
//! never passes).

use crate::support;
use support::*;

const SECRET: &str = "email-rules-test-secret-0123456789abcdef";

#[tokio::test(flavor = "multi_thread")]
async fn email_domains_and_lists_let_in_whom_they_name() {
    let up = TestUpstream::start("app");
    let port = free_port();
    let origin = format!("http://127.0.0.1:{port}");
    let mut cfg = op_config(&origin, 3600);
    let mallory = serde_json::json!({
        "id": "mallory-id", "username": "mallory", "password": "wonderland",
        "claims": { "email": "mallory@example.com", "email_verified": false }
    });
    cfg["accounts"].as_array_mut().unwrap().push(mallory);
    let op = RealOp::start(&cfg);
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("emails.txt");
    std::fs::write(&list, "# partners' contacts\nALICE@example.com\n").unwrap();
    let route = |auth: &str| format!(r#"provider = "op", {auth}"#);
    let body = Toml::app_at_op(SECRET, "", &op.issuer, &origin, &up.address())
        .route(
            "staff",
            &["/staff"],
            "app",
            &route(r#"email_domains = ["example.com"]"#),
            "",
        )
        .route(
            "partners",
            &["/partners"],
            "app",
            &route(&format!(
                r#"email_domains = ["partner.org"], emails_file = "{}""#,
                list.display()
            )),
            "",
        )
        .route(
            "others",
            &["/others"],
            "app",
            &route(r#"email_domains = [".other.org"], emails = ["bob@example.com"]"#),
            "",
        )
        .build();
    let _gw = GatewayProcess::start_discovered(&body, port, "/app/").await;
    let status = |b: &Browser, path: &str| {
        let req = b
            .client
            .get(format!("{origin}{path}"))
            .header("Accept", "application/json");
        async move { req.send().await.unwrap().status().as_u16() }
    };

    let alice = Browser::new();
    let page = alice
        .navigate(&format!("{origin}/app/"), Some(("alice", "wonderland")))
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(status(&alice, "/staff/").await, 200, "her domain");
    assert_eq!(
        status(&alice, "/partners/").await,
        200,
        "listed in the file"
    );
    assert_eq!(status(&alice, "/others/").await, 403, "neither");

    // The same domain, but the provider has not verified the address.
    let mallory = Browser::new();
    let page = mallory
        .navigate(&format!("{origin}/app/"), Some(("mallory", "wonderland")))
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    let r = mallory
        .client
        .get(format!("{origin}/staff/"))
        .header("Accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(body.to_string().contains("email rule"), "{body}");
    assert_eq!(up.hits.load(std::sync::atomic::Ordering::SeqCst), 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn allow_if_lets_through_only_what_it_says_true_of() {
    let up = TestUpstream::start("app");
    let port = free_port();
    let origin = format!("http://127.0.0.1:{port}");
    let op = RealOp::start(&op_config(&origin, 3600));
    let route = |expr: &str| format!(r#"provider = "op", allow_if = '{expr}'"#);
    let body = Toml::app_at_op(SECRET, "", &op.issuer, &origin, &up.address())
        .route(
            "admins",
            &["/admins"],
            "app",
            &route(r#"claims.email.endsWith("@example.com") && "admins" in claims.groups"#),
            "",
        )
        .route(
            "read-only",
            &["/read-only"],
            "app",
            &route(r#"request.method == "GET" && request.path.startsWith("/read-only/")"#),
            "",
        )
        .route(
            "nobody",
            &["/nobody"],
            "app",
            &route(r#""nobody" in claims.groups"#),
            "",
        )
        .route(
            "typo",
            &["/typo"],
            "app",
            &route(r#"claims.department == "ops""#),
            "",
        )
        .build();
    let gw = GatewayProcess::start_discovered(&body, port, "/app/").await;
    let alice = Browser::new();
    let page = alice
        .navigate(&format!("{origin}/app/"), Some(("alice", "wonderland")))
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    let call = |method: reqwest::Method, path: &str| {
        let req = alice
            .client
            .request(method, format!("{origin}{path}"))
            .header("Accept", "application/json");
        async move { req.send().await.unwrap().status().as_u16() }
    };
    let before = up.hits.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(call(reqwest::Method::GET, "/admins/").await, 200);
    assert_eq!(call(reqwest::Method::GET, "/read-only/x").await, 200);
    assert_eq!(call(reqwest::Method::DELETE, "/read-only/x").await, 403);
    assert_eq!(call(reqwest::Method::GET, "/nobody/").await, 403);
    // A claim the user does not have: no decision, so a 403 (never an allow), counted.
    assert_eq!(call(reqwest::Method::GET, "/typo/").await, 403);
    assert_eq!(
        up.hits.load(std::sync::atomic::Ordering::SeqCst),
        before + 2
    );
    let m = gw.metrics().await;
    assert_eq!(
        metric_value(&m, "oidc_gateway_policy_errors_total{realm=\"op\"}"),
        Some(1.0),
        "{m}"
    );
    let log = gw.log_containing(&["allow_if could not decide"]);
    assert!(log.contains("department"), "{log}");
}
