//! How a provider's calls leave the gateway: the forward proxy and the client certificate.

use super::Secret;
use std::path::{Path, PathBuf};

/// The environment variables reqwest reads for a proxy, in the order it prefers them.
const ENV_PROXIES: [&str; 6] = [
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// How a provider's calls (discovery, keys, tokens, userinfo, introspection, revocation) leave
/// the gateway.
#[derive(Debug, Clone, Default)]
pub struct Outbound {
    /// `http_proxy`: every call goes through this forward proxy (it may carry credentials).
    pub proxy: Option<Secret>,
    /// `no_proxy`: hosts, `.domains` and CIDR ranges that `proxy` does not serve.
    pub no_proxy: Vec<String>,
    /// Without `http_proxy`: follow `HTTPS_PROXY` / `HTTP_PROXY` / `ALL_PROXY` / `NO_PROXY`
    /// (`proxy_from_env = true`, the default) or go direct whatever they say.
    pub proxy_from_env: bool,
    /// `client_cert_file` and `client_key_file` (PEM): presented when the provider asks for a
    /// client certificate (RFC 8705 `tls_client_auth`).
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

impl Outbound {
    /// Which way calls go, for the start-up log: a proxy by scheme, host and port (never its
    /// credentials), or direct, and why.
    pub fn describe(&self) -> String {
        match &self.proxy {
            Some(url) => {
                let at = openidconnect::url::Url::parse(url.expose()).map_or_else(
                    |_| "?".to_owned(),
                    |u| {
                        let host = u.host_str().unwrap_or("?");
                        match u.port_or_known_default() {
                            Some(port) => format!("{}://{host}:{port}", u.scheme()),
                            None => format!("{}://{host}", u.scheme()),
                        }
                    },
                );
                match self.no_proxy.is_empty() {
                    true => format!("through the proxy {at} (http_proxy)"),
                    false => format!(
                        "through the proxy {at} (http_proxy), except to {}",
                        self.no_proxy.join(", ")
                    ),
                }
            }
            None if !self.proxy_from_env => "direct (proxy_from_env = false)".to_owned(),
            None => match ENV_PROXIES.iter().find(|v| std::env::var_os(v).is_some()) {
                Some(var) => format!(
                    "through the proxy in {var}, as NO_PROXY allows (proxy_from_env = true)"
                ),
                None => "direct (no proxy in the environment)".to_owned(),
            },
        }
    }

    /// The client certificate and key as one TLS identity, if configured.
    pub fn identity(&self) -> Result<Option<openidconnect::reqwest::Identity>, String> {
        self.client_cert
            .as_ref()
            .map(|(cert, key)| identity(cert, key))
            .transpose()
    }
}

/// Reads a PEM certificate (chain) and its PEM private key into one TLS identity.
pub fn identity(cert: &Path, key: &Path) -> Result<openidconnect::reqwest::Identity, String> {
    let read = |p: &Path| std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()));
    let mut pem = read(cert)?;
    pem.push(b'\n');
    pem.extend(read(key)?);
    openidconnect::reqwest::Identity::from_pem(&pem).map_err(|e| {
        format!(
            "{} and {} are not a PEM certificate and its private key: {e}",
            cert.display(),
            key.display()
        )
    })
}
