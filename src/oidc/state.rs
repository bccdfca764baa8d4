//! The login-attempt cookie: state, nonce, PKCE verifier and the return URL, sealed (AEAD) and
//! short-lived. Each attempt gets its own cookie, named after its `state`, so several tabs can
//! log in at once; the oldest attempts are dropped beyond a limit.

use crate::crypto::{Sealer, ct_eq};
use crate::http::cookies::{self, CookieAttrs};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Characters of `state` used in the cookie name.
const NAME_STATE_CHARS: usize = 16;

/// One login attempt, as sealed into its cookie.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LoginState {
    /// The `state` sent to the provider.
    pub state: String,
    /// The `nonce` the ID token must carry.
    pub nonce: String,
    /// The PKCE code verifier.
    pub verifier: String,
    /// Where to send the browser after login (a same-origin path).
    pub return_to: String,
    /// Provider name (a callback for another provider is refused).
    pub provider: String,
    /// When the attempt started (Unix seconds).
    pub created_at: u64,
    /// A form posted without a session waits for this attempt (`preserve_post`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub post: bool,
    /// The `acr_values` asked for (step-up): the ID token's `acr` must be one of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub acr_values: Vec<String>,
    /// The `max_age` asked for, in seconds: the ID token's `auth_time` must be within it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<u64>,
}

impl LoginState {
    /// The step-up this attempt asked the provider for, if any.
    pub fn step_up(&self) -> Option<crate::config::StepUp> {
        (!self.acr_values.is_empty() || self.max_age.is_some()).then(|| crate::config::StepUp {
            acr_values: self.acr_values.clone(),
            max_age: self.max_age.map(std::time::Duration::from_secs),
            prompt_login: false,
        })
    }
}

/// Why a callback's login cookie was not usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateError {
    /// No cookie for this `state` (expired, from another browser, or forged: login CSRF).
    Missing,
    /// The cookie did not open or its state did not match.
    Invalid,
    /// Older than the login timeout.
    Expired,
}

/// Creates, finds and prunes login cookies.
pub struct LoginCookies {
    sealer: Sealer,
    prefix: String,
    ttl: Duration,
    max: usize,
}

impl LoginCookies {
    /// Login cookies are named `<session cookie>_login_<state prefix>`.
    pub fn new(
        secrets: &[crate::config::Secret],
        session_cookie: &str,
        ttl: Duration,
        max: usize,
    ) -> LoginCookies {
        LoginCookies {
            sealer: Sealer::new(secrets, "oidc-gateway login state"),
            prefix: format!("{session_cookie}_login_"),
            ttl,
            max,
        }
    }

    /// Whether `cookie` is a login cookie.
    pub fn is_login_cookie(&self, cookie: &str) -> bool {
        cookie.starts_with(&self.prefix)
    }

    fn name_for(&self, state: &str) -> Option<String> {
        let head = state.get(..NAME_STATE_CHARS)?;
        head.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            .then(|| format!("{}{head}", self.prefix))
    }

    /// The `Set-Cookie` header for a new attempt.
    pub fn set(&self, st: &LoginState, attrs: &CookieAttrs) -> Option<http::HeaderValue> {
        let name = self.name_for(&st.state)?;
        let json = serde_json::to_vec(st).ok()?;
        let value = self.sealer.seal(name.as_bytes(), &json);
        Some(cookies::set(&name, &value, attrs, Some(self.ttl)))
    }

    /// The attempt for the `state` a callback received, checked against it in constant time.
    pub fn open(
        &self,
        headers: &http::HeaderMap,
        state: &str,
        now: u64,
    ) -> Result<(String, LoginState), StateError> {
        let name = self.name_for(state).ok_or(StateError::Missing)?;
        let value = cookies::get(headers, &name).ok_or(StateError::Missing)?;
        let json = self
            .sealer
            .open(name.as_bytes(), value)
            .ok_or(StateError::Invalid)?;
        let st: LoginState = serde_json::from_slice(&json).map_err(|_| StateError::Invalid)?;
        if !ct_eq(st.state.as_bytes(), state.as_bytes()) {
            return Err(StateError::Invalid);
        }
        if now >= st.created_at.saturating_add(self.ttl.as_secs()) {
            return Err(StateError::Expired);
        }
        Ok((name, st))
    }

    /// `Set-Cookie` headers deleting attempts so a new one fits under the limit: unreadable and
    /// expired ones first, then the oldest.
    pub fn prune(
        &self,
        headers: &http::HeaderMap,
        attrs: &CookieAttrs,
        now: u64,
    ) -> Vec<http::HeaderValue> {
        let mut live: Vec<(u64, &str)> = Vec::new();
        let mut doomed: Vec<&str> = Vec::new();
        for (name, value) in cookies::all(headers).filter(|(n, _)| self.is_login_cookie(n)) {
            let created = self
                .sealer
                .open(name.as_bytes(), value)
                .and_then(|j| serde_json::from_slice::<LoginState>(&j).ok())
                .map(|s| s.created_at)
                .filter(|c| now < c.saturating_add(self.ttl.as_secs()));
            match created {
                Some(c) => live.push((c, name)),
                None => doomed.push(name),
            }
        }
        live.sort();
        let excess = (live.len() + 1).saturating_sub(self.max);
        doomed.extend(live.iter().take(excess).map(|(_, n)| *n));
        doomed
            .into_iter()
            .map(|n| cookies::expire(n, attrs))
            .collect()
    }

    /// `Set-Cookie` deleting the login cookie `name`.
    pub fn expire(&self, name: &str, attrs: &CookieAttrs) -> http::HeaderValue {
        cookies::expire(name, attrs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn lc(max: usize) -> LoginCookies {
        LoginCookies::new(
            &[Secret::new("0123456789abcdef0123456789abcdef!!")],
            "s",
            Duration::from_secs(600),
            max,
        )
    }

    fn attrs() -> CookieAttrs {
        CookieAttrs {
            path: "/".into(),
            domain: None,
            same_site: cookie::SameSite::Lax,
            secure: false,
        }
    }

    fn st(state: &str, created: u64) -> LoginState {
        LoginState {
            state: state.into(),
            nonce: "n".into(),
            verifier: "v".into(),
            return_to: "/x".into(),
            provider: "p".into(),
            created_at: created,
            post: false,
            acr_values: Vec::new(),
            max_age: None,
        }
    }

    fn jar(set_cookies: &[http::HeaderValue]) -> http::HeaderMap {
        let pairs: Vec<String> = set_cookies
            .iter()
            .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned())
            .collect();
        let mut h = http::HeaderMap::new();
        h.insert(http::header::COOKIE, pairs.join("; ").parse().unwrap());
        h
    }

    #[test]
    fn state_round_trips_and_must_match() {
        let c = lc(5);
        let state = "AbCdEfGhIjKlMnOpQrStUv";
        let h = jar(&[c.set(&st(state, 1000), &attrs()).unwrap()]);
        let (name, got) = c.open(&h, state, 1001).unwrap();
        assert_eq!(name, "s_login_AbCdEfGhIjKlMnOp");
        assert_eq!(got, st(state, 1000));
        // Same name prefix, different state: refused.
        assert_eq!(
            c.open(&h, "AbCdEfGhIjKlMnOpXXXXXX", 1001),
            Err(StateError::Invalid)
        );
        assert_eq!(
            c.open(&h, "ZZZZZZZZZZZZZZZZZZZZZZ", 1001),
            Err(StateError::Missing)
        );
        assert_eq!(c.open(&h, state, 1000 + 600), Err(StateError::Expired));
        assert_eq!(
            c.open(&http::HeaderMap::new(), state, 1001),
            Err(StateError::Missing)
        );
    }

    #[test]
    fn oldest_attempts_are_dropped_beyond_the_limit() {
        let c = lc(3);
        let cookies: Vec<_> = (0..3)
            .map(|i| {
                c.set(
                    &st(&format!("state{i}-aaaaaaaaaaaaaaaaa"), 1000 + i),
                    &attrs(),
                )
                .unwrap()
            })
            .collect();
        let h = jar(&cookies);
        let expired = c.prune(&h, &attrs(), 1010);
        assert_eq!(expired.len(), 1);
        assert!(
            expired[0]
                .to_str()
                .unwrap()
                .starts_with("s_login_state0-aaaaaaaaa=;"),
            "{expired:?}"
        );
    }
}
