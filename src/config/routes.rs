//! The validated form of `[[routes]]`, their `auth` tables, `[[forward_auth]]` and
//! `[identity_assertion]`: what a request must prove and where it goes.

use super::{ConsumerId, ProviderId, UpstreamId};
use std::path::PathBuf;
use std::time::Duration;

/// A route: which requests go to which upstream, and what they must prove.
#[derive(Debug, Clone)]
pub struct Route {
    /// Name used in metrics and logs.
    pub name: String,
    /// Lower-case host names; `*.example.org` matches any subdomain. Empty: any host.
    pub hosts: Vec<String>,
    /// Path prefixes, matched on segment boundaries.
    pub paths: Vec<String>,
    /// Allowed methods. Empty: any method.
    pub methods: Vec<http::Method>,
    /// Index into [`Config::upstreams`].
    pub upstream: UpstreamId,
    /// Remove the matched prefix before forwarding.
    pub strip_path: bool,
    /// Forward the client's Host header (otherwise the upstream's host).
    pub preserve_host: bool,
    /// `preserve_post`: the most form bytes kept across a sign-in (`None`: off).
    pub preserve_post: Option<usize>,
    /// What a request must prove.
    pub auth: Auth,
    /// `rate_limit`: at most so many requests per identity and window.
    pub rate_limit: Option<RateLimit>,
}

/// `rate_limit` on a route (Kong's per-consumer rate limiting).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Whose requests are counted together.
    pub per: LimitBy,
    /// The most requests in any `window`.
    pub requests: u64,
    /// The sliding window they are counted over.
    pub window: Duration,
}

/// What a route's `rate_limit` counts by. A request without it (an anonymous request on an
/// optional route) is counted by its client address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitBy {
    /// The user: the credential's `sub` (with its provider).
    Sub,
    /// The mapped `[[consumers]]` entry.
    Consumer,
    /// The client address (IPv6 by /64), behind `trusted_proxies` as they say.
    ClientIp,
}

/// Authentication required by a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// Public.
    None,
    /// OpenID Connect: sessions, browser login, bearer tokens, introspection.
    Oidc(Box<RouteAuth>),
}

/// `[identity_assertion]`: every authenticated request to an upstream carries a short-lived
/// ES256 JWT naming the user, signed by the gateway.
#[derive(Debug, Clone)]
pub struct IdentityAssertion {
    /// The upstream request header that carries it.
    pub header: http::HeaderName,
    /// `iss`.
    pub issuer: String,
    /// `aud`; `None`: the name of the upstream the request goes to.
    pub audience: Option<String>,
    /// `exp - iat`.
    pub lifetime: Duration,
    /// PEM EC P-256 keys: the first signs, all are published. Empty: one generated and kept in
    /// `state_dir`.
    pub key_files: Vec<PathBuf>,
    /// Where the public keys are published (JWKS).
    pub jwks_path: String,
}

/// A `[[forward_auth]]` endpoint: answers whether a request a proxy in front holds may pass.
#[derive(Debug, Clone)]
pub struct ForwardAuth {
    /// Where the decision is asked (`/oauth2/auth`).
    pub path: String,
    /// Where a browser is sent to sign in (`/oauth2/start?rd=...`).
    pub start_path: String,
    /// What an unauthenticated request gets.
    pub unauthenticated: Unauthenticated,
    /// The status of a "yes": 202 (nginx, Traefik, Caddy take any 2xx) or 200 (Envoy's
    /// `ext_authz` takes nothing else).
    pub allowed_status: u16,
    /// What it accepts and requires, as on a route.
    pub auth: RouteAuth,
}

/// What a forward-auth endpoint answers a request without a valid credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unauthenticated {
    /// 401 (nginx `auth_request` then sends the browser to `start_path` itself).
    Status,
    /// A browser gets the redirect to sign in (Traefik, Caddy and Envoy pass it on).
    Redirect,
}

/// What a protected route accepts and requires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteAuth {
    /// Indices into [`Config::providers`]; the first one runs browser logins.
    pub providers: Vec<ProviderId>,
    /// Methods, in the order tried.
    pub methods: Vec<AuthMethod>,
    /// `mode = "optional"`: requests without a credential are proxied anonymously.
    pub optional: bool,
    /// `realm` in `WWW-Authenticate`.
    pub realm: String,
    /// Claim rules.
    pub rules: Rules,
    /// Consumer mapping (when `consumer_claim` is set).
    pub consumer: Option<ConsumerMapping>,
    /// Index into [`Config::consumers`] used when authentication fails.
    pub anonymous: Option<ConsumerId>,
    /// Claim sent as `X-Credential-Identifier`.
    pub credential_claim: Option<Vec<String>>,
    /// Claim sent as `X-Authenticated-Groups`.
    pub authenticated_groups_claim: Option<Vec<String>>,
    /// Browsers failing a rule are sent here instead of a 403 page.
    pub forbidden_redirect_uri: Option<String>,
    /// Authenticate CORS preflight requests too (default); `false` lets them through.
    pub run_on_preflight: bool,
    /// How strong and how recent the user's authentication must be (`acr_values`, `max_age`).
    pub step_up: Option<StepUp>,
    /// The upstream gets a token exchanged for it (RFC 8693) in place of the user's own.
    pub token_exchange: Option<TokenExchange>,
    /// `allow_if`: a CEL expression that must hold, beside the rules.
    pub allow_if: Option<super::Policy>,
    /// `dpop`: access tokens bound to a key the client proves it holds (RFC 9449).
    pub dpop: Option<Binding>,
    /// `certificate_bound`: access tokens bound to the connection's TLS client certificate
    /// (RFC 8705).
    pub certificate_bound: Option<Binding>,
}

/// A route's `dpop` or `certificate_bound`: how sender-constrained tokens are taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding {
    /// Bound tokens are taken with their proof, beside plain bearer tokens.
    Allowed,
    /// Only bound tokens, with their proof.
    Required,
}

/// `token_exchange` on a route: what the upstream's token is minted for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenExchange {
    /// `audience`: the upstream, as the provider knows it.
    pub audience: String,
    /// `scope`, space-separated; `None`: the provider's default for the audience.
    pub scope: Option<String>,
}

/// Step-up authentication on a route (OpenID Connect `acr_values` / `max_age`, RFC 9470).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepUp {
    /// The credential's `acr` must be one of these. Empty: any.
    pub acr_values: Vec<String>,
    /// The user authenticated (`auth_time`) at most this long ago.
    pub max_age: Option<Duration>,
    /// `prompt = "login"`: the provider asks for credentials again even within its own session.
    pub prompt_login: bool,
}

impl RouteAuth {
    /// Whether authorizing a request reads the credential's claims.
    pub fn reads_claims(&self) -> bool {
        let r = &self.rules;
        [&r.scopes, &r.groups, &r.roles, &r.audience]
            .iter()
            .any(|req| !req.any_of.is_empty())
            || !r.emails.is_empty()
            || self.allow_if.is_some()
            || self.consumer.is_some()
            || self.credential_claim.is_some()
            || self.authenticated_groups_claim.is_some()
    }
}

/// A way to prove identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// An existing browser session.
    Session,
    /// Start the browser login (authorization code flow).
    AuthorizationCode,
    /// A JWT access token in `Authorization: Bearer`.
    Bearer,
    /// An opaque access token checked at the provider (RFC 7662).
    Introspection,
}

/// Claim requirements. Each is a list of alternatives (OR); an alternative is a
/// space-separated list of values that must all be present (AND), as in Kong.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rules {
    /// `scopes_required` on `scopes_claim`.
    pub scopes: Requirement,
    /// `groups_required` on `groups_claim`.
    pub groups: Requirement,
    /// `roles_required` on `roles_claim`.
    pub roles: Requirement,
    /// `audience_required` on `audience_claim` (also the accepted audiences of bearer tokens).
    pub audience: Requirement,
    /// `email_domains`, `emails` and `emails_file` (oauth2-proxy's `--email-domain` and
    /// authenticated-emails file).
    pub emails: EmailRule,
}

/// Who may pass by the `email` claim: an address listed, or one in a listed domain. Empty:
/// no requirement.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EmailRule {
    /// Lower-case domains; `.example.com` also matches its subdomains.
    pub domains: Vec<String>,
    /// Lower-case addresses.
    pub addresses: std::collections::BTreeSet<String>,
}

impl EmailRule {
    /// Whether the rule requires anything.
    pub fn is_empty(&self) -> bool {
        self.domains.is_empty() && self.addresses.is_empty()
    }
}

/// One claim requirement.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Requirement {
    /// Path to the claim (`["realm_access", "roles"]`).
    pub claim: Vec<String>,
    /// Alternatives; each is a set of values that must all be present. Empty: no requirement.
    pub any_of: Vec<Vec<String>>,
}

/// Mapping tokens to `[[consumers]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerMapping {
    /// Claim holding the consumer reference.
    pub claim: Vec<String>,
    /// Consumer fields compared with it, in order.
    pub by: Vec<ConsumerField>,
    /// A token without a matching consumer is still accepted.
    pub optional: bool,
    /// The consumer must be in one of these groups (empty: any).
    pub groups_required: Vec<String>,
}

/// A consumer field used for mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumerField {
    /// `id`
    Id,
    /// `username`
    Username,
    /// `custom_id`
    CustomId,
}
