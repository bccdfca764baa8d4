//! Real-browser end-to-end tests: Debian's chromium driven through chromedriver (WebDriver) by
//! `thirtyfour`. Sign in at the real `oidc-provider` OP and at the demo's development IdP, reload,
//! sign out, and check the protected page asks for a login again. Screenshots of every step are
//! written to `target/browser-screenshots/`. If the browser cannot start, the test fails.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::*;
use thirtyfour::prelude::*;

const SECRET: &str = "browser-test-session-secret-0123456789abcdef";

struct Chrome {
    driver: WebDriver,
    chromedriver: Child,
    shots: PathBuf,
    step: std::cell::Cell<u32>,
    _profile: tempfile::TempDir,
}

/// A child process killed when the test ends, also when it fails half-way.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Chrome {
    fn drop(&mut self) {
        // A failed assertion skips `quit`: chromedriver (and its chromium) must not outlive it.
        let _ = self.chromedriver.kill();
        let _ = self.chromedriver.wait();
    }
}

impl Chrome {
    async fn start(name: &str) -> Chrome {
        let port = free_port();
        let chromedriver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver must be installed (Debian package chromium-driver; scripts/install-test-deps installs it)");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        let mut caps = DesiredCapabilities::chrome();
        caps.set_binary("/usr/bin/chromium").unwrap();
        for arg in [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1100,850",
        ] {
            caps.add_arg(arg).unwrap();
        }
        caps.add_arg(&format!("--user-data-dir={}", profile.path().display()))
            .unwrap();
        let driver = WebDriver::new(format!("http://127.0.0.1:{port}"), caps)
            .await
            .expect("chromium must start (Debian package chromium)");
        let shots = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("target/browser-screenshots")
            .join(name);
        std::fs::create_dir_all(&shots).unwrap();
        Chrome {
            driver,
            chromedriver,
            shots,
            step: std::cell::Cell::new(0),
            _profile: profile,
        }
    }

    async fn shot(&self, what: &str) {
        self.step.set(self.step.get() + 1);
        let path = self
            .shots
            .join(format!("{:02}-{what}.png", self.step.get()));
        self.driver.screenshot(&path).await.unwrap();
    }

    async fn url(&self) -> String {
        self.driver.current_url().await.unwrap().to_string()
    }

    /// Waits until the current URL starts with `prefix`.
    async fn wait_url(&self, prefix: &str) {
        self.wait_until(prefix, |url| url.starts_with(prefix)).await;
    }

    /// Waits until the current URL is exactly `url` (a prefix such as the origin's `/` would
    /// also match the callback, before its redirect has landed).
    async fn wait_at(&self, url: &str) {
        self.wait_until(url, |u| u == url).await;
    }

    async fn wait_until(&self, what: &str, reached: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let url = self.url().await;
            if reached(&url) {
                return;
            }
            assert!(Instant::now() < deadline, "never reached {what}; at {url}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the page holds `text`: the URL changes before the new page has loaded, so
    /// reading the page right after `wait_at` can still see the old one.
    async fn wait_text(&self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let page = self.driver.source().await.unwrap();
            if page.contains(text) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the page never showed {text:?}: {page}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn el(&self, by: By) -> WebElement {
        self.driver
            .query(by)
            .wait(Duration::from_secs(15), Duration::from_millis(100))
            .first()
            .await
            .unwrap()
    }

    async fn text(&self, by: By) -> String {
        self.el(by).await.text().await.unwrap()
    }

    /// Ends the browser session; dropping `self` then stops chromedriver.
    async fn quit(self) {
        let _ = self.driver.clone().quit().await;
    }
}

async fn sign_in(c: &Chrome, user: &str, password: &str) {
    c.el(By::Name("username"))
        .await
        .send_keys(user)
        .await
        .unwrap();
    c.el(By::Name("password"))
        .await
        .send_keys(password)
        .await
        .unwrap();
    c.shot("credentials-typed").await;
    c.el(By::Id("submit")).await.click().await.unwrap();
}

/// The real OP, a test upstream and a gateway in front of it (`session_extra` and `route_extra`:
/// more lines for `[session]` and the `/app` route), discovery done.
struct RealOpSetup {
    _up: TestUpstream,
    op: RealOp,
    gw: GatewayProcess,
    origin: String,
}

async fn real_op_setup(session_extra: &str, route_extra: &str) -> RealOpSetup {
    real_op_setup_with(session_extra, route_extra, |_| {}).await
}

/// [`real_op_setup`], with changes to the OP's configuration.
async fn real_op_setup_with(
    session_extra: &str,
    route_extra: &str,
    op_changes: impl FnOnce(&mut serde_json::Value),
) -> RealOpSetup {
    let up = TestUpstream::start("app");
    let port = free_port();
    let origin = format!("http://127.0.0.1:{port}");
    let mut op_cfg = op_config(&origin, 3600);
    op_changes(&mut op_cfg);
    let op = RealOp::start(&op_cfg);
    let body = format!(
        r#"
[session]
secrets = ["{SECRET}"]
{session_extra}
[[providers]]
name = "op"
issuer = "{issuer}"
client_id = "gateway"
client_secret = "gateway-secret-0123456789"
redirect_uri = "{origin}/oauth2/callback"
logout_redirect_uri = "{origin}/bye"
[[upstreams]]
name = "app"
targets = ["{up}"]
[[routes]]
name = "app"
paths = ["/app"]
upstream = "app"
auth = {{ provider = "op" }}
{route_extra}
[[routes]]
name = "public"
paths = ["/bye"]
upstream = "app"
"#,
        issuer = op.issuer,
        up = up.address()
    );
    let gw = GatewayProcess::start_discovered(&body, port, "/app/").await;
    RealOpSetup {
        _up: up,
        op,
        gw,
        origin,
    }
}

/// Signs alice in at the OP's pages (and gives consent when the OP asks), then waits to be
/// back at `back_at`.
async fn sign_in_at_op(c: &Chrome, op: &RealOp, back_at: &str) {
    c.wait_url(&format!("{}/interaction/", op.issuer)).await;
    c.shot("op-login-page").await;
    sign_in(c, "alice", "wonderland").await;
    // The OP asks for consent once.
    c.el(By::Id("submit")).await;
    if c.url().await.starts_with(&op.issuer) {
        c.shot("op-consent-page").await;
        c.el(By::Id("submit")).await.click().await.unwrap();
    }
    c.wait_url(back_at).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn browser_login_reload_logout_against_the_real_op() {
    let RealOpSetup { op, origin, .. } = &real_op_setup("", "").await;
    let c = Chrome::start("real-op").await;
    let page = format!("{origin}/app/index.html");
    c.driver.goto(&page).await.unwrap();
    sign_in_at_op(&c, op, &page).await;
    assert_eq!(c.text(By::Id("user")).await, "alice-id");
    assert_eq!(c.text(By::Id("email")).await, "alice@example.com");
    c.shot("signed-in-upstream-page").await;

    // Reload: served from the session, no visit to the OP.
    let before = op.request_count().await;
    c.driver.refresh().await.unwrap();
    assert_eq!(c.text(By::Id("user")).await, "alice-id");
    assert_eq!(
        op.request_count().await,
        before,
        "a reload must not involve the OP"
    );
    c.shot("reloaded").await;

    // Sign out: the gateway ends the session and hands over to the OP's end_session.
    c.el(By::Id("logout")).await.click().await.unwrap();
    c.wait_url(&format!("{}/session/end", op.issuer)).await;
    c.shot("op-logout-confirm").await;
    c.el(By::Id("submit")).await.click().await.unwrap();
    c.wait_url(&format!("{origin}/bye")).await;
    c.shot("after-logout").await;

    // The protected page asks for a login again.
    c.driver.goto(&page).await.unwrap();
    c.wait_url(&format!("{}/interaction/", op.issuer)).await;
    assert!(
        c.driver
            .source()
            .await
            .unwrap()
            .contains("name=\"password\"")
    );
    c.shot("login-required-again").await;

    // The gateway's own pages, as a browser sees them.
    c.driver
        .goto(format!("{origin}/nothing-here"))
        .await
        .unwrap();
    assert!(
        c.driver
            .source()
            .await
            .unwrap()
            .contains("No route matches")
    );
    c.shot("gateway-404-page").await;
    c.driver
        .goto(format!(
            "{origin}/oauth2/callback?code=x&state=forged-state-value-xx"
        ))
        .await
        .unwrap();
    assert!(
        c.driver
            .source()
            .await
            .unwrap()
            .contains("does not belong to a sign-in")
    );
    c.shot("gateway-callback-error-page").await;
    c.quit().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_form_sent_after_the_session_expired_reaches_the_upstream_after_signing_in_again() {
    // Sessions end after 3 s without a request; the route keeps forms across sign-in.
    let RealOpSetup { op, origin, gw, .. } = &real_op_setup(
        "store = \"memory\"\nidling_timeout = \"3s\"",
        "preserve_post = true",
    )
    .await;
    let c = Chrome::start("preserve-post").await;
    let page = format!("{origin}/app/form.html");
    c.driver.goto(&page).await.unwrap();
    sign_in_at_op(&c, op, &page).await;
    assert_eq!(c.text(By::Id("user")).await, "alice-id");

    // Fill the form in, slowly enough for the session to end meanwhile (the gateway's clock
    // moves past the idle timeout).
    let title = "Order #7 & <more> é";
    c.el(By::Id("title")).await.send_keys(title).await.unwrap();
    let comment = c.el(By::Id("comment")).await;
    comment.send_keys("first line").await.unwrap();
    comment.send_keys(Key::Enter).await.unwrap();
    comment.send_keys("second line").await.unwrap();
    c.shot("form-filled").await;
    gw.advance_clock(4).await;
    let before = op.request_count().await;
    c.el(By::Id("send")).await.click().await.unwrap();

    // The browser goes through the OP (which may still know alice) and comes back to post the
    // form again; it ends at the upstream's echo of that POST.
    let submitted = format!("{origin}/app/submit?from=form");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let url = c.url().await;
        if url.starts_with(&format!("{}/interaction/", op.issuer)) {
            sign_in_at_op(&c, op, &submitted).await;
        }
        if url == submitted && c.driver.source().await.unwrap().contains("\"method\"") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never got back to the form's target; at {url}\n{}",
            gw.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.shot("form-reached-upstream").await;
    assert!(
        op.request_count().await > before,
        "the expired session was renewed by signing in at the OP"
    );
    let echo: serde_json::Value =
        serde_json::from_str(&c.text(By::Tag("pre")).await).expect("the upstream's JSON echo");
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["headers"]["x-auth-request-user"][0], "alice-id");
    // As the first post did, it names its origin (CSRF checks upstream ask for it), and not the
    // callback's address, which held the code.
    assert_eq!(echo["headers"]["origin"][0], origin.as_str());
    assert_eq!(echo["headers"]["referer"][0], format!("{origin}/"));
    let fields: Vec<(String, String)> =
        url::form_urlencoded::parse(echo["body"].as_str().unwrap().as_bytes())
            .map(|(n, v)| (n.into_owned(), v.into_owned()))
            .collect();
    let expected = [
        ("title", title),
        ("comment", "first line\r\nsecond line"),
        ("csrf", "app-token-1"),
        // Named like a PHP form's button: it hides the form's own `submit()` on the resubmit page.
        ("submit", "send"),
    ]
    .map(|(n, v)| (n.to_owned(), v.to_owned()));
    assert_eq!(
        fields, expected,
        "the upstream got the fields typed before signing in"
    );
    c.quit().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_latin1_cookie_from_the_upstream_neither_blocks_sign_in_nor_lets_the_session_through() {
    let RealOpSetup { op, origin, .. } = &real_op_setup("", "").await;
    let c = Chrome::start("latin1-cookie").await;
    // A public page of the upstream sets `pref=caf\xe9` (one raw Latin-1 byte).
    c.driver
        .goto(format!("{origin}/bye/set-latin1-cookie"))
        .await
        .unwrap();
    c.wait_text("set").await;
    // Chromium keeps the byte and sends it back as it is (the echo shows it as U+FFFD).
    c.driver.goto(format!("{origin}/bye/echo")).await.unwrap();
    c.wait_text("pref=caf\u{fffd}").await;

    // The login cookie sits in the same header as that byte: the sign-in still completes.
    let page = format!("{origin}/app/index.html");
    c.driver.goto(&page).await.unwrap();
    sign_in_at_op(&c, op, &page).await;
    assert_eq!(c.text(By::Id("user")).await, "alice-id");
    c.shot("signed-in-with-a-latin1-cookie").await;

    // On a public route the upstream gets the foreign cookie, never the gateway's session.
    c.driver.goto(format!("{origin}/bye/echo")).await.unwrap();
    c.wait_text("pref=caf\u{fffd}").await;
    let echo = c.driver.source().await.unwrap();
    assert!(!echo.contains("oidc_session"), "{echo}");
    c.quit().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn browser_login_reload_logout_with_the_demo() {
    let (gwp, idp, upp, mp) = (free_port(), free_port(), free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("demo.log");
    let _demo = Killed(
        Command::new(BIN)
            .args([
                "demo",
                "--port",
                &gwp.to_string(),
                "--idp-port",
                &idp.to_string(),
            ])
            .args([
                "--upstream-port",
                &upp.to_string(),
                "--metrics-port",
                &mp.to_string(),
            ])
            .stdout(Stdio::from(std::fs::File::create(&log).unwrap()))
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let origin = format!("http://127.0.0.1:{gwp}");
    let idp_origin = format!("http://127.0.0.1:{idp}");
    // Ready: sign-in redirects (discovery done) and the demo app is healthy (its first health
    // check may have run before it listened).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = |path: &'static str| {
            let url = format!("{origin}{path}");
            async move {
                client()
                    .get(url)
                    .header("Accept", "text/html")
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0)
            }
        };
        if status("/").await == 302 && status("/public").await == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "demo never ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let c = Chrome::start("demo").await;
    c.driver.goto(format!("{origin}/")).await.unwrap();
    c.wait_url(&format!("{idp_origin}/authorize")).await;
    c.shot("dev-idp-login-page").await;
    sign_in(&c, "alice", "wonderland").await;
    c.wait_at(&format!("{origin}/")).await;
    c.wait_text("Hello, alice").await;
    c.shot("demo-app-signed-in").await;
    c.driver.refresh().await.unwrap();
    c.wait_text("Hello, alice").await;
    c.shot("demo-app-reloaded").await;
    c.driver.goto(format!("{origin}/admin")).await.unwrap();
    c.wait_text("Hello, alice").await;
    c.shot("demo-admin-as-alice").await;
    // A browser on the API route (bearer tokens only): the gateway's 401 page, saying why.
    c.driver.goto(format!("{origin}/api/orders")).await.unwrap();
    let page = c.driver.source().await.unwrap();
    assert!(
        page.contains("Sign-in required") && page.contains("Authorization: Bearer"),
        "{page}"
    );
    c.shot("gateway-401-page").await;
    c.driver.goto(format!("{origin}/admin")).await.unwrap();
    c.el(By::Id("logout")).await.click().await.unwrap();
    c.wait_url(&format!("{origin}/public")).await;
    c.shot("demo-after-logout").await;
    c.driver.goto(format!("{origin}/")).await.unwrap();
    c.wait_url(&format!("{idp_origin}/authorize")).await;
    assert!(
        c.driver
            .source()
            .await
            .unwrap()
            .contains("name=\"password\"")
    );
    c.shot("demo-login-required-again").await;

    // Bob may sign in but is not an admin: the gateway's 403 page.
    sign_in(&c, "bob", "builder").await;
    c.wait_at(&format!("{origin}/")).await;
    c.driver.goto(format!("{origin}/admin")).await.unwrap();
    c.wait_text("Access denied").await;
    c.shot("gateway-403-page").await;
    c.quit().await;
}

/// The `Cookie` header chromium sends to the gateway: every cookie it holds for 127.0.0.1
/// (cookies ignore ports, so the OP's are counted too), `name=value` joined by `"; "`.
async fn cookie_header_len(c: &Chrome) -> (usize, Vec<String>) {
    let cookies = c.driver.get_all_cookies().await.unwrap();
    let len = cookies
        .iter()
        .map(|k| k.name.len() + 1 + k.value.len())
        .sum::<usize>()
        + 2 * cookies.len().saturating_sub(1);
    (len, cookies.into_iter().map(|k| k.name).collect())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_entra_sized_sign_in_in_twenty_tabs_keeps_chromiums_cookies_under_8_kb() {
    // 200 groups with random GUIDs, as Entra ID gives them: a 10 KB ID token.
    let groups: Vec<String> = (0..200u32)
        .map(|i| {
            use sha2::Digest;
            let h = sha2::Sha256::digest(i.to_le_bytes());
            let x: String = h.iter().take(16).map(|b| format!("{b:02x}")).collect();
            format!(
                "{}-{}-{}-{}-{}",
                &x[..8],
                &x[8..12],
                &x[12..16],
                &x[16..20],
                &x[20..]
            )
        })
        .collect();
    let RealOpSetup { op, origin, .. } = &real_op_setup_with("", "", |cfg| {
        cfg["accounts"][0]["claims"]["groups"] = groups.clone().into();
    })
    .await;
    let c = Chrome::start("entra-sized").await;
    // Twenty tabs, signed out, each sent to the OP's sign-in page.
    for i in 0..20 {
        if i > 0 {
            let tab = c.driver.new_tab().await.unwrap();
            c.driver.switch_to_window(tab).await.unwrap();
        }
        c.driver
            .goto(&format!("{origin}/app/tab/{i}"))
            .await
            .unwrap();
        c.wait_url(&format!("{}/interaction/", op.issuer)).await;
    }
    let (_, names) = cookie_header_len(&c).await;
    let logins = names.iter().filter(|n| n.contains("_login_")).count();
    assert!(logins <= 5, "{logins} login cookies: {names:?}");

    // Sign in in the last tab: the page, with every group.
    let last = format!("{origin}/app/tab/19");
    sign_in_at_op(&c, op, &last).await;
    c.wait_text("x-auth-request-user").await;
    let (len, names) = cookie_header_len(&c).await;
    assert!(len <= 8192, "{len} bytes of cookies: {names:?}");
    // The session is in the cookies (the cookie store), and it is big.
    let session: usize = c
        .driver
        .get_all_cookies()
        .await
        .unwrap()
        .iter()
        .filter(|k| k.name.starts_with("oidc_session") && !k.name.contains("_login_"))
        .map(|k| k.value.len())
        .sum();
    assert!(session > 6000, "a {session}-byte session");
    c.shot("entra-sized-signed-in").await;

    // The first tab: its sign-in was dropped for the newer ones; it finds the session.
    let tabs = c.driver.windows().await.unwrap();
    c.driver.switch_to_window(tabs[0].clone()).await.unwrap();
    c.driver.goto(&format!("{origin}/app/tab/0")).await.unwrap();
    c.wait_at(&format!("{origin}/app/tab/0")).await;
    c.wait_text("x-auth-request-user").await;
    let (len, names) = cookie_header_len(&c).await;
    assert!(len <= 8192, "{len} bytes of cookies: {names:?}");
    c.quit().await;
}
