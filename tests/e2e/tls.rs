//! The TLS listener end to end: a real rustls handshake with a certificate generated for the
//! test, HTTP/2 negotiated by ALPN, cookies sent in several HTTP/2 header fields, and the
//! cookie flags of a login started over https.

use crate::support;

use std::time::{Duration, Instant};
use support::*;

const SECRET: &str = "tls-test-session-secret-0123456789abcdef";

struct Setup {
    gw: GatewayProcess,
    _op: HostileOp,
    _up: TestUpstream,
    _certs: tempfile::TempDir,
    origin: String,
    client: reqwest::Client,
}

fn start() -> Setup {
    let key = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let certs = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (certs.path().join("cert.pem"), certs.path().join("key.pem"));
    std::fs::write(&cert_path, key.cert.pem()).unwrap();
    std::fs::write(&key_path, key.signing_key.serialize_pem()).unwrap();

    let op = HostileOp::start(Attack::None);
    let up = TestUpstream::start("app");
    let tls_port = free_port();
    let origin = format!("https://127.0.0.1:{tls_port}");
    let server_extra = format!(
        "[[server.tls]]\nlisten = \"127.0.0.1:{tls_port}\"\ncert = \"{}\"\nkey = \"{}\"\n",
        cert_path.display(),
        key_path.display()
    );
    let body = format!(
        r#"
[session]
secrets = ["{SECRET}"]

[[providers]]
name = "op"
issuer = "{issuer}"
client_id = "gateway"
client_secret = "gateway-secret"
redirect_uri = "{origin}/oauth2/callback"

[[upstreams]]
name = "app"
targets = ["{up}"]

[[routes]]
name = "app"
paths = ["/app"]
upstream = "app"
auth = {{ provider = "op" }}

[[routes]]
name = "public"
paths = ["/public"]
upstream = "app"
"#,
        issuer = op.issuer,
        up = up.address()
    );
    let gw = GatewayProcess::start_with(GatewayOptions {
        body: &body,
        server_extra: &server_extra,
        ..Default::default()
    });
    // Trusts only the test's own certificate: the handshake is verified for real.
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(key.cert.pem().as_bytes()).unwrap())
        .tls_built_in_root_certs(false)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    Setup {
        gw,
        _op: op,
        _up: up,
        _certs: certs,
        origin,
        client,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn http2_over_tls_reads_every_cookie_field_and_strips_the_gateways() {
    let s = start();
    let deadline = Instant::now() + Duration::from_secs(10);
    let r = loop {
        // HTTP/2 clients may split cookies over several `cookie` fields: send two.
        let mut headers = http::HeaderMap::new();
        headers.append(http::header::COOKIE, "a=1".parse().unwrap());
        headers.append(
            http::header::COOKIE,
            "oidc_session=forged; b=2".parse().unwrap(),
        );
        match s
            .client
            .get(format!("{}/public/x", s.origin))
            .headers(headers)
            .send()
            .await
        {
            Ok(r) => break r,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("no TLS answer: {e:?}\n{}", s.gw.log()),
        }
    };
    assert_eq!(r.version(), http::Version::HTTP_2, "ALPN must offer h2");
    assert_eq!(r.status(), 200, "{}", s.gw.log());
    let echo: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        echo["headers"]["cookie"],
        serde_json::json!(["a=1; b=2"]),
        "both fields read, the gateway's own cookie removed: {echo}"
    );
    assert_eq!(
        echo["headers"]["x-forwarded-proto"],
        serde_json::json!(["https"])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_login_over_https_sets_secure_httponly_lax_cookies() {
    let s = start();
    let deadline = Instant::now() + Duration::from_secs(10);
    let r = loop {
        let r = s
            .client
            .get(format!("{}/app/private", s.origin))
            .header("Accept", "text/html")
            .send()
            .await;
        match r {
            Ok(r) if r.status() == 302 => break r,
            _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(100)).await,
            other => panic!("no login redirect: {other:?}\n{}", s.gw.log()),
        }
    };
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.starts_with("oidc_session_login_"), "{cookie}");
    for flag in ["Secure", "HttpOnly", "SameSite=Lax"] {
        assert!(cookie.contains(flag), "{flag} missing: {cookie}");
    }
}
