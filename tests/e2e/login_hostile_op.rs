//! Every way an OpenID Provider's answers (or a callback) can be wrong, against the running
//! gateway: each must be refused, with a clear page, and the upstream must never see a request.
//! Also: key rotation (a new `kid` is fetched and accepted) and the unknown-`kid` fetch limit.

use crate::support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use support::*;

const SECRET: &str = "hostile-test-session-secret-0123456789abcdef";

struct Setup {
    op: HostileOp,
    gw: GatewayProcess,
    up: TestUpstream,
    origin: String,
}

fn start(attack: Attack) -> Setup {
    start_with(attack, "")
}

fn start_with(attack: Attack, provider_extra: &str) -> Setup {
    let op = HostileOp::start(attack);
    let up = TestUpstream::start("app");
    let port = free_port();
    let origin = format!("http://127.0.0.1:{port}");
    let body = Toml::new()
        .session(SECRET, "")
        .provider(
            "hostile",
            &op.issuer,
            "gateway-secret",
            &origin,
            provider_extra,
        )
        .upstream("app", &up.address())
        .route("app", &["/app"], "app", r#"provider = "hostile""#, "")
        .route("public", &["/public"], "app", "", "")
        .build();
    let gw = GatewayProcess::start_with(GatewayOptions {
        body: &body,
        port: Some(port),
        ..Default::default()
    });
    Setup { op, gw, up, origin }
}

/// Logs in (the hostile OP approves at once) and returns the final page.
async fn login(s: &Setup, b: &Browser) -> Page {
    s.gw.wait_discovered("/app/").await;
    b.navigate(&format!("{}/app/private", s.origin), None).await
}

/// Starts a login for `path` in `b` and lets the OP answer the authorization request: returns
/// the login cookie the gateway set (`name=value`) and the callback URL the OP redirected to.
async fn begin_login(s: &Setup, b: &Browser, path: &str) -> (String, String) {
    let first = b
        .client
        .get(format!("{}{path}", s.origin))
        .header("Accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 302);
    let login_cookie = first.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let authorize = first.headers()["location"].to_str().unwrap().to_owned();
    let callback = b.client.get(&authorize).send().await.unwrap().headers()["location"]
        .to_str()
        .unwrap()
        .to_owned();
    (login_cookie, callback)
}

async fn assert_refused(attack: Attack, status: u16, reason: &str) {
    let s = start(attack);
    let b = Browser::new();
    let page = login(&s, &b).await;
    assert_eq!(
        page.status,
        status,
        "{attack:?}: {}\n{:?}\n{}",
        page.body,
        page.trail,
        s.gw.log()
    );
    assert!(
        page.url.contains("/oauth2/callback"),
        "{attack:?} ended at {}",
        page.url
    );
    assert!(
        page.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(
        page.body.contains("Sign-in"),
        "{attack:?}: page should say what happened: {}",
        page.body
    );
    assert_eq!(
        s.up.hits.load(Ordering::SeqCst),
        0,
        "{attack:?}: the upstream saw a request"
    );
    // No session was created: the protected page still asks for login.
    let again = b
        .client
        .get(format!("{}/app/private", s.origin))
        .header("Accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(
        again.status(),
        302,
        "{attack:?}: a session exists after a refused login"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let metrics = s.gw.metrics().await;
    let series = format!("oidc_gateway_logins_total{{provider=\"hostile\",result=\"{reason}\"}}");
    assert_eq!(
        metric_value(&metrics, &series),
        Some(1.0),
        "{attack:?}: expected {series} in\n{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_correct_provider_logs_in() {
    let s = start(Attack::None);
    let b = Browser::new();
    let page = login(&s, &b).await;
    assert_eq!(page.status, 200, "{}\n{}", page.body, s.gw.log());
    assert_eq!(page.json()["headers"]["x-auth-request-user"][0], "alice");
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_issuer_is_refused() {
    assert_refused(Attack::WrongIss, 401, "id_token_issuer").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_audience_is_refused() {
    assert_refused(Attack::WrongAud, 401, "id_token_audience").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn several_audiences_without_azp_are_refused() {
    assert_refused(Attack::ExtraAudNoAzp, 401, "id_token_audience").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn azp_naming_another_client_is_refused() {
    assert_refused(Attack::WrongAzp, 401, "id_token_audience").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_sub_is_refused() {
    assert_refused(Attack::MissingSub, 401, "token_response_invalid").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_iat_is_refused() {
    assert_refused(Attack::MissingIat, 401, "token_response_invalid").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_id_token_is_refused() {
    assert_refused(Attack::Expired, 401, "id_token_expired").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn id_token_from_the_future_is_refused() {
    assert_refused(Attack::FutureIat, 401, "id_token_expired").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn nonce_mismatch_is_refused() {
    assert_refused(Attack::NonceMismatch, 401, "nonce_mismatch").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_nonce_is_refused() {
    assert_refused(Attack::NonceMissing, 401, "nonce_mismatch").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_signature_is_refused() {
    assert_refused(Attack::BadSignature, 401, "id_token_signature").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn alg_none_is_refused_even_when_advertised() {
    assert_refused(Attack::AlgNone, 401, "id_token_signature").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hs256_signed_with_the_rsa_public_key_is_refused() {
    assert_refused(Attack::HsWithPublicKey, 401, "id_token_signature").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hs256_keyed_with_the_client_secret_is_refused_unless_allowed() {
    assert_refused(Attack::HsWithClientSecret, 401, "id_token_signature").await;

    let s = start_with(Attack::HsWithClientSecret, "allow_hmac_id_tokens = true");
    let page = login(&s, &Browser::new()).await;
    assert_eq!(page.status, 200, "{}\n{}", page.body, s.gw.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn at_hash_mismatch_is_refused() {
    assert_refused(Attack::BadAtHash, 401, "at_hash_mismatch").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn userinfo_subject_mismatch_is_refused() {
    assert_refused(Attack::UserinfoSubMismatch, 401, "userinfo_sub_mismatch").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn idp_error_shows_a_page_and_never_loops() {
    let s = start(Attack::AccessDenied);
    let b = Browser::new();
    let page = login(&s, &b).await;
    assert_eq!(page.status, 403, "{}", page.body);
    assert!(page.body.contains("denied"), "{}", page.body);
    assert!(
        page.body.contains("href=\"/app/private\""),
        "a way to try again: {}",
        page.body
    );
    assert!(page.trail.len() <= 4, "redirect loop: {:?}", page.trail);
    assert_eq!(s.up.hits.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_kid_is_refused_and_fetches_keys_at_most_once_per_cooldown() {
    let s = start(Attack::UnknownKid);
    s.gw.wait_discovered("/app/").await;
    let fetches_after_discovery = s.op.state.jwks_fetches.load(Ordering::SeqCst);
    for _ in 0..5 {
        let b = Browser::new();
        let page = login(&s, &b).await;
        assert_eq!(page.status, 401, "{}", page.body);
    }
    let extra = s.op.state.jwks_fetches.load(Ordering::SeqCst) - fetches_after_discovery;
    assert_eq!(
        extra, 1,
        "five forged kids must cause exactly one JWKS fetch in the cool-down"
    );
    assert_eq!(s.up.hits.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn key_rotation_fetches_the_new_kid_and_accepts_it() {
    let s = start(Attack::None);
    let b = Browser::new();
    assert_eq!(login(&s, &b).await.status, 200);
    let before = s.op.state.jwks_fetches.load(Ordering::SeqCst);
    // The provider rotates: a new key signs, both are published.
    *s.op.state.signing_key.lock().unwrap() = "key2";
    s.op.state.published.lock().unwrap().push("key2");
    let b2 = Browser::new();
    let page = login(&s, &b2).await;
    assert_eq!(page.status, 200, "{}\n{}", page.body, s.gw.log());
    assert_eq!(s.op.state.jwks_fetches.load(Ordering::SeqCst), before + 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn discovery_issuer_mismatch_never_enables_login_but_public_routes_work() {
    let s = start(Attack::DiscoveryIssuerMismatch);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let r = client()
        .get(s.gw.url("/app/x"))
        .header("Accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "login must not hang while the provider is unusable"
    );
    // The page, /readyz and the log say why, verbatim: the provider answered, with a document
    // naming another issuer (it used to say only "cannot be reached").
    let page = r.text().await.unwrap();
    assert!(page.contains("temporarily unavailable"), "{page}");
    assert!(page.contains("unexpected issuer"), "{page}");
    let (status, ready) = s.gw.readyz().await;
    assert_eq!(status, 503);
    let ready: serde_json::Value = serde_json::from_str(&ready).unwrap();
    let error = ready["providers"]["hostile"]["error"]
        .as_str()
        .unwrap_or_default();
    assert!(error.contains("unexpected issuer"), "{ready}");
    assert_eq!(
        client()
            .get(s.gw.url("/public/x"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let log = s.gw.log_containing(&["discovery failed"]);
    assert!(log.contains("discovery failed"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_provider_never_stalls_requests() {
    let dead = free_port();
    let up = TestUpstream::start("app");
    let port = free_port();
    let body = format!(
        "[session]\nsecrets = [\"{SECRET}\"]\n[[providers]]\nname = \"down\"\nissuer = \"http://127.0.0.1:{dead}\"\nclient_id = \"c\"\n\
         redirect_uri = \"http://127.0.0.1:{port}/oauth2/callback\"\n[[upstreams]]\nname = \"app\"\ntargets = [\"{}\"]\n\
         [[routes]]\nname = \"app\"\npaths = [\"/app\"]\nupstream = \"app\"\nauth = {{ provider = \"down\" }}\n\
         [[routes]]\nname = \"public\"\npaths = [\"/\"]\nupstream = \"app\"\n",
        up.address()
    );
    let gw = GatewayProcess::start_with(GatewayOptions {
        body: &body,
        port: Some(port),
        ..Default::default()
    });
    let started = Instant::now();
    assert_eq!(
        client().get(gw.url("/")).send().await.unwrap().status(),
        200
    );
    let r = client()
        .get(gw.url("/app/"))
        .header("Accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let r = client()
        .get(gw.url("/app/"))
        .header("Accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "API clients get 401, not a redirect");
    assert!(
        r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer realm=")
    );
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test(flavor = "multi_thread")]
async fn callback_without_a_login_cookie_is_refused_login_csrf() {
    let s = start(Attack::None);
    s.gw.wait_discovered("/app/").await;
    // An attacker's own valid callback, delivered to a victim browser that never started a login.
    let attacker = Browser::new();
    let (_, callback) = begin_login(&s, &attacker, "/app/x").await;
    let victim = Browser::new();
    let page = victim.navigate(&callback, None).await;
    assert_eq!(page.status, 400, "{}", page.body);
    assert!(page.body.contains("does not belong"), "{}", page.body);
    assert!(
        victim.cookie_header(&s.origin).is_empty(),
        "no session for the victim: {}",
        victim.cookie_header(&s.origin)
    );
    assert_eq!(s.up.hits.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn state_mismatch_and_duplicate_parameters_are_refused() {
    let s = start(Attack::None);
    s.gw.wait_discovered("/app/").await;
    let b = Browser::new();
    let (_, callback) = begin_login(&s, &b, "/app/x").await;
    let state = callback.split("state=").nth(1).unwrap().to_owned();
    // Same cookie name (first 16 characters), different state.
    let forged_state = format!("{}XXXXXX", &state[..16]);
    let forged = callback.replace(&state, &forged_state);
    let page = b.navigate(&forged, None).await;
    assert_eq!(page.status, 400);
    assert!(page.body.contains("does not match"), "{}", page.body);
    let duplicated = format!("{callback}&code=second");
    let page = b.navigate(&duplicated, None).await;
    assert_eq!(page.status, 400);
    assert!(page.body.contains("repeats the parameter"), "{}", page.body);
    assert_eq!(s.up.hits.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replayed_callback_is_refused() {
    let s = start(Attack::None);
    s.gw.wait_discovered("/app/").await;
    let b = Browser::new();
    let (login_cookie, callback) = begin_login(&s, &b, "/app/x").await;
    let ok = b.navigate(&callback, None).await;
    assert_eq!(ok.status, 200);
    let token_calls = s.op.state.token_requests.load(Ordering::SeqCst);
    // Replay the same callback with the same login cookie from a cookie-less client.
    let replay = client()
        .get(&callback)
        .header("Cookie", &login_cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), 400);
    assert!(replay.text().await.unwrap().contains("already used"));
    assert_eq!(
        s.op.state.token_requests.load(Ordering::SeqCst),
        token_calls,
        "a replay must not reach the token endpoint"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn several_tabs_can_log_in_at_once() {
    let s = start(Attack::None);
    s.gw.wait_discovered("/app/").await;
    let b = Browser::new();
    let mut callbacks = Vec::new();
    for tab in ["one", "two", "three"] {
        let (_, cb) = begin_login(&s, &b, &format!("/app/{tab}")).await;
        callbacks.push((tab, cb));
    }
    assert_eq!(
        b.cookie_header(&s.origin)
            .matches("oidc_session_login_")
            .count(),
        3
    );
    // Finish them in reverse order: each returns to its own page.
    for (tab, cb) in callbacks.into_iter().rev() {
        let page = b.navigate(&cb, None).await;
        assert_eq!(page.status, 200, "{tab}: {}", page.body);
        assert_eq!(page.json()["uri"], format!("/app/{tab}"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn login_cookies_are_capped_oldest_dropped() {
    let s = start(Attack::None);
    s.gw.wait_discovered("/app/").await;
    let b = Browser::new();
    for i in 0..8 {
        let r = b
            .client
            .get(format!("{}/app/{i}", s.origin))
            .header("Accept", "text/html")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 302);
    }
    let n = b
        .cookie_header(&s.origin)
        .matches("oidc_session_login_")
        .count();
    assert_eq!(
        n,
        5,
        "at most max_login_cookies (5) attempts are kept: {}",
        b.cookie_header(&s.origin)
    );
}

/// Sends a GET for `target` over a raw socket with `Cookie: pref=caf\xe9; <cookies>` (a Latin-1
/// byte, as browsers send back what any upstream set).
fn get_with_latin1_cookie(port: u16, target: &str, cookies: &str) -> RawResponse {
    let mut req =
        format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n")
            .into_bytes();
    req.extend_from_slice(b"Cookie: pref=caf\xe9; ");
    req.extend_from_slice(cookies.as_bytes());
    req.extend_from_slice(b"\r\n\r\n");
    raw_request(port, &req, Duration::from_secs(10))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_latin1_cookie_beside_the_login_cookie_does_not_stop_the_sign_in() {
    // The old code skipped a `Cookie` header that was not UTF-8 as a whole: the login cookie in
    // it was not found and every callback got 400 while the foreign cookie lived.
    let s = start(Attack::None);
    s.gw.wait_discovered("/app/").await;
    let b = Browser::new();
    let (login_cookie, callback) = begin_login(&s, &b, "/app/private").await;
    let url = url::Url::parse(&callback).unwrap();
    let target = format!("{}?{}", url.path(), url.query().unwrap());
    let r = get_with_latin1_cookie(s.gw.port, &target, &login_cookie);
    assert_eq!(r.status, 302, "{}\n{}", r.text, s.gw.log());
    assert_eq!(r.header("location").as_deref(), Some("/app/private"));
    let session = r
        .text
        .lines()
        .filter_map(|l| {
            l.strip_prefix("set-cookie: ")
                .or(l.strip_prefix("Set-Cookie: "))
        })
        .find(|c| c.starts_with("oidc_session="))
        .and_then(|c| c.split(';').next())
        .expect("a session cookie")
        .to_owned();

    // Signed in, with the foreign cookie still there: the upstream gets it, never the session.
    let r = get_with_latin1_cookie(s.gw.port, "/app/private", &session);
    assert_eq!(r.status, 200, "{}", r.text);
    let body = r.text.split("\r\n\r\n").nth(1).unwrap_or_default();
    let echo: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(echo["headers"]["x-auth-request-user"][0], "alice");
    assert_eq!(echo["headers"]["cookie"][0], "pref=caf\u{fffd}", "{echo}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_callback_refused_for_a_missing_cookie_says_why_in_the_log() {
    // Browsing `localhost` while redirect_uri says 127.0.0.1: the login cookie stays with
    // localhost, and the callback on 127.0.0.1 cannot find it. The page says only that the
    // response does not belong to this browser; the log line says what to check.
    let s = start(Attack::None);
    s.gw.wait_discovered("/app/").await;
    let port = s.gw.port;
    let page = Browser::new()
        .navigate(&format!("http://localhost:{port}/app/x"), None)
        .await;
    assert_eq!(page.status, 400, "{:?}", page.trail);
    assert!(
        page.body.contains("does not belong to a sign-in"),
        "{}",
        page.body
    );
    let log = s.gw.log_containing(&["sign-in callback refused"]);
    let line = log
        .lines()
        .find(|l| l.contains("sign-in callback refused"))
        .unwrap_or_else(|| panic!("no warning line:\n{log}"));
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("state_missing"), "{line}");
    assert!(
        line.contains(&format!("127.0.0.1:{port} (the host of redirect_uri)")),
        "{line}"
    );
}
