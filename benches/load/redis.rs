//! The Redis-store rows: a `redis-server` of the benchmark's own, the gateway restarted with
//! `store = "redis"` (local cache on, then off), Redis commands per request counted from
//! `INFO commandstats`, and Redis memory per session.

use super::*;

/// A fresh, non-persistent `redis-server` on `port`.
pub fn start_redis(d: &Path, port: u16) -> Proc {
    let p = spawn(
        Command::new("redis-server").args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--maxmemory-policy",
            "noeviction",
        ]),
        &d.join("redis.log"),
    );
    wait_port(port, "redis-server");
    p
}

/// The gateway's config with the Redis store on `redis_port`.
pub fn redis_gateway_config(d: &Path, p: &Ports, redis_port: u16, local_cache_ttl: &str) -> String {
    format!(
        "{}\n[redis]\nurl = \"redis://127.0.0.1:{redis_port}\"\nlocal_cache_ttl = \"{local_cache_ttl}\"\n",
        gateway_config(d, p, "redis")
    )
}

/// Commands Redis has run so far (`INFO commandstats`, the INFO calls themselves excluded).
pub fn redis_calls(port: u16) -> u64 {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string(), "INFO", "commandstats"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    out.lines()
        .filter(|l| l.starts_with("cmdstat_") && !l.starts_with("cmdstat_info:"))
        .filter_map(|l| {
            l.split(',')
                .find_map(|f| f.split_once("calls=").map(|(_, v)| v.parse::<u64>().ok()))
                .flatten()
        })
        .sum()
}

/// `used_memory` of the server on `port`, in bytes.
fn used_memory(port: u16) -> u64 {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string(), "INFO", "memory"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    out.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Stores `n` sessions shaped like the dev IdP's through the Redis store (as logins do:
/// the session, its user and IdP-session index entries), under their own key prefix; the
/// bytes of Redis memory each one takes.
pub async fn redis_session_memory(port: u16, n: usize) -> f64 {
    use futures::StreamExt;
    use oidc_gateway::config::{RedisSettings, RedisTopology, Secret};
    use oidc_gateway::fleet::Fleet;
    use oidc_gateway::http::cookies::CookieAttrs;
    use oidc_gateway::session::store::{Loaded, Sessions};
    let config = oidc_gateway::config::Config::parse(
        &gateway_config(Path::new("/tmp"), &Ports::default(), "redis").replace(
            "[metrics]",
            "[redis]\nurl = \"redis://127.0.0.1:1\"\n\n[metrics]",
        ),
        Path::new("gateway.toml"),
    )
    .unwrap();
    let settings = config.session.clone().unwrap();
    let r = RedisSettings {
        topology: RedisTopology::Single(format!("redis://127.0.0.1:{port}")),
        username: None,
        password: None,
        key_prefix: "memory-bench:".into(),
        command_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(5),
        ca_file: None,
        local_cache_ttl: Duration::ZERO,
    };
    let fleet = std::sync::Arc::new(Fleet::new(&r, &[Secret::new(SESSION_SECRET)]).unwrap());
    let sessions = Sessions::new(&settings, Some(&fleet), None).unwrap();
    let before = used_memory(port);
    let now = oidc_gateway::clock::now();
    let attrs = CookieAttrs::default();
    futures::stream::iter(0..n)
        .map(|i| {
            let (sessions, attrs) = (&sessions, &attrs);
            async move {
                sessions
                    .save(&Loaded::Absent, session_data(i, now), attrs)
                    .await
                    .expect("a session stored in Redis");
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<()>>()
        .await;
    used_memory(port).saturating_sub(before) as f64 / n as f64
}
