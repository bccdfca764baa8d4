//! `[session]`: the store, secrets, cookie and timeouts.

use super::Builder;
use crate::config::raw::*;
use crate::config::*;
use std::time::Duration;
use toml::Spanned;

impl Builder<'_> {
    pub(super) fn session(
        &mut self,
        raw: Option<&Spanned<RawSession>>,
        needed: bool,
    ) -> Option<SessionSettings> {
        let Some(raw_spanned) = raw else {
            if needed {
                self.errs.at(
                    None,
                    "session",
                    "[session] with secrets is required when [[providers]] are configured",
                );
            }
            return None;
        };
        let raw = raw_spanned.get_ref();
        let store = self.session_store(raw);
        let secrets = self.session_secrets(raw_spanned);
        let cookie_name = self.cookie_name(raw);
        let same_site = self.same_site(raw);
        let settings = SessionSettings {
            store,
            secrets,
            cookie_name,
            cookie_path: raw
                .cookie_path
                .as_ref()
                .map_or_else(|| "/".to_owned(), |p| p.get_ref().clone()),
            cookie_domain: raw.cookie_domain.as_ref().map(|d| d.get_ref().clone()),
            same_site,
            rolling_timeout: self.duration(
                &raw.rolling_timeout,
                "session.rolling_timeout",
                Duration::from_secs(3600),
            ),
            idling_timeout: self.duration(
                &raw.idling_timeout,
                "session.idling_timeout",
                Duration::from_secs(900),
            ),
            absolute_timeout: self.duration(
                &raw.absolute_timeout,
                "session.absolute_timeout",
                Duration::from_secs(86400),
            ),
            cache_size: self.count(&raw.cache_size, "session.cache_size", 100_000, 0),
            login_timeout: self.duration(
                &raw.login_timeout,
                "session.login_timeout",
                Duration::from_secs(600),
            ),
            max_login_cookies: self.count(
                &raw.max_login_cookies,
                "session.max_login_cookies",
                5,
                1,
            ),
            max_cookie_header_bytes: self.cookie_header_limit(raw),
            userinfo_path: match &raw.userinfo_path {
                None => "/oauth2/userinfo".to_owned(),
                Some(p) => self.own_path(p, "session.userinfo_path"),
            },
        };
        self.warn_timeouts_past_absolute(raw, &settings);
        Some(settings)
    }

    /// `store` (and the memory store's bound).
    fn session_store(&mut self, raw: &RawSession) -> SessionStoreKind {
        match raw.store.as_ref().map(|s| (s.get_ref().as_str(), s.span())) {
            None | Some(("cookie", _)) => SessionStoreKind::Cookie,
            Some(("memory", _)) => SessionStoreKind::Memory {
                max_sessions: self.count(
                    &raw.memory_max_sessions,
                    "session.memory_max_sessions",
                    1_000_000,
                    1,
                ),
            },
            Some(("redis", _)) => SessionStoreKind::Redis,
            Some((other, span)) => {
                self.err(
                    span,
                    "session.store",
                    format!(
                        "unknown session store {other:?}: expected \"cookie\", \"memory\" or \"redis\""
                    ),
                );
                SessionStoreKind::Cookie
            }
        }
    }

    /// `secrets` and `secrets_file`: at least one, each of 32 bytes or more.
    fn session_secrets(&mut self, raw_spanned: &Spanned<RawSession>) -> Vec<Secret> {
        let raw = raw_spanned.get_ref();
        let mut secrets = Vec::new();
        for (j, s) in raw.secrets.iter().flatten().enumerate() {
            match self.inline_secret(s.get_ref()) {
                Ok(v) => secrets.push((v, s.span(), format!("session.secrets[{j}]"))),
                Err(e) => self.err(s.span(), format!("session.secrets[{j}]"), e),
            }
        }
        if let Some(f) = &raw.secrets_file {
            match self.secret_file(f.get_ref()) {
                Ok(text) => {
                    for line in text
                        .lines()
                        .map(str::trim)
                        .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    {
                        secrets.push((
                            Secret::new(line),
                            f.span(),
                            "session.secrets_file".to_owned(),
                        ));
                    }
                }
                Err(e) => self.err(f.span(), "session.secrets_file", e),
            }
        }
        if secrets.is_empty()
            && raw.secrets.as_ref().is_none_or(|l| l.is_empty())
            && raw.secrets_file.is_none()
        {
            self.err(
                raw_spanned.span(),
                "session.secrets",
                "at least one secret is required: secrets = [\"${SESSION_SECRET}\"] or secrets_file = \"/path\" (32 bytes or more, e.g. `openssl rand -base64 48`)",
            );
        }
        for (s, span, k) in &secrets {
            if s.expose().len() < 32 {
                self.err(
                    span.clone(),
                    k.clone(),
                    format!(
                        "a session secret must be at least 32 bytes (this one has {})",
                        s.expose().len()
                    ),
                );
            }
        }
        secrets.into_iter().map(|(s, _, _)| s).collect()
    }

    /// `cookie_name`: a cookie name, `oidc_session` by default.
    fn cookie_name(&mut self, raw: &RawSession) -> String {
        raw.cookie_name.as_ref().map_or_else(
            || "oidc_session".to_owned(),
            |n| {
                let v = n.get_ref();
                if v.is_empty()
                    || !v
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"_-".contains(&b))
                {
                    self.err(
                        n.span(),
                        "session.cookie_name",
                        format!("invalid cookie name {v:?}: use letters, digits, '_' or '-'"),
                    );
                }
                v.clone()
            },
        )
    }

    /// `cookie_same_site`: `lax` by default.
    fn same_site(&mut self, raw: &RawSession) -> SameSite {
        match raw
            .cookie_same_site
            .as_ref()
            .map(|s| (s.get_ref().to_ascii_lowercase(), s.span()))
        {
            None => SameSite::Lax,
            Some((v, span)) => match v.as_str() {
                "lax" => SameSite::Lax,
                "strict" => SameSite::Strict,
                "none" => SameSite::None,
                _ => {
                    self.err(
                        span,
                        "session.cookie_same_site",
                        "expected \"lax\", \"strict\" or \"none\"",
                    );
                    SameSite::Lax
                }
            },
        }
    }

    /// Valid, but surely not meant: a timeout past `absolute_timeout`, which ends every
    /// session first.
    fn warn_timeouts_past_absolute(&mut self, raw: &RawSession, settings: &SessionSettings) {
        for (name, raw_value, value) in [
            (
                "idling_timeout",
                &raw.idling_timeout,
                settings.idling_timeout,
            ),
            (
                "rolling_timeout",
                &raw.rolling_timeout,
                settings.rolling_timeout,
            ),
        ] {
            if value > settings.absolute_timeout {
                self.errs.warn_at(
                    raw_value.as_ref().map(|r| r.span()),
                    format!("session.{name}"),
                    format!(
                        "{name} ({}) is longer than absolute_timeout ({}), which ends every session first",
                        humantime::format_duration(value),
                        humantime::format_duration(settings.absolute_timeout)
                    ),
                );
            }
        }
    }

    /// `max_cookie_header_bytes`: 0 (no limit) or at least 4096, which a session of a few
    /// claims needs with the login cookies of a sign-in in progress.
    fn cookie_header_limit(&mut self, raw: &RawSession) -> usize {
        const KEY: &str = "session.max_cookie_header_bytes";
        let n = self.count(&raw.max_cookie_header_bytes, KEY, 8192, 0);
        if let Some(r) = &raw.max_cookie_header_bytes
            && (1..4096).contains(&n)
        {
            self.err(
                r.span(),
                KEY,
                format!("{n} is too small: 0 (no limit) or at least 4096"),
            );
        }
        n
    }
}
