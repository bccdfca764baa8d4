//! `oidc-gateway demo`: one command runs the gateway, the development IdP and the demo upstream.

use crate::support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::*;

/// A running `oidc-gateway demo`.
pub struct Demo {
    pub origin: String,
    pub idp: String,
    /// The metrics listener, whose `/readyz` says when the upstream is healthy.
    metrics: String,
    child: Child,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Demo {
    pub fn start() -> Demo {
        let (gw, idp, up, metrics) = (free_port(), free_port(), free_port(), free_port());
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("demo.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(BIN)
            .args([
                "demo",
                "--port",
                &gw.to_string(),
                "--idp-port",
                &idp.to_string(),
            ])
            .args([
                "--upstream-port",
                &up.to_string(),
                "--metrics-port",
                &metrics.to_string(),
            ])
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out))
            .spawn()
            .unwrap();
        let d = Demo {
            origin: format!("http://127.0.0.1:{gw}"),
            idp: format!("http://127.0.0.1:{idp}"),
            metrics: format!("http://127.0.0.1:{metrics}"),
            child,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", gw)).is_err()
            || std::net::TcpStream::connect(("127.0.0.1", idp)).is_err()
        {
            assert!(
                Instant::now() < deadline,
                "demo did not start:\n{}",
                d.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        d
    }

    pub fn log(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log).unwrap_or_default()).into_owned()
    }

    /// Waits until the gateway has discovered the development IdP and found the demo upstream
    /// healthy (its first health check may run before the upstream listens).
    pub async fn ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let r = client()
                .get(format!("{}/", self.origin))
                .header("Accept", "text/html")
                .send()
                .await
                .unwrap();
            let ready = client()
                .get(format!("{}/readyz", self.metrics))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
            if r.status() == 302 && ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the demo gateway never reached its IdP:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn print_config_is_a_valid_config() {
    let out = Command::new(BIN)
        .args(["demo", "--print-config"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("demo.toml");
    std::fs::write(&path, &out.stdout).unwrap();
    let check = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&path)
        .env("SESSION_SECRET", "0123456789abcdef0123456789abcdef-check")
        .env("CLIENT_SECRET", "client-secret")
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_demo_signs_in_shows_identity_and_enforces_rules() {
    let demo = Demo::start();
    assert!(
        demo.log().contains("sign in as alice / wonderland"),
        "banner missing:\n{}",
        demo.log()
    );
    demo.ready().await;

    let alice = Browser::new();
    let page = alice
        .navigate(&format!("{}/", demo.origin), Some(("alice", "wonderland")))
        .await;
    assert_eq!(page.status, 200, "{}\n{}", page.body, demo.log());
    assert!(page.body.contains("Hello, alice"), "{}", page.body);
    assert!(page.body.contains("alice@example.com"));
    assert!(page.body.contains("Access token claims"));
    assert!(
        !page.body.contains("eyJ"),
        "a raw token was rendered into the page"
    );
    assert_eq!(
        alice
            .navigate(&format!("{}/admin", demo.origin), None)
            .await
            .status,
        200
    );
    let wrong = Browser::new()
        .navigate(&format!("{}/", demo.origin), Some(("alice", "not-it")))
        .await;
    assert!(wrong.body.contains("Invalid username or password"));

    let bob = Browser::new();
    assert_eq!(
        bob.navigate(&format!("{}/", demo.origin), Some(("bob", "builder")))
            .await
            .status,
        200
    );
    let denied = bob.navigate(&format!("{}/admin", demo.origin), None).await;
    assert_eq!(denied.status, 403);
    assert!(denied.body.contains("Access denied"));

    // The API route with a client-credentials token from the development IdP.
    let token: serde_json::Value = client()
        .post(format!("{}/token", demo.idp))
        .basic_auth("demo-api-client", Some("demo-api-secret"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("resource", "demo-api"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let at = token["access_token"].as_str().unwrap();
    let r = client()
        .get(format!("{}/api/x", demo.origin))
        .bearer_auth(at)
        .header("Accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = client()
        .get(format!("{}/api/x", demo.origin))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // Logout goes through the IdP's end_session and lands on the public page.
    let out = alice.post(&format!("{}/oauth2/logout", demo.origin)).await;
    assert_eq!(out.status(), 302);
    let end = out.headers()["location"].to_str().unwrap().to_owned();
    let landed = alice.navigate(&end, None).await;
    assert_eq!(landed.url, format!("{}/public", demo.origin));
    let again = alice.navigate(&format!("{}/", demo.origin), None).await;
    assert!(
        again.body.contains("name=\"password\""),
        "the IdP asks for the password again"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn dev_idp_prints_what_a_gateway_needs_and_refuses_an_unknown_logout_redirect_clearly() {
    let (port, gw) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("idp.log");
    let out = std::fs::File::create(&log).unwrap();
    let mut child = Command::new(BIN)
        .args(["dev-idp", "--port", &port.to_string()])
        .args(["--gateway-port", &gw.to_string()])
        .env("CLIENT_SECRET", "my-very-own-client-secret")
        .stdout(Stdio::from(out.try_clone().unwrap()))
        .stderr(Stdio::from(out))
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "dev-idp did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let printed = std::fs::read_to_string(&log).unwrap();
    for line in [
        format!("issuer:                   http://127.0.0.1:{port}"),
        "client_id:                demo".to_owned(),
        format!("redirect_uri:             http://127.0.0.1:{gw}/oauth2/callback"),
        format!("post-logout redirect_uri: http://127.0.0.1:{gw}/public"),
        "client_secret:            the value of CLIENT_SECRET".to_owned(),
    ] {
        assert!(printed.contains(&line), "{line:?} in:\n{printed}");
    }
    assert!(!printed.contains("my-very-own-client-secret"), "{printed}");

    // A gateway whose logout_redirect_uri the IdP does not know: a clear 400, not a silent
    // "signed out" page.
    let r = client()
        .get(format!(
            "http://127.0.0.1:{port}/logout?client_id=demo&post_logout_redirect_uri=http%3A%2F%2Flocalhost%3A{gw}%2Fbye"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let page = r.text().await.unwrap();
    assert!(
        page.contains(&format!("http://localhost:{gw}/bye"))
            && page.contains(&format!("http://127.0.0.1:{gw}/public")),
        "{page}"
    );
    let _ = child.kill();
    let _ = child.wait();
}
