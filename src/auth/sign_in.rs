//! Sending a browser to sign in: the authorization request, the login cookie that carries the
//! attempt to its callback, and a form posted without a session kept for it.

use super::{Authenticator, Denial, Denied, can_follow_redirect, preserve_post, too_many};
use crate::clock::now;
use crate::config::ProviderId;
use crate::config::RouteAuth;
use crate::http::redirect;
use crate::metrics;
use crate::oidc::login::authorization_request;
use crate::oidc::par;
use crate::oidc::provider::{Discovered, Providers};
use crate::ratelimit;
use pingora::http::RequestHeader;
use std::net::IpAddr;

impl Authenticator {
    /// The sign-in for a form posted without a session to a `preserve_post` route (`req`
    /// [qualifies](preserve_post::qualifies), and `body` is what it posted): the form waits on
    /// the server for the callback, which has the browser post it again. A body that is not
    /// well-formed form data gets the usual 401; one that cannot be kept, a 503 (the browser's
    /// back button still has the form).
    pub async fn sign_in_keeping_post(
        &self,
        spec: &RouteAuth,
        req: &RequestHeader,
        client: Option<IpAddr>,
        return_to: &str,
        body: &[u8],
    ) -> Denied {
        if preserve_post::fields(body).is_none() {
            return Denial::SessionRequired {
                realm: spec.realm.clone(),
            }
            .into();
        }
        self.start_login(spec, req, client, return_to, now(), Some(body))
            .await
    }

    /// A request to `spec` that needs a sign-in: a redirect to its first provider for browsers
    /// (within the client's limit, asking for the route's step-up), 401 for requests that cannot
    /// follow one (API calls, XHR, non-GET), 503 while the provider is unreachable. `post`: a
    /// form to keep for the attempt.
    pub(crate) async fn start_login(
        &self,
        spec: &RouteAuth,
        req: &RequestHeader,
        client: Option<IpAddr>,
        return_to: &str,
        now: u64,
        post: Option<&[u8]>,
    ) -> Denied {
        let (index, realm) = (spec.providers[0], spec.realm.as_str());
        let Some(cfg) = self.provider(index) else {
            return Denial::Misconfigured("The route names an unknown provider.").into();
        };
        if post.is_none() && !can_follow_redirect(req) {
            return Denial::SessionRequired {
                realm: realm.to_owned(),
            }
            .into();
        }
        // The attempt's callback will cost a token call: the client's limit applies.
        if let Err(limited) = ratelimit::check(self.login_starts.as_ref(), client) {
            return too_many(limited, "sign-in attempts");
        }
        let Some(d) = self.providers.ready(index).await else {
            metrics::login(&cfg.name, "provider_unavailable");
            return Denial::ProviderUnavailable(self.last_error(index)).into();
        };
        if !Providers::reachable(&self.providers, index) {
            metrics::login(&cfg.name, "provider_unreachable");
            return Denial::ProviderUnavailable(self.last_error(index)).into();
        }
        let return_to = redirect::same_origin_path(return_to)
            .unwrap_or("/")
            .to_owned();
        let (url, mut st) = authorization_request(&d, cfg, return_to, now, spec.step_up.as_ref());
        let url = match Box::pin(self.pushed(index, &d, url)).await {
            Ok(url) => url,
            Err(denied) => return denied,
        };
        let Ok(location) = http::HeaderValue::from_str(&url) else {
            return Denial::Misconfigured("The sign-in URL is invalid.").into();
        };
        if let Some(body) = post {
            let keep = self
                .posts
                .keep(&st.state, body, client, self.settings.login_timeout, now);
            if let Err(e) = Box::pin(keep).await {
                metrics::login(&cfg.name, "post_not_kept");
                tracing::warn!(provider = %cfg.name, "a form posted before sign-in could not be kept: {e}");
                return Denial::PostNotKept.into();
            }
            metrics::login(&cfg.name, "post_kept");
            st.post = true;
        }
        let attrs = self.cookie_attrs(index);
        let mut cookies = self.login.prune(&req.headers, attrs, now);
        cookies.extend(self.login.set(&st, attrs));
        metrics::login(&cfg.name, "started");
        Denied::from(Denial::SignIn { location }).with_cookies(cookies)
    }

    /// The authorization `url` as the browser gets it: pushed to the provider first (RFC 9126)
    /// when its `pushed_authorization_requests` says so; a 503 when that fails.
    async fn pushed(
        &self,
        index: ProviderId,
        d: &Discovered,
        url: String,
    ) -> Result<String, Denied> {
        let Some(handle) = self.providers.handle(index) else {
            return Ok(url);
        };
        let name = &handle.config.name;
        let pushed = match par::endpoint(handle.config.pushed_authorization_requests, d) {
            Ok(None) => return Ok(url),
            Ok(Some(endpoint)) => par::push(handle, endpoint, &url).await,
            Err(e) => Err(e),
        };
        pushed.map_err(|e| {
            metrics::login(name, "par_failed");
            tracing::warn!(provider = %name, "sign-in not started: {e}");
            Denial::ProviderUnavailable(Some(e.to_string().into())).into()
        })
    }
}
