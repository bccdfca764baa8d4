//! A route's `token_exchange`: the audience (and scope) of the token its upstream gets.

use super::Builder;
use crate::config::raw::RawTokenExchange;
use crate::config::{Auth, TokenExchange};
use toml::Spanned;

impl Builder<'_> {
    /// Sets the route's `token_exchange` on its `auth`; only a route whose every request carries
    /// a user's token can have one.
    pub(super) fn token_exchange(
        &mut self,
        raw: &Spanned<RawTokenExchange>,
        key: &str,
        auth: &mut Auth,
    ) {
        let t = raw.get_ref();
        let audience = match &t.audience {
            None => {
                self.err(
                    raw.span(),
                    format!("{key}.audience"),
                    "missing: name the upstream the token is minted for, as the provider knows it (audience = \"orders-api\")",
                );
                None
            }
            Some(a) if a.get_ref().is_empty() || a.get_ref().contains(char::is_whitespace) => {
                self.err(
                    a.span(),
                    format!("{key}.audience"),
                    "one audience, without spaces",
                );
                None
            }
            Some(a) => Some(a.get_ref().clone()),
        };
        let scope = t.scope.as_ref().and_then(|s| {
            let words: Vec<&str> = s.get_ref().split_whitespace().collect();
            if words.is_empty() {
                self.err(
                    s.span(),
                    format!("{key}.scope"),
                    "blank: give the scopes, space-separated, or remove the key",
                );
                return None;
            }
            Some(words.join(" "))
        });
        let Auth::Oidc(spec) = auth else {
            self.err(
                raw.span(),
                key.to_owned(),
                "needs the route's auth: the token exchanged is the user's (auth = { provider = \"...\" })",
            );
            return;
        };
        // Without a user's token there is nothing to exchange, and a request must never reach
        // the upstream without the token it expects.
        if spec.optional || spec.anonymous.is_some() {
            self.err(
                raw.span(),
                key.to_owned(),
                "cannot go with mode = \"optional\" or an anonymous consumer: a request without a user's token would reach the upstream without a token",
            );
        }
        if let Some(audience) = audience {
            spec.token_exchange = Some(TokenExchange { audience, scope });
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Auth, Config, TokenExchange};
    use std::path::Path;

    const BASE: &str = "[session]\nsecrets = [\"exchange-config-secret-0123456789abcdef\"]\n\
        [[providers]]\nname = \"op\"\nissuer = \"https://idp.example.com\"\nclient_id = \"c\"\n\
        client_secret = \"s\"\nredirect_uri = \"https://app.example.com/oauth2/callback\"\n\
        [[upstreams]]\nname = \"orders\"\ntargets = [\"127.0.0.1:8080\"]\n";

    fn exchange(route: &str) -> Result<Option<TokenExchange>, String> {
        let text = format!(
            "{BASE}[[routes]]\nname = \"r\"\npaths = [\"/\"]\nupstream = \"orders\"\n{route}\n"
        );
        let cfg = Config::parse(&text, Path::new("gw.toml")).map_err(|e| e.to_string())?;
        Ok(match &cfg.routes[0].auth {
            Auth::Oidc(spec) => spec.token_exchange.clone(),
            Auth::None => None,
        })
    }

    #[test]
    fn audience_and_scope_are_read() {
        let got = exchange(
            "auth = { provider = \"op\" }\ntoken_exchange = { audience = \"orders-api\", scope = \" orders:read  orders:list \" }",
        )
        .unwrap();
        assert_eq!(
            got,
            Some(TokenExchange {
                audience: "orders-api".into(),
                scope: Some("orders:read orders:list".into()),
            })
        );
        let got = exchange(
            "auth = { provider = \"op\" }\ntoken_exchange = { audience = \"https://orders.example.com\" }",
        )
        .unwrap();
        assert_eq!(got.unwrap().scope, None);
    }

    #[test]
    fn each_mistake_names_its_line_and_key() {
        for (route, key, says) in [
            (
                "auth = { provider = \"op\" }\ntoken_exchange = { scope = \"a\" }",
                "routes[0].token_exchange.audience",
                "missing",
            ),
            (
                "auth = { provider = \"op\" }\ntoken_exchange = { audience = \"a b\" }",
                "routes[0].token_exchange.audience",
                "without spaces",
            ),
            (
                "auth = { provider = \"op\" }\ntoken_exchange = { audience = \"a\", scope = \" \" }",
                "routes[0].token_exchange.scope",
                "blank",
            ),
            (
                "token_exchange = { audience = \"a\" }",
                "routes[0].token_exchange",
                "needs the route's auth",
            ),
            (
                "auth = { provider = \"op\", mode = \"optional\" }\ntoken_exchange = { audience = \"a\" }",
                "routes[0].token_exchange",
                "optional",
            ),
            (
                "auth = { provider = \"op\" }\ntoken_exchange = { audience = \"a\", scopes = \"x\" }",
                "routes[0].token_exchange.scopes",
                "scope",
            ),
        ] {
            let e = exchange(route).expect_err(route);
            assert!(e.contains("gw.toml:"), "{route}: {e}");
            assert!(e.contains(key), "{route}: want {key} in {e}");
            assert!(e.contains(says), "{route}: want {says:?} in {e}");
        }
    }
}
