//! `oidc-gateway demo`: the gateway, the development IdP and a demo upstream, in one process on
//! loopback, so a newcomer sees the whole product work with no identity provider account.

mod upstream;

use crate::config::Config;
use crate::devidp::{self, DevClient, DevIdp, DevIdpConfig, DevUser};
use crate::server::{self, RunMode};
use base64::Engine;
use pingora::apps::http_app::HttpServer;
use pingora::server::Server;
use pingora::services::listening::Service;
use std::net::SocketAddr;
use std::path::Path;

/// The development IdP's machine client (client credentials), for the demo's API route.
pub const API_CLIENT_ID: &str = "demo-api-client";
/// Its secret: published on purpose, the demo is development only.
pub const API_CLIENT_SECRET: &str = "demo-api-secret";

/// Where the demo listens (all on 127.0.0.1).
#[derive(Debug, Clone, Copy)]
pub struct DemoPorts {
    /// The gateway.
    pub gateway: u16,
    /// The development IdP.
    pub idp: u16,
    /// The demo upstream.
    pub upstream: u16,
    /// The metrics listener.
    pub metrics: u16,
}

impl Default for DemoPorts {
    fn default() -> Self {
        DemoPorts {
            gateway: 8080,
            idp: 8081,
            upstream: 8082,
            metrics: 9464,
        }
    }
}

/// Secrets for one demo run (random), or `None` to print `${...}` placeholders.
struct Secrets {
    session: String,
    client: String,
}

/// The demo's configuration as TOML. With `secrets` `None`, secrets appear as environment
/// references, which is what `--print-config` shows.
fn config_text(p: &DemoPorts, secrets: Option<&Secrets>) -> String {
    let (session, client) = match secrets {
        Some(s) => (s.session.clone(), s.client.clone()),
        None => (
            "${SESSION_SECRET}".to_owned(),
            "${CLIENT_SECRET}".to_owned(),
        ),
    };
    format!(
        r#"# The configuration `oidc-gateway demo` runs, as a config file. The provider here is the
# built-in development IdP (http://127.0.0.1:{idp}); to use a real one, change [[providers]].
# Run it without `demo`, the development IdP and the demo app standing in for yours:
#   export SESSION_SECRET=$(openssl rand -base64 48) CLIENT_SECRET=$(openssl rand -base64 24)
#   oidc-gateway dev-idp --port {idp} --gateway-port {gw} &
#   oidc-gateway demo-app --port {up} &
#   oidc-gateway run --config FILE

[server]
listen = ["127.0.0.1:{gw}"]
threads = 2
grace_period = "2s"
trusted_proxies = ["127.0.0.1/32"]
pid_file = "/tmp/oidc-gateway-demo-{gw}.pid"
upgrade_socket = "/tmp/oidc-gateway-demo-{gw}.sock"

[metrics]
listen = "127.0.0.1:{metrics}"

[session]
store = "cookie"                       # the whole session, encrypted, in the cookie
secrets = ["{session}"]
idling_timeout = "15m"
absolute_timeout = "8h"

[[providers]]
name = "dev"
issuer = "http://127.0.0.1:{idp}"
client_id = "demo"
client_secret = "{client}"
redirect_uri = "http://127.0.0.1:{gw}/oauth2/callback"
logout_redirect_uri = "http://127.0.0.1:{gw}/public"
upstream_headers = {{ "X-Auth-Request-User" = "preferred_username", "X-Auth-Request-Email" = "email" }}

[[upstreams]]
name = "demo-app"
targets = ["127.0.0.1:{up}"]
health_check = {{ kind = "http", path = "/healthz", interval = "2s" }}

# Public: no sign-in (the favicon too, so a browser's icon request never starts one).
[[routes]]
name = "public"
paths = ["/public", "/favicon.ico"]
upstream = "demo-app"

# Only members of "admins" (alice is one, bob is not).
[[routes]]
name = "admin"
paths = ["/admin"]
upstream = "demo-app"
auth = {{ provider = "dev", groups_required = ["admins"] }}

# API: bearer tokens for audience "demo-api" (client credentials at the dev IdP).
[[routes]]
name = "api"
paths = ["/api"]
upstream = "demo-app"
auth = {{ provider = "dev", methods = ["bearer"], audience_required = ["demo-api"] }}

# Everything else: browser sign-in.
[[routes]]
name = "app"
paths = ["/"]
upstream = "demo-app"
auth = {{ provider = "dev" }}
"#,
        gw = p.gateway,
        idp = p.idp,
        up = p.upstream,
        metrics = p.metrics,
    )
}

/// What `demo --print-config` prints.
pub fn printed_config(p: &DemoPorts) -> String {
    config_text(p, None)
}

/// The line the demo prints when it starts.
pub fn banner(p: &DemoPorts) -> String {
    format!(
        "open http://127.0.0.1:{gw}/ — sign in as alice / wonderland (or bob / builder, who is not an admin) \
(dev IdP on :{idp}, metrics on :{m}) — development only\n\
API route: get a token with  curl -u {API_CLIENT_ID}:{API_CLIENT_SECRET} -d grant_type=client_credentials \
-d resource=demo-api http://127.0.0.1:{idp}/token  then  curl -H \"Authorization: Bearer <access_token>\" \
http://127.0.0.1:{gw}/api/hello",
        gw = p.gateway,
        idp = p.idp,
        m = p.metrics
    )
}

/// Builds the demo server: the gateway from the generated config, plus the development IdP and
/// the demo upstream as further services of the same process.
pub fn build(p: &DemoPorts) -> Result<Server, String> {
    let b64 = |n: [u8; 32]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(n);
    let secrets = Secrets {
        session: b64(crate::crypto::random_bytes()),
        client: b64(crate::crypto::random_bytes()),
    };
    // The gateway's own ports are checked by `server::build`; these two are the demo's.
    crate::bind_check::check(&[
        std::net::SocketAddr::from(([127, 0, 0, 1], p.idp)),
        std::net::SocketAddr::from(([127, 0, 0, 1], p.upstream)),
    ])?;
    let text = config_text(p, Some(&secrets));
    let config = Config::parse(&text, Path::new("<demo>"))
        .map_err(|e| format!("demo configuration: {e}"))?;
    let (idp, idp_addr) = dev_idp(p, &secrets.client, 300)?;
    let mut server = server::build(config, RunMode::default())?;
    let mut idp_service = Service::new("development IdP".to_owned(), HttpServer::new_app(idp));
    idp_service.add_tcp(&idp_addr.to_string());
    idp_service.threads = Some(1);
    server.add_service(idp_service);
    let mut app = Service::new(
        "demo upstream".to_owned(),
        HttpServer::new_app(upstream::DemoUpstream),
    );
    app.add_tcp(&format!("127.0.0.1:{}", p.upstream));
    app.threads = Some(1);
    server.add_service(app);
    Ok(server)
}

/// The development IdP the demo (and `oidc-gateway dev-idp`) runs: client `demo` registered for
/// the gateway on `p.gateway`, the machine client for the API route, and alice and bob.
fn dev_idp(
    p: &DemoPorts,
    client_secret: &str,
    access_token_ttl: u64,
) -> Result<(DevIdp, SocketAddr), String> {
    let idp_addr = SocketAddr::from(([127, 0, 0, 1], p.idp));
    devidp::check_loopback(&idp_addr)?;
    let idp = DevIdp::new(dev_idp_config(p, client_secret, access_token_ttl))?;
    Ok((idp, idp_addr))
}

/// What `oidc-gateway dev-idp` prints: the settings a gateway configuration needs to use it.
/// The demo client's secret is the one `CLIENT_SECRET` holds, never printed.
pub fn dev_idp_settings(p: &DemoPorts) -> String {
    dev_idp_config(p, "", 0).settings(|c| {
        if c.id == API_CLIENT_ID {
            API_CLIENT_SECRET.to_owned()
        } else {
            "the value of CLIENT_SECRET (the same as the gateway's client_secret)".to_owned()
        }
    })
}

/// The development IdP's clients and users for the gateway on `p.gateway`.
fn dev_idp_config(p: &DemoPorts, client_secret: &str, access_token_ttl: u64) -> DevIdpConfig {
    let gw = p.gateway;
    let idp_addr = SocketAddr::from(([127, 0, 0, 1], p.idp));
    DevIdpConfig {
        issuer: format!("http://{idp_addr}"),
        clients: vec![
            DevClient {
                id: "demo".into(),
                secret: client_secret.to_owned(),
                redirect_uris: vec![format!("http://127.0.0.1:{gw}/oauth2/callback")],
                post_logout_redirect_uris: vec![format!("http://127.0.0.1:{gw}/public")],
            },
            // A machine client with a published secret, for trying the API route with curl.
            DevClient {
                id: API_CLIENT_ID.into(),
                secret: API_CLIENT_SECRET.into(),
                redirect_uris: Vec::new(),
                post_logout_redirect_uris: Vec::new(),
            },
        ],
        users: vec![
            user(
                "alice-0001",
                "alice",
                "wonderland",
                "alice@example.com",
                "Alice Liddell",
                &["admins", "readers"],
            ),
            user(
                "bob-0002",
                "bob",
                "builder",
                "bob@example.com",
                "Bob the Builder",
                &["readers"],
            ),
        ],
        access_token_ttl,
    }
}

/// Only the development IdP, for running the `--print-config` configuration (or your own) with
/// `oidc-gateway run`: `oidc-gateway dev-idp` with `CLIENT_SECRET` set as in that config.
pub fn dev_idp_server(
    p: &DemoPorts,
    client_secret: &str,
    access_token_ttl: u64,
) -> Result<Server, String> {
    let (idp, addr) = dev_idp(p, client_secret, access_token_ttl)?;
    let conf = pingora::server::configuration::ServerConf {
        threads: 1,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        pid_file: format!("/tmp/oidc-gateway-dev-idp-{}.pid", p.idp),
        upgrade_sock: format!("/tmp/oidc-gateway-dev-idp-{}.sock", p.idp),
        ..Default::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut service = Service::new("development IdP".to_owned(), HttpServer::new_app(idp));
    service.add_tcp(&addr.to_string());
    server.add_service(service);
    Ok(server)
}

/// A server running only the demo app, on loopback (`oidc-gateway demo-app`): the upstream of
/// the configuration `demo --print-config` prints.
pub fn demo_app_server(port: u16) -> Result<Server, String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let conf = pingora::server::configuration::ServerConf {
        threads: 1,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        pid_file: format!("/tmp/oidc-gateway-demo-app-{port}.pid"),
        upgrade_sock: format!("/tmp/oidc-gateway-demo-app-{port}.sock"),
        ..Default::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut service = Service::new(
        "demo upstream".to_owned(),
        HttpServer::new_app(upstream::DemoUpstream),
    );
    service.add_tcp(&addr.to_string());
    server.add_service(service);
    Ok(server)
}

fn user(
    sub: &str,
    username: &str,
    password: &str,
    email: &str,
    name: &str,
    groups: &[&str],
) -> DevUser {
    let claims =
        serde_json::json!({"email": email, "email_verified": true, "name": name, "groups": groups});
    DevUser {
        sub: sub.into(),
        username: username.into(),
        password: password.into(),
        claims: claims.as_object().cloned().unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_printed_config_is_a_valid_config() {
        let p = DemoPorts::default();
        // SAFETY: test-only variables, set before this test reads them.
        unsafe {
            std::env::set_var("SESSION_SECRET", "0123456789abcdef0123456789abcdef-demo");
            std::env::set_var("CLIENT_SECRET", "demo-client-secret");
        }
        let c = Config::parse(&printed_config(&p), Path::new("demo.toml")).unwrap();
        assert_eq!(c.routes.len(), 4);
        assert!(printed_config(&p).contains("${SESSION_SECRET}"));
        assert!(
            banner(&p).starts_with("open http://127.0.0.1:8080/ — sign in as alice / wonderland")
        );
    }
}
