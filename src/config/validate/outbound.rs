//! A provider's outbound settings: the forward proxy its calls go through (`http_proxy`,
//! `no_proxy`, `proxy_from_env`) and the client certificate they present (`client_cert_file`,
//! `client_key_file`).

use super::Builder;
use crate::config::Outbound;
use crate::config::raw::RawProvider;

impl Builder<'_> {
    /// The provider's outbound settings, each key checked where it is written.
    pub(super) fn outbound(&mut self, raw: &RawProvider, key: &dyn Fn(&str) -> String) -> Outbound {
        let proxy = self
            .secret_value(&raw.http_proxy, &None, &key("http_proxy"))
            .filter(|url| {
                let problem = match openidconnect::url::Url::parse(url.expose()) {
                    Ok(u) if !matches!(u.scheme(), "http" | "https") => Some(format!(
                        "scheme {:?}: expected http:// or https://",
                        u.scheme()
                    )),
                    Ok(u) if u.host().is_none() => Some("no host".to_owned()),
                    Ok(_) => None,
                    // The URL's own text may hold a password: the error does not repeat it.
                    Err(e) => Some(e.to_string()),
                };
                if let (Some(p), Some(span)) = (&problem, raw.http_proxy.as_ref().map(|v| v.span()))
                {
                    self.err(span, key("http_proxy"), format!("invalid proxy URL: {p}"));
                }
                problem.is_none()
            });
        let no_proxy = self
            .words(&raw.no_proxy, &key("no_proxy"))
            .unwrap_or_default();
        if let (Some(list), None) = (&raw.no_proxy, &raw.http_proxy) {
            let span = list.first().map_or(0..0, |v| v.span());
            self.err(
                span,
                key("no_proxy"),
                "no_proxy applies to http_proxy, which is not set (the environment's NO_PROXY applies to the environment's proxy)",
            );
        }
        if raw.http_proxy.is_some() && raw.proxy_from_env == Some(true) {
            let span = raw.http_proxy.as_ref().map_or(0..0, |v| v.span());
            self.err(
                span,
                key("proxy_from_env"),
                "http_proxy replaces the environment's proxy: remove proxy_from_env = true",
            );
        }
        Outbound {
            proxy,
            no_proxy,
            proxy_from_env: raw.proxy_from_env.unwrap_or(true),
            client_cert: self.client_cert(raw, key),
        }
    }

    /// `client_cert_file` and `client_key_file`: both or neither, readable, and a certificate
    /// with its private key (checked now, so `check` finds a wrong file, not the first login).
    fn client_cert(
        &mut self,
        raw: &RawProvider,
        key: &dyn Fn(&str) -> String,
    ) -> Option<(std::path::PathBuf, std::path::PathBuf)> {
        let (cert, private) = match (&raw.client_cert_file, &raw.client_key_file) {
            (None, None) => return None,
            (Some(c), Some(k)) => (c, k),
            (Some(only), None) | (None, Some(only)) => {
                self.err(
                    only.span(),
                    key("client_cert_file"),
                    "client_cert_file and client_key_file go together: give both",
                );
                return None;
            }
        };
        let cert_path = self.existing_file(cert, &key("client_cert_file"))?;
        let key_path = self.existing_file(private, &key("client_key_file"))?;
        if let Err(e) = crate::config::outbound::identity(&cert_path, &key_path) {
            self.err(cert.span(), key("client_cert_file"), e);
            return None;
        }
        Some((cert_path, key_path))
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, Outbound};
    use std::path::Path;

    fn outbound(extra: &str) -> Result<Outbound, String> {
        let text = format!(
            "[session]\nsecrets = [\"outbound-config-secret-0123456789abcdef\"]\n\
             [[providers]]\nname = \"op\"\nissuer = \"https://idp.example.com\"\nclient_id = \"c\"\n\
             client_secret = \"s\"\nredirect_uri = \"https://app.example.com/oauth2/callback\"\n{extra}\n"
        );
        let c = Config::parse(&text, Path::new("f.toml")).map_err(|e| e.to_string())?;
        Ok(c.providers[0].outbound.clone())
    }

    #[test]
    fn the_environments_proxy_is_followed_unless_told_otherwise() {
        let o = outbound("").unwrap();
        assert!(o.proxy.is_none() && o.proxy_from_env && o.client_cert.is_none());
        assert!(!outbound("proxy_from_env = false").unwrap().proxy_from_env);
        let o = outbound(
            "http_proxy = \"http://user:pw@proxy.internal:3128\"\nno_proxy = [\"10.0.0.0/8\", \".corp\"]",
        )
        .unwrap();
        assert_eq!(
            o.proxy.as_ref().map(|p| p.expose()),
            Some("http://user:pw@proxy.internal:3128")
        );
        assert_eq!(o.no_proxy, ["10.0.0.0/8", ".corp"]);
        assert!(
            !format!("{o:?}").contains("pw@"),
            "the proxy's credentials are not printed"
        );
    }

    #[test]
    fn bad_outbound_keys_name_the_file_line_and_key_and_keep_passwords_out() {
        for (extra, key, never) in [
            (
                "http_proxy = \"socks5://p:1080\"",
                "providers[0].http_proxy",
                "",
            ),
            (
                "http_proxy = \"http://user:hunter2@\"",
                "providers[0].http_proxy",
                "hunter2",
            ),
            ("no_proxy = [\"a.example\"]", "providers[0].no_proxy", ""),
            (
                "http_proxy = \"http://p:3128\"\nproxy_from_env = true",
                "providers[0].proxy_from_env",
                "",
            ),
            (
                "client_cert_file = \"/etc/hostname\"",
                "providers[0].client_cert_file",
                "",
            ),
            (
                "client_cert_file = \"/etc/hostname\"\nclient_key_file = \"/etc/hostname\"",
                "providers[0].client_cert_file",
                "",
            ),
            (
                "client_cert_file = \"/nonexistent.pem\"\nclient_key_file = \"/etc/hostname\"",
                "providers[0].client_cert_file",
                "",
            ),
        ] {
            let e = outbound(extra).unwrap_err();
            assert!(e.contains("f.toml:") && e.contains(key), "{extra}: {e}");
            assert!(never.is_empty() || !e.contains(never), "{extra}: {e}");
        }
    }
}
