//! A hostile OpenID Provider for tests: standard endpoints, but the ID token (or discovery, or
//! userinfo, or the callback) can be made wrong in one chosen way. The authorization endpoint
//! approves at once (no login page), so a test reaches the gateway's callback in one hop.

use axum::extract::{Form, Query, State};
use axum::response::{IntoResponse, Json, Redirect, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// The client secret the gateway is configured with (the OP does not check it; the
/// `HsWithClientSecret` attack signs with it).
pub const CLIENT_SECRET: &[u8] = b"gateway-secret";
const KEYS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/support/keys");

/// The one thing the OP gets wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attack {
    /// Nothing: a correct provider.
    None,
    /// `iss` names another issuer.
    WrongIss,
    /// `aud` does not contain the client.
    WrongAud,
    /// No `sub`.
    MissingSub,
    /// No `iat`.
    MissingIat,
    /// `exp` in the past.
    Expired,
    /// `iat` far in the future.
    FutureIat,
    /// Another `nonce`.
    NonceMismatch,
    /// No `nonce`.
    NonceMissing,
    /// A corrupted RS256 signature.
    BadSignature,
    /// `alg: none`, no signature (and the OP advertises `none`).
    AlgNone,
    /// HS256 with the RSA public key as the HMAC secret (and the OP advertises HS256).
    HsWithPublicKey,
    /// HS256 keyed with the client secret (and the OP advertises HS256).
    HsWithClientSecret,
    /// Signed by a key the JWKS never contains.
    UnknownKid,
    /// The discovery document names another issuer.
    DiscoveryIssuerMismatch,
    /// Userinfo returns another subject.
    UserinfoSubMismatch,
    /// The authorization endpoint answers `error=access_denied`.
    AccessDenied,
    /// Two audiences and no `azp`.
    ExtraAudNoAzp,
    /// `azp` names another client.
    WrongAzp,
    /// The token response has an `at_hash` that does not match the access token.
    BadAtHash,
}

/// What the OP does and has seen.
pub struct OpState {
    /// Current attack.
    pub attack: Mutex<Attack>,
    /// Key that signs ID tokens (`key1`, `key2`, `key3`).
    pub signing_key: Mutex<&'static str>,
    /// Keys in the JWKS.
    pub published: Mutex<Vec<&'static str>>,
    /// JWKS fetches.
    pub jwks_fetches: AtomicUsize,
    /// Token endpoint calls.
    pub token_requests: AtomicUsize,
    /// Every request.
    pub requests: AtomicUsize,
    /// Milliseconds every answer is held back (a slow provider).
    pub delay_ms: AtomicU64,
    issuer: Mutex<String>,
    codes: Mutex<HashMap<String, String>>,
}

/// A running hostile OP.
pub struct HostileOp {
    /// `http://127.0.0.1:port`
    pub issuer: String,
    /// Its state (switch the attack or keys at any time).
    pub state: Arc<OpState>,
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HostileOp {
    /// Starts the OP with `attack`, signing with `key1` and publishing `key1`.
    pub fn start(attack: Attack) -> HostileOp {
        Self::start_on(0, attack)
    }

    /// Starts the OP on `port` (0: any free one); a stopped OP comes back at the same issuer
    /// when started on its old port.
    pub fn start_on(port: u16, attack: Attack) -> HostileOp {
        let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(OpState {
            attack: Mutex::new(attack),
            signing_key: Mutex::new("key1"),
            published: Mutex::new(vec!["key1"]),
            jwks_fetches: AtomicUsize::new(0),
            token_requests: AtomicUsize::new(0),
            requests: AtomicUsize::new(0),
            delay_ms: AtomicU64::new(0),
            issuer: Mutex::new(issuer.clone()),
            codes: Mutex::new(HashMap::new()),
        });
        let app = axum::Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .route("/authorize", get(authorize))
            .route("/token", post(token))
            .route("/userinfo", get(userinfo))
            .layer(axum::middleware::from_fn_with_state(state.clone(), count))
            .with_state(state.clone());
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let (tx, rx) = tokio::sync::oneshot::channel::<()>();
                std::thread::spawn(move || {
                    let _ = stop_rx.recv();
                    let _ = tx.send(());
                });
                tokio::select! {
                    _ = axum::serve(listener, app) => {},
                    _ = rx => {},
                }
            });
        });
        HostileOp {
            issuer,
            state,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// Holds every answer back by `ms` milliseconds from now on.
    pub fn set_delay_ms(&self, ms: u64) {
        self.state.delay_ms.store(ms, Ordering::SeqCst);
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.issuer.rsplit(':').next().unwrap().parse().unwrap()
    }
}

impl Drop for HostileOp {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn count(
    State(st): State<Arc<OpState>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    st.requests.fetch_add(1, Ordering::SeqCst);
    let delay = st.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
    }
    next.run(req).await
}

fn attack(st: &OpState) -> Attack {
    *st.attack.lock().unwrap()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

async fn discovery(State(st): State<Arc<OpState>>) -> Json<serde_json::Value> {
    let issuer = st.issuer.lock().unwrap().clone();
    let named = if attack(&st) == Attack::DiscoveryIssuerMismatch {
        "https://evil.example.com".to_owned()
    } else {
        issuer.clone()
    };
    let algs: Vec<&str> = match attack(&st) {
        Attack::AlgNone => vec!["RS256", "none"],
        Attack::HsWithPublicKey | Attack::HsWithClientSecret => vec!["RS256", "HS256"],
        _ => vec!["RS256"],
    };
    Json(serde_json::json!({
        "issuer": named,
        "authorization_endpoint": format!("{issuer}/authorize"),
        "token_endpoint": format!("{issuer}/token"),
        "userinfo_endpoint": format!("{issuer}/userinfo"),
        "jwks_uri": format!("{issuer}/jwks"),
        "end_session_endpoint": format!("{issuer}/logout"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": algs,
    }))
}

fn jwk(kid: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(format!("{KEYS}/{kid}.jwk.json")).unwrap())
        .unwrap()
}

async fn jwks(State(st): State<Arc<OpState>>) -> Json<serde_json::Value> {
    st.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    let keys: Vec<serde_json::Value> = st
        .published
        .lock()
        .unwrap()
        .iter()
        .map(|k| jwk(k))
        .collect();
    Json(serde_json::json!({ "keys": keys }))
}

async fn authorize(
    State(st): State<Arc<OpState>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let redirect = q.get("redirect_uri").cloned().unwrap_or_default();
    let state = q.get("state").cloned().unwrap_or_default();
    if attack(&st) == Attack::AccessDenied {
        return Redirect::to(&format!("{redirect}?error=access_denied&state={state}"))
            .into_response();
    }
    // Unique even when answers are held back (`delay_ms`) and requests overlap.
    static NEXT_CODE: AtomicUsize = AtomicUsize::new(0);
    let code = format!("code-{}", NEXT_CODE.fetch_add(1, Ordering::SeqCst));
    st.codes
        .lock()
        .unwrap()
        .insert(code.clone(), q.get("nonce").cloned().unwrap_or_default());
    Redirect::to(&format!("{redirect}?code={code}&state={state}")).into_response()
}

async fn token(
    State(st): State<Arc<OpState>>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    st.token_requests.fetch_add(1, Ordering::SeqCst);
    // A refresh gets a new access token (the same refresh token; no new ID token).
    if form.get("grant_type").map(String::as_str) == Some("refresh_token") {
        return Json(serde_json::json!({
            "access_token": format!("at-{}", now()),
            "token_type": "Bearer",
            "expires_in": 300,
            "refresh_token": "rt-hostile",
        }))
        .into_response();
    }
    let Some(nonce) = form
        .get("code")
        .and_then(|c| st.codes.lock().unwrap().remove(c))
    else {
        return (
            axum::http::StatusCode::BAD_REQUEST,
            Json(serde_json::json!({"error": "invalid_grant"})),
        )
            .into_response();
    };
    let issuer = st.issuer.lock().unwrap().clone();
    let now = now();
    let mut claims = serde_json::json!({
        "iss": issuer, "sub": "alice", "aud": "gateway", "exp": now + 300, "iat": now,
        "nonce": nonce, "email": "alice@example.com",
    });
    let a = attack(&st);
    match a {
        Attack::WrongIss => claims["iss"] = "https://evil.example.com".into(),
        Attack::WrongAud => claims["aud"] = "someone-else".into(),
        Attack::MissingSub => drop(claims.as_object_mut().unwrap().remove("sub")),
        Attack::MissingIat => drop(claims.as_object_mut().unwrap().remove("iat")),
        Attack::Expired => {
            claims["exp"] = (now - 600).into();
            claims["iat"] = (now - 900).into();
        }
        Attack::FutureIat => claims["iat"] = (now + 3600).into(),
        Attack::NonceMismatch => claims["nonce"] = "not-the-nonce".into(),
        Attack::NonceMissing => drop(claims.as_object_mut().unwrap().remove("nonce")),
        Attack::ExtraAudNoAzp => claims["aud"] = serde_json::json!(["gateway", "other-client"]),
        Attack::WrongAzp => {
            claims["aud"] = serde_json::json!(["gateway", "other-client"]);
            claims["azp"] = "other-client".into();
        }
        Attack::BadAtHash => claims["at_hash"] = "AAAAAAAAAAAAAAAAAAAAAA".into(),
        _ => {}
    }
    let kid = if a == Attack::UnknownKid {
        "key3"
    } else {
        *st.signing_key.lock().unwrap()
    };
    let id_token = match a {
        Attack::AlgNone => format!(
            "{}.{}.",
            B64.encode(br#"{"alg":"none","typ":"JWT"}"#),
            B64.encode(claims.to_string())
        ),
        Attack::HsWithPublicKey => {
            let public = std::fs::read(format!("{KEYS}/{kid}.pub.pem")).unwrap();
            let mut h = Header::new(Algorithm::HS256);
            h.kid = Some(kid.into());
            jsonwebtoken::encode(&h, &claims, &EncodingKey::from_secret(&public)).unwrap()
        }
        Attack::HsWithClientSecret => {
            let mut h = Header::new(Algorithm::HS256);
            h.kid = Some(kid.into());
            jsonwebtoken::encode(&h, &claims, &EncodingKey::from_secret(CLIENT_SECRET)).unwrap()
        }
        _ => {
            let pem = std::fs::read(format!("{KEYS}/{kid}.pem")).unwrap();
            let mut h = Header::new(Algorithm::RS256);
            h.kid = Some(kid.into());
            let t = jsonwebtoken::encode(&h, &claims, &EncodingKey::from_rsa_pem(&pem).unwrap())
                .unwrap();
            if a == Attack::BadSignature {
                // Flip one character in the middle of the signature.
                let (head, sig) = t.rsplit_once('.').unwrap();
                let mut sig: Vec<u8> = sig.bytes().collect();
                let mid = sig.len() / 2;
                sig[mid] = if sig[mid] == b'A' { b'B' } else { b'A' };
                format!("{head}.{}", String::from_utf8(sig).unwrap())
            } else {
                t
            }
        }
    };
    Json(serde_json::json!({
        "access_token": format!("at-{now}"),
        "token_type": "Bearer",
        "expires_in": 300,
        "id_token": id_token,
        "refresh_token": "rt-hostile",
    }))
    .into_response()
}

async fn userinfo(State(st): State<Arc<OpState>>) -> Json<serde_json::Value> {
    let sub = if attack(&st) == Attack::UserinfoSubMismatch {
        "mallory"
    } else {
        "alice"
    };
    Json(serde_json::json!({ "sub": sub, "email": "alice@example.com" }))
}

/// Signs `claims` as a JWT with a test key (`key1`, `key2` or `key3`), RS256, `kid` set.
pub fn mint(claims: &serde_json::Value, kid: &str) -> String {
    let pem = std::fs::read(format!("{KEYS}/{kid}.pem")).unwrap();
    let mut h = Header::new(Algorithm::RS256);
    h.kid = Some(kid.into());
    jsonwebtoken::encode(&h, claims, &EncodingKey::from_rsa_pem(&pem).unwrap()).unwrap()
}

/// An HS256 token whose HMAC key is the RSA public key of `kid` (algorithm confusion).
pub fn mint_hs_with_public_key(claims: &serde_json::Value, kid: &str) -> String {
    let public = std::fs::read(format!("{KEYS}/{kid}.pub.pem")).unwrap();
    let mut h = Header::new(Algorithm::HS256);
    h.kid = Some(kid.into());
    jsonwebtoken::encode(&h, claims, &EncodingKey::from_secret(&public)).unwrap()
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    now()
}
