//! The signed identity assertion: a user signs in through the gateway, the upstream receives an
//! ES256 JWT naming them, and the documented Python verifier (`docs/examples/verify_assertion.py`,
//! PyJWT) checks it against the gateway's published JWKS. Forged copies never reach the upstream,
//! and the generated key survives a restart.

use crate::support;

use serde_json::Value;
use std::process::Command;
use support::*;

const SECRET: &str = "assertion-test-session-secret-0123456789abc";
const ISSUER: &str = "https://gateway.test";

fn verify(jwks: &str, audience: &str, token: &str) -> Result<Value, String> {
    let out = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/docs/examples/verify_assertion.py"
        ))
        .args([jwks, ISSUER, audience, token])
        .output()
        .expect("python3 with PyJWT (pip install \"pyjwt[crypto]\")");
    if out.status.success() {
        Ok(serde_json::from_slice(&out.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

async fn get_json(url: &str) -> Value {
    client()
        .get(url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn upstreams_receive_an_assertion_python_verifies_and_clients_cannot_forge() {
    let up = TestUpstream::start("app");
    let idp = HostileOp::start(Attack::None);
    let state = tempfile::tempdir().unwrap();
    let port = free_port();
    let origin = format!("http://127.0.0.1:{port}");
    let body = Toml::new()
        .session(SECRET, "")
        .provider("op", &idp.issuer, "s", &origin, "")
        .upstream("app", &up.address())
        .route("app", &["/app"], "app", "provider = \"op\"", "")
        .raw(&format!(
            "[identity_assertion]\nheader = \"X-Gateway-Assertion\"\nissuer = \"{ISSUER}\"\n"
        ))
        .build();
    let server_extra = format!("state_dir = \"{}\"", state.path().display());
    let start = || {
        GatewayProcess::start_with(GatewayOptions {
            body: &body,
            server_extra: &server_extra,
            port: Some(port),
            ..Default::default()
        })
    };
    let gw = start();
    let jwks_url = gw.url("/.well-known/oidc-gateway/jwks.json");
    let b = Browser::new();
    let page = b.navigate(&gw.url("/app/x"), None).await;
    assert_eq!(page.status, 200, "{}", gw.log());
    let token = page.json()["headers"]["x-gateway-assertion"][0]
        .as_str()
        .expect("the upstream got an assertion")
        .to_owned();

    // The audience is the upstream the request went to (its name), never the client's Host.
    let audience = "app";
    let claims = verify(&jwks_url, audience, &token).unwrap();
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["idp"], idp.issuer.as_str());
    assert_eq!(claims["email"], "alice@example.com");
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        60
    );
    assert!(
        verify(&jwks_url, "other.example.com", &token).is_err(),
        "audience checked"
    );

    // A client's own copy is replaced; the next request reuses the signed token (cache).
    let r = b
        .client
        .get(gw.url("/app/y"))
        .header("X-Gateway-Assertion", "forged.jwt.value")
        .send()
        .await
        .unwrap();
    let seen: Vec<String> = r.json::<Value>().await.unwrap()["headers"]["x-gateway-assertion"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(seen, std::slice::from_ref(&token));
    // A client naming another host does not get a token for that host: the old default took
    // `aud` from `Host`, so anyone could have one minted for `bank.example.com`.
    for host in ["bank.example.com", "BANK.Example.COM.", "evil.test:1"] {
        let r = b
            .client
            .get(gw.url("/app/z"))
            .header("Host", host)
            .send()
            .await
            .unwrap();
        let echo = r.json::<Value>().await.unwrap();
        let other = echo["headers"]["x-gateway-assertion"][0].as_str().unwrap();
        assert_eq!(verify(&jwks_url, audience, other).unwrap()["aud"], "app");
        let lowered = host.to_ascii_lowercase();
        assert!(verify(&jwks_url, &lowered, other).is_err(), "{host}");
    }
    // The public keys are public, and cacheable (one Cache-Control, not no-store beside it).
    let r = client().get(&jwks_url).send().await.unwrap();
    let cache: Vec<_> = r.headers().get_all("cache-control").iter().collect();
    assert_eq!(cache, ["public, max-age=300"]);
    let jwks = get_json(&jwks_url).await;
    assert_eq!(jwks["keys"][0]["alg"], "ES256");

    // The generated key is kept (owner-only) and reused after a restart.
    let key = state.path().join("identity-assertion-key.pem");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    drop(gw);
    let gw = start();
    let again = get_json(&gw.url("/.well-known/oidc-gateway/jwks.json")).await;
    assert_eq!(again, jwks, "same key after a restart");
    assert!(verify(&jwks_url, audience, &token).is_ok());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_subject_at_two_providers_gets_two_different_assertions() {
    // Both test providers call their user "alice". The old cache key and claims had no
    // provider, so whoever signed in at either got the other's token.
    let up = TestUpstream::start("app");
    let (idp_a, idp_b) = (
        HostileOp::start(Attack::None),
        HostileOp::start(Attack::None),
    );
    let state = tempfile::tempdir().unwrap();
    let port = free_port();
    let origin = format!("http://127.0.0.1:{port}");
    let body = Toml::new()
        .session(SECRET, "")
        .provider("a", &idp_a.issuer, "s", &origin, "")
        .raw(&format!(
            "[[providers]]\nname = \"b\"\nissuer = \"{}\"\nclient_id = \"gateway\"\n\
             client_secret = \"s\"\nredirect_uri = \"{origin}/oauth2/callback-b\"\n\
             logout_path = \"/oauth2/logout-b\"\n",
            idp_b.issuer
        ))
        .upstream("app", &up.address())
        .route("a", &["/a"], "app", "provider = \"a\"", "")
        .route("b", &["/b"], "app", "provider = \"b\"", "")
        .raw(&format!(
            "[identity_assertion]\nheader = \"X-Gateway-Assertion\"\nissuer = \"{ISSUER}\"\n"
        ))
        .build();
    let gw = GatewayProcess::start_with(GatewayOptions {
        body: &body,
        server_extra: &format!("state_dir = \"{}\"", state.path().display()),
        port: Some(port),
        ..Default::default()
    });
    let jwks_url = gw.url("/.well-known/oidc-gateway/jwks.json");
    let mut tokens = Vec::new();
    for (path, idp) in [("/a/x", &idp_a), ("/b/x", &idp_b)] {
        let page = Browser::new().navigate(&gw.url(path), None).await;
        assert_eq!(page.status, 200, "{}\n{}", page.body, gw.log());
        let token = page.json()["headers"]["x-gateway-assertion"][0]
            .as_str()
            .unwrap()
            .to_owned();
        let claims = verify(&jwks_url, "app", &token).unwrap();
        assert_eq!(
            (claims["sub"].as_str(), claims["idp"].as_str()),
            (Some("alice"), Some(idp.issuer.as_str()))
        );
        tokens.push(token);
    }
    assert_ne!(tokens[0], tokens[1]);
}
