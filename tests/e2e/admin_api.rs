//! The admin API (`[admin]`) of two running gateways sharing a real `redis-server`, with bearer
//! tokens from the real `oidc-provider`: status, listing a user's sessions, revoking them on
//! instance A and seeing them refused on B within a second, one session by id through the
//! `oidc-gateway admin` CLI, posted configurations checked, and callers without a token or
//! without the group refused.

use crate::support;
use std::time::{Duration, Instant};
use support::redis::RedisServer;
use support::*;

const SECRET: &str = "admin-api-test-secret-0123456789abcdef";
const AUDIENCE: &str = "urn:gateway-admin";

/// The OP with bob beside alice, and two tool clients: `admin-cli` (in `gateway-admins`) and
/// `intern-cli` (only in `readers`).
fn op(origin: &str) -> RealOp {
    let mut cfg = op_config(origin, 3600);
    add_bob(&mut cfg);
    for id in ["admin-cli", "intern-cli"] {
        cfg["clients"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({
                "client_id": id, "client_secret": format!("{id}-secret-0123456789"),
                "grant_types": ["client_credentials"], "response_types": [], "redirect_uris": [],
                "token_endpoint_auth_method": "client_secret_basic"
            }));
    }
    cfg["client_token_claims"] = serde_json::json!({
        "admin-cli": { "groups": ["gateway-admins"] },
        "intern-cli": { "groups": ["readers"] }
    });
    cfg["resource_servers"][AUDIENCE] =
        serde_json::json!({ "scope": "admin", "audience": AUDIENCE, "accessTokenFormat": "jwt" });
    RealOp::start(&cfg)
}

/// A client_credentials token of `client` for the admin API.
async fn token(op: &RealOp, client_id: &str) -> String {
    let r = client()
        .post(format!("{}/token", op.issuer))
        .basic_auth(client_id, Some(format!("{client_id}-secret-0123456789")))
        .form(&[
            ("grant_type", "client_credentials"),
            ("resource", AUDIENCE),
            ("scope", "admin"),
        ])
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = r.json().await.unwrap();
    body["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("{body}"))
        .to_owned()
}

struct Admin {
    port: u16,
}

impl Admin {
    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
    ) -> (u16, serde_json::Value) {
        let mut req = client().request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or_default())
    }
}

fn body(
    op: &RealOp,
    up: &TestUpstream,
    origin: &str,
    store: &str,
    admin: u16,
    extra: &str,
) -> String {
    let store = format!("store = \"{store}\"");
    Toml::app_at_op(SECRET, &store, &op.issuer, origin, &up.address())
        .raw(&format!(
            "[admin]\nlisten = \"127.0.0.1:{admin}\"\nauth = {{ provider = \"op\", audience_required = [\"{AUDIENCE}\"], groups_required = [\"gateway-admins\"] }}\n{extra}"
        ))
        .build()
}

/// The status of GET /app/x on `gw` with `cookie` (200: the session is served).
async fn app(gw: &GatewayProcess, cookie: &str) -> u16 {
    client()
        .get(gw.url("/app/x"))
        .header("Cookie", cookie)
        .header("Accept", "application/json")
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Runs `oidc-gateway admin <args>` against `admin` with `token`; exit success and stdout.
fn cli(admin: &Admin, token: &str, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(BIN)
        .arg("admin")
        .arg("--url")
        .arg(admin.url(""))
        .args(args)
        .env("OIDC_GATEWAY_ADMIN_TOKEN", token)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_revoked_through_one_instance_are_refused_by_the_other() {
    use reqwest::Method;
    let redis = RedisServer::start();
    let up = TestUpstream::start("app");
    let (port_a, port_b) = (free_port(), free_port());
    let (admin_a, admin_b) = (Admin { port: free_port() }, Admin { port: free_port() });
    let origin = format!("http://127.0.0.1:{port_a}");
    let op = op(&origin);
    let redis_section = format!(
        "[redis]\nurl = \"{}\"\ncommand_timeout = \"500ms\"\n",
        redis.url()
    );
    let body_a = body(&op, &up, &origin, "redis", admin_a.port, &redis_section);
    let body_b = body(&op, &up, &origin, "redis", admin_b.port, &redis_section);
    let a = GatewayProcess::start_discovered(&body_a, port_a, "/app/").await;
    let b = GatewayProcess::start_discovered(&body_b, port_b, "/app/").await;
    let admin = token(&op, "admin-cli").await;
    let intern = token(&op, "intern-cli").await;

    // Refusals first: no token, a token without the group, a token that is not one.
    let (status, _) = admin_a.call(Method::GET, "/admin/status", None).await;
    assert_eq!(status, 401);
    let (status, _) = admin_a
        .call(Method::GET, "/admin/status", Some(&intern))
        .await;
    assert_eq!(status, 403);
    let (status, _) = admin_a
        .call(
            Method::DELETE,
            "/admin/sessions?sub=alice-id",
            Some("not-a-token"),
        )
        .await;
    assert_eq!(status, 401);
    let (status, _) = admin_a
        .call(Method::DELETE, "/admin/status", Some(&admin))
        .await;
    assert_eq!(status, 405);

    let (status, s) = admin_b
        .call(Method::GET, "/admin/status", Some(&admin))
        .await;
    assert_eq!(status, 200, "{s}");
    assert_eq!(s["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(s["config_digest"].as_str().unwrap().len(), 64, "{s}");
    assert_eq!(s["redis"], "ok", "{s}");
    assert_eq!(s["ready"], true, "{s}");
    assert!(s["providers"]["op"]["keys"].as_u64().unwrap() >= 1, "{s}");
    assert!(s["providers"]["op"]["age_seconds"].is_u64(), "{s}");
    assert_eq!(s["upstreams"]["app"]["healthy"], 1, "{s}");

    let alice_1 = sign_in(&a, ("alice", "wonderland")).await;
    let alice_2 = sign_in(&b, ("alice", "wonderland")).await;
    let bob = sign_in(&a, ("bob", "builder")).await;
    for c in [&alice_1, &alice_2, &bob] {
        assert_eq!(app(&b, c).await, 200);
    }

    // B lists both of alice's sessions, wherever they were made, and shows no secret.
    let (status, list) = admin_b
        .call(Method::GET, "/admin/sessions?sub=alice-id", Some(&admin))
        .await;
    assert_eq!(status, 200, "{list}");
    let sessions = list["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 2, "{list}");
    for s in sessions {
        assert_eq!(s["provider"], "op");
        assert_eq!(s["sub"], "alice-id");
        assert!(s.get("idp_sid").is_some(), "{s}");
        let (created, seen, expires) = (
            s["created"].as_u64().unwrap(),
            s["last_seen"].as_u64().unwrap(),
            s["expires"].as_u64().unwrap(),
        );
        assert!(created <= seen && seen < expires, "{s}");
    }
    let text = list.to_string();
    for secret in [&alice_1, &alice_2] {
        let value = secret.split_once('=').unwrap().1;
        assert!(!text.contains(value), "a cookie in the listing: {text}");
    }
    assert!(!text.contains("eyJ"), "a token in the listing: {text}");

    // Revoked through A; B refuses both cookies within a second. Bob is untouched.
    let (status, r) = admin_a
        .call(Method::DELETE, "/admin/sessions?sub=alice-id", Some(&admin))
        .await;
    assert_eq!(status, 200, "{r}");
    let start = Instant::now();
    while app(&b, &alice_1).await == 200 || app(&b, &alice_2).await == 200 {
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "still served on B after 1 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_ne!(app(&a, &alice_1).await, 200);
    assert_eq!(app(&b, &bob).await, 200, "bob is unaffected");
    let (_, list) = admin_a
        .call(Method::GET, "/admin/sessions?sub=alice-id", Some(&admin))
        .await;
    assert_eq!(list["sessions"], serde_json::json!([]), "{list}");

    // One session by id, through the CLI; the intern's token is refused by it too.
    let (ok, out, err) = cli(&admin_b, &admin, &["sessions", "--sub", "bob-id"]);
    assert!(ok, "{err}");
    let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
    let id = listed["sessions"][0]["id"].as_str().unwrap().to_owned();
    let (ok, _, err) = cli(&admin_b, &intern, &["revoke", "--session", &id]);
    assert!(!ok && err.starts_with("403"), "{err}");
    assert_eq!(app(&a, &bob).await, 200);
    let (ok, out, err) = cli(&admin_b, &admin, &["revoke", "--session", &id]);
    assert!(ok, "{err}");
    assert!(out.contains("\"session\""), "{out}");
    let start = Instant::now();
    while app(&a, &bob).await == 200 {
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "bob's session still served on A"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, _) = admin_a
        .call(Method::DELETE, "/admin/sessions/zz", Some(&admin))
        .await;
    assert_eq!(status, 400);

    // Bob signs in again: a revocation ends sessions, not the user.
    let bob_again = sign_in(&a, ("bob", "builder")).await;
    assert_eq!(app(&b, &bob_again).await, 200);

    // Every call was counted and logged with its caller.
    let m = a.metrics().await;
    assert_eq!(
        metric_value(
            &m,
            r#"oidc_gateway_admin_calls_total{call="status",status="401"}"#
        ),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        metric_value(
            &m,
            r#"oidc_gateway_admin_calls_total{call="revoke_user",status="200"}"#
        ),
        Some(1.0),
        "{m}"
    );
    a.log_containing(&["admin call", "caller=admin-cli", "call=\"revoke_user\""]);
    a.log_containing(&["admin call refused", "status=403"]);

    // Redis stalls: a revocation that cannot be shared says so (503, nothing half done), fast;
    // the operator's retry once Redis is back goes through.
    redis.signal("STOP");
    let started = Instant::now();
    let (status, r) = admin_a
        .call(Method::DELETE, "/admin/sessions?sub=bob-id", Some(&admin))
        .await;
    assert_eq!(status, 503, "{r}");
    assert!(r["message"].as_str().unwrap().contains("try again"), "{r}");
    assert!(started.elapsed() < Duration::from_secs(3));
    redis.signal("CONT");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, r) = admin_a
            .call(Method::DELETE, "/admin/sessions?sub=bob-id", Some(&admin))
            .await;
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "{status} {r}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_ne!(
        app(&b, &bob_again).await,
        200,
        "the retry ended bob's new session"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_store_sessions_are_listed_and_posted_configs_checked() {
    use reqwest::Method;
    let up = TestUpstream::start("app");
    let port = free_port();
    let admin = Admin { port: free_port() };
    let origin = format!("http://127.0.0.1:{port}");
    let op = op(&origin);
    let body = body(&op, &up, &origin, "memory", admin.port, "");
    let gw = GatewayProcess::start_discovered(&body, port, "/app/").await;
    let token = token(&op, "admin-cli").await;

    let alice = sign_in(&gw, ("alice", "wonderland")).await;
    let (status, list) = admin
        .call(
            Method::GET,
            "/admin/sessions?sub=alice-id&provider=op",
            Some(&token),
        )
        .await;
    assert_eq!(status, 200, "{list}");
    let id = list["sessions"][0]["id"].as_str().unwrap().to_owned();
    let (status, _) = admin
        .call(
            Method::GET,
            "/admin/sessions?sub=alice-id&provider=nope",
            Some(&token),
        )
        .await;
    assert_eq!(status, 400);
    let (status, _) = admin
        .call(
            Method::DELETE,
            &format!("/admin/sessions/{id}"),
            Some(&token),
        )
        .await;
    assert_eq!(status, 200);
    assert_ne!(app(&gw, &alice).await, 200, "ended at once");

    // A posted configuration gets `check`'s own errors, with line and key.
    let check = |body: reqwest::Body| {
        client()
            .post(admin.url("/admin/config/check"))
            .bearer_auth(&token)
            .body(body)
            .send()
    };
    let post = |text: &'static str| {
        let req = check(text.into());
        async move {
            let r = req.await.unwrap();
            (
                r.status().as_u16(),
                r.json::<serde_json::Value>().await.unwrap(),
            )
        }
    };
    // Hostile bodies: bytes that are not text, and more than 1 MiB, are refused before parsing.
    for (body, expected) in [
        (vec![0xff, 0xfe, 0x00, 0x80], 400),
        (vec![b'#'; 1024 * 1024 + 1], 413),
    ] {
        let r = check(body.into()).await.unwrap();
        assert_eq!(r.status().as_u16(), expected);
    }
    let (status, r) = post("[[upstreams]]\nname = \"app\"\ntargets = [\"127.0.0.1:1\"]\n").await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["valid"], true);
    let (status, r) =
        post("[server]\nlisten = [\"nowhere\"]\n[[routes]]\nname = \"r\"\nupstream = \"x\"\n")
            .await;
    assert_eq!(status, 422, "{r}");
    let errors = r["errors"].to_string();
    assert!(errors.contains("posted.toml:2"), "{errors}");
    assert!(errors.contains("routes[0].upstream"), "{errors}");
    // Nothing a posted configuration names is read: a file's lines never come back.
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("secret.txt");
    std::fs::write(&secret_file, "TOP-SECRET-LINE-0123456789abcdef0123\n").unwrap();
    let text = format!(
        "[session]\nsecrets_file = \"{f}\"\n[[providers]]\nname = \"op\"\nissuer = \"https://idp.example.com\"\n\
         client_id = \"c\"\nclient_secret = \"${{NOT_SET_ANYWHERE}}\"\nredirect_uri = \"https://a.example.com/cb\"\n\
         [[upstreams]]\nname = \"a\"\ntargets = [\"127.0.0.1:1\"]\n[[routes]]\nname = \"r\"\nupstream = \"a\"\n\
         auth = {{ provider = \"op\", emails_file = \"{f}\" }}\n",
        f = secret_file.display()
    );
    let answer = check(text.into()).await.unwrap().text().await.unwrap();
    assert!(!answer.contains("TOP-SECRET"), "{answer}");
    assert!(
        answer.contains("\"valid\":true") && answer.contains("not read"),
        "{answer}"
    );
    let (ok, out, err) = {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("gw.toml");
        std::fs::write(&file, "[session]\nsecrets = [\"short\"]\n").unwrap();
        cli(&admin, &token, &["check-config", file.to_str().unwrap()])
    };
    assert!(!ok, "{out}");
    assert!(
        err.starts_with("422") && err.contains("session.secrets"),
        "{err}"
    );
}
