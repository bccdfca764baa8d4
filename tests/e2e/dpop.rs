//! DPoP (RFC 9449) on bearer routes, against the real `oidc-provider` (whose `dPoP` feature
//! binds the access tokens it issues to the key of the proof sent to its token endpoint). The
//! test is the client: it makes proofs with the RSA test keys, and sends the gateway good ones,
//! replays, proofs for another URL, proofs by another key, and tokens without `cnf`.

use crate::support::*;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicU64, Ordering};

const KEYS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/support/keys");
const API: &str = "https://api.example.com";

/// A client's DPoP key: a test RSA key and its public JWK.
struct Key {
    pem: Vec<u8>,
    jwk: Value,
}

impl Key {
    fn load(n: u8) -> Key {
        Key {
            pem: std::fs::read(format!("{KEYS}/key{n}.pem")).unwrap(),
            jwk: serde_json::from_str(
                &std::fs::read_to_string(format!("{KEYS}/key{n}.jwk.json")).unwrap(),
            )
            .unwrap(),
        }
    }

    /// A proof for `htm htu`, issued `age` seconds ago, for `token` (its `ath`) if any.
    fn proof(&self, htm: &str, htu: &str, token: Option<&str>, age: u64) -> String {
        static N: AtomicU64 = AtomicU64::new(0);
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.typ = Some("dpop+jwt".into());
        header.jwk = Some(serde_json::from_value(self.jwk.clone()).unwrap());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let mut claims = json!({
            "jti": format!("proof-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)),
            "htm": htm,
            "htu": htu,
            "iat": now - age,
        });
        if let Some(t) = token {
            claims["ath"] = B64.encode(Sha256::digest(t.as_bytes())).into();
        }
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(&self.pem).unwrap();
        jsonwebtoken::encode(&header, &claims, &key).unwrap()
    }
}

/// A client_credentials access token for the API; bound to `key` when one is given.
async fn token(op: &RealOp, key: Option<&Key>) -> (String, String) {
    let endpoint = format!("{}/token", op.issuer);
    let mut req = client()
        .post(&endpoint)
        .basic_auth("gateway", Some("gateway-secret-0123456789"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("resource", API),
            ("scope", "orders:read"),
        ]);
    if let Some(k) = key {
        req = req.header("DPoP", k.proof("POST", &endpoint, None, 0));
    }
    let body: Value = req.send().await.unwrap().json().await.unwrap();
    (
        body["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("{body}"))
            .to_owned(),
        body["token_type"].as_str().unwrap_or_default().to_owned(),
    )
}

/// GET `path` with `Authorization: <authorization>` and the `DPoP` headers `proofs`: the
/// status and the `WWW-Authenticate` challenge.
async fn get(
    gw: &GatewayProcess,
    path: &str,
    authorization: &str,
    proofs: &[&str],
) -> (u16, String) {
    let mut req = client()
        .get(gw.url(path))
        .header("Authorization", authorization);
    for p in proofs {
        req = req.header("DPoP", *p);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), www_authenticate(&r))
}

/// A gateway for the API at `op`: route `strict` (`/api`) with `constraint = "required"` and
/// route `mixed` (`/mixed`) with `constraint = "allowed"`, both for bearer tokens.
pub(crate) fn sender_constrained_routes(
    op: &RealOp,
    up: &TestUpstream,
    origin: &str,
    constraint: &str,
) -> String {
    let auth = |mode: &str| {
        format!(
            r#"provider = "op", methods = ["bearer"], audience_required = ["{API}"], {constraint} = "{mode}""#
        )
    };
    Toml::new()
        .session("sender-constrained-secret-0123456789abcdef", "")
        .provider("op", &op.issuer, "gateway-secret-0123456789", origin, "")
        .upstream("api", &up.address())
        .route("strict", &["/api"], "api", &auth("required"), "")
        .route("mixed", &["/mixed"], "api", &auth("allowed"), "")
        .build()
}

#[tokio::test(flavor = "multi_thread")]
async fn dpop_bound_tokens_pass_only_with_a_fresh_proof_by_their_key() {
    let up = TestUpstream::start("api");
    let port = free_port();
    let origin = format!("http://127.0.0.1:{port}");
    let op = RealOp::start(&op_config(&origin, 3600));
    let body = sender_constrained_routes(&op, &up, &origin, "dpop");
    let gw = GatewayProcess::start_with(GatewayOptions {
        body: &body,
        port: Some(port),
        ..Default::default()
    });
    let (key1, key2) = (Key::load(1), Key::load(2));
    let (bound, kind) = token(&op, Some(&key1)).await;
    assert_eq!(kind, "DPoP", "the OP binds the token");
    let (plain, kind) = token(&op, None).await;
    assert_eq!(kind, "Bearer");
    let url = format!("{origin}/api/x");
    let dpop = format!("DPoP {bound}");

    // Discovery runs in the background: the first good request waits for it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let good = key1.proof("GET", &url, Some(&bound), 0);
    loop {
        let fresh = key1.proof("GET", &url, Some(&bound), 0);
        let (status, challenge) = get(&gw, "/api/x", &dpop, &[&fresh]).await;
        if status == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{status} {challenge}\n{}",
            gw.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(
        get(&gw, "/api/x?page=2", &dpop, &[&good]).await.0,
        200,
        "the query is not part of htu"
    );

    let refused = |(status, challenge): (u16, String), code: &str, why: &str| {
        assert_eq!(status, 401, "{why}");
        assert!(
            challenge.starts_with("DPoP ") && challenge.contains(&format!("error=\"{code}\"")),
            "{why}: {challenge}"
        );
        assert!(
            challenge.contains("algs=\"ES256 RS256 PS256 EdDSA\""),
            "{challenge}"
        );
    };
    refused(
        get(&gw, "/api/x", &dpop, &[&good]).await,
        "invalid_dpop_proof",
        "a replayed proof",
    );
    let elsewhere = key1.proof("GET", &format!("{origin}/api/y"), Some(&bound), 0);
    refused(
        get(&gw, "/api/x", &dpop, &[&elsewhere]).await,
        "invalid_dpop_proof",
        "another htu",
    );
    let post = key1.proof("POST", &url, Some(&bound), 0);
    refused(
        get(&gw, "/api/x", &dpop, &[&post]).await,
        "invalid_dpop_proof",
        "another htm",
    );
    let stale = key1.proof("GET", &url, Some(&bound), 120);
    refused(
        get(&gw, "/api/x", &dpop, &[&stale]).await,
        "invalid_dpop_proof",
        "an old iat",
    );
    let other_token = key1.proof("GET", &url, Some(&plain), 0);
    refused(
        get(&gw, "/api/x", &dpop, &[&other_token]).await,
        "invalid_dpop_proof",
        "another ath",
    );
    let (a, b) = (
        key1.proof("GET", &url, Some(&bound), 0),
        key1.proof("GET", &url, Some(&bound), 0),
    );
    refused(
        get(&gw, "/api/x", &dpop, &[&a, &b]).await,
        "invalid_dpop_proof",
        "two proofs",
    );
    refused(
        get(&gw, "/api/x", &dpop, &[]).await,
        "invalid_dpop_proof",
        "no proof",
    );
    let stolen = key2.proof("GET", &url, Some(&bound), 0);
    refused(
        get(&gw, "/api/x", &dpop, &[&stolen]).await,
        "invalid_token",
        "a proof by another key",
    );
    let unbound = key1.proof("GET", &url, Some(&plain), 0);
    refused(
        get(&gw, "/api/x", &format!("DPoP {plain}"), &[&unbound]).await,
        "invalid_token",
        "a token without cnf",
    );
    refused(
        get(&gw, "/api/x", &format!("Bearer {bound}"), &[]).await,
        "invalid_token",
        "a bound token as Bearer",
    );
    refused(
        get(&gw, "/api/x", &format!("Bearer {plain}"), &[]).await,
        "invalid_dpop_proof",
        "a plain token where DPoP is required",
    );

    // Where DPoP is allowed, plain bearer tokens pass too; bound ones still need their proof.
    assert_eq!(
        get(&gw, "/mixed/x", &format!("Bearer {plain}"), &[])
            .await
            .0,
        200
    );
    let mixed = key1.proof("GET", &format!("{origin}/mixed/x"), Some(&bound), 0);
    assert_eq!(get(&gw, "/mixed/x", &dpop, &[&mixed]).await.0, 200);
    refused(
        get(&gw, "/mixed/x", &format!("Bearer {bound}"), &[]).await,
        "invalid_token",
        "a bound token as Bearer where DPoP is allowed",
    );
    let m = gw.metrics().await;
    assert!(
        metric_value(&m, r#"oidc_gateway_requests_refused_total{reason="dpop"}"#)
            .is_some_and(|n| n >= 12.0),
        "{m}"
    );
}
