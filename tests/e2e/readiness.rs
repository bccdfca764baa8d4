//! Readiness, the start-up window and restarts while the identity provider is down, against the
//! real binary and a real (in-test) OpenID Provider that can be slowed, stopped and restarted on
//! the same issuer URL.

use crate::support;

use serde_json::{Value, json};
use std::time::{Duration, Instant};
use support::*;

const SECRET: &str = "readiness-test-session-secret-0123456789ab";

/// One provider `a` and a bearer route `/api` on `upstream` (plus a public `/`).
fn body(issuer: &str, origin: &str, upstream: &str, provider_extra: &str) -> String {
    Toml::new()
        .session(SECRET, "")
        .provider("a", issuer, "s", origin, provider_extra)
        .upstream("app", upstream)
        .route(
            "api",
            &["/api"],
            "app",
            "provider = \"a\", methods = [\"bearer\"]",
            "",
        )
        .route("public", &[], "app", "", "")
        .build()
}

fn token(issuer: &str) -> String {
    let now = unix_now();
    mint(
        &json!({"iss": issuer, "sub": "alice", "aud": "gateway", "exp": now + 600, "iat": now}),
        "key1",
    )
}

async fn readyz(gw: &GatewayProcess) -> (u16, Value) {
    let (status, body) = gw.readyz().await;
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

async fn wait_ready(gw: &GatewayProcess, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let (status, body) = readyz(gw).await;
        if status == 200 {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "not ready after {within:?}: {body}\n{}",
            gw.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn bearer(gw: &GatewayProcess, token: &str) -> u16 {
    client()
        .get(gw.url("/api"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn start(body: &str, server_extra: &str) -> GatewayProcess {
    GatewayProcess::start_with(GatewayOptions {
        body,
        server_extra,
        ..Default::default()
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn readyz_names_the_provider_until_it_is_discovered() {
    let up = TestUpstream::start("app");
    let idp_port = free_port();
    let issuer = format!("http://127.0.0.1:{idp_port}");
    let port = free_port();
    let origin = format!("http://127.0.0.1:{port}");
    // The provider is not there yet: nothing is known of it.
    let gw = GatewayProcess::start_with(GatewayOptions {
        body: &body(&issuer, &origin, &up.address(), ""),
        port: Some(port),
        ..Default::default()
    });
    let (status, report) = readyz(&gw).await;
    assert_eq!(status, 503, "{report}");
    assert_eq!(report["ready"], false);
    assert_eq!(report["missing"], json!(["provider a"]), "{report}");
    assert_eq!(report["providers"]["a"]["status"], "missing");
    assert_eq!(report["upstreams"]["app"]["healthy"], 1);
    // Public routes serve meanwhile; a bearer request fails at once (no discovery in flight:
    // the provider refused the connection), with 503, not a hang.
    let t0 = Instant::now();
    assert_eq!(bearer(&gw, &token(&issuer)).await, 503);
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    let r = client().get(gw.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 200);

    let idp = HostileOp::start_on(idp_port, Attack::None);
    let report = wait_ready(&gw, Duration::from_secs(10)).await;
    assert_eq!(report["providers"]["a"]["status"], "ok", "{report}");
    assert_eq!(bearer(&gw, &token(&idp.issuer)).await, 200);
    let m = gw.metrics().await;
    let age = metric_value(
        &m,
        "oidc_gateway_provider_metadata_age_seconds{provider=\"a\"}",
    )
    .expect("age exported");
    assert!(age < 30.0, "{age}");
}

#[tokio::test(flavor = "multi_thread")]
async fn readyz_names_an_upstream_without_a_healthy_target() {
    let target_port = free_port();
    let gw = start(
        &format!(
            "[[upstreams]]\nname = \"app\"\ntargets = [\"127.0.0.1:{target_port}\"]\n\
             health_check = {{ kind = \"tcp\", interval = \"200ms\", timeout = \"200ms\" }}\n\
             [[routes]]\nname = \"r\"\nupstream = \"app\"\n"
        ),
        "",
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    let report = loop {
        let (status, report) = readyz(&gw).await;
        if status == 503 {
            break report;
        }
        assert!(Instant::now() < deadline, "never unready: {report}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(report["missing"], json!(["upstream app"]), "{report}");
    assert_eq!(report["upstreams"]["app"]["healthy"], 0);
    // A single-target upstream's readiness is asked without a selection: still a clean 503.
    let r = reqwest::get(gw.url("/x")).await.unwrap();
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "no_healthy_upstream", "{body}");
    let _up = TestUpstream::start_on(target_port, "app");
    let report = wait_ready(&gw, Duration::from_secs(5)).await;
    assert_eq!(report["upstreams"]["app"]["healthy"], 1, "{report}");
    assert_eq!(reqwest::get(gw.url("/x")).await.unwrap().status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_during_the_first_discovery_waits_for_it() {
    let up = TestUpstream::start("app");
    let idp = HostileOp::start(Attack::None);
    // A cloud IdP's pace: discovery and JWKS take 300 ms each.
    idp.set_delay_ms(300);
    let port = free_port();
    let origin = format!("http://127.0.0.1:{port}");
    let gw = GatewayProcess::start_with(GatewayOptions {
        body: &body(&idp.issuer, &origin, &up.address(), ""),
        port: Some(port),
        ..Default::default()
    });
    // The port has just opened; discovery is still in flight.
    let t0 = Instant::now();
    let status = bearer(&gw, &token(&idp.issuer)).await;
    assert_eq!(status, 200, "{}", gw.log());
    assert!(
        t0.elapsed() > Duration::from_millis(100),
        "answered before discovery could have finished: the test did not test the window"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_while_the_idp_is_down_keeps_verifying_known_keys() {
    let up = TestUpstream::start("app");
    let state = tempfile::tempdir().unwrap();
    let state_line = format!("state_dir = \"{}\"", state.path().display());
    let idp = HostileOp::start(Attack::None);
    let idp_port = idp.port();
    let issuer = idp.issuer.clone();
    let port = free_port();
    let origin = format!("http://127.0.0.1:{port}");
    let config = body(&issuer, &origin, &up.address(), "");
    let start_here = |config: &str| {
        GatewayProcess::start_with(GatewayOptions {
            body: config,
            server_extra: &state_line,
            port: Some(port),
            ..Default::default()
        })
    };

    let mut gw = start_here(&config);
    wait_ready(&gw, Duration::from_secs(10)).await;
    assert_eq!(bearer(&gw, &token(&issuer)).await, 200);
    let saved: Vec<_> = std::fs::read_dir(state.path().join("providers"))
        .expect("providers saved under state_dir")
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(saved.len(), 1, "{saved:?}");
    let sealed = std::fs::read_to_string(&saved[0]).unwrap();
    assert!(
        !sealed.contains("jwks") && !sealed.contains(&issuer),
        "the file is sealed"
    );
    gw.signal("TERM");
    gw.wait_exit(Duration::from_secs(5)).expect("stopped");
    drop(gw);

    // The IdP goes down, then the gateway restarts.
    drop(idp);
    let gw = start_here(&config);
    let (status, report) = readyz(&gw).await;
    assert_eq!(status, 200, "ready from the saved keys at once: {report}");
    assert_eq!(bearer(&gw, &token(&issuer)).await, 200, "{}", gw.log());
    let m = gw.metrics().await;
    assert!(
        metric_value(
            &m,
            "oidc_gateway_provider_metadata_age_seconds{provider=\"a\"}"
        )
        .is_some(),
        "{m}"
    );
    assert!(
        gw.log_containing(&["loaded saved discovery and keys"])
            .contains("loaded saved discovery and keys")
    );
    drop(gw);

    // A file that does not open (altered, or sealed with other secrets) plants nothing.
    let mut altered = sealed.clone().into_bytes();
    let mid = altered.len() / 2;
    altered[mid] = if altered[mid] == b'A' { b'B' } else { b'A' };
    std::fs::write(&saved[0], &altered).unwrap();
    let gw = start_here(&config);
    assert_eq!(readyz(&gw).await.0, 503);
    assert_eq!(bearer(&gw, &token(&issuer)).await, 503);
    assert!(
        gw.log_containing(&["not used"]).contains("not used"),
        "{}",
        gw.log()
    );
    drop(gw);

    // Older than max_stale: not used either.
    std::fs::write(&saved[0], &sealed).unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let gw = start_here(&body(&issuer, &origin, &up.address(), "max_stale = \"1s\""));
    assert_eq!(readyz(&gw).await.0, 503);
    assert!(
        gw.log_containing(&["max_stale"])
            .contains("older than max_stale")
    );

    // The IdP comes back at the same address: the gateway finds it by itself.
    let _idp = HostileOp::start_on(idp_port, Attack::None);
    wait_ready(&gw, Duration::from_secs(10)).await;
    assert_eq!(bearer(&gw, &token(&issuer)).await, 200);
}

/// A ready gateway on a port of its own (its upgrades take it over) with the given
/// `upgrade_ready_timeout`, its provider and its upstream.
async fn ready_for_upgrades(ready_timeout: &str) -> (GatewayProcess, HostileOp, TestUpstream) {
    let up = TestUpstream::start("app");
    let idp = HostileOp::start(Attack::None);
    let port = free_port();
    let origin = format!("http://127.0.0.1:{port}");
    let gw = GatewayProcess::start_with(GatewayOptions {
        body: &body(&idp.issuer, &origin, &up.address(), ""),
        server_extra: &format!("upgrade_ready_timeout = \"{ready_timeout}\""),
        port: Some(port),
        ..Default::default()
    });
    wait_ready(&gw, Duration::from_secs(10)).await;
    (gw, idp, up)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upgrade_with_a_hung_provider_takes_over_after_upgrade_ready_timeout() {
    let (mut old, idp, _up) = ready_for_upgrades("1s").await;
    // No state_dir: the new process must discover, and the provider now hangs.
    idp.set_delay_ms(30_000);
    let t0 = Instant::now();
    let new = old.start_upgrade();
    old.signal("QUIT");
    let log = new.log_containing(&["taking over anyway"]);
    assert!(log.contains("taking over anyway"), "{log}");
    old.wait_exit(Duration::from_secs(15))
        .expect("the old process handed over and exited");
    // About 8 s of it is fixed (1 s ready timeout, the old process's once-a-second send, then
    // Pingora's 5 s close timeout and the 1 s grace period); the provider hangs for 30 s.
    assert!(
        t0.elapsed() < Duration::from_secs(15),
        "a hung provider held the reload for {:?}",
        t0.elapsed()
    );
    let r = client().get(new.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 200, "the new process serves");
}

/// Whether process `pid` has a handler for SIGQUIT (its `SigCgt` mask in `/proc`).
fn catches_sigquit(pid: u32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (3 - 1)) != 0)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_reaching_a_process_still_taking_over_is_handed_on_once_it_serves() {
    // Reloads in quick succession: the second SIGQUIT reaches a process that is itself still
    // getting ready. Pingora listens for SIGQUIT only once it serves; before the fix the signal's
    // default action killed the process here, with the sockets on their way to it.
    let (mut first, idp, _up) = ready_for_upgrades("3s").await;

    // The provider hangs: the second process spends 3 s getting ready before it takes over.
    idp.set_delay_ms(30_000);
    let mut second = first.start_upgrade();
    first.signal("QUIT");
    let deadline = Instant::now() + Duration::from_millis(2500);
    while !catches_sigquit(second.pid()) {
        assert!(
            Instant::now() < deadline && !second.has_exited(),
            "a starting process does not catch SIGQUIT:\n{}",
            second.log()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    second.signal("QUIT");
    let deadline = Instant::now() + Duration::from_secs(15);
    let log = loop {
        let log = second.log();
        if log.contains("handing the sockets on now")
            || second.has_exited()
            || Instant::now() > deadline
        {
            break log;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        log.contains("handing the sockets on now"),
        "exited: {:?}\n{log}",
        second.wait_exit(Duration::from_millis(100))
    );

    // The third process gets ready at once and receives the sockets from the second.
    idp.set_delay_ms(0);
    let mut third = second.start_upgrade();
    for (name, p) in [("first", &mut first), ("second", &mut second)] {
        let status = p.wait_exit(Duration::from_secs(20));
        assert!(
            status.is_some_and(|s| s.success()),
            "the {name} process handed over and exited by itself: {status:?}\n{}",
            p.log()
        );
    }
    assert!(!third.has_exited(), "{}", third.log());
    let r = client().get(third.url("/")).send().await.unwrap();
    assert_eq!(
        r.status(),
        200,
        "the third process serves:\n{}",
        third.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_login_start_while_the_idp_is_unreachable_gets_503_not_a_dead_redirect() {
    let up = TestUpstream::start("app");
    let idp = HostileOp::start(Attack::None);
    let idp_port = idp.port();
    let port = free_port();
    let origin = format!("http://127.0.0.1:{port}");
    let gw = GatewayProcess::start_with(GatewayOptions {
        body: &Toml::new()
            .session(SECRET, "")
            .provider("a", &idp.issuer, "s", &origin, "")
            .upstream("app", &up.address())
            .route("app", &["/app"], "app", "provider = \"a\"", "")
            .build(),
        port: Some(port),
        ..Default::default()
    });
    wait_ready(&gw, Duration::from_secs(10)).await;
    let start = || async {
        let r = client()
            .get(gw.url("/app/"))
            .header("Accept", "text/html")
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.headers().contains_key("retry-after"))
    };
    assert_eq!(start().await.0, 302);
    drop(idp);
    // The gateway notices within its probe interval (2 s) and says so, instead of sending the
    // browser to a provider it cannot reach itself (the callback could not complete).
    let deadline = Instant::now() + Duration::from_secs(6);
    loop {
        let (status, retry_after) = start().await;
        if status == 503 {
            assert!(retry_after);
            break;
        }
        assert_eq!(status, 302);
        assert!(
            Instant::now() < deadline,
            "still redirecting to a dead provider"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _idp = HostileOp::start_on(idp_port, Attack::None);
    let deadline = Instant::now() + Duration::from_secs(6);
    while start().await.0 != 302 {
        assert!(Instant::now() < deadline, "sign-ins did not come back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
