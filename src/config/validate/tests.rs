//! The validator's tests: every section's errors name the file, line and key.
use super::*;

fn parse_str(src: &str) -> Result<Config, ConfigErrors> {
    parse(src, Path::new("test.toml"), false)
}

const MINIMAL: &str = r#"
[[upstreams]]
name = "app"
targets = ["127.0.0.1:3000", { address = "127.0.0.1:3001", weight = 3 }]

[[routes]]
name = "app"
upstream = "app"
"#;

#[test]
fn minimal_config_gets_documented_defaults() {
    let c = parse_str(MINIMAL).unwrap();
    assert_eq!(c.server.listen, vec!["127.0.0.1:8080".parse().unwrap()]);
    assert_eq!(c.server.grace_period, Duration::from_secs(10));
    assert_eq!(c.upstreams[0].targets[1].weight, 3);
    assert_eq!(c.upstreams[0].connect_timeout, Duration::from_secs(2));
    assert_eq!(c.upstreams[0].retries, 1);
    assert_eq!(c.routes[0].paths, vec!["/"]);
    assert!(c.routes[0].preserve_host);
    assert_eq!(c.routes[0].auth, Auth::None);
    assert_eq!(c.metrics.unwrap().listen, "127.0.0.1:9464".parse().unwrap());
    let s = &c.server;
    assert_eq!(s.provider_call_limit, 200);
    assert_eq!(s.response_write_timeout, Duration::from_secs(60));
    assert_eq!(s.response_min_send_rate, 0);
    assert_eq!(s.tunnel_idle_timeout, Duration::from_secs(60));
    assert_eq!(s.tls_handshake_timeout, Duration::from_secs(10));
    assert_eq!(s.keepalive_timeout, Duration::from_secs(60));
    assert_eq!(s.h2_max_concurrent_streams, 100);
    assert_eq!(s.h2_max_header_list_size, 65_536);
}

#[test]
fn every_error_is_reported_with_its_line() {
    let src = r#"[server]
listen = ["127.0.0.1:8080"]
bogus_key = 1

[[upstreams]]
name = "app"
targets = ["not an address"]
connect_timeout = "2 parsecs"

[[routes]]
name = "app"
upstream = "missing"
"#;
    let errs = parse_str(src).unwrap_err().0;
    let lines: Vec<(usize, &str)> = errs.iter().map(|e| (e.line, e.key.as_str())).collect();
    assert_eq!(
        lines,
        vec![
            (3, "server.bogus_key"),
            (7, "upstreams[0].targets[0]"),
            (8, "upstreams[0].connect_timeout"),
            (12, "routes[0].upstream"),
        ],
        "{errs:#?}"
    );
    assert!(errs[2].message.contains("invalid duration"));
    assert!(errs[3].message.contains("no upstream named \"missing\""));
}

#[test]
fn wrong_type_names_key_and_line() {
    let errs = parse_str("[server]\nthreads = \"two\"\n").unwrap_err().0;
    assert_eq!(errs.len(), 1);
    assert_eq!((errs[0].line, errs[0].key.as_str()), (2, "server.threads"));
    assert!(
        errs[0].message.contains("invalid type"),
        "{}",
        errs[0].message
    );
}

#[test]
fn unknown_keys_inside_inline_tables_are_found() {
    let src = format!("{MINIMAL}auth = {{ providr = \"x\" }}\n");
    let errs = parse_str(&src).unwrap_err().0;
    assert!(
        errs.iter().any(|e| e.key == "routes[0].auth.providr"),
        "{errs:#?}"
    );
}

#[test]
fn duplicate_names_and_bad_hosts_and_paths_are_errors() {
    let src = format!(
        "{MINIMAL}\n[[routes]]\nname = \"app\"\nupstream = \"app\"\nhosts = [\"bad host:80\"]\npaths = [\"api\", \"/a/../b\"]\nmethods = [\"G ET\"]\n"
    );
    let errs = parse_str(&src).unwrap_err().0;
    let keys: Vec<&str> = errs.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        keys,
        vec![
            "routes[1].name",
            "routes[1].hosts[0]",
            "routes[1].paths[0]",
            "routes[1].paths[1]",
            "routes[1].methods[0]"
        ]
    );
}

#[test]
fn trailing_slash_in_route_path_is_trimmed() {
    let src = MINIMAL.replace(
        "upstream = \"app\"\n",
        "upstream = \"app\"\npaths = [\"/api/\"]\n",
    );
    assert_eq!(parse_str(&src).unwrap().routes[0].paths, vec!["/api"]);
}

const OIDC: &str = r#"
[session]
secrets = ["0123456789abcdef0123456789abcdef"]

[[providers]]
name = "okta"
issuer = "https://dev-1.okta.com/oauth2/default"
client_id = "abc"
redirect_uri = "https://app.example.com/oauth2/callback"

[[upstreams]]
name = "app"
targets = ["127.0.0.1:3000"]

[[routes]]
name = "app"
upstream = "app"
auth = { provider = "okta" }
"#;

#[test]
fn providers_sessions_and_oidc_routes() {
    let c = parse_str(OIDC).unwrap();
    let Auth::Oidc(a) = &c.routes[0].auth else {
        panic!("not an OIDC route")
    };
    assert_eq!(a.providers, vec![ProviderId(0)]);
    assert_eq!(
        a.methods,
        vec![AuthMethod::Session, AuthMethod::AuthorizationCode]
    );
    let p = &c.providers[0];
    assert_eq!(p.callback_path, "/oauth2/callback");
    assert!(p.secure_cookies);
    assert_eq!(p.scopes, vec!["openid", "email", "profile"]);
    assert_eq!(
        p.upstream_access_token_header,
        Some((http::header::AUTHORIZATION, Some("Bearer".to_owned())))
    );
    let s = c.session.unwrap();
    assert_eq!(s.store, SessionStoreKind::Cookie);
    assert_eq!(s.idling_timeout, Duration::from_secs(900));
    // Authorizing reads a session's claims (and keeps them parsed) only if the route says so.
    assert!(!a.reads_claims());
    for extra in [
        r#"groups_required = ["admins"]"#,
        r#"consumer_claim = ["sub"]"#,
        r#"credential_claim = ["email"]"#,
    ] {
        let src = OIDC.replace(
            r#"auth = { provider = "okta" }"#,
            &format!(r#"auth = {{ provider = "okta", {extra} }}"#),
        );
        let c = parse_str(&src).unwrap();
        let Auth::Oidc(a) = &c.routes[0].auth else {
            panic!("not an OIDC route")
        };
        assert!(a.reads_claims(), "{extra}");
    }
}

#[test]
fn oidc_mistakes_are_reported() {
    let src = OIDC
        .replace("https://dev-1.okta.com", "http://dev-1.okta.com")
        .replace("0123456789abcdef0123456789abcdef", "short")
        .replace("provider = \"okta\"", "provider = \"auth0\"");
    let errs = parse_str(&src).unwrap_err().0;
    let keys: Vec<&str> = errs.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        keys,
        vec![
            "session.secrets[0]",
            "providers[0].issuer",
            "routes[0].auth.provider"
        ],
        "{errs:#?}"
    );
    assert!(errs[1].message.contains("must use https"));
    let no_session = OIDC.replace(
        "[session]\nsecrets = [\"0123456789abcdef0123456789abcdef\"]\n",
        "",
    );
    let errs = parse_str(&no_session).unwrap_err().0;
    assert!(
        errs[0]
            .message
            .contains("[session] with secrets is required"),
        "{errs:#?}"
    );
}

#[test]
fn blank_entries_in_rule_lists_are_errors_with_their_line() {
    let src = OIDC.replace(
        "auth = { provider = \"okta\" }",
        "auth = { provider = \"okta\", groups_required = [\"admins\", \" \"], scopes_required = [\"\"], roles_claim = [\"realm\", \"\"] }\n\
         [[consumers]]\nusername = \"u\"\ngroups = [\"\\t\"]",
    );
    let errs = parse_str(&src).unwrap_err().0;
    let keys: Vec<(&str, usize)> = errs.iter().map(|e| (e.key.as_str(), e.line)).collect();
    assert_eq!(
        keys,
        vec![
            ("routes[0].auth.groups_required[1]", 18),
            ("routes[0].auth.scopes_required[0]", 18),
            ("routes[0].auth.roles_claim[1]", 18),
            ("consumers[0].groups[0]", 21),
        ],
        "{errs:#?}"
    );
    assert!(errs[0].message.contains("blank entry"));
}

#[test]
fn server_header_lists_and_limits() {
    let c = parse_str(
        "[server]\nscrub_headers = [\"X-Tenant\"]\nkeep_headers = [\"X_User\"]\nrequest_header_timeout = \"3s\"\nmax_connections = 5\n",
    )
    .unwrap();
    assert_eq!(c.server.scrub_headers, vec!["x-tenant"]);
    assert_eq!(c.server.keep_headers, vec!["x_user"]);
    assert_eq!(c.server.request_header_timeout, Duration::from_secs(3));
    assert_eq!(c.server.max_connections, 5);
    assert!(
        c.warnings
            .iter()
            .all(|w| !w.key.contains("trusted_proxies"))
    );
    let c = parse_str("[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"0.0.0.0/0\", \"::/0\"]\n")
        .unwrap();
    let warned: Vec<String> = c
        .warnings
        .iter()
        .filter(|w| w.message.contains("trusts every address"))
        .map(|w| format!("{}:{}", w.line, w.key))
        .collect();
    assert_eq!(
        warned,
        ["2:server.trusted_proxies[1]", "2:server.trusted_proxies[2]"]
    );
    let errs = parse_str(
        "[server]\nh2_max_concurrent_streams = 0\nh2_max_header_list_size = 100\ntls_handshake_timeout = \"0s\"\n",
    )
    .unwrap_err()
    .0;
    let keys: Vec<&str> = errs.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "server.h2_max_concurrent_streams",
            "server.h2_max_header_list_size",
            "server.tls_handshake_timeout"
        ]
    );
    let errs = parse_str(
        "[server]\nkeep_headers = [\"X-Real-IP\", \"X-Tenant\", \"bad header\"]\nmax_connections = 0\n",
    )
    .unwrap_err()
    .0;
    let msgs: Vec<&str> = errs.iter().map(|e| e.message.as_str()).collect();
    assert!(msgs[0].contains("trusted_proxies"), "{msgs:?}");
    assert!(msgs[1].contains("nothing to keep"), "{msgs:?}");
    assert!(msgs[2].contains("invalid header name"), "{msgs:?}");
    assert!(msgs[3].contains("out of range"), "{msgs:?}");
}

#[test]
fn authorization_code_must_be_last_and_zero_durations_are_refused() {
    let src = OIDC
        .replace(
            "auth = { provider = \"okta\" }",
            "auth = { provider = \"okta\", methods = [\"authorization_code\", \"bearer\"] }",
        )
        .replace("[[upstreams]]", "[[upstreams]]\nread_timeout = \"0s\"");
    let errs = parse_str(&src).unwrap_err().0;
    let keys: Vec<&str> = errs.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        keys,
        vec!["upstreams[0].read_timeout", "routes[0].auth.methods"],
        "{errs:#?}"
    );
    assert!(errs[1].message.contains("must be the last method"));
}

#[test]
fn authorization_code_without_session_is_refused() {
    // Every sign-in would end in a session the route does not accept: a redirect loop.
    let src = OIDC.replace(
        "auth = { provider = \"okta\" }",
        "auth = { provider = \"okta\", methods = [\"bearer\", \"authorization_code\"] }",
    );
    let errs = parse_str(&src).unwrap_err().0;
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert_eq!(errs[0].key, "routes[0].auth.methods");
    assert!(errs[0].message.contains("add \"session\""), "{errs:#?}");
}

#[test]
fn preserve_post_needs_a_sign_in_and_a_server_side_store() {
    let on = OIDC.replace(
        "auth = { provider = \"okta\" }",
        "auth = { provider = \"okta\" }\npreserve_post = true",
    );
    let memory = on.replace("[session]\n", "[session]\nstore = \"memory\"\n");
    assert_eq!(
        parse_str(&memory).unwrap().routes[0].preserve_post,
        Some(64 * 1024)
    );
    let sized = memory.replace(
        "preserve_post = true",
        "preserve_post = true\npreserve_post_max_bytes = 4096",
    );
    assert_eq!(
        parse_str(&sized).unwrap().routes[0].preserve_post,
        Some(4096)
    );
    assert_eq!(parse_str(OIDC).unwrap().routes[0].preserve_post, None);

    let errs = parse_str(&on).unwrap_err().0;
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert_eq!(errs[0].key, "routes[0].preserve_post");
    assert!(errs[0].message.contains("store = \"memory\" or \"redis\""));
    let line = on
        .lines()
        .position(|l| l == "preserve_post = true")
        .unwrap()
        + 1;
    assert_eq!(errs[0].line, line);

    let bearer_only = memory.replace(
        "auth = { provider = \"okta\" }",
        "auth = { provider = \"okta\", methods = [\"bearer\"] }",
    );
    let errs = parse_str(&bearer_only).unwrap_err().0;
    assert!(errs[0].message.contains("authorization_code"), "{errs:#?}");

    let huge = sized.replace("= 4096", "= 2000000");
    let errs = parse_str(&huge).unwrap_err().0;
    assert_eq!(errs[0].key, "routes[0].preserve_post_max_bytes");
    let stray = memory.replace("preserve_post = true", "preserve_post_max_bytes = 10");
    let errs = parse_str(&stray).unwrap_err().0;
    assert!(
        errs[0].message.contains("without preserve_post"),
        "{errs:#?}"
    );
}

#[test]
fn tracing_is_off_by_default_and_checked_when_on() {
    assert_eq!(parse_str(MINIMAL).unwrap().tracing, None);
    let on = format!("{MINIMAL}\n[tracing]\notlp_endpoint = \"http://127.0.0.1:4318\"\n");
    let t = parse_str(&on).unwrap().tracing.unwrap();
    assert_eq!(
        t.otlp_endpoint, "http://127.0.0.1:4318/v1/traces",
        "a base address gets the traces path"
    );
    assert_eq!(
        (t.sample_ratio, t.service_name.as_str()),
        (1.0, "oidc-gateway")
    );
    let full = format!(
        "{MINIMAL}\n[tracing]\notlp_endpoint = \"https://otel.example.com/custom/traces\"\nsample_ratio = 0.25\nservice_name = \"edge\"\n"
    );
    let t = parse_str(&full).unwrap().tracing.unwrap();
    assert_eq!(t.otlp_endpoint, "https://otel.example.com/custom/traces");
    assert_eq!((t.sample_ratio, t.service_name.as_str()), (0.25, "edge"));

    let bad = format!("{MINIMAL}\n[tracing]\nsample_ratio = 1.5\n");
    let errs = parse_str(&bad).unwrap_err().0;
    let keys: Vec<&str> = errs.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        keys,
        ["tracing.otlp_endpoint", "tracing.sample_ratio"],
        "{errs:#?}"
    );
    let plain = format!("{MINIMAL}\n[tracing]\notlp_endpoint = \"http://otel.example.com:4318\"\n");
    let errs = parse_str(&plain).unwrap_err().0;
    assert!(errs[0].message.contains("must use https"), "{errs:#?}");
}

#[test]
fn loopback_http_is_allowed_for_development() {
    let src = OIDC
        .replace(
            "https://dev-1.okta.com/oauth2/default",
            "http://127.0.0.1:9000",
        )
        .replace("https://app.example.com", "http://localhost:8080");
    let c = parse_str(&src).unwrap();
    assert!(!c.providers[0].secure_cookies);
}

#[test]
fn invalid_toml_is_reported() {
    let errs = parse_str("[server\n").unwrap_err().0;
    assert_eq!(errs[0].line, 1);
    assert!(errs[0].message.starts_with("invalid TOML"));
}

#[test]
fn large_token_keys_are_read_and_their_mistakes_reported_with_their_line() {
    let c = parse_str(OIDC).unwrap();
    let s = c.session.as_ref().unwrap();
    assert_eq!(s.max_cookie_header_bytes, 8192);
    assert_eq!(c.providers[0].max_identity_header_bytes, 8192);
    assert_eq!(c.providers[0].groups_source, None);
    let set = |session: &str, provider: &str| {
        OIDC.replace(
            "secrets = [\"0123456789abcdef0123456789abcdef\"]\n",
            &format!("secrets = [\"0123456789abcdef0123456789abcdef\"]\n{session}\n"),
        )
        .replace(
            "client_id = \"abc\"\n",
            &format!("client_id = \"abc\"\n{provider}\n"),
        )
    };
    let c = parse_str(&set(
        "max_cookie_header_bytes = 0",
        "groups_source = \"https://graph.microsoft.com/v1.0/me/memberOf\"\nmax_identity_header_bytes = 0",
    ))
    .unwrap();
    assert_eq!(c.session.unwrap().max_cookie_header_bytes, 0);
    assert_eq!(
        c.providers[0].groups_source,
        Some(GroupsSource::Url(
            "https://graph.microsoft.com/v1.0/me/memberOf".into()
        ))
    );
    let c = parse_str(&set("", "groups_source = \"userinfo\"")).unwrap();
    assert_eq!(c.providers[0].groups_source, Some(GroupsSource::Userinfo));

    for (session, provider, key, says) in [
        (
            "max_cookie_header_bytes = 1000",
            "",
            "session.max_cookie_header_bytes",
            "at least 4096",
        ),
        (
            "",
            "max_identity_header_bytes = -1",
            "providers[0].max_identity_header_bytes",
            "out of range",
        ),
        (
            "",
            "groups_source = \"http://graph.example.com/groups\"",
            "providers[0].groups_source",
            "https",
        ),
        (
            "",
            "groups_source = \"userinfo\"\nuse_userinfo = false",
            "providers[0].groups_source",
            "use_userinfo",
        ),
    ] {
        let errs = parse_str(&set(session, provider)).unwrap_err().0;
        assert_eq!(errs.len(), 1, "{errs:#?}");
        assert_eq!(errs[0].key, key, "{errs:#?}");
        assert!(errs[0].line > 0, "{errs:#?}");
        assert!(errs[0].message.contains(says), "{errs:#?}");
    }
}

#[test]
fn dpop_and_pushed_authorization_requests_are_checked() {
    let base = "[session]\nsecrets = [\"dpop-config-secret-0123456789abcdef\"]\n\
        [[providers]]\nname = \"op\"\nissuer = \"https://idp.example.com\"\nclient_id = \"c\"\n\
        client_secret = \"s\"\nredirect_uri = \"https://app.example.com/oauth2/callback\"\n";
    let route = |provider_extra: &str, auth: &str| {
        format!(
            "{base}{provider_extra}\n[[upstreams]]\nname = \"a\"\ntargets = [\"127.0.0.1:1\"]\n\
             [[routes]]\nname = \"r\"\nupstream = \"a\"\nauth = {{ provider = \"op\", {auth} }}\n"
        )
    };
    let c = parse_str(&route("", "methods = [\"bearer\"], dpop = \"required\"")).unwrap();
    let Auth::Oidc(spec) = &c.routes[0].auth else {
        panic!("auth")
    };
    assert_eq!(spec.dpop, Some(Binding::Required));
    assert_eq!(c.providers[0].pushed_authorization_requests, Par::Auto);
    let c = parse_str(&route(
        "pushed_authorization_requests = \"off\"",
        "run_on_preflight = true",
    ))
    .unwrap();
    assert_eq!(c.providers[0].pushed_authorization_requests, Par::Off);
    for (text, key, says) in [
        (
            route("", "dpop = \"required\""),
            "routes[0].auth.dpop",
            "needs access tokens",
        ),
        (
            route("", "methods = [\"bearer\"], dpop = \"sometimes\""),
            "routes[0].auth.dpop",
            "expected \"allowed\" or \"required\"",
        ),
        (
            route(
                "pushed_authorization_requests = \"maybe\"",
                "run_on_preflight = true",
            ),
            "providers[0].pushed_authorization_requests",
            "expected \"auto\", \"required\" or \"off\"",
        ),
    ] {
        let err = parse_str(&text).unwrap_err().to_string();
        assert!(err.contains(key) && err.contains(says), "{err}");
        assert!(err.contains("test.toml:"), "{err}");
    }
}
