//! Runs the real `oidc-gateway` binary on free loopback ports with a generated config.

use std::io::Read;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Path of the binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_oidc-gateway");

/// A free TCP port on 127.0.0.1 for a process the test starts, which binds it a moment later.
///
/// Not `bind(0)`: the kernel hands a just-released port out again, so two tests running in
/// parallel could both be given it (seen in CI: one test's login landed on another's metrics
/// listener). Instead each test process counts through its own window of ports below the
/// kernel's ephemeral range (32768+, where `bind(0)` and outgoing connections take theirs),
/// never handing a port out twice, and checks each is free.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = (std::process::id() % 60) * 200;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        assert!(n < SPAN, "ran out of test ports");
        let port = (FIRST + (start + n) % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A running gateway process.
pub struct GatewayProcess {
    /// Proxy port.
    pub port: u16,
    /// Metrics listener port.
    pub metrics_port: u16,
    /// The config file it runs with.
    pub config_path: PathBuf,
    /// Scratch directory (config, pid file, upgrade socket, logs).
    pub dir: std::sync::Arc<tempfile::TempDir>,
    child: Child,
    log_path: PathBuf,
}

/// Settings for [`GatewayProcess::start`].
pub struct GatewayOptions<'a> {
    /// Everything after `[server]` and `[metrics]`: upstreams, routes, ...
    pub body: &'a str,
    /// Extra lines inside `[server]`.
    pub server_extra: &'a str,
    /// `server.grace_period`.
    pub grace_period: &'a str,
    /// Proxy port (a free one when `None`).
    pub port: Option<u16>,
    /// Extra environment variables for the process.
    pub env: &'a [(&'a str, &'a str)],
    /// Extra arguments after `run --config FILE`.
    pub args: &'a [&'a str],
}

impl Default for GatewayOptions<'_> {
    fn default() -> Self {
        GatewayOptions {
            body: "",
            server_extra: "",
            grace_period: "1s",
            port: None,
            env: &[],
            args: &[],
        }
    }
}

impl GatewayProcess {
    /// Starts the gateway with `body` (upstreams and routes) and default server settings.
    pub fn start(body: &str) -> GatewayProcess {
        Self::start_with(GatewayOptions {
            body,
            ..Default::default()
        })
    }

    /// Starts a gateway with `body` on `port` (the origin its providers' redirect URIs name),
    /// and waits until a browser asking for `protected` is sent to sign in: discovery is done.
    pub async fn start_discovered(body: &str, port: u16, protected: &str) -> GatewayProcess {
        let gw = GatewayProcess::start_with(GatewayOptions {
            body,
            port: Some(port),
            ..Default::default()
        });
        gw.wait_discovered(protected).await;
        gw
    }

    /// Starts the gateway and waits until its proxy port accepts connections.
    pub fn start_with(opts: GatewayOptions<'_>) -> GatewayProcess {
        let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
        let port = opts.port.unwrap_or_else(free_port);
        let metrics_port = free_port();
        let config = format!(
            "[server]\nlisten = [\"127.0.0.1:{port}\"]\nthreads = 2\ngrace_period = \"{grace}\"\nshutdown_timeout = \"1s\"\n\
             pid_file = \"{d}/gw.pid\"\nupgrade_socket = \"{d}/upgrade.sock\"\n{extra}\n\n[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n\n{body}\n",
            grace = opts.grace_period,
            d = dir.path().display(),
            extra = opts.server_extra,
            body = opts.body,
        );
        let config_path = dir.path().join("gateway.toml");
        std::fs::write(&config_path, config).unwrap();
        let log_path = dir.path().join("gateway-1.log");
        let child = spawn(&config_path, &log_path, opts.args, opts.env);
        let mut gw = GatewayProcess {
            port,
            metrics_port,
            config_path,
            dir,
            child,
            log_path,
        };
        gw.wait_listening();
        gw
    }

    /// Starts a second process with the same config and `--upgrade`: it waits for this one's
    /// sockets, which it gets when this one receives SIGQUIT.
    pub fn start_upgrade(&self) -> GatewayProcess {
        let log_path = (2..)
            .map(|n| self.dir.path().join(format!("gateway-{n}.log")))
            .find(|p| !p.exists())
            .unwrap();
        let child = spawn(&self.config_path, &log_path, &["--upgrade"], &[]);
        GatewayProcess {
            port: self.port,
            metrics_port: self.metrics_port,
            config_path: self.config_path.clone(),
            dir: self.dir.clone(),
            child,
            log_path,
        }
    }

    fn wait_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("gateway exited early ({status}):\n{}", self.log());
            }
            let ok = |p: u16| TcpStream::connect(("127.0.0.1", p)).is_ok();
            if ok(self.port) && ok(self.metrics_port) {
                return;
            }
            if Instant::now() > deadline {
                panic!("gateway did not start listening:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// `http://127.0.0.1:port{path}`
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (`TERM`, `QUIT`, ...).
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(ok.success(), "kill -{sig} failed");
    }

    /// Whether the process has exited.
    pub fn has_exited(&mut self) -> bool {
        self.child.try_wait().unwrap().is_some()
    }

    /// Waits for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Everything the process has logged so far.
    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log_path) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// The log once it contains every one of `needles` (lines are flushed ten times a second),
    /// or what it holds after five seconds.
    pub fn log_containing(&self, needles: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let log = self.log();
            if needles.iter().all(|n| log.contains(n)) || Instant::now() > deadline {
                return log;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits (up to 20 s) until a browser asking for `path`, on a protected route, is sent to
    /// sign in: the provider's discovery, which runs in the background, is done.
    pub async fn wait_discovered(&self, path: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let r = crate::support::client()
                .get(self.url(path))
                .header("Accept", "text/html")
                .send()
                .await
                .unwrap();
            if r.status() == 302 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "never discovered:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The metrics listener's `/readyz`: status and body.
    pub async fn readyz(&self) -> (u16, String) {
        let r = reqwest::get(format!("http://127.0.0.1:{}/readyz", self.metrics_port))
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// Moves the gateway's clock `seconds` forward (the `testing` build's `POST /test/clock`):
    /// sessions idle out and access tokens expire without the test sleeping for them.
    pub async fn advance_clock(&self, seconds: u64) {
        let r = reqwest::Client::new()
            .post(format!(
                "http://127.0.0.1:{}/test/clock?advance={seconds}",
                self.metrics_port
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            200,
            "the gateway was built without the testing feature"
        );
    }

    /// The metrics listener's `/metrics` text.
    pub async fn metrics(&self) -> String {
        reqwest::get(format!("http://127.0.0.1:{}/metrics", self.metrics_port))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(
    config: &std::path::Path,
    log: &std::path::Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> Child {
    let out = std::fs::File::create(log).unwrap();
    let err = out.try_clone().unwrap();
    let mut cmd = Command::new(BIN);
    cmd.arg("run").arg("--config").arg(config).args(args);
    cmd.env("RUST_LOG", "info")
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err));
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn oidc-gateway")
}

/// Value of a Prometheus sample line such as `name{a="b"} 3`, if present.
pub fn metric_value(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        l.strip_prefix(series)
            .and_then(|rest| rest.trim().parse().ok())
    })
}
