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
    args: Vec<String>,
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
        let s = RedisServer {
            port,
            child,
            dir,
            args,
        };
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

    /// Kills the server and starts it again on the same port (empty: nothing is persisted).
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = spawn_redis(&self.args, &self.dir);
        self.wait_ready();
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while cli(self.port, &["PING"]).trim() != "PONG" {
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} did not start",
                self.port
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
        .expect("redis-server must be installed (.ci/run installs it)")
}

/// Runs `redis-cli -p port args...`; its standard output.
pub fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli must be installed (.ci/run installs it)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}
