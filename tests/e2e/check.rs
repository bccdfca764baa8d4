//! `oidc-gateway check`: exit codes and messages, run as a user would.

use crate::support;

use std::process::Command;
use support::BIN;

fn check(config: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.toml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_valid_config_passes_with_a_summary() {
    let (code, out, _) = check(
        "[[upstreams]]\nname = \"a\"\ntargets = [\"127.0.0.1:3000\"]\n[[routes]]\nname = \"r\"\nupstream = \"a\"\n",
    );
    assert_eq!(code, 0);
    assert!(
        out.contains("ok (1 route, 1 upstream, 1 target, 1 listener)"),
        "{out}"
    );
}

#[test]
fn every_error_is_printed_with_file_line_and_key() {
    let config = r#"[server]
listen = ["127.0.0.1:8080"]
colour = "blue"

[[upstreams]]
name = "app"
targets = ["300.0.0.1:99999"]
read_timeout = "soon"

[[routes]]
name = "app"
upstream = "nope"
"#;
    let (code, _, err) = check(config);
    assert_eq!(code, 1, "{err}");
    for expected in [
        "gw.toml:3:1: server.colour: unknown key",
        "gw.toml:7:12: upstreams[0].targets[0]: invalid address \"300.0.0.1:99999\"",
        "gw.toml:8:16: upstreams[0].read_timeout: invalid duration \"soon\"",
        "gw.toml:12:12: routes[0].upstream: no upstream named \"nope\"",
        "4 error(s)",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
}

#[test]
fn a_missing_file_is_a_clear_error() {
    let out = Command::new(BIN)
        .args(["check", "--config", "/nonexistent/gw.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("/nonexistent/gw.toml: cannot read the file")
    );
}

/// Every `.toml` under `conf/` and `docs/` (recursively) passes `check`. `${VAR}` secrets are
/// given dummy values, as an operator's environment would.
#[test]
fn shipped_configs_pass_check() {
    fn tomls(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() {
                tomls(&path, out);
            } else if path.extension().is_some_and(|x| x == "toml") {
                out.push(path);
            }
        }
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    tomls(&root.join("conf"), &mut files);
    tomls(&root.join("docs"), &mut files);
    assert!(!files.is_empty(), "no shipped config found");
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        let mut cmd = Command::new(BIN);
        cmd.args(["check", "--config"]).arg(&path);
        let mut rest = text.as_str();
        while let Some(at) = rest.find("${") {
            let tail = &rest[at + 2..];
            let Some(end) = tail.find('}') else { break };
            cmd.env(
                &tail[..end],
                "dummy-secret-value-for-check-0123456789abcdef",
            );
            rest = &tail[end..];
        }
        let out = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{}: {err}", path.display());
        // What we ship as an example is also what we recommend: no warning either.
        assert!(!err.contains("warning"), "{}: {err}", path.display());
    }
}

#[test]
fn a_blank_rule_entry_is_an_error_not_a_rule_that_requires_nothing() {
    let (code, _, err) = check(
        r#"[session]
secrets = ["0123456789abcdef0123456789abcdef"]
[[providers]]
name = "okta"
issuer = "https://dev-1.okta.com/oauth2/default"
client_id = "abc"
redirect_uri = "https://app.example.com/oauth2/callback"
[[upstreams]]
name = "a"
targets = ["127.0.0.1:3000"]
[[routes]]
name = "r"
upstream = "a"
auth = { provider = "okta", groups_required = [" "] }
"#,
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("gw.toml:14")
            && err.contains("routes[0].auth.groups_required[0]")
            && err.contains("blank entry"),
        "{err}"
    );
}

#[test]
fn trusting_every_address_as_a_proxy_is_warned_about() {
    let (code, out, err) = check(
        "[server]\ntrusted_proxies = [\"0.0.0.0/0\", \"::/0\"]\n[[upstreams]]\nname = \"a\"\ntargets = [\"127.0.0.1:3000\"]\n[[routes]]\nname = \"r\"\nupstream = \"a\"\n",
    );
    assert_eq!(code, 0, "a warning, not an error: {err}");
    let all = format!("{out}{err}");
    for key in ["server.trusted_proxies[0]", "server.trusted_proxies[1]"] {
        assert!(
            all.contains("gw.toml:2:") && all.contains(key),
            "{key}: {all}"
        );
    }
    assert!(all.contains("trusts every address"), "{all}");
}

/// Runs the binary with `args` and a config listening on `port` (metrics on `metrics`); its
/// exit status and output, or a panic if it is still running after 10 s.
fn run_until_exit(args: &[&str], port: u16, metrics: u16) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gw.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = [\"127.0.0.1:{port}\"]\npid_file = \"{d}/gw.pid\"\n\
             upgrade_socket = \"{d}/up.sock\"\n[metrics]\nlisten = \"127.0.0.1:{metrics}\"\n\
             [[upstreams]]\nname = \"a\"\ntargets = [\"127.0.0.1:3000\"]\n\
             [[routes]]\nname = \"r\"\nupstream = \"a\"\n",
            d = dir.path().display()
        ),
    )
    .unwrap();
    exit_within(Command::new(BIN).args(args).arg("--config").arg(&config))
}

/// Runs `cmd` to its end; its exit status and output, or a panic (the process killed) if it is
/// still running after 10 s.
fn exit_within(cmd: &mut Command) -> (i32, String) {
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            return (status.code().unwrap_or(-1), text);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("still running after 10 s: {cmd:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn a_port_in_use_is_an_error_that_names_it_and_its_holder() {
    // Pingora retries a port in use for ever; with --daemon the parent exited 0 and /healthz
    // answered while nothing listened on the port.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let metrics = support::free_port();
    for args in [&["run"][..], &["run", "--daemon"]] {
        let (code, out) = run_until_exit(args, port, metrics);
        assert_ne!(code, 0, "{args:?}: {out}");
        assert!(
            out.contains(&format!("cannot listen on 127.0.0.1:{port}"))
                && out.contains(&format!("held by pid {}", std::process::id())),
            "{args:?}: {out}"
        );
    }
    // The metrics listener too.
    let free = support::free_port();
    let (code, out) = run_until_exit(&["run"], free, port);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains(&format!("127.0.0.1:{port}")), "{out}");
    drop(held);
}

#[test]
fn the_demo_does_not_invite_anyone_to_a_port_another_server_holds() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let free = || support::free_port().to_string();
    let (code, text) = exit_within(
        Command::new(BIN)
            .args(["demo", "--port", &port.to_string(), "--idp-port", &free()])
            .args(["--upstream-port", &free(), "--metrics-port", &free()]),
    );
    assert_ne!(code, 0, "{text}");
    assert!(
        text.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{text}"
    );
    assert!(!text.contains("open http"), "{text}");
}

#[test]
fn a_target_written_as_a_url_is_told_to_drop_the_scheme() {
    // It used to fail with "Name or service not known": "http" looked like a host name.
    let (code, _, err) = check(
        "[[upstreams]]\nname = \"a\"\ntargets = [\"http://127.0.0.1:21001\"]\n[[routes]]\nname = \"r\"\nupstream = \"a\"\n",
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("gw.toml:3:12: upstreams[0].targets[0]")
            && err.contains("drop the scheme (http://)")
            && err.contains("\"127.0.0.1:21001\""),
        "{err}"
    );
}

#[test]
fn configuration_from_the_environment_as_containers_pass_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = [\"127.0.0.1:1\"]\npid_file = \"{d}/gw.pid\"\nupgrade_socket = \"{d}/up.sock\"\n\
             [metrics]\nlisten = \"\"\n\
             [session]\nsecrets = [\"${{SESSION_SECRET}}\"]\n\
             [[providers]]\nname = \"op\"\nissuer = \"https://idp.example.com\"\nclient_id = \"gw\"\n\
             redirect_uri = \"https://app.example.com/oauth2/callback\"\n\
             [[upstreams]]\nname = \"a\"\ntargets = [\"127.0.0.1:3000\"]\n\
             [[routes]]\nname = \"r\"\nupstream = \"a\"\n",
            d = dir.path().display()
        ),
    )
    .unwrap();
    let port = support::free_port();
    let env = [
        ("OIDC_GATEWAY_CONFIG", path.to_str().unwrap().to_owned()),
        (
            "SESSION_SECRET",
            "session-secret-from-env-0123456789abcdef".to_owned(),
        ),
        (
            "OIDC_GATEWAY__SERVER__LISTEN",
            format!("[\"127.0.0.1:{port}\"]"),
        ),
        ("OIDC_GATEWAY__SERVER__MAX_CONNECTIONS", "7".to_owned()),
        (
            "OIDC_GATEWAY__PROVIDERS__0__CLIENT_SECRET",
            "literal-client-secret-value".to_owned(),
        ),
    ];
    // `check` finds the file through OIDC_GATEWAY_CONFIG and prints what is in effect, with
    // the secret masked and the variable reference kept.
    let out = Command::new(BIN)
        .args(["check", "--print-effective"])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!("listen = [\"127.0.0.1:{port}\"]")),
        "{text}"
    );
    assert!(text.contains("max_connections = 7"), "{text}");
    assert!(text.contains("client_secret = \"***\""), "{text}");
    assert!(text.contains("secrets = [\"${SESSION_SECRET}\"]"), "{text}");
    assert!(!text.contains("literal-client-secret-value"), "{text}");
    assert!(text.contains("3 keys from the environment"), "{text}");

    // A bad value names the variable that set it.
    let out = Command::new(BIN)
        .arg("check")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("OIDC_GATEWAY__SERVER__MAX_CONNECTIONS", "0")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("server.max_connections")
            && err.contains("(set by OIDC_GATEWAY__SERVER__MAX_CONNECTIONS)"),
        "{err}"
    );
    let out = Command::new(BIN)
        .arg("check")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("OIDC_GATEWAY__PROVIDERS__3__CLIENT_ID", "x")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "OIDC_GATEWAY__PROVIDERS__3__CLIENT_ID: there is 1 [[providers]] entry, so no index 3"
        ),
        "{err}"
    );

    // `run` reads the same: it listens where the environment says.
    let mut gw = Command::new(BIN)
        .arg("run")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "not listening on {port}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = gw.kill();
    let _ = gw.wait();
}
