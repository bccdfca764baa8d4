//! Identity headers sent upstream. Before any are added, every header the gateway may set, and
//! the well-known family peers use, is removed from the client's request in every spelling, so
//! a client can never pose as a user.

use super::bearer::VerifiedToken;
use super::{Authenticator, Credential, Identity};
use crate::claims::to_text;
use crate::config::{Config, Provider};
use crate::http::headers::{HeaderSet, IDENTITY_PREFIXES, default_scrubbed};
use crate::session::Session;
use base64::Engine;
use pingora::http::RequestHeader;
use serde_json::{Map, Value};

/// The headers to remove from every request: the defaults (less `keep_headers`), every
/// header a provider is configured to set (except `Authorization`, which is the gateway's on
/// authenticated routes only) and `[server] scrub_headers`.
pub fn scrub_set(config: &Config) -> HeaderSet {
    let keep = HeaderSet::new(config.server.keep_headers.iter().map(String::as_str), []);
    let mut names: Vec<String> = default_scrubbed()
        .filter(|n| !keep.contains(n))
        .map(str::to_owned)
        .collect();
    names.extend(config.server.scrub_headers.iter().cloned());
    names.extend(
        config
            .identity_assertion
            .iter()
            .map(|a| a.header.as_str().to_owned()),
    );
    for p in &config.providers {
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
        IDENTITY_PREFIXES.iter().copied(),
    )
}

/// The headers describing a session to the upstream, as configured for its provider, within
/// its `max_identity_header_bytes`.
pub fn session_headers(
    cfg: &Provider,
    session: &Session,
) -> Vec<(http::HeaderName, http::HeaderValue)> {
    let mut out = Vec::new();
    if let Some((name, prefix)) = &cfg.upstream_access_token_header {
        let value = match prefix {
            Some(p) => format!("{p} {}", session.data.access_token.text()),
            None => session.data.access_token.text().into_owned(),
        };
        push(&mut out, name, &value);
    }
    out.extend(claim_headers(
        cfg,
        Some(&session.data.sub),
        &session.data.claims_once(),
    ));
    if let Some(name) = &cfg.upstream_id_token_header {
        push(&mut out, name, &session.data.id_token.text());
    }
    within_limit(cfg, out)
}

/// The headers describing a bearer or introspected token's subject (the client's own
/// `Authorization` is forwarded unchanged), within `max_identity_header_bytes`.
pub fn token_headers(
    cfg: &Provider,
    token: &VerifiedToken,
) -> Vec<(http::HeaderName, http::HeaderValue)> {
    within_limit(cfg, claim_headers(cfg, token.sub(), &token.claims))
}

/// `headers` (in order of importance) within the provider's `max_identity_header_bytes`,
/// counting each as `name: value` and its line end. One that would go over is left out whole,
/// never cut short: a shortened group list would authorize on the wrong groups. Computed once
/// per session or token, so the warning comes once too.
fn within_limit(
    cfg: &Provider,
    headers: Vec<(http::HeaderName, http::HeaderValue)>,
) -> Vec<(http::HeaderName, http::HeaderValue)> {
    let limit = cfg.max_identity_header_bytes;
    if limit == 0 {
        return headers;
    }
    let mut total = 0;
    let mut left_out = Vec::new();
    let kept = headers
        .into_iter()
        .filter(|(name, value)| {
            let size = name.as_str().len() + 2 + value.len() + 2;
            if total + size > limit {
                left_out.push(format!("{name} ({size} bytes)"));
                false
            } else {
                total += size;
                true
            }
        })
        .collect();
    if !left_out.is_empty() {
        crate::metrics::identity_headers_left_out(&cfg.name, left_out.len());
        tracing::warn!(
            provider = %cfg.name,
            "identity headers left out, over max_identity_header_bytes ({limit}): {}",
            left_out.join(", ")
        );
    }
    kept
}

/// The claim headers (`upstream_headers`, by header name), then the user-info header.
fn claim_headers(
    cfg: &Provider,
    sub: Option<&str>,
    claims: &Map<String, Value>,
) -> Vec<(http::HeaderName, http::HeaderValue)> {
    let mut out = Vec::new();
    for (name, claim) in &cfg.upstream_headers {
        let value = if claim == "sub" {
            sub.map(str::to_owned)
        } else {
            claims.get(claim).and_then(to_text)
        };
        if let Some(v) = value {
            push(&mut out, name, &v);
        }
    }
    if let Some(name) = &cfg.upstream_user_info_header {
        let mut all = claims.clone();
        if let Some(s) = sub {
            all.insert("sub".into(), s.into());
        }
        let json = Value::Object(all).to_string();
        push(
            &mut out,
            name,
            &base64::engine::general_purpose::STANDARD.encode(json),
        );
    }
    out
}

fn push(
    out: &mut Vec<(http::HeaderName, http::HeaderValue)>,
    name: &http::HeaderName,
    value: &str,
) {
    if let Ok(v) = http::HeaderValue::from_str(value) {
        out.push((name.clone(), v));
    }
}

impl Authenticator {
    /// Sets the identity headers of a request to an authenticated route (scrubbed before), and
    /// the signed identity assertion for the upstream named `upstream` when configured.
    /// `Authorization` is the gateway's there: a validated bearer token stays, anything else the
    /// client sent is removed (optional mode without a credential, the anonymous consumer, a
    /// session, which may set its own below). A token exchanged for the upstream replaces the
    /// user's.
    pub fn identify(
        &self,
        id: Option<&Identity>,
        req: &mut RequestHeader,
        upstream: &str,
    ) -> pingora::Result<()> {
        if !id.is_some_and(|id| matches!(id.credential, Credential::Token(_))) {
            req.remove_header(&http::header::AUTHORIZATION);
        }
        let Some(id) = id else { return Ok(()) };
        for (name, value) in self.identity_headers(id) {
            req.insert_header(name.clone(), value.clone())?;
        }
        if let Some(t) = &id.upstream_token {
            // The token minted for the upstream replaces the user's own, wherever the provider
            // would have put it.
            if let Some((h, _)) = self
                .provider_of(id)
                .and_then(|p| p.upstream_access_token_header.as_ref())
            {
                req.remove_header(h);
            }
            req.insert_header(http::header::AUTHORIZATION, t.authorization.clone())?;
        }
        if let (Some(signer), Some(sub), Some(idp)) =
            (&self.identity_signer, id.sub(), self.provider_of(id))
            && let Some(jwt) = signer.assertion(sub, &idp.issuer, id.claims(), upstream)
        {
            req.insert_header(signer.header().clone(), jwt)?;
        }
        Ok(())
    }

    /// The provider that vouches for `id` (none for an anonymous consumer).
    fn provider_of(&self, id: &Identity) -> Option<&Provider> {
        match &id.credential {
            Credential::Session(s) => self
                .providers
                .list
                .iter()
                .find(|p| *p.config.name == *s.data.provider)
                .map(|p| &p.config),
            Credential::Token(t) => self.provider(t.provider),
            Credential::Anonymous => None,
        }
    }

    /// The identity headers of `id`, as configured for its provider (computed once per
    /// credential), then the consumer's.
    pub(crate) fn identity_headers<'a>(
        &'a self,
        id: &'a Identity,
    ) -> impl Iterator<Item = &'a (http::HeaderName, http::HeaderValue)> {
        let set = self.provider_of(id).and_then(|cfg| match &id.credential {
            Credential::Session(s) => Some(
                s.upstream_headers
                    .get_or_init(|| session_headers(cfg, s).into()),
            ),
            Credential::Token(t) => Some(
                t.upstream_headers
                    .get_or_init(|| token_headers(cfg, t).into()),
            ),
            Credential::Anonymous => None,
        });
        set.into_iter().flatten().chain(&id.extra_headers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(limit: usize) -> Provider {
        let text = format!(
            "[session]\nsecrets = [\"identity-test-secret-0123456789abcdef\"]\n\
             [[providers]]\nname = \"op\"\nissuer = \"https://idp.example.com\"\nclient_id = \"c\"\n\
             redirect_uri = \"https://app.example.com/oauth2/callback\"\n\
             max_identity_header_bytes = {limit}\n"
        );
        Config::parse(&text, std::path::Path::new("gw.toml"))
            .unwrap()
            .providers
            .remove(0)
    }

    fn header(name: &'static str, len: usize) -> (http::HeaderName, http::HeaderValue) {
        (
            http::HeaderName::from_static(name),
            http::HeaderValue::from_str(&"v".repeat(len)).unwrap(),
        )
    }

    #[test]
    fn a_header_that_would_go_over_the_limit_is_left_out_whole() {
        // Each counts its name, ": ", value and line end: x-a is 3 + 2 + 40 + 2 = 47 bytes.
        let headers = vec![header("x-a", 40), header("x-b", 60), header("x-c", 40)];
        let names = |kept: Vec<(http::HeaderName, http::HeaderValue)>| -> Vec<String> {
            kept.into_iter().map(|(n, _)| n.to_string()).collect()
        };
        assert_eq!(
            names(within_limit(&provider(100), headers.clone())),
            ["x-a", "x-c"],
            "x-b does not fit after x-a; x-c still does"
        );
        assert_eq!(names(within_limit(&provider(93), headers.clone())), ["x-a"]);
        assert_eq!(
            names(within_limit(&provider(0), headers.clone())),
            ["x-a", "x-b", "x-c"],
            "0: no limit"
        );
        let kept = within_limit(&provider(8192), headers);
        assert!(kept.iter().all(|(_, v)| v.len() == 40 || v.len() == 60));
    }
}
