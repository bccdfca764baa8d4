//! The processes a run starts (nginx, the gateway, the bare Pingora proxy) and their ports.

use super::*;

/// `N` distinct free ports: each is held until all are chosen, as the kernel may hand a
/// just-released port out again.
pub fn free_ports<const N: usize>() -> [u16; N] {
    let held: Vec<std::net::TcpListener> = (0..N)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    std::array::from_fn(|i| held[i].local_addr().unwrap().port())
}

/// Panics, naming the Debian package, when `tool` is not installed.
pub fn require(tool: &str, package: &str) {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "{tool} is required (Debian package {package}; scripts/install-test-deps installs the \
         ones the tests need)"
    );
}

pub fn wait_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} did not start on port {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Stops its process when dropped, so an assertion never leaves servers behind. SIGTERM first:
/// an nginx master killed outright would leave its workers running.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn spawn(cmd: &mut Command, log: &Path) -> Proc {
    let out = std::fs::File::create(log).unwrap();
    Proc(
        cmd.stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out))
            .spawn()
            .unwrap(),
    )
}

#[derive(Default)]
pub struct Ports {
    pub upstream: u16,
    pub nginx: u16,
    pub bare: u16,
    pub bare2: u16,
    pub gateway: u16,
    pub idp: u16,
    pub metrics: u16,
    pub gateway2: u16,
    pub metrics2: u16,
}

/// Two nginx: the upstream every proxy forwards to, and nginx as a plain keep-alive reverse
/// proxy (the baseline). Separate processes, so the proxy's CPU can be counted on its own.
pub fn start_nginx(dir: &Path, p: &Ports) -> [Proc; 2] {
    let upstream = format!(
        r#"server {{ listen 127.0.0.1:{up}; location / {{ return 200 "hello from the upstream\n"; }} }}"#,
        up = p.upstream
    );
    let proxy = format!(
        r#"upstream backend {{ server 127.0.0.1:{up}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{px};
    location / {{ proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; }}
  }}"#,
        up = p.upstream,
        px = p.nginx
    );
    [("upstream", upstream), ("proxy", proxy)].map(|(name, http)| run_nginx(dir, name, &http))
}

/// nginx (2 workers, no access log) in its own directory `dir/nginx-NAME`, with `http` as the
/// contents of its `http` block.
pub fn run_nginx(dir: &Path, name: &str, http: &str) -> Proc {
    let d = dir.join(format!("nginx-{name}"));
    std::fs::create_dir_all(&d).unwrap();
    let conf = format!(
        r#"daemon off;
worker_processes 2;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  {http}
}}
"#,
        d = d.display()
    );
    let path = d.join("nginx.conf");
    std::fs::write(&path, conf).unwrap();
    spawn(
        Command::new("nginx").arg("-c").arg(&path).arg("-p").arg(&d),
        &d.join("nginx.log"),
    )
}

pub fn gateway_config(dir: &Path, p: &Ports, store: &str) -> String {
    format!(
        r#"[server]
listen = ["127.0.0.1:{gw}"]
pid_file = "{dir}/gw.pid"
upgrade_socket = "{dir}/gw.sock"
grace_period = "1s"
# The logins row signs in hundreds of times from one address: per-client limits are for
# anonymous clients, not for a load generator.
login_rate_limit = 0

[metrics]
listen = "127.0.0.1:{metrics}"

[session]
store = "{store}"
secrets = ["{SESSION_SECRET}"]

[[providers]]
name = "dev"
issuer = "http://127.0.0.1:{idp}"
client_id = "demo"
client_secret = "{CLIENT_SECRET}"
redirect_uri = "http://127.0.0.1:{gw}/oauth2/callback"

[[upstreams]]
name = "up"
targets = ["127.0.0.1:{up}"]

[[routes]]
name = "noauth"
paths = ["/noauth"]
upstream = "up"

[[routes]]
name = "session"
paths = ["/session"]
upstream = "up"
auth = {{ provider = "dev" }}

[[routes]]
name = "bearer"
paths = ["/bearer"]
upstream = "up"
auth = {{ provider = "dev", methods = ["bearer"], audience_required = ["demo-api"] }}

[[routes]]
name = "policy"
paths = ["/policy"]
upstream = "up"
auth = {{ provider = "dev", allow_if = 'claims.email.endsWith("@example.com") && "admins" in claims.groups' }}
"#,
        dir = dir.display(),
        gw = p.gateway,
        metrics = p.metrics,
        idp = p.idp,
        up = p.upstream
    )
}

pub fn peak_rss_kib(pid: u32) -> u64 {
    let mut s = String::new();
    let _ = std::fs::File::open(format!("/proc/{pid}/status"))
        .and_then(|mut f| f.read_to_string(&mut s));
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}
