//! The real OpenID Provider for end-to-end tests: the certified `oidc-provider` npm package,
//! configured in `tests/oidc-provider/` with real accounts, login and consent pages. If it cannot
//! be installed or started the test fails (it is never skipped).

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

const OP_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/oidc-provider");

static INSTALL: Mutex<()> = Mutex::new(());

/// Installs the OP's npm dependencies once (shared by every test binary through a file lock).
fn ensure_installed() {
    let _guard = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    let lock =
        std::fs::File::create(format!("{OP_DIR}/.install.lock")).expect("create install lock");
    lock.lock().expect("lock npm install");
    if std::path::Path::new(&format!("{OP_DIR}/node_modules/oidc-provider/package.json")).exists() {
        return;
    }
    let out = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--prefix", OP_DIR])
        .output()
        .expect("npm must be installed to run the real-OP tests");
    assert!(
        out.status.success(),
        "npm ci failed in {OP_DIR}:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A running `oidc-provider` OP.
pub struct RealOp {
    /// `http://127.0.0.1:port`, or the configured `issuer` (a TLS terminator in front).
    pub issuer: String,
    /// Where it listens itself: `http://127.0.0.1:port`.
    pub listen: String,
    child: Child,
    _dir: tempfile::TempDir,
    log: std::path::PathBuf,
}

impl RealOp {
    /// Starts the OP with `config` (see tests/oidc-provider/README.md) on a free port.
    pub fn start(config: &serde_json::Value) -> RealOp {
        ensure_installed();
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("op.json");
        std::fs::write(&config_path, config.to_string()).unwrap();
        let log = dir.path().join("op.log");
        let mut child = Command::new("node")
            .arg(format!("{OP_DIR}/server.mjs"))
            .args(["--port", "0", "--config"])
            .arg(&config_path)
            .stdout(Stdio::piped())
            .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
            .spawn()
            .expect("node must be installed to run the real-OP tests");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                // LISTENING comes first, then READY.
                if let Some(url) = line
                    .strip_prefix("LISTENING ")
                    .or_else(|| line.strip_prefix("READY "))
                {
                    let _ = tx.send(url.to_owned());
                }
            }
        });
        let next = || rx.recv_timeout(Duration::from_secs(30));
        let (listen, issuer) = match next().and_then(|l| Ok((l, next()?))) {
            Ok(both) => both,
            Err(e) => {
                let state = child.try_wait();
                let _ = child.kill();
                panic!(
                    "the oidc-provider OP did not start ({e:?}, process: {state:?}):\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
        };
        RealOp {
            issuer,
            listen,
            child,
            _dir: dir,
            log,
        }
    }

    /// Requests the OP has received so far.
    pub async fn request_count(&self) -> u64 {
        let v: serde_json::Value = reqwest::get(format!("{}/__test/requests", self.issuer))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["count"].as_u64().unwrap()
    }

    /// What the OP has issued: grants by type, refresh tokens, back-channel logouts.
    pub async fn issued(&self) -> serde_json::Value {
        reqwest::get(format!("{}/__test/issued", self.issuer))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Holds each token-endpoint request `ms` milliseconds before answering it (0: none).
    pub async fn token_delay(&self, ms: u64) {
        let url = format!("{}/__test/token-delay?ms={ms}", self.issuer);
        assert!(reqwest::get(url).await.unwrap().status().is_success());
    }

    /// Stops the OP (a provider outage).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The OP's own log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for RealOp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An OP config with the `gateway` client registered for `gateway_origin` and alice.
pub fn op_config(gateway_origin: &str, access_token_ttl: u64) -> serde_json::Value {
    serde_json::json!({
        "clients": [{
            "client_id": "gateway",
            "client_secret": "gateway-secret-0123456789",
            "redirect_uris": [format!("{gateway_origin}/oauth2/callback")],
            "post_logout_redirect_uris": [format!("{gateway_origin}/bye")],
            "grant_types": ["authorization_code", "refresh_token", "client_credentials"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "client_secret_basic"
        }],
        "accounts": [{
            "id": "alice-id", "username": "alice", "password": "wonderland",
            "claims": { "email": "alice@example.com", "email_verified": true, "name": "Alice Liddell",
                        "groups": ["admins", "readers"], "realm_access": { "roles": ["orders:read"] } }
        }],
        "ttl": { "AccessToken": access_token_ttl, "IdToken": 3600, "RefreshToken": 86400, "Session": 86400 },
        "resource_servers": { "https://api.example.com": { "scope": "orders:read orders:write", "audience": "https://api.example.com", "accessTokenFormat": "jwt" } },
        "opaque_resource": "https://opaque.example.com"
    })
}

/// Adds bob (password `builder`, no groups) to an OP config's accounts.
pub fn add_bob(cfg: &mut serde_json::Value) {
    cfg["accounts"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "id": "bob-id", "username": "bob", "password": "builder",
            "claims": { "email": "bob@example.com", "email_verified": true }
        }));
}
