//! The sign-in callback: the provider sends the browser back with a code and the state of a
//! sign-in this browser started. Every way it can fail is a [`CallbackError`], counted, logged
//! and rendered in one place.

use super::Endpoints;
use crate::auth::preserve_post;
use crate::clock::now;
use crate::config::Provider;
use crate::config::ProviderId;
use crate::fleet::FleetError;
use crate::http::responses::{Action, Reply};
use crate::http::{cookies, redirect};
use crate::metrics;
use crate::oidc::login::{LoginError, complete};
use crate::oidc::state::{LoginState, StateError};
use crate::ratelimit;
use crate::session::store::{Loaded, SaveError};
use pingora::http::RequestHeader;
use std::net::IpAddr;
use std::time::Duration;

/// Most query parameters a callback may carry.
const MAX_CALLBACK_PARAMS: usize = 16;

/// Why a callback did not sign the user in.
#[derive(Debug)]
pub enum CallbackError {
    /// Not a GET.
    MethodNotAllowed,
    /// Repeated parameters, or too many.
    BadParameters(String),
    /// No `code` or no `state` (what is missing, for the page).
    Incomplete(&'static str),
    /// The provider answered with an `error` parameter.
    ProviderRefused(String),
    /// The login cookie of the state is missing, does not match, or has expired.
    State(StateError),
    /// The state belongs to another provider's sign-in.
    OtherProvider,
    /// The client's limit or the instance's ceiling on token calls (already counted).
    Limited(crate::auth::Denied),
    /// The used-once record cannot be asked (Redis down): refused, not risked.
    StoreUnavailable(FleetError),
    /// The state was already used.
    Replayed,
    /// The code exchange or the ID token failed.
    Login(LoginError),
    /// The new session could not be stored.
    NotSaved(SaveError),
    /// The cookie-store session would make the browser's `Cookie` header longer than
    /// `max_cookie_header_bytes` (proxies in front refuse such requests).
    CookiesTooLarge {
        /// The `Cookie` header the browser would send next.
        header: usize,
        /// `max_cookie_header_bytes`.
        limit: usize,
    },
}

impl CallbackError {
    /// Its `reason` label on `oidc_gateway_logins_total`, if it is counted there.
    pub fn reason(&self) -> Option<&'static str> {
        Some(match self {
            CallbackError::MethodNotAllowed | CallbackError::Limited(_) => return None,
            CallbackError::BadParameters(_) | CallbackError::Incomplete(_) => "bad_callback",
            CallbackError::ProviderRefused(_) => "idp_error",
            CallbackError::State(StateError::Missing) => "state_missing",
            CallbackError::State(StateError::Invalid) | CallbackError::OtherProvider => {
                "state_mismatch"
            }
            CallbackError::State(StateError::Expired) => "state_expired",
            CallbackError::StoreUnavailable(_) => "store_unavailable",
            CallbackError::Replayed => "replayed",
            CallbackError::Login(e) => e.reason(),
            CallbackError::NotSaved(_) | CallbackError::CookiesTooLarge { .. } => {
                "session_too_large"
            }
        })
    }

    /// Whether the answer deletes the attempt's login cookie: not while the callback was not
    /// even read, nor when a limit refused it (the same callback, reloaded later, completes).
    fn ends_attempt(&self) -> bool {
        !matches!(
            self,
            CallbackError::MethodNotAllowed
                | CallbackError::BadParameters(_)
                | CallbackError::Incomplete(_)
                | CallbackError::Limited(_)
        )
    }

    /// The log line, for the operator: what happened, and for a state error what to check.
    fn log(&self, cfg: &Provider, login_timeout: Duration) {
        let provider = &*cfg.name;
        match self {
            CallbackError::ProviderRefused(error) => {
                tracing::info!(provider, error, "the identity provider refused the sign-in");
            }
            CallbackError::State(e) => tracing::warn!(
                provider,
                reason = self.reason(),
                "sign-in callback refused: {}",
                state_hint(*e, cfg, login_timeout)
            ),
            CallbackError::StoreUnavailable(e) => {
                tracing::warn!(provider, "sign-in refused: {e}");
            }
            CallbackError::Login(e) => {
                tracing::warn!(provider, reason = e.reason(), "sign-in failed: {e}");
            }
            CallbackError::NotSaved(e) => tracing::warn!(provider, "sign-in failed: {e}"),
            CallbackError::CookiesTooLarge { header, limit } => tracing::warn!(
                provider,
                "sign-in failed: the session is too large for the cookie store: with it the browser would send a {header}-byte Cookie header, over [session] max_cookie_header_bytes ({limit}); keep sessions on the server with [session] store = \"redis\" (or \"memory\" on one instance), or ask the provider for fewer claims"
            ),
            _ => {}
        }
    }

    /// The answer the browser gets; `return_to` is where the attempt was going, for "try
    /// again" when trying again may help.
    pub fn render(self, html: bool, return_to: Option<&str>) -> Reply {
        let failed = "Sign-in failed";
        match self {
            CallbackError::MethodNotAllowed => Reply::error(
                405,
                "method_not_allowed",
                "Method not allowed",
                "The sign-in callback only accepts GET.",
                true,
            )
            .with_header(http::header::ALLOW, http::HeaderValue::from_static("GET")),
            CallbackError::BadParameters(detail) => start_again(400, failed, &detail),
            CallbackError::Incomplete(detail) => start_again(400, failed, detail),
            CallbackError::ProviderRefused(error) => try_again(
                403,
                "Sign-in was not completed",
                provider_error_detail(&error),
                return_to,
            ),
            CallbackError::State(e) => {
                let detail = match e {
                    StateError::Missing => {
                        "This sign-in response does not belong to a sign-in started in this browser, or it was already used."
                    }
                    StateError::Invalid => {
                        "This sign-in response does not match the sign-in that was started."
                    }
                    StateError::Expired => "The sign-in took too long.",
                };
                try_again(400, failed, detail, None)
            }
            CallbackError::OtherProvider => try_again(
                400,
                failed,
                "This sign-in response is for another provider.",
                None,
            ),
            CallbackError::Limited(denied) => denied.render(html),
            CallbackError::StoreUnavailable(_) => try_again(
                503,
                "Sign-in is temporarily unavailable",
                "The sign-in could not be completed right now. Please try again in a moment.",
                None,
            ),
            CallbackError::Replayed => {
                try_again(400, failed, "This sign-in response was already used.", None)
            }
            CallbackError::Login(e) => {
                let (status, detail) = login_error_page(&e);
                try_again(status, failed, detail, return_to)
            }
            CallbackError::NotSaved(_) => start_again(
                500,
                failed,
                "The session is too large to store in cookies. The administrator can switch to the memory store.",
            ),
            CallbackError::CookiesTooLarge { header, limit } => start_again(
                500,
                failed,
                &format!(
                    "Your account's sign-in is too large to keep in this browser's cookies: every request would carry {header} bytes of cookies, more than the {limit} this site accepts. The administrator can keep sessions on the server instead ([session] store = \"redis\")."
                ),
            ),
        }
    }
}

/// What the user reads when the provider answered with `error`.
fn provider_error_detail(error: &str) -> &'static str {
    match error {
        "access_denied" => {
            "Access was denied at the identity provider, or the sign-in was cancelled."
        }
        "login_required" | "interaction_required" | "consent_required" => {
            "The identity provider needs you to sign in again."
        }
        "temporarily_unavailable" | "server_error" => {
            "The identity provider had a problem. Please try again later."
        }
        _ => "The identity provider did not complete the sign-in.",
    }
}

/// The status and what the user reads when the code exchange or the ID token failed.
fn login_error_page(e: &LoginError) -> (u16, &'static str) {
    match e {
        LoginError::Unavailable => (
            503,
            "The identity provider cannot be reached right now. Please try again in a minute.",
        ),
        LoginError::Timeout => (
            504,
            "The identity provider did not answer in time. Please try again.",
        ),
        LoginError::Groups(_) => (
            502,
            "Your groups could not be had from the identity provider, so you were not signed in. Please try again.",
        ),
        LoginError::TokenExchange(_) | LoginError::UserInfo(_) => (
            502,
            "The identity provider could not complete the sign-in. Please try again.",
        ),
        LoginError::StepUp(_) => (
            403,
            "This page needs a stronger or more recent sign-in than the one completed. Please try again and use the stronger method (for example a second factor).",
        ),
        _ => (
            401,
            "The identity provider's answer could not be verified, so you were not signed in.",
        ),
    }
}

/// An error page with a "try again" link to where the user was going.
fn try_again(status: u16, title: &str, detail: &str, return_to: Option<&str>) -> Reply {
    let again = return_to
        .and_then(redirect::same_origin_path)
        .unwrap_or("/");
    Reply::page(status, title, detail, &[Action::Link("Try again", again)])
}

/// An error page that starts over at the site's root.
fn start_again(status: u16, title: &str, detail: &str) -> Reply {
    Reply::page(status, title, detail, &[Action::Link("Start again", "/")])
}

/// A started sign-in, as the browser's login cookie for the callback's state holds it.
type Attempt = Result<(String, LoginState), StateError>;

impl Endpoints {
    /// The callback of provider `index`: on success, a session and the redirect (or the kept
    /// form) to where the user was going; either way the attempt's login cookie is deleted,
    /// except when trying again may still complete it.
    pub(super) async fn callback(
        &self,
        index: ProviderId,
        req: &RequestHeader,
        client: Option<IpAddr>,
        html: bool,
    ) -> Reply {
        let Some(cfg) = self.auth.provider(index) else {
            return Reply::empty(404);
        };
        let params = if req.method == http::Method::GET {
            unique_params(req.uri.query().unwrap_or("")).map_err(CallbackError::BadParameters)
        } else {
            Err(CallbackError::MethodNotAllowed)
        };
        let now = now();
        let (attempt, outcome) = match params {
            Ok(params) => {
                let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
                // The attempt this callback belongs to, if the browser holds its cookie.
                let attempt = get("state").map(|s| self.auth.login().open(&req.headers, s, now));
                let outcome = match get("error") {
                    Some(error) => Err(CallbackError::ProviderRefused(error.to_owned())),
                    None => {
                        let done =
                            self.sign_in(index, req, get("code"), attempt.as_ref(), client, now);
                        Box::pin(done).await
                    }
                };
                (attempt, outcome)
            }
            Err(e) => (None, Err(e)),
        };
        let (reply, ends_attempt) = match outcome {
            Ok(reply) => (reply, true),
            Err(e) => {
                if let Some(reason) = e.reason() {
                    metrics::login(&cfg.name, reason);
                }
                e.log(cfg, self.login_timeout);
                let ends = e.ends_attempt();
                let return_to = match &attempt {
                    Some(Ok((_, st))) => Some(st.return_to.as_str()),
                    _ => None,
                };
                (e.render(html, return_to), ends)
            }
        };
        match &attempt {
            Some(Ok((cookie, _))) if ends_attempt => {
                let attrs = self.auth.cookie_attrs(index);
                reply.with_header(
                    http::header::SET_COOKIE,
                    self.auth.login().expire(cookie, attrs),
                )
            }
            _ => reply,
        }
    }

    /// The sign-in a callback with `code` completes, for the `attempt` its state opened: the
    /// code exchanged, the ID token verified, the session saved, and the answer that takes the
    /// browser on.
    async fn sign_in(
        &self,
        index: ProviderId,
        req: &RequestHeader,
        code: Option<&str>,
        attempt: Option<&Attempt>,
        client: Option<IpAddr>,
        now: u64,
    ) -> Result<Reply, CallbackError> {
        let (Some(attempt), Some(code)) = (attempt, code) else {
            return Err(CallbackError::Incomplete(
                "The sign-in response is missing its code or state.",
            ));
        };
        let st = attempt
            .as_ref()
            .map_err(|e| CallbackError::State(*e))?
            .1
            .clone();
        let cfg = self
            .auth
            .provider(index)
            .ok_or(CallbackError::OtherProvider)?;
        if st.provider != cfg.name {
            return Err(CallbackError::OtherProvider);
        }
        // This callback will cost a client-authenticated call to the token endpoint: the
        // client's limit and the instance's ceiling apply, before the state is spent (so the
        // same callback, reloaded later, still completes).
        ratelimit::admit(self.callbacks.as_ref(), self.auth.provider_calls(), client)
            .map_err(|r| CallbackError::Limited(crate::auth::refusal(r, "sign-in attempts")))?;
        // A callback is good once: a replay (even with the cookie) is refused — by every
        // instance of a fleet, which records the state in Redis (and fails closed without it).
        let first = self
            .used_once
            .claim("st", st.state.as_bytes(), self.login_timeout)
            .await
            .map_err(CallbackError::StoreUnavailable)?;
        if !first {
            return Err(CallbackError::Replayed);
        }
        let providers = self.auth.providers();
        let data = complete(providers, index, code, &st, now)
            .await
            .map_err(CallbackError::Login)?;

        // Never keep a session the browser brought: end it and save under a fresh id.
        let attrs = self.auth.cookie_attrs(index);
        let store = self.auth.sessions();
        let brought = store.load(&req.headers).await;
        store.clear(&brought, attrs).await;
        let (session, cookies) = store
            .save(&brought.without_session(), data, attrs)
            .await
            .map_err(CallbackError::NotSaved)?;
        let mut cookies = cookies;
        if let Some(limit) = self.cookie_limit {
            let login = self.auth.login();
            let this_attempt = attempt.as_ref().map_or("", |(name, _)| name.as_str());
            let ours = |name: &str| name == this_attempt || store.is_session_cookie(name);
            let mut header = cookies::header_len_after(&req.headers, &cookies, ours);
            if header > limit {
                // The sign-ins other tabs started are redundant now that this one succeeded:
                // their login cookies go before the session is refused (a tab whose sign-in
                // is dropped finds the session when it starts again).
                let others: Vec<&str> = cookies::all(&req.headers)
                    .map(|(name, _)| name)
                    .filter(|name| login.is_login_cookie(name) && *name != this_attempt)
                    .collect();
                cookies.extend(others.iter().map(|name| login.expire(name, attrs)));
                header = cookies::header_len_after(&req.headers, &cookies, ours);
            }
            if header > limit {
                let saved = Loaded::Found {
                    session,
                    cache_hit: false,
                    cookies_present: 0,
                };
                store.discard(&saved, attrs).await;
                return Err(CallbackError::CookiesTooLarge { header, limit });
            }
        }
        metrics::login(&cfg.name, "succeeded");
        let target = redirect::same_origin_path(&st.return_to).unwrap_or("/");
        Ok(self
            .continue_to(&cfg.name, target, &st, now)
            .await
            .with_cookies(cookies))
    }

    /// Where a completed sign-in takes the browser: the form posted before it, sent again from
    /// a page the browser submits, or a redirect to `target`.
    async fn continue_to(&self, provider: &str, target: &str, st: &LoginState, now: u64) -> Reply {
        if st.post {
            let kept = self.auth.kept_posts().take(&st.state, now).await;
            let fields = kept.as_deref().and_then(preserve_post::fields);
            metrics::login(
                provider,
                if fields.is_some() {
                    "post_restored"
                } else {
                    "post_lost"
                },
            );
            if let Some(fields) = fields {
                return preserve_post::resubmit_page(target, &fields);
            }
        }
        Reply::redirect(
            http::HeaderValue::from_str(target)
                .unwrap_or_else(|_| http::HeaderValue::from_static("/")),
        )
    }
}

/// What an operator should check when a callback's login cookie is missing, does not match or
/// has expired (the log line says it; the page the user sees does not).
fn state_hint(
    e: StateError,
    cfg: &crate::config::Provider,
    timeout: std::time::Duration,
) -> String {
    match e {
        StateError::Missing => {
            let callback_host = openidconnect::url::Url::parse(&cfg.redirect_uri)
                .ok()
                .and_then(|u| {
                    u.host_str()
                        .map(|h| u.port().map_or(h.to_owned(), |p| format!("{h}:{p}")))
                })
                .unwrap_or_default();
            format!(
                "the browser sent no login cookie for this state. The cookie is set on the host where \
                 the sign-in started, and this callback is on {callback_host} (the host of redirect_uri): \
                 if users browse the site under another name (localhost against 127.0.0.1, a bare \
                 domain against www), the cookie stays there; give them the redirect_uri's host. \
                 Otherwise: cookies blocked, an https-only (Secure) cookie on plain http, or the \
                 callback already used (a reload)"
            )
        }
        StateError::Invalid => "the login cookie does not open or belongs to another sign-in: \
            the session secrets changed between start and callback, or an older tab's response"
            .to_owned(),
        StateError::Expired => format!(
            "the sign-in took longer than login_timeout ({})",
            humantime::format_duration(timeout)
        ),
    }
}

/// Query parameters, refusing duplicates (parameter pollution) and oversized queries.
fn unique_params(query: &str) -> Result<Vec<(String, String)>, String> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (k, v) in openidconnect::url::form_urlencoded::parse(query.as_bytes()) {
        if out.iter().any(|(n, _)| *n == k) {
            return Err(format!(
                "The sign-in response repeats the parameter {:?}.",
                k.chars().take(32).collect::<String>()
            ));
        }
        if out.len() >= MAX_CALLBACK_PARAMS {
            return Err("The sign-in response has too many parameters.".into());
        }
        out.push((k.into_owned(), v.into_owned()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicated_parameters_are_refused() {
        assert!(unique_params("code=a&state=b").is_ok());
        assert!(
            unique_params("code=a&state=b&code=c")
                .unwrap_err()
                .contains("\"code\"")
        );
        assert!(unique_params(&"a=1&".repeat(40)).is_err());
    }

    #[test]
    fn a_refused_callback_keeps_its_attempt_only_when_trying_again_may_complete_it() {
        assert!(!CallbackError::Incomplete("x").ends_attempt());
        assert!(!CallbackError::MethodNotAllowed.ends_attempt());
        assert!(CallbackError::Replayed.ends_attempt());
        assert!(CallbackError::Login(LoginError::Timeout).ends_attempt());
    }

    #[test]
    fn each_callback_error_has_its_status_and_reason() {
        let cases = [
            (CallbackError::MethodNotAllowed, 405, None),
            (CallbackError::Incomplete("x"), 400, Some("bad_callback")),
            (
                CallbackError::ProviderRefused("access_denied".into()),
                403,
                Some("idp_error"),
            ),
            (
                CallbackError::State(StateError::Expired),
                400,
                Some("state_expired"),
            ),
            (CallbackError::OtherProvider, 400, Some("state_mismatch")),
            (CallbackError::Replayed, 400, Some("replayed")),
            (
                CallbackError::StoreUnavailable(FleetError::Unavailable("down".into())),
                503,
                Some("store_unavailable"),
            ),
            (
                CallbackError::Login(LoginError::Unavailable),
                503,
                Some(LoginError::Unavailable.reason()),
            ),
            (
                CallbackError::Login(LoginError::Timeout),
                504,
                Some(LoginError::Timeout.reason()),
            ),
            (
                CallbackError::Login(LoginError::NoIdToken),
                401,
                Some(LoginError::NoIdToken.reason()),
            ),
        ];
        for (error, status, reason) in cases {
            assert_eq!(error.reason(), reason, "{error:?}");
            let page = error.render(true, Some("/app?x=1"));
            assert_eq!(page.status, status);
        }
        // "Try again" goes back where the user was going, and only to this site.
        let page = CallbackError::Login(LoginError::Timeout).render(true, Some("/app?x=1"));
        assert!(String::from_utf8_lossy(&page.body).contains("href=\"/app?x=1\""));
        let page = CallbackError::Login(LoginError::Timeout).render(true, Some("//evil.example/"));
        assert!(String::from_utf8_lossy(&page.body).contains("href=\"/\""));
    }
}
