//! The admin API (`[admin]`), on a listener of its own: see the gateway's state, list and end
//! users' sessions, check a configuration. Every call is authenticated with a bearer token that
//! must carry the configured audience and group (the route rules, reused), and every call is
//! counted and logged with who made it.
//!
//! Ending sessions goes through the revocation marks, so it reaches every instance of a fleet
//! and survives restarts, like a logout.

mod calls;
pub mod client;

use crate::auth::Authenticator;
use crate::config::{AdminSettings, Config};
use crate::http::responses::Reply;
use crate::metrics::{self, RouteMetrics};
use crate::readiness::Readiness;
use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use std::sync::Arc;
use std::time::Duration;

/// The most a posted configuration may be.
const MAX_CONFIG_BYTES: usize = 1024 * 1024;

/// How long a posted configuration may take to arrive.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// The admin API's request handler.
pub struct AdminApi {
    settings: AdminSettings,
    auth: Arc<Authenticator>,
    readiness: Arc<Readiness>,
    /// The configured providers' names.
    providers: Vec<String>,
    digest: String,
    metrics: RouteMetrics,
}

/// What an admin call asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// `GET /admin/status`
    Status,
    /// `GET /admin/sessions?sub=..[&provider=..]`
    ListSessions,
    /// `DELETE /admin/sessions?sub=..[&provider=..]`
    RevokeUser,
    /// `DELETE /admin/sessions/{id}`
    RevokeSession(String),
    /// `POST /admin/config/check`
    CheckConfig,
}

impl Call {
    /// The call `method` and `path` make, or the status that says why there is none.
    pub fn of(method: &http::Method, path: &str) -> Result<Call, u16> {
        let call = match path {
            "/admin/status" => Call::Status,
            "/admin/sessions" if method == http::Method::DELETE => Call::RevokeUser,
            "/admin/sessions" => Call::ListSessions,
            "/admin/config/check" => Call::CheckConfig,
            p => match p.strip_prefix("/admin/sessions/") {
                Some(id) if !id.is_empty() && !id.contains('/') => Call::RevokeSession(id.into()),
                _ => return Err(404),
            },
        };
        let allowed = match call {
            Call::Status | Call::ListSessions => http::Method::GET,
            Call::RevokeUser | Call::RevokeSession(_) => http::Method::DELETE,
            Call::CheckConfig => http::Method::POST,
        };
        if *method == allowed {
            Ok(call)
        } else {
            Err(405)
        }
    }

    /// Its name in metrics and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Call::Status => "status",
            Call::ListSessions => "list_sessions",
            Call::RevokeUser => "revoke_user",
            Call::RevokeSession(_) => "revoke_session",
            Call::CheckConfig => "check_config",
        }
    }
}

impl AdminApi {
    /// The admin API of the gateway built from `config` (which has `[admin]`).
    pub fn new(
        config: &Config,
        settings: AdminSettings,
        auth: Arc<Authenticator>,
        readiness: Arc<Readiness>,
    ) -> AdminApi {
        let calls = [
            Call::Status,
            Call::ListSessions,
            Call::RevokeUser,
            Call::RevokeSession(String::new()),
            Call::CheckConfig,
        ];
        metrics::init_admin_calls(&calls.map(|c| c.name()));
        AdminApi {
            settings,
            auth,
            readiness,
            providers: config.providers.iter().map(|p| p.name.clone()).collect(),
            digest: config.digest.clone(),
            metrics: RouteMetrics::new("admin"),
        }
    }

    /// Authenticates, runs and logs one call.
    async fn serve(&self, session: &mut ServerSession) -> Reply {
        let req = session.req_header();
        let call = match Call::of(&req.method, req.uri.path()) {
            Ok(call) => call,
            Err(status) => {
                metrics::admin_call("unknown", status);
                return Reply::error(
                    status,
                    if status == 404 {
                        "not_found"
                    } else {
                        "method_not_allowed"
                    },
                    "Not an admin call",
                    "The admin API has GET /admin/status, GET and DELETE /admin/sessions?sub=..., DELETE /admin/sessions/{id} and POST /admin/config/check.",
                    false,
                );
            }
        };
        let client = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let authenticated = self
            .auth
            .authenticate(&self.settings.auth, req, client, None, "/", &self.metrics)
            .await;
        let caller = match authenticated {
            Ok(Some(identity)) => identity.sub().unwrap_or("?").to_owned(),
            refused => {
                // Nothing authenticated (a preflight let through by `run_on_preflight = false`)
                // is refused too: no admin call runs without a caller.
                let denied = refused.err().unwrap_or_else(|| {
                    crate::auth::Denial::Unauthorized {
                        realm: self.settings.auth.realm.clone(),
                    }
                    .into()
                });
                let reply = denied.render(false);
                metrics::admin_call(call.name(), reply.status);
                tracing::warn!(
                    target: "oidc_gateway::admin",
                    call = call.name(),
                    status = reply.status,
                    client = ?client,
                    "admin call refused"
                );
                return reply;
            }
        };
        let body = if call == Call::CheckConfig {
            let read = crate::http::body::read_limited(session, MAX_CONFIG_BYTES);
            match tokio::time::timeout(BODY_TIMEOUT, read).await {
                Ok(Some(body)) => Some(body),
                _ => {
                    metrics::admin_call(call.name(), 413);
                    return Reply::error(
                        413,
                        "body_too_large",
                        "Configuration not read",
                        "Post the configuration file's text, at most 1 MiB, within 10 s.",
                        false,
                    );
                }
            }
        } else {
            None
        };
        let query = session.req_header().uri.query().unwrap_or("").to_owned();
        let reply = self.run(&call, &query, body.as_deref()).await;
        metrics::admin_call(call.name(), reply.status);
        tracing::info!(
            target: "oidc_gateway::admin",
            caller = %caller,
            call = call.name(),
            query = %query,
            status = reply.status,
            "admin call"
        );
        reply
    }
}

#[async_trait]
impl ServeHttp for AdminApi {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let reply = Box::pin(self.serve(session)).await;
        let mut out = Response::builder()
            .status(reply.status)
            .header(http::header::CONTENT_TYPE, reply.content_type)
            .header(http::header::CACHE_CONTROL, "no-store");
        for (name, value) in &reply.headers {
            out = out.header(name, value);
        }
        out.body(reply.body.to_vec()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::Call;
    use http::Method;

    #[test]
    fn paths_and_methods_name_one_call() {
        assert_eq!(Call::of(&Method::GET, "/admin/status"), Ok(Call::Status));
        assert_eq!(
            Call::of(&Method::GET, "/admin/sessions"),
            Ok(Call::ListSessions)
        );
        assert_eq!(
            Call::of(&Method::DELETE, "/admin/sessions"),
            Ok(Call::RevokeUser)
        );
        assert_eq!(
            Call::of(&Method::DELETE, "/admin/sessions/ab12"),
            Ok(Call::RevokeSession("ab12".into()))
        );
        assert_eq!(
            Call::of(&Method::POST, "/admin/config/check"),
            Ok(Call::CheckConfig)
        );
        assert_eq!(Call::of(&Method::POST, "/admin/sessions"), Err(405));
        assert_eq!(Call::of(&Method::GET, "/admin/config/check"), Err(405));
        assert_eq!(Call::of(&Method::DELETE, "/admin/sessions/a/b"), Err(404));
        assert_eq!(Call::of(&Method::DELETE, "/admin/sessions/"), Err(404));
        assert_eq!(Call::of(&Method::GET, "/metrics"), Err(404));
    }
}
