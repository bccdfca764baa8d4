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
