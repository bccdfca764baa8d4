//! The gateway's own endpoints, answered before route matching: each provider's callback (the
//! path of its `redirect_uri`), logout and back-channel logout paths, the session's `userinfo`
//! for single-page apps, forward-auth for a proxy in front, and the identity assertion's JWKS.
//!
//! [`Endpoints`] owns what only they use: the used-once record of states and `jti`s, the limit
//! on callbacks and the forward-auth entries. It asks the [`Authenticator`] for the per-request
//! decision (forward-auth) and for what a sign-in shares with it: providers, sessions, login
//! cookies and kept forms.

mod backchannel;
mod callback;
mod forward;
mod logout;

use crate::auth::Authenticator;
use crate::config::{Config, ForwardAuth, ProviderId, SessionStoreKind};
use crate::fleet::Fleet;
use crate::http::responses::Reply;
use crate::kept::Kept;
use crate::metrics::RouteMetrics;
use crate::ratelimit::Limit;
use async_trait::async_trait;
use pingora::http::RequestHeader;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

pub use backchannel::MAX_BODY;
pub use callback::CallbackError;

/// One of the gateway's own endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// The callback of provider `n`.
    Callback(ProviderId),
    /// The logout path of provider `n`.
    Logout(ProviderId),
    /// The session's identity as JSON.
    UserInfo,
    /// The back-channel logout path of provider `n` (and of any other provider sharing it).
    BackchannelLogout(ProviderId),
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

    /// Whether it needs the request body (read before [`Endpoints::serve`]).
    pub fn reads_body(self) -> bool {
        matches!(self, Endpoint::BackchannelLogout(_))
    }
}

/// The gateway's own endpoints, over the authenticator they share with protected routes.
pub struct Endpoints {
    auth: Arc<Authenticator>,
    /// Login `state`s and logout-token `jti`s already used: here, or in the fleet's Redis
    /// so that every instance refuses a replay.
    used_once: Kept,
    /// Callbacks (token calls) per client and minute.
    callbacks: Option<Limit>,
    /// `[[forward_auth]]` entries.
    forward: Vec<ForwardAuth>,
    /// Their request metrics (`route="forward_auth"`).
    forward_metrics: RouteMetrics,
    /// `[session] userinfo_path`.
    userinfo_path: String,
    /// `[session] login_timeout`: how long a started sign-in may take.
    login_timeout: Duration,
    /// `[session] max_cookie_header_bytes`, with the cookie store (`None`: no limit, or the
    /// session lives on the server and its cookie is small).
    cookie_limit: Option<usize>,
}

impl Endpoints {
    /// The endpoints of `config`, whose providers `auth` serves; `fleet` shares the used-once
    /// record across instances.
    pub fn new(config: &Config, auth: Arc<Authenticator>, fleet: Option<Arc<Fleet>>) -> Endpoints {
        let (userinfo_path, login_timeout, secrets) = config.session.as_ref().map_or_else(
            || (String::new(), Duration::ZERO, Vec::new()),
            |s| (s.userinfo_path.clone(), s.login_timeout, s.secrets.clone()),
        );
        Endpoints {
            auth,
            used_once: Kept::new(&secrets, fleet),
            callbacks: Limit::new(config.server.login_rate_limit),
            forward: config.forward_auth.clone(),
            forward_metrics: RouteMetrics::new("forward_auth"),
            userinfo_path,
            login_timeout,
            cookie_limit: config
                .session
                .as_ref()
                .filter(|s| s.store == SessionStoreKind::Cookie && s.max_cookie_header_bytes > 0)
                .map(|s| s.max_cookie_header_bytes),
        }
    }

    /// The authenticator they serve.
    pub fn authenticator(&self) -> &Arc<Authenticator> {
        &self.auth
    }

    /// The endpoint at canonical `path`, if it is one of the gateway's.
    pub fn endpoint(&self, path: &str) -> Option<Endpoint> {
        if path == self.userinfo_path {
            return Some(Endpoint::UserInfo);
        }
        if self
            .auth
            .identity_signer()
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
        self.auth.providers().list.iter().find_map(|p| {
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
        client: Option<IpAddr>,
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
            Endpoint::IdentityJwks => match self.auth.identity_signer() {
                Some(s) => Reply::json(200, &s.jwks()).with_header(
                    http::header::CACHE_CONTROL,
                    http::HeaderValue::from_static("public, max-age=300"),
                ),
                None => Reply::empty(404),
            },
            Endpoint::BackchannelLogout(i) => {
                let path = self
                    .auth
                    .providers()
                    .handle(i)
                    .map(|p| p.config.backchannel_logout_path.clone())
                    .unwrap_or_default();
                Box::pin(self.backchannel_logout(&path, req, body)).await
            }
        }
    }

    /// Drops expired sessions, refresh results, kept forms and used states.
    pub fn sweep(&self) {
        self.auth.sweep();
        self.used_once.sweep();
    }
}

/// Sweeps expired sessions and used-once records once a minute.
pub struct Sweeper(pub Arc<Endpoints>);

#[async_trait]
impl BackgroundService for Sweeper {
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
