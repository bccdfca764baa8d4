//! Identity headers sent upstream. Before any are added, every header the gateway may set, and
//! the well-known family peers use, is removed from the client's request in every spelling, so
//! a client can never pose as a user.

use crate::config::Provider;
use crate::http::headers::HeaderSet;
use crate::session::Session;
use base64::Engine;

/// Identity headers a client must never be able to send to an upstream.
const FAMILY: &[&str] = &[
    "x-forwarded-user",
    "x-forwarded-email",
    "x-forwarded-groups",
    "x-forwarded-preferred-username",
    "x-forwarded-access-token",
    "x-userinfo",
    "x-id-token",
    "x-access-token",
    "x-credential-identifier",
    "x-authenticated-groups",
    "x-authenticated-userid",
    "x-anonymous-consumer",
    "x-remote-user",
    "remote-user",
];

/// Prefixes of identity header families.
const FAMILY_PREFIXES: &[&str] = &["x-auth-request-", "x-consumer-"];

/// The headers to remove: the family above plus every header a provider is configured to set
/// (except `Authorization`, which is only replaced on session-authenticated routes).
pub fn scrub_set(providers: &[Provider]) -> HeaderSet {
    let mut names: Vec<String> = FAMILY.iter().map(|s| (*s).to_owned()).collect();
    for p in providers {
        names.extend(
            p.upstream_headers
                .iter()
                .map(|(h, _)| h.as_str().to_owned()),
        );
        names.extend(
            p.upstream_id_token_header
                .iter()
                .map(|h| h.as_str().to_owned()),
        );
        names.extend(
            p.upstream_user_info_header
                .iter()
                .map(|h| h.as_str().to_owned()),
        );
        if let Some((h, _)) = &p.upstream_access_token_header
            && h != http::header::AUTHORIZATION
        {
            names.push(h.as_str().to_owned());
        }
    }
    HeaderSet::new(
        names.iter().map(String::as_str),
        FAMILY_PREFIXES.iter().copied(),
    )
}

/// The headers describing `session` to the upstream, as configured for its provider.
pub fn upstream_headers(
    cfg: &Provider,
    session: &Session,
) -> Vec<(http::HeaderName, http::HeaderValue)> {
    let mut out = Vec::new();
    let mut push = |name: &http::HeaderName, value: String| {
        if let Ok(v) = http::HeaderValue::from_str(&value) {
            out.push((name.clone(), v));
        }
    };
    if let Some((name, prefix)) = &cfg.upstream_access_token_header {
        let value = match prefix {
            Some(p) => format!("{p} {}", session.data.access_token),
            None => session.data.access_token.clone(),
        };
        push(name, value);
    }
    if let Some(name) = &cfg.upstream_id_token_header {
        push(name, session.data.id_token.clone());
    }
    if let Some(name) = &cfg.upstream_user_info_header {
        let mut claims = session.data.claims.clone();
        claims.insert("sub".into(), session.data.sub.clone().into());
        let json = serde_json::Value::Object(claims).to_string();
        push(name, base64::engine::general_purpose::STANDARD.encode(json));
    }
    for (name, claim) in &cfg.upstream_headers {
        let value = if claim == "sub" {
            Some(session.data.sub.clone())
        } else {
            session.claim_str(claim)
        };
        if let Some(v) = value {
            push(name, v);
        }
    }
    out
}
