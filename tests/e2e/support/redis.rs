//! Real `redis-server` processes for the fleet tests: a single node, a Sentinel set-up and a
//! Cluster, each on its own loopback ports in a scratch directory, stopped when dropped. If
//! `redis-server` is missing the test fails (`.ci/run` installs it); it is never skipped.

use super::free_port;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One `redis-server` process.
pub struct RedisServer {
    /// Its port on 127.0.0.1.
    pub port: u16,
    child: Child,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// A fresh, empty, non-persistent server.
    pub fn start() -> RedisServer {
        Self::start_with(&[])
    }

    /// A server with extra `redis-server` arguments (`--replicaof`, `--cluster-enabled` ...).
    pub fn start_with(extra: &[&str]) -> RedisServer {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut args: Vec<String> = [
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            dir.path().to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        let child = spawn_redis(&args, &dir);
        let s = RedisServer { port, child, dir };
        s.wait_ready();
        s
    }

    /// `redis://127.0.0.1:port`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Runs `redis-cli` against this server; its output.
    pub fn cli(&self, args: &[&str]) -> String {
        cli(self.port, args)
    }

    /// Sends `sig` (`STOP`, `CONT`, `KILL`) to the server.
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "kill -{sig} redis-server");
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while cli(self.port, &["PING"]).trim() != "PONG" {
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} did not start:\n{}",
                self.port,
                std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every key and the raw bytes of its value (`DUMP`), for "what does a dump reveal".
    pub fn dump_all(&self) -> Vec<(String, Vec<u8>)> {
        let client = redis::Client::open(self.url()).unwrap();
        let mut c = client.get_connection().unwrap();
        let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut c).unwrap();
        keys.into_iter()
            .map(|k| {
                let v: Vec<u8> = redis::cmd("DUMP").arg(&k).query(&mut c).unwrap();
                (k, v)
            })
            .collect()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.child.id().to_string()])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_redis(args: &[String], dir: &tempfile::TempDir) -> Child {
    let log = std::fs::File::create(dir.path().join("redis.log")).unwrap();
    Command::new("redis-server")
        .args(args)
        .stdout(Stdio::from(log))
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server must be installed (scripts/install-test-deps installs it)")
}

/// Runs `redis-cli -p port args...`; its standard output.
pub fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli must be installed (scripts/install-test-deps installs it)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A master, a replica and one Sentinel watching them (quorum 1, fast failover).
pub struct SentinelSet {
    /// The first master (killed by [`kill_master`](Self::kill_master)).
    pub master: RedisServer,
    /// Its replica, promoted on failover.
    pub replica: RedisServer,
    /// The Sentinel's port.
    pub port: u16,
    sentinel: Child,
    _dir: tempfile::TempDir,
}

/// The name the Sentinel knows the master by.
pub const SENTINEL_MASTER: &str = "gwmaster";

impl SentinelSet {
    /// Starts the three processes and waits until the Sentinel sees the replica.
    pub fn start() -> SentinelSet {
        let master = RedisServer::start();
        let replica =
            RedisServer::start_with(&["--replicaof", "127.0.0.1", &master.port.to_string()]);
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let conf = dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {d}\n\
                 sentinel monitor {SENTINEL_MASTER} 127.0.0.1 {m} 1\n\
                 sentinel down-after-milliseconds {SENTINEL_MASTER} 1000\n\
                 sentinel failover-timeout {SENTINEL_MASTER} 5000\n",
                d = dir.path().display(),
                m = master.port,
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("sentinel.log")).unwrap();
        let sentinel = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdout(Stdio::from(log))
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server --sentinel");
        let s = SentinelSet {
            master,
            replica,
            port,
            sentinel,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let replicas = cli(port, &["SENTINEL", "REPLICAS", SENTINEL_MASTER]);
            let synced = s
                .replica
                .cli(&["INFO", "replication"])
                .contains("master_link_status:up");
            if synced && replicas.contains(&s.replica.port.to_string()) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the Sentinel never saw the replica"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        s
    }

    /// The master's port as the Sentinel reports it.
    pub fn master_port(&self) -> u16 {
        cli(
            self.port,
            &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", SENTINEL_MASTER],
        )
        .lines()
        .nth(1)
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or(0)
    }

    /// Waits until what was written to the master reached the replica.
    pub fn wait_replicated(&self) {
        let out = self.master.cli(&["WAIT", "1", "2000"]);
        assert_eq!(out.trim(), "1", "the replica acknowledged the writes");
    }

    /// Kills the master and waits until the Sentinel has promoted the replica.
    pub fn kill_master(&mut self) {
        self.master.signal("KILL");
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.master_port() != self.replica.port
            || !self.replica.cli(&["ROLE"]).starts_with("master")
        {
            assert!(Instant::now() < deadline, "no failover");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for SentinelSet {
    fn drop(&mut self) {
        let _ = self.sentinel.kill();
        let _ = self.sentinel.wait();
    }
}

/// A three-master Redis Cluster (no replicas), created with `redis-cli --cluster create`.
pub struct ClusterSet {
    /// Its nodes.
    pub nodes: Vec<RedisServer>,
}

impl ClusterSet {
    /// Starts three nodes, joins them and waits until the cluster is ok.
    pub fn start() -> ClusterSet {
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| {
                // The bus port would default to port + 10 000, inside the kernel's ephemeral
                // range, where an outgoing connection may hold it: take one from the test range.
                let bus = free_port().to_string();
                RedisServer::start_with(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "2000",
                    "--cluster-port",
                    &bus,
                ])
            })
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let mut args = vec!["--cluster", "create"];
        args.extend(addrs.iter().map(String::as_str));
        args.extend(["--cluster-replicas", "0", "--cluster-yes"]);
        let out = Command::new("redis-cli")
            .args(&args)
            .output()
            .expect("redis-cli --cluster create");
        assert!(
            out.status.success(),
            "cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while !nodes
            .iter()
            .all(|n| n.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok"))
        {
            assert!(Instant::now() < deadline, "the cluster never became ok");
            std::thread::sleep(Duration::from_millis(100));
        }
        ClusterSet { nodes }
    }

    /// `cluster_nodes = [...]` for the gateway's `[redis]`.
    pub fn config_nodes(&self) -> String {
        let urls: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("\"{}\"", n.url()))
            .collect();
        format!("[{}]", urls.join(", "))
    }

    /// Every key on every node, with its value's raw bytes.
    pub fn dump_all(&self) -> Vec<(String, Vec<u8>)> {
        self.nodes.iter().flat_map(RedisServer::dump_all).collect()
    }
}
