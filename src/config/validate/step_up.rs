//! A route's step-up keys (`acr_values`, `max_age`, `prompt`): how strong and how recent the
//! user's authentication must be.

use super::Builder;
use crate::config::StepUp;
use crate::config::raw::RawAuthTable;
use std::time::Duration;

impl Builder<'_> {
    /// The route's step-up, if it asks for one.
    pub(super) fn step_up(
        &mut self,
        t: &RawAuthTable,
        span: std::ops::Range<usize>,
        key: &str,
    ) -> Option<StepUp> {
        let acr_values = self
            .words(&t.acr_values, &format!("{key}.acr_values"))
            .unwrap_or_default();
        for (i, v) in t.acr_values.iter().flatten().enumerate() {
            // Sent space-separated in `acr_values` and in `WWW-Authenticate`, quoted.
            if v.get_ref().contains([' ', '"', '\\']) {
                self.err(
                    v.span(),
                    format!("{key}.acr_values[{i}]"),
                    "an ACR value cannot contain spaces, quotes or backslashes",
                );
            }
        }
        if t.acr_values.as_ref().is_some_and(Vec::is_empty) {
            self.err(
                span.clone(),
                format!("{key}.acr_values"),
                "empty list: name at least one ACR value, or remove the key",
            );
        }
        let max_age = t.max_age.as_ref().map(|_| {
            self.duration(
                &t.max_age,
                &format!("{key}.max_age"),
                Duration::from_secs(1),
            )
        });
        let prompt_login = t.prompt.as_ref().is_some_and(|p| {
            self.one_of(p, &format!("{key}.prompt"), "prompt", &[("login", true)])
                .unwrap_or(false)
        });
        if acr_values.is_empty() && max_age.is_none() {
            if prompt_login {
                self.err(
                    span,
                    format!("{key}.prompt"),
                    "prompt = \"login\" is for step-up: set acr_values or max_age with it",
                );
            }
            return None;
        }
        Some(StepUp {
            acr_values,
            max_age,
            prompt_login,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Auth, Config, StepUp};
    use std::path::Path;
    use std::time::Duration;

    const BASE: &str = "[session]\nsecrets = [\"step-up-config-secret-0123456789abcdef\"]\n\
        [[providers]]\nname = \"op\"\nissuer = \"https://idp.example.com\"\nclient_id = \"c\"\n\
        client_secret = \"s\"\nredirect_uri = \"https://app.example.com/oauth2/callback\"\n\
        [[upstreams]]\nname = \"app\"\ntargets = [\"127.0.0.1:8080\"]\n";

    fn step_up(auth: &str) -> Result<Option<StepUp>, String> {
        let text = format!(
            "{BASE}[[routes]]\nname = \"r\"\npaths = [\"/\"]\nupstream = \"app\"\nauth = {{ provider = \"op\"{auth} }}\n"
        );
        let c = Config::parse(&text, Path::new("f.toml")).map_err(|e| e.to_string())?;
        match &c.routes[0].auth {
            Auth::Oidc(a) => Ok(a.step_up.clone()),
            Auth::None => Err("no auth".into()),
        }
    }

    #[test]
    fn step_up_keys_are_read_and_optional() {
        assert_eq!(step_up(""), Ok(None));
        assert_eq!(
            step_up(", acr_values = [\"urn:mfa\", \"phr\"], max_age = \"15m\", prompt = \"login\""),
            Ok(Some(StepUp {
                acr_values: vec!["urn:mfa".into(), "phr".into()],
                max_age: Some(Duration::from_secs(900)),
                prompt_login: true,
            }))
        );
        assert_eq!(
            step_up(", max_age = \"30s\""),
            Ok(Some(StepUp {
                acr_values: vec![],
                max_age: Some(Duration::from_secs(30)),
                prompt_login: false,
            }))
        );
    }

    #[test]
    fn bad_step_up_keys_name_the_file_line_and_key() {
        for (auth, key) in [
            (", acr_values = []", "routes[0].auth.acr_values"),
            (", acr_values = [\"a b\"]", "routes[0].auth.acr_values[0]"),
            (", acr_values = [\"\"]", "routes[0].auth.acr_values[0]"),
            (", max_age = \"0s\"", "routes[0].auth.max_age"),
            (", max_age = \"soon\"", "routes[0].auth.max_age"),
            (
                ", acr_values = [\"x\"], prompt = \"consent\"",
                "routes[0].auth.prompt",
            ),
            (", prompt = \"login\"", "routes[0].auth.prompt"),
        ] {
            let e = step_up(auth).unwrap_err();
            assert!(e.contains("f.toml:") && e.contains(key), "{auth}: {e}");
        }
    }
}
