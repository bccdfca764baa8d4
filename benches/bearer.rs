//! Bearer JWT checks on the request path: with the verified signature cached (the common case)
//! and cold (RS256 signature verification). Target: the cached path under 2 µs.

// `criterion_group!` writes an undocumented `pub fn`.
#![allow(missing_docs)]

#[path = "common/mod.rs"]
mod common;

use common::{KEYS, idp_metadata};
use criterion::{Criterion, black_box, criterion_group, criterion_main};
use oidc_gateway::auth::Authenticator;
use oidc_gateway::auth::bearer::{TokenCaches, verify_jwt};
use oidc_gateway::clock::now;
use oidc_gateway::config::{Auth, Config};
use oidc_gateway::metrics::RouteMetrics;
use oidc_gateway::oidc::provider::Discovered;
use pingora::http::RequestHeader;
use std::path::Path;

fn bench(c: &mut Criterion) {
    let cfg = Config::parse(
        r#"
[session]
secrets = ["bench-secret-bench-secret-bench-secret-0123"]
[[providers]]
name = "okta"
issuer = "https://idp.example.com"
client_id = "gateway"
redirect_uri = "https://app.example.com/oauth2/callback"
[[upstreams]]
name = "api"
targets = ["127.0.0.1:3000"]
[[routes]]
name = "api"
upstream = "api"
auth = { provider = "okta", methods = ["bearer"], audience_required = ["api://orders"], scopes_required = ["orders:read"] }
"#,
        Path::new("bench.toml"),
    )
    .expect("bench config is valid");
    let Auth::Oidc(spec) = &cfg.routes[0].auth else {
        unreachable!()
    };
    let auth = Authenticator::new(&cfg, None).unwrap().unwrap();
    let metadata = idp_metadata();
    auth.providers().install(
        oidc_gateway::config::ProviderId(0),
        Discovered::new(&cfg.providers[0], metadata).unwrap(),
    );

    // An Okta-like access token: about 900 bytes.
    let now = now();
    let claims = serde_json::json!({
        "ver": 1, "jti": "AT.x7Hq1kO2m3n4b5v6c7x8z9a0s1d2f3g4h5j6k7l8", "iss": "https://idp.example.com",
        "aud": "api://orders", "iat": now, "exp": now + 3600, "cid": "0oa1b2c3d4e5f6g7h8i9",
        "uid": "00u1a2b3c4d5e6f7g8h9", "scope": "openid profile email orders:read orders:write",
        "sub": "alice@example.com", "groups": ["Everyone", "admins", "billing"]
    });
    let pem = std::fs::read(format!("{KEYS}/key1.pem")).unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some("key1".into());
    let token = jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_rsa_pem(&pem).unwrap(),
    )
    .unwrap();
    let mut req = RequestHeader::build("GET", b"/orders/42", None).unwrap();
    req.insert_header("authorization", format!("Bearer {token}"))
        .unwrap();
    req.insert_header("host", "api.example.com").unwrap();
    let metrics = RouteMetrics::new("bench");
    let check = || {
        futures::executor::block_on(auth.authenticate(
            spec,
            black_box(&req),
            None,
            None,
            "/orders/42",
            &metrics,
        ))
    };
    assert!(
        matches!(check(), Ok(Some(_))),
        "the bench token must be accepted"
    );

    c.bench_function(
        "bearer check: cached signature (full authenticate + rules)",
        |b| b.iter(|| black_box(check().is_ok())),
    );

    let uncached = TokenCaches::new(0);
    c.bench_function("bearer check: cold (RS256 verification)", |b| {
        b.iter(|| {
            black_box(
                futures::executor::block_on(verify_jwt(
                    auth.providers(),
                    &uncached,
                    spec,
                    black_box(&token),
                    now,
                ))
                .is_ok(),
            )
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
