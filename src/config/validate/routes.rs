//! `[[routes]]` and their `auth`: hosts, paths, methods, rules, consumers.

use super::Builder;
use crate::config::raw::*;
use crate::config::*;

/// `preserve_post_max_bytes` when not set: 64 KiB.
const DEFAULT_PRESERVE_POST_BYTES: usize = 64 * 1024;
/// The most `preserve_post_max_bytes` may be.
const MAX_PRESERVE_POST_BYTES: usize = 1024 * 1024;

impl Builder<'_> {
    pub(super) fn route(
        &mut self,
        i: usize,
        raw: &RawRoute,
        upstreams: &[Upstream],
        providers: &[Provider],
        consumers: &[Consumer],
        session: Option<&SessionSettings>,
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
        let mut auth = match raw.auth.as_ref() {
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
        if let Some(raw_exchange) = &raw.token_exchange {
            self.token_exchange(raw_exchange, &key("token_exchange"), &mut auth);
        }
        let preserve_post = self.preserve_post(i, raw, &auth, session);
        let rate_limit = raw
            .rate_limit
            .as_ref()
            .and_then(|r| self.rate_limit(r, &key("rate_limit"), &auth));
        Some(Route {
            name: raw.name.get_ref().clone(),
            hosts,
            paths,
            methods,
            upstream: UpstreamId(upstream?),
            strip_path: raw.strip_path.unwrap_or(false),
            preserve_host: raw.preserve_host.unwrap_or(true),
            preserve_post,
            auth,
            rate_limit,
        })
    }

    /// `preserve_post` and its limit: only where a browser can be sent to sign in, and only with
    /// a server-side session store (a form does not fit in a cookie).
    fn preserve_post(
        &mut self,
        i: usize,
        raw: &RawRoute,
        auth: &Auth,
        session: Option<&SessionSettings>,
    ) -> Option<usize> {
        let key = |k: &str| format!("routes[{i}].{k}");
        let max = self.count(
            &raw.preserve_post_max_bytes,
            &key("preserve_post_max_bytes"),
            DEFAULT_PRESERVE_POST_BYTES,
            1,
        );
        if max > MAX_PRESERVE_POST_BYTES
            && let Some(m) = &raw.preserve_post_max_bytes
        {
            self.err(
                m.span(),
                key("preserve_post_max_bytes"),
                format!("{max} is too large: at most {MAX_PRESERVE_POST_BYTES} (1 MiB) of form is kept per sign-in"),
            );
        }
        let Some(on) = raw.preserve_post.as_ref().filter(|p| *p.get_ref()) else {
            if let Some(m) = &raw.preserve_post_max_bytes {
                self.err(
                    m.span(),
                    key("preserve_post_max_bytes"),
                    "has no effect without preserve_post = true",
                );
            }
            return None;
        };
        let signs_in =
            matches!(auth, Auth::Oidc(a) if a.methods.contains(&AuthMethod::AuthorizationCode));
        if !signs_in {
            self.err(
                on.span(),
                key("preserve_post"),
                "needs an auth that signs browsers in (methods including \"authorization_code\", the default)",
            );
        }
        if session.is_some_and(|s| s.store == SessionStoreKind::Cookie) {
            self.err(
                on.span(),
                key("preserve_post"),
                "keeps the form on the server until the sign-in ends: it needs [session] store = \"memory\" or \"redis\" (a form does not fit in a cookie)",
            );
        }
        Some(max.min(MAX_PRESERVE_POST_BYTES))
    }

    pub(super) fn host(&mut self, raw: &SStr, key: &str) -> Option<String> {
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

    pub(super) fn route_path(&mut self, raw: &SStr, key: &str) -> Option<String> {
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

    pub(super) fn route_auth(
        &mut self,
        t: &RawAuthTable,
        span: std::ops::Range<usize>,
        key: &str,
        providers: &[Provider],
        consumers: &[Consumer],
    ) -> Auth {
        let Some(indices) = self.route_providers(t, span.clone(), key, providers) else {
            return Auth::None;
        };
        let methods = self.auth_methods(t, span.clone(), key);
        let optional = t.mode.as_ref().is_some_and(|m| {
            self.one_of(
                m,
                &format!("{key}.mode"),
                "mode",
                &[("required", false), ("optional", true)],
            )
            .unwrap_or(false)
        });
        let methods_taken = methods.clone();
        let rules = self.claim_rules(t, key);
        let consumer = self.consumer_mapping(t, span.clone(), key);
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
            found.map(ConsumerId)
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
            providers: indices.into_iter().map(ProviderId).collect(),
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
            step_up: self.step_up(t, span, key),
            token_exchange: None,
            allow_if: t
                .allow_if
                .as_ref()
                .and_then(|p| self.policy(p, &format!("{key}.allow_if"))),
            dpop: self.binding(t.dpop.as_ref(), "dpop", &methods_taken, key),
            certificate_bound: self.binding(
                t.certificate_bound.as_ref(),
                "certificate_bound",
                &methods_taken,
                key,
            ),
        }))
    }

    /// `dpop` or `certificate_bound` (`name`) = `"allowed" | "required"`: only where access
    /// tokens are taken.
    fn binding(
        &mut self,
        raw: Option<&SStr>,
        name: &str,
        methods: &[AuthMethod],
        key: &str,
    ) -> Option<Binding> {
        let raw = raw?;
        let mode = self.one_of(
            raw,
            &format!("{key}.{name}"),
            name,
            &[
                ("allowed", Binding::Allowed),
                ("required", Binding::Required),
            ],
        )?;
        if !methods
            .iter()
            .any(|m| matches!(m, AuthMethod::Bearer | AuthMethod::Introspection))
        {
            self.err(
                raw.span(),
                format!("{key}.{name}"),
                "needs access tokens: add \"bearer\" or \"introspection\" to methods",
            );
        }
        Some(mode)
    }

    /// `provider` / `providers`: indices of the providers named (`None`: none named).
    fn route_providers(
        &mut self,
        t: &RawAuthTable,
        span: std::ops::Range<usize>,
        key: &str,
        providers: &[Provider],
    ) -> Option<Vec<usize>> {
        let mut names: Vec<&SStr> = Vec::new();
        names.extend(t.provider.iter());
        names.extend(t.providers.iter().flatten());
        if names.is_empty() {
            self.err(
                span.clone(),
                format!("{key}.provider"),
                "missing provider: expected e.g. auth = { provider = \"okta\" }",
            );
            return None;
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
        Some(indices)
    }

    /// `methods`, in order: `authorization_code` last, and only after `session`.
    fn auth_methods(
        &mut self,
        t: &RawAuthTable,
        span: std::ops::Range<usize>,
        key: &str,
    ) -> Vec<AuthMethod> {
        let methods = match &t.methods {
            None => vec![AuthMethod::Session, AuthMethod::AuthorizationCode],
            Some(list) => list
                .iter()
                .filter_map(|m| {
                    self.one_of(
                        m,
                        &format!("{key}.methods"),
                        "method",
                        &[
                            ("session", AuthMethod::Session),
                            ("authorization_code", AuthMethod::AuthorizationCode),
                            ("bearer", AuthMethod::Bearer),
                            ("introspection", AuthMethod::Introspection),
                        ],
                    )
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
        } else if methods.contains(&AuthMethod::AuthorizationCode)
            && !methods.contains(&AuthMethod::Session)
        {
            self.err(
                span.clone(),
                format!("{key}.methods"),
                "\"authorization_code\" signs browsers in to a session, which this route does not accept without \"session\": every request would sign in again; add \"session\" before it",
            );
        }
        methods
    }

    /// The `*_claim` / `*_required` pairs for scopes, groups, roles and audience.
    fn claim_rules(&mut self, t: &RawAuthTable, key: &str) -> Rules {
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
        Rules {
            scopes: req("scopes", &t.scopes_claim, &t.scopes_required, "scope"),
            groups: req("groups", &t.groups_claim, &t.groups_required, "groups"),
            roles: req("roles", &t.roles_claim, &t.roles_required, "roles"),
            audience: req("audience", &t.audience_claim, &t.audience_required, "aud"),
            emails: self.email_rule(t, key),
        }
    }

    /// `consumer_claim` and what maps it to a `[[consumers]]` entry.
    fn consumer_mapping(
        &mut self,
        t: &RawAuthTable,
        span: std::ops::Range<usize>,
        key: &str,
    ) -> Option<ConsumerMapping> {
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
                    .filter_map(|f| {
                        self.one_of(
                            f,
                            &format!("{key}.consumer_by"),
                            "consumer field",
                            &[
                                ("id", ConsumerField::Id),
                                ("username", ConsumerField::Username),
                                ("custom_id", ConsumerField::CustomId),
                            ],
                        )
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
        consumer
    }
}
