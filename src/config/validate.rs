//! Turns the raw file format into a [`Config`], collecting every error rather than the first.

use super::error::{Collector, ConfigErrors};
use super::locate;
use super::raw::*;
use super::secret;
use super::*;
use std::collections::HashSet;
use std::net::ToSocketAddrs;
use toml::Spanned;
use toml_edit::ImDocument;

pub(super) fn parse(source: &str, file: &Path) -> Result<Config, ConfigErrors> {
    let mut errs = Collector::new(file, source);
    let doc = match ImDocument::parse(source) {
        Ok(doc) => doc,
        Err(e) => {
            errs.at(
                e.span(),
                "",
                format!("invalid TOML: {}", e.message().trim()),
            );
            return Err(errs.finish().unwrap_err());
        }
    };

    let mut unknown = Vec::new();
    let result: Result<RawConfig, _> =
        serde_ignored::deserialize(toml::Deserializer::new(source), |path| {
            unknown.push(locate::from_ignored(&path))
        });
    for path in &unknown {
        errs.at(
            locate::span_of(&doc, path),
            locate::display(path),
            "unknown key",
        );
    }
    let raw = match result {
        Ok(raw) => raw,
        Err(e) => {
            let key = e
                .span()
                .map(|s| locate::display(&locate::path_at(&doc, s.start)))
                .unwrap_or_default();
            errs.at(e.span(), key, e.message().trim().to_owned());
            return Err(errs.finish().unwrap_err());
        }
    };

    let mut b = Builder { errs };
    let config = b.build(raw, file);
    b.errs.finish().map(|()| config)
}

struct Builder<'a> {
    errs: Collector<'a>,
}

impl Builder<'_> {
    fn build(&mut self, raw: RawConfig, file: &Path) -> Config {
        let server = self.server(&raw.server);
        let metrics = self.metrics(&raw.metrics);
        let log = self.log(&raw.log);
        let upstreams: Vec<Upstream> = raw
            .upstreams
            .iter()
            .enumerate()
            .map(|(i, u)| self.upstream(i, u))
            .collect();
        self.unique_names("upstreams", raw.upstreams.iter().map(|u| &u.name));
        let providers: Vec<Provider> = raw
            .providers
            .iter()
            .enumerate()
            .map(|(i, p)| self.provider(i, p))
            .collect();
        self.unique_names("providers", raw.providers.iter().map(|p| &p.name));
        let session = self.session(raw.session.as_ref(), !providers.is_empty());
        self.own_paths(&providers, session.as_ref(), &raw.providers);
        let consumers = self.consumers(&raw.consumers);
        let routes = raw
            .routes
            .iter()
            .enumerate()
            .filter_map(|(i, r)| self.route(i, r, &upstreams, &providers, &consumers))
            .collect();
        self.unique_names("routes", raw.routes.iter().map(|r| &r.name));
        Config {
            source: file.to_path_buf(),
            server,
            metrics,
            log,
            upstreams,
            routes,
            providers,
            session,
            consumers,
        }
    }

    fn provider(&mut self, i: usize, raw: &RawProvider) -> Provider {
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
        let client_auth = match raw
            .client_auth
            .as_ref()
            .map(|a| (a.get_ref().as_str(), a.span()))
        {
            None | Some(("client_secret_basic", _)) => ClientAuth::Basic,
            Some(("client_secret_post", _)) => ClientAuth::Post,
            Some((other, span)) => {
                self.err(span, key("client_auth"), format!("unknown client_auth {other:?}: expected \"client_secret_basic\" or \"client_secret_post\""));
                ClientAuth::Basic
            }
        };
        let mut scopes: Vec<String> = match &raw.scopes {
            None => vec!["openid".into(), "email".into(), "profile".into()],
            Some(list) => list.iter().map(|s| s.get_ref().clone()).collect(),
        };
        if !scopes.iter().any(|s| s == "openid") {
            scopes.insert(0, "openid".into());
        }
        let upstream_access_token_header = match &raw.upstream_access_token_header {
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
        };
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
        let upstream_headers = match &raw.upstream_headers {
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
        };
        let logout_path = match &raw.logout_path {
            None => "/oauth2/logout".to_owned(),
            Some(p) => self.own_path(p, &key("logout_path")),
        };
        let logout_redirect_uri = raw.logout_redirect_uri.as_ref().and_then(|u| {
            self.url(u, &key("logout_redirect_uri"))?;
            Some(u.get_ref().clone())
        });
        let logout_methods = match &raw.logout_methods {
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
        };
        Provider {
            name: raw.name.get_ref().clone(),
            issuer,
            client_id: raw.client_id.get_ref().clone(),
            client_secret,
            client_auth,
            redirect_uri: raw.redirect_uri.get_ref().clone(),
            callback_path,
            scopes,
            upstream_access_token_header,
            upstream_id_token_header,
            upstream_user_info_header,
            upstream_headers,
            logout_path,
            logout_redirect_uri,
            logout_methods,
            use_userinfo: raw.use_userinfo.unwrap_or(true),
            revoke_tokens_on_logout: raw.revoke_tokens_on_logout.unwrap_or(true),
            allow_hmac_id_tokens: raw.allow_hmac_id_tokens.unwrap_or(false),
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
            introspection_negative_ttl: self.duration(
                &raw.introspection_negative_ttl,
                &key("introspection_negative_ttl"),
                Duration::from_secs(10),
            ),
        }
    }

    fn consumers(&mut self, raw: &[Spanned<RawConsumer>]) -> Vec<Consumer> {
        let mut out: Vec<Consumer> = Vec::new();
        for (i, c) in raw.iter().enumerate() {
            let key = format!("consumers[{i}]");
            let r = c.get_ref();
            let username = r.username.as_ref().map(|u| u.get_ref().clone());
            let custom_id = r.custom_id.as_ref().map(|u| u.get_ref().clone());
            if username.is_none() && custom_id.is_none() {
                self.err(c.span(), &key, "a consumer needs a username or a custom_id");
                continue;
            }
            let id = match &r.id {
                Some(id) => id.get_ref().clone(),
                None => derived_uuid(
                    username
                        .as_deref()
                        .or(custom_id.as_deref())
                        .unwrap_or_default(),
                ),
            };
            for (field, value, span) in [
                (
                    "id",
                    Some(&id),
                    r.id.as_ref().map_or(c.span(), |x| x.span()),
                ),
                (
                    "username",
                    username.as_ref(),
                    r.username.as_ref().map_or(c.span(), |x| x.span()),
                ),
                (
                    "custom_id",
                    custom_id.as_ref(),
                    r.custom_id.as_ref().map_or(c.span(), |x| x.span()),
                ),
            ] {
                let Some(value) = value else { continue };
                let clash = out.iter().any(|o| match field {
                    "id" => o.id == *value,
                    "username" => o.username.as_ref() == Some(value),
                    _ => o.custom_id.as_ref() == Some(value),
                });
                if clash {
                    self.err(
                        span,
                        format!("{key}.{field}"),
                        format!("another consumer already has {field} {value:?}"),
                    );
                }
            }
            out.push(Consumer {
                id,
                username,
                custom_id,
                groups: self
                    .words(&Some(r.groups.clone()), &format!("consumers[{i}].groups"))
                    .unwrap_or_default(),
            });
        }
        out
    }

    fn route_auth(
        &mut self,
        t: &RawAuthTable,
        span: std::ops::Range<usize>,
        key: &str,
        providers: &[Provider],
        consumers: &[Consumer],
    ) -> Auth {
        let mut names: Vec<&SStr> = Vec::new();
        names.extend(t.provider.iter());
        names.extend(t.providers.iter().flatten());
        if names.is_empty() {
            self.err(
                span.clone(),
                format!("{key}.provider"),
                "missing provider: expected e.g. auth = { provider = \"okta\" }",
            );
            return Auth::None;
        }
        let mut indices = Vec::new();
        for p in names {
            match providers.iter().position(|x| x.name == *p.get_ref()) {
                Some(i) if !indices.contains(&i) => indices.push(i),
                Some(_) => {}
                None => {
                    let known: Vec<&str> = providers.iter().map(|x| x.name.as_str()).collect();
                    self.err(
                        p.span(),
                        format!("{key}.provider"),
                        format!(
                            "no provider named {:?} (defined: {})",
                            p.get_ref(),
                            if known.is_empty() {
                                "none".to_owned()
                            } else {
                                known.join(", ")
                            }
                        ),
                    );
                }
            }
        }
        let methods = match &t.methods {
            None => vec![AuthMethod::Session, AuthMethod::AuthorizationCode],
            Some(list) => list
                .iter()
                .filter_map(|m| match m.get_ref().as_str() {
                    "session" => Some(AuthMethod::Session),
                    "authorization_code" => Some(AuthMethod::AuthorizationCode),
                    "bearer" => Some(AuthMethod::Bearer),
                    "introspection" => Some(AuthMethod::Introspection),
                    other => {
                        self.err(
                            m.span(),
                            format!("{key}.methods"),
                            format!("unknown method {other:?}: expected \"session\", \"authorization_code\", \"bearer\" or \"introspection\""),
                        );
                        None
                    }
                })
                .collect(),
        };
        if methods.is_empty() {
            self.err(
                span.clone(),
                format!("{key}.methods"),
                "at least one method is required",
            );
        }
        if let Some(pos) = methods
            .iter()
            .position(|m| *m == AuthMethod::AuthorizationCode)
            && pos + 1 < methods.len()
        {
            self.err(
                span.clone(),
                format!("{key}.methods"),
                "\"authorization_code\" answers the request itself (a redirect to sign in), so it must be the last method; the ones after it would never be tried",
            );
        }
        let optional = match t.mode.as_ref().map(|m| (m.get_ref().as_str(), m.span())) {
            None | Some(("required", _)) => false,
            Some(("optional", _)) => true,
            Some((other, sp)) => {
                self.err(
                    sp,
                    format!("{key}.mode"),
                    format!("unknown mode {other:?}: expected \"required\" or \"optional\""),
                );
                false
            }
        };
        let mut req = |name: &str, claim: &Option<Vec<SStr>>, values, default: &str| Requirement {
            claim: self
                .words(claim, &format!("{key}.{name}_claim"))
                .unwrap_or_else(|| vec![default.to_owned()]),
            any_of: self
                .words(values, &format!("{key}.{name}_required"))
                .unwrap_or_default()
                .iter()
                .map(|alt| alt.split_whitespace().map(str::to_owned).collect())
                .collect(),
        };
        let rules = Rules {
            scopes: req("scopes", &t.scopes_claim, &t.scopes_required, "scope"),
            groups: req("groups", &t.groups_claim, &t.groups_required, "groups"),
            roles: req("roles", &t.roles_claim, &t.roles_required, "roles"),
            audience: req("audience", &t.audience_claim, &t.audience_required, "aud"),
        };
        let consumer_claim = self.words(&t.consumer_claim, &format!("{key}.consumer_claim"));
        let consumer_groups_required = self.words(
            &t.consumer_groups_required,
            &format!("{key}.consumer_groups_required"),
        );
        let consumer = consumer_claim.map(|claim| ConsumerMapping {
            claim,
            by: match &t.consumer_by {
                None => vec![ConsumerField::Username, ConsumerField::CustomId],
                Some(list) => list
                    .iter()
                    .filter_map(|f| match f.get_ref().as_str() {
                        "id" => Some(ConsumerField::Id),
                        "username" => Some(ConsumerField::Username),
                        "custom_id" => Some(ConsumerField::CustomId),
                        other => {
                            self.err(f.span(), format!("{key}.consumer_by"), format!("unknown consumer field {other:?}: expected \"id\", \"username\" or \"custom_id\""));
                            None
                        }
                    })
                    .collect(),
            },
            optional: t.consumer_optional.unwrap_or(false),
            groups_required: consumer_groups_required.unwrap_or_default(),
        });
        if consumer.is_none() && t.consumer_groups_required.is_some() {
            self.err(
                span.clone(),
                format!("{key}.consumer_groups_required"),
                "consumer_groups_required needs consumer_claim",
            );
        }
        let anonymous = t.anonymous.as_ref().and_then(|a| {
            let found = consumers
                .iter()
                .position(|c| c.id == *a.get_ref() || c.username.as_deref() == Some(a.get_ref()));
            if found.is_none() {
                self.err(
                    a.span(),
                    format!("{key}.anonymous"),
                    format!("no consumer with id or username {:?}", a.get_ref()),
                );
            }
            found
        });
        let forbidden_redirect_uri = t.forbidden_redirect_uri.as_ref().and_then(|u| {
            let v = u.get_ref();
            if crate::http::redirect::same_origin_path(v).is_some()
                || self
                    .url(u, &format!("{key}.forbidden_redirect_uri"))
                    .is_some()
            {
                Some(v.clone())
            } else {
                None
            }
        });
        let realm = t.realm.clone().unwrap_or_else(|| {
            indices
                .first()
                .map_or_else(String::new, |&i| providers[i].name.clone())
        });
        Auth::Oidc(Box::new(RouteAuth {
            providers: indices,
            methods,
            optional,
            realm,
            rules,
            consumer,
            anonymous,
            credential_claim: self.words(&t.credential_claim, &format!("{key}.credential_claim")),
            authenticated_groups_claim: self.words(
                &t.authenticated_groups_claim,
                &format!("{key}.authenticated_groups_claim"),
            ),
            forbidden_redirect_uri,
            run_on_preflight: t.run_on_preflight.unwrap_or(true),
        }))
    }

    fn session(
        &mut self,
        raw: Option<&Spanned<RawSession>>,
        needed: bool,
    ) -> Option<SessionSettings> {
        let Some(raw_spanned) = raw else {
            if needed {
                self.errs.at(
                    None,
                    "session",
                    "[session] with secrets is required when [[providers]] are configured",
                );
            }
            return None;
        };
        let raw = raw_spanned.get_ref();
        let store = match raw.store.as_ref().map(|s| (s.get_ref().as_str(), s.span())) {
            None | Some(("cookie", _)) => SessionStoreKind::Cookie,
            Some(("memory", _)) => SessionStoreKind::Memory {
                max_sessions: self.count(
                    &raw.memory_max_sessions,
                    "session.memory_max_sessions",
                    1_000_000,
                    1,
                ),
            },
            Some((other, span)) => {
                self.err(
                    span,
                    "session.store",
                    format!("unknown session store {other:?}: expected \"cookie\" or \"memory\""),
                );
                SessionStoreKind::Cookie
            }
        };
        let mut secrets = Vec::new();
        for (j, s) in raw.secrets.iter().flatten().enumerate() {
            match secret::resolve_inline(s.get_ref()) {
                Ok(v) => secrets.push((v, s.span(), format!("session.secrets[{j}]"))),
                Err(e) => self.err(s.span(), format!("session.secrets[{j}]"), e),
            }
        }
        if let Some(f) = &raw.secrets_file {
            match secret::read_file(f.get_ref()) {
                Ok(text) => {
                    for line in text
                        .lines()
                        .map(str::trim)
                        .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    {
                        secrets.push((
                            Secret::new(line),
                            f.span(),
                            "session.secrets_file".to_owned(),
                        ));
                    }
                }
                Err(e) => self.err(f.span(), "session.secrets_file", e),
            }
        }
        if secrets.is_empty()
            && raw.secrets.as_ref().is_none_or(|l| l.is_empty())
            && raw.secrets_file.is_none()
        {
            self.err(
                raw_spanned.span(),
                "session.secrets",
                "at least one secret is required: secrets = [\"${SESSION_SECRET}\"] or secrets_file = \"/path\" (32 bytes or more, e.g. `openssl rand -base64 48`)",
            );
        }
        for (s, span, k) in &secrets {
            if s.expose().len() < 32 {
                self.err(
                    span.clone(),
                    k.clone(),
                    format!(
                        "a session secret must be at least 32 bytes (this one has {})",
                        s.expose().len()
                    ),
                );
            }
        }
        let cookie_name = raw.cookie_name.as_ref().map_or_else(
            || "oidc_session".to_owned(),
            |n| {
                let v = n.get_ref();
                if v.is_empty()
                    || !v
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"_-".contains(&b))
                {
                    self.err(
                        n.span(),
                        "session.cookie_name",
                        format!("invalid cookie name {v:?}: use letters, digits, '_' or '-'"),
                    );
                }
                v.clone()
            },
        );
        let same_site = match raw
            .cookie_same_site
            .as_ref()
            .map(|s| (s.get_ref().to_ascii_lowercase(), s.span()))
        {
            None => SameSite::Lax,
            Some((v, span)) => match v.as_str() {
                "lax" => SameSite::Lax,
                "strict" => SameSite::Strict,
                "none" => SameSite::None,
                _ => {
                    self.err(
                        span,
                        "session.cookie_same_site",
                        "expected \"lax\", \"strict\" or \"none\"",
                    );
                    SameSite::Lax
                }
            },
        };
        Some(SessionSettings {
            store,
            secrets: secrets.into_iter().map(|(s, _, _)| s).collect(),
            cookie_name,
            cookie_path: raw
                .cookie_path
                .as_ref()
                .map_or_else(|| "/".to_owned(), |p| p.get_ref().clone()),
            cookie_domain: raw.cookie_domain.as_ref().map(|d| d.get_ref().clone()),
            same_site,
            rolling_timeout: self.duration(
                &raw.rolling_timeout,
                "session.rolling_timeout",
                Duration::from_secs(3600),
            ),
            idling_timeout: self.duration(
                &raw.idling_timeout,
                "session.idling_timeout",
                Duration::from_secs(900),
            ),
            absolute_timeout: self.duration(
                &raw.absolute_timeout,
                "session.absolute_timeout",
                Duration::from_secs(86400),
            ),
            cache_size: self.count(&raw.cache_size, "session.cache_size", 100_000, 0),
            login_timeout: self.duration(
                &raw.login_timeout,
                "session.login_timeout",
                Duration::from_secs(600),
            ),
            max_login_cookies: self.count(
                &raw.max_login_cookies,
                "session.max_login_cookies",
                5,
                1,
            ),
            userinfo_path: match &raw.userinfo_path {
                None => "/oauth2/userinfo".to_owned(),
                Some(p) => self.own_path(p, "session.userinfo_path"),
            },
        })
    }

    /// The gateway's own endpoints must not collide with each other.
    fn own_paths(
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
    }

    fn own_path(&mut self, raw: &SStr, key: &str) -> String {
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

    /// Parses an issuer or redirect URL: https, or http for loopback hosts only (development).
    fn url(&mut self, raw: &SStr, key: &str) -> Option<openidconnect::url::Url> {
        let v = raw.get_ref();
        let url = match openidconnect::url::Url::parse(v) {
            Ok(u) => u,
            Err(e) => {
                self.err(raw.span(), key, format!("invalid URL {v:?}: {e}"));
                return None;
            }
        };
        let loopback = match url.host() {
            Some(openidconnect::url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
            Some(openidconnect::url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(openidconnect::url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        };
        match url.scheme() {
            "https" => {}
            "http" if loopback => {}
            "http" => {
                self.err(raw.span(), key, format!("{v:?} must use https (http is accepted only for localhost and 127.0.0.1, for development)"));
                return None;
            }
            other => {
                self.err(
                    raw.span(),
                    key,
                    format!("unsupported URL scheme {other:?} in {v:?}: expected https"),
                );
                return None;
            }
        }
        if url.fragment().is_some() {
            self.err(
                raw.span(),
                key,
                format!("{v:?} must not contain a fragment"),
            );
            return None;
        }
        Some(url)
    }

    fn secret_value(
        &mut self,
        inline: &Option<SStr>,
        file: &Option<SStr>,
        key: &str,
    ) -> Option<Secret> {
        match (inline, file) {
            (Some(a), Some(_)) => {
                self.err(
                    a.span(),
                    key,
                    format!("give either {key} or {key}_file, not both"),
                );
                None
            }
            (Some(v), None) => match secret::resolve_inline(v.get_ref()) {
                Ok(s) => Some(s),
                Err(e) => {
                    self.err(v.span(), key, e);
                    None
                }
            },
            (None, Some(f)) => match secret::read_file(f.get_ref()) {
                Ok(s) if !s.is_empty() => Some(Secret::new(s)),
                Ok(_) => {
                    self.err(
                        f.span(),
                        format!("{key}_file"),
                        format!("secret file {:?} is empty", f.get_ref()),
                    );
                    None
                }
                Err(e) => {
                    self.err(f.span(), format!("{key}_file"), e);
                    None
                }
            },
            (None, None) => None,
        }
    }

    /// A list of words (rule values, claim path segments, group names): a blank entry is an
    /// error, because `.all()` over no words would require nothing.
    fn words(&mut self, raw: &Option<Vec<SStr>>, key: &str) -> Option<Vec<String>> {
        let list = raw.as_ref()?;
        Some(
            list.iter()
                .enumerate()
                .filter_map(|(i, w)| {
                    if w.get_ref().trim().is_empty() {
                        self.err(
                            w.span(),
                            format!("{key}[{i}]"),
                            "blank entry: it would match anything; remove it or give a value",
                        );
                        None
                    } else {
                        Some(w.get_ref().clone())
                    }
                })
                .collect(),
        )
    }

    fn header_name(
        &mut self,
        name: &str,
        span: std::ops::Range<usize>,
        key: &str,
    ) -> Option<http::HeaderName> {
        match http::HeaderName::from_bytes(name.trim().as_bytes()) {
            Ok(h) => Some(h),
            Err(_) => {
                self.err(span, key, format!("invalid header name {name:?}"));
                None
            }
        }
    }

    fn err(
        &mut self,
        span: std::ops::Range<usize>,
        key: impl Into<String>,
        msg: impl Into<String>,
    ) {
        self.errs.at(Some(span), key, msg);
    }

    fn server(&mut self, raw: &RawServer) -> Server {
        let listen = match &raw.listen {
            Some(list) => list
                .iter()
                .enumerate()
                .filter_map(|(i, a)| self.listen_addr(a, &format!("server.listen[{i}]")))
                .collect(),
            None => vec![SocketAddr::from(([127, 0, 0, 1], 8080))],
        };
        let tls: Vec<TlsListener> = raw
            .tls
            .iter()
            .enumerate()
            .filter_map(|(i, t)| {
                let key = format!("server.tls[{i}]");
                let listen = self.listen_addr(&t.listen, &format!("{key}.listen"))?;
                let cert = self.existing_file(&t.cert, &format!("{key}.cert"));
                let key_file = self.existing_file(&t.key, &format!("{key}.key"));
                Some(TlsListener {
                    listen,
                    cert: cert?,
                    key: key_file?,
                    h2: t.h2.unwrap_or(true),
                })
            })
            .collect();
        if listen.is_empty() && tls.is_empty() && raw.listen.as_ref().is_some_and(|l| l.is_empty())
        {
            self.errs.at(
                None,
                "server.listen",
                "no listener: give at least one address in server.listen or server.tls",
            );
        }
        Server {
            listen,
            tls,
            threads: self.count(&raw.threads, "server.threads", default_threads(), 1),
            work_stealing: raw.work_stealing.unwrap_or(true),
            grace_period: self.duration(
                &raw.grace_period,
                "server.grace_period",
                Duration::from_secs(10),
            ),
            shutdown_timeout: self.duration(
                &raw.shutdown_timeout,
                "server.shutdown_timeout",
                Duration::from_secs(5),
            ),
            trusted_proxies: raw
                .trusted_proxies
                .iter()
                .enumerate()
                .filter_map(|(i, p)| self.ip_net(p, &format!("server.trusted_proxies[{i}]")))
                .collect(),
            pid_file: raw
                .pid_file
                .clone()
                .unwrap_or_else(|| "/run/oidc-gateway/oidc-gateway.pid".into()),
            upgrade_socket: raw
                .upgrade_socket
                .clone()
                .unwrap_or_else(|| "/run/oidc-gateway/upgrade.sock".into()),
            allow_encoded_slashes: raw.allow_encoded_slashes.unwrap_or(false),
            upstream_keepalive_pool_size: self.count(
                &raw.upstream_keepalive_pool_size,
                "server.upstream_keepalive_pool_size",
                1024,
                0,
            ),
            scrub_headers: self.header_names(&raw.scrub_headers, "server.scrub_headers"),
            keep_headers: self.keep_headers(&raw.keep_headers),
            request_header_timeout: self.duration(
                &raw.request_header_timeout,
                "server.request_header_timeout",
                Duration::from_secs(10),
            ),
            request_body_timeout: self.duration(
                &raw.request_body_timeout,
                "server.request_body_timeout",
                Duration::from_secs(10),
            ),
            request_body_min_rate: self.count(
                &raw.request_body_min_rate,
                "server.request_body_min_rate",
                1024,
                0,
            ) as u64,
            max_connections: self.count(&raw.max_connections, "server.max_connections", 10_000, 1),
            login_rate_limit: self.count(&raw.login_rate_limit, "server.login_rate_limit", 30, 0)
                as u64,
            introspection_rate_limit: self.count(
                &raw.introspection_rate_limit,
                "server.introspection_rate_limit",
                300,
                0,
            ) as u64,
        }
    }

    /// A list of header names, lower-cased; every entry must be a valid name.
    fn header_names(&mut self, raw: &[SStr], key: &str) -> Vec<String> {
        raw.iter()
            .enumerate()
            .filter_map(|(i, n)| {
                self.header_name(n.get_ref(), n.span(), &format!("{key}[{i}]"))
                    .map(|h| h.as_str().to_owned())
            })
            .collect()
    }

    /// `keep_headers` may only name headers scrubbed by default; forwarding headers follow
    /// `trusted_proxies` instead.
    fn keep_headers(&mut self, raw: &[SStr]) -> Vec<String> {
        let defaults =
            crate::http::headers::HeaderSet::new(crate::auth::identity::default_scrubbed(), []);
        let forwarding = crate::http::headers::HeaderSet::new(
            crate::http::headers::FORWARDING_HEADERS.iter().copied(),
            [],
        );
        let mut names = Vec::new();
        for (i, raw) in raw.iter().enumerate() {
            let key = format!("server.keep_headers[{i}]");
            let Some(name) = self.header_name(raw.get_ref(), raw.span(), &key) else {
                continue;
            };
            let name = name.as_str().to_owned();
            if forwarding.contains(&name) {
                self.err(
                    raw.span(),
                    key,
                    format!(
                        "{name} is believed only from server.trusted_proxies; it cannot be kept"
                    ),
                );
            } else if !defaults.contains(&name) {
                self.err(
                    raw.span(),
                    key,
                    format!("{name} is not removed by default, so there is nothing to keep"),
                );
            } else {
                names.push(name);
            }
        }
        names
    }

    fn metrics(&mut self, raw: &RawMetrics) -> Option<Metrics> {
        match &raw.listen {
            None => Some(Metrics {
                listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
            }),
            Some(a) if a.get_ref().is_empty() => None,
            Some(a) => self
                .listen_addr(a, "metrics.listen")
                .map(|listen| Metrics { listen }),
        }
    }

    fn log(&mut self, raw: &RawLog) -> Log {
        let level = match &raw.level {
            None => "info".to_owned(),
            Some(l) => {
                if tracing_subscriber::EnvFilter::try_new(l.get_ref()).is_err() {
                    self.err(
                        l.span(),
                        "log.level",
                        format!("invalid log filter {:?}: expected e.g. \"info\" or \"oidc_gateway=debug,warn\"", l.get_ref()),
                    );
                }
                l.get_ref().clone()
            }
        };
        Log {
            access_log: raw.access_log.unwrap_or(true),
            level,
        }
    }

    fn upstream(&mut self, i: usize, raw: &RawUpstream) -> Upstream {
        let key = |k: &str| format!("upstreams[{i}].{k}");
        self.name(&raw.name, &key("name"));
        let mut targets = Vec::new();
        if raw.targets.get_ref().is_empty() {
            self.err(
                raw.targets.span(),
                key("targets"),
                "an upstream needs at least one target",
            );
        }
        for (j, t) in raw.targets.get_ref().iter().enumerate() {
            let tkey = format!("upstreams[{i}].targets[{j}]");
            let (address, weight) = match t.get_ref() {
                StrOrTable::Str(a) => (a.as_str(), 1),
                StrOrTable::Table(w) => (w.address.as_str(), w.weight.unwrap_or(1)),
            };
            if !(1..=1000).contains(&weight) {
                self.err(
                    t.span(),
                    &tkey,
                    format!("weight {weight} is out of range: expected 1 to 1000"),
                );
                continue;
            }
            match resolve(address) {
                Ok(addr) => targets.push(Target {
                    addr,
                    weight: weight as usize,
                }),
                Err(msg) => self.err(t.span(), &tkey, msg),
            }
        }
        let balance = match raw
            .balance
            .as_ref()
            .map(|b| (b.get_ref().as_str(), b.span()))
        {
            None | Some(("round_robin", _)) => Balance::RoundRobin,
            Some(("random", _)) => Balance::Random,
            Some(("consistent_hash", _)) => {
                Balance::ConsistentHash(self.hash_key(&raw.hash_key, &key("hash_key")))
            }
            Some((other, span)) => {
                self.err(
                    span,
                    key("balance"),
                    format!("unknown balance {other:?}: expected \"round_robin\", \"consistent_hash\" or \"random\""),
                );
                Balance::RoundRobin
            }
        };
        if let (Some(h), false) = (&raw.hash_key, matches!(balance, Balance::ConsistentHash(_))) {
            self.err(
                h.span(),
                key("hash_key"),
                "hash_key only applies to balance = \"consistent_hash\"",
            );
        }
        let health_check = raw
            .health_check
            .as_ref()
            .map(|h| self.health_check(h, &key("health_check")));
        let tls = raw.tls.unwrap_or(false);
        Upstream {
            name: raw.name.get_ref().clone(),
            targets,
            balance,
            health_check,
            connect_timeout: self.duration(
                &raw.connect_timeout,
                &key("connect_timeout"),
                Duration::from_secs(2),
            ),
            read_timeout: self.duration(
                &raw.read_timeout,
                &key("read_timeout"),
                Duration::from_secs(60),
            ),
            write_timeout: self.duration(
                &raw.write_timeout,
                &key("write_timeout"),
                Duration::from_secs(60),
            ),
            idle_timeout: self.duration(
                &raw.idle_timeout,
                &key("idle_timeout"),
                Duration::from_secs(60),
            ),
            retries: self.count(&raw.retries, &key("retries"), 1, 0),
            tls,
            sni: raw.sni.clone().unwrap_or_default(),
            host_header: raw.host_header.clone(),
        }
    }

    fn hash_key(&mut self, raw: &Option<SStr>, key: &str) -> HashKey {
        let Some(raw) = raw else {
            return HashKey::ClientIp;
        };
        let v = raw.get_ref();
        if v == "client_ip" {
            return HashKey::ClientIp;
        }
        if let Some(name) = v.strip_prefix("header:")
            && let Ok(h) = http::HeaderName::from_bytes(name.trim().as_bytes())
        {
            return HashKey::Header(h);
        }
        self.err(
            raw.span(),
            key,
            format!("invalid hash_key {v:?}: expected \"client_ip\" or \"header:<Header-Name>\""),
        );
        HashKey::ClientIp
    }

    fn health_check(&mut self, raw: &Spanned<RawHealthCheck>, key: &str) -> HealthCheck {
        let h = raw.get_ref();
        let kind = match h.kind.get_ref().as_str() {
            "tcp" => {
                if let Some(p) = &h.path {
                    self.err(
                        p.span(),
                        format!("{key}.path"),
                        "path only applies to kind = \"http\"",
                    );
                }
                HealthCheckKind::Tcp
            }
            "http" => {
                let path = match &h.path {
                    None => "/".to_owned(),
                    Some(p) if p.get_ref().starts_with('/') => p.get_ref().clone(),
                    Some(p) => {
                        self.err(
                            p.span(),
                            format!("{key}.path"),
                            "a health check path must start with '/'",
                        );
                        "/".to_owned()
                    }
                };
                HealthCheckKind::Http {
                    path,
                    host: h.host.clone(),
                }
            }
            other => {
                self.err(
                    h.kind.span(),
                    format!("{key}.kind"),
                    format!("unknown health check kind {other:?}: expected \"http\" or \"tcp\""),
                );
                HealthCheckKind::Tcp
            }
        };
        HealthCheck {
            kind,
            interval: self.duration(
                &h.interval,
                &format!("{key}.interval"),
                Duration::from_secs(5),
            ),
            timeout: self.duration(
                &h.timeout,
                &format!("{key}.timeout"),
                Duration::from_secs(1),
            ),
            healthy_threshold: self.count(
                &h.healthy_threshold,
                &format!("{key}.healthy_threshold"),
                1,
                1,
            ),
            unhealthy_threshold: self.count(
                &h.unhealthy_threshold,
                &format!("{key}.unhealthy_threshold"),
                1,
                1,
            ),
        }
    }

    fn route(
        &mut self,
        i: usize,
        raw: &RawRoute,
        upstreams: &[Upstream],
        providers: &[Provider],
        consumers: &[Consumer],
    ) -> Option<Route> {
        let key = |k: &str| format!("routes[{i}].{k}");
        self.name(&raw.name, &key("name"));
        let hosts = raw
            .hosts
            .iter()
            .enumerate()
            .filter_map(|(j, h)| self.host(h, &format!("routes[{i}].hosts[{j}]")))
            .collect();
        let paths = match &raw.paths {
            None => vec!["/".to_owned()],
            Some(paths) => paths
                .iter()
                .enumerate()
                .filter_map(|(j, p)| self.route_path(p, &format!("routes[{i}].paths[{j}]")))
                .collect(),
        };
        let methods = raw
            .methods
            .iter()
            .enumerate()
            .filter_map(|(j, m)| {
                let upper = m.get_ref().to_ascii_uppercase();
                match http::Method::from_bytes(upper.as_bytes()) {
                    Ok(method) if !upper.is_empty() => Some(method),
                    _ => {
                        self.err(
                            m.span(),
                            format!("routes[{i}].methods[{j}]"),
                            format!("invalid HTTP method {:?}", m.get_ref()),
                        );
                        None
                    }
                }
            })
            .collect();
        let upstream = upstreams
            .iter()
            .position(|u| u.name == *raw.upstream.get_ref());
        if upstream.is_none() {
            let known: Vec<&str> = upstreams.iter().map(|u| u.name.as_str()).collect();
            self.err(
                raw.upstream.span(),
                key("upstream"),
                format!(
                    "no upstream named {:?} (defined: {})",
                    raw.upstream.get_ref(),
                    if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    }
                ),
            );
        }
        let auth = match raw.auth.as_ref() {
            None => Auth::None,
            Some(a) => match a.get_ref() {
                StrOrTable::Str(s) if s == "none" => Auth::None,
                StrOrTable::Str(s) => {
                    self.err(a.span(), key("auth"), format!("unknown auth {s:?}: expected \"none\" or a table such as {{ provider = \"okta\" }}"));
                    Auth::None
                }
                StrOrTable::Table(t) => {
                    self.route_auth(t, a.span(), &key("auth"), providers, consumers)
                }
            },
        };
        Some(Route {
            name: raw.name.get_ref().clone(),
            hosts,
            paths,
            methods,
            upstream: upstream?,
            strip_path: raw.strip_path.unwrap_or(false),
            preserve_host: raw.preserve_host.unwrap_or(true),
            auth,
        })
    }

    fn host(&mut self, raw: &SStr, key: &str) -> Option<String> {
        let h = raw.get_ref().to_ascii_lowercase();
        let name = h.strip_prefix("*.").unwrap_or(&h);
        let valid = !name.is_empty()
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !valid {
            self.err(
                raw.span(),
                key,
                format!("invalid host {:?}: expected a host name such as \"app.example.com\" or \"*.example.org\" (no port)", raw.get_ref()),
            );
            return None;
        }
        Some(h)
    }

    fn route_path(&mut self, raw: &SStr, key: &str) -> Option<String> {
        let p = raw.get_ref();
        if !p.starts_with('/')
            || p.contains(['?', '#', '%', '\\'])
            || p.contains("//")
            || p.split('/').any(|s| s == "." || s == "..")
        {
            self.err(
                raw.span(),
                key,
                format!(
                    "invalid path {p:?}: expected a canonical path prefix such as \"/\" or \"/api\""
                ),
            );
            return None;
        }
        // A trailing slash would never match the bare prefix; prefixes match on segment boundaries.
        let trimmed = if p.len() > 1 {
            p.trim_end_matches('/')
        } else {
            p
        };
        Some(trimmed.to_owned())
    }

    fn name(&mut self, raw: &SStr, key: &str) {
        let n = raw.get_ref();
        if n.is_empty()
            || !n
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            self.err(
                raw.span(),
                key,
                format!("invalid name {n:?}: use letters, digits, '-', '_' or '.'"),
            );
        }
    }

    fn unique_names<'n>(&mut self, section: &str, names: impl Iterator<Item = &'n SStr>) {
        let mut seen = HashSet::new();
        for (i, n) in names.enumerate() {
            if !seen.insert(n.get_ref().as_str()) {
                self.err(
                    n.span(),
                    format!("{section}[{i}].name"),
                    format!("duplicate name {:?}", n.get_ref()),
                );
            }
        }
    }

    fn duration(&mut self, raw: &Option<SStr>, key: &str, default: Duration) -> Duration {
        let Some(raw) = raw else { return default };
        match humantime::parse_duration(raw.get_ref()) {
            Ok(d)
                if d.is_zero()
                    && !key.ends_with("grace_period")
                    && !key.ends_with("shutdown_timeout") =>
            {
                self.err(
                    raw.span(),
                    key,
                    "a zero duration is not allowed here (there is no \"0 means unlimited\")",
                );
                default
            }
            Ok(d) => d,
            Err(_) => {
                self.err(
                    raw.span(),
                    key,
                    format!("invalid duration {:?}: expected e.g. \"500ms\", \"10s\", \"15m\" or \"1h\"", raw.get_ref()),
                );
                default
            }
        }
    }

    fn count(
        &mut self,
        raw: &Option<Spanned<i64>>,
        key: &str,
        default: usize,
        min: usize,
    ) -> usize {
        let Some(raw) = raw else { return default };
        match usize::try_from(*raw.get_ref()) {
            Ok(n) if n >= min => n,
            _ => {
                self.err(
                    raw.span(),
                    key,
                    format!(
                        "{} is out of range: expected a whole number >= {min}",
                        raw.get_ref()
                    ),
                );
                default
            }
        }
    }

    fn listen_addr(&mut self, raw: &SStr, key: &str) -> Option<SocketAddr> {
        match raw.get_ref().parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                self.err(
                    raw.span(),
                    key,
                    format!("invalid listen address {:?}: expected IP:port such as \"127.0.0.1:8080\" or \"[::]:443\"", raw.get_ref()),
                );
                None
            }
        }
    }

    fn ip_net(&mut self, raw: &SStr, key: &str) -> Option<ipnet::IpNet> {
        let v = raw.get_ref();
        if let Ok(net) = v.parse::<ipnet::IpNet>() {
            return Some(net.trunc());
        }
        if let Ok(ip) = v.parse::<std::net::IpAddr>() {
            return Some(ipnet::IpNet::from(ip));
        }
        self.err(
            raw.span(),
            key,
            format!("invalid network {v:?}: expected an IP or CIDR such as \"10.0.0.0/8\""),
        );
        None
    }

    fn existing_file(&mut self, raw: &SStr, key: &str) -> Option<PathBuf> {
        let p = PathBuf::from(raw.get_ref());
        if p.is_file() {
            Some(p)
        } else {
            self.err(
                raw.span(),
                key,
                format!("file {:?} does not exist", raw.get_ref()),
            );
            None
        }
    }
}

/// A stable UUID-shaped consumer id derived from a name (Kong consumers have UUID ids).
fn derived_uuid(name: &str) -> String {
    use sha2::Digest;
    let h = sha2::Sha256::digest(format!("oidc-gateway consumer {name}").as_bytes());
    format!(
        "{:08x}-{:04x}-5{:03x}-{:04x}-{:012x}",
        u32::from_be_bytes([h[0], h[1], h[2], h[3]]),
        u16::from_be_bytes([h[4], h[5]]),
        u16::from_be_bytes([h[6], h[7]]) & 0x0fff,
        (u16::from_be_bytes([h[8], h[9]]) & 0x3fff) | 0x8000,
        u64::from_be_bytes([0, 0, h[10], h[11], h[12], h[13], h[14], h[15]])
    )
}

/// Resolves `host:port` once, at load time: DNS never runs on the request path.
fn resolve(address: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = address.parse::<SocketAddr>() {
        return Ok(a);
    }
    let expected = "expected host:port such as \"127.0.0.1:3000\" or \"app.internal:8080\"";
    match address.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {}
        _ => return Err(format!("invalid address {address:?}: {expected}")),
    }
    match address.to_socket_addrs() {
        Ok(mut addrs) => addrs
            .next()
            .ok_or_else(|| format!("address {address:?} resolved to nothing")),
        Err(e) => Err(format!("cannot resolve address {address:?}: {e}")),
    }
}

fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(src: &str) -> Result<Config, ConfigErrors> {
        parse(src, Path::new("test.toml"))
    }

    const MINIMAL: &str = r#"
[[upstreams]]
name = "app"
targets = ["127.0.0.1:3000", { address = "127.0.0.1:3001", weight = 3 }]

[[routes]]
name = "app"
upstream = "app"
"#;

    #[test]
    fn minimal_config_gets_documented_defaults() {
        let c = parse_str(MINIMAL).unwrap();
        assert_eq!(c.server.listen, vec!["127.0.0.1:8080".parse().unwrap()]);
        assert_eq!(c.server.grace_period, Duration::from_secs(10));
        assert_eq!(c.upstreams[0].targets[1].weight, 3);
        assert_eq!(c.upstreams[0].connect_timeout, Duration::from_secs(2));
        assert_eq!(c.upstreams[0].retries, 1);
        assert_eq!(c.routes[0].paths, vec!["/"]);
        assert!(c.routes[0].preserve_host);
        assert_eq!(c.routes[0].auth, Auth::None);
        assert_eq!(c.metrics.unwrap().listen, "127.0.0.1:9464".parse().unwrap());
    }

    #[test]
    fn every_error_is_reported_with_its_line() {
        let src = r#"[server]
listen = ["127.0.0.1:8080"]
bogus_key = 1

[[upstreams]]
name = "app"
targets = ["not an address"]
connect_timeout = "2 parsecs"

[[routes]]
name = "app"
upstream = "missing"
"#;
        let errs = parse_str(src).unwrap_err().0;
        let lines: Vec<(usize, &str)> = errs.iter().map(|e| (e.line, e.key.as_str())).collect();
        assert_eq!(
            lines,
            vec![
                (3, "server.bogus_key"),
                (7, "upstreams[0].targets[0]"),
                (8, "upstreams[0].connect_timeout"),
                (12, "routes[0].upstream"),
            ],
            "{errs:#?}"
        );
        assert!(errs[2].message.contains("invalid duration"));
        assert!(errs[3].message.contains("no upstream named \"missing\""));
    }

    #[test]
    fn wrong_type_names_key_and_line() {
        let errs = parse_str("[server]\nthreads = \"two\"\n").unwrap_err().0;
        assert_eq!(errs.len(), 1);
        assert_eq!((errs[0].line, errs[0].key.as_str()), (2, "server.threads"));
        assert!(
            errs[0].message.contains("invalid type"),
            "{}",
            errs[0].message
        );
    }

    #[test]
    fn unknown_keys_inside_inline_tables_are_found() {
        let src = format!("{MINIMAL}auth = {{ providr = \"x\" }}\n");
        let errs = parse_str(&src).unwrap_err().0;
        assert!(
            errs.iter().any(|e| e.key == "routes[0].auth.providr"),
            "{errs:#?}"
        );
    }

    #[test]
    fn duplicate_names_and_bad_hosts_and_paths_are_errors() {
        let src = format!(
            "{MINIMAL}\n[[routes]]\nname = \"app\"\nupstream = \"app\"\nhosts = [\"bad host:80\"]\npaths = [\"api\", \"/a/../b\"]\nmethods = [\"G ET\"]\n"
        );
        let errs = parse_str(&src).unwrap_err().0;
        let keys: Vec<&str> = errs.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            vec![
                "routes[1].name",
                "routes[1].hosts[0]",
                "routes[1].paths[0]",
                "routes[1].paths[1]",
                "routes[1].methods[0]"
            ]
        );
    }

    #[test]
    fn trailing_slash_in_route_path_is_trimmed() {
        let src = MINIMAL.replace(
            "upstream = \"app\"\n",
            "upstream = \"app\"\npaths = [\"/api/\"]\n",
        );
        assert_eq!(parse_str(&src).unwrap().routes[0].paths, vec!["/api"]);
    }

    const OIDC: &str = r#"
[session]
secrets = ["0123456789abcdef0123456789abcdef"]

[[providers]]
name = "okta"
issuer = "https://dev-1.okta.com/oauth2/default"
client_id = "abc"
redirect_uri = "https://app.example.com/oauth2/callback"

[[upstreams]]
name = "app"
targets = ["127.0.0.1:3000"]

[[routes]]
name = "app"
upstream = "app"
auth = { provider = "okta" }
"#;

    #[test]
    fn providers_sessions_and_oidc_routes() {
        let c = parse_str(OIDC).unwrap();
        let Auth::Oidc(a) = &c.routes[0].auth else {
            panic!("not an OIDC route")
        };
        assert_eq!(a.providers, vec![0]);
        assert_eq!(
            a.methods,
            vec![AuthMethod::Session, AuthMethod::AuthorizationCode]
        );
        let p = &c.providers[0];
        assert_eq!(p.callback_path, "/oauth2/callback");
        assert!(p.secure_cookies);
        assert_eq!(p.scopes, vec!["openid", "email", "profile"]);
        assert_eq!(
            p.upstream_access_token_header,
            Some((http::header::AUTHORIZATION, Some("Bearer".to_owned())))
        );
        let s = c.session.unwrap();
        assert_eq!(s.store, SessionStoreKind::Cookie);
        assert_eq!(s.idling_timeout, Duration::from_secs(900));
        // Authorizing reads a session's claims (and keeps them parsed) only if the route says so.
        assert!(!a.reads_claims());
        for extra in [
            r#"groups_required = ["admins"]"#,
            r#"consumer_claim = ["sub"]"#,
            r#"credential_claim = ["email"]"#,
        ] {
            let src = OIDC.replace(
                r#"auth = { provider = "okta" }"#,
                &format!(r#"auth = {{ provider = "okta", {extra} }}"#),
            );
            let c = parse_str(&src).unwrap();
            let Auth::Oidc(a) = &c.routes[0].auth else {
                panic!("not an OIDC route")
            };
            assert!(a.reads_claims(), "{extra}");
        }
    }

    #[test]
    fn oidc_mistakes_are_reported() {
        let src = OIDC
            .replace("https://dev-1.okta.com", "http://dev-1.okta.com")
            .replace("0123456789abcdef0123456789abcdef", "short")
            .replace("provider = \"okta\"", "provider = \"auth0\"");
        let errs = parse_str(&src).unwrap_err().0;
        let keys: Vec<&str> = errs.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            vec![
                "session.secrets[0]",
                "providers[0].issuer",
                "routes[0].auth.provider"
            ],
            "{errs:#?}"
        );
        assert!(errs[1].message.contains("must use https"));
        let no_session = OIDC.replace(
            "[session]\nsecrets = [\"0123456789abcdef0123456789abcdef\"]\n",
            "",
        );
        let errs = parse_str(&no_session).unwrap_err().0;
        assert!(
            errs[0]
                .message
                .contains("[session] with secrets is required"),
            "{errs:#?}"
        );
    }

    #[test]
    fn blank_entries_in_rule_lists_are_errors_with_their_line() {
        let src = OIDC.replace(
            "auth = { provider = \"okta\" }",
            "auth = { provider = \"okta\", groups_required = [\"admins\", \" \"], scopes_required = [\"\"], roles_claim = [\"realm\", \"\"] }\n\
             [[consumers]]\nusername = \"u\"\ngroups = [\"\\t\"]",
        );
        let errs = parse_str(&src).unwrap_err().0;
        let keys: Vec<(&str, usize)> = errs.iter().map(|e| (e.key.as_str(), e.line)).collect();
        assert_eq!(
            keys,
            vec![
                ("routes[0].auth.groups_required[1]", 18),
                ("routes[0].auth.scopes_required[0]", 18),
                ("routes[0].auth.roles_claim[1]", 18),
                ("consumers[0].groups[0]", 21),
            ],
            "{errs:#?}"
        );
        assert!(errs[0].message.contains("blank entry"));
    }

    #[test]
    fn server_header_lists_and_limits() {
        let c = parse_str(
            "[server]\nscrub_headers = [\"X-Tenant\"]\nkeep_headers = [\"X_User\"]\nrequest_header_timeout = \"3s\"\nmax_connections = 5\n",
        )
        .unwrap();
        assert_eq!(c.server.scrub_headers, vec!["x-tenant"]);
        assert_eq!(c.server.keep_headers, vec!["x_user"]);
        assert_eq!(c.server.request_header_timeout, Duration::from_secs(3));
        assert_eq!(c.server.max_connections, 5);
        let errs = parse_str(
            "[server]\nkeep_headers = [\"X-Real-IP\", \"X-Tenant\", \"bad header\"]\nmax_connections = 0\n",
        )
        .unwrap_err()
        .0;
        let msgs: Vec<&str> = errs.iter().map(|e| e.message.as_str()).collect();
        assert!(msgs[0].contains("trusted_proxies"), "{msgs:?}");
        assert!(msgs[1].contains("nothing to keep"), "{msgs:?}");
        assert!(msgs[2].contains("invalid header name"), "{msgs:?}");
        assert!(msgs[3].contains("out of range"), "{msgs:?}");
    }

    #[test]
    fn authorization_code_must_be_last_and_zero_durations_are_refused() {
        let src = OIDC
            .replace(
                "auth = { provider = \"okta\" }",
                "auth = { provider = \"okta\", methods = [\"authorization_code\", \"bearer\"] }",
            )
            .replace("[[upstreams]]", "[[upstreams]]\nread_timeout = \"0s\"");
        let errs = parse_str(&src).unwrap_err().0;
        let keys: Vec<&str> = errs.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            vec!["upstreams[0].read_timeout", "routes[0].auth.methods"],
            "{errs:#?}"
        );
        assert!(errs[1].message.contains("must be the last method"));
    }

    #[test]
    fn loopback_http_is_allowed_for_development() {
        let src = OIDC
            .replace(
                "https://dev-1.okta.com/oauth2/default",
                "http://127.0.0.1:9000",
            )
            .replace("https://app.example.com", "http://localhost:8080");
        let c = parse_str(&src).unwrap();
        assert!(!c.providers[0].secure_cookies);
    }

    #[test]
    fn invalid_toml_is_reported() {
        let errs = parse_str("[server\n").unwrap_err().0;
        assert_eq!(errs[0].line, 1);
        assert!(errs[0].message.starts_with("invalid TOML"));
    }
}
