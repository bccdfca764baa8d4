//! Turns the raw file format into a [`Config`], collecting every error rather than the first.

use super::error::{Collector, ConfigErrors};
use super::locate;
use super::raw::*;
use super::*;
use std::collections::HashSet;
use std::net::ToSocketAddrs;
use toml::Spanned;
use toml_edit::ImDocument;

pub(super) fn parse(source: &str, file: &Path) -> Result<Config, ConfigErrors> {
    let mut errs = Collector::new(file, source);
    let doc = match ImDocument::parse(source) {
        Ok(doc) => doc,
        Err(e) => {
            errs.at(
                e.span(),
                "",
                format!("invalid TOML: {}", e.message().trim()),
            );
            return Err(errs.finish().unwrap_err());
        }
    };

    let mut unknown = Vec::new();
    let result: Result<RawConfig, _> =
        serde_ignored::deserialize(toml::Deserializer::new(source), |path| {
            unknown.push(locate::from_ignored(&path))
        });
    for path in &unknown {
        errs.at(
            locate::span_of(&doc, path),
            locate::display(path),
            "unknown key",
        );
    }
    let raw = match result {
        Ok(raw) => raw,
        Err(e) => {
            let key = e
                .span()
                .map(|s| locate::display(&locate::path_at(&doc, s.start)))
                .unwrap_or_default();
            errs.at(e.span(), key, e.message().trim().to_owned());
            return Err(errs.finish().unwrap_err());
        }
    };

    let mut b = Builder { errs };
    let config = b.build(raw, file);
    b.errs.finish().map(|()| config)
}

struct Builder<'a> {
    errs: Collector<'a>,
}

impl Builder<'_> {
    fn build(&mut self, raw: RawConfig, file: &Path) -> Config {
        let server = self.server(&raw.server);
        let metrics = self.metrics(&raw.metrics);
        let log = self.log(&raw.log);
        let upstreams: Vec<Upstream> = raw
            .upstreams
            .iter()
            .enumerate()
            .map(|(i, u)| self.upstream(i, u))
            .collect();
        self.unique_names("upstreams", raw.upstreams.iter().map(|u| &u.name));
        let routes = raw
            .routes
            .iter()
            .enumerate()
            .filter_map(|(i, r)| self.route(i, r, &upstreams))
            .collect();
        self.unique_names("routes", raw.routes.iter().map(|r| &r.name));
        Config {
            source: file.to_path_buf(),
            server,
            metrics,
            log,
            upstreams,
            routes,
        }
    }

    fn err(
        &mut self,
        span: std::ops::Range<usize>,
        key: impl Into<String>,
        msg: impl Into<String>,
    ) {
        self.errs.at(Some(span), key, msg);
    }

    fn server(&mut self, raw: &RawServer) -> Server {
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
                Some(TlsListener {
                    listen,
                    cert: cert?,
                    key: key_file?,
                    h2: t.h2.unwrap_or(true),
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
        Server {
            listen,
            tls,
            threads: self.count(&raw.threads, "server.threads", default_threads(), 1),
            work_stealing: raw.work_stealing.unwrap_or(true),
            grace_period: self.duration(
                &raw.grace_period,
                "server.grace_period",
                Duration::from_secs(10),
            ),
            shutdown_timeout: self.duration(
                &raw.shutdown_timeout,
                "server.shutdown_timeout",
                Duration::from_secs(5),
            ),
            trusted_proxies: raw
                .trusted_proxies
                .iter()
                .enumerate()
                .filter_map(|(i, p)| self.ip_net(p, &format!("server.trusted_proxies[{i}]")))
                .collect(),
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
        }
    }

    fn metrics(&mut self, raw: &RawMetrics) -> Option<Metrics> {
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

    fn log(&mut self, raw: &RawLog) -> Log {
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

    fn upstream(&mut self, i: usize, raw: &RawUpstream) -> Upstream {
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

    fn hash_key(&mut self, raw: &Option<SStr>, key: &str) -> HashKey {
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

    fn health_check(&mut self, raw: &Spanned<RawHealthCheck>, key: &str) -> HealthCheck {
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

    fn route(&mut self, i: usize, raw: &RawRoute, upstreams: &[Upstream]) -> Option<Route> {
        let key = |k: &str| format!("routes[{i}].{k}");
        self.name(&raw.name, &key("name"));
        let hosts = raw
            .hosts
            .iter()
            .enumerate()
            .filter_map(|(j, h)| self.host(h, &format!("routes[{i}].hosts[{j}]")))
            .collect();
        let paths = match &raw.paths {
            None => vec!["/".to_owned()],
            Some(paths) => paths
                .iter()
                .enumerate()
                .filter_map(|(j, p)| self.route_path(p, &format!("routes[{i}].paths[{j}]")))
                .collect(),
        };
        let methods = raw
            .methods
            .iter()
            .enumerate()
            .filter_map(|(j, m)| {
                let upper = m.get_ref().to_ascii_uppercase();
                match http::Method::from_bytes(upper.as_bytes()) {
                    Ok(method) if !upper.is_empty() => Some(method),
                    _ => {
                        self.err(
                            m.span(),
                            format!("routes[{i}].methods[{j}]"),
                            format!("invalid HTTP method {:?}", m.get_ref()),
                        );
                        None
                    }
                }
            })
            .collect();
        let upstream = upstreams
            .iter()
            .position(|u| u.name == *raw.upstream.get_ref());
        if upstream.is_none() {
            let known: Vec<&str> = upstreams.iter().map(|u| u.name.as_str()).collect();
            self.err(
                raw.upstream.span(),
                key("upstream"),
                format!(
                    "no upstream named {:?} (defined: {})",
                    raw.upstream.get_ref(),
                    if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    }
                ),
            );
        }
        let auth = match raw.auth.as_ref() {
            None => Auth::None,
            Some(a) => match a.get_ref() {
                StrOrTable::Str(s) if s == "none" => Auth::None,
                StrOrTable::Str(s) => {
                    self.err(a.span(), key("auth"), format!("unknown auth {s:?}: expected \"none\" or a table such as {{ provider = \"okta\" }}"));
                    Auth::None
                }
                StrOrTable::Table(t) => {
                    let provider = t.provider.as_ref().map_or("", |p| p.get_ref().as_str());
                    self.err(a.span(), key("auth"), format!("provider {provider:?}: OpenID Connect authentication needs [[providers]], which this version does not support yet"));
                    Auth::None
                }
            },
        };
        Some(Route {
            name: raw.name.get_ref().clone(),
            hosts,
            paths,
            methods,
            upstream: upstream?,
            strip_path: raw.strip_path.unwrap_or(false),
            preserve_host: raw.preserve_host.unwrap_or(true),
            auth,
        })
    }

    fn host(&mut self, raw: &SStr, key: &str) -> Option<String> {
        let h = raw.get_ref().to_ascii_lowercase();
        let name = h.strip_prefix("*.").unwrap_or(&h);
        let valid = !name.is_empty()
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !valid {
            self.err(
                raw.span(),
                key,
                format!("invalid host {:?}: expected a host name such as \"app.example.com\" or \"*.example.org\" (no port)", raw.get_ref()),
            );
            return None;
        }
        Some(h)
    }

    fn route_path(&mut self, raw: &SStr, key: &str) -> Option<String> {
        let p = raw.get_ref();
        if !p.starts_with('/')
            || p.contains(['?', '#', '%', '\\'])
            || p.contains("//")
            || p.split('/').any(|s| s == "." || s == "..")
        {
            self.err(
                raw.span(),
                key,
                format!(
                    "invalid path {p:?}: expected a canonical path prefix such as \"/\" or \"/api\""
                ),
            );
            return None;
        }
        // A trailing slash would never match the bare prefix; prefixes match on segment boundaries.
        let trimmed = if p.len() > 1 {
            p.trim_end_matches('/')
        } else {
            p
        };
        Some(trimmed.to_owned())
    }

    fn name(&mut self, raw: &SStr, key: &str) {
        let n = raw.get_ref();
        if n.is_empty()
            || !n
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            self.err(
                raw.span(),
                key,
                format!("invalid name {n:?}: use letters, digits, '-', '_' or '.'"),
            );
        }
    }

    fn unique_names<'n>(&mut self, section: &str, names: impl Iterator<Item = &'n SStr>) {
        let mut seen = HashSet::new();
        for (i, n) in names.enumerate() {
            if !seen.insert(n.get_ref().as_str()) {
                self.err(
                    n.span(),
                    format!("{section}[{i}].name"),
                    format!("duplicate name {:?}", n.get_ref()),
                );
            }
        }
    }

    fn duration(&mut self, raw: &Option<SStr>, key: &str, default: Duration) -> Duration {
        let Some(raw) = raw else { return default };
        match humantime::parse_duration(raw.get_ref()) {
            Ok(d) => d,
            Err(_) => {
                self.err(
                    raw.span(),
                    key,
                    format!("invalid duration {:?}: expected e.g. \"500ms\", \"10s\", \"15m\" or \"1h\"", raw.get_ref()),
                );
                default
            }
        }
    }

    fn count(
        &mut self,
        raw: &Option<Spanned<i64>>,
        key: &str,
        default: usize,
        min: usize,
    ) -> usize {
        let Some(raw) = raw else { return default };
        match usize::try_from(*raw.get_ref()) {
            Ok(n) if n >= min => n,
            _ => {
                self.err(
                    raw.span(),
                    key,
                    format!(
                        "{} is out of range: expected a whole number >= {min}",
                        raw.get_ref()
                    ),
                );
                default
            }
        }
    }

    fn listen_addr(&mut self, raw: &SStr, key: &str) -> Option<SocketAddr> {
        match raw.get_ref().parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                self.err(
                    raw.span(),
                    key,
                    format!("invalid listen address {:?}: expected IP:port such as \"127.0.0.1:8080\" or \"[::]:443\"", raw.get_ref()),
                );
                None
            }
        }
    }

    fn ip_net(&mut self, raw: &SStr, key: &str) -> Option<ipnet::IpNet> {
        let v = raw.get_ref();
        if let Ok(net) = v.parse::<ipnet::IpNet>() {
            return Some(net.trunc());
        }
        if let Ok(ip) = v.parse::<std::net::IpAddr>() {
            return Some(ipnet::IpNet::from(ip));
        }
        self.err(
            raw.span(),
            key,
            format!("invalid network {v:?}: expected an IP or CIDR such as \"10.0.0.0/8\""),
        );
        None
    }

    fn existing_file(&mut self, raw: &SStr, key: &str) -> Option<PathBuf> {
        let p = PathBuf::from(raw.get_ref());
        if p.is_file() {
            Some(p)
        } else {
            self.err(
                raw.span(),
                key,
                format!("file {:?} does not exist", raw.get_ref()),
            );
            None
        }
    }
}

/// Resolves `host:port` once, at load time: DNS never runs on the request path.
fn resolve(address: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = address.parse::<SocketAddr>() {
        return Ok(a);
    }
    let expected = "expected host:port such as \"127.0.0.1:3000\" or \"app.internal:8080\"";
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

fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(src: &str) -> Result<Config, ConfigErrors> {
        parse(src, Path::new("test.toml"))
    }

    const MINIMAL: &str = r#"
[[upstreams]]
name = "app"
targets = ["127.0.0.1:3000", { address = "127.0.0.1:3001", weight = 3 }]

[[routes]]
name = "app"
upstream = "app"
"#;

    #[test]
    fn minimal_config_gets_documented_defaults() {
        let c = parse_str(MINIMAL).unwrap();
        assert_eq!(c.server.listen, vec!["127.0.0.1:8080".parse().unwrap()]);
        assert_eq!(c.server.grace_period, Duration::from_secs(10));
        assert_eq!(c.upstreams[0].targets[1].weight, 3);
        assert_eq!(c.upstreams[0].connect_timeout, Duration::from_secs(2));
        assert_eq!(c.upstreams[0].retries, 1);
        assert_eq!(c.routes[0].paths, vec!["/"]);
        assert!(c.routes[0].preserve_host);
        assert_eq!(c.routes[0].auth, Auth::None);
        assert_eq!(c.metrics.unwrap().listen, "127.0.0.1:9464".parse().unwrap());
    }

    #[test]
    fn every_error_is_reported_with_its_line() {
        let src = r#"[server]
listen = ["127.0.0.1:8080"]
bogus_key = 1

[[upstreams]]
name = "app"
targets = ["not an address"]
connect_timeout = "2 parsecs"

[[routes]]
name = "app"
upstream = "missing"
"#;
        let errs = parse_str(src).unwrap_err().0;
        let lines: Vec<(usize, &str)> = errs.iter().map(|e| (e.line, e.key.as_str())).collect();
        assert_eq!(
            lines,
            vec![
                (3, "server.bogus_key"),
                (7, "upstreams[0].targets[0]"),
                (8, "upstreams[0].connect_timeout"),
                (12, "routes[0].upstream"),
            ],
            "{errs:#?}"
        );
        assert!(errs[2].message.contains("invalid duration"));
        assert!(errs[3].message.contains("no upstream named \"missing\""));
    }

    #[test]
    fn wrong_type_names_key_and_line() {
        let errs = parse_str("[server]\nthreads = \"two\"\n").unwrap_err().0;
        assert_eq!(errs.len(), 1);
        assert_eq!((errs[0].line, errs[0].key.as_str()), (2, "server.threads"));
        assert!(
            errs[0].message.contains("invalid type"),
            "{}",
            errs[0].message
        );
    }

    #[test]
    fn unknown_keys_inside_inline_tables_are_found() {
        let src = format!("{MINIMAL}auth = {{ providr = \"x\" }}\n");
        let errs = parse_str(&src).unwrap_err().0;
        assert!(
            errs.iter().any(|e| e.key == "routes[0].auth.providr"),
            "{errs:#?}"
        );
    }

    #[test]
    fn duplicate_names_and_bad_hosts_and_paths_are_errors() {
        let src = format!(
            "{MINIMAL}\n[[routes]]\nname = \"app\"\nupstream = \"app\"\nhosts = [\"bad host:80\"]\npaths = [\"api\", \"/a/../b\"]\nmethods = [\"G ET\"]\n"
        );
        let errs = parse_str(&src).unwrap_err().0;
        let keys: Vec<&str> = errs.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            vec![
                "routes[1].name",
                "routes[1].hosts[0]",
                "routes[1].paths[0]",
                "routes[1].paths[1]",
                "routes[1].methods[0]"
            ]
        );
    }

    #[test]
    fn trailing_slash_in_route_path_is_trimmed() {
        let src = MINIMAL.replace(
            "upstream = \"app\"\n",
            "upstream = \"app\"\npaths = [\"/api/\"]\n",
        );
        assert_eq!(parse_str(&src).unwrap().routes[0].paths, vec!["/api"]);
    }

    #[test]
    fn invalid_toml_is_reported() {
        let errs = parse_str("[server\n").unwrap_err().0;
        assert_eq!(errs[0].line, 1);
        assert!(errs[0].message.starts_with("invalid TOML"));
    }
}
