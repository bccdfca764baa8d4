//! Turns the raw file format into a [`Config`], collecting every error rather than the first.
//! One file per section (`server.rs`, `upstreams.rs`, `routes.rs`, `providers.rs`,
//! `session.rs`, `consumers.rs`), sharing the small checks in `primitives.rs`; each adds its
//! methods to the one [`Builder`], which collects the errors.

mod admin;
mod consumers;
mod emails;
mod forward_auth;
mod identity_assertion;
mod outbound;
mod policy;
mod primitives;
mod providers;
mod rate_limit;
mod redis;
mod routes;
mod server;
mod session;
mod step_up;
mod token_exchange;
mod tracing;
mod upstreams;

use super::error::{Collector, ConfigErrors};
use super::locate;
use super::raw::*;
use super::*;
use toml_edit::ImDocument;

pub(super) fn parse(source: &str, file: &Path, posted: bool) -> Result<Config, ConfigErrors> {
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
            super::hints::unknown_key(path),
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

    let mut b = Builder { errs, posted };
    let config = b.build(raw, file);
    let digest = format!(
        "{:x}",
        <sha2::Sha256 as sha2::Digest>::digest(source.as_bytes())
    );
    b.errs.finish().map(|warnings| Config {
        warnings,
        digest,
        ..config
    })
}

struct Builder<'a> {
    errs: Collector<'a>,
    /// Posted to the admin API: the files and environment variables it names are not read
    /// (their contents could come back in an error message).
    posted: bool,
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
        let providers: Vec<Provider> = raw
            .providers
            .iter()
            .enumerate()
            .map(|(i, p)| self.provider(i, p))
            .collect();
        self.unique_names("providers", raw.providers.iter().map(|p| &p.name));
        let session = self.session(raw.session.as_ref(), !providers.is_empty());
        self.own_paths(&providers, session.as_ref(), &raw.providers);
        let consumers = self.consumers(&raw.consumers);
        let forward_auth = self.forward_auths(&raw.forward_auth, &providers, &consumers);
        let identity_assertion = self.identity_assertion(raw.identity_assertion.as_ref(), &server);
        let tracing = self.tracing(raw.tracing.as_ref());
        if let (Some(a), Some(r)) = (&identity_assertion, &raw.identity_assertion) {
            let mut own = providers
                .iter()
                .flat_map(|p| [&p.callback_path, &p.logout_path, &p.backchannel_logout_path])
                .chain(session.as_ref().map(|s| &s.userinfo_path))
                .chain(forward_auth.iter().flat_map(|f| [&f.path, &f.start_path]));
            if own.any(|p| *p == a.jwks_path) {
                self.errs.at(
                    Some(r.span()),
                    "identity_assertion.jwks_path",
                    format!(
                        "path {:?} is already one of the gateway's own paths",
                        a.jwks_path
                    ),
                );
            }
        }
        self.forward_auth_paths(
            &forward_auth,
            &providers,
            session.as_ref(),
            &raw.forward_auth,
        );
        let routes = raw
            .routes
            .iter()
            .enumerate()
            .filter_map(|(i, r)| {
                self.route(i, r, &upstreams, &providers, &consumers, session.as_ref())
            })
            .collect();
        self.unique_names("routes", raw.routes.iter().map(|r| &r.name));
        let redis = self.redis(raw.redis.as_ref());
        let admin = self.admin(raw.admin.as_ref(), &providers, &consumers);
        if session
            .as_ref()
            .is_some_and(|s| s.store == SessionStoreKind::Redis)
            && redis.is_none()
        {
            let span = raw
                .session
                .as_ref()
                .and_then(|s| s.get_ref().store.as_ref())
                .map(|s| s.span());
            self.errs.at(
                span,
                "session.store",
                "store = \"redis\" needs a [redis] section",
            );
        }
        if server.state_dir.is_none() && !providers.is_empty() {
            let mut forgotten = vec![
                "the providers' discovery and keys (a restart while the identity provider is \
                 down cannot verify tokens until it is back)",
            ];
            if session
                .as_ref()
                .is_some_and(|s| s.store == SessionStoreKind::Cookie)
                && redis.is_none()
            {
                forgotten
                    .push("logouts (a logged-out cookie works again; or share them with [redis])");
            }
            self.errs.warn_at(
                None,
                "server.state_dir",
                format!(
                    "not set, so these are forgotten when the gateway restarts: {}",
                    forgotten.join("; ")
                ),
            );
        }
        Config {
            source: file.to_path_buf(),
            overrides: Vec::new(),
            server,
            metrics,
            log,
            upstreams,
            routes,
            providers,
            session,
            consumers,
            redis,
            forward_auth,
            identity_assertion,
            tracing,
            admin,
            digest: String::new(),
            warnings: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests;
