//! What a protected route demands and what a request proves. `authenticate` tries the route's
//! methods in order (session, browser login, bearer JWT, introspection), then `authorize`
//! applies its claim rules and consumer mapping. The session and cached-token paths make no
//! call to the identity provider.

pub mod bearer;
pub mod consumers;
pub mod endpoints;
pub mod identity;
pub mod rules;
mod session;

use crate::config::{AuthMethod, Config, Consumer, Provider, RouteAuth, SameSite, SessionSettings};
use crate::http::cookies::CookieAttrs;
use crate::http::headers::HeaderSet;
use crate::http::redirect;
use crate::http::responses::{Action, Reply};
use crate::metrics::{self, RouteMetrics};
use crate::oidc::login::authorization_request;
use crate::oidc::provider::Providers;
use crate::oidc::state::LoginCookies;
use crate::ratelimit::{self, Limit, Limited};
use crate::session::store::SessionStore;
use crate::session::{Session, Sid, now};
use async_trait::async_trait;
use bearer::{TokenCaches, VerifiedToken};
use dashmap::DashMap;
use pingora::http::RequestHeader;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use session::SessionOutcome;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a failed refresh is remembered, so requests of that session fail fast meanwhile.
const REFRESH_FAILURE_MEMORY: Duration = Duration::from_secs(10);

/// What proved a request.
#[derive(Debug, Clone)]
pub enum Credential {
    /// A browser session.
    Session(Arc<Session>),
    /// A bearer JWT or an introspected opaque token.
    Token(Arc<VerifiedToken>),
    /// Nothing: the route's anonymous consumer.
    Anonymous,
}

impl Credential {
    /// The claims it carries (none for the anonymous consumer).
    pub fn claims(&self) -> Option<&serde_json::Map<String, serde_json::Value>> {
        match self {
            Credential::Session(s) => Some(s.data.claims()),
            Credential::Token(t) => Some(&t.claims),
            Credential::Anonymous => None,
        }
    }
}

/// An authenticated (and authorized) request.
#[derive(Debug)]
pub struct Identity {
    /// What proved it.
    pub credential: Credential,
    /// `Set-Cookie` headers for the response (renewed or refreshed cookie-store sessions).
    pub set_cookies: Vec<http::HeaderValue>,
    /// Index of the mapped `[[consumers]]` entry.
    pub consumer: Option<usize>,
    /// Kong's consumer and credential headers for the upstream.
    pub extra_headers: Vec<(http::HeaderName, http::HeaderValue)>,
}

impl Identity {
    fn new(credential: Credential, set_cookies: Vec<http::HeaderValue>) -> Identity {
        Identity {
            credential,
            set_cookies,
            consumer: None,
            extra_headers: Vec::new(),
        }
    }

    /// The claims rules are checked against.
    pub fn claims(&self) -> Option<&serde_json::Map<String, serde_json::Value>> {
        self.credential.claims()
    }

    /// The subject, for logs.
    pub fn sub(&self) -> Option<&str> {
        match &self.credential {
            Credential::Session(s) => Some(&s.data.sub),
            Credential::Token(t) => t.sub(),
            Credential::Anonymous => None,
        }
    }
}

type RefreshOutcome = Option<(Arc<Session>, Vec<(String, String)>)>;

struct Flight {
    started: Instant,
    result: tokio::sync::OnceCell<RefreshOutcome>,
}

/// OpenID Connect browser authentication: sessions, login, refresh, the gateway's endpoints.
pub struct OidcAuth {
    /// Configured providers and their discovery state.
    pub providers: Arc<Providers>,
    /// Session storage.
    pub store: SessionStore,
    login: LoginCookies,
    settings: SessionSettings,
    /// Cookie attributes per provider (`Secure` follows the provider's redirect URI).
    attrs: Vec<CookieAttrs>,
    /// Identity headers removed from every request before it goes upstream.
    pub scrub: HeaderSet,
    inflight: DashMap<Sid, Arc<Flight>>,
    /// `state` values already used at the callback, until their login cookie would expire.
    used_states: DashMap<String, u64>,
    /// Verified bearer tokens and introspection answers.
    tokens: TokenCaches,
    /// `[[consumers]]`
    consumers: Vec<Consumer>,
    /// Login starts per client and minute.
    login_starts: Option<Limit>,
    /// Callbacks (token calls) per client and minute.
    callbacks: Option<Limit>,
    /// Introspection cache misses per client and minute.
    introspections: Option<Limit>,
}

impl OidcAuth {
    /// Builds the authenticator when the configuration has providers.
    pub fn new(config: &Config) -> Result<Option<OidcAuth>, String> {
        let Some(settings) = config.session.clone() else {
            return Ok(None);
        };
        if config.providers.is_empty() {
            return Ok(None);
        }
        let providers = Arc::new(Providers::new(&config.providers)?);
        for p in &config.providers {
            metrics::init_provider(&p.name);
        }
        let settings_cache_size = settings.cache_size.max(1024);
        let attrs = config
            .providers
            .iter()
            .map(|p| CookieAttrs {
                path: settings.cookie_path.clone(),
                domain: settings.cookie_domain.clone(),
                same_site: match settings.same_site {
                    SameSite::Lax => cookie::SameSite::Lax,
                    SameSite::Strict => cookie::SameSite::Strict,
                    SameSite::None => cookie::SameSite::None,
                },
                secure: p.secure_cookies,
            })
            .collect();
        Ok(Some(OidcAuth {
            login: LoginCookies::new(
                &settings.secrets,
                &settings.cookie_name,
                settings.login_timeout,
                settings.max_login_cookies,
            ),
            store: SessionStore::new(&settings),
            scrub: identity::scrub_set(config),
            providers,
            settings,
            attrs,
            inflight: DashMap::new(),
            used_states: DashMap::new(),
            tokens: TokenCaches::new(settings_cache_size),
            consumers: config.consumers.clone(),
            login_starts: Limit::new(config.server.login_rate_limit),
            callbacks: Limit::new(config.server.login_rate_limit),
            introspections: Limit::new(config.server.introspection_rate_limit),
        }))
    }

    fn provider(&self, index: usize) -> Option<&Provider> {
        self.providers.handle(index).map(|h| &h.config)
    }

    fn attrs(&self, index: usize) -> &CookieAttrs {
        // `new` builds one entry per provider and there is at least one provider.
        &self.attrs[index.min(self.attrs.len() - 1)]
    }

    /// Whether `cookie` is one of the gateway's (session or login), never to be sent upstream.
    pub fn is_own_cookie(&self, cookie: &str) -> bool {
        self.store.is_session_cookie(cookie) || self.login.is_login_cookie(cookie)
    }

    /// Authenticates a request to a protected route, trying the route's methods in order, then
    /// applies the route's rules and consumer mapping. `Ok(None)`: proxy without identity
    /// (`mode = "optional"` without a credential, or a CORS preflight when allowed).
    /// `client` is the client's address (after `trusted_proxies`), for the limits on requests
    /// that reach the provider; `return_to` is the canonical path and query, where the browser
    /// returns after a login.
    pub async fn authenticate(
        &self,
        spec: &RouteAuth,
        req: &RequestHeader,
        client: Option<IpAddr>,
        return_to: &str,
        route_metrics: &RouteMetrics,
    ) -> Result<Option<Identity>, Reply> {
        if !spec.run_on_preflight && is_preflight(req) {
            return Ok(None);
        }
        let now = now();
        let token = bearer_token(&req.headers);
        let mut clear_cookies = Vec::new();
        for method in &spec.methods {
            let found = match method {
                AuthMethod::Session => {
                    match self.session_method(spec, req, route_metrics, now).await {
                        SessionOutcome::Valid(session, set_cookies) => {
                            Some(Identity::new(Credential::Session(session), set_cookies))
                        }
                        SessionOutcome::None(clear) => {
                            clear_cookies = clear;
                            None
                        }
                    }
                }
                AuthMethod::AuthorizationCode => {
                    let provider = spec.providers[0];
                    // A redirect to the provider starts an attempt whose callback costs a
                    // token call: the client's limit applies.
                    if can_follow_redirect(req)
                        && let Err(limited) = ratelimit::check(self.login_starts.as_ref(), client)
                    {
                        return Err(too_many(req, limited, "sign-in attempts"));
                    }
                    return Err(self.start_login(
                        provider,
                        &spec.realm,
                        req,
                        return_to,
                        clear_cookies,
                        now,
                    ));
                }
                AuthMethod::Bearer => match token {
                    // An opaque token is left to introspection when the route accepts it.
                    Some(t)
                        if !bearer::looks_like_jwt(t)
                            && spec.methods.contains(&AuthMethod::Introspection) =>
                    {
                        None
                    }
                    Some(t) => {
                        match bearer::verify_jwt(&self.providers, &self.tokens, spec, t, now).await
                        {
                            Ok(v) => Some(Identity::new(Credential::Token(v), Vec::new())),
                            Err(e) => return self.invalid_token(spec, req, e),
                        }
                    }
                    None => None,
                },
                AuthMethod::Introspection => match token {
                    Some(t) => {
                        let admit = || ratelimit::check(self.introspections.as_ref(), client);
                        match bearer::introspect(&self.providers, &self.tokens, spec, t, now, admit)
                            .await
                        {
                            Ok(v) => Some(Identity::new(Credential::Token(v), Vec::new())),
                            Err(bearer::TokenError::RateLimited(l)) => {
                                return Err(too_many(req, l, "token checks"));
                            }
                            Err(e) => return self.invalid_token(spec, req, e),
                        }
                    }
                    None => None,
                },
            };
            if let Some(identity) = found {
                return self.authorize(spec, req, identity).map(Some);
            }
        }
        // No credential at all.
        if spec.anonymous.is_some() {
            return self.anonymous(spec).map(Some);
        }
        if spec.optional {
            return Ok(None);
        }
        let reply = self.unauthorized(spec, req, None);
        Err(clear_cookies
            .into_iter()
            .fold(reply, |r, c| r.with_header(http::header::SET_COOKIE, c)))
    }

    /// A presented token failed: 401 `invalid_token` (or the anonymous consumer, if configured).
    fn invalid_token(
        &self,
        spec: &RouteAuth,
        req: &RequestHeader,
        e: bearer::TokenError,
    ) -> Result<Option<Identity>, Reply> {
        if spec.anonymous.is_some() {
            return self.anonymous(spec).map(Some);
        }
        Err(self.unauthorized(spec, req, Some(e)))
    }

    /// RFC 6750 401: `Bearer realm=...`, plus `error="invalid_token"` when a token was refused.
    fn unauthorized(
        &self,
        spec: &RouteAuth,
        req: &RequestHeader,
        e: Option<bearer::TokenError>,
    ) -> Reply {
        let html = crate::http::responses::wants_html(&req.headers);
        let realm = quote(&spec.realm);
        let (challenge, code, message) = match &e {
            Some(err) => (
                format!(
                    "Bearer realm=\"{realm}\", error=\"invalid_token\", error_description=\"{}\"",
                    quote(&err.to_string())
                ),
                "invalid_token",
                err.to_string(),
            ),
            None => (
                format!("Bearer realm=\"{realm}\""),
                "unauthorized",
                "This address needs credentials: send an access token in the Authorization header (Authorization: Bearer <token>).".to_owned(),
            ),
        };
        Reply::error(401, code, "Sign-in required", &message, html)
            .with_header(http::header::WWW_AUTHENTICATE, header_value(&challenge))
    }

    /// Applies the route's rules and consumer mapping to an authenticated request.
    fn authorize(
        &self,
        spec: &RouteAuth,
        req: &RequestHeader,
        mut id: Identity,
    ) -> Result<Identity, Reply> {
        let is_token = matches!(id.credential, Credential::Token(_));
        // The credential is shared (Arc): borrow its claims from a clone of the handle rather
        // than copying the map on every request. A session keeps its parsed claims once asked
        // for them, so they are asked for only if the route reads them.
        let credential_handle = spec.reads_claims().then(|| id.credential.clone());
        let empty = serde_json::Map::new();
        let claims = credential_handle
            .as_ref()
            .and_then(Credential::claims)
            .unwrap_or(&empty);
        if let Some(rule) = rules::first_failure(&spec.rules, claims, is_token) {
            return Err(self.forbidden(
                spec,
                req,
                is_token,
                &format!(
                    "Your account does not meet this service's {} rule.",
                    rule.trim_end_matches("_required")
                ),
            ));
        }
        if let Some(mapping) = &spec.consumer {
            match consumers::find(&self.consumers, mapping, claims) {
                Some(i) => {
                    if !consumers::in_groups(&self.consumers[i], &mapping.groups_required) {
                        return Err(self.forbidden(
                            spec,
                            req,
                            is_token,
                            "Your account is not in a group allowed to use this service.",
                        ));
                    }
                    id.consumer = Some(i);
                }
                None if mapping.optional => {}
                None => {
                    return Err(self.forbidden(
                        spec,
                        req,
                        is_token,
                        "Your account is not registered as a consumer of this service.",
                    ));
                }
            }
        }
        let credential = spec
            .credential_claim
            .as_ref()
            .and_then(|p| rules::claim(claims, p))
            .and_then(crate::session::claim_string);
        let groups = spec
            .authenticated_groups_claim
            .as_ref()
            .and_then(|p| rules::claim(claims, p))
            .and_then(crate::session::claim_string);
        id.extra_headers = consumers::headers(
            id.consumer.map(|i| &self.consumers[i]),
            false,
            credential,
            groups,
        );
        Ok(id)
    }

    /// The anonymous consumer, for a request whose authentication failed.
    fn anonymous(&self, spec: &RouteAuth) -> Result<Identity, Reply> {
        let consumer = spec.anonymous.and_then(|i| self.consumers.get(i));
        let mut id = Identity::new(Credential::Anonymous, Vec::new());
        id.consumer = spec.anonymous;
        id.extra_headers = consumers::headers(consumer, true, None, None);
        Ok(id)
    }

    /// 403 for a failed rule: RFC 6750 `insufficient_scope` for tokens, a page for browsers (or
    /// the configured `forbidden_redirect_uri`).
    fn forbidden(
        &self,
        spec: &RouteAuth,
        req: &RequestHeader,
        is_token: bool,
        message: &str,
    ) -> Reply {
        let html = crate::http::responses::wants_html(&req.headers);
        if html
            && !is_token
            && let Some(target) = &spec.forbidden_redirect_uri
        {
            return Reply::redirect(header_value(target));
        }
        let reply = if html {
            let logout = spec
                .providers
                .first()
                .and_then(|&p| self.provider(p))
                .map_or("/oauth2/logout", |p| p.logout_path.as_str());
            Reply::page(
                403,
                "Access denied",
                &format!(
                    "{message} Ask your administrator for access, or sign in with another account."
                ),
                &[
                    Action::Link("Back to the start page", "/"),
                    Action::Post("Sign out", logout),
                ],
            )
        } else {
            Reply::error(403, "insufficient_scope", "Access denied", message, false)
        };
        if is_token {
            let challenge = format!(
                "Bearer realm=\"{}\", error=\"insufficient_scope\"",
                quote(&spec.realm)
            );
            reply.with_header(http::header::WWW_AUTHENTICATE, header_value(&challenge))
        } else {
            reply
        }
    }

    /// Answers a request that needs a login: a redirect to the provider for browsers, 401 for
    /// requests that cannot follow one (API calls, XHR, non-GET), 503 while the provider is
    /// unreachable.
    fn start_login(
        &self,
        index: usize,
        realm: &str,
        req: &RequestHeader,
        return_to: &str,
        mut cookies: Vec<http::HeaderValue>,
        now: u64,
    ) -> Reply {
        let Some(cfg) = self.provider(index) else {
            return Reply::error(
                500,
                "misconfigured",
                "Server error",
                "The route names an unknown provider.",
                true,
            );
        };
        let html = crate::http::responses::wants_html(&req.headers);
        let reply =
            if !can_follow_redirect(req) {
                Reply::error(
                    401,
                    "login_required",
                    "Sign-in required",
                    "This request needs a signed-in session.",
                    html,
                )
                .with_header(
                    http::header::WWW_AUTHENTICATE,
                    header_value(&format!("Bearer realm=\"{}\"", quote(realm))),
                )
            } else if let Some(d) = self.providers.get(index) {
                let return_to = redirect::same_origin_path(return_to)
                    .unwrap_or("/")
                    .to_owned();
                let (url, st) = authorization_request(&d, cfg, return_to, now);
                let attrs = self.attrs(index);
                cookies.extend(self.login.prune(&req.headers, attrs, now));
                cookies.extend(self.login.set(&st, attrs));
                metrics::login(&cfg.name, "started");
                match http::HeaderValue::from_str(&url) {
                    Ok(location) => Reply::redirect(location),
                    Err(_) => Reply::error(
                        500,
                        "bad_authorization_url",
                        "Server error",
                        "The sign-in URL is invalid.",
                        html,
                    ),
                }
            } else {
                metrics::login(&cfg.name, "provider_unavailable");
                Reply::error(
                503,
                "idp_unavailable",
                "Sign-in is temporarily unavailable",
                "The identity provider cannot be reached right now. Please try again in a minute.",
                html,
            )
            .with_header(http::header::RETRY_AFTER, http::HeaderValue::from_static("30"))
            };
        cookies
            .into_iter()
            .fold(reply, |r, c| r.with_header(http::header::SET_COOKIE, c))
    }

    /// Sets the identity headers of a request to an authenticated route (scrubbed before).
    /// `Authorization` is the gateway's there: a validated bearer token stays, anything else the
    /// client sent is removed (optional mode without a credential, the anonymous consumer, a
    /// session, which may set its own below).
    pub fn identify(&self, id: Option<&Identity>, req: &mut RequestHeader) -> pingora::Result<()> {
        if !id.is_some_and(|id| matches!(id.credential, Credential::Token(_))) {
            req.remove_header(&http::header::AUTHORIZATION);
        }
        let Some(id) = id else { return Ok(()) };
        let set = match &id.credential {
            Credential::Session(s) => self
                .providers
                .list
                .iter()
                .find(|p| *p.config.name == *s.data.provider)
                .map(|p| {
                    s.upstream_headers
                        .get_or_init(|| identity::session_headers(&p.config, s).into())
                }),
            Credential::Token(t) => self.provider(t.provider).map(|cfg| {
                t.upstream_headers
                    .get_or_init(|| identity::token_headers(cfg, t).into())
            }),
            Credential::Anonymous => None,
        };
        for (name, value) in set.into_iter().flatten().chain(&id.extra_headers) {
            req.insert_header(name.clone(), value.clone())?;
        }
        Ok(())
    }

    /// Drops expired sessions, refresh results and used login states.
    pub fn sweep(&self) {
        let now = now();
        self.store.sweep(now);
        self.used_states.retain(|_, until| *until > now);
        self.inflight
            .retain(|_, f| f.started.elapsed() < REFRESH_FAILURE_MEMORY * 6);
    }
}

/// 429 for a client over one of the limits on requests that reach the provider.
pub fn too_many(req: &RequestHeader, limited: Limited, what: &str) -> Reply {
    metrics::refused("rate_limited");
    let html = crate::http::responses::wants_html(&req.headers);
    let wait = limited.retry_after;
    Reply::error(
        429,
        "rate_limited",
        "Too many requests",
        &format!("Too many {what} from your address. Please try again in {wait} seconds."),
        html,
    )
    .with_header(http::header::RETRY_AFTER, http::HeaderValue::from(wait))
}

/// A CORS preflight: `OPTIONS` with `Origin` and `Access-Control-Request-Method`.
pub fn is_preflight(req: &RequestHeader) -> bool {
    req.method == http::Method::OPTIONS
        && req.headers.contains_key(http::header::ORIGIN)
        && req
            .headers
            .contains_key(http::header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// The token of `Authorization: Bearer <token>` (scheme case-insensitive), if any.
pub fn bearer_token(headers: &http::HeaderMap) -> Option<&str> {
    let v = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Escapes a value for a quoted-string in `WWW-Authenticate`.
fn quote(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control())
        .map(|c| if c == '"' || c == '\\' { '\'' } else { c })
        .collect()
}

fn header_value(s: &str) -> http::HeaderValue {
    http::HeaderValue::from_str(s).unwrap_or_else(|_| http::HeaderValue::from_static("invalid"))
}

/// A request a browser made by navigating (it can follow a redirect to the provider).
pub fn can_follow_redirect(req: &RequestHeader) -> bool {
    let method_ok = req.method == http::Method::GET || req.method == http::Method::HEAD;
    let xhr = req.headers.contains_key("x-requested-with");
    let accept = req
        .headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let json_only = accept.contains("application/json") && !accept.contains("text/html");
    method_ok && !xhr && !json_only
}

/// Sweeps expired sessions once a minute.
pub struct SessionSweeper(pub Arc<OidcAuth>);

#[async_trait]
impl BackgroundService for SessionSweeper {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tokio::select! {
                _ = tick.tick() => self.0.sweep(),
                _ = shutdown.changed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build(method, b"/", None).unwrap();
        for (k, v) in headers {
            r.insert_header(k.to_string(), *v).unwrap();
        }
        r
    }

    #[test]
    fn bearer_tokens_and_preflights_are_recognised() {
        let mut h = http::HeaderMap::new();
        h.insert("authorization", "bearer abc.def.ghi".parse().unwrap());
        assert_eq!(bearer_token(&h), Some("abc.def.ghi"));
        h.insert("authorization", "Basic Zm9vOmJhcg==".parse().unwrap());
        assert_eq!(bearer_token(&h), None);
        h.insert("authorization", "Bearer ".parse().unwrap());
        assert_eq!(bearer_token(&h), None);
        let pre = req(
            "OPTIONS",
            &[
                ("origin", "https://a.example"),
                ("access-control-request-method", "POST"),
            ],
        );
        assert!(is_preflight(&pre));
        assert!(!is_preflight(&req(
            "OPTIONS",
            &[("origin", "https://a.example")]
        )));
    }

    #[test]
    fn only_navigations_are_redirected_to_login() {
        assert!(can_follow_redirect(&req(
            "GET",
            &[("accept", "text/html,*/*")]
        )));
        assert!(can_follow_redirect(&req("GET", &[])));
        assert!(!can_follow_redirect(&req("POST", &[])));
        assert!(!can_follow_redirect(&req(
            "GET",
            &[("accept", "application/json")]
        )));
        assert!(!can_follow_redirect(&req(
            "GET",
            &[("x-requested-with", "XMLHttpRequest")]
        )));
    }
}
