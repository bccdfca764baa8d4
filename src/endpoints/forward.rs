//! Forward-auth: the authentication decision alone, for a proxy that stays in front (nginx
//! `auth_request`, Traefik `ForwardAuth`, Caddy `forward_auth`, Envoy `ext_authz`), as
//! oauth2-proxy's `/oauth2/auth` and `/oauth2/start` do.
//!
//! The decision endpoint answers 202 (or `allowed_status = 200`, for Envoy) with the identity
//! in response headers (for `auth_request_set`) and the client's cookies without the gateway's
//! (`Cookie`), 401 or 403; with `unauthenticated = "redirect"` a browser gets the redirect to
//! sign in instead of the 401. The URL the user asked for comes from `X-Original-URL` or
//! `X-Forwarded-Proto`/`-Host`/`-Uri`, believed only from `trusted_proxies`, and every return
//! target goes through the one redirect validator.

use super::Endpoints;
use crate::auth::{Credential, Identity};
use crate::clock::now;
use crate::http::responses::Reply;
use crate::http::{cookies, redirect};
use http::{HeaderName, HeaderValue};
use pingora::http::RequestHeader;
use serde_json::Value;

/// The identity headers every forward-auth answer carries (oauth2-proxy's names), besides the
/// provider's configured identity headers.
const USER: HeaderName = HeaderName::from_static("x-auth-request-user");
const EMAIL: HeaderName = HeaderName::from_static("x-auth-request-email");
const PREFERRED_USERNAME: HeaderName = HeaderName::from_static("x-auth-request-preferred-username");
const GROUPS: HeaderName = HeaderName::from_static("x-auth-request-groups");

impl Endpoints {
    /// The decision for forward-auth endpoint `i`. `from_proxy`: the peer is a trusted proxy,
    /// whose `X-Original-URL` / `X-Forwarded-*` headers name what the user asked for.
    pub(super) async fn forward_auth(
        &self,
        i: usize,
        req: &RequestHeader,
        client: Option<std::net::IpAddr>,
        from_proxy: bool,
        html: bool,
    ) -> Reply {
        let Some(fa) = self.forward.get(i) else {
            return Reply::empty(404);
        };
        let return_to = from_proxy
            .then(|| original_target(&req.headers))
            .flatten()
            .unwrap_or_else(|| "/".to_owned());
        let reply = match self
            .auth
            .authenticate(
                &fa.auth,
                req,
                client,
                None,
                &return_to,
                &self.forward_metrics,
            )
            .await
        {
            Ok(Some(id)) => self.accepted(&id, fa.allowed_status),
            Ok(None) => Reply::empty(fa.allowed_status),
            Err(denied) => return denied.render(html),
        };
        // The proxy in front copies this back onto the request, so the application gets the
        // client's cookies without the gateway's own (nginx cannot filter cookies itself).
        let others = cookies::others(&req.headers, |n| self.auth.is_own_cookie(n));
        match HeaderValue::from_bytes(&others) {
            Ok(v) if !others.is_empty() => reply.with_header(http::header::COOKIE, v),
            _ => reply,
        }
    }

    /// `start_path?rd=...`: begins a sign-in that returns to `rd` (a path, or a URL on the
    /// requested host; anything else returns to `/`).
    pub(super) async fn forward_start(
        &self,
        i: usize,
        req: &RequestHeader,
        client: Option<std::net::IpAddr>,
        html: bool,
    ) -> Reply {
        let Some(fa) = self.forward.get(i) else {
            return Reply::empty(404);
        };
        let host = crate::http::headers::request_host(req);
        let rd = req
            .uri
            .query()
            .and_then(rd_param)
            .and_then(|rd| redirect::on_host(&rd, host))
            .unwrap_or_else(|| "/".to_owned());
        self.auth
            .start_login(&fa.auth, req, client, &rd, now(), None)
            .await
            .render(html)
    }

    /// The "yes" (`status`: 202, or 200 for Envoy) with the identity: the provider's identity
    /// headers, oauth2-proxy's `X-Auth-Request-*` where those do not set them already, and any
    /// renewed session cookie.
    fn accepted(&self, id: &Identity, status: u16) -> Reply {
        let mut reply = Reply::empty(status);
        let mut set = Vec::new();
        for (name, value) in self.auth.identity_headers(id) {
            set.push(name.clone());
            reply = reply.with_header(name.clone(), value.clone());
        }
        let (sub, claims) = match &id.credential {
            Credential::Session(s) => (Some(s.data.sub.to_string()), id.credential.claims()),
            Credential::Token(t) => (t.sub().map(str::to_owned), id.credential.claims()),
            Credential::Anonymous => (None, None),
        };
        let text = |v: Option<&Value>| match v {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Array(a)) => Some(
                a.iter()
                    .filter_map(|g| g.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            _ => None,
        };
        let claim = |name: &str| text(claims.and_then(|c| c.get(name)));
        for (name, value) in [
            (USER, sub),
            (EMAIL, claim("email")),
            (PREFERRED_USERNAME, claim("preferred_username")),
            (GROUPS, claim("groups")),
        ] {
            if let Some(v) = value.and_then(|v| HeaderValue::from_str(&v).ok())
                && !set.contains(&name)
            {
                reply = reply.with_header(name, v);
            }
        }
        reply.with_cookies(id.set_cookies.iter().cloned())
    }
}

/// The `rd` parameter of a sign-in start's `query`. nginx cannot percent-encode
/// `$request_uri`, so `return 302 /oauth2/start?rd=$request_uri` sends `rd=/p?a=1&b=2`: an
/// `rd` whose value is a bare path or URL takes the rest of the query as it is, `&`s and
/// escapes included (and must then come last, as in the shipped snippet). An encoded one
/// (`rd=%2Fp%3Fa%3D1`) is decoded as usual.
fn rd_param(query: &str) -> Option<String> {
    let start = if query.starts_with("rd=") {
        Some(3)
    } else {
        query.find("&rd=").map(|i| i + 4)
    };
    if let Some(raw) = start.map(|i| &query[i..])
        && (raw.starts_with('/') || raw.starts_with("http://") || raw.starts_with("https://"))
    {
        return Some(raw.to_owned());
    }
    openidconnect::url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "rd")
        .map(|(_, v)| v.into_owned())
}

/// The path and query the user asked for, from a trusted proxy's headers: `X-Original-URL`
/// (nginx, Envoy) or `X-Forwarded-Uri` (Traefik, Caddy). Kept only as a same-origin path: the
/// sign-in returns there on the host whose callback it completes on.
fn original_target(headers: &http::HeaderMap) -> Option<String> {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let target = match get("x-original-url") {
        // Some proxies send only the request target.
        Some(path) if path.starts_with('/') => path.to_owned(),
        Some(url) => {
            let u = openidconnect::url::Url::parse(url).ok()?;
            match u.query() {
                Some(q) => format!("{}?{q}", u.path()),
                None => u.path().to_owned(),
            }
        }
        None => get("x-forwarded-uri")?.to_owned(),
    };
    redirect::same_origin_path(&target).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> http::HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (HeaderName::from_static(k), HeaderValue::from_static(v)))
            .collect()
    }

    #[test]
    fn rd_keeps_a_raw_query_whole_and_decodes_an_encoded_one() {
        assert_eq!(
            rd_param("rd=/public/?a=1&b=2&q=caf%C3%A9").as_deref(),
            Some("/public/?a=1&b=2&q=caf%C3%A9")
        );
        assert_eq!(
            rd_param("x=1&rd=https://app.test/p?a=1&b=2").as_deref(),
            Some("https://app.test/p?a=1&b=2")
        );
        assert_eq!(
            rd_param("rd=%2Fp%3Fa%3D1%26b%3D2&x=1").as_deref(),
            Some("/p?a=1&b=2")
        );
        assert_eq!(rd_param("x=1").as_deref(), None);
        assert_eq!(rd_param("ard=/x").as_deref(), None);
    }

    #[test]
    fn the_original_target_is_a_same_origin_path() {
        let t = |h: &[(&'static str, &'static str)]| original_target(&headers(h));
        assert_eq!(
            t(&[("x-original-url", "https://app.example.com/a/b?c=1")]).as_deref(),
            Some("/a/b?c=1")
        );
        assert_eq!(t(&[("x-forwarded-uri", "/x?y")]).as_deref(), Some("/x?y"));
        assert_eq!(t(&[("x-forwarded-uri", "//evil.example.com/")]), None);
        assert_eq!(t(&[("x-forwarded-uri", "/\\evil.example.com")]), None);
        assert_eq!(t(&[("x-original-url", "not a url")]), None);
        // A bare request target is kept, through the same check.
        assert_eq!(t(&[("x-original-url", "/a?b")]).as_deref(), Some("/a?b"));
        assert_eq!(t(&[("x-original-url", "//evil.example.com/")]), None);
        assert_eq!(t(&[]), None);
    }
}
