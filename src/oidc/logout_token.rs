//! Back-Channel Logout 1.0 logout tokens, validated like an ID token and then some: signature
//! with the provider's keys (`alg` from the key, never `none`), `iss`, `aud`, `iat` within a
//! window, `exp` when present; then the `events` member with the back-channel event, no
//! `nonce` (so an ID token can never pass for one), a `sid` or a `sub`, and a `jti` (the caller
//! refuses replays of it). `typ` must be `logout+jwt`, unless the provider is configured to
//! accept plain `JWT` (Keycloak sends that).

use super::jws::{JwsError, Unverified};
use super::provider::Providers;
use crate::config::ProviderId;
use jsonwebtoken::Validation;
use serde_json::{Map, Value};

/// The event a logout token must carry.
pub const BACKCHANNEL_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// How old a logout token's `iat` may be (plus the provider's leeway).
pub const MAX_AGE: u64 = 120;

/// A valid logout token: whom to log out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutToken {
    /// Index of the provider that issued it.
    pub provider: ProviderId,
    /// The IdP session to end, if named.
    pub sid: Option<String>,
    /// The user to log out, if named.
    pub sub: Option<String>,
    /// Its unique id (single use).
    pub jti: String,
}

/// Why a logout token was refused (a 400 to the provider).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogoutTokenError {
    /// Not a signed JWT, or its parts do not decode.
    #[error("the logout token is malformed")]
    Malformed,
    /// `typ` is not `logout+jwt` (and plain `JWT` is not allowed for this provider).
    #[error("the logout token's typ is not logout+jwt")]
    Typ,
    /// `iss` is not a provider with this back-channel logout path.
    #[error("the logout token's issuer is not accepted here")]
    UnknownIssuer,
    /// No key with the token's `kid`, even after fetching the keys again.
    #[error("the logout token is signed with an unknown key")]
    UnknownKey,
    /// The token's `alg` is not its key's.
    #[error("the logout token's algorithm does not match its key")]
    Algorithm,
    /// The signature does not verify.
    #[error("the logout token's signature is invalid")]
    Signature,
    /// `aud` is not our client id.
    #[error("the logout token is not meant for this client (audience)")]
    Audience,
    /// `exp` passed, or `iat` is missing, too old or in the future.
    #[error("the logout token is expired, too old or not yet valid")]
    Time,
    /// No `events` member with the back-channel logout event.
    #[error("the logout token has no back-channel logout event")]
    Events,
    /// It carries a `nonce` (an ID token, not a logout token).
    #[error("the logout token must not carry a nonce")]
    Nonce,
    /// Neither `sid` nor `sub`.
    #[error("the logout token names neither a session (sid) nor a user (sub)")]
    Subject,
    /// No `jti`.
    #[error("the logout token has no jti")]
    Jti,
    /// The provider's keys could not be had.
    #[error("the provider's keys are unavailable")]
    Unavailable,
}

/// Validates `token` as a logout token from one of the providers `candidates`, at `now`.
pub async fn verify(
    providers: &Providers,
    candidates: &[ProviderId],
    token: &str,
    now: u64,
) -> Result<LogoutToken, LogoutTokenError> {
    let jws = Unverified::read(providers, candidates, token)?;
    let config = &providers
        .handle(jws.provider)
        .ok_or(LogoutTokenError::UnknownIssuer)?
        .config;
    // Before the keys: a token of the wrong type never causes a JWKS fetch.
    check_typ(
        jws.header.typ.as_deref(),
        config.backchannel_logout_allow_jwt_typ,
    )?;
    let claims = jws
        .verify(providers, |config, alg| {
            let mut v = Validation::new(alg);
            v.leeway = config.leeway.as_secs();
            v.set_issuer(&[&config.issuer]);
            v.set_audience(&[&config.client_id]);
            // `exp` is optional in a logout token, but checked when present.
            v.required_spec_claims = ["iss".to_owned(), "aud".to_owned()].into();
            v.validate_exp = true;
            v
        })
        .await?;
    check_claims(&claims, now, config.leeway.as_secs()).map(|(sid, sub, jti)| LogoutToken {
        provider: jws.provider,
        sid,
        sub,
        jti,
    })
}

impl From<JwsError> for LogoutTokenError {
    fn from(e: JwsError) -> LogoutTokenError {
        match e {
            JwsError::UnknownIssuer | JwsError::Issuer => LogoutTokenError::UnknownIssuer,
            JwsError::UnknownKey => LogoutTokenError::UnknownKey,
            JwsError::Algorithm => LogoutTokenError::Algorithm,
            JwsError::Signature => LogoutTokenError::Signature,
            JwsError::Time => LogoutTokenError::Time,
            JwsError::Audience => LogoutTokenError::Audience,
            JwsError::Unavailable => LogoutTokenError::Unavailable,
            JwsError::Malformed | JwsError::MissingClaim => LogoutTokenError::Malformed,
        }
    }
}

/// `logout+jwt` (or its media type form) always; plain `JWT` or none only when allowed.
fn check_typ(typ: Option<&str>, allow_jwt: bool) -> Result<(), LogoutTokenError> {
    let t = typ.map(str::to_ascii_lowercase);
    match t.as_deref() {
        Some("logout+jwt" | "application/logout+jwt") => Ok(()),
        Some("jwt") | None if allow_jwt => Ok(()),
        _ => Err(LogoutTokenError::Typ),
    }
}

type Named = (Option<String>, Option<String>, String);

/// The checks past the signature: times, events, nonce, subject, jti.
fn check_claims(c: &Map<String, Value>, now: u64, leeway: u64) -> Result<Named, LogoutTokenError> {
    use LogoutTokenError as E;
    let iat = c.get("iat").and_then(Value::as_u64).ok_or(E::Time)?;
    if iat > now.saturating_add(leeway) || iat.saturating_add(MAX_AGE + leeway) < now {
        return Err(E::Time);
    }
    let event = c
        .get("events")
        .and_then(Value::as_object)
        .and_then(|e| e.get(BACKCHANNEL_EVENT));
    if !event.is_some_and(Value::is_object) {
        return Err(E::Events);
    }
    if c.contains_key("nonce") {
        return Err(E::Nonce);
    }
    let text = |k: &str| {
        c.get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let (sid, sub) = (text("sid"), text("sub"));
    if sid.is_none() && sub.is_none() {
        return Err(E::Subject);
    }
    let jti = text("jti").ok_or(E::Jti)?;
    Ok((sid, sub, jti))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn good(now: u64) -> Value {
        json!({"iat": now, "jti": "j1", "sid": "s1",
               "events": {BACKCHANNEL_EVENT: {}}})
    }

    #[test]
    fn the_claims_past_the_signature_are_each_required() {
        let now = 1_000_000;
        assert_eq!(
            check_claims(&claims(good(now)), now, 5),
            Ok((Some("s1".into()), None, "j1".into()))
        );
        let cases: Vec<(Value, LogoutTokenError)> = vec![
            (json!({"iat": null}), LogoutTokenError::Time),
            (json!({"iat": now - 200}), LogoutTokenError::Time),
            (json!({"iat": now + 60}), LogoutTokenError::Time),
            (json!({"events": null}), LogoutTokenError::Events),
            (json!({"events": {"other": {}}}), LogoutTokenError::Events),
            (
                json!({"events": {BACKCHANNEL_EVENT: "yes"}}),
                LogoutTokenError::Events,
            ),
            (json!({"nonce": "n"}), LogoutTokenError::Nonce),
            (json!({"sid": null}), LogoutTokenError::Subject),
            (json!({"jti": null}), LogoutTokenError::Jti),
        ];
        for (change, want) in cases {
            let mut c = claims(good(now));
            for (k, v) in change.as_object().unwrap() {
                if v.is_null() {
                    c.remove(k);
                } else {
                    c.insert(k.clone(), v.clone());
                }
            }
            assert_eq!(check_claims(&c, now, 5), Err(want), "{change}");
        }
    }

    #[test]
    fn typ_is_logout_jwt_unless_plain_jwt_is_allowed() {
        assert!(check_typ(Some("logout+jwt"), false).is_ok());
        assert!(check_typ(Some("application/logout+jwt"), false).is_ok());
        assert!(check_typ(Some("JWT"), false).is_err());
        assert!(check_typ(None, false).is_err());
        assert!(check_typ(Some("JWT"), true).is_ok());
        assert!(check_typ(None, true).is_ok());
        assert!(check_typ(Some("at+jwt"), true).is_err());
    }
}
