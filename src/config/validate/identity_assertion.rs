//! `[identity_assertion]`: the signed identity JWT sent to upstreams.

use super::*;

impl Builder<'_> {
    pub(super) fn identity_assertion(
        &mut self,
        raw: Option<&toml::Spanned<RawIdentityAssertion>>,
        server: &Server,
    ) -> Option<IdentityAssertion> {
        let raw = raw?;
        let (span, r) = (raw.span(), raw.get_ref());
        let key = |k: &str| format!("identity_assertion.{k}");
        let header = match &r.header {
            Some(h) => self.header_name(h.get_ref(), h.span(), &key("header")),
            None => {
                self.err(
                    span.clone(),
                    key("header"),
                    "missing header: e.g. header = \"X-Gateway-Assertion\"",
                );
                None
            }
        };
        let issuer = match &r.issuer {
            Some(i) if !i.get_ref().trim().is_empty() => Some(i.get_ref().clone()),
            _ => {
                self.err(
                    span.clone(),
                    key("issuer"),
                    "missing issuer: the gateway's name or URL, e.g. issuer = \"https://gateway.example.com\"",
                );
                None
            }
        };
        let key_files: Vec<PathBuf> = r
            .key_files
            .iter()
            .flatten()
            .map(|f| PathBuf::from(f.get_ref()))
            .collect();
        if key_files.is_empty() && server.state_dir.is_none() {
            self.err(
                span.clone(),
                key("key_files"),
                "no signing key: give key_files (PEM EC P-256), or set [server] state_dir to keep a generated one",
            );
        }
        let jwks_path = match &r.jwks_path {
            Some(p) => self.own_path(p, &key("jwks_path")),
            None => "/.well-known/oidc-gateway/jwks.json".to_owned(),
        };
        let lifetime = self.duration(&r.lifetime, &key("lifetime"), Duration::from_secs(60));
        if lifetime < Duration::from_secs(10) {
            let s = r.lifetime.as_ref().map_or(span.clone(), |l| l.span());
            self.err(
                s,
                key("lifetime"),
                "at least 10s: a shorter one expires in transit",
            );
        }
        Some(IdentityAssertion {
            header: header?,
            issuer: issuer?,
            audience: r.audience.as_ref().map(|a| a.get_ref().clone()),
            lifetime,
            key_files,
            jwks_path,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use std::path::Path;

    fn parse(server: &str, section: &str) -> Result<Config, String> {
        let text = format!(
            "[server]\n{server}\n[session]\nsecrets = [\"identity-config-secret-0123456789abcd\"]\n\
             [[providers]]\nname = \"op\"\nissuer = \"https://idp.example.com\"\nclient_id = \"c\"\n\
             client_secret = \"s\"\nredirect_uri = \"https://app.example.com/oauth2/callback\"\n\
             [identity_assertion]\n{section}\n"
        );
        Config::parse(&text, Path::new("i.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_and_errors_name_the_key() {
        let ok = parse(
            "state_dir = \"/tmp/x\"",
            "header = \"X-Gateway-Assertion\"\nissuer = \"https://gw\"",
        )
        .unwrap();
        let a = ok.identity_assertion.unwrap();
        assert_eq!(a.lifetime.as_secs(), 60);
        assert_eq!(a.jwks_path, "/.well-known/oidc-gateway/jwks.json");
        let e = parse("", "header = \"X-A\"\nissuer = \"https://gw\"").unwrap_err();
        assert!(e.contains("identity_assertion.key_files"), "{e}");
        let e = parse("state_dir = \"/tmp/x\"", "issuer = \"https://gw\"").unwrap_err();
        assert!(e.contains("identity_assertion.header"), "{e}");
        let e = parse(
            "state_dir = \"/tmp/x\"",
            "header = \"X-A\"\nissuer = \"https://gw\"\njwks_path = \"/oauth2/callback\"",
        )
        .unwrap_err();
        assert!(e.contains("identity_assertion.jwks_path"), "{e}");
        let e = parse(
            "state_dir = \"/tmp/x\"",
            "header = \"X-A\"\nissuer = \"https://gw\"\nlifetime = \"5s\"",
        )
        .unwrap_err();
        assert!(e.contains("identity_assertion.lifetime"), "{e}");
    }
}
