//! The one internal configuration type, and loading it from a TOML file with precise errors.
//!
//! Nothing else in the program sees TOML: `raw.rs` is the file format, `validate.rs` checks it
//! and builds a [`Config`] whose values are already parsed (addresses resolved, durations read,
//! references between sections turned into indices).

pub mod env;
mod error;
mod hints;
mod ids;
mod locate;
pub mod outbound;
pub mod policy;
mod raw;
mod routes;
mod secret;
mod upstreams;
mod validate;

pub use error::{ConfigError, ConfigErrors};
pub use ids::{ConsumerId, ProviderId, RouteId, UpstreamId};
pub use outbound::Outbound;
pub use policy::Policy;
pub use routes::*;
pub use secret::Secret;
pub use upstreams::*;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from (for messages).
    pub source: PathBuf,
    /// Keys set from the environment (`OIDC_GATEWAY__*`) rather than the file.
    pub overrides: Vec<env::Override>,
    /// `[server]`
    pub server: Server,
    /// `[metrics]`; `None` when the metrics listener is disabled.
    pub metrics: Option<Metrics>,
    /// `[log]`
    pub log: Log,
    /// `[[upstreams]]`, in file order.
    pub upstreams: Vec<Upstream>,
    /// `[[routes]]`, in file order.
    pub routes: Vec<Route>,
    /// `[[providers]]`, in file order.
    pub providers: Vec<Provider>,
    /// `[session]`; present whenever providers are.
    pub session: Option<SessionSettings>,
    /// `[[consumers]]`, in file order.
    pub consumers: Vec<Consumer>,
    /// `[redis]`: shared state for a fleet, when configured.
    pub redis: Option<RedisSettings>,
    /// `[[forward_auth]]` endpoints, in file order.
    pub forward_auth: Vec<ForwardAuth>,
    /// `[identity_assertion]`, when configured.
    pub identity_assertion: Option<IdentityAssertion>,
    /// `[tracing]`: OpenTelemetry export, when configured.
    pub tracing: Option<TracingSettings>,
    /// `[admin]`: the admin API, when configured.
    pub admin: Option<AdminSettings>,
    /// SHA-256 of the configuration text, hex (the admin API's status names it).
    pub digest: String,
    /// What works but is probably not what was meant (`check` prints these, `run` logs them).
    pub warnings: Vec<ConfigError>,
}

/// `[admin]`: the authenticated admin API, on a listener of its own.
#[derive(Debug, Clone)]
pub struct AdminSettings {
    /// Address to bind.
    pub listen: SocketAddr,
    /// Who may call it: bearer tokens (or introspected ones) with an audience and a group.
    pub auth: RouteAuth,
}

/// `[tracing]`: spans of requests, sign-ins and provider calls, exported over OTLP/HTTP.
#[derive(Debug, Clone, PartialEq)]
pub struct TracingSettings {
    /// Where spans are POSTed (`.../v1/traces`).
    pub otlp_endpoint: String,
    /// Share of new traces recorded (a continued trace follows its parent's decision).
    pub sample_ratio: f64,
    /// `service.name` of the spans.
    pub service_name: String,
    /// Longest an export may take.
    pub timeout: Duration,
}

/// `[redis]`
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// How to reach it.
    pub topology: RedisTopology,
    /// ACL user name.
    pub username: Option<String>,
    /// Password (or the ACL user's).
    pub password: Option<Secret>,
    /// Prefix of every key and channel.
    pub key_prefix: String,
    /// Longest wait for one command's answer.
    pub command_timeout: Duration,
    /// Longest wait for a connection.
    pub connect_timeout: Duration,
    /// Extra CA certificates (PEM) for `rediss://`.
    pub ca_file: Option<PathBuf>,
    /// How long a session read from Redis is served from memory (0: ask Redis every time).
    pub local_cache_ttl: Duration,
}

/// Where Redis is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTopology {
    /// One server: `redis://` or `rediss://` URL.
    Single(String),
    /// Sentinels that name the master.
    Sentinel {
        /// The monitored master's name.
        master: String,
        /// Sentinel URLs.
        nodes: Vec<String>,
        /// Whether the master speaks TLS (`rediss://` sentinels).
        tls: bool,
    },
    /// Cluster seed nodes (URLs).
    Cluster(Vec<String>),
}

/// A Kong-style consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consumer {
    /// `X-Consumer-ID` (configured, or a UUID derived from the username/custom id).
    pub id: String,
    /// `X-Consumer-Username`
    pub username: Option<String>,
    /// `X-Consumer-Custom-ID`
    pub custom_id: Option<String>,
    /// Consumer groups (for `consumer_groups_required`).
    pub groups: Vec<String>,
}

/// An OpenID Provider and the gateway's client registration there.
#[derive(Debug, Clone)]
pub struct Provider {
    /// Name used by routes and in metrics.
    pub name: String,
    /// Issuer identifier, exactly as the provider's discovery document must state it.
    pub issuer: String,
    /// OAuth client id.
    pub client_id: String,
    /// OAuth client secret (absent for public clients).
    pub client_secret: Option<Secret>,
    /// How the client authenticates at the token endpoint.
    pub client_auth: ClientAuth,
    /// The key that signs client assertions, with `client_auth = "private_key_jwt"`.
    pub client_key: Option<ClientKey>,
    /// Where the provider sends the browser back; its path is the callback the gateway serves.
    pub redirect_uri: String,
    /// Path of `redirect_uri`.
    pub callback_path: String,
    /// Requested scopes (always including `openid`).
    pub scopes: Vec<String>,
    /// Header carrying the access token upstream, with an optional value prefix ("Bearer").
    pub upstream_access_token_header: Option<(http::HeaderName, Option<String>)>,
    /// Header carrying the raw ID token upstream.
    pub upstream_id_token_header: Option<http::HeaderName>,
    /// Header carrying the user's claims as base64 JSON.
    pub upstream_user_info_header: Option<http::HeaderName>,
    /// Headers set from claims: (header, claim name).
    pub upstream_headers: Vec<(http::HeaderName, String)>,
    /// Most bytes of identity headers sent upstream per request (0: no limit); a header that
    /// would go over is left out whole.
    pub max_identity_header_bytes: usize,
    /// Path that logs out.
    pub logout_path: String,
    /// Where the browser goes after logout.
    pub logout_redirect_uri: Option<String>,
    /// Methods accepted on `logout_path`.
    pub logout_methods: Vec<http::Method>,
    /// Path receiving the provider's back-channel logout tokens (providers may share it).
    pub backchannel_logout_path: String,
    /// Accept logout tokens typed `JWT` (or untyped), not only `logout+jwt` (Keycloak).
    pub backchannel_logout_allow_jwt_typ: bool,
    /// Fetch the userinfo endpoint at login (and require its `sub` to match).
    pub use_userinfo: bool,
    /// At logout, revoke the refresh and access tokens at the provider's revocation endpoint
    /// (RFC 7009), when it has one.
    pub revoke_tokens_on_logout: bool,
    /// Accept ID tokens signed with HS256/384/512 (keyed with the client secret).
    pub allow_hmac_id_tokens: bool,
    /// Pushed Authorization Requests (RFC 9126) for browser sign-ins.
    pub pushed_authorization_requests: Par,
    /// Total timeout of each call to the provider.
    pub timeout: Duration,
    /// Connect timeout of each call to the provider.
    pub connect_timeout: Duration,
    /// Clock skew tolerated when checking token times.
    pub leeway: Duration,
    /// Minimum time between JWKS fetches triggered by an unknown key id.
    pub jwks_refresh_cooldown: Duration,
    /// How often discovery and keys are refreshed in the background.
    pub discovery_refresh_interval: Duration,
    /// Oldest discovery document and keys still used while the provider cannot be reached
    /// (kept in memory or persisted under `state_dir`).
    pub max_stale: Duration,
    /// Cookies set for this provider's logins are `Secure` (the redirect URI is https).
    pub secure_cookies: bool,
    /// Longest time an active introspection result is reused (never past the token's `exp`).
    pub introspection_cache_ttl: Duration,
    /// How long an inactive (or failed) introspection result is reused.
    pub introspection_negative_ttl: Duration,
    /// Extra CA certificates (PEM) trusted for calls to this provider.
    pub ca_file: Option<PathBuf>,
    /// Which proxy its calls go through, and the client certificate they present.
    pub outbound: Outbound,
    /// Where groups come from when the ID token has too many to carry (Entra's overage).
    pub groups_source: Option<GroupsSource>,
}

/// `groups_source`: where a sign-in gets the user's groups when the ID token names another
/// source for them (`_claim_names.groups`, as Entra ID does past 200 groups).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupsSource {
    /// The provider's userinfo endpoint, with the user's access token.
    Userinfo,
    /// This URL, with the user's access token: `{"groups": [...]}`, or Microsoft Graph's
    /// `{"value": [{"id": ...}], "@odata.nextLink": ...}` pages.
    Url(String),
}

impl Provider {
    /// The client secret, when the client authenticates with it (Basic or Post); it is also
    /// the key of HMAC-signed ID tokens.
    pub fn shared_secret(&self) -> Option<&str> {
        match self.client_auth {
            ClientAuth::Basic | ClientAuth::Post => self.client_secret.as_ref().map(Secret::expose),
            ClientAuth::PrivateKeyJwt | ClientAuth::TlsClientAuth => None,
        }
    }
}

/// `pushed_authorization_requests`: when a browser sign-in's parameters go to the provider
/// over the back channel first (RFC 9126).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Par {
    /// When discovery advertises `pushed_authorization_request_endpoint`.
    Auto,
    /// Always: a provider without the endpoint cannot be signed in to.
    Required,
    /// Never.
    Off,
}

/// Token endpoint client authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// HTTP Basic with client id and secret.
    Basic,
    /// Client id and secret in the form body.
    Post,
    /// A JWT signed with the client's private key (RFC 7523, OIDC Core section 9).
    PrivateKeyJwt,
    /// The client certificate of the TLS connection (RFC 8705 `tls_client_auth`): the client
    /// id in the body, no secret.
    TlsClientAuth,
}

/// A client's private key for `private_key_jwt`, read and checked at load.
#[derive(Clone)]
pub struct ClientKey {
    /// The PEM text (PKCS#8 or PKCS#1 RSA, PKCS#8 or SEC1 EC P-256).
    pub pem: Secret,
    /// `RS256` for an RSA key, `ES256` for an EC P-256 key.
    pub alg: jsonwebtoken::Algorithm,
    /// `kid` of the assertions' header (`client_key_id`).
    pub kid: Option<String>,
}

impl std::fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientKey")
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// `[session]`
#[derive(Debug, Clone)]
pub struct SessionSettings {
    /// Where sessions live.
    pub store: SessionStoreKind,
    /// Keys: the first encrypts, all decrypt.
    pub secrets: Vec<Secret>,
    /// Name of the session cookie (chunks add `.1`, `.2`, ...).
    pub cookie_name: String,
    /// `Path` of the gateway's cookies.
    pub cookie_path: String,
    /// `Domain` of the gateway's cookies (host-only when absent).
    pub cookie_domain: Option<String>,
    /// `SameSite` of the gateway's cookies.
    pub same_site: SameSite,
    /// Longest time between renewals.
    pub rolling_timeout: Duration,
    /// Longest time without a request.
    pub idling_timeout: Duration,
    /// Longest time since login.
    pub absolute_timeout: Duration,
    /// Decoded sessions cached in memory (cookie store).
    pub cache_size: usize,
    /// Lifetime of a login attempt (authorization cookie).
    pub login_timeout: Duration,
    /// Most concurrent login attempts per browser; the oldest is dropped.
    pub max_login_cookies: usize,
    /// Largest `Cookie` header a cookie-store session may lead to (0: no limit).
    pub max_cookie_header_bytes: usize,
    /// Path answering the session's identity as JSON.
    pub userinfo_path: String,
}

/// Session storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionStoreKind {
    /// The whole session, encrypted, in the cookie.
    Cookie,
    /// In this process; the cookie holds a random id.
    Memory {
        /// Most sessions kept; the least recently used are dropped beyond it.
        max_sessions: usize,
    },
    /// In Redis (`[redis]`); the cookie holds a sealed id and key.
    Redis,
}

/// Cookie `SameSite` attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    /// `Lax` (default): sent on top-level navigations, which the login redirect needs.
    Lax,
    /// `Strict`.
    Strict,
    /// `None` (requires Secure).
    None,
}

/// Listener and process settings.
#[derive(Debug, Clone)]
pub struct Server {
    /// Plain-HTTP listeners.
    pub listen: Vec<SocketAddr>,
    /// TLS listeners.
    pub tls: Vec<TlsListener>,
    /// Worker threads of the proxy service.
    pub threads: usize,
    /// Let idle worker threads steal tasks from busy ones.
    pub work_stealing: bool,
    /// On SIGTERM, how long to keep serving in-flight requests before exiting.
    pub grace_period: Duration,
    /// After the grace period, how long runtimes get to stop.
    pub shutdown_timeout: Duration,
    /// Peers whose `X-Forwarded-*` headers are believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Written in daemon mode; read by systemd.
    pub pid_file: String,
    /// Unix socket over which listening sockets are handed to a new process on upgrade.
    pub upgrade_socket: String,
    /// Accept `%2F` and `%5C` in paths (kept encoded). Off by default: they defeat path rules.
    pub allow_encoded_slashes: bool,
    /// Idle upstream connections kept for reuse, across all upstreams.
    pub upstream_keepalive_pool_size: usize,
    /// Extra request headers removed from every request (lower case).
    pub scrub_headers: Vec<String>,
    /// Default-scrubbed identity or override headers clients may send through (lower case).
    pub keep_headers: Vec<String>,
    /// Longest time from the first byte of a request to the end of its header section.
    pub request_header_timeout: Duration,
    /// Longest wait for the next bytes of a request body, and the time a body may take before
    /// `request_body_min_rate` applies.
    pub request_body_timeout: Duration,
    /// Bytes per second a request body must average after `request_body_timeout` (0: no
    /// minimum).
    pub request_body_min_rate: u64,
    /// Client connections one process serves at once; more are refused at once.
    pub max_connections: usize,
    /// Login starts and callbacks per client IP and minute (0: unlimited).
    pub login_rate_limit: u64,
    /// Introspection calls (cache misses) per client IP and minute (0: unlimited).
    pub introspection_rate_limit: u64,
    /// Calls to providers that clients cause (token exchanges at callbacks, introspections),
    /// per second and instance; past it only a client's first call of the minute goes (0: none).
    pub provider_call_limit: u64,
    /// Longest a write of the response may wait for the client to read.
    pub response_write_timeout: Duration,
    /// Bytes per second each response write must reach; replaces `response_write_timeout` by
    /// the write's size over this rate, at least one second (0: off).
    pub response_min_send_rate: usize,
    /// Idle time allowed on a tunnel (after an upstream's `101 Switching Protocols`).
    pub tunnel_idle_timeout: Duration,
    /// Longest a TLS handshake may take from the connection's accept.
    pub tls_handshake_timeout: Duration,
    /// Idle time allowed on a client connection between requests (HTTP/1 keep-alive; HTTP/2
    /// with no stream open).
    pub keepalive_timeout: Duration,
    /// Streams one HTTP/2 connection may have open at once.
    pub h2_max_concurrent_streams: u32,
    /// Largest decoded header list of an HTTP/2 request, in bytes.
    pub h2_max_header_list_size: u32,
    /// Where state that must survive a restart is kept: the providers' last discovery document
    /// and keys, and revocations without `[redis]`.
    pub state_dir: Option<PathBuf>,
    /// On `run --upgrade`, longest wait for the providers before taking the sockets over.
    pub upgrade_ready_timeout: Duration,
}

/// A TLS listener.
#[derive(Debug, Clone)]
pub struct TlsListener {
    /// Address to bind.
    pub listen: SocketAddr,
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// Offer HTTP/2 through ALPN.
    pub h2: bool,
    /// PEM CA certificates that client certificates are verified against (optional client
    /// certificates, for certificate-bound tokens); `None`: none asked for.
    pub client_ca: Option<PathBuf>,
}

/// The metrics and health listener.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// Address to bind.
    pub listen: SocketAddr,
}

/// Logging settings.
#[derive(Debug, Clone)]
pub struct Log {
    /// Emit one line per request.
    pub access_log: bool,
    /// Default filter (`RUST_LOG` overrides it).
    pub level: String,
}

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let (text, overrides) = Config::effective_source(path)?;
        let mut config = Config::parse(&text, path).map_err(|mut errors| {
            // Name the variable behind a refused value: the file does not hold it.
            for e in &mut errors.0 {
                if let Some(o) = overrides.iter().find(|o| e.key.starts_with(&o.key)) {
                    e.message.push_str(&format!(" (set by {})", o.var));
                }
            }
            errors
        })?;
        config.overrides = overrides;
        Ok(config)
    }

    /// The file's text with the `OIDC_GATEWAY__*` environment overrides written in (see
    /// [`env`]), and the overrides; what `load` checks and `check --print-effective` prints.
    pub fn effective_source(path: &Path) -> Result<(String, Vec<env::Override>), ConfigErrors> {
        let fail = |message: String| {
            ConfigErrors(vec![ConfigError {
                file: path.to_path_buf(),
                line: 0,
                column: 0,
                key: String::new(),
                message,
            }])
        };
        let source = std::fs::read_to_string(path)
            .map_err(|e| fail(format!("cannot read the file: {e}")))?;
        env::apply(&source, std::env::vars()).map_err(fail)
    }

    /// Validates configuration text; `file` is used in messages only.
    pub fn parse(source: &str, file: &Path) -> Result<Config, ConfigErrors> {
        validate::parse(source, file, false)
    }

    /// Validates configuration text posted from elsewhere (the admin API) without reading the
    /// files or environment variables it names: secrets stand in as placeholders, listed
    /// emails are not read (a warning says so); files are only checked to exist.
    pub fn parse_posted(source: &str, file: &Path) -> Result<Config, ConfigErrors> {
        validate::parse(source, file, true)
    }

    /// A one-line description for `check`.
    pub fn summary(&self) -> String {
        let targets: usize = self.upstreams.iter().map(|u| u.targets.len()).sum();
        let from_env = match self.overrides.len() {
            0 => String::new(),
            n => format!(
                "; {n} key{} from the environment: {}",
                plural(n),
                self.overrides
                    .iter()
                    .map(|o| o.var.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        format!(
            "{}: ok ({} route{}, {} upstream{}, {} target{}, {} listener{}{from_env})",
            self.source.display(),
            self.routes.len(),
            plural(self.routes.len()),
            self.upstreams.len(),
            plural(self.upstreams.len()),
            targets,
            plural(targets),
            self.server.listen.len() + self.server.tls.len(),
            plural(self.server.listen.len() + self.server.tls.len()),
        )
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}
