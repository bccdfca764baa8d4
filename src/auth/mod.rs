//! What a protected route demands and what a request proves. [`Authenticator::authenticate`]
//! tries the route's methods in order (session, browser login, bearer JWT, introspection), then
//! `authorize` applies its claim rules and consumer mapping. The session and cached-token paths
//! make no call to the identity provider. A refusal is returned as data ([`Denied`]) and
//! rendered in one place (`denial.rs`).

pub mod bearer;
mod certificate_bound;
pub mod consumers;
pub mod denial;
pub mod dpop;
mod exchange;
pub mod identity;
pub mod policy;
pub mod preserve_post;
pub mod refresh;
mod request;
pub mod rules;
mod session_method;
mod sign_in;
pub mod signed_identity;
mod step_up;

pub use denial::{Denial, Denied};
pub(crate) use denial::{refusal, too_many};
pub use request::{bearer_token, can_follow_redirect, is_preflight};

use crate::claims;
use crate::clock::now;
use crate::config::{AuthMethod, Config, Consumer, Provider, RouteAuth, SameSite, SessionSettings};
use crate::config::{ConsumerId, ProviderId};
use crate::fleet::Fleet;
use crate::http::cookies::CookieAttrs;
use crate::metrics::{self, RouteMetrics};
use crate::oidc::persisted::MetadataFiles;
use crate::oidc::provider::Providers;
use crate::oidc::state::LoginCookies;
use crate::ratelimit::{self, Ceiling, Limit};
use crate::session::Session;
use crate::session::store::{Sessions, SetCookies};
use bearer::{TokenCaches, VerifiedToken};
use pingora::http::RequestHeader;
use refresh::Refresher;
use session_method::SessionOutcome;
use std::net::IpAddr;
use std::sync::Arc;

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

    /// Where its claims, as policies read them, are kept once built.
    pub fn policy_claims(&self) -> Option<&std::sync::OnceLock<Box<cel_interpreter::Value>>> {
        match self {
            Credential::Session(s) => Some(&s.policy_claims),
            Credential::Token(t) => Some(&t.policy_claims),
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
    pub set_cookies: SetCookies,
    /// Index of the mapped `[[consumers]]` entry.
    pub consumer: Option<ConsumerId>,
    /// Kong's consumer and credential headers for the upstream.
    pub extra_headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// The token exchanged for the route's upstream (`token_exchange`), sent in place of the
    /// user's own.
    pub upstream_token: Option<Arc<crate::oidc::token_exchange::Exchanged>>,
}

impl Identity {
    fn new(credential: Credential, set_cookies: SetCookies) -> Identity {
        Identity {
            credential,
            set_cookies,
            consumer: None,
            extra_headers: Vec::new(),
            upstream_token: None,
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

/// Authentication and authorization of requests to protected routes: browser sessions and
/// sign-in, bearer JWTs, introspection, consumers, and the identity the upstream is told. The
/// gateway's own endpoints (`crate::endpoints`) use it; nothing reaches into its fields.
pub struct Authenticator {
    /// Configured providers and their discovery state.
    providers: Arc<Providers>,
    /// Session storage.
    store: Sessions,
    /// The fleet's shared state (`[redis]`), when configured.
    fleet: Option<Arc<Fleet>>,
    login: LoginCookies,
    settings: SessionSettings,
    /// Cookie attributes per provider (`Secure` follows the provider's redirect URI).
    attrs: Vec<CookieAttrs>,
    refresher: Refresher,
    /// Verified bearer tokens and introspection answers.
    tokens: TokenCaches,
    /// Tokens exchanged for upstreams (`token_exchange`).
    exchanges: exchange::Exchanges,
    /// `[[consumers]]`
    consumers: Vec<Consumer>,
    /// Login starts per client and minute.
    login_starts: Option<Limit>,
    /// Introspection cache misses per client and minute.
    introspections: Option<Limit>,
    /// Calls to the providers that clients cause (token exchanges, introspections), per second.
    provider_calls: Option<Ceiling>,
    /// Signs `[identity_assertion]` JWTs.
    identity_signer: Option<signed_identity::IdentitySigner>,
    /// Forms posted without a session, waiting for their sign-in (`preserve_post`).
    posts: preserve_post::PreservedPosts,
    /// DPoP proofs' `jti`s, used once (the fleet's, with `[redis]`).
    proofs: crate::kept::Kept,
}

impl Authenticator {
    /// Builds the authenticator when the configuration has providers.
    pub fn new(
        config: &Config,
        fleet: Option<Arc<Fleet>>,
    ) -> Result<Option<Authenticator>, String> {
        let Some(settings) = config.session.clone() else {
            return Ok(None);
        };
        if config.providers.is_empty() {
            return Ok(None);
        }
        let mut providers = Providers::new(&config.providers)?;
        if let Some(dir) = &config.server.state_dir {
            providers.persist_to(MetadataFiles::new(dir, &settings.secrets));
        }
        let providers = Arc::new(providers);
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
        // Kept forms live where the sessions do: in Redis, the callback may reach any instance.
        let posts = preserve_post::PreservedPosts::new(
            &settings.secrets,
            fleet
                .clone()
                .filter(|_| settings.store == crate::config::SessionStoreKind::Redis),
        );
        Ok(Some(Authenticator {
            posts,
            proofs: crate::kept::Kept::new(&settings.secrets, fleet.clone()),
            login: LoginCookies::new(
                &settings.secrets,
                &settings.cookie_name,
                settings.login_timeout,
                settings.max_login_cookies,
            ),
            store: Sessions::new(
                &settings,
                fleet.as_ref(),
                config.server.state_dir.as_deref(),
            )?,
            fleet,
            providers,
            settings,
            attrs,
            refresher: Refresher::default(),
            tokens: TokenCaches::new(settings_cache_size),
            exchanges: exchange::Exchanges::new(settings_cache_size),
            consumers: config.consumers.clone(),
            login_starts: Limit::new(config.server.login_rate_limit),
            introspections: Limit::new(config.server.introspection_rate_limit),
            provider_calls: Ceiling::new(config.server.provider_call_limit),
            identity_signer: config
                .identity_assertion
                .as_ref()
                .map(|a| {
                    signed_identity::IdentitySigner::new(a, config.server.state_dir.as_deref())
                })
                .transpose()?,
        }))
    }

    /// The configured providers and their discovery state.
    pub fn providers(&self) -> &Arc<Providers> {
        &self.providers
    }

    /// The session store.
    pub fn sessions(&self) -> &Sessions {
        &self.store
    }

    /// The configuration of provider `index`.
    pub(crate) fn provider(&self, index: ProviderId) -> Option<&Provider> {
        self.providers.handle(index).map(|h| &h.config)
    }

    /// The login cookies that carry a sign-in from its start to its callback.
    pub(crate) fn login(&self) -> &LoginCookies {
        &self.login
    }

    /// The forms kept while their sign-in runs.
    pub(crate) fn kept_posts(&self) -> &preserve_post::PreservedPosts {
        &self.posts
    }

    /// The instance's ceiling on calls to providers that clients cause.
    pub(crate) fn provider_calls(&self) -> Option<&Ceiling> {
        self.provider_calls.as_ref()
    }

    /// The signer of `[identity_assertion]` JWTs, when configured.
    pub(crate) fn identity_signer(&self) -> Option<&signed_identity::IdentitySigner> {
        self.identity_signer.as_ref()
    }

    /// Why the gateway's last discovery of provider `index` failed, if it did.
    fn last_error(&self, index: ProviderId) -> Option<Arc<str>> {
        self.providers.handle(index).and_then(|p| p.last_error())
    }

    /// The attributes of cookies for provider `index`'s sign-ins and sessions.
    pub(crate) fn cookie_attrs(&self, index: ProviderId) -> &CookieAttrs {
        // `new` builds one entry per provider and there is at least one provider.
        &self.attrs[index.index().min(self.attrs.len() - 1)]
    }

    /// Whether `cookie` is one of the gateway's (session or login), never to be sent upstream.
    pub fn is_own_cookie(&self, cookie: &str) -> bool {
        self.store.is_session_cookie(cookie) || self.login.is_login_cookie(cookie)
    }

    /// Authenticates a request to a protected route, trying the route's methods in order, then
    /// applies the route's rules and consumer mapping. `Ok(None)`: proxy without identity
    /// (`mode = "optional"` without a credential, or a CORS preflight when allowed); `Err`: why
    /// not, to be rendered by the caller.
    /// `client` is the client's address (after `trusted_proxies`), for the limits on requests
    /// that reach the provider; `return_to` is the canonical path and query, where the browser
    /// returns after a login.
    pub async fn authenticate(
        &self,
        spec: &RouteAuth,
        req: &RequestHeader,
        client: Option<IpAddr>,
        peer_cert: Option<&[u8]>,
        return_to: &str,
        route_metrics: &RouteMetrics,
    ) -> Result<Option<Identity>, Denied> {
        if !spec.run_on_preflight && is_preflight(req) {
            return Ok(None);
        }
        let now = now();
        let presented = dpop::presented(&req.headers, spec.dpop.is_some());
        let token = presented.map(|(_, t)| t);
        // A DPoP proof is checked (and its jti spent) before its token: what the proof's key is
        // bound to is compared once the token is verified.
        let proof_key = match presented {
            Some((dpop::Scheme::Dpop, t)) => {
                Some(Box::pin(self.dpop_proof(spec, req, t, return_to, now)).await?)
            }
            _ => None,
        };
        let mut clear_cookies = Vec::new();
        for method in &spec.methods {
            let found = match method {
                AuthMethod::Session => {
                    match self.session_method(spec, req, route_metrics, now).await {
                        SessionOutcome::Valid(session, set_cookies) => {
                            Some(Identity::new(Credential::Session(session), set_cookies))
                        }
                        SessionOutcome::NoSession { clear } => {
                            clear_cookies = clear;
                            None
                        }
                        SessionOutcome::Unavailable => {
                            return Err(Denial::StoreUnavailable.into());
                        }
                    }
                }
                // Optional routes, and routes with an anonymous consumer, pass a request
                // without a credential as it is: nobody is sent to sign in there.
                AuthMethod::AuthorizationCode if spec.optional || spec.anonymous.is_some() => None,
                AuthMethod::AuthorizationCode => {
                    // Boxed: a sign-in start (and its pushed request) is not the hot path.
                    let start = self.start_login(spec, req, client, return_to, now, None);
                    let denial = Box::pin(start).await;
                    return Err(denial.with_cookies(clear_cookies));
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
                            Err(e) => return self.invalid_token(spec, e),
                        }
                    }
                    None => None,
                },
                AuthMethod::Introspection => match token {
                    Some(t) => {
                        let admit = || {
                            ratelimit::admit(
                                self.introspections.as_ref(),
                                self.provider_calls.as_ref(),
                                client,
                            )
                        };
                        match bearer::introspect(&self.providers, &self.tokens, spec, t, now, admit)
                            .await
                        {
                            Ok(v) => Some(Identity::new(Credential::Token(v), Vec::new())),
                            Err(bearer::TokenError::Refused(refused)) => {
                                return Err(refusal(refused, "token checks"));
                            }
                            Err(e) => return self.invalid_token(spec, e),
                        }
                    }
                    None => None,
                },
            };
            if let Some(identity) = found {
                if let Credential::Token(v) = &identity.credential {
                    let scheme = presented.map(|(scheme, _)| scheme);
                    self.sender_constrained(spec, v, scheme, proof_key.as_deref(), peer_cert)?;
                }
                if let Some(step) = &spec.step_up
                    && let Some(short) = self.step_up_shortfall(spec, step, &identity, now)
                {
                    tracing::debug!(
                        realm = %spec.realm,
                        reason = short.reason(),
                        "the credential falls short of the route's step-up"
                    );
                    let stepped = self.step_up(spec, step, identity, req, client, return_to);
                    return Err(Box::pin(stepped).await);
                }
                let authorized = self.authorize(spec, identity, req, return_to, now)?;
                let Some(wanted) = &spec.token_exchange else {
                    return Ok(Some(authorized));
                };
                let exchanged = self.exchange_for_upstream(wanted, authorized, token, client, now);
                return Box::pin(exchanged).await.map(Some);
            }
        }
        // No credential at all.
        if spec.anonymous.is_some() {
            return Ok(Some(self.anonymous(spec)));
        }
        if spec.optional {
            return Ok(None);
        }
        Err(Denied::from(Denial::Unauthorized {
            realm: spec.realm.clone(),
        })
        .with_cookies(clear_cookies))
    }

    /// A presented token failed: 401 `invalid_token` (or the anonymous consumer, if configured);
    /// one that cannot be checked now (the provider is unreachable) gets 503 with `Retry-After`,
    /// so a client does not take a good token for a bad one.
    fn invalid_token(
        &self,
        spec: &RouteAuth,
        error: bearer::TokenError,
    ) -> Result<Option<Identity>, Denied> {
        if matches!(error, bearer::TokenError::Unavailable) {
            return Err(Denial::ProviderUnavailable(self.last_error(spec.providers[0])).into());
        }
        if spec.anonymous.is_some() {
            return Ok(Some(self.anonymous(spec)));
        }
        Err(Denial::InvalidToken {
            realm: spec.realm.clone(),
            error,
        }
        .into())
    }

    /// Applies the route's rules and consumer mapping to an authenticated request.
    fn authorize(
        &self,
        spec: &RouteAuth,
        mut id: Identity,
        req: &RequestHeader,
        target: &str,
        now: u64,
    ) -> Result<Identity, Denied> {
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
                is_token,
                format!(
                    "Your account does not meet this service's {} rule.",
                    rule.trim_end_matches("_required")
                ),
            ));
        }
        if let Some(mapping) = &spec.consumer {
            match consumers::find(&self.consumers, mapping, claims) {
                Some((i, consumer)) => {
                    if !consumers::in_groups(consumer, &mapping.groups_required) {
                        return Err(self.forbidden(
                            spec,
                            is_token,
                            "Your account is not in a group allowed to use this service.".into(),
                        ));
                    }
                    id.consumer = Some(i);
                }
                None if mapping.optional => {}
                None => {
                    return Err(self.forbidden(
                        spec,
                        is_token,
                        "Your account is not registered as a consumer of this service.".into(),
                    ));
                }
            }
        }
        if spec.allow_if.is_some() {
            self.check_policy(spec, &id, claims, req, target, now)?;
        }
        let credential = spec
            .credential_claim
            .as_ref()
            .and_then(|p| claims::lookup(claims, p))
            .and_then(claims::to_text);
        let groups = spec
            .authenticated_groups_claim
            .as_ref()
            .and_then(|p| claims::lookup(claims, p))
            .and_then(claims::to_text);
        id.extra_headers = consumers::headers(
            id.consumer.and_then(|i| self.consumers.get(i.index())),
            false,
            credential,
            groups,
        );
        Ok(id)
    }

    /// The anonymous consumer, for a request whose authentication failed.
    fn anonymous(&self, spec: &RouteAuth) -> Identity {
        let consumer = spec.anonymous.and_then(|i| self.consumers.get(i.index()));
        let mut id = Identity::new(Credential::Anonymous, Vec::new());
        id.consumer = spec.anonymous;
        id.extra_headers = consumers::headers(consumer, true, None, None);
        id
    }

    /// A failed rule or consumer mapping.
    fn forbidden(&self, spec: &RouteAuth, token: bool, message: String) -> Denied {
        let logout_path = spec
            .providers
            .first()
            .and_then(|&p| self.provider(p))
            .map_or("/oauth2/logout", |p| p.logout_path.as_str())
            .to_owned();
        Denial::Forbidden {
            realm: spec.realm.clone(),
            message,
            token,
            redirect: spec.forbidden_redirect_uri.clone(),
            logout_path,
        }
        .into()
    }

    /// The scheme the route's sign-in comes back on (its provider's `redirect_uri`): the
    /// site's own, as browsers reach it.
    pub fn site_scheme(&self, spec: &RouteAuth) -> &str {
        spec.providers
            .first()
            .and_then(|&i| self.provider(i))
            .and_then(|c| c.redirect_uri.split_once("://"))
            .map_or("https", |(scheme, _)| scheme)
    }

    /// Drops expired sessions, refresh results, kept forms and exchanged tokens.
    pub fn sweep(&self) {
        let now = now();
        self.store.sweep(now);
        self.posts.sweep(now);
        self.exchanges.sweep(now);
        self.refresher.sweep();
        self.proofs.sweep();
    }
}
