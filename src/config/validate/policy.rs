//! `allow_if`: compiled at load, its mistakes reported where they are in the file.

use super::Builder;
use crate::config::Policy;
use crate::config::raw::SStr;

impl Builder<'_> {
    /// The compiled `allow_if` expression; a syntax error or an unknown variable is reported at
    /// its column in the file when the expression is a one-line string without escapes.
    pub(super) fn policy(&mut self, raw: &SStr, key: &str) -> Option<Policy> {
        match Policy::compile(raw.get_ref()) {
            Ok(p) => Some(p),
            Err(e) => {
                let span = raw.span();
                let quoted = raw.get_ref().len() + 2 == span.len();
                let (at, place) = match e.at {
                    Some((1, col)) if quoted => {
                        let offset = span.start + col;
                        (
                            offset..offset + 1,
                            format!(" (column {col} of the expression)"),
                        )
                    }
                    Some((line, col)) => (
                        span,
                        format!(" (line {line}, column {col} of the expression)"),
                    ),
                    None => (span, String::new()),
                };
                self.err(at, key, format!("{}{place}", e.message));
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Auth, Config};
    use std::path::Path;

    const BASE: &str = "[session]\nsecrets = [\"policy-config-secret-0123456789abcdef\"]\n\
        [[providers]]\nname = \"op\"\nissuer = \"https://idp.example.com\"\nclient_id = \"c\"\n\
        redirect_uri = \"https://app.example.com/oauth2/callback\"\n\
        [[upstreams]]\nname = \"app\"\ntargets = [\"127.0.0.1:8080\"]\n\
        [[routes]]\nname = \"r\"\nupstream = \"app\"\n";

    #[test]
    fn an_expression_compiles_at_load_and_its_mistakes_point_into_it() {
        let ok = format!(
            "{BASE}auth = {{ provider = \"op\", allow_if = '\"admins\" in claims.groups' }}\n"
        );
        let cfg = Config::parse(&ok, Path::new("gw.toml")).unwrap();
        let Auth::Oidc(spec) = &cfg.routes[0].auth else {
            panic!()
        };
        assert!(spec.allow_if.is_some());
        assert!(spec.reads_claims());

        // Line 14 of the file; the quote before the expression is column 38.
        for (expr, col, says) in [
            ("claims.email.endsWith(", 38 + 23, "Syntax error"),
            (
                "claims.email == user.email",
                38 + 17,
                "unknown variable \"user\"",
            ),
        ] {
            let text = format!("{BASE}auth = {{ provider = \"op\", allow_if = '{expr}' }}\n");
            let e = Config::parse(&text, Path::new("gw.toml")).unwrap_err().0;
            assert_eq!(e.len(), 1, "{e:?}");
            assert_eq!(e[0].key, "routes[0].auth.allow_if");
            assert_eq!((e[0].line, e[0].column), (14, col), "{expr}: {e:?}");
            assert!(e[0].message.contains(says), "{e:?}");
        }
    }
}
