//! The memory-store measurement: sessions shaped like the development IdP's, each used once, in
//! a fresh process.

use super::*;

/// Resident memory of `n` memory-store sessions shaped like the dev IdP's (ES256 tokens),
/// measured in this process: (MiB, bytes per session).
pub fn b64(bytes: &[u8]) -> String {
    base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, bytes)
}

/// Session `i`'s ID token, access token and claims, shaped like the dev IdP's (ES256, the same
/// claims, a nonce, a `jti` and signatures of their own; the store never checks signatures, so
/// these are random bytes).
pub fn dev_idp_tokens(
    i: usize,
    now: u64,
) -> (String, String, serde_json::Map<String, serde_json::Value>) {
    use oidc_gateway::crypto::random_bytes;
    let sub = format!("user-{i:08}");
    let identity = serde_json::json!({
        "sub": sub, "email": format!("{sub}@example.com"), "email_verified": true,
        "name": format!("User {i}"), "preferred_username": sub, "groups": ["admins", "readers"],
        "auth_time": now - (i as u64 % 3600),
    });
    let mut id = identity.clone();
    id["iss"] = "http://127.0.0.1:8081".into();
    id["aud"] = "demo".into();
    id["nonce"] = b64(&random_bytes::<16>()).into();
    id["iat"] = now.into();
    id["exp"] = (now + 3600).into();
    let access = serde_json::json!({
        "iss": "http://127.0.0.1:8081", "sub": sub, "aud": "demo", "client_id": "demo",
        "scope": "openid email profile", "iat": now, "exp": now + 300,
        "jti": b64(&random_bytes::<12>()),
    });
    let jws = |header: &str, payload: &serde_json::Value| {
        format!(
            "{}.{}.{}",
            b64(header.as_bytes()),
            b64(payload.to_string().as_bytes()),
            b64(&random_bytes::<64>())
        )
    };
    let mut claims = identity.as_object().unwrap().clone();
    claims.insert("scope".into(), "openid email profile".into());
    (
        jws(r#"{"alg":"ES256","kid":"dev-bEXXlQHX","typ":"JWT"}"#, &id),
        jws(
            r#"{"typ":"at+jwt","alg":"ES256","kid":"dev-bEXXlQHX"}"#,
            &access,
        ),
        claims,
    )
}

/// Session `i` as a login at the development IdP makes it.
pub fn session_data(i: usize, now: u64) -> oidc_gateway::session::SessionData {
    let (id_token, access_token, claims) = dev_idp_tokens(i, now);
    oidc_gateway::session::SessionData {
        provider: "dev".into(),
        sub: format!("user-{i:08}").into(),
        claims: oidc_gateway::session::Claims::derive(&id_token, claims),
        id_token: id_token.as_str().into(),
        access_token: access_token.as_str().into(),
        expires_at: Some(now + 300),
        refresh_token: Some(b64(&oidc_gateway::crypto::random_bytes::<32>()).into()),
        created_at: now,
        renewed_at: now,
    }
}

pub fn session_memory(n: usize, idle: bool) -> f64 {
    use oidc_gateway::auth::identity;
    use oidc_gateway::clock::now;
    use oidc_gateway::config::{SameSite, Secret, SessionSettings, SessionStoreKind};
    use oidc_gateway::http::cookies::CookieAttrs;
    use oidc_gateway::session::store::{self, Loaded, LocalStore};
    let settings = SessionSettings {
        store: SessionStoreKind::Memory {
            max_sessions: n + 1,
        },
        secrets: vec![Secret::new(SESSION_SECRET)],
        cookie_name: "s".into(),
        cookie_path: "/".into(),
        cookie_domain: None,
        same_site: SameSite::Lax,
        rolling_timeout: Duration::from_secs(3600),
        idling_timeout: Duration::from_secs(3600),
        absolute_timeout: Duration::from_secs(86400),
        cache_size: 0,
        login_timeout: Duration::from_secs(600),
        max_cookie_header_bytes: 8192,
        max_login_cookies: 5,
        userinfo_path: "/oauth2/userinfo".into(),
    };
    let store = store::MemoryStore::new(&settings, n + 1);
    let attrs = CookieAttrs::default();
    // The provider settings of the benchmark's gateway: its upstream headers are what a
    // session's first request builds and keeps.
    let config = oidc_gateway::config::Config::parse(
        &gateway_config(Path::new("/tmp"), &Ports::default(), "memory"),
        Path::new("gateway.toml"),
    )
    .unwrap();
    let provider = &config.providers[0];
    let before = resident_bytes();
    let now = now();
    for i in 0..n {
        let (session, _) = store
            .save(&Loaded::Absent, session_data(i, now), &attrs)
            .unwrap();
        // Its first request (the redirect after login), as `Authenticator::identify` does it.
        session
            .upstream_headers
            .get_or_init(|| identity::session_headers(provider, &session).into());
        drop(session);
        // A minute later the sweeper slims it; sweeping in batches lets later sessions reuse
        // what earlier ones gave back, as in a running gateway.
        if idle && (i + 1) % 10_000 == 0 {
            store.sweep(now + 61);
        }
    }
    if idle {
        store.sweep(now + 61);
    }
    let grown = resident_bytes().saturating_sub(before) as f64;
    assert_eq!(store.len(), n);
    grown / n as f64
}

/// `session_memory` in a fresh process (`--memory-child`), so no measurement inherits memory
/// an earlier one freed: bytes per session.
pub fn session_memory_alone(n: usize, idle: bool) -> f64 {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--memory-child",
            &n.to_string(),
            if idle { "idle" } else { "active" },
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim().parse().unwrap_or_else(|_| {
        panic!(
            "memory measurement failed: {text} {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Memory-store sessions, each used once: (count, bytes each once idle, bytes each while all
/// are active).
pub type Memory = (usize, f64, f64);

pub fn memory_report(counts: &[usize]) -> Vec<Memory> {
    counts
        .iter()
        .map(|&n| {
            (
                n,
                session_memory_alone(n, true),
                session_memory_alone(n, false),
            )
        })
        .collect()
}

pub fn print_memory(memory: &[Memory]) {
    for &(n, idle, active) in memory {
        let mib = |per: f64| per * n as f64 / (1024.0 * 1024.0);
        println!(
            "memory store: {n} sessions, each used once: {idle:.0} bytes per session once idle ({:.0} MiB), {active:.0} while all were active in the last minute ({:.0} MiB)",
            mib(idle),
            mib(active)
        );
    }
}

pub fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages * 4096
}
