//! Sign-in, token and metrics flows against the gateway and the development IdP.

use super::*;

pub fn client(jar: bool) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        // The edge rows' certificate is the run's own, self-signed.
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(10));
    if jar {
        b = b.cookie_store(true);
    }
    b.build().unwrap()
}

pub async fn wait_discovered(origin: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = client(false)
            .get(format!("{origin}/session/"))
            .header("Accept", "text/html")
            .send()
            .await
            .unwrap();
        if r.status() == 302 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the gateway never discovered the dev IdP"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The status of one GET with an optional header line.
pub async fn status_of(url: &str, header: Option<&str>) -> u16 {
    let mut req = client(false).get(url);
    if let Some((k, v)) = header.and_then(|h| h.split_once(": ")) {
        req = req.header(k, v);
    }
    req.send().await.unwrap().status().as_u16()
}

/// Waits until the gateway's `/readyz` (on its metrics listener) answers 200.
pub async fn wait_ready(metrics_port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let url = format!("http://127.0.0.1:{metrics_port}/readyz");
    while !client(false)
        .get(&url)
        .send()
        .await
        .is_ok_and(|r| r.status() == 200)
    {
        assert!(Instant::now() < deadline, "the gateway never got ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One full authorization-code login as alice; returns the gateway's session cookie header.
pub async fn login(origin: &str, path: &str) -> String {
    let c = client(true);
    let start = c
        .get(format!("{origin}{path}"))
        .header("Accept", "text/html")
        .send()
        .await
        .unwrap();
    let authorize = location(&start);
    let form = c
        .get(&authorize)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let request = form
        .split("name=\"request\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("login form");
    let idp_origin = authorize.split("/authorize").next().unwrap().to_owned();
    let after = c
        .post(format!("{idp_origin}/login"))
        .form(&[
            ("request", request),
            ("username", "alice"),
            ("password", "wonderland"),
        ])
        .send()
        .await
        .unwrap();
    let callback = location(&after);
    let back = c.get(&callback).send().await.unwrap();
    assert_eq!(back.status(), 302, "callback failed");
    let cookies: Vec<String> = back
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok()?.split(';').next().map(str::to_owned))
        .filter(|c| c.starts_with("oidc_session") && !c.contains("_login_"))
        .collect();
    assert!(!cookies.is_empty(), "no session cookie");
    cookies.join("; ")
}

pub fn location(r: &reqwest::Response) -> String {
    r.headers()
        .get("location")
        .expect("a redirect")
        .to_str()
        .unwrap()
        .to_owned()
}

pub async fn mint_token(idp: &str) -> String {
    let v: serde_json::Value = client(false)
        .post(format!("{idp}/token"))
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
    v["access_token"].as_str().expect("a token").to_owned()
}

/// Logins per second (4 at a time), and the gateway's own time per login: its callback
/// latency minus the time its calls to the IdP took, both from its metrics.
pub async fn logins(origin: &str, p: &Ports, n: usize) -> (f64, f64) {
    let metrics_url = format!("http://127.0.0.1:{}/metrics", p.metrics);
    let before = scrape(&metrics_url).await;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..4 {
        let origin = origin.to_owned();
        tasks.push(tokio::spawn(async move {
            for i in (w..n).step_by(4) {
                login(&origin, &format!("/session/{i}")).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let per_sec = n as f64 / start.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = scrape(&metrics_url).await;
    let delta = |series: &str| sum_series(&after, series) - sum_series(&before, series);
    let callback_seconds =
        delta("oidc_gateway_http_request_duration_seconds_sum{route=\"_gateway\"}");
    let idp_seconds = delta("oidc_gateway_idp_request_duration_seconds_sum{endpoint=\"token\"")
        + delta("oidc_gateway_idp_request_duration_seconds_sum{endpoint=\"userinfo\"");
    (
        per_sec,
        (callback_seconds - idp_seconds) * 1000.0 / n as f64,
    )
}

pub async fn scrape(url: &str) -> String {
    client(false)
        .get(url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Sum of every sample whose line starts with `prefix` (labels may follow).
pub fn sum_series(metrics: &str, prefix: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
