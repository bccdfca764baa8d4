//! The gateway's own endpoints, answered before route matching: each provider's callback (the
//! path of its `redirect_uri`) and logout path, and the session's `userinfo` for single-page apps.

use super::{Authenticator, preserve_post};
use crate::clock::now;
use crate::http::redirect;
use crate::http::responses::{Action, Reply};
use crate::metrics;
use crate::oidc::login::{LoginError, complete};
use crate::oidc::logout::end_session_url;
use crate::oidc::revoke;
use crate::oidc::state::StateError;
use crate::ratelimit;
use crate::session::store::Loaded;
use pingora::http::RequestHeader;

/// One of the gateway's own endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// The callback of provider `n`.
    Callback(usize),
    /// The logout path of provider `n`.
    Logout(usize),
    /// The session's identity as JSON.
    UserInfo,
    /// The back-channel logout path of provider `n` (and of any other provider sharing it).
    BackchannelLogout(usize),
    /// The decision path of `[[forward_auth]]` entry `n`.
    ForwardAuth(usize),
    /// The sign-in start path of `[[forward_auth]]` entry `n`.
    ForwardStart(usize),
    /// The identity assertion's public keys (JWKS).
    IdentityJwks,
}

impl Endpoint {
    /// Its name, for traces.
    pub fn name(self) -> &'static str {
        match self {
            Endpoint::Callback(_) => "callback",
            Endpoint::Logout(_) => "logout",
            Endpoint::UserInfo => "userinfo",
            Endpoint::BackchannelLogout(_) => "backchannel logout",
            Endpoint::ForwardAuth(_) => "forward auth",
            Endpoint::ForwardStart(_) => "forward auth start",
            Endpoint::IdentityJwks => "identity jwks",
        }
    }

    /// Whether it needs the request body (read before [`Authenticator::serve`]).
    pub fn reads_body(self) -> bool {
        matches!(self, Endpoint::BackchannelLogout(_))
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

/// The key of `what` of kind `kind` in the local used-once record.
fn used_once_key(kind: &str, what: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(kind.len() + 1 + what.len());
    key.extend_from_slice(kind.as_bytes());
    key.push(0);
    key.extend_from_slice(what);
    key
}

/// Most query parameters a callback may carry.
const MAX_CALLBACK_PARAMS: usize = 16;

impl Authenticator {
    /// The endpoint at canonical `path`, if it is one of the gateway's.
    pub fn endpoint(&self, path: &str) -> Option<Endpoint> {
        if path == self.settings.userinfo_path {
            return Some(Endpoint::UserInfo);
        }
        if self
            .identity_signer
            .as_ref()
            .is_some_and(|s| s.jwks_path() == path)
        {
            return Some(Endpoint::IdentityJwks);
        }
        for (i, f) in self.forward.iter().enumerate() {
            if f.path == path {
                return Some(Endpoint::ForwardAuth(i));
            }
            if f.start_path == path {
                return Some(Endpoint::ForwardStart(i));
            }
        }
        self.providers.list.iter().find_map(|p| {
            if p.config.callback_path == path {
                Some(Endpoint::Callback(p.index))
            } else if p.config.logout_path == path {
                Some(Endpoint::Logout(p.index))
            } else if p.config.backchannel_logout_path == path {
                Some(Endpoint::BackchannelLogout(p.index))
            } else {
                None
            }
        })
    }

    /// Answers a request to one of the gateway's endpoints; `client` is the client's address
    /// (after `trusted_proxies`), `from_proxy` whether the peer is a trusted proxy, `html`
    /// whether it prefers pages to JSON, `body` the request body when the endpoint
    /// [reads one](Endpoint::reads_body) (`None`: too large).
    pub async fn serve(
        &self,
        endpoint: Endpoint,
        req: &RequestHeader,
        client: Option<std::net::IpAddr>,
        from_proxy: bool,
        html: bool,
        body: Option<&[u8]>,
    ) -> Reply {
        match endpoint {
            Endpoint::Callback(i) => Box::pin(self.callback(i, req, client, html)).await,
            Endpoint::Logout(i) => Box::pin(self.logout(i, req, html)).await,
            Endpoint::UserInfo => self.userinfo(req).await,
            Endpoint::ForwardAuth(i) => self.forward_auth(i, req, client, from_proxy, html).await,
            Endpoint::ForwardStart(i) => self.forward_start(i, req, client, html).await,
            Endpoint::IdentityJwks => match &self.identity_signer {
                Some(s) => Reply::json(200, &s.jwks()).with_header(
                    http::header::CACHE_CONTROL,
                    http::HeaderValue::from_static("public, max-age=300"),
                ),
                None => Reply::empty(404),
            },
            Endpoint::BackchannelLogout(i) => {
                let path = self
                    .providers
                    .handle(i)
                    .map(|p| p.config.backchannel_logout_path.clone())
                    .unwrap_or_default();
                Box::pin(self.backchannel_logout(&path, req, body)).await
            }
        }
    }

    /// Records `what` (of kind `kind`: a login `state`, a logout token's `jti`) as used for
    /// `ttl`: true the first time, false for a replay — here, and on every instance of a fleet
    /// (an error then: Redis cannot tell, so the caller fails closed). A failure spends
    /// nothing: the same value may be tried again.
    pub(super) async fn first_use(
        &self,
        kind: &str,
        what: &[u8],
        ttl: std::time::Duration,
    ) -> Result<bool, crate::fleet::FleetError> {
        let until = now().saturating_add(ttl.as_secs());
        let local = used_once_key(kind, what);
        if self.used_once.insert(local.clone(), until).is_some() {
            return Ok(false);
        }
        let claimed = match &self.fleet {
            Some(fleet) => fleet.claim_once(kind, what, ttl).await,
            None => Ok(true),
        };
        if claimed.is_err() {
            self.used_once.remove(&local);
        }
        claimed
    }

    /// Whether `what` of kind `kind` was already recorded by [`first_use`](Self::first_use),
    /// here or by any instance of a fleet. Records nothing.
    pub(super) async fn used_before(
        &self,
        kind: &str,
        what: &[u8],
    ) -> Result<bool, crate::fleet::FleetError> {
        if self.used_once.contains_key(&used_once_key(kind, what)) {
            return Ok(true);
        }
        match &self.fleet {
            Some(fleet) => fleet.was_claimed(kind, what).await,
            None => Ok(false),
        }
    }

    async fn callback(
        &self,
        index: usize,
        req: &RequestHeader,
        client: Option<std::net::IpAddr>,
        html: bool,
    ) -> Reply {
        let Some(cfg) = self.provider(index) else {
            return Reply::empty(404);
        };
        let name = cfg.name.clone();
        let attrs = self.attrs(index).clone();
        if req.method != http::Method::GET {
            return Reply::error(
                405,
                "method_not_allowed",
                "Method not allowed",
                "The sign-in callback only accepts GET.",
                true,
            )
            .with_header(http::header::ALLOW, http::HeaderValue::from_static("GET"));
        }
        let params = match unique_params(req.uri.query().unwrap_or("")) {
            Ok(p) => p,
            Err(msg) => {
                metrics::login(&name, "bad_callback");
                return failure_page(400, "Sign-in failed", &msg);
            }
        };
        let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());

        let now = now();
        // The attempt this callback belongs to, if the browser holds its cookie.
        let attempt = get("state").map(|s| self.login.open(&req.headers, s, now));
        let clear_attempt = |r: Reply| match &attempt {
            Some(Ok((cookie, _))) => {
                r.with_header(http::header::SET_COOKIE, self.login.expire(cookie, &attrs))
            }
            _ => r,
        };

        if let Some(error) = get("error") {
            metrics::login(&name, "idp_error");
            tracing::info!(provider = %name, error, "the identity provider refused the sign-in");
            let detail = match error {
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
            };
            return clear_attempt(self.retry_page(
                403,
                "Sign-in was not completed",
                detail,
                attempt_return(&attempt),
            ));
        }
        let (Some(state), Some(code)) = (get("state"), get("code")) else {
            metrics::login(&name, "bad_callback");
            return failure_page(
                400,
                "Sign-in failed",
                "The sign-in response is missing its code or state.",
            );
        };
        let st = match &attempt {
            Some(Ok((_, st))) => st.clone(),
            Some(Err(e)) => {
                let (reason, detail) = match e {
                    StateError::Missing => (
                        "state_missing",
                        "This sign-in response does not belong to a sign-in started in this browser, or it was already used.",
                    ),
                    StateError::Invalid => (
                        "state_mismatch",
                        "This sign-in response does not match the sign-in that was started.",
                    ),
                    StateError::Expired => ("state_expired", "The sign-in took too long."),
                };
                metrics::login(&name, reason);
                tracing::warn!(
                    provider = %name,
                    reason,
                    "sign-in callback refused: {}",
                    state_hint(*e, cfg, self.settings.login_timeout)
                );
                return clear_attempt(self.retry_page(400, "Sign-in failed", detail, None));
            }
            None => {
                metrics::login(&name, "bad_callback");
                return failure_page(
                    400,
                    "Sign-in failed",
                    "The sign-in response is missing its state.",
                );
            }
        };
        if st.provider != name {
            metrics::login(&name, "state_mismatch");
            return clear_attempt(self.retry_page(
                400,
                "Sign-in failed",
                "This sign-in response is for another provider.",
                None,
            ));
        }
        // This callback will cost a client-authenticated call to the token endpoint: the
        // client's limit and the instance's ceiling apply, before the state is spent (so the
        // same callback, reloaded later, still completes).
        if let Err(refused) = ratelimit::admit(
            self.callbacks.as_ref(),
            self.provider_calls.as_ref(),
            client,
        ) {
            return super::refusal(refused, "sign-in attempts").render(html);
        }
        // A callback is good once: a replay (even with the cookie) is refused — by every
        // instance of a fleet, which records the state in Redis (and fails closed without it).
        let replayed = match self
            .first_use("st", state.as_bytes(), self.settings.login_timeout)
            .await
        {
            Ok(first) => !first,
            Err(e) => {
                metrics::login(&name, "store_unavailable");
                tracing::warn!(provider = %name, "sign-in refused: {e}");
                return clear_attempt(self.retry_page(
                    503,
                    "Sign-in is temporarily unavailable",
                    "The sign-in could not be completed right now. Please try again in a moment.",
                    None,
                ));
            }
        };
        if replayed {
            metrics::login(&name, "replayed");
            return clear_attempt(self.retry_page(
                400,
                "Sign-in failed",
                "This sign-in response was already used.",
                None,
            ));
        }

        let data = match complete(&self.providers, index, code, &st, now).await {
            Ok(d) => d,
            Err(e) => {
                metrics::login(&name, e.reason());
                tracing::warn!(provider = %name, reason = e.reason(), "sign-in failed: {e}");
                let (status, detail) = match e {
                    LoginError::Unavailable => (
                        503,
                        "The identity provider cannot be reached right now. Please try again in a minute.",
                    ),
                    LoginError::Timeout => (
                        504,
                        "The identity provider did not answer in time. Please try again.",
                    ),
                    LoginError::TokenExchange(_) | LoginError::UserInfo(_) => (
                        502,
                        "The identity provider could not complete the sign-in. Please try again.",
                    ),
                    _ => (
                        401,
                        "The identity provider's answer could not be verified, so you were not signed in.",
                    ),
                };
                return clear_attempt(self.retry_page(
                    status,
                    "Sign-in failed",
                    detail,
                    Some(&st.return_to),
                ));
            }
        };

        // Never keep a session the browser brought: end it and save under a fresh id.
        let brought = self.store.load(&req.headers).await;
        self.store.clear(&brought, &attrs).await;
        let (_, cookies) = match self
            .store
            .save(&brought.without_session(), data, &attrs)
            .await
        {
            Ok(created) => created,
            Err(e) => {
                metrics::login(&name, "session_too_large");
                tracing::warn!(provider = %name, "sign-in failed: {e}");
                return clear_attempt(failure_page(
                    500,
                    "Sign-in failed",
                    "The session is too large to store in cookies. The administrator can switch to the memory store.",
                ));
            }
        };
        metrics::login(&name, "succeeded");
        let target = redirect::same_origin_path(&st.return_to).unwrap_or("/");
        // A form posted before the sign-in goes out again, from a page the browser submits.
        let kept = if st.post {
            self.posts.take(&st.state, now).await
        } else {
            None
        };
        let fields = kept.as_deref().and_then(preserve_post::fields);
        if st.post {
            let outcome = if fields.is_some() {
                "post_restored"
            } else {
                "post_lost"
            };
            metrics::login(&name, outcome);
        }
        let reply = match fields {
            Some(fields) => preserve_post::resubmit_page(target, &fields),
            None => Reply::redirect(
                http::HeaderValue::from_str(target)
                    .unwrap_or_else(|_| http::HeaderValue::from_static("/")),
            ),
        };
        clear_attempt(reply.with_cookies(cookies))
    }

    async fn logout(&self, index: usize, req: &RequestHeader, html: bool) -> Reply {
        let Some(cfg) = self.provider(index) else {
            return Reply::empty(404);
        };
        if !cfg.logout_methods.contains(&req.method) {
            let allow = cfg
                .logout_methods
                .iter()
                .map(|m| m.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            return Reply::error(
                405,
                "method_not_allowed",
                "Method not allowed",
                "Sign out with a POST request (a form button), not a link.",
                html,
            )
            .with_header(
                http::header::ALLOW,
                http::HeaderValue::from_str(&allow)
                    .unwrap_or_else(|_| http::HeaderValue::from_static("POST")),
            );
        }
        let loaded = self.store.load(&req.headers).await;
        let cookies = self.store.clear(&loaded, self.attrs(index)).await;
        let session = loaded.session();
        if let Some(session) = session
            && cfg.revoke_tokens_on_logout
        {
            // Off the user's path: the redirect does not wait for the provider.
            revoke::revoke_in_background(
                self.providers.clone(),
                index,
                revoke::Ended {
                    refresh_token: session
                        .data
                        .refresh_token
                        .as_ref()
                        .map(|t| t.text().into_owned()),
                    access_token: Some(session.data.access_token.text().into_owned()),
                },
            );
        }
        let id_token = session.map(|s| s.data.id_token.text().into_owned());
        let target = self
            .providers
            .get(index)
            .and_then(|d| end_session_url(&d, cfg, id_token.as_deref()))
            .or_else(|| cfg.logout_redirect_uri.clone());
        let reply = match target.and_then(|t| http::HeaderValue::from_str(&t).ok()) {
            Some(location) => Reply::redirect(location),
            None => signed_out(html),
        };
        reply.with_cookies(cookies)
    }

    async fn userinfo(&self, req: &RequestHeader) -> Reply {
        if req.method != http::Method::GET && req.method != http::Method::HEAD {
            return Reply::json(405, &serde_json::json!({"error": "method_not_allowed"}))
                .with_header(http::header::ALLOW, http::HeaderValue::from_static("GET"));
        }
        let now = now();
        if let Loaded::Found { session, .. } = self.store.load(&req.headers).await
            && session.check(now, self.store.timeouts()).is_ok()
        {
            let d = &session.data;
            return Reply::json(
                200,
                &serde_json::json!({
                    "sub": d.sub,
                    "provider": d.provider,
                    "claims": d.claims(),
                    "session": {
                        "created_at": d.created_at,
                        "expires_at": d.created_at.saturating_add(self.store.timeouts().absolute.as_secs()),
                    },
                }),
            );
        }
        Reply::json(
            401,
            &serde_json::json!({"error": "login_required", "message": "No signed-in session."}),
        )
        .with_header(
            http::header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static("Bearer realm=\"oidc-gateway\""),
        )
    }

    /// An error page with a "try again" link to where the user was going.
    fn retry_page(&self, status: u16, title: &str, detail: &str, return_to: Option<&str>) -> Reply {
        let again = return_to
            .and_then(redirect::same_origin_path)
            .unwrap_or("/");
        Reply::page(status, title, detail, &[Action::Link("Try again", again)])
    }
}

fn attempt_return(
    attempt: &Option<Result<(String, crate::oidc::state::LoginState), StateError>>,
) -> Option<&str> {
    match attempt {
        Some(Ok((_, st))) => Some(st.return_to.as_str()),
        _ => None,
    }
}

fn failure_page(status: u16, title: &str, detail: &str) -> Reply {
    Reply::page(status, title, detail, &[Action::Link("Start again", "/")])
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

/// The answer to a logout with nowhere to send the browser: a page that says so (a bare 204
/// would leave the browser on the signed-in page), or 204 for scripts.
fn signed_out(html: bool) -> Reply {
    if !html {
        return Reply::empty(204);
    }
    Reply::page(
        200,
        "Signed out",
        "You are signed out of this site. You may still be signed in at your identity provider.",
        &[Action::Link("Sign in again", "/")],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_logout_with_nowhere_to_go_shows_a_page_to_browsers() {
        let page = signed_out(true);
        assert_eq!(page.status, 200);
        let body = String::from_utf8_lossy(&page.body);
        assert!(
            body.contains("Signed out") && body.contains("href=\"/\""),
            "{body}"
        );
        assert_eq!(signed_out(false).status, 204);
    }

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
}
