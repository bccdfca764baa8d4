//! A small OpenID Provider for `oidc-gateway demo` — DEVELOPMENT ONLY. It speaks standard OIDC
//! (discovery, JWKS, authorization code with PKCE and a plain login form, refresh tokens with
//! rotation, client credentials, userinfo, RP-initiated logout) so the gateway talks to it
//! exactly as to a real provider. It keeps everything in memory, signs with a key generated at
//! start, and refuses to listen anywhere but loopback. It is never on the gateway's request path:
//! the gateway reaches it over HTTP like any other provider.

mod keys;

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

    fn authorize(
        &self,
        query: &[(String, String)],
        cookie_session: Option<usize>,
        now: u64,
    ) -> Response<Vec<u8>> {
        let get = |k: &str| query.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let Some(client) = get("client_id").and_then(|c| self.client(&c)) else {
            return page(
                400,
                "Unknown client",
                "The client_id is not registered here.",
                "",
            );
        };
        let redirect_uri = get("redirect_uri").unwrap_or_default();
        // Never redirect to an unregistered URI: show the error here instead.
        if !client.redirect_uris.contains(&redirect_uri) {
            return page(
                400,
                "Invalid redirect_uri",
                "This redirect_uri is not registered for the client.",
                "",
            );
        }
        let state = get("state");
        let fail = |error: &str| {
            redirect(&with_params(
                &redirect_uri,
                &[("error", Some(error)), ("state", state.as_deref())],
            ))
        };
        if get("response_type").as_deref() != Some("code") {
            return fail("unsupported_response_type");
        }
        let (Some(code_challenge), Some("S256")) = (
            get("code_challenge"),
            get("code_challenge_method").as_deref(),
        ) else {
            return fail("invalid_request");
        };
        let scope = get("scope").unwrap_or_default();
        if !scope.split(' ').any(|s| s == "openid") {
            return fail("invalid_scope");
        }
        let req = AuthRequest {
            client_id: client.id.clone(),
            redirect_uri,
            state,
            nonce: get("nonce"),
            code_challenge,
            scope,
            created: now,
        };
        if let Some(user) = cookie_session {
            return self.issue_code(req, user, now);
        }
        let id = B64.encode(random_bytes::<16>());
        self.pending.insert(id.clone(), req);
        login_page(&id, None)
    }

    fn login(&self, form: &[(String, String)], now: u64) -> Response<Vec<u8>> {
        let get = |k: &str| {
            form.iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
                .unwrap_or("")
        };
        let id = get("request");
        let Some(req) = self
            .pending
            .get(id)
            .map(|r| r.clone())
            .filter(|r| now < r.created + LOGIN_TTL)
        else {
            return page(
                400,
                "Sign-in expired",
                "This sign-in form has expired. Go back to the application and start again.",
                "",
            );
        };
        let user = self.cfg.users.iter().position(|u| {
            ct_eq(u.username.as_bytes(), get("username").as_bytes())
                & ct_eq(u.password.as_bytes(), get("password").as_bytes())
        });
        let Some(user) = user else {
            return login_page(id, Some("Invalid username or password."));
        };
        self.pending.remove(id);
        let sid = B64.encode(random_bytes::<24>());
        self.sessions.insert(sid.clone(), user);
        let mut resp = self.issue_code(req, user, now);
        if let Ok(v) = http::HeaderValue::from_str(&format!(
            "{SESSION_COOKIE}={sid}; Path=/; HttpOnly; SameSite=Lax"
        )) {
            resp.headers_mut().append(http::header::SET_COOKIE, v);
        }
        resp
    }

    fn issue_code(&self, req: AuthRequest, user: usize, now: u64) -> Response<Vec<u8>> {
        let code = B64.encode(random_bytes::<24>());
        let grant = Grant {
            client_id: req.client_id,
            user,
            scope: req.scope,
            created: now,
        };
        let target = with_params(
            &req.redirect_uri,
            &[("code", Some(&code)), ("state", req.state.as_deref())],
        );
        self.codes.insert(
            code,
            (grant, req.redirect_uri, req.nonce, req.code_challenge),
        );
        redirect(&target)
    }

    fn token(
        &self,
        form: &[(String, String)],
        authorization: Option<&str>,
        now: u64,
    ) -> Response<Vec<u8>> {
        let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        let Some(client) = self.authenticate_client(form, authorization) else {
            return oauth_error(401, "invalid_client");
        };
        match get("grant_type") {
            Some("authorization_code") => {
                let Some((_, (grant, redirect_uri, nonce, challenge))) =
                    get("code").and_then(|c| self.codes.remove(c))
                else {
                    return oauth_error(400, "invalid_grant");
                };
                let verifier = get("code_verifier").unwrap_or("");
                let computed = B64.encode(Sha256::digest(verifier.as_bytes()));
                if grant.client_id != client.id
                    || now >= grant.created + CODE_TTL
                    || get("redirect_uri") != Some(redirect_uri.as_str())
                    || !ct_eq(computed.as_bytes(), challenge.as_bytes())
                {
                    return oauth_error(400, "invalid_grant");
                }
                self.tokens(&client.id, &grant, nonce.as_deref(), now)
            }
            Some("refresh_token") => {
                // Rotation: a refresh token works once.
                let Some((_, grant)) =
                    get("refresh_token").and_then(|t| self.refresh_tokens.remove(t))
                else {
                    return oauth_error(400, "invalid_grant");
                };
                if grant.client_id != client.id {
                    return oauth_error(400, "invalid_grant");
                }
                self.tokens(&client.id, &grant, None, now)
            }
            Some("client_credentials") => {
                let audience = get("resource").or(get("audience")).unwrap_or("demo-api");
                let scope = get("scope").unwrap_or("");
                let claims = json!({
                    "iss": self.cfg.issuer, "sub": client.id, "aud": audience, "client_id": client.id,
                    "scope": scope, "iat": now, "exp": now + self.cfg.access_token_ttl,
                    "jti": B64.encode(random_bytes::<12>()),
                });
                match self.key.sign(&claims, "at+jwt") {
                    Ok(at) => json_response(
                        200,
                        &json!({"access_token": at, "token_type": "Bearer", "expires_in": self.cfg.access_token_ttl, "scope": scope}),
                    ),
                    Err(_) => oauth_error(500, "server_error"),
                }
            }
            _ => oauth_error(400, "unsupported_grant_type"),
        }
    }

    fn tokens(
        &self,
        client_id: &str,
        grant: &Grant,
        nonce: Option<&str>,
        now: u64,
    ) -> Response<Vec<u8>> {
        let Some(user) = self.cfg.users.get(grant.user) else {
            return oauth_error(400, "invalid_grant");
        };
        let mut id = json!({
            "iss": self.cfg.issuer, "sub": user.sub, "aud": client_id, "iat": now, "exp": now + ID_TOKEN_TTL,
            "auth_time": grant.created, "preferred_username": user.username,
        });
        if let Some(n) = nonce {
            id["nonce"] = n.into();
        }
        for (k, v) in &user.claims {
            id[k] = v.clone();
        }
        let at_claims = json!({
            "iss": self.cfg.issuer, "sub": user.sub, "aud": client_id, "client_id": client_id, "scope": grant.scope,
            "iat": now, "exp": now + self.cfg.access_token_ttl, "jti": B64.encode(random_bytes::<12>()),
        });
        let (Ok(id_token), Ok(access_token)) = (
            self.key.sign(&id, "JWT"),
            self.key.sign(&at_claims, "at+jwt"),
        ) else {
            return oauth_error(500, "server_error");
        };
        let refresh = B64.encode(random_bytes::<32>());
        self.refresh_tokens.insert(refresh.clone(), grant.clone());
        json_response(
            200,
            &json!({
                "access_token": access_token, "token_type": "Bearer", "expires_in": self.cfg.access_token_ttl,
                "id_token": id_token, "refresh_token": refresh, "scope": grant.scope,
            }),
        )
    }

    fn authenticate_client(
        &self,
        form: &[(String, String)],
        authorization: Option<&str>,
    ) -> Option<&DevClient> {
        let (id, secret) = match authorization.and_then(|a| a.strip_prefix("Basic ")) {
            Some(b) => {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(b.trim())
                    .ok()?;
                let text = String::from_utf8(decoded).ok()?;
                let (id, secret) = text.split_once(':')?;
                let dec = |s: &str| {
                    form_urlencoded::parse(format!("x={s}").as_bytes())
                        .next()
                        .map(|(_, v)| v.into_owned())
                };
                (dec(id)?, dec(secret)?)
            }
            None => {
                let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
                (get("client_id")?, get("client_secret")?)
            }
        };
        self.client(&id)
            .filter(|c| ct_eq(c.secret.as_bytes(), secret.as_bytes()))
    }

    fn userinfo(&self, authorization: Option<&str>) -> Response<Vec<u8>> {
        let token = authorization
            .and_then(|a| a.strip_prefix("Bearer "))
            .unwrap_or("");
        let Some(claims) = self.key.verify(token, &self.cfg.issuer) else {
            let mut r = json_response(401, &json!({"error": "invalid_token"}));
            r.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer error=\"invalid_token\""),
            );
            return r;
        };
        let sub = claims.get("sub").and_then(Value::as_str).unwrap_or("");
        let Some(user) = self.cfg.users.iter().find(|u| u.sub == sub) else {
            return json_response(401, &json!({"error": "invalid_token"}));
        };
        let mut out = json!({"sub": user.sub, "preferred_username": user.username});
        for (k, v) in &user.claims {
            out[k] = v.clone();
        }
        json_response(200, &out)
    }

    fn logout(&self, query: &[(String, String)], cookie_sid: Option<&str>) -> Response<Vec<u8>> {
        if let Some(sid) = cookie_sid {
            self.sessions.remove(sid);
        }
        let get = |k: &str| query.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        let allowed = get("post_logout_redirect_uri").filter(|uri| {
            let client = get("client_id").and_then(|c| self.client(c));
            client.is_some_and(|c| c.post_logout_redirect_uris.iter().any(|u| u == uri))
        });
        let mut resp = match allowed {
            Some(uri) => redirect(&with_params(uri, &[("state", get("state"))])),
            None => page(
                200,
                "Signed out",
                "You are signed out of the development identity provider.",
                "",
            ),
        };
        if let Ok(v) = http::HeaderValue::from_str(&format!(
            "{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0"
        )) {
            resp.headers_mut().append(http::header::SET_COOKIE, v);
        }
        resp
    }
}

#[async_trait]
impl ServeHttp for DevIdp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let now = crate::session::now();
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
            match read_body(session).await {
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

async fn read_body(session: &mut ServerSession) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = session.read_request_body().await {
        if body.len() + chunk.len() > MAX_BODY {
            return None;
        }
        body.extend_from_slice(&chunk);
    }
    Some(body)
}

fn with_params(base: &str, params: &[(&str, Option<&str>)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        if let Some(v) = v {
            s.append_pair(k, v);
        }
    }
    let query = s.finish();
    if query.is_empty() {
        return base.to_owned();
    }
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}{query}")
}

fn response(status: u16, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    let mut r = Response::new(body);
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = r.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_str(content_type)
            .unwrap_or(http::HeaderValue::from_static("text/plain")),
    );
    h.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    let len = r.body().len();
    r.headers_mut()
        .insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(len));
    r
}

fn json_response(status: u16, v: &Value) -> Response<Vec<u8>> {
    response(status, "application/json", v.to_string().into_bytes())
}

fn oauth_error(status: u16, error: &str) -> Response<Vec<u8>> {
    json_response(status, &json!({ "error": error }))
}

fn redirect(location: &str) -> Response<Vec<u8>> {
    let mut r = response(302, "text/plain", Vec::new());
    if let Ok(v) = http::HeaderValue::from_str(location) {
        r.headers_mut().insert(http::header::LOCATION, v);
    }
    r
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:26rem;margin:3rem auto;padding:0 1rem;color:#222}\
.dev{background:#fff3cd;border:1px solid #e0c36a;padding:.5rem .75rem;border-radius:.3rem;font-size:.9rem}\
label{display:block;margin:.8rem 0 .2rem}input{width:100%;padding:.45rem;box-sizing:border-box}\
button{margin-top:1rem;padding:.5rem 1.2rem;background:#2457c5;color:#fff;border:0;border-radius:.3rem}\
.error{color:#b00020}";

fn page(status: u16, title: &str, detail: &str, extra_html: &str) -> Response<Vec<u8>> {
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title><style>{STYLE}</style></head><body>\
<p class=\"dev\">Development identity provider &mdash; for local development only.</p><h1>{t}</h1><p>{d}</p>{extra_html}</body></html>",
        t = escape(title),
        d = escape(detail),
    );
    response(status, "text/html; charset=utf-8", body.into_bytes())
}

fn login_page(request_id: &str, error: Option<&str>) -> Response<Vec<u8>> {
    let error = error
        .map(|e| format!("<p class=\"error\" id=\"error\">{}</p>", escape(e)))
        .unwrap_or_default();
    let form = format!(
        "{error}<form method=\"post\" action=\"/login\"><input type=\"hidden\" name=\"request\" value=\"{id}\">\
<label for=\"username\">Username</label><input id=\"username\" name=\"username\" autocomplete=\"username\" autofocus>\
<label for=\"password\">Password</label><input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\">\
<button type=\"submit\" id=\"submit\">Sign in</button></form>",
        id = escape(request_id),
    );
    page(
        200,
        "Sign in",
        "Sign in to continue to the application.",
        &form,
    )
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
        let now = crate::session::now();
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
        assert_eq!(out.status(), 200);
    }
}
