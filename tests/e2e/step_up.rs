//! Step-up per route against the real `oidc-provider`, which has two authentication levels:
//! the password alone (`acr` urn:test:pwd) and the password followed by a one-time code
//! (urn:test:mfa). A session that falls short of a route's `acr_values` or `max_age` sends a
//! browser back to the provider asking for them, gets an API client RFC 9470's 401, and the
//! sign-in that comes back is checked against what was asked before it replaces the session.

use crate::support;
use serde_json::Value;
use support::*;

const SECRET: &str = "step-up-test-session-secret-0123456789abc";
const PASSWORD: &str = "wonderland";
const WITH_OTP: &str = "wonderland424242";

struct Site {
    _op: RealOp,
    issuer: String,
    gw: GatewayProcess,
    _up: TestUpstream,
    origin: String,
}

async fn site() -> Site {
    let up = TestUpstream::start("app");
    let port = free_port();
    let origin = format!("http://127.0.0.1:{port}");
    let mut cfg = op_config(&origin, 3600);
    cfg["accounts"][0]["otp"] = "424242".into();
    let op = RealOp::start(&cfg);
    let body = Toml::new()
        .session(SECRET, "")
        .provider(
            "op",
            &op.issuer,
            "gateway-secret-0123456789",
            &origin,
            "leeway = \"1s\"",
        )
        .upstream("app", &up.address())
        .route("app", &["/app"], "app", r#"provider = "op""#, "")
        .route(
            "admin",
            &["/admin"],
            "app",
            r#"provider = "op", acr_values = ["urn:test:mfa"], prompt = "login""#,
            "",
        )
        .route(
            "recent",
            &["/recent"],
            "app",
            r#"provider = "op", max_age = "5m""#,
            "",
        )
        .build();
    let gw = GatewayProcess::start_with(GatewayOptions {
        body: &body,
        port: Some(port),
        ..Default::default()
    });
    let issuer = op.issuer.clone();
    let s = Site {
        _op: op,
        issuer,
        gw,
        _up: up,
        origin,
    };
    // Discovery runs in the background: until it is done a sign-in start answers 503.
    for _ in 0..200 {
        if s.get(&Browser::new(), "/app/", true).await.status() == 302 {
            return s;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("provider never discovered:\n{}", s.gw.log());
}

impl Site {
    /// One request as `b`, not following redirects: as a page navigation (`html`) or an API call.
    async fn get(&self, b: &Browser, path: &str, html: bool) -> reqwest::Response {
        let accept = if html {
            "text/html"
        } else {
            "application/json"
        };
        b.client
            .get(format!("{}{path}", self.origin))
            .header("Accept", accept)
            .send()
            .await
            .unwrap()
    }

    /// The session's claims, as the gateway's userinfo endpoint gives them.
    async fn whoami(&self, b: &Browser) -> Value {
        let r = self.get(b, "/oauth2/userinfo", false).await;
        assert_eq!(r.status(), 200, "no session");
        r.json().await.unwrap()
    }

    async fn logins(&self, result: &str) -> u64 {
        let m = self.gw.metrics().await;
        m.lines()
            .find(|l| {
                l.starts_with("oidc_gateway_logins_total{")
                    && l.contains(&format!("result=\"{result}\""))
            })
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0)
    }
}

fn location(r: &reqwest::Response) -> String {
    r.headers()["location"].to_str().unwrap().to_owned()
}

fn www_authenticate(r: &reqwest::Response) -> String {
    r.headers()["www-authenticate"].to_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_route_asking_for_a_second_factor_steps_the_session_up_in_place() {
    let s = site().await;
    let b = Browser::new();
    // Signed in with the password alone.
    let page = b
        .navigate(&format!("{}/app/", s.origin), Some(("alice", PASSWORD)))
        .await;
    assert_eq!(page.status, 200, "{}", s.gw.log());
    let before = s.whoami(&b).await;
    assert_eq!(before["claims"]["acr"], "urn:test:pwd");
    let weak_cookie = b.cookie_header(&s.origin);

    // The admin route asks for more: a browser goes back to the provider, asking for it...
    let r = s.get(&b, "/admin/users?page=2", true).await;
    assert_eq!(r.status(), 302);
    let authorize = location(&r);
    assert!(
        authorize.starts_with(&format!("{}/auth?", s.issuer)),
        "{authorize}"
    );
    for p in ["acr_values=urn%3Atest%3Amfa", "prompt=login"] {
        assert!(authorize.contains(p), "{p} missing from {authorize}");
    }
    // ...an API call gets RFC 9470's challenge, and neither reaches the application.
    let r = s.get(&b, "/admin/users", false).await;
    assert_eq!(r.status(), 401);
    let www = www_authenticate(&r);
    assert!(
        www.contains("error=\"insufficient_user_authentication\"")
            && www.contains("acr_values=\"urn:test:mfa\""),
        "{www}"
    );
    // The route without step-up still serves the session.
    assert_eq!(s.get(&b, "/app/", true).await.status(), 200);

    // Signing in again with the password alone does not pass: the provider answers acr
    // urn:test:pwd, which is not what was asked. The old session is untouched.
    let refused_before = s.logins("acr_not_met").await;
    let page = b.navigate(&authorize, Some(("alice", PASSWORD))).await;
    assert_eq!(page.status, 403, "{}", page.body);
    assert!(page.body.contains("stronger"), "{}", page.body);
    assert_eq!(s.logins("acr_not_met").await, refused_before + 1);
    assert_eq!(s.whoami(&b).await["claims"]["acr"], "urn:test:pwd");

    // With the one-time code: back on the page asked for, the same user at the stronger level.
    let page = b
        .navigate(
            &format!("{}/admin/users?page=2", s.origin),
            Some(("alice", WITH_OTP)),
        )
        .await;
    assert_eq!(page.status, 200, "{}", s.gw.log());
    assert!(page.url.ends_with("/admin/users?page=2"), "{}", page.url);
    let after = s.whoami(&b).await;
    assert_eq!(after["sub"], before["sub"]);
    assert_eq!(after["claims"]["acr"], "urn:test:mfa");
    assert_eq!(s.get(&b, "/admin/users", false).await.status(), 200);
    assert_eq!(s.get(&b, "/app/", true).await.status(), 200);

    // One session, not two: the weaker session's cookie was ended by the step-up.
    let old = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = old
        .get(format!("{}/app/", s.origin))
        .header("Accept", "application/json")
        .header("Cookie", weak_cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "the replaced session still works");
}

#[tokio::test(flavor = "multi_thread")]
async fn max_age_sends_an_old_sign_in_back_and_refuses_one_the_provider_did_not_renew() {
    let s = site().await;
    let b = Browser::new();
    let page = b
        .navigate(&format!("{}/recent/", s.origin), Some(("alice", PASSWORD)))
        .await;
    assert_eq!(page.status, 200, "{}", s.gw.log());
    let auth_time = s.whoami(&b).await["claims"]["auth_time"].as_u64();
    assert!(
        auth_time.is_some(),
        "max_age was asked, so auth_time is there"
    );
    assert_eq!(s.get(&b, "/recent/", false).await.status(), 200);

    // Six minutes later (the gateway's clock moved) the sign-in is older than max_age = 5m.
    s.gw.advance_clock(360).await;
    let r = s.get(&b, "/recent/", true).await;
    assert_eq!(r.status(), 302);
    let authorize = location(&r);
    assert!(authorize.contains("max_age=300"), "{authorize}");
    let r = s.get(&b, "/recent/", false).await;
    assert_eq!(r.status(), 401);
    let www = www_authenticate(&r);
    assert!(
        www.contains("insufficient_user_authentication") && www.ends_with("max_age=300"),
        "{www}"
    );
    assert!(!www.contains("acr_values"), "{www}");
    assert_eq!(
        s.get(&b, "/app/", false).await.status(),
        200,
        "other routes are not affected"
    );

    // The provider's clock did not move: for it the sign-in is fresh, and it answers without
    // asking again, with the same auth_time. The callback checks what was asked and refuses.
    let refused_before = s.logins("max_age_exceeded").await;
    let page = b.navigate(&authorize, None).await;
    assert_eq!(page.status, 403, "{}", page.body);
    assert_eq!(s.logins("max_age_exceeded").await, refused_before + 1);
}
