//! Certificate-bound access tokens (RFC 8705) on a TLS listener that asks for optional client
//! certificates (`client_ca_file`). The real `oidc-provider` binds the token it issues to the
//! certificate presented at its token endpoint (`features.mTLS.certificateBoundAccessTokens`;
//! the test is the TLS terminator in front of it, passing the certificate in a header); the
//! gateway takes the token only on a connection with that certificate.

use crate::dpop::sender_constrained_routes;
use crate::support::*;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const API: &str = "https://api.example.com";

/// A client_credentials token for the API as `client`, presenting `cert` (PEM) to the OP.
async fn token(op: &RealOp, client_id: &str, cert: Option<&str>) -> String {
    let mut req = client()
        .post(format!("{}/token", op.issuer))
        .basic_auth(client_id, Some("gateway-secret-0123456789"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("resource", API),
            ("scope", "orders:read"),
        ]);
    if let Some(pem) = cert {
        let escaped: String = form_urlencoded::byte_serialize(pem.as_bytes()).collect();
        req = req.header("x-ssl-client-cert", escaped.replace('+', "%20"));
    }
    let body: Value = req.send().await.unwrap().json().await.unwrap();
    body["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("{body}"))
        .to_owned()
}

/// An https client trusting the test CA, presenting the certificate `name` (if any).
fn tls_client(pki: &Pki, name: Option<&str>) -> reqwest::Client {
    let ca = std::fs::read(pki.path("ca.pem")).unwrap();
    let mut b = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .tls_built_in_root_certs(false)
        .timeout(Duration::from_secs(10));
    if let Some(n) = name {
        let mut pem = std::fs::read(pki.path(&format!("{n}.pem"))).unwrap();
        pem.extend(std::fs::read(pki.path(&format!("{n}.key"))).unwrap());
        b = b.identity(reqwest::Identity::from_pem(&pem).unwrap());
    }
    b.build().unwrap()
}

async fn status(c: &reqwest::Client, url: &str, token: &str) -> (u16, String) {
    let r = c.get(url).bearer_auth(token).send().await.unwrap();
    (r.status().as_u16(), www_authenticate(&r))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_certificate_bound_token_passes_only_with_its_certificate() {
    let pki = Pki::new();
    let up = TestUpstream::start("api");
    let tls_port = free_port();
    let origin = format!("https://127.0.0.1:{tls_port}");
    let mut cfg = op_config(&origin, 3600);
    cfg["client_cert_header"] = "x-ssl-client-cert".into();
    cfg["clients"][0]["tls_client_certificate_bound_access_tokens"] = true.into();
    cfg["clients"].as_array_mut().unwrap().push(json!({
        "client_id": "plain-cli", "client_secret": "gateway-secret-0123456789",
        "grant_types": ["client_credentials"], "response_types": [], "redirect_uris": [],
        "token_endpoint_auth_method": "client_secret_basic"
    }));
    let op = RealOp::start(&cfg);
    let body = sender_constrained_routes(&op, &up, &origin, "certificate_bound");
    let server_extra = format!(
        "[[server.tls]]\nlisten = \"127.0.0.1:{tls_port}\"\ncert = \"{}\"\nkey = \"{}\"\nclient_ca_file = \"{}\"\n",
        pki.path("server.pem"),
        pki.path("server.key"),
        pki.path("ca.pem"),
    );
    let gw = GatewayProcess::start_with(GatewayOptions {
        body: &body,
        server_extra: &server_extra,
        ..Default::default()
    });

    let cert = std::fs::read_to_string(pki.path("gateway.pem")).unwrap();
    let bound = token(&op, "gateway", Some(&cert)).await;
    let claims: Value = serde_json::from_slice(
        &base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            bound.split('.').nth(1).unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    assert!(claims["cnf"]["x5t#S256"].is_string(), "{claims}");
    let plain = token(&op, "plain-cli", None).await;
    let (holder, intruder, anonymous) = (
        tls_client(&pki, Some("gateway")),
        tls_client(&pki, Some("intruder")),
        tls_client(&pki, None),
    );
    let api = format!("{origin}/api/x");

    // Discovery runs in the background: the first good request waits for it.
    let deadline = Instant::now() + Duration::from_secs(20);
    while status(&holder, &api, &bound).await.0 != 200 {
        assert!(Instant::now() < deadline, "{}", gw.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let refused = |(status, challenge): (u16, String), why: &str| {
        assert_eq!(status, 401, "{why}");
        assert!(
            challenge.contains("error=\"invalid_token\""),
            "{why}: {challenge}"
        );
    };
    refused(status(&intruder, &api, &bound).await, "another certificate");
    refused(status(&anonymous, &api, &bound).await, "no certificate");
    refused(
        status(&holder, &api, &plain).await,
        "an unbound token where binding is required",
    );
    let mixed = format!("{origin}/mixed/x");
    assert_eq!(
        status(&anonymous, &mixed, &plain).await.0,
        200,
        "allowed: unbound passes"
    );
    assert_eq!(status(&holder, &mixed, &bound).await.0, 200);
    refused(
        status(&anonymous, &mixed, &bound).await,
        "allowed: bound still needs it",
    );

    // A certificate from another CA does not get past the handshake.
    let stranger = rcgen::generate_simple_self_signed(vec!["stranger".to_owned()]).unwrap();
    let ca = std::fs::read(pki.path("ca.pem")).unwrap();
    let mut pem = stranger.cert.pem().into_bytes();
    pem.extend(stranger.signing_key.serialize_pem().into_bytes());
    let stranger = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .tls_built_in_root_certs(false)
        .identity(reqwest::Identity::from_pem(&pem).unwrap())
        .build()
        .unwrap();
    assert!(stranger.get(&api).bearer_auth(&bound).send().await.is_err());

    let m = gw.metrics().await;
    assert_eq!(
        metric_value(
            &m,
            r#"oidc_gateway_requests_refused_total{reason="certificate_bound"}"#
        ),
        Some(4.0),
        "{m}"
    );
}
