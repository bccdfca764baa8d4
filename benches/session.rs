//! The authenticated hot path: checking a session on every request, and validating an ID token
//! (done at login and refresh). Target: a cached session check under 1 µs.

// `criterion_group!` writes an undocumented `pub fn`.
#![allow(missing_docs)]

#[path = "common/mod.rs"]
mod common;

use common::{KEYS, idp_metadata};
use criterion::{Criterion, black_box, criterion_group, criterion_main};
use oidc_gateway::auth::Authenticator;
use oidc_gateway::clock::now;
use oidc_gateway::config::ProviderId;
use oidc_gateway::config::{Config, SessionStoreKind};
use oidc_gateway::http::cookies::CookieAttrs;
use oidc_gateway::metrics::RouteMetrics;
use oidc_gateway::oidc::provider::Discovered;
use oidc_gateway::oidc::provider::Providers;
use oidc_gateway::oidc::verify::verify_id_token;
use oidc_gateway::session::SessionData;
use oidc_gateway::session::store::{self, Loaded, LocalStore, SetCookies};
use pingora::http::RequestHeader;
use std::path::Path;

fn config(store: &str, cache_size: usize) -> Config {
    let toml = format!(
        r#"
[session]
store = "{store}"
secrets = ["bench-secret-bench-secret-bench-secret-0123"]
cache_size = {cache_size}

[[providers]]
name = "okta"
issuer = "https://idp.example.com"
client_id = "gateway"
client_secret = "s3cret"
redirect_uri = "https://app.example.com/oauth2/callback"

[[upstreams]]
name = "app"
targets = ["127.0.0.1:3000"]

[[routes]]
name = "app"
upstream = "app"
auth = {{ provider = "okta" }}
"#
    );
    Config::parse(&toml, Path::new("bench.toml")).expect("bench config is valid")
}

/// A realistic session: JWT-sized tokens and a handful of claims (about 2.5 KB sealed).
fn session_data() -> SessionData {
    let now = now();
    let jwt = format!(
        "eyJhbGciOiJSUzI1NiJ9.{}.{}",
        "x".repeat(700),
        "s".repeat(342)
    );
    SessionData {
        provider: "okta".into(),
        sub: "00u1a2b3c4d5e6f7g8h9".into(),
        claims: oidc_gateway::session::Claims::derive(&jwt, serde_json::json!({
            "email": "alice@example.com", "name": "Alice Liddell", "groups": ["admins", "readers"],
            "preferred_username": "alice"
        }).as_object().unwrap().clone()),
        id_token: jwt.as_str().into(),
        access_token: jwt.into(),
        expires_at: Some(now + 3600),
        refresh_token: Some("r".repeat(40).into()),
        created_at: now,
        renewed_at: now,
    }
}

/// A request carrying the cookies a store set (`name=value`, attributes dropped).
fn request_with(set: &SetCookies) -> RequestHeader {
    let mut req = RequestHeader::build("GET", b"/app", None).unwrap();
    let cookie: Vec<&str> = set
        .iter()
        .filter_map(|c| c.to_str().ok()?.split(';').next())
        .collect();
    req.insert_header(
        "cookie",
        format!("theme=dark; {}; lang=en", cookie.join("; ")),
    )
    .unwrap();
    req.insert_header("host", "app.example.com").unwrap();
    req
}

fn bench_sessions(c: &mut Criterion) {
    for (store, label) in [("cookie", "cookie store"), ("memory", "memory store")] {
        let cfg = config(store, 100_000);
        let auth = Authenticator::new(&cfg, None).unwrap().unwrap();
        let oidc_gateway::config::Auth::Oidc(spec) = &cfg.routes[0].auth else {
            unreachable!()
        };
        let (_, cookies) = futures::executor::block_on(auth.sessions().save(
            &Loaded::Absent,
            session_data(),
            &CookieAttrs::default(),
        ))
        .unwrap();
        let req = request_with(&cookies);
        let metrics = RouteMetrics::new("bench");
        // Calls that may reach the provider (refresh, JWKS refetch, introspection) are boxed,
        // so the future built on every request stays small: inline, it was 4 KB, copied around
        // on every request (`cargo test` runs this check too).
        let size =
            std::mem::size_of_val(&auth.authenticate(spec, &req, None, None, "/app", &metrics));
        assert!(size <= 1024, "authenticate's future is {size} bytes");
        c.bench_function(
            &format!("session check: {label}, cache hit (full authenticate)"),
            |b| {
                b.iter(|| {
                    let id = futures::executor::block_on(auth.authenticate(
                        spec,
                        black_box(&req),
                        None,
                        None,
                        "/app",
                        &metrics,
                    ));
                    black_box(id.is_ok())
                })
            },
        );
    }

    // The cookie store without a cache: every request decrypts and parses the cookie.
    let cfg = config("cookie", 100_000);
    let sealing = store::CookieStore::new(cfg.session.as_ref().unwrap());
    let (_, cookies) = sealing
        .save(&Loaded::Absent, session_data(), &CookieAttrs::default())
        .unwrap();
    let req = request_with(&cookies);
    let mut cold = cfg.session.clone().unwrap();
    cold.cache_size = 0;
    let uncached = store::CookieStore::new(&cold);
    c.bench_function(
        "session check: cookie store, cache miss (decrypt + parse)",
        |b| {
            b.iter(|| {
                black_box(matches!(
                    uncached.load(black_box(&req.headers)),
                    Loaded::Found { .. }
                ))
            })
        },
    );
}

/// Storing a session (a login's last step, and each renewal or refresh): the memory store
/// squeezes the tokens, the cookie store deflates and seals the session. Building the session
/// data is part of each iteration.
fn bench_create(c: &mut Criterion) {
    for (store, label) in [("cookie", "cookie store"), ("memory", "memory store")] {
        let cfg = config(store, 100_000);
        let settings = cfg.session.as_ref().unwrap();
        let sessions: Box<dyn LocalStore> = match settings.store {
            SessionStoreKind::Memory { max_sessions } => {
                Box::new(store::MemoryStore::new(settings, max_sessions))
            }
            _ => Box::new(store::CookieStore::new(settings)),
        };
        let attrs = CookieAttrs::default();
        c.bench_function(&format!("session create: {label}"), |b| {
            b.iter(|| {
                black_box(
                    sessions
                        .save(&Loaded::Absent, session_data(), &attrs)
                        .is_ok(),
                )
            })
        });
    }
}

fn bench_id_token(c: &mut Criterion) {
    let cfg = config("cookie", 10);
    let provider = &cfg.providers[0];
    let providers = Providers::new(&cfg.providers).unwrap();
    providers.install(
        ProviderId(0),
        Discovered::new(provider, idp_metadata()).unwrap(),
    );
    let now = now();
    let claims = serde_json::json!({
        "iss": "https://idp.example.com", "sub": "alice", "aud": "gateway", "exp": now + 3600,
        "iat": now, "nonce": "n-0S6_WzA2Mj", "email": "alice@example.com", "groups": ["admins"]
    });
    let pem = std::fs::read(format!("{KEYS}/key1.pem")).unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some("key1".into());
    let jwt = jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_rsa_pem(&pem).unwrap(),
    )
    .unwrap();
    // The keys are in memory, so the future completes without waiting: polling it on a
    // current-thread runtime adds well under a microsecond to a ~0.2 ms verification.
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let verify = |token: &str| {
        rt.block_on(verify_id_token(
            &providers,
            ProviderId(0),
            token,
            Some("n-0S6_WzA2Mj"),
        ))
        .is_ok()
    };
    assert!(verify(&jwt));
    c.bench_function("ID token validation (RS256)", |b| {
        b.iter(|| black_box(verify(black_box(&jwt))))
    });
}

/// The identity assertion: signing one (ES256) against handing out the cached one, which is what
/// every request but the first in half a lifetime pays.
fn bench_identity_assertion(c: &mut Criterion) {
    use oidc_gateway::auth::signed_identity::IdentitySigner;
    let dir = tempfile::tempdir().unwrap();
    let cfg = oidc_gateway::config::IdentityAssertion {
        header: http::HeaderName::from_static("x-gateway-assertion"),
        issuer: "https://gateway.example.com".into(),
        audience: None,
        lifetime: std::time::Duration::from_secs(60),
        key_files: Vec::new(),
        jwks_path: "/.well-known/oidc-gateway/jwks.json".into(),
    };
    let signer = IdentitySigner::new(&cfg, Some(dir.path())).unwrap();
    let claims: serde_json::Map<String, serde_json::Value> = serde_json::from_value(
        serde_json::json!({"email": "alice@example.com", "groups": ["admins", "readers"]}),
    )
    .unwrap();
    c.bench_function("identity assertion: cached", |b| {
        b.iter(|| {
            black_box(signer.assertion("alice", "https://idp.example.com", Some(&claims), "app"))
        })
    });
    let mut n = 0u64;
    c.bench_function(
        "identity assertion: signed (a new subject each time)",
        |b| {
            b.iter(|| {
                n += 1;
                black_box(signer.assertion(
                    &format!("user-{n}"),
                    "https://idp.example.com",
                    Some(&claims),
                    "app",
                ))
            })
        },
    );
}

criterion_group!(
    benches,
    bench_sessions,
    bench_create,
    bench_id_token,
    bench_identity_assertion
);
criterion_main!(benches);
