//! A route's `rate_limit`: whose requests are counted, how many, over what window.

use super::Builder;
use crate::config::raw::RawRateLimit;
use crate::config::{Auth, LimitBy, RateLimit};
use std::time::Duration;
use toml::Spanned;

/// The longest window: counts are kept in memory (or Redis) for two windows.
const MAX_WINDOW: Duration = Duration::from_secs(24 * 3600);

impl Builder<'_> {
    /// The route's `rate_limit`; `per = "sub"` or `"consumer"` only where there is one to
    /// count by.
    pub(super) fn rate_limit(
        &mut self,
        raw: &Spanned<RawRateLimit>,
        key: &str,
        auth: &Auth,
    ) -> Option<RateLimit> {
        let r = raw.get_ref();
        let per = match &r.per {
            None => {
                self.err(
                    raw.span(),
                    format!("{key}.per"),
                    "missing: say whose requests count together (per = \"sub\", \"consumer\" or \"client_ip\")",
                );
                None
            }
            Some(p) => self.one_of(
                p,
                &format!("{key}.per"),
                "rate_limit.per",
                &[
                    ("sub", LimitBy::Sub),
                    ("consumer", LimitBy::Consumer),
                    ("client_ip", LimitBy::ClientIp),
                ],
            ),
        };
        let requests = match &r.requests {
            None => {
                self.err(
                    raw.span(),
                    format!("{key}.requests"),
                    "missing: the most requests allowed in a window (requests = 100)",
                );
                None
            }
            Some(n) => match u64::try_from(*n.get_ref()) {
                Ok(n) if n >= 1 => Some(n),
                _ => {
                    self.err(
                        n.span(),
                        format!("{key}.requests"),
                        format!(
                            "{} is out of range: expected a whole number >= 1 (remove rate_limit for no limit)",
                            n.get_ref()
                        ),
                    );
                    None
                }
            },
        };
        let window = self.duration(&r.window, &format!("{key}.window"), Duration::from_secs(60));
        if (window > MAX_WINDOW || window < Duration::from_secs(1))
            && let Some(w) = &r.window
        {
            {
                self.err(
                    w.span(),
                    format!("{key}.window"),
                    format!("{:?} is out of range: from \"1s\" to \"24h\"", w.get_ref()),
                );
            }
        }
        let spec = match auth {
            Auth::Oidc(spec) => Some(spec),
            Auth::None => None,
        };
        match (per, spec) {
            (Some(LimitBy::Sub | LimitBy::Consumer), None) => self.err(
                raw.span(),
                format!("{key}.per"),
                "needs the route's auth: a public route has no user to count by (use per = \"client_ip\", or add auth = { provider = \"...\" })",
            ),
            (Some(LimitBy::Consumer), Some(spec)) if spec.consumer.is_none() => self.err(
                raw.span(),
                format!("{key}.per"),
                "needs consumer mapping on the route's auth (consumer_claim = [...]); or count per = \"sub\"",
            ),
            _ => {}
        }
        Some(RateLimit {
            per: per?,
            requests: requests?,
            window,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, LimitBy, RateLimit};
    use std::path::Path;
    use std::time::Duration;

    const BASE: &str = "[session]\nsecrets = [\"limit-config-secret-0123456789abcdef\"]\n\
        [[providers]]\nname = \"op\"\nissuer = \"https://idp.example.com\"\nclient_id = \"c\"\n\
        client_secret = \"s\"\nredirect_uri = \"https://app.example.com/oauth2/callback\"\n\
        [[upstreams]]\nname = \"app\"\ntargets = [\"127.0.0.1:8080\"]\n";

    fn route(extra: &str) -> Result<Config, String> {
        let text = format!("{BASE}[[routes]]\nname = \"r\"\nupstream = \"app\"\n{extra}\n");
        Config::parse(&text, Path::new("gw.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn a_limit_per_user_is_read() {
        let c = route(
            "auth = { provider = \"op\" }\nrate_limit = { per = \"sub\", requests = 100, window = \"1m\" }",
        )
        .unwrap();
        assert_eq!(
            c.routes[0].rate_limit,
            Some(RateLimit {
                per: LimitBy::Sub,
                requests: 100,
                window: Duration::from_secs(60)
            })
        );
        let c = route("rate_limit = { per = \"client_ip\", requests = 5 }").unwrap();
        assert_eq!(
            c.routes[0].rate_limit.unwrap().window,
            Duration::from_secs(60)
        );
    }

    #[test]
    fn bad_limits_name_the_line_and_the_key() {
        for (extra, key, says) in [
            (
                "rate_limit = { per = \"sub\", requests = 5 }",
                "routes[0].rate_limit.per",
                "needs the route's auth",
            ),
            (
                "auth = { provider = \"op\" }\nrate_limit = { per = \"consumer\", requests = 5 }",
                "routes[0].rate_limit.per",
                "consumer_claim",
            ),
            (
                "rate_limit = { per = \"user\", requests = 5 }",
                "routes[0].rate_limit.per",
                "expected \"sub\", \"consumer\" or \"client_ip\"",
            ),
            (
                "rate_limit = { per = \"client_ip\", requests = 0 }",
                "routes[0].rate_limit.requests",
                "expected a whole number >= 1",
            ),
            (
                "rate_limit = { per = \"client_ip\" }",
                "routes[0].rate_limit.requests",
                "missing",
            ),
            (
                "rate_limit = { per = \"client_ip\", requests = 5, window = \"2d\" }",
                "routes[0].rate_limit.window",
                "from \"1s\" to \"24h\"",
            ),
            (
                "rate_limit = { per = \"client_ip\", requests = 5, window = \"0s\" }",
                "routes[0].rate_limit.window",
                "zero duration",
            ),
            (
                "rate_limit = { per = \"client_ip\", requests = 5, burst = 3 }",
                "routes[0].rate_limit.burst",
                "",
            ),
        ] {
            let err = route(extra).unwrap_err();
            assert!(err.contains(key), "{extra}: {err}");
            assert!(err.contains(says), "{extra}: {err}");
            assert!(err.contains("gw.toml:"), "{extra}: {err}");
        }
    }
}
