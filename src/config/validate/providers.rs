//! `[[providers]]` and the gateway's own paths (callbacks, logout, userinfo), which no two
//! providers may share.

use super::Builder;
use crate::config::raw::*;
use crate::config::*;
use std::time::Duration;

impl Builder<'_> {
    pub(super) fn provider(&mut self, i: usize, raw: &RawProvider) -> Provider {
        let key = |k: &str| format!("providers[{i}].{k}");
        self.name(&raw.name, &key("name"));
        let issuer = raw.issuer.get_ref().clone();
        self.url(&raw.issuer, &key("issuer"));
        let redirect = self.url(&raw.redirect_uri, &key("redirect_uri"));
        let callback_path = redirect
            .as_ref()
            .map_or_else(|| "/oauth2/callback".to_owned(), |u| u.path().to_owned());
        let secure_cookies = redirect.as_ref().is_none_or(|u| u.scheme() == "https");
        let client_secret = self.secret_value(
            &raw.client_secret,
            &raw.client_secret_file,
            &key("client_secret"),
        );
        let client_auth = self.client_auth(raw, &key);
        let client_key = self.client_key(raw, client_auth, &key);
        let mut scopes: Vec<String> = match &raw.scopes {
            None => vec!["openid".into(), "email".into(), "profile".into()],
            Some(list) => list.iter().map(|s| s.get_ref().clone()).collect(),
        };
        if !scopes.iter().any(|s| s == "openid") {
            scopes.insert(0, "openid".into());
        }
        let upstream_access_token_header = self.access_token_header(raw, &key);
        let single_header = |b: &mut Self, v: &Option<SStr>, k: &str| {
            v.as_ref()
                .filter(|v| !v.get_ref().is_empty())
                .and_then(|v| b.header_name(v.get_ref(), v.span(), &key(k)))
        };
        let upstream_id_token_header = single_header(
            self,
            &raw.upstream_id_token_header,
            "upstream_id_token_header",
        );
        let upstream_user_info_header = single_header(
            self,
            &raw.upstream_user_info_header,
            "upstream_user_info_header",
        );
        let upstream_headers = self.upstream_headers(raw, &key);
        let logout_path = match &raw.logout_path {
            None => "/oauth2/logout".to_owned(),
            Some(p) => self.own_path(p, &key("logout_path")),
        };
        let backchannel_logout_path = match &raw.backchannel_logout_path {
            None => "/oauth2/backchannel-logout".to_owned(),
            Some(p) => self.own_path(p, &key("backchannel_logout_path")),
        };
        let logout_redirect_uri = raw.logout_redirect_uri.as_ref().and_then(|u| {
            self.url(u, &key("logout_redirect_uri"))?;
            Some(u.get_ref().clone())
        });
        let logout_methods = self.logout_methods(raw, &key);
        Provider {
            name: raw.name.get_ref().clone(),
            issuer,
            client_id: raw.client_id.get_ref().clone(),
            client_secret,
            client_auth,
            client_key,
            redirect_uri: raw.redirect_uri.get_ref().clone(),
            callback_path,
            scopes,
            upstream_access_token_header,
            upstream_id_token_header,
            upstream_user_info_header,
            upstream_headers,
            max_identity_header_bytes: self.count(
                &raw.max_identity_header_bytes,
                &key("max_identity_header_bytes"),
                8192,
                0,
            ),
            logout_path,
            logout_redirect_uri,
            logout_methods,
            backchannel_logout_path,
            backchannel_logout_allow_jwt_typ: raw.backchannel_logout_allow_jwt_typ.unwrap_or(false),
            use_userinfo: raw.use_userinfo.unwrap_or(true),
            revoke_tokens_on_logout: raw.revoke_tokens_on_logout.unwrap_or(true),
            allow_hmac_id_tokens: raw.allow_hmac_id_tokens.unwrap_or(false),
            pushed_authorization_requests: raw
                .pushed_authorization_requests
                .as_ref()
                .and_then(|p| {
                    self.one_of(
                        p,
                        &key("pushed_authorization_requests"),
                        "pushed_authorization_requests",
                        &[
                            ("auto", Par::Auto),
                            ("required", Par::Required),
                            ("off", Par::Off),
                        ],
                    )
                })
                .unwrap_or(Par::Auto),
            timeout: self.duration(&raw.timeout, &key("timeout"), Duration::from_secs(5)),
            connect_timeout: self.duration(
                &raw.connect_timeout,
                &key("connect_timeout"),
                Duration::from_secs(2),
            ),
            leeway: self.duration(&raw.leeway, &key("leeway"), Duration::from_secs(30)),
            jwks_refresh_cooldown: self.duration(
                &raw.jwks_refresh_cooldown,
                &key("jwks_refresh_cooldown"),
                Duration::from_secs(30),
            ),
            discovery_refresh_interval: self.duration(
                &raw.discovery_refresh_interval,
                &key("discovery_refresh_interval"),
                Duration::from_secs(3600),
            ),
            max_stale: self.duration(
                &raw.max_stale,
                &key("max_stale"),
                Duration::from_secs(24 * 3600),
            ),
            secure_cookies,
            introspection_cache_ttl: self.duration(
                &raw.introspection_cache_ttl,
                &key("introspection_cache_ttl"),
                Duration::from_secs(300),
            ),
            ca_file: raw
                .ca_file
                .as_ref()
                .and_then(|f| self.existing_file(f, &key("ca_file"))),
            outbound: self.outbound(raw, &key),
            groups_source: raw.groups_source.as_ref().and_then(|g| match g.get_ref().as_str() {
                "userinfo" if raw.use_userinfo == Some(false) => {
                    self.err(
                        g.span(),
                        key("groups_source"),
                        "\"userinfo\" needs the userinfo call at sign-in: remove use_userinfo = false, or give a URL",
                    );
                    None
                }
                "userinfo" => Some(GroupsSource::Userinfo),
                _ => self
                    .url(g, &key("groups_source"))
                    .map(|u| GroupsSource::Url(u.to_string())),
            }),
            introspection_negative_ttl: self.duration(
                &raw.introspection_negative_ttl,
                &key("introspection_negative_ttl"),
                Duration::from_secs(10),
            ),
        }
    }

    /// `client_auth`: how the gateway authenticates at the token endpoint.
    fn client_auth(&mut self, raw: &RawProvider, key: &dyn Fn(&str) -> String) -> ClientAuth {
        match raw
            .client_auth
            .as_ref()
            .map(|a| (a.get_ref().as_str(), a.span()))
        {
            None | Some(("client_secret_basic", _)) => ClientAuth::Basic,
            Some(("client_secret_post", _)) => ClientAuth::Post,
            Some(("private_key_jwt", _)) => ClientAuth::PrivateKeyJwt,
            Some(("tls_client_auth", span)) => {
                if raw.client_cert_file.is_none() {
                    self.err(
                        span,
                        key("client_auth"),
                        "client_auth = \"tls_client_auth\" needs client_cert_file and client_key_file (the certificate registered with the provider)",
                    );
                }
                ClientAuth::TlsClientAuth
            }
            Some((other, span)) => {
                self.err(span, key("client_auth"), format!("unknown client_auth {other:?}: expected \"client_secret_basic\", \"client_secret_post\", \"private_key_jwt\" or \"tls_client_auth\""));
                ClientAuth::Basic
            }
        }
    }

    /// `upstream_access_token_header`: `Authorization: Bearer` by default, `""` for none, or
    /// `name[:prefix]`.
    fn access_token_header(
        &mut self,
        raw: &RawProvider,
        key: &dyn Fn(&str) -> String,
    ) -> Option<(http::HeaderName, Option<String>)> {
        match &raw.upstream_access_token_header {
            None => Some((http::header::AUTHORIZATION, Some("Bearer".to_owned()))),
            Some(v) if v.get_ref().is_empty() => None,
            Some(v) => {
                let (name, prefix) = match v.get_ref().split_once(':') {
                    Some((n, p)) => (n, Some(p)),
                    None => (v.get_ref().as_str(), None),
                };
                let prefix = prefix.map(|p| {
                    // Kong writes "authorization:bearer"; send the scheme as RFC 6750 spells it.
                    if p.eq_ignore_ascii_case("bearer") {
                        "Bearer".to_owned()
                    } else {
                        p.to_owned()
                    }
                });
                self.header_name(name, v.span(), &key("upstream_access_token_header"))
                    .map(|h| (h, prefix))
            }
        }
    }

    /// `upstream_headers`: header name to claim; `sub` and `email` by default.
    fn upstream_headers(
        &mut self,
        raw: &RawProvider,
        key: &dyn Fn(&str) -> String,
    ) -> Vec<(http::HeaderName, String)> {
        match &raw.upstream_headers {
            None => vec![
                (
                    http::HeaderName::from_static("x-auth-request-user"),
                    "sub".to_owned(),
                ),
                (
                    http::HeaderName::from_static("x-auth-request-email"),
                    "email".to_owned(),
                ),
            ],
            Some(map) => map
                .get_ref()
                .iter()
                .filter_map(|(h, claim)| {
                    self.header_name(h, map.span(), &key("upstream_headers"))
                        .map(|n| (n, claim.clone()))
                })
                .collect(),
        }
    }

    /// `logout_methods`: POST by default; GET may be added.
    fn logout_methods(
        &mut self,
        raw: &RawProvider,
        key: &dyn Fn(&str) -> String,
    ) -> Vec<http::Method> {
        match &raw.logout_methods {
            None => vec![http::Method::POST],
            Some(list) => list
                .iter()
                .filter_map(|m| match m.get_ref().to_ascii_uppercase().as_str() {
                    "POST" => Some(http::Method::POST),
                    "GET" => Some(http::Method::GET),
                    _ => {
                        self.err(
                            m.span(),
                            key("logout_methods"),
                            format!(
                                "unsupported logout method {:?}: expected \"POST\" or \"GET\"",
                                m.get_ref()
                            ),
                        );
                        None
                    }
                })
                .collect(),
        }
    }

    /// The gateway's own endpoints must not collide with each other.
    pub(super) fn own_paths(
        &mut self,
        providers: &[Provider],
        session: Option<&SessionSettings>,
        raw: &[RawProvider],
    ) {
        let mut seen: Vec<(&str, String)> = Vec::new();
        if let Some(s) = session {
            seen.push((&s.userinfo_path, "session.userinfo_path".to_owned()));
        }
        for (i, (p, r)) in providers.iter().zip(raw).enumerate() {
            for (path, k, span) in [
                (&p.callback_path, "redirect_uri", r.redirect_uri.span()),
                (
                    &p.logout_path,
                    "logout_path",
                    r.logout_path.as_ref().map_or(r.name.span(), |l| l.span()),
                ),
            ] {
                let key = format!("providers[{i}].{k}");
                if let Some((_, other)) = seen.iter().find(|(q, _)| *q == path.as_str()) {
                    self.err(
                        span,
                        &key,
                        format!("path {path:?} is already used by {other}"),
                    );
                } else {
                    seen.push((path, key));
                }
            }
        }
        // Back-channel logout paths may be shared by providers (the token's issuer picks the
        // provider), but not with any other endpoint.
        for (i, (p, r)) in providers.iter().zip(raw).enumerate() {
            let path = p.backchannel_logout_path.as_str();
            if let Some((_, other)) = seen.iter().find(|(q, _)| *q == path) {
                let span = r
                    .backchannel_logout_path
                    .as_ref()
                    .map_or(r.name.span(), |l| l.span());
                self.err(
                    span,
                    format!("providers[{i}].backchannel_logout_path"),
                    format!("path {path:?} is already used by {other}"),
                );
            }
        }
    }

    pub(super) fn own_path(&mut self, raw: &SStr, key: &str) -> String {
        let p = raw.get_ref();
        if !p.starts_with('/') || p.contains(['?', '#', '%', '\\']) {
            self.err(
                raw.span(),
                key,
                format!("invalid path {p:?}: expected an absolute path such as \"/oauth2/logout\""),
            );
        }
        p.clone()
    }

    /// The private key of `private_key_jwt`: required with it, refused without it.
    fn client_key(
        &mut self,
        raw: &RawProvider,
        auth: ClientAuth,
        key: &dyn Fn(&str) -> String,
    ) -> Option<ClientKey> {
        let file = match (&raw.client_private_key_file, auth) {
            (Some(f), ClientAuth::PrivateKeyJwt) => f,
            (None, ClientAuth::PrivateKeyJwt) => {
                let span = raw
                    .client_auth
                    .as_ref()
                    .map_or(raw.name.span(), |a| a.span());
                self.err(
                    span,
                    key("client_private_key_file"),
                    "client_auth = \"private_key_jwt\" needs client_private_key_file (a PEM RSA or EC P-256 private key)",
                );
                return None;
            }
            (Some(f), _) => {
                self.err(
                    f.span(),
                    key("client_private_key_file"),
                    "only used with client_auth = \"private_key_jwt\"",
                );
                return None;
            }
            (None, _) => return None,
        };
        if self.posted {
            // A key is not read from the gateway's machine for a posted configuration.
            return None;
        }
        let pem = match std::fs::read_to_string(file.get_ref()) {
            Ok(p) => p,
            Err(e) => {
                self.err(
                    file.span(),
                    key("client_private_key_file"),
                    format!("cannot read {:?}: {e}", file.get_ref()),
                );
                return None;
            }
        };
        // Parsing alone accepts a public key too: the key must sign.
        let signs = |alg, key: jsonwebtoken::errors::Result<jsonwebtoken::EncodingKey>| {
            key.is_ok_and(|k| {
                jsonwebtoken::encode(&jsonwebtoken::Header::new(alg), &[0u8; 0], &k).is_ok()
            })
        };
        use jsonwebtoken::{Algorithm, EncodingKey};
        let alg = if signs(Algorithm::RS256, EncodingKey::from_rsa_pem(pem.as_bytes())) {
            Algorithm::RS256
        } else if signs(Algorithm::ES256, EncodingKey::from_ec_pem(pem.as_bytes())) {
            Algorithm::ES256
        } else {
            self.err(
                file.span(),
                key("client_private_key_file"),
                format!(
                    "{:?} holds no RSA or EC P-256 private key in PEM",
                    file.get_ref()
                ),
            );
            return None;
        };
        Some(ClientKey {
            pem: Secret::new(pem),
            alg,
            kid: raw.client_key_id.as_ref().map(|k| k.get_ref().clone()),
        })
    }
}
