//! The small checks every section shares: names, durations, counts, addresses, URLs, files,
//! header names, secrets and word lists. Each reports its own error with the key and span.

use super::Builder;
use crate::config::raw::*;
use crate::config::secret;
use crate::config::*;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use toml::Spanned;

/// What a secret named by a posted configuration stands in as: it is never read.
const POSTED_SECRET: &str = "not read: a posted configuration's secrets stay where they are";

impl Builder<'_> {
    pub(super) fn err(
        &mut self,
        span: std::ops::Range<usize>,
        key: impl Into<String>,
        msg: impl Into<String>,
    ) {
        self.errs.at(Some(span), key, msg);
    }

    pub(super) fn name(&mut self, raw: &SStr, key: &str) {
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

    pub(super) fn unique_names<'n>(
        &mut self,
        section: &str,
        names: impl Iterator<Item = &'n SStr>,
    ) {
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

    /// A duration that must be more than zero (there is no "0 means unlimited").
    pub(super) fn duration(
        &mut self,
        raw: &Option<SStr>,
        key: &str,
        default: Duration,
    ) -> Duration {
        match self.duration_or_zero(raw, key, default) {
            d if d.is_zero() => {
                if let Some(raw) = raw {
                    self.err(
                        raw.span(),
                        key,
                        "a zero duration is not allowed here (there is no \"0 means unlimited\")",
                    );
                }
                default
            }
            d => d,
        }
    }

    /// A duration, zero allowed (grace periods).
    pub(super) fn duration_or_zero(
        &mut self,
        raw: &Option<SStr>,
        key: &str,
        default: Duration,
    ) -> Duration {
        /// Longer than any timeout anyone means: surely a typo ("3650d" is fine, "365000d" not).
        const TEN_YEARS: Duration = Duration::from_secs(10 * 366 * 24 * 3600);
        let Some(raw) = raw else { return default };
        match humantime::parse_duration(raw.get_ref()) {
            Ok(d) if d > TEN_YEARS => {
                self.err(
                    raw.span(),
                    key,
                    format!(
                        "{:?} is more than ten years, which is surely a typo",
                        raw.get_ref()
                    ),
                );
                default
            }
            Ok(d) => d,
            Err(_) => {
                self.err(
                    raw.span(),
                    key,
                    format!(
                        "invalid duration {:?}: expected e.g. \"500ms\", \"10s\", \"15m\" or \"1h\"",
                        raw.get_ref()
                    ),
                );
                default
            }
        }
    }

    /// One of a fixed set of words (`"session"`, `"bearer"`, ...), or an error listing them.
    pub(super) fn one_of<T: Copy>(
        &mut self,
        raw: &SStr,
        key: &str,
        what: &str,
        choices: &[(&str, T)],
    ) -> Option<T> {
        if let Some((_, v)) = choices.iter().find(|(w, _)| *w == raw.get_ref().as_str()) {
            return Some(*v);
        }
        let words: Vec<String> = choices.iter().map(|(w, _)| format!("{w:?}")).collect();
        let expected = match words.split_last() {
            Some((last, [])) => last.clone(),
            Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
            None => String::new(),
        };
        self.err(
            raw.span(),
            key,
            format!("unknown {what} {:?}: expected {expected}", raw.get_ref()),
        );
        None
    }

    pub(super) fn count(
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

    /// A whole number within `range` (limits that have no "0 means none").
    pub(super) fn bounded(
        &mut self,
        raw: &Option<Spanned<i64>>,
        key: &str,
        default: u32,
        range: std::ops::RangeInclusive<u32>,
    ) -> u32 {
        let Some(raw) = raw else { return default };
        match u32::try_from(*raw.get_ref()) {
            Ok(n) if range.contains(&n) => n,
            _ => {
                self.err(
                    raw.span(),
                    key,
                    format!(
                        "{} is out of range: expected a whole number from {} to {}",
                        raw.get_ref(),
                        range.start(),
                        range.end()
                    ),
                );
                default
            }
        }
    }

    pub(super) fn listen_addr(&mut self, raw: &SStr, key: &str) -> Option<SocketAddr> {
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

    pub(super) fn ip_net(&mut self, raw: &SStr, key: &str) -> Option<ipnet::IpNet> {
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

    /// A secret written inline, or as `${VAR}` (a placeholder in a posted configuration).
    pub(super) fn inline_secret(&self, value: &str) -> Result<Secret, String> {
        if self.posted && value.starts_with("${") {
            return Ok(Secret::new(POSTED_SECRET));
        }
        secret::resolve_inline(value)
    }

    /// A secret file's text (a placeholder in a posted configuration).
    pub(super) fn secret_file(&self, path: &str) -> Result<String, String> {
        if self.posted {
            return Ok(POSTED_SECRET.to_owned());
        }
        secret::read_file(path)
    }

    pub(super) fn existing_file(&mut self, raw: &SStr, key: &str) -> Option<PathBuf> {
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

    /// Parses an issuer or redirect URL: https, or http for loopback hosts only (development).
    pub(super) fn url(&mut self, raw: &SStr, key: &str) -> Option<openidconnect::url::Url> {
        let v = raw.get_ref();
        let url = match openidconnect::url::Url::parse(v) {
            Ok(u) => u,
            Err(e) => {
                self.err(raw.span(), key, format!("invalid URL {v:?}: {e}"));
                return None;
            }
        };
        let loopback = match url.host() {
            Some(openidconnect::url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
            Some(openidconnect::url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(openidconnect::url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        };
        match url.scheme() {
            "https" => {}
            "http" if loopback => {}
            "http" => {
                self.err(raw.span(), key, format!("{v:?} must use https (http is accepted only for localhost and 127.0.0.1, for development)"));
                return None;
            }
            other => {
                self.err(
                    raw.span(),
                    key,
                    format!("unsupported URL scheme {other:?} in {v:?}: expected https"),
                );
                return None;
            }
        }
        if url.fragment().is_some() {
            self.err(
                raw.span(),
                key,
                format!("{v:?} must not contain a fragment"),
            );
            return None;
        }
        Some(url)
    }

    pub(super) fn secret_value(
        &mut self,
        inline: &Option<SStr>,
        file: &Option<SStr>,
        key: &str,
    ) -> Option<Secret> {
        match (inline, file) {
            (Some(a), Some(_)) => {
                self.err(
                    a.span(),
                    key,
                    format!("give either {key} or {key}_file, not both"),
                );
                None
            }
            (Some(v), None) => match self.inline_secret(v.get_ref()) {
                Ok(s) => Some(s),
                Err(e) => {
                    self.err(v.span(), key, e);
                    None
                }
            },
            (None, Some(f)) => match self.secret_file(f.get_ref()) {
                Ok(s) if !s.is_empty() => Some(Secret::new(s)),
                Ok(_) => {
                    self.err(
                        f.span(),
                        format!("{key}_file"),
                        format!("secret file {:?} is empty", f.get_ref()),
                    );
                    None
                }
                Err(e) => {
                    self.err(f.span(), format!("{key}_file"), e);
                    None
                }
            },
            (None, None) => None,
        }
    }

    /// A list of words (rule values, claim path segments, group names): a blank entry is an
    /// error, because `.all()` over no words would require nothing.
    pub(super) fn words(&mut self, raw: &Option<Vec<SStr>>, key: &str) -> Option<Vec<String>> {
        let list = raw.as_ref()?;
        Some(
            list.iter()
                .enumerate()
                .filter_map(|(i, w)| {
                    if w.get_ref().trim().is_empty() {
                        self.err(
                            w.span(),
                            format!("{key}[{i}]"),
                            "blank entry: it would match anything; remove it or give a value",
                        );
                        None
                    } else {
                        Some(w.get_ref().clone())
                    }
                })
                .collect(),
        )
    }

    pub(super) fn header_name(
        &mut self,
        name: &str,
        span: std::ops::Range<usize>,
        key: &str,
    ) -> Option<http::HeaderName> {
        match http::HeaderName::from_bytes(name.trim().as_bytes()) {
            Ok(h) => Some(h),
            Err(_) => {
                self.err(span, key, format!("invalid header name {name:?}"));
                None
            }
        }
    }
}
