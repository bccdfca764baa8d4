//! Signing out (each provider's logout path) and the session's identity for single-page apps
//! (`userinfo_path`).

use super::Endpoints;
use crate::clock::now;
use crate::config::ProviderId;
use crate::http::responses::{Action, Reply};
use crate::oidc::logout::end_session_url;
use crate::oidc::revoke;
use crate::session::store::Loaded;
use pingora::http::RequestHeader;

impl Endpoints {
    /// Ends the request's session, revokes its tokens when configured, and sends the browser
    /// to the provider's end-session endpoint (or `logout_redirect_uri`, or a page).
    pub(super) async fn logout(&self, index: ProviderId, req: &RequestHeader, html: bool) -> Reply {
        let Some(cfg) = self.auth.provider(index) else {
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
        let store = self.auth.sessions();
        let providers = self.auth.providers();
        let loaded = store.load(&req.headers).await;
        let cookies = store.clear(&loaded, self.auth.cookie_attrs(index)).await;
        let session = loaded.session();
        if let Some(session) = session
            && cfg.revoke_tokens_on_logout
        {
            // Off the user's path: the redirect does not wait for the provider.
            revoke::revoke_in_background(
                providers.clone(),
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
        let target = providers
            .get(index)
            .and_then(|d| end_session_url(&d, cfg, id_token.as_deref()))
            .or_else(|| cfg.logout_redirect_uri.clone());
        let reply = match target.and_then(|t| http::HeaderValue::from_str(&t).ok()) {
            Some(location) => Reply::redirect(location),
            None => signed_out(html),
        };
        reply.with_cookies(cookies)
    }

    /// The signed-in session's subject, provider, claims and lifetime as JSON; 401 without one.
    pub(super) async fn userinfo(&self, req: &RequestHeader) -> Reply {
        if req.method != http::Method::GET && req.method != http::Method::HEAD {
            return Reply::json(405, &serde_json::json!({"error": "method_not_allowed"}))
                .with_header(http::header::ALLOW, http::HeaderValue::from_static("GET"));
        }
        let store = self.auth.sessions();
        if let Loaded::Found { session, .. } = store.load(&req.headers).await
            && session.check(now(), store.timeouts()).is_ok()
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
                        "expires_at": d.created_at.saturating_add(store.timeouts().absolute.as_secs()),
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
}
