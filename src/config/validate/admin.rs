//! `[admin]`: the admin API's listener, and the bearer tokens that may call it (an audience
//! and a group are required: a token any client of the provider can get is not enough).

use super::Builder;
use crate::config::raw::RawAdmin;
use crate::config::{AdminSettings, Auth, AuthMethod, Consumer, Provider};
use toml::Spanned;

impl Builder<'_> {
    pub(super) fn admin(
        &mut self,
        raw: Option<&Spanned<RawAdmin>>,
        providers: &[Provider],
        consumers: &[Consumer],
    ) -> Option<AdminSettings> {
        let raw = raw?;
        let a = raw.get_ref();
        let listen = match &a.listen {
            None => {
                self.err(
                    raw.span(),
                    "admin.listen",
                    "missing: the admin API's own address (listen = \"127.0.0.1:9465\")",
                );
                None
            }
            Some(l) => self.listen_addr(l, "admin.listen"),
        };
        let Some(t) = &a.auth else {
            self.err(
                raw.span(),
                "admin.auth",
                "missing: who may call the admin API (auth = { provider = \"...\", audience_required = [\"gateway-admin\"], groups_required = [\"gateway-admins\"] })",
            );
            return None;
        };
        let table = t.get_ref();
        let Auth::Oidc(mut spec) =
            self.route_auth(table, t.span(), "admin.auth", providers, consumers)
        else {
            return None;
        };
        if table.methods.is_none() {
            spec.methods = vec![AuthMethod::Bearer];
        } else if spec
            .methods
            .iter()
            .any(|m| !matches!(m, AuthMethod::Bearer | AuthMethod::Introspection))
        {
            self.err(
                t.span(),
                "admin.auth.methods",
                "only \"bearer\" and \"introspection\": the admin API takes tokens, never browser sessions (a cookie would let any page the operator visits call it)",
            );
        }
        for (missing, key, example) in [
            (
                spec.rules.audience.any_of.is_empty(),
                "audience_required",
                "[\"gateway-admin\"]",
            ),
            (
                spec.rules.groups.any_of.is_empty(),
                "groups_required",
                "[\"gateway-admins\"]",
            ),
        ] {
            if missing {
                self.err(
                    t.span(),
                    format!("admin.auth.{key}"),
                    format!("missing: the admin API needs both an audience and a group, so a token any client can get is not enough ({key} = {example})"),
                );
            }
        }
        if spec.optional || spec.anonymous.is_some() {
            self.err(
                t.span(),
                "admin.auth",
                "cannot be optional or have an anonymous consumer: every admin call is authenticated",
            );
        }
        Some(AdminSettings {
            listen: listen?,
            auth: *spec,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{AuthMethod, Config};
    use std::path::Path;

    const BASE: &str = "[session]\nsecrets = [\"admin-config-secret-0123456789abcdef\"]\n\
        [[providers]]\nname = \"op\"\nissuer = \"https://idp.example.com\"\nclient_id = \"c\"\n\
        client_secret = \"s\"\nredirect_uri = \"https://app.example.com/oauth2/callback\"\n";

    fn admin(text: &str) -> Result<Config, String> {
        Config::parse(&format!("{BASE}[admin]\n{text}\n"), Path::new("gw.toml"))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn an_admin_api_takes_bearer_tokens_with_an_audience_and_a_group() {
        let c = admin(
            "listen = \"127.0.0.1:9465\"\nauth = { provider = \"op\", audience_required = [\"gw-admin\"], groups_required = [\"ops\"] }",
        )
        .unwrap();
        let a = c.admin.unwrap();
        assert_eq!(a.listen.port(), 9465);
        assert_eq!(a.auth.methods, vec![AuthMethod::Bearer]);
        assert_eq!(c.digest.len(), 64);
    }

    #[test]
    fn a_weak_admin_api_is_refused_with_the_key() {
        for (text, key, says) in [
            (
                "auth = { provider = \"op\", audience_required = [\"a\"], groups_required = [\"g\"] }",
                "admin.listen",
                "missing",
            ),
            ("listen = \"127.0.0.1:9465\"", "admin.auth", "missing"),
            (
                "listen = \"127.0.0.1:9465\"\nauth = { provider = \"op\", groups_required = [\"g\"] }",
                "admin.auth.audience_required",
                "both an audience and a group",
            ),
            (
                "listen = \"127.0.0.1:9465\"\nauth = { provider = \"op\", audience_required = [\"a\"] }",
                "admin.auth.groups_required",
                "both an audience and a group",
            ),
            (
                "listen = \"127.0.0.1:9465\"\nauth = { provider = \"op\", methods = [\"session\"], audience_required = [\"a\"], groups_required = [\"g\"] }",
                "admin.auth.methods",
                "never browser sessions",
            ),
            (
                "listen = \"127.0.0.1:9465\"\nauth = { provider = \"nope\", audience_required = [\"a\"], groups_required = [\"g\"] }",
                "admin.auth",
                "nope",
            ),
        ] {
            let err = admin(text).unwrap_err();
            assert!(err.contains(key), "{text}: {err}");
            assert!(err.contains(says), "{text}: {err}");
            assert!(err.contains("gw.toml:"), "{text}: {err}");
        }
    }
}
