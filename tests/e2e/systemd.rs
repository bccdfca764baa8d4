//! The systemd unit's own commands, run in order as systemd would run them (no systemd in CI):
//! ExecStart daemonizes and writes the PID file; ExecReload checks the config and starts the
//! upgrade process, which gets ready (discovers the provider), then sends SIGQUIT to the process
//! the PID file names and takes over its sockets and the PID file.

use crate::support;

use std::process::Command;
use std::time::{Duration, Instant};
use support::*;

fn unit_commands(key: &str) -> Vec<String> {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/conf/oidc-gateway.service"
    ))
    .unwrap();
    unit.lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(str::to_owned)
        .collect()
}

fn read_pid(path: &std::path::Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn alive(pid: u32) -> bool {
    Command::new("kill")
        .args(["-0", &pid.to_string()])
        .status()
        .unwrap()
        .success()
}

#[tokio::test(flavor = "multi_thread")]
async fn unit_start_and_reload_hand_over_without_failures() {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/conf/oidc-gateway.service"
    ))
    .unwrap();
    for required in [
        "Type=forking",
        "PIDFile=",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "CAP_NET_BIND_SERVICE",
        "User=oidc-gateway",
    ] {
        assert!(unit.contains(required), "unit lacks {required}");
    }

    let up = TestUpstream::start("a");
    let idp = HostileOp::start(Attack::None);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let provider = Toml::new()
        .session("systemd-test-session-secret-0123456789abcdef", "")
        .provider(
            "p",
            &idp.issuer,
            "s",
            &format!("http://127.0.0.1:{port}"),
            "",
        )
        .route(
            "api",
            &["/api"],
            "a",
            "provider = \"p\", methods = [\"bearer\"]",
            "",
        )
        .build();
    let pid_file = dir.path().join("gw.pid");
    let config = dir.path().join("gw.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = [\"127.0.0.1:{port}\"]\ngrace_period = \"1s\"\nshutdown_timeout = \"1s\"\npid_file = \"{}\"\nupgrade_socket = \"{}\"\n[metrics]\nlisten = \"\"\n\
             [[upstreams]]\nname = \"a\"\ntargets = [\"{}\"]\n{provider}[[routes]]\nname = \"r\"\nupstream = \"a\"\n",
            pid_file.display(),
            dir.path().join("upgrade.sock").display(),
            up.address()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.path().join("daemon.log")).unwrap();
    let run = |cmd: &str, main_pid: Option<u32>| {
        let cmd = cmd
            .replace("/usr/bin/oidc-gateway", BIN)
            .replace(
                "/etc/oidc-gateway/oidc-gateway.toml",
                &config.display().to_string(),
            )
            .replace(
                "$MAINPID",
                &main_pid.map(|p| p.to_string()).unwrap_or_default(),
            );
        let status = Command::new("sh")
            .arg("-c")
            .arg(&cmd)
            .stdout(log.try_clone().unwrap())
            .stderr(log.try_clone().unwrap())
            .status()
            .unwrap();
        assert!(status.success(), "`{cmd}` failed");
    };

    for cmd in unit_commands("ExecStartPre")
        .iter()
        .chain(&unit_commands("ExecStart"))
    {
        run(cmd, None);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let first = loop {
        if let Some(pid) = read_pid(&pid_file)
            && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        {
            break pid;
        }
        assert!(Instant::now() < deadline, "daemon did not start");
        std::thread::sleep(Duration::from_millis(50));
    };

    let now = unix_now();
    let token = mint(
        &serde_json::json!({"iss": idp.issuer, "sub": "alice", "aud": "gateway", "exp": now + 600, "iat": now}),
        "key1",
    );
    let origin = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while fresh_client()
        .get(format!("{origin}/api"))
        .bearer_auth(&token)
        .send()
        .await
        .map(|r| r.status())
        .ok()
        != Some(reqwest::StatusCode::OK)
    {
        assert!(
            Instant::now() < deadline,
            "the provider was never discovered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A slow provider from now on: the new process's discovery takes about 2 s. It must not
    // take the sockets over before it has finished (bearer requests would then wait for it).
    idp.set_delay_ms(1000);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let load = tokio::spawn(async move {
        let client = fresh_client();
        let (mut ok, mut failed, mut slowest) = (0u32, Vec::new(), Duration::ZERO);
        let mut n = 0u32;
        while !stop2.load(std::sync::atomic::Ordering::SeqCst) {
            n += 1;
            let req = if n.is_multiple_of(2) {
                client.get(format!("{origin}/api")).bearer_auth(&token)
            } else {
                client.get(format!("{origin}/"))
            };
            let t0 = Instant::now();
            match req.send().await {
                Ok(r) if r.status() == 200 => ok += 1,
                Ok(r) => failed.push(format!("status {}", r.status())),
                Err(e) => failed.push(e.to_string()),
            }
            slowest = slowest.max(t0.elapsed());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        (ok, failed, slowest)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    tokio::task::block_in_place(|| {
        for cmd in unit_commands("ExecReload") {
            run(&cmd, Some(first));
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let second = loop {
        if let Some(pid) = read_pid(&pid_file).filter(|&p| p != first)
            && !alive(first)
        {
            break pid;
        }
        assert!(
            Instant::now() < deadline,
            "reload did not replace the main process"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (ok, failed, slowest) = load.await.unwrap();
    assert!(alive(second), "the new main process died");
    let _ = Command::new("kill")
        .args(["-TERM", &second.to_string()])
        .status();
    assert!(
        failed.is_empty(),
        "{failed:?}\n{}",
        std::fs::read_to_string(dir.path().join("daemon.log")).unwrap_or_default()
    );
    assert!(ok > 50, "only {ok} requests");
    assert!(
        slowest < Duration::from_millis(900),
        "a request waited {slowest:?}: the new process took over before it was ready"
    );
    let log = std::fs::read_to_string(dir.path().join("daemon.log")).unwrap_or_default();
    assert!(log.contains("ready: taking over"), "{log}");
}
