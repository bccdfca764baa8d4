//! `[[upstreams]]`: targets resolved at load, balancing, health checks, timeouts.

use super::Builder;
use crate::config::raw::*;
use crate::config::*;
use std::net::SocketAddr;
use std::net::ToSocketAddrs;
use std::time::Duration;
use toml::Spanned;

impl Builder<'_> {
    pub(super) fn upstream(&mut self, i: usize, raw: &RawUpstream) -> Upstream {
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

    pub(super) fn hash_key(&mut self, raw: &Option<SStr>, key: &str) -> HashKey {
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

    pub(super) fn health_check(&mut self, raw: &Spanned<RawHealthCheck>, key: &str) -> HealthCheck {
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
}

/// Resolves `host:port` once, at load time: DNS never runs on the request path.
fn resolve(address: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = address.parse::<SocketAddr>() {
        return Ok(a);
    }
    let expected = "expected host:port such as \"127.0.0.1:3000\" or \"app.internal:8080\"";
    if let Some((scheme, rest)) = address.split_once("://") {
        let tls = if scheme.eq_ignore_ascii_case("https") {
            " (and set tls = true on the upstream for TLS)"
        } else {
            ""
        };
        return Err(format!(
            "invalid address {address:?}: drop the scheme ({scheme}://), a target is host:port \
             such as {rest:?}{tls}"
        ));
    }
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
