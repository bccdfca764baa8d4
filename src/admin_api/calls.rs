//! What each admin call does, once the caller is authenticated.

use super::{AdminApi, Call};
use crate::http::responses::Reply;
use crate::session::revocations::Subject;
use serde_json::json;
use std::path::Path;

/// The user a sessions call names: `sub`, and the providers to look at (`provider`, or all).
struct UserQuery {
    sub: String,
    providers: Vec<String>,
}

impl AdminApi {
    /// Runs `call` with the request's `query` (and `body`, for a configuration check).
    pub(super) async fn run(&self, call: &Call, query: &str, body: Option<&[u8]>) -> Reply {
        match call {
            Call::Status => self.status().await,
            Call::ListSessions => match self.user_query(query) {
                Ok(q) => self.list(&q).await,
                Err(reply) => reply,
            },
            Call::RevokeUser => match self.user_query(query) {
                Ok(q) => self.revoke_user(&q).await,
                Err(reply) => reply,
            },
            Call::RevokeSession(id) => self.revoke_session(id).await,
            Call::CheckConfig => check_config(body.unwrap_or_default()),
        }
    }

    /// Version, configuration digest, and what readiness sees (providers with discovery age
    /// and key count, upstreams with health, Redis).
    async fn status(&self) -> Reply {
        let report = self.readiness.check().await;
        let mut body = report.body;
        body["version"] = env!("CARGO_PKG_VERSION").into();
        body["config_digest"] = self.digest.clone().into();
        body["sessions_in_memory"] = self.auth.sessions().len().into();
        Reply::json(200, &body)
    }

    async fn list(&self, q: &UserQuery) -> Reply {
        let providers: Vec<&str> = q.providers.iter().map(String::as_str).collect();
        match self.auth.sessions().list(&providers, &q.sub).await {
            Ok(Some(sessions)) => Reply::json(200, &json!({ "sub": q.sub, "sessions": sessions })),
            Ok(None) => Reply::error(
                501,
                "not_listable",
                "Sessions cannot be listed",
                "The cookie store keeps sessions in browsers, so none can be listed; DELETE /admin/sessions?sub=... still ends them.",
                false,
            ),
            Err(e) => unavailable(&e),
        }
    }

    async fn revoke_user(&self, q: &UserQuery) -> Reply {
        for p in &q.providers {
            if let Err(e) = Box::pin(self.auth.sessions().revoke(Subject::User(p, &q.sub))).await {
                return unavailable(&e);
            }
        }
        Reply::json(
            200,
            &json!({ "revoked": "user", "sub": q.sub, "providers": q.providers }),
        )
    }

    async fn revoke_session(&self, id: &str) -> Reply {
        let Some(tag) = crate::fleet::unhex(id) else {
            return bad_request("a session id is 64 hex digits, as GET /admin/sessions lists it");
        };
        match Box::pin(self.auth.sessions().revoke_named(tag)).await {
            Ok(()) => Reply::json(200, &json!({ "revoked": "session", "id": id })),
            Err(e) => unavailable(&e),
        }
    }

    /// `sub=...` and an optional `provider=...` that must be one of ours.
    fn user_query(&self, query: &str) -> Result<UserQuery, Reply> {
        let mut sub = None;
        let mut provider = None;
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            match &*k {
                "sub" => sub = Some(v.into_owned()),
                "provider" => provider = Some(v.into_owned()),
                _ => {}
            }
        }
        let sub = sub
            .filter(|s| !s.is_empty())
            .ok_or_else(|| bad_request("name the user: ?sub=... (and optionally &provider=...)"))?;
        let providers = match provider {
            None => self.providers.clone(),
            Some(p) if self.providers.contains(&p) => vec![p],
            Some(p) => {
                return Err(bad_request(&format!(
                    "no provider named {p:?} (configured: {})",
                    self.providers.join(", ")
                )));
            }
        };
        Ok(UserQuery { sub, providers })
    }
}

/// Validates a posted configuration with `check`'s own errors (file `posted.toml`).
fn check_config(body: &[u8]) -> Reply {
    let Ok(text) = std::str::from_utf8(body) else {
        return bad_request("the configuration is not UTF-8 text");
    };
    match crate::config::Config::parse_posted(text, Path::new("posted.toml")) {
        Ok(c) => Reply::json(
            200,
            &json!({
                "valid": true,
                "summary": c.summary(),
                "warnings": c.warnings.iter().map(ToString::to_string).collect::<Vec<_>>(),
            }),
        ),
        Err(errors) => Reply::json(
            422,
            &json!({
                "valid": false,
                "errors": errors.0.iter().map(ToString::to_string).collect::<Vec<_>>(),
            }),
        ),
    }
}

fn bad_request(detail: &str) -> Reply {
    Reply::error(400, "bad_request", "Bad request", detail, false)
}

/// Redis (or the state file) could not take the change: nothing is half done that a retry
/// would not finish.
fn unavailable(e: &str) -> Reply {
    tracing::warn!(target: "oidc_gateway::admin", "admin call failed: {e}");
    Reply::error(
        503,
        "unavailable",
        "Not done",
        &format!("The session store could not be reached ({e}); try again."),
        false,
    )
}
