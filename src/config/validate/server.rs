//! `[server]`, `[metrics]` and `[log]`.

use super::Builder;
use crate::config::raw::*;
use crate::config::*;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

impl Builder<'_> {
    pub(super) fn server(&mut self, raw: &RawServer) -> Server {
        let (listen, tls) = self.listeners(raw);
        Server {
            listen,
            tls,
            threads: self.count(&raw.threads, "server.threads", default_threads(), 1),
            work_stealing: raw.work_stealing.unwrap_or(true),
            grace_period: self.duration_or_zero(
                &raw.grace_period,
                "server.grace_period",
                Duration::from_secs(10),
            ),
            shutdown_timeout: self.duration_or_zero(
                &raw.shutdown_timeout,
                "server.shutdown_timeout",
                Duration::from_secs(5),
            ),
            trusted_proxies: self.trusted_proxies(raw),
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
            provider_call_limit: self.count(
                &raw.provider_call_limit,
                "server.provider_call_limit",
                200,
                0,
            ) as u64,
            response_write_timeout: self.duration(
                &raw.response_write_timeout,
                "server.response_write_timeout",
                Duration::from_secs(60),
            ),
            response_min_send_rate: self.count(
                &raw.response_min_send_rate,
                "server.response_min_send_rate",
                0,
                0,
            ),
            tunnel_idle_timeout: self.duration(
                &raw.tunnel_idle_timeout,
                "server.tunnel_idle_timeout",
                Duration::from_secs(60),
            ),
            tls_handshake_timeout: self.duration(
                &raw.tls_handshake_timeout,
                "server.tls_handshake_timeout",
                Duration::from_secs(10),
            ),
            keepalive_timeout: self.duration(
                &raw.keepalive_timeout,
                "server.keepalive_timeout",
                Duration::from_secs(60),
            ),
            h2_max_concurrent_streams: self.bounded(
                &raw.h2_max_concurrent_streams,
                "server.h2_max_concurrent_streams",
                100,
                1..=10_000,
            ),
            h2_max_header_list_size: self.bounded(
                &raw.h2_max_header_list_size,
                "server.h2_max_header_list_size",
                64 * 1024,
                1024..=1024 * 1024,
            ),
            state_dir: raw.state_dir.as_ref().and_then(|d| self.state_dir(d)),
            upgrade_ready_timeout: self.duration_or_zero(
                &raw.upgrade_ready_timeout,
                "server.upgrade_ready_timeout",
                Duration::from_secs(15),
            ),
        }
    }

    /// `listen` and `tls`: at least one listener.
    fn listeners(&mut self, raw: &RawServer) -> (Vec<SocketAddr>, Vec<TlsListener>) {
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
                let client_ca = t
                    .client_ca_file
                    .as_ref()
                    .map(|f| self.existing_file(f, &format!("{key}.client_ca_file")));
                Some(TlsListener {
                    listen,
                    cert: cert?,
                    key: key_file?,
                    h2: t.h2.unwrap_or(true),
                    client_ca: client_ca.map(|c| c.ok_or(())).transpose().ok()?,
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
        (listen, tls)
    }

    /// `trusted_proxies`, with a warning for one that trusts every address.
    fn trusted_proxies(&mut self, raw: &RawServer) -> Vec<ipnet::IpNet> {
        raw
                .trusted_proxies
                .iter()
                .enumerate()
                .filter_map(|(i, p)| {
                    let key = format!("server.trusted_proxies[{i}]");
                    let net = self.ip_net(p, &key)?;
                    if net.prefix_len() == 0 {
                        self.errs.warn_at(
                            Some(p.span()),
                            key,
                            format!(
                                "{:?} trusts every address: anyone can then forge X-Forwarded-For \
                                 (and get round the per-client limits) and X-Forwarded-Proto/-Host; \
                                 list only the proxies in front",
                                p.get_ref()
                            ),
                        );
                    }
                    Some(net)
                })
                .collect()
    }

    /// A directory for state: one that exists, or one the gateway may create.
    fn state_dir(&mut self, raw: &SStr) -> Option<PathBuf> {
        let p = PathBuf::from(raw.get_ref());
        if raw.get_ref().is_empty() || p.is_file() {
            self.err(
                raw.span(),
                "server.state_dir",
                format!("{:?} is not a directory", raw.get_ref()),
            );
            return None;
        }
        Some(p)
    }

    /// A list of header names, lower-cased; every entry must be a valid name.
    pub(super) fn header_names(&mut self, raw: &[SStr], key: &str) -> Vec<String> {
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
    pub(super) fn keep_headers(&mut self, raw: &[SStr]) -> Vec<String> {
        let defaults =
            crate::http::headers::HeaderSet::new(crate::http::headers::default_scrubbed(), []);
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

    pub(super) fn metrics(&mut self, raw: &RawMetrics) -> Option<Metrics> {
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

    pub(super) fn log(&mut self, raw: &RawLog) -> Log {
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
}

fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}
