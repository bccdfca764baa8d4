//! What a protected route demands and what a request proves. `authenticate` is the hot path:
//! one in-memory session lookup, the timeouts, and (rarely) a single-flight token refresh. It
//! never calls the identity provider for a session whose access token is still valid.

pub mod endpoints;
pub mod identity;

use crate::config::{Config, Provider, SameSite, SessionSettings};
use crate::http::cookies::CookieAttrs;
use crate::http::headers::HeaderSet;
use crate::http::redirect;
use crate::http::responses::Reply;
use crate::metrics::{self, RouteMetrics, SessionResult};
use crate::oidc::login::authorization_request;
use crate::oidc::provider::Providers;
use crate::oidc::state::LoginCookies;
use crate::session::store::{Lookup, SessionStore};
use crate::session::{Session, Sid, now};
use async_trait::async_trait;
use dashmap::DashMap;
use pingora::http::RequestHeader;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a failed refresh is remembered, so requests of that session fail fast meanwhile.
const REFRESH_FAILURE_MEMORY: Duration = Duration::from_secs(10);

/// An authenticated request.
#[derive(Debug)]
pub struct Identity {
    /// The session that proved it.
    pub session: Arc<Session>,
    /// `Set-Cookie` headers for the response (renewed or refreshed cookie-store sessions).
    pub set_cookies: Vec<http::HeaderValue>,
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
            scrub: identity::scrub_set(&config.providers),
            providers,
            settings,
            attrs,
            inflight: DashMap::new(),
            used_states: DashMap::new(),
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

    /// Authenticates a request to a route protected by provider `index`. `return_to` is the
    /// canonical path and query, where the browser returns after a login.
    pub async fn authenticate(
        &self,
        index: usize,
        req: &RequestHeader,
        return_to: &str,
        route_metrics: &RouteMetrics,
    ) -> Result<Identity, Reply> {
        let now = now();
        let Some(cfg) = self.provider(index) else {
            return Err(Reply::error(
                500,
                "misconfigured",
                "Server error",
                "The route names an unknown provider.",
                true,
            ));
        };
        let attrs = self.attrs(index);
        let (session, cookies_present) = match self.store.lookup(&req.headers) {
            Lookup::Absent => {
                route_metrics.session(SessionResult::Miss);
                return Err(self.start_login(index, req, return_to, Vec::new(), now));
            }
            Lookup::Invalid { cookies_present } => {
                route_metrics.session(SessionResult::Invalid);
                let clear = self.store.expire_chunks(0, cookies_present, attrs);
                return Err(self.start_login(index, req, return_to, clear, now));
            }
            Lookup::Found {
                session,
                cache_hit,
                cookies_present,
            } => {
                metrics::session_cache(cache_hit);
                (session, cookies_present)
            }
        };
        // A session from another provider never satisfies this route.
        if session.data.provider != cfg.name {
            route_metrics.session(SessionResult::Invalid);
            return Err(self.start_login(index, req, return_to, Vec::new(), now));
        }
        if session.check(now, &self.store.timeouts).is_err() {
            route_metrics.session(SessionResult::Expired);
            self.store.destroy(&session);
            let clear = self.store.expire_chunks(0, cookies_present, attrs);
            return Err(self.start_login(index, req, return_to, clear, now));
        }
        session.touch(now);
        route_metrics.session(SessionResult::Hit);

        if session.access_token_expired(now, cfg.leeway) {
            if session.data.refresh_token.is_some()
                && let Some((fresh, pairs)) = self.refresh(index, &session).await
            {
                let set_cookies = self.cookies_for(&pairs, cookies_present, attrs);
                return Ok(Identity {
                    session: fresh,
                    set_cookies,
                });
            }
            if session.access_token_expired(now, Duration::ZERO) {
                // Expired and not refreshable: a new login.
                return Err(self.start_login(index, req, return_to, Vec::new(), now));
            }
            // Refresh failed but the token is still valid for a moment: serve the request.
        } else if session.needs_renewal(now, &self.store.timeouts) {
            let mut data = session.data.clone();
            data.renewed_at = now;
            if let Ok((fresh, pairs)) = self.store.update(session.sid, data) {
                let set_cookies = self.cookies_for(&pairs, cookies_present, attrs);
                return Ok(Identity {
                    session: fresh,
                    set_cookies,
                });
            }
        }
        Ok(Identity {
            session,
            set_cookies: Vec::new(),
        })
    }

    fn cookies_for(
        &self,
        pairs: &[(String, String)],
        cookies_present: usize,
        attrs: &CookieAttrs,
    ) -> Vec<http::HeaderValue> {
        // The memory store's cookie (the id) does not change when the session does.
        if self.store.cookie_carries_session() {
            self.store.cookie_headers(pairs, cookies_present, attrs)
        } else {
            Vec::new()
        }
    }

    /// Refreshes the session's tokens once, however many requests of the session ask at the
    /// same time (a rotating refresh token may be used only once).
    async fn refresh(&self, index: usize, session: &Arc<Session>) -> RefreshOutcome {
        let flight = {
            let mut entry = self.inflight.entry(session.sid).or_insert_with(|| {
                Arc::new(Flight {
                    started: Instant::now(),
                    result: tokio::sync::OnceCell::new(),
                })
            });
            // A remembered failure expires; a finished success is never reused (the store has
            // the refreshed session by then).
            let stale = match entry.result.get() {
                Some(None) => entry.started.elapsed() > REFRESH_FAILURE_MEMORY,
                Some(Some(_)) => true,
                None => false,
            };
            if stale {
                *entry = Arc::new(Flight {
                    started: Instant::now(),
                    result: tokio::sync::OnceCell::new(),
                });
            }
            entry.clone()
        };
        let name = self
            .provider(index)
            .map(|p| p.name.clone())
            .unwrap_or_default();
        let outcome = flight
            .result
            .get_or_init(|| async {
                match crate::oidc::refresh::refresh(&self.providers, index, &session.data, now())
                    .await
                {
                    Ok(data) => match self.store.update(session.sid, data) {
                        Ok((fresh, pairs)) => {
                            metrics::token_refresh(&name, "succeeded");
                            Some((fresh, pairs))
                        }
                        Err(e) => {
                            metrics::token_refresh(&name, "session_too_large");
                            tracing::warn!(provider = %name, "refreshed session not stored: {e}");
                            None
                        }
                    },
                    Err(e) => {
                        metrics::token_refresh(&name, "failed");
                        tracing::warn!(provider = %name, "token refresh failed: {e}");
                        None
                    }
                }
            })
            .await
            .clone();
        if outcome.is_some() {
            self.inflight
                .remove_if(&session.sid, |_, f| Arc::ptr_eq(f, &flight));
        }
        outcome
    }

    /// Answers a request that needs a login: a redirect to the provider for browsers, 401 for
    /// requests that cannot follow one (API calls, XHR, non-GET), 503 while the provider is
    /// unreachable.
    fn start_login(
        &self,
        index: usize,
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
                    http::HeaderValue::from_str(&format!("Bearer realm=\"{}\"", cfg.name))
                        .unwrap_or_else(|_| http::HeaderValue::from_static("Bearer")),
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

    /// Drops expired sessions, refresh results and used login states.
    pub fn sweep(&self) {
        let now = now();
        self.store.sweep(now);
        self.used_states.retain(|_, until| *until > now);
        self.inflight
            .retain(|_, f| f.started.elapsed() < REFRESH_FAILURE_MEMORY * 6);
    }
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
