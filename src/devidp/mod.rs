//! A small OpenID Provider for `oidc-gateway demo` — DEVELOPMENT ONLY. It speaks standard OIDC
//! (discovery, JWKS, authorization code with PKCE and a plain login form, refresh tokens with
//! rotation, client credentials, userinfo, RP-initiated logout) so the gateway talks to it
//! exactly as to a real provider. It keeps everything in memory, signs with a key generated at
//! start, and refuses to listen anywhere but loopback. It is never on the gateway's request path:
//! the gateway reaches it over HTTP like any other provider.

mod grants;
mod keys;
mod pages;

use pages::*;

use crate::crypto::{ct_eq, random_bytes};
use crate::http::responses::escape;
use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use dashmap::DashMap;
use http::{Response, StatusCode};
use keys::SigningKey;
use openidconnect::url::form_urlencoded;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::net::SocketAddr;

/// Lifetime of codes, login forms and tokens.
const CODE_TTL: u64 = 60;
const LOGIN_TTL: u64 = 600;
const ID_TOKEN_TTL: u64 = 3600;
const MAX_BODY: usize = 64 * 1024;
const SESSION_COOKIE: &str = "devidp_session";

/// A registered client.
#[derive(Debug, Clone)]
pub struct DevClient {
    /// `client_id`
    pub id: String,
    /// `client_secret`
    pub secret: String,
    /// Exact redirect URIs.
    pub redirect_uris: Vec<String>,
    /// Exact post-logout redirect URIs.
    pub post_logout_redirect_uris: Vec<String>,
}

/// A user who can sign in.
#[derive(Debug, Clone)]
pub struct DevUser {
    /// `sub`
    pub sub: String,
    /// Login name.
    pub username: String,
    /// Password.
    pub password: String,
    /// Extra claims (email, name, groups, ...).
    pub claims: serde_json::Map<String, Value>,
}

/// Settings of the development IdP.
#[derive(Debug, Clone)]
pub struct DevIdpConfig {
    /// Issuer (`http://127.0.0.1:port`).
    pub issuer: String,
    /// Clients.
    pub clients: Vec<DevClient>,
    /// Users.
    pub users: Vec<DevUser>,
    /// Access-token lifetime in seconds.
    pub access_token_ttl: u64,
}

impl DevIdpConfig {
    /// What a gateway configuration must say to use this IdP, for `dev-idp` to print: its
    /// issuer, and per client the id, the secret (`secret_shown`: how to show the one a client
    /// gets from the environment) and the redirect and post-logout URIs it accepts.
    pub fn settings(&self, secret_shown: impl Fn(&DevClient) -> String) -> String {
        let mut out = format!("issuer:                   {}\n", self.issuer);
        for c in &self.clients {
            let list = |uris: &[String]| match uris {
                [] => "(none)".to_owned(),
                _ => uris.join(", "),
            };
            out.push_str(&format!(
                "client_id:                {}\nclient_secret:            {}\n\
                 redirect_uri:             {}\npost-logout redirect_uri: {}\n",
                c.id,
                secret_shown(c),
                list(&c.redirect_uris),
                list(&c.post_logout_redirect_uris),
            ));
        }
        out
    }
}

#[derive(Debug, Clone)]
struct AuthRequest {
    client_id: String,
    redirect_uri: String,
    state: Option<String>,
    nonce: Option<String>,
    code_challenge: String,
    scope: String,
    created: u64,
}

#[derive(Debug, Clone)]
struct Grant {
    client_id: String,
    user: usize,
    scope: String,
    created: u64,
}

/// The development IdP's HTTP handler.
pub struct DevIdp {
    cfg: DevIdpConfig,
    key: SigningKey,
    /// Login forms waiting for credentials, by id.
    pending: DashMap<String, AuthRequest>,
    /// Codes: (grant, redirect_uri, nonce, code_challenge).
    codes: DashMap<String, (Grant, String, Option<String>, String)>,
    refresh_tokens: DashMap<String, Grant>,
    /// IdP sessions (single sign-on), by cookie value: user index.
    sessions: DashMap<String, usize>,
}

/// Refuses anything but loopback: the development IdP must never be reachable from outside.
pub fn check_loopback(addr: &SocketAddr) -> Result<(), String> {
    if addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(format!(
            "the development IdP only listens on loopback addresses, not {addr}"
        ))
    }
}

impl DevIdp {
    /// A new IdP with a freshly generated signing key.
    pub fn new(cfg: DevIdpConfig) -> Result<DevIdp, String> {
        Ok(DevIdp {
            cfg,
            key: SigningKey::generate()?,
            pending: DashMap::new(),
            codes: DashMap::new(),
            refresh_tokens: DashMap::new(),
            sessions: DashMap::new(),
        })
    }

    fn client(&self, id: &str) -> Option<&DevClient> {
        self.cfg.clients.iter().find(|c| c.id == id)
    }

    fn discovery(&self) -> Response<Vec<u8>> {
        let i = &self.cfg.issuer;
        json_response(
            200,
            &json!({
                "issuer": i,
                "authorization_endpoint": format!("{i}/authorize"),
                "token_endpoint": format!("{i}/token"),
                "userinfo_endpoint": format!("{i}/userinfo"),
                "jwks_uri": format!("{i}/jwks"),
                "end_session_endpoint": format!("{i}/logout"),
                "response_types_supported": ["code"],
                "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["ES256"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
                "code_challenge_methods_supported": ["S256"],
                "scopes_supported": ["openid", "email", "profile", "offline_access"],
                "claims_supported": ["sub", "email", "email_verified", "name", "preferred_username", "groups"],
            }),
        )
    }
}

#[async_trait]
impl ServeHttp for DevIdp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let now = crate::clock::now();
        let req = session.req_header();
        let method = req.method.clone();
        let path = req.uri.path().to_owned();
        let query: Vec<(String, String)> =
            form_urlencoded::parse(req.uri.query().unwrap_or("").as_bytes())
                .into_owned()
                .collect();
        let authorization = req
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let cookie_sid = crate::http::cookies::get(&req.headers, SESSION_COOKIE).map(str::to_owned);
        let signed_in = cookie_sid
            .as_deref()
            .and_then(|s| self.sessions.get(s).map(|u| *u));
        let form = if method == http::Method::POST {
            match crate::http::body::read_limited(session, MAX_BODY).await {
                Some(body) => form_urlencoded::parse(&body).into_owned().collect(),
                None => return oauth_error(413, "invalid_request"),
            }
        } else {
            Vec::new()
        };
        match (method.as_str(), path.as_str()) {
            ("GET", "/.well-known/openid-configuration") => self.discovery(),
            ("GET", "/jwks") => json_response(200, &json!({"keys": [self.key.jwk]})),
            ("GET", "/authorize") => self.authorize(&query, signed_in, now),
            ("POST", "/login") => self.login(&form, now),
            ("POST", "/token") => self.token(&form, authorization.as_deref(), now),
            ("GET", "/userinfo") | ("POST", "/userinfo") => self.userinfo(authorization.as_deref()),
            ("GET", "/logout") => self.logout(&query, cookie_sid.as_deref()),
            ("GET", "/") => page(
                200,
                "Development identity provider",
                "This is oidc-gateway's built-in OpenID Provider for local development. It is not for production.",
                "",
            ),
            _ => page(
                404,
                "Not found",
                "No such endpoint on the development identity provider.",
                "",
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idp() -> DevIdp {
        DevIdp::new(DevIdpConfig {
            issuer: "http://127.0.0.1:9".into(),
            clients: vec![DevClient {
                id: "demo".into(),
                secret: "s3cret".into(),
                redirect_uris: vec!["http://127.0.0.1:8/cb".into()],
                post_logout_redirect_uris: vec!["http://127.0.0.1:8/".into()],
            }],
            users: vec![DevUser {
                sub: "u1".into(),
                username: "alice".into(),
                password: "wonderland".into(),
                claims: Default::default(),
            }],
            access_token_ttl: 300,
        })
        .unwrap()
    }

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn only_loopback() {
        assert!(check_loopback(&"127.0.0.1:1".parse().unwrap()).is_ok());
        assert!(check_loopback(&"[::1]:1".parse().unwrap()).is_ok());
        assert!(check_loopback(&"0.0.0.0:1".parse().unwrap()).is_err());
        assert!(check_loopback(&"10.0.0.1:1".parse().unwrap()).is_err());
    }

    #[test]
    fn code_flow_with_pkce_and_rotation() {
        let idp = idp();
        let verifier = "v".repeat(43);
        let challenge = B64.encode(Sha256::digest(verifier.as_bytes()));
        let r = idp.authorize(
            &q(&[
                ("client_id", "demo"),
                ("redirect_uri", "http://127.0.0.1:8/cb"),
                ("response_type", "code"),
                ("scope", "openid email"),
                ("state", "st"),
                ("nonce", "n"),
                ("code_challenge", &challenge),
                ("code_challenge_method", "S256"),
            ]),
            None,
            100,
        );
        assert_eq!(r.status(), 200, "login form");
        let id = idp.pending.iter().next().unwrap().key().clone();
        let bad = idp.login(
            &q(&[
                ("request", &id),
                ("username", "alice"),
                ("password", "nope"),
            ]),
            101,
        );
        assert_eq!(bad.status(), 200);
        assert!(String::from_utf8_lossy(bad.body()).contains("Invalid username or password"));
        let ok = idp.login(
            &q(&[
                ("request", &id),
                ("username", "alice"),
                ("password", "wonderland"),
            ]),
            101,
        );
        assert_eq!(ok.status(), 302);
        let loc = ok.headers()["location"].to_str().unwrap();
        let code = loc
            .split("code=")
            .nth(1)
            .unwrap()
            .split('&')
            .next()
            .unwrap()
            .to_owned();
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("demo:s3cret")
        );
        let now = crate::clock::now();
        // Wrong verifier: refused, and the code is gone.
        let t = idp.token(
            &q(&[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", "http://127.0.0.1:8/cb"),
                ("code_verifier", "x"),
            ]),
            Some(&basic),
            now,
        );
        assert_eq!(t.status(), 400);
        assert!(idp.codes.is_empty(), "a code is usable once");

        // Signed in at the IdP now: authorize answers with a code straight away.
        let again = idp.authorize(
            &q(&[
                ("client_id", "demo"),
                ("redirect_uri", "http://127.0.0.1:8/cb"),
                ("response_type", "code"),
                ("scope", "openid"),
                ("code_challenge", &challenge),
                ("code_challenge_method", "S256"),
            ]),
            Some(0),
            now,
        );
        let loc = again.headers()["location"].to_str().unwrap();
        let code = loc
            .split("code=")
            .nth(1)
            .unwrap()
            .split('&')
            .next()
            .unwrap()
            .to_owned();
        let t = idp.token(
            &q(&[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", "http://127.0.0.1:8/cb"),
                ("code_verifier", &verifier),
            ]),
            Some(&basic),
            now,
        );
        assert_eq!(t.status(), 200);
        let body: Value = serde_json::from_slice(t.body()).unwrap();
        let rt = body["refresh_token"].as_str().unwrap().to_owned();
        let userinfo = idp.userinfo(Some(&format!(
            "Bearer {}",
            body["access_token"].as_str().unwrap()
        )));
        assert_eq!(userinfo.status(), 200);
        let refreshed = idp.token(
            &q(&[("grant_type", "refresh_token"), ("refresh_token", &rt)]),
            Some(&basic),
            now,
        );
        assert_eq!(refreshed.status(), 200);
        let replay = idp.token(
            &q(&[("grant_type", "refresh_token"), ("refresh_token", &rt)]),
            Some(&basic),
            now,
        );
        assert_eq!(replay.status(), 400, "refresh tokens rotate");
        let bad_client = idp.token(
            &q(&[("grant_type", "client_credentials")]),
            Some("Basic ZGVtbzp3cm9uZw=="),
            now,
        );
        assert_eq!(bad_client.status(), 401);
    }

    #[test]
    fn unregistered_redirects_are_never_followed() {
        let idp = idp();
        let r = idp.authorize(
            &q(&[
                ("client_id", "demo"),
                ("redirect_uri", "https://evil.example/cb"),
            ]),
            None,
            1,
        );
        assert_eq!(r.status(), 400);
        assert!(r.headers().get("location").is_none());
        let out = idp.logout(
            &q(&[
                ("client_id", "demo"),
                ("post_logout_redirect_uri", "https://evil.example/"),
            ]),
            None,
        );
        // Refused, and the page says which URIs would do (not a silent "signed out").
        assert_eq!(out.status(), 400);
        assert!(out.headers().get("location").is_none());
        let page = String::from_utf8_lossy(out.body());
        assert!(
            page.contains("https://evil.example/") && page.contains("http://127.0.0.1:8/"),
            "{page}"
        );
    }
}
