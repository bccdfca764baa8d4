//! `[[forward_auth]]`: the decision endpoint and its sign-in start, with the same `auth` as a
//! route.

use super::*;

impl Builder<'_> {
    pub(super) fn forward_auths(
        &mut self,
        raw: &[toml::Spanned<RawForwardAuth>],
        providers: &[Provider],
        consumers: &[Consumer],
    ) -> Vec<ForwardAuth> {
        raw.iter()
            .enumerate()
            .filter_map(|(i, f)| self.forward_auth(i, f, providers, consumers))
            .collect()
    }

    fn forward_auth(
        &mut self,
        i: usize,
        raw: &toml::Spanned<RawForwardAuth>,
        providers: &[Provider],
        consumers: &[Consumer],
    ) -> Option<ForwardAuth> {
        let key = |k: &str| format!("forward_auth[{i}].{k}");
        let f = raw.get_ref();
        let path = |b: &mut Self, v: &Option<SStr>, k: &str, default: &str| match v {
            Some(p) => b.route_path(p, &key(k)),
            None => Some(default.to_owned()),
        };
        let (suffix_auth, suffix_start) = if i == 0 {
            (String::new(), String::new())
        } else {
            (format!("/{i}"), format!("/{i}"))
        };
        let auth_path = path(self, &f.path, "path", &format!("/oauth2/auth{suffix_auth}"));
        let start_path = path(
            self,
            &f.start_path,
            "start_path",
            &format!("/oauth2/start{suffix_start}"),
        );
        let unauthenticated = match &f.unauthenticated {
            None => Some(Unauthenticated::Status),
            Some(u) => self.one_of(
                u,
                &key("unauthenticated"),
                "answer",
                &[
                    ("401", Unauthenticated::Status),
                    ("redirect", Unauthenticated::Redirect),
                ],
            ),
        };
        let allowed_status = match &f.allowed_status {
            None => Some(202),
            Some(s) => match *s.get_ref() {
                200 => Some(200),
                202 => Some(202),
                other => {
                    self.err(
                        s.span(),
                        key("allowed_status"),
                        format!("{other} is not allowed: expected 202 (the default) or 200 (Envoy ext_authz)"),
                    );
                    None
                }
            },
        };
        let Some(table) = &f.auth else {
            self.err(
                raw.span(),
                key("auth"),
                "missing auth: expected e.g. auth = { provider = \"okta\" }",
            );
            return None;
        };
        let auth = match self.route_auth(
            table.get_ref(),
            table.span(),
            &key("auth"),
            providers,
            consumers,
        ) {
            Auth::Oidc(mut a) => {
                // Behind nginx `auth_request` only 2xx, 401 and 403 are understood: the browser
                // is sent to sign in by the proxy (`start_path`), not by a redirect from here.
                if unauthenticated == Some(Unauthenticated::Status) {
                    a.methods.retain(|m| *m != AuthMethod::AuthorizationCode);
                } else {
                    if !a.methods.contains(&AuthMethod::AuthorizationCode) {
                        a.methods.push(AuthMethod::AuthorizationCode);
                    }
                    // The sign-in ends in a session: without accepting it, every decision
                    // would send the browser to sign in again.
                    if !a.methods.contains(&AuthMethod::Session) {
                        a.methods.insert(a.methods.len() - 1, AuthMethod::Session);
                    }
                }
                if a.methods.is_empty() {
                    a.methods.push(AuthMethod::Session);
                }
                *a
            }
            Auth::None => return None,
        };
        Some(ForwardAuth {
            path: auth_path?,
            start_path: start_path?,
            unauthenticated: unauthenticated?,
            allowed_status: allowed_status?,
            auth,
        })
    }
}

impl Builder<'_> {
    /// Forward-auth paths are the gateway's own: none may repeat another own path.
    pub(super) fn forward_auth_paths(
        &mut self,
        list: &[ForwardAuth],
        providers: &[Provider],
        session: Option<&SessionSettings>,
        raw: &[toml::Spanned<RawForwardAuth>],
    ) {
        let mut seen: Vec<&str> = providers
            .iter()
            .flat_map(|p| {
                [
                    p.callback_path.as_str(),
                    p.logout_path.as_str(),
                    p.backchannel_logout_path.as_str(),
                ]
            })
            .chain(session.map(|s| s.userinfo_path.as_str()))
            .collect();
        for (i, (f, r)) in list.iter().zip(raw).enumerate() {
            for (path, k) in [(&f.path, "path"), (&f.start_path, "start_path")] {
                if seen.contains(&path.as_str()) {
                    self.err(
                        r.span(),
                        format!("forward_auth[{i}].{k}"),
                        format!("path {path:?} is already one of the gateway's own paths"),
                    );
                } else {
                    seen.push(path);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{AuthMethod, Config, Unauthenticated};
    use std::path::Path;

    const BASE: &str = "[session]\nsecrets = [\"forward-auth-config-secret-0123456789ab\"]\n\
        [[providers]]\nname = \"op\"\nissuer = \"https://idp.example.com\"\nclient_id = \"c\"\n\
        client_secret = \"s\"\nredirect_uri = \"https://app.example.com/oauth2/callback\"\n";

    fn parse(extra: &str) -> Result<Config, String> {
        Config::parse(&format!("{BASE}{extra}"), Path::new("f.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_paths_and_methods_follow_the_answer_mode() {
        let c = parse("[[forward_auth]]\nauth = { provider = \"op\" }\n[[forward_auth]]\n\
                       unauthenticated = \"redirect\"\nauth = { provider = \"op\", methods = [\"bearer\"] }\n")
            .unwrap();
        let (a, b) = (&c.forward_auth[0], &c.forward_auth[1]);
        assert_eq!(
            (a.path.as_str(), a.start_path.as_str()),
            ("/oauth2/auth", "/oauth2/start")
        );
        assert_eq!(
            (b.path.as_str(), b.start_path.as_str()),
            ("/oauth2/auth/1", "/oauth2/start/1")
        );
        assert_eq!(a.unauthenticated, Unauthenticated::Status);
        assert_eq!((a.allowed_status, b.allowed_status), (202, 202));
        assert_eq!(
            a.auth.methods,
            [AuthMethod::Session],
            "no redirect behind auth_request"
        );
        assert_eq!(
            b.auth.methods,
            [
                AuthMethod::Bearer,
                AuthMethod::Session,
                AuthMethod::AuthorizationCode
            ],
            "a browser's sign-in ends in a session the decision accepts"
        );
    }

    #[test]
    fn errors_name_the_key() {
        let e =
            parse("[[forward_auth]]\npath = \"/oauth2/callback\"\nauth = { provider = \"op\" }\n")
                .unwrap_err();
        assert!(
            e.contains("forward_auth[0].path") && e.contains("own paths"),
            "{e}"
        );
        let e =
            parse("[[forward_auth]]\nunauthenticated = \"302\"\nauth = { provider = \"op\" }\n")
                .unwrap_err();
        assert!(e.contains("forward_auth[0].unauthenticated"), "{e}");
        let envoy = parse("[[forward_auth]]\nallowed_status = 200\nauth = { provider = \"op\" }\n");
        assert_eq!(envoy.unwrap().forward_auth[0].allowed_status, 200);
        let e = parse("[[forward_auth]]\nallowed_status = 204\nauth = { provider = \"op\" }\n")
            .unwrap_err();
        assert!(
            e.contains("f.toml:10:")
                && e.contains("forward_auth[0].allowed_status")
                && e.contains("200"),
            "{e}"
        );
        let e = parse("[[forward_auth]]\nauth = { provider = \"nope\" }\n").unwrap_err();
        assert!(e.contains("forward_auth[0].auth.provider"), "{e}");
        let e = parse("[[forward_auth]]\npath = \"/x\"\n").unwrap_err();
        assert!(e.contains("forward_auth[0].auth"), "{e}");
    }
}
