//! Step-up on a route (`acr_values`, `max_age`): a credential that falls short is sent to sign
//! in again when it is a browser's session, and gets RFC 9470's 401 otherwise.

use super::{Authenticator, Credential, Denial, Denied, Identity, can_follow_redirect};
use crate::clock::now;
use crate::config::{AuthMethod, RouteAuth, StepUp};
use crate::oidc::step_up::{Shortfall, shortfall};
use pingora::http::RequestHeader;
use std::net::IpAddr;

impl Authenticator {
    /// Where `identity` falls short of the route's step-up, if it does.
    pub(super) fn step_up_shortfall(
        &self,
        spec: &RouteAuth,
        step: &StepUp,
        identity: &Identity,
        now: u64,
    ) -> Option<Shortfall> {
        let leeway = self
            .provider(spec.providers[0])
            .map_or(0, |p| p.leeway.as_secs());
        let empty = serde_json::Map::new();
        let claims = identity.credential.claims().unwrap_or(&empty);
        shortfall(step, claims, now, leeway)
    }

    /// A credential that falls short of the route's step-up: a browser with a session is sent
    /// to sign in again, asking for what the route needs (the callback replaces the session);
    /// anything else gets RFC 9470's 401 `insufficient_user_authentication`.
    pub(super) async fn step_up(
        &self,
        spec: &RouteAuth,
        step: &StepUp,
        identity: Identity,
        req: &RequestHeader,
        client: Option<IpAddr>,
        return_to: &str,
    ) -> Denied {
        let session = matches!(identity.credential, Credential::Session(_));
        let denied = if session
            && spec.methods.contains(&AuthMethod::AuthorizationCode)
            && can_follow_redirect(req)
        {
            self.start_login(spec, req, client, return_to, now(), None)
                .await
        } else {
            Denial::StepUpRequired {
                realm: spec.realm.clone(),
                acr_values: step.acr_values.join(" "),
                max_age: step.max_age.map(|d| d.as_secs()),
            }
            .into()
        };
        // A renewed session cookie still goes out: the session itself stays valid.
        denied.with_cookies(identity.set_cookies)
    }
}
