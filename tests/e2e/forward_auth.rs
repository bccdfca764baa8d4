//! Forward-auth: a real proxy in front — Debian's nginx (`auth_request`), Caddy (`forward_auth`)
//! and Traefik (`ForwardAuth`), each running its documented snippet from `conf/forward-auth/` —
//! asks the gateway for the decision; a browser-like client signs in through the proxy against
//! the test OP, and a recording upstream shows what the application received. Also the redirect
//! mode Traefik and Envoy use, asked directly.

use crate::support;

use serde_json::Value;
use support::front::FrontProxy;
use support::*;

const SECRET: &str = "forward-auth-test-session-secret-0123456789";

/// A documented snippet, with the gateway's and the application's real ports.
fn snippet(file: &str, gw_port: u16, app: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/conf/forward-auth/{file}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
    .replace("127.0.0.1:4180", &format!("127.0.0.1:{gw_port}"))
    .replace("127.0.0.1:8080", app)
}

/// The gateway on `port`, trusting the proxy on loopback, with provider `op` (its callback on
/// the proxied site `site`) and the given `[[forward_auth]]` entries.
fn gateway(port: u16, issuer: &str, site: &str, forward_auth: &str) -> GatewayProcess {
    let body = Toml::new()
        .session(SECRET, "")
        .raw(&format!(
            "[[providers]]\nname = \"op\"\nissuer = \"{issuer}\"\nclient_id = \"gateway\"\n\
             client_secret = \"s\"\nredirect_uri = \"{site}/oauth2/callback\"\n\
             logout_path = \"/oauth2/sign_out\"\n"
        ))
        .raw(forward_auth)
        .build();
    GatewayProcess::start_with(GatewayOptions {
        body: &body,
        // Few sign-in starts a minute per client: a proxy that passed a client's own
        // X-Forwarded-For would let it get round the limit.
        server_extra: "trusted_proxies = [\"127.0.0.1/32\"]\nlogin_rate_limit = 8",
        port: Some(port),
        ..Default::default()
    })
}

/// The test OP, the application, a front proxy running the documented `file`, and the gateway
/// with the given `[[forward_auth]]` entries behind it.
struct Site {
    front: FrontProxy,
    gw: GatewayProcess,
    idp: HostileOp,
    _up: TestUpstream,
}

fn site(start: fn(&str) -> FrontProxy, file: &str, forward_auth: &str) -> Site {
    let up = TestUpstream::start("app");
    let idp = HostileOp::start(Attack::None);
    let gw_port = free_port();
    let front = start(&snippet(file, gw_port, &up.address()));
    let gw = gateway(gw_port, &idp.issuer, &front.url(""), forward_auth);
    Site {
        front,
        gw,
        idp,
        _up: up,
    }
}

fn header<'a>(echo: &'a Value, name: &str) -> Vec<&'a str> {
    echo["headers"][name]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// Through `front`: a signed-out browser is sent to sign in and lands on the page it asked for,
/// whose request carried `user_header` = alice; a signed-in client's own copy of that header is
/// replaced; a signed-out client forging it is sent to sign in (`Location` contains
/// `sign_in`). Returns the signed-in browser.
async fn sign_in_and_forge(
    front: &FrontProxy,
    gw: &GatewayProcess,
    user_header: &str,
    sign_in: &str,
) -> Browser {
    let b = Browser::new();
    // The whole query comes back after the sign-in: several parameters, an encoded `&` and an
    // encoded non-ASCII character.
    let asked = "/reports/q3?year=2026&q=caf%C3%A9&x=a%26b&empty=";
    let page = b.navigate(&front.url(asked), None).await;
    assert_eq!(
        page.status,
        200,
        "{}\n{}\n{}",
        page.body,
        front.logs(),
        gw.log()
    );
    let echo = page.json();
    assert_eq!(echo["uri"], asked, "{:?}", page.trail);
    assert_eq!(header(&echo, user_header), ["alice"], "{echo}");

    let forged = |client: &reqwest::Client, who: &str| {
        client
            .get(front.url("/anything"))
            .header(user_header, who)
            .header("Accept", "text/html")
            .send()
    };
    let r = forged(&b.client, "mallory").await.unwrap();
    assert_eq!(r.status(), 200);
    let echo: Value = r.json().await.unwrap();
    assert_eq!(header(&echo, user_header), ["alice"], "{echo}");

    let r = forged(&fresh_client(), "alice").await.unwrap();
    assert_eq!(r.status(), 302, "signed out: sent to sign in");
    let location = r.headers()["location"].to_str().unwrap();
    assert!(location.contains(sign_in), "{location}");

    // The application gets the site's own cookie, never the gateway's session, and no identity
    // header the client wrote itself.
    let cookies = format!("{}; theme=dark", b.cookie_header(&front.url("/")));
    assert!(cookies.contains("oidc_session="), "{cookies}");
    let r = fresh_client()
        .get(front.url("/anything"))
        .header("Cookie", cookies)
        .header("X-Forwarded-User", "mallory")
        .header("X-Forwarded-Email", "mallory@example.com")
        .header("X-Auth-Request-Preferred-Username", "mallory")
        .header("Remote-User", "mallory")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let echo: Value = r.json().await.unwrap();
    assert_eq!(header(&echo, user_header), ["alice"], "{echo}");
    assert_eq!(header(&echo, "cookie"), ["theme=dark"], "{echo}");
    for forged in [
        "x-forwarded-user",
        "x-forwarded-email",
        "x-auth-request-preferred-username",
        "remote-user",
    ] {
        assert!(header(&echo, forged).is_empty(), "{forged}: {echo}");
    }

    // Sign-in starts count against the real client address whatever X-Forwarded-For the
    // client sends: the proxy sets it from the connection.
    let mut limited = 0;
    for i in 0..10 {
        let r = fresh_client()
            .get(front.url("/oauth2/start?rd=%2F"))
            .header("Accept", "text/html")
            .header("X-Forwarded-For", format!("203.0.113.{i}"))
            .send()
            .await
            .unwrap();
        limited += usize::from(r.status() == 429);
    }
    assert!(limited >= 1, "a forged X-Forwarded-For got round the limit");
    b
}

#[tokio::test(flavor = "multi_thread")]
async fn nginx_auth_request_signs_in_through_the_gateway_and_passes_only_its_identity() {
    let s = site(
        FrontProxy::nginx,
        "nginx.conf",
        "[[forward_auth]]\nauth = { provider = \"op\" }\n",
    );
    let (nginx, gw) = (&s.front, &s.gw);
    let b = sign_in_and_forge(nginx, gw, "x-user", "/oauth2/start?rd=").await;

    // The decision endpoint is nginx-internal; asked directly, the gateway answers 202 with the
    // identity (each header once) for a session, 401 without one.
    let r = fresh_client()
        .get(nginx.url("/oauth2/auth"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let cookie = b.cookie_header(&nginx.url("/"));
    let r = fresh_client()
        .get(gw.url("/oauth2/auth"))
        .header("Cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(r.headers()["x-auth-request-email"], "alice@example.com");
    assert_eq!(
        r.headers()
            .get_all("x-auth-request-user")
            .iter()
            .collect::<Vec<_>>(),
        ["alice"]
    );
    let r = fresh_client()
        .get(gw.url("/oauth2/auth"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // The return target never leaves the site. (Another client address: this one has spent its
    // sign-in starts above.)
    let page = Browser::from_address(Some([127, 0, 0, 2].into()))
        .navigate(
            &nginx.url("/oauth2/start?rd=https%3A%2F%2Fevil.example.com%2Fsteal"),
            None,
        )
        .await;
    assert_eq!(page.status, 200);
    assert!(page.url.starts_with(&nginx.url("/")), "{}", page.url);
    assert_eq!(page.json()["uri"], "/");
}

#[tokio::test(flavor = "multi_thread")]
async fn caddy_forward_auth_signs_in_through_the_gateway_and_passes_only_its_identity() {
    let s = site(
        FrontProxy::caddy,
        "Caddyfile",
        "[[forward_auth]]\nunauthenticated = \"redirect\"\nauth = { provider = \"op\" }\n",
    );
    sign_in_and_forge(&s.front, &s.gw, "x-auth-request-user", &s.idp.issuer).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn traefik_forward_auth_signs_in_through_the_gateway_and_passes_only_its_identity() {
    let s = site(
        FrontProxy::traefik,
        "traefik.yml",
        "[[forward_auth]]\nunauthenticated = \"redirect\"\nauth = { provider = \"op\" }\n",
    );
    sign_in_and_forge(&s.front, &s.gw, "x-auth-request-user", &s.idp.issuer).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_redirect_mode_sends_browsers_to_sign_in_and_applies_the_rules() {
    let s = site(
        FrontProxy::nginx,
        "nginx.conf",
        "[[forward_auth]]\npath = \"/traefik/auth\"\nstart_path = \"/traefik/start\"\n\
         unauthenticated = \"redirect\"\nauth = { provider = \"op\", groups_required = [\"admins\"] }\n",
    );
    let (nginx, gw, idp) = (&s.front, &s.gw, &s.idp);
    // What Traefik's ForwardAuth sends: the original request's headers plus X-Forwarded-*.
    let ask = |b: &Browser| {
        b.client
            .get(gw.url("/traefik/auth"))
            .header("Accept", "text/html")
            .header("X-Forwarded-Proto", "http")
            .header("X-Forwarded-Host", format!("127.0.0.1:{}", nginx.port))
            .header("X-Forwarded-Uri", "/admin/panel?tab=2")
            .send()
    };
    let b = Browser::new();
    let r = ask(&b).await.unwrap();
    assert_eq!(r.status(), 302, "a browser is sent to sign in");
    let authorize = r.headers()["location"].to_str().unwrap().to_owned();
    assert!(authorize.starts_with(&idp.issuer), "{authorize}");
    // Through the OP and the callback (via nginx), back to the page asked for.
    let page = b.navigate(&authorize, None).await;
    assert!(
        page.trail.iter().any(|u| u.ends_with("/admin/panel?tab=2")),
        "{:?}",
        page.trail
    );
    // Signed in, but not in `admins`: 403.
    assert_eq!(ask(&b).await.unwrap().status(), 403);
}

/// Through `front` (running `file`, with `[[forward_auth]]` lines `entry` that refuse alice), a
/// refused user sees the gateway's 403 page with a working "Sign out".
async fn a_refused_user_sees_the_gateways_403_page(
    start: fn(&str) -> FrontProxy,
    file: &str,
    entry: &str,
) {
    let s = site(start, file, entry);
    let b = Browser::new();
    let page = b.navigate(&s.front.url("/reports?a=1"), None).await;
    assert_eq!(page.status, 403, "{}\n{}", page.body, s.front.logs());
    assert!(
        page.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    for part in ["Access denied", "Sign out", "/oauth2/sign_out"] {
        assert!(page.body.contains(part), "{part}: {}", page.body);
    }
    // The button works through the proxy: signed out, the page asks for a sign-in again.
    let out = b
        .client
        .post(s.front.url("/oauth2/sign_out"))
        .header("Origin", s.front.url(""))
        .form(&[("x", "")])
        .send()
        .await
        .unwrap();
    assert!(out.status().is_redirection(), "{}", out.status());
    let again = fresh_client()
        .get(s.front.url("/reports"))
        .header("Cookie", b.cookie_header(&s.front.url("/")))
        .header("Accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 302);
}

#[tokio::test(flavor = "multi_thread")]
async fn nginx_shows_the_gateways_403_page_with_sign_out() {
    // The old snippet gave nginx's bare "403 Forbidden", with no way to sign out or switch
    // account.
    a_refused_user_sees_the_gateways_403_page(
        FrontProxy::nginx,
        "nginx.conf",
        "[[forward_auth]]\nauth = { provider = \"op\", groups_required = [\"admins\"] }\n",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn caddy_and_traefik_show_the_gateways_403_page_with_sign_out() {
    let entry = "[[forward_auth]]\nunauthenticated = \"redirect\"\n\
                 auth = { provider = \"op\", groups_required = [\"admins\"] }\n";
    a_refused_user_sees_the_gateways_403_page(FrontProxy::caddy, "Caddyfile", entry).await;
    a_refused_user_sees_the_gateways_403_page(FrontProxy::traefik, "traefik.yml", entry).await;
}

/// What Envoy's `ext_authz` filter (HTTP service) decided for a client request.
#[derive(Debug)]
enum Envoy {
    /// Passed on, with the check's `x-auth-request-*` headers added.
    Allowed(Vec<(String, String)>),
    /// Answered to the client with the check's status, `location` and `set-cookie` headers.
    Denied(u16, Option<String>, Vec<String>),
}

/// A harness that does what Envoy's `ext_authz` HTTP client does, configured as
/// `docs/forward-auth.md` shows (Envoy is packaged neither for Debian nor on PyPI or npm, so
/// it cannot run here): the check keeps the client's method, goes to `path_prefix` followed by
/// the original path, without the body (`Content-Length: 0`), with only the allowed headers
/// (`cookie`, `authorization`, `accept`) and the added `X-Original-URL`. Envoy allows the
/// request on 200 alone; any other status, 202 included, is a denial passed to the client with
/// the allowed client headers (`location`, `set-cookie`).
async fn envoy_ext_authz(
    gw: &GatewayProcess,
    path_prefix: &str,
    site: &str,
    method: reqwest::Method,
    path: &str,
    client_headers: &[(&str, &str)],
) -> Envoy {
    let mut check = fresh_client()
        .request(method, gw.url(&format!("{path_prefix}{path}")))
        .header("Content-Length", "0")
        .header("X-Original-URL", format!("{site}{path}"));
    for (name, value) in client_headers {
        if ["cookie", "authorization", "accept"].contains(&name.to_ascii_lowercase().as_str()) {
            check = check.header(*name, *value);
        }
    }
    let r = check.send().await.unwrap();
    let status = r.status().as_u16();
    if status == 200 {
        let added = r
            .headers()
            .iter()
            .filter(|(n, _)| n.as_str().starts_with("x-auth-request-"))
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_owned()))
            .collect();
        return Envoy::Allowed(added);
    }
    let location = r
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_owned());
    let cookies = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    Envoy::Denied(status, location, cookies)
}

#[tokio::test(flavor = "multi_thread")]
async fn envoy_ext_authz_gets_200_from_an_entry_that_allows_with_it() {
    let s = site(
        FrontProxy::nginx,
        "nginx.conf",
        "[[forward_auth]]\n\
         auth = { provider = \"op\" }\n\
         [[forward_auth]]\npath = \"/envoy/auth\"\nstart_path = \"/envoy/start\"\n\
         unauthenticated = \"redirect\"\nallowed_status = 200\nauth = { provider = \"op\" }\n",
    );
    let site_url = s.front.url("");
    let site_url = site_url.trim_end_matches('/');
    let ask =
        |prefix: &'static str, method: reqwest::Method, headers: Vec<(&'static str, String)>| {
            let (gw, site_url) = (&s.gw, site_url.to_owned());
            async move {
                let h: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
                envoy_ext_authz(gw, prefix, &site_url, method, "/app/x?y=1", &h).await
            }
        };
    let html = ("accept", "text/html".to_owned());

    // No session: a browser gets the redirect to the provider, an API client 401.
    let first = ask("/envoy/auth?", reqwest::Method::GET, vec![html.clone()]).await;
    let Envoy::Denied(302, Some(authorize), login_cookies) = first else {
        panic!("{first:?}\n{}", s.gw.log());
    };
    assert!(authorize.starts_with(&s.idp.issuer), "{authorize}");
    let json = ("accept", "application/json".to_owned());
    let api = ask("/envoy/auth?", reqwest::Method::GET, vec![json]).await;
    assert!(matches!(api, Envoy::Denied(401, None, _)), "{api:?}");

    // Envoy passed the login cookie on with the redirect: signed in through the provider and
    // the callback (on the site), back where it started.
    let b = Browser::new();
    let site_parsed: reqwest::Url = s.front.url("/").parse().unwrap();
    for c in &login_cookies {
        b.jar.add_cookie_str(c, &site_parsed);
    }
    let page = b.navigate(&authorize, None).await;
    assert!(
        page.trail.iter().any(|u| u.ends_with("/app/x?y=1")),
        "{:?}",
        page.trail
    );
    let cookie = ("cookie", b.cookie_header(&s.front.url("/")));

    // The session passes on 200, with the identity, for any method (Envoy keeps it).
    for method in [reqwest::Method::GET, reqwest::Method::POST] {
        let allowed = ask(
            "/envoy/auth?",
            method.clone(),
            vec![html.clone(), cookie.clone()],
        )
        .await;
        let Envoy::Allowed(added) = &allowed else {
            panic!("{method}: {allowed:?}");
        };
        assert!(
            added.contains(&("x-auth-request-user".into(), "alice".into())),
            "{added:?}"
        );
    }
    // The default entry says yes with 202, as nginx, Traefik and Caddy expect: Envoy would
    // refuse the signed-in user. That is what `allowed_status = 200` is for.
    let default = ask("/oauth2/auth?", reqwest::Method::GET, vec![cookie.clone()]).await;
    assert!(
        matches!(default, Envoy::Denied(202, None, _)),
        "{default:?}"
    );
}
