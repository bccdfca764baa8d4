//! The TOML file format, exactly as written by users. Nothing outside `config/` sees these types:
//! `validate.rs` turns them into the one internal [`Config`](super::Config).
//!
//! Values that need checking beyond their TOML type (durations, addresses, names) are kept as
//! `Spanned` strings so every error can name its line.

use serde::Deserialize;
use toml::Spanned;

/// A string with the byte range it came from.
pub type SStr = Spanned<String>;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawConfig {
    pub server: RawServer,
    pub metrics: RawMetrics,
    pub log: RawLog,
    pub upstreams: Vec<RawUpstream>,
    pub routes: Vec<RawRoute>,
    pub providers: Vec<RawProvider>,
    pub session: Option<Spanned<RawSession>>,
    pub consumers: Vec<Spanned<RawConsumer>>,
    pub redis: Option<Spanned<RawRedis>>,
    pub forward_auth: Vec<Spanned<RawForwardAuth>>,
    pub identity_assertion: Option<Spanned<RawIdentityAssertion>>,
    pub tracing: Option<Spanned<RawTracing>>,
    pub admin: Option<Spanned<RawAdmin>>,
}

/// `[admin]`: the admin API's listener and who may call it.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawAdmin {
    pub listen: Option<SStr>,
    pub auth: Option<Spanned<RawAuthTable>>,
}

/// `[tracing]`: OpenTelemetry traces, exported over OTLP/HTTP.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawTracing {
    pub otlp_endpoint: Option<SStr>,
    pub sample_ratio: Option<Spanned<f64>>,
    pub service_name: Option<SStr>,
    pub timeout: Option<SStr>,
}

/// `[identity_assertion]`: a signed JWT stating the user, for upstreams to verify.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawIdentityAssertion {
    pub header: Option<SStr>,
    pub issuer: Option<SStr>,
    pub audience: Option<SStr>,
    pub lifetime: Option<SStr>,
    pub key_files: Option<Vec<SStr>>,
    pub jwks_path: Option<SStr>,
}

/// `[[forward_auth]]`: the auth decision alone, for a proxy in front (nginx `auth_request`,
/// Traefik `ForwardAuth`, Caddy `forward_auth`, Envoy `ext_authz`).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawForwardAuth {
    pub path: Option<SStr>,
    pub start_path: Option<SStr>,
    pub unauthenticated: Option<SStr>,
    pub allowed_status: Option<Spanned<i64>>,
    pub auth: Option<Spanned<RawAuthTable>>,
}

/// `[redis]`: the store fleet instances share.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawRedis {
    pub url: Option<SStr>,
    pub username: Option<SStr>,
    pub password: Option<SStr>,
    pub password_file: Option<SStr>,
    pub sentinel: Option<Spanned<RawSentinel>>,
    pub cluster_nodes: Option<Vec<SStr>>,
    pub key_prefix: Option<SStr>,
    pub command_timeout: Option<SStr>,
    pub connect_timeout: Option<SStr>,
    pub ca_file: Option<SStr>,
    pub local_cache_ttl: Option<SStr>,
}

/// `[redis] sentinel = { master = "...", nodes = [...] }`
#[derive(Debug, Deserialize)]
pub struct RawSentinel {
    pub master: SStr,
    pub nodes: Vec<SStr>,
}

/// `[[providers]]`: an OpenID Provider and this gateway's client registration there.
#[derive(Debug, Deserialize)]
pub struct RawProvider {
    pub name: SStr,
    pub issuer: SStr,
    pub client_id: SStr,
    #[serde(default)]
    pub client_secret: Option<SStr>,
    #[serde(default)]
    pub client_secret_file: Option<SStr>,
    #[serde(default)]
    pub client_auth: Option<SStr>,
    #[serde(default)]
    pub client_private_key_file: Option<SStr>,
    #[serde(default)]
    pub client_key_id: Option<SStr>,
    pub redirect_uri: SStr,
    #[serde(default)]
    pub scopes: Option<Vec<SStr>>,
    #[serde(default)]
    pub upstream_access_token_header: Option<SStr>,
    #[serde(default)]
    pub upstream_id_token_header: Option<SStr>,
    #[serde(default)]
    pub upstream_user_info_header: Option<SStr>,
    pub max_identity_header_bytes: Option<Spanned<i64>>,
    #[serde(default)]
    pub upstream_headers: Option<Spanned<std::collections::BTreeMap<String, String>>>,
    #[serde(default)]
    pub logout_path: Option<SStr>,
    #[serde(default)]
    pub logout_redirect_uri: Option<SStr>,
    #[serde(default)]
    pub logout_methods: Option<Vec<SStr>>,
    #[serde(default)]
    pub backchannel_logout_path: Option<SStr>,
    #[serde(default)]
    pub backchannel_logout_allow_jwt_typ: Option<bool>,
    #[serde(default)]
    pub use_userinfo: Option<bool>,
    #[serde(default)]
    pub revoke_tokens_on_logout: Option<bool>,
    #[serde(default)]
    pub allow_hmac_id_tokens: Option<bool>,
    #[serde(default)]
    pub pushed_authorization_requests: Option<SStr>,
    #[serde(default)]
    pub timeout: Option<SStr>,
    #[serde(default)]
    pub connect_timeout: Option<SStr>,
    #[serde(default)]
    pub leeway: Option<SStr>,
    #[serde(default)]
    pub jwks_refresh_cooldown: Option<SStr>,
    #[serde(default)]
    pub discovery_refresh_interval: Option<SStr>,
    #[serde(default)]
    pub max_stale: Option<SStr>,
    #[serde(default)]
    pub introspection_cache_ttl: Option<SStr>,
    #[serde(default)]
    pub introspection_negative_ttl: Option<SStr>,
    #[serde(default)]
    pub ca_file: Option<SStr>,
    #[serde(default)]
    pub groups_source: Option<SStr>,
    #[serde(default)]
    pub http_proxy: Option<SStr>,
    #[serde(default)]
    pub no_proxy: Option<Vec<SStr>>,
    #[serde(default)]
    pub proxy_from_env: Option<bool>,
    #[serde(default)]
    pub client_cert_file: Option<SStr>,
    #[serde(default)]
    pub client_key_file: Option<SStr>,
}

/// `[session]`
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawSession {
    pub store: Option<SStr>,
    pub secrets: Option<Vec<SStr>>,
    pub secrets_file: Option<SStr>,
    pub cookie_name: Option<SStr>,
    pub cookie_path: Option<SStr>,
    pub cookie_domain: Option<SStr>,
    pub cookie_same_site: Option<SStr>,
    pub rolling_timeout: Option<SStr>,
    pub idling_timeout: Option<SStr>,
    pub absolute_timeout: Option<SStr>,
    pub memory_max_sessions: Option<Spanned<i64>>,
    pub cache_size: Option<Spanned<i64>>,
    pub login_timeout: Option<SStr>,
    pub max_login_cookies: Option<Spanned<i64>>,
    pub max_cookie_header_bytes: Option<Spanned<i64>>,
    pub userinfo_path: Option<SStr>,
}

/// `[server]`
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawServer {
    pub listen: Option<Vec<SStr>>,
    pub tls: Vec<RawTlsListener>,
    pub threads: Option<Spanned<i64>>,
    pub work_stealing: Option<bool>,
    pub grace_period: Option<SStr>,
    pub shutdown_timeout: Option<SStr>,
    pub trusted_proxies: Vec<SStr>,
    pub pid_file: Option<String>,
    pub upgrade_socket: Option<String>,
    pub allow_encoded_slashes: Option<bool>,
    pub upstream_keepalive_pool_size: Option<Spanned<i64>>,
    pub scrub_headers: Vec<SStr>,
    pub keep_headers: Vec<SStr>,
    pub request_header_timeout: Option<SStr>,
    pub request_body_timeout: Option<SStr>,
    pub request_body_min_rate: Option<Spanned<i64>>,
    pub max_connections: Option<Spanned<i64>>,
    pub login_rate_limit: Option<Spanned<i64>>,
    pub introspection_rate_limit: Option<Spanned<i64>>,
    pub provider_call_limit: Option<Spanned<i64>>,
    pub response_write_timeout: Option<SStr>,
    pub response_min_send_rate: Option<Spanned<i64>>,
    pub tunnel_idle_timeout: Option<SStr>,
    pub tls_handshake_timeout: Option<SStr>,
    pub keepalive_timeout: Option<SStr>,
    pub h2_max_concurrent_streams: Option<Spanned<i64>>,
    pub h2_max_header_list_size: Option<Spanned<i64>>,
    pub state_dir: Option<SStr>,
    pub upgrade_ready_timeout: Option<SStr>,
}

/// `[[server.tls]]`
#[derive(Debug, Deserialize)]
pub struct RawTlsListener {
    pub listen: SStr,
    pub cert: SStr,
    pub key: SStr,
    #[serde(default)]
    pub h2: Option<bool>,
    #[serde(default)]
    pub client_ca_file: Option<SStr>,
}

/// `[metrics]`
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawMetrics {
    pub listen: Option<SStr>,
}

/// `[log]`
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawLog {
    pub access_log: Option<bool>,
    pub level: Option<SStr>,
}

/// `[[upstreams]]`
#[derive(Debug, Deserialize)]
pub struct RawUpstream {
    pub name: SStr,
    pub targets: Spanned<Vec<Spanned<RawTarget>>>,
    #[serde(default)]
    pub balance: Option<SStr>,
    #[serde(default)]
    pub hash_key: Option<SStr>,
    #[serde(default)]
    pub health_check: Option<Spanned<RawHealthCheck>>,
    #[serde(default)]
    pub connect_timeout: Option<SStr>,
    #[serde(default)]
    pub read_timeout: Option<SStr>,
    #[serde(default)]
    pub write_timeout: Option<SStr>,
    #[serde(default)]
    pub idle_timeout: Option<SStr>,
    #[serde(default)]
    pub retries: Option<Spanned<i64>>,
    #[serde(default)]
    pub tls: Option<bool>,
    #[serde(default)]
    pub sni: Option<String>,
    #[serde(default)]
    pub host_header: Option<String>,
}

/// A target: `"127.0.0.1:3000"` or `{ address = "127.0.0.1:3000", weight = 2 }`.
pub type RawTarget = StrOrTable<RawWeightedTarget>;

/// The table form of a target.
#[derive(Debug, Deserialize)]
pub struct RawWeightedTarget {
    pub address: String,
    #[serde(default)]
    pub weight: Option<i64>,
}

/// `health_check = { kind = "http", path = "/healthz", interval = "5s" }`
#[derive(Debug, Deserialize)]
pub struct RawHealthCheck {
    pub kind: SStr,
    #[serde(default)]
    pub path: Option<SStr>,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub interval: Option<SStr>,
    #[serde(default)]
    pub timeout: Option<SStr>,
    #[serde(default)]
    pub healthy_threshold: Option<Spanned<i64>>,
    #[serde(default)]
    pub unhealthy_threshold: Option<Spanned<i64>>,
}

/// `[[routes]]`
#[derive(Debug, Deserialize)]
pub struct RawRoute {
    pub name: SStr,
    #[serde(default)]
    pub hosts: Vec<SStr>,
    #[serde(default)]
    pub paths: Option<Vec<SStr>>,
    #[serde(default)]
    pub methods: Vec<SStr>,
    pub upstream: SStr,
    #[serde(default)]
    pub strip_path: Option<bool>,
    #[serde(default)]
    pub preserve_host: Option<bool>,
    #[serde(default)]
    pub preserve_post: Option<Spanned<bool>>,
    #[serde(default)]
    pub preserve_post_max_bytes: Option<Spanned<i64>>,
    #[serde(default)]
    pub auth: Option<Spanned<RawAuth>>,
    #[serde(default)]
    pub token_exchange: Option<Spanned<RawTokenExchange>>,
    #[serde(default)]
    pub rate_limit: Option<Spanned<RawRateLimit>>,
}

/// `rate_limit = { per = "sub", requests = 100, window = "1m" }` on a route.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawRateLimit {
    pub per: Option<SStr>,
    pub requests: Option<Spanned<i64>>,
    pub window: Option<SStr>,
}

/// `token_exchange = { audience = "orders-api", scope = "orders:read" }` on a route.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawTokenExchange {
    pub audience: Option<SStr>,
    pub scope: Option<SStr>,
}

/// `auth = "none"` or `auth = { provider = "okta", ... }`.
pub type RawAuth = StrOrTable<RawAuthTable>;

/// The table form of `auth`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawAuthTable {
    pub provider: Option<SStr>,
    pub providers: Option<Vec<SStr>>,
    pub methods: Option<Vec<SStr>>,
    pub mode: Option<SStr>,
    pub realm: Option<String>,
    pub scopes_required: Option<Vec<SStr>>,
    pub groups_required: Option<Vec<SStr>>,
    pub roles_required: Option<Vec<SStr>>,
    pub audience_required: Option<Vec<SStr>>,
    pub scopes_claim: Option<Vec<SStr>>,
    pub groups_claim: Option<Vec<SStr>>,
    pub roles_claim: Option<Vec<SStr>>,
    pub audience_claim: Option<Vec<SStr>>,
    pub consumer_claim: Option<Vec<SStr>>,
    pub consumer_by: Option<Vec<SStr>>,
    pub consumer_optional: Option<bool>,
    pub consumer_groups_required: Option<Vec<SStr>>,
    pub anonymous: Option<SStr>,
    pub credential_claim: Option<Vec<SStr>>,
    pub authenticated_groups_claim: Option<Vec<SStr>>,
    pub forbidden_redirect_uri: Option<SStr>,
    pub run_on_preflight: Option<bool>,
    pub acr_values: Option<Vec<SStr>>,
    pub allow_if: Option<SStr>,
    pub dpop: Option<SStr>,
    pub certificate_bound: Option<SStr>,
    pub email_domains: Option<Vec<SStr>>,
    pub emails: Option<Vec<SStr>>,
    pub emails_file: Option<SStr>,
    pub max_age: Option<SStr>,
    pub prompt: Option<SStr>,
}

/// `[[consumers]]`: Kong-style consumers that tokens map to.
#[derive(Debug, Deserialize)]
pub struct RawConsumer {
    #[serde(default)]
    pub id: Option<SStr>,
    #[serde(default)]
    pub username: Option<SStr>,
    #[serde(default)]
    pub custom_id: Option<SStr>,
    #[serde(default)]
    pub groups: Vec<SStr>,
}

/// A value that may be written as a plain string or as a table.
#[derive(Debug)]
pub enum StrOrTable<T> {
    Str(String),
    Table(T),
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for StrOrTable<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for V<T> {
            type Value = StrOrTable<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or a table")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(StrOrTable::Str(v.to_owned()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Self::Value, A::Error> {
                // Deserializing through the same MapAccess keeps unknown-key tracking and spans.
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(StrOrTable::Table)
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}
