//! `[redis]`: where the fleet's shared state lives, and how long it may be answered from memory.

use super::Builder;
use crate::config::raw::*;
use crate::config::*;
use toml::Spanned;

impl Builder<'_> {
    pub(super) fn redis(&mut self, raw: Option<&Spanned<RawRedis>>) -> Option<RedisSettings> {
        let spanned = raw?;
        let r = spanned.get_ref();
        let url = |b: &mut Self, raw: &SStr, key: &str| -> Option<(String, bool)> {
            let v = raw.get_ref();
            match v.split_once("://") {
                Some(("redis", rest)) if !rest.is_empty() => Some((v.clone(), false)),
                Some(("rediss", rest)) if !rest.is_empty() => Some((v.clone(), true)),
                _ => {
                    b.err(
                        raw.span(),
                        key,
                        format!("invalid Redis URL {v:?}: expected redis://host:port or rediss://host:port"),
                    );
                    None
                }
            }
        };
        let topology = match (&r.url, &r.sentinel, &r.cluster_nodes) {
            (Some(u), None, None) => RedisTopology::Single(url(self, u, "redis.url")?.0),
            (None, Some(s), None) => {
                let sentinel = s.get_ref();
                let nodes: Vec<(String, bool)> = sentinel
                    .nodes
                    .iter()
                    .enumerate()
                    .filter_map(|(i, n)| url(self, n, &format!("redis.sentinel.nodes[{i}]")))
                    .collect();
                if nodes.is_empty() {
                    self.err(
                        s.span(),
                        "redis.sentinel.nodes",
                        "at least one sentinel is needed",
                    );
                    return None;
                }
                RedisTopology::Sentinel {
                    master: sentinel.master.get_ref().clone(),
                    tls: nodes.iter().any(|(_, tls)| *tls),
                    nodes: nodes.into_iter().map(|(u, _)| u).collect(),
                }
            }
            (None, None, Some(list)) => {
                let nodes: Vec<String> = list
                    .iter()
                    .enumerate()
                    .filter_map(|(i, n)| url(self, n, &format!("redis.cluster_nodes[{i}]")))
                    .map(|(u, _)| u)
                    .collect();
                if nodes.is_empty() {
                    self.err(
                        spanned.span(),
                        "redis.cluster_nodes",
                        "at least one node is needed",
                    );
                    return None;
                }
                RedisTopology::Cluster(nodes)
            }
            _ => {
                self.err(
                    spanned.span(),
                    "redis",
                    "give exactly one of url, sentinel = { master, nodes } or cluster_nodes",
                );
                return None;
            }
        };
        let key_prefix = r
            .key_prefix
            .as_ref()
            .map_or_else(|| "oidc-gateway:".to_owned(), |p| p.get_ref().clone());
        if key_prefix.contains(['{', '}']) {
            // Braces are Cluster hash tags: the gateway places its own.
            let span = r.key_prefix.as_ref().map(|p| p.span());
            self.errs.at(
                span,
                "redis.key_prefix",
                "the key prefix may not contain '{' or '}'",
            );
        }
        Some(RedisSettings {
            topology,
            username: r.username.as_ref().map(|u| u.get_ref().clone()),
            password: self.secret_value(&r.password, &r.password_file, "redis.password"),
            key_prefix,
            command_timeout: self.duration(
                &r.command_timeout,
                "redis.command_timeout",
                Duration::from_millis(100),
            ),
            connect_timeout: self.duration(
                &r.connect_timeout,
                "redis.connect_timeout",
                Duration::from_secs(1),
            ),
            ca_file: r
                .ca_file
                .as_ref()
                .and_then(|f| self.existing_file(f, "redis.ca_file")),
            local_cache_ttl: self.duration_or_zero(
                &r.local_cache_ttl,
                "redis.local_cache_ttl",
                Duration::from_secs(5),
            ),
        })
    }
}
