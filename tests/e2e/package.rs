//! The Debian package: `cargo deb` builds it (from the debug binary the test suite already has,
//! so CI builds nothing twice; `cargo deb` alone makes the release package), `dpkg-deb` shows
//! what it holds, its maintainer scripts run against a scratch root (`DPKG_ROOT`, which they
//! honour), `systemd-analyze verify` checks its unit, and the unit's own `ExecStartPre` and
//! `ExecStart` lines start the packaged binary as the package's service user (its uid) against
//! the real OpenID Provider until `/readyz` answers 200. Nothing outside temporary directories
//! is changed: the test checks the machine's `/etc/passwd` and `/etc/group` are as before.

use crate::support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use support::*;

/// Runs `cmd`, panicking with its output when it fails; its stdout.
fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Builds the package into `dir`; its path.
fn build_package(dir: &Path) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let probe = Command::new(&cargo).args(["deb", "--version"]).output();
    assert!(
        probe.is_ok_and(|o| o.status.success()),
        "cargo-deb is missing: scripts/install-test-deps installs it (cargo install cargo-deb --locked)"
    );
    run(Command::new(&cargo)
        .args([
            "deb",
            "--no-build",
            "--profile",
            "dev",
            "--fast",
            "--quiet",
            "-o",
        ])
        .arg(dir)
        .current_dir(env!("CARGO_MANIFEST_DIR")));
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .expect("a .deb")
}

/// `name`'s id in a passwd- or group-style file.
fn id_in(file: &Path, name: &str) -> Option<u32> {
    std::fs::read_to_string(file).ok()?.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.first() == Some(&name)).then(|| f.get(2)?.parse().ok())?
    })
}

/// Kills the daemon the PID file names when the test ends, also when it fails half-way.
struct StopDaemon(PathBuf);

impl Drop for StopDaemon {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(&self.0) {
            let _ = Command::new("kill").args(["-KILL", pid.trim()]).status();
        }
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[tokio::test(flavor = "multi_thread")]
async fn the_debian_package_installs_a_service_that_starts_and_gets_ready() {
    let machine_before = (
        std::fs::read("/etc/passwd").unwrap(),
        std::fs::read("/etc/group").unwrap(),
    );
    let work = tempfile::tempdir().unwrap();
    // The service user must be able to walk into the scratch root.
    std::fs::set_permissions(work.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let deb = build_package(&work.path().join("out"));

    // What it holds.
    let listing = run(Command::new("dpkg-deb").arg("-c").arg(&deb));
    for (mode, path) in [
        ("-rwxr-xr-x", "./usr/bin/oidc-gateway"),
        (
            "-rw-r--r--",
            "./usr/lib/systemd/system/oidc-gateway.service",
        ),
        ("-rw-r-----", "./etc/oidc-gateway/oidc-gateway.toml"),
        ("-rw-r-----", "./etc/default/oidc-gateway"),
        ("-rw-r--r--", "./usr/share/doc/oidc-gateway/README.md"),
        ("-rw-r--r--", "./usr/share/doc/oidc-gateway/operations.md"),
        (
            "-rw-r--r--",
            "./usr/share/doc/oidc-gateway/troubleshooting.md",
        ),
        ("-rw-r--r--", "./usr/share/doc/oidc-gateway/LICENSE"),
        ("-rw-r--r--", "./usr/share/doc/oidc-gateway/copyright"),
    ] {
        assert!(
            listing
                .lines()
                .any(|l| l.starts_with(mode) && l.ends_with(path)),
            "{mode} {path} in:\n{listing}"
        );
    }
    let info = run(Command::new("dpkg-deb").arg("-I").arg(&deb));
    for part in ["Package: oidc-gateway", "postinst", "postrm", "conffiles"] {
        assert!(info.contains(part), "{part} in:\n{info}");
    }
    let conffiles = run(Command::new("dpkg-deb")
        .arg("-I")
        .arg(&deb)
        .arg("conffiles"));
    assert_eq!(
        conffiles.lines().collect::<Vec<_>>(),
        [
            "/etc/oidc-gateway/oidc-gateway.toml",
            "/etc/default/oidc-gateway"
        ]
    );

    // Unpacked into a scratch root with the base system's account files.
    let root = work.path().join("root");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root));
    let control = work.path().join("control");
    run(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&control));
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
    for (file, line) in [
        ("passwd", "root:x:0:0:root:/root:/bin/sh\n"),
        ("group", "root:x:0:\n"),
        ("shadow", "root:*:19000:0:99999:7:::\n"),
        ("gshadow", "root:*::\n"),
    ] {
        std::fs::write(root.join("etc").join(file), line).unwrap();
    }
    let script = |name: &str, arg: &str| {
        run(Command::new(control.join(name))
            .arg(arg)
            .env("DPKG_ROOT", &root));
    };
    script("postinst", "configure");
    let uid = id_in(&root.join("etc/passwd"), "oidc-gateway").expect("the service user");
    let gid = id_in(&root.join("etc/group"), "oidc-gateway").expect("its group");
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
    assert!(
        passwd.contains(":/nonexistent:/usr/sbin/nologin"),
        "{passwd}"
    );
    use std::os::unix::fs::MetadataExt;
    for (path, want) in [
        ("etc/oidc-gateway", 0o750),
        ("etc/oidc-gateway/oidc-gateway.toml", 0o640),
        ("etc/default/oidc-gateway", 0o640),
    ] {
        let p = root.join(path);
        assert_eq!(mode(&p), want, "{path}");
        assert_eq!(std::fs::metadata(&p).unwrap().gid(), gid, "{path}");
    }
    // Running it again (an upgrade) changes nothing.
    script("postinst", "configure");
    assert_eq!(
        std::fs::read_to_string(root.join("etc/passwd")).unwrap(),
        passwd
    );

    // The unit, as systemd reads it (the binary at its unpacked path).
    let unit =
        std::fs::read_to_string(root.join("usr/lib/systemd/system/oidc-gateway.service")).unwrap();
    for required in [
        "User=oidc-gateway",
        "StateDirectory=oidc-gateway",
        "EnvironmentFile=-/etc/default/oidc-gateway",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "Documentation=file:///usr/share/doc/oidc-gateway/operations.md",
    ] {
        assert!(unit.contains(required), "unit lacks {required}");
    }
    for doc in unit
        .lines()
        .filter_map(|l| l.strip_prefix("Documentation=file://"))
    {
        assert!(root.join(&doc[1..]).is_file(), "{doc} is not installed");
    }
    let bin = root.join("usr/bin/oidc-gateway");
    let etc = root.join("etc/oidc-gateway");
    let verify_dir = work.path().join("verify");
    std::fs::create_dir(&verify_dir).unwrap();
    std::fs::write(
        verify_dir.join("oidc-gateway.service"),
        unit.replace("/usr/bin/oidc-gateway", &bin.display().to_string()),
    )
    .unwrap();
    let verified = Command::new("systemd-analyze")
        .arg("verify")
        .arg(verify_dir.join("oidc-gateway.service"))
        .output()
        .expect("systemd-analyze (Debian package systemd)");
    assert!(
        verified.status.success() && verified.stderr.is_empty(),
        "systemd-analyze verify:\n{}",
        String::from_utf8_lossy(&verified.stderr)
    );
    // ExecReload checks the new configuration before anything else.
    let reloads: Vec<&str> = unit
        .lines()
        .filter_map(|l| l.strip_prefix("ExecReload="))
        .collect();
    assert!(reloads[0].contains(" check "), "{reloads:?}");

    // The unit's ExecStartPre and ExecStart, as the service user, with a configuration for the
    // real OP in the packaged places and the secret in /etc/default/oidc-gateway.
    let (port, metrics) = (free_port(), free_port());
    let origin = format!("http://127.0.0.1:{port}");
    let op = RealOp::start(&op_config(&origin, 3600));
    let state = work.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::os::unix::fs::chown(&state, Some(uid), Some(gid)).unwrap();
    std::fs::write(
        etc.join("oidc-gateway.toml"),
        format!(
            "[server]\nlisten = [\"127.0.0.1:{port}\"]\npid_file = \"{s}/oidc-gateway.pid\"\n\
             upgrade_socket = \"{s}/upgrade.sock\"\nstate_dir = \"{s}/lib\"\ngrace_period = \"1s\"\n\
             [metrics]\nlisten = \"127.0.0.1:{metrics}\"\n\
             [session]\nsecrets = [\"${{SESSION_SECRET}}\"]\n\
             [[providers]]\nname = \"op\"\nissuer = \"{issuer}\"\nclient_id = \"gateway\"\n\
             client_secret = \"${{OP_CLIENT_SECRET}}\"\nredirect_uri = \"{origin}/oauth2/callback\"\n\
             [[upstreams]]\nname = \"app\"\ntargets = [\"127.0.0.1:9\"]\n\
             [[routes]]\nname = \"app\"\nupstream = \"app\"\nauth = {{ provider = \"op\" }}\n",
            s = state.display(),
            issuer = op.issuer,
        ),
    )
    .unwrap();
    std::fs::write(
        root.join("etc/default/oidc-gateway"),
        "SESSION_SECRET=package-test-session-secret-0123456789abcdef\n\
         OP_CLIENT_SECRET=gateway-secret-0123456789\n",
    )
    .unwrap();
    let env: Vec<(String, String)> = std::fs::read_to_string(root.join("etc/default/oidc-gateway"))
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect();
    let as_service = |line: &str| {
        let line = line
            .replace("/usr/bin/oidc-gateway", &bin.display().to_string())
            .replace("/etc/oidc-gateway", &etc.display().to_string());
        let mut cmd = Command::new("setpriv");
        cmd.args([
            &format!("--reuid={uid}"),
            &format!("--regid={gid}"),
            "--clear-groups",
            "sh",
            "-c",
            &line,
        ])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("RUST_LOG", "info");
        cmd
    };
    let _stop = StopDaemon(state.join("oidc-gateway.pid"));
    // systemd gives the service no terminal: a daemon that kept a pipe open would otherwise
    // keep this test waiting for its end.
    let log = work.path().join("service.log");
    for key in ["ExecStartPre=", "ExecStart="] {
        for line in unit.lines().filter_map(|l| l.strip_prefix(key)) {
            let out = std::fs::File::create(&log).unwrap();
            let status = as_service(line)
                .stdout(out.try_clone().unwrap())
                .stderr(out)
                .status()
                .unwrap();
            assert!(
                status.success(),
                "{line}:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
    }
    let pid_file = state.join("oidc-gateway.pid");
    let deadline = Instant::now() + Duration::from_secs(20);
    let ready = loop {
        let r = client()
            .get(format!("http://127.0.0.1:{metrics}/readyz"))
            .send()
            .await;
        if let Ok(r) = r
            && r.status() == 200
        {
            break r.text().await.unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "not ready:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(ready.contains("\"ready\":true"), "{ready}");
    // It runs as the service user.
    let pid = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .to_owned();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let real_uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().next())
        .unwrap();
    assert_eq!(real_uid, uid.to_string());
    // A sign-in starts (the provider is discovered through the package's own binary).
    let r = client()
        .get(format!("{origin}/x"))
        .header("Accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    run(Command::new("kill").args(["-TERM", &pid]));
    let deadline = Instant::now() + Duration::from_secs(10);
    while Path::new(&format!("/proc/{pid}")).exists() {
        assert!(Instant::now() < deadline, "the daemon did not stop");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Purging removes the state it kept, and nothing else.
    std::fs::create_dir_all(root.join("var/lib/oidc-gateway/providers")).unwrap();
    script("postrm", "purge");
    assert!(!root.join("var/lib/oidc-gateway").exists());
    assert!(root.join("usr/bin/oidc-gateway").exists());

    assert_eq!(
        (
            std::fs::read("/etc/passwd").unwrap(),
            std::fs::read("/etc/group").unwrap()
        ),
        machine_before,
        "the machine's accounts are as before"
    );
}
