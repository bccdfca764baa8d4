//! The fault-injection suite, shared by `tests/e2e/faults.rs` (short, asserts the expectations) and
//! `cargo bench --bench faults` (longer, prints the table; `-- --soak 30m` for the soak).
//!
//! A steady mixed load runs from a Rust driver: browser sessions (cookie), bearer tokens, new
//! logins (each step through the gateway timed on its own) and public requests. Faults are
//! injected one at a time, all on loopback and bounded in time, and every request's outcome is
//! recorded with the time it was sent, so each fault's window can be counted afterwards.

use super::redis::{RedisServer, SENTINEL_MASTER, SentinelSet};
use super::*;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The session secret of the gateway under test.
pub const SECRET: &str = "faults-suite-session-secret-0123456789abcdef";

/// How long each fault lasts.
#[derive(Debug, Clone, Copy)]
pub struct Scale {
    /// IdP down (a), IdP slow (b), target down (c), IdP down across the restart (f).
    pub fault: Duration,
    /// Quiet time after each fault, counted in its window (recovery shows here).
    pub settle: Duration,
    /// Pause between reloads (d).
    pub reload_every: Duration,
    /// A request without an answer after this long is lost.
    pub lost_after: Duration,
    /// Concurrent workers per kind of request.
    pub workers: usize,
}

/// The CI-sized run.
pub const SHORT: Scale = Scale {
    fault: Duration::from_secs(3),
    settle: Duration::from_secs(2),
    // A takeover needs up to ~1.5 s in a debug build (the old process offers its sockets once a
    // second). A SIGQUIT reaching a process still taking over is kept until it serves, but two
    // processes waiting on the one `upgrade_socket` at once race for the sockets (Pingora's
    // handover has a single receiver), so reloads come no faster than one takeover can finish.
    reload_every: Duration::from_millis(2500),
    lost_after: Duration::from_secs(10),
    workers: 2,
};

/// The bench-sized run (the figures: the IdP down for 10 s, and so on).
#[allow(dead_code)] // benches/faults.rs
pub const LONG: Scale = Scale {
    fault: Duration::from_secs(10),
    settle: Duration::from_secs(5),
    reload_every: Duration::from_secs(3),
    lost_after: Duration::from_secs(30),
    workers: 4,
};

/// What a request was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// A signed-in browser's request (session cookie).
    Session,
    /// An API request with a bearer JWT.
    Bearer,
    /// One gateway step of a new login (start, callback, first page).
    Login,
    /// A public route.
    Public,
    /// The browser's step at the OP during a login (not the gateway: shown, never asserted).
    AtIdp,
}

impl Kind {
    /// Every kind the gateway answers, in table order.
    pub const ALL: [Kind; 4] = [Kind::Session, Kind::Bearer, Kind::Login, Kind::Public];
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The expected answer.
    Ok,
    /// Another status.
    Status(u16),
    /// Refused or reset.
    Socket,
    /// No answer within `lost_after`.
    Lost,
}

struct Record {
    sent: Instant,
    kind: Kind,
    outcome: Outcome,
    latency: Duration,
    /// Sent a second time after a socket error on a kept-alive connection (see [`get_kept`]).
    resent: bool,
}

/// Every request's outcome, and the switches of the load.
pub struct Recorder {
    records: Mutex<Vec<Record>>,
    paused: AtomicBool,
    stopped: AtomicBool,
    in_flight: AtomicUsize,
}

impl Recorder {
    fn record(&self, sent: Instant, kind: Kind, outcome: Outcome) {
        self.record_step(sent, kind, outcome, false);
    }

    fn record_step(&self, sent: Instant, kind: Kind, outcome: Outcome, resent: bool) {
        self.records.lock().unwrap().push(Record {
            sent,
            kind,
            outcome,
            latency: sent.elapsed(),
            resent,
        });
    }

    /// Stops sending new requests (a planned stop of the gateway); waits for those in flight.
    pub async fn pause(&self) {
        self.paused.store(true, Ordering::SeqCst);
        while self.in_flight.load(Ordering::SeqCst) > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Sends again.
    pub fn resume(&self) {
        self.paused.store(false, Ordering::SeqCst);
    }
}

/// Counts for one kind of request in one fault's window.
#[derive(Debug, Default, Clone)]
pub struct Counts {
    /// Requests sent.
    pub sent: usize,
    /// Answered with an unexpected status.
    pub failed: usize,
    /// Refused or reset.
    pub socket: usize,
    /// Never answered.
    pub lost: usize,
    /// Sent again after a socket error on a kept-alive connection (judged on the second answer).
    pub resent: usize,
    /// Slowest answer.
    pub worst: Duration,
    /// Statuses of the failures.
    pub statuses: BTreeMap<u16, usize>,
}

/// One row of the table: a fault, its window, and the counts per kind.
#[derive(Debug, Clone)]
pub struct Row {
    /// Which fault.
    pub fault: String,
    /// Per kind.
    pub counts: BTreeMap<Kind, Counts>,
    /// From the end of the fault to the last failed gateway answer (zero: none after it).
    pub recovery: Duration,
}

/// A running mixed load against `origin`.
pub struct Load {
    /// What happened.
    pub rec: Arc<Recorder>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// A gateway's answer, judged; a socket error is printed (shown with the table when a test
/// fails, so a reset explains itself).
fn classify(
    r: Result<reqwest::Response, reqwest::Error>,
    expect: u16,
) -> (Outcome, Option<reqwest::Response>) {
    if let Err(e) = &r
        && !e.is_timeout()
    {
        println!("socket error from the gateway: {e:?}");
    }
    classify_at_idp(r, expect)
}

/// An answer judged without a word: the OP's socket errors are expected while it is down.
fn classify_at_idp(
    r: Result<reqwest::Response, reqwest::Error>,
    expect: u16,
) -> (Outcome, Option<reqwest::Response>) {
    match r {
        Ok(r) if r.status().as_u16() == expect => (Outcome::Ok, Some(r)),
        Ok(r) => (Outcome::Status(r.status().as_u16()), Some(r)),
        Err(e) if e.is_timeout() => (Outcome::Lost, None),
        Err(_) => (Outcome::Socket, None),
    }
}

/// A GET on the connection kept alive from the login's first step, sent again once if it
/// failed at the socket, as a browser does for a request on a reused connection that the
/// server closed as it went out (RFC 9112 §9.3.1; Chromium resends on reused sockets). A
/// reload's old process closes the connections still idle when its grace period ends, and a
/// login that spent seconds at a slow IdP comes back to one of them. A request the gateway had
/// read is not resent blindly: its second answer is what is judged (a spent code fails).
async fn get_kept(
    c: &reqwest::Client,
    url: &str,
) -> (Result<reqwest::Response, reqwest::Error>, bool) {
    match c.get(url).send().await {
        Err(e) if !e.is_timeout() => {
            println!("sent again after a socket error on a kept-alive connection: {e:?}");
            (c.get(url).send().await, true)
        }
        r => (r, false),
    }
}

fn http(lost_after: Duration, cookies: bool) -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .cookie_store(cookies)
        .timeout(lost_after)
        .build()
        .unwrap()
}

/// A bearer JWT the test OP's key signs.
pub fn bearer_token(issuer: &str, sub: &str) -> String {
    let now = unix_now();
    mint(
        &json!({"iss": issuer, "sub": sub, "aud": "gateway", "exp": now + 3600, "iat": now}),
        "key1",
    )
}

/// One login through the gateway and the OP: each gateway step is recorded (`Kind::Login`);
/// a step at the OP that fails ends the attempt unrecorded (the gateway was not asked).
/// Returns the client, signed in, when every step succeeded.
async fn login(rec: Option<&Recorder>, origin: &str, scale: &Scale) -> Option<reqwest::Client> {
    let c = http(scale.lost_after, true);
    let step = |sent: Instant, kind: Kind, (outcome, resent): (Outcome, bool)| {
        if let Some(rec) = rec {
            rec.record_step(sent, kind, outcome, resent);
        }
        outcome == Outcome::Ok
    };
    let t = Instant::now();
    let (o, r) = classify(
        c.get(format!("{origin}/app/"))
            .header("Accept", "text/html")
            .send()
            .await,
        302,
    );
    if !step(t, Kind::Login, (o, false)) {
        return None;
    }
    let authorize = r?.headers().get("location")?.to_str().ok()?.to_owned();
    let t = Instant::now();
    // The test OP approves at once with a 303 to the callback.
    let (o, r) = classify_at_idp(c.get(&authorize).send().await, 303);
    if !step(t, Kind::AtIdp, (o, false)) {
        return None;
    }
    let callback = r?.headers().get("location")?.to_str().ok()?.to_owned();
    let t = Instant::now();
    let (r, resent) = get_kept(&c, &callback).await;
    if !step(t, Kind::Login, (classify(r, 302).0, resent)) {
        return None;
    }
    let t = Instant::now();
    let (r, resent) = get_kept(&c, &format!("{origin}/app/")).await;
    step(t, Kind::Login, (classify(r, 200).0, resent)).then_some(c)
}

impl Load {
    /// Signs `workers` browsers in, then starts every kind of worker.
    pub async fn start(origin: &str, issuer: &str, scale: Scale) -> Load {
        let rec = Arc::new(Recorder {
            records: Mutex::new(Vec::new()),
            paused: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
        });
        let mut tasks = Vec::new();
        for w in 0..scale.workers {
            let browser = login(None, origin, &scale)
                .await
                .expect("the load's browsers sign in before any fault");
            let token = bearer_token(issuer, &format!("api-{w}"));
            let plain = http(scale.lost_after, false);
            let api = plain.clone();
            let spawn =
                |kind: Kind, send: Box<dyn Fn() -> reqwest::RequestBuilder + Send + Sync>| {
                    let rec = rec.clone();
                    tokio::spawn(async move {
                        while !rec.stopped.load(Ordering::SeqCst) {
                            if rec.paused.load(Ordering::SeqCst) {
                                tokio::time::sleep(Duration::from_millis(10)).await;
                                continue;
                            }
                            rec.in_flight.fetch_add(1, Ordering::SeqCst);
                            let t = Instant::now();
                            let (o, _) = classify(send().send().await, 200);
                            rec.record(t, kind, o);
                            rec.in_flight.fetch_sub(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                    })
                };
            let o = origin.to_owned();
            tasks.push(spawn(
                Kind::Session,
                Box::new(move || browser.get(format!("{o}/app/page"))),
            ));
            let o = origin.to_owned();
            tasks.push(spawn(
                Kind::Bearer,
                Box::new(move || api.get(format!("{o}/api/items")).bearer_auth(&token)),
            ));
            let o = origin.to_owned();
            tasks.push(spawn(
                Kind::Public,
                Box::new(move || plain.get(format!("{o}/public"))),
            ));
            let (rec2, o) = (rec.clone(), origin.to_owned());
            tasks.push(tokio::spawn(async move {
                while !rec2.stopped.load(Ordering::SeqCst) {
                    if rec2.paused.load(Ordering::SeqCst) {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                    rec2.in_flight.fetch_add(1, Ordering::SeqCst);
                    login(Some(&rec2), &o, &scale).await;
                    rec2.in_flight.fetch_sub(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }));
        }
        Load { rec, tasks }
    }

    /// Counts the requests sent in `[from, to)`; recovery is measured from `fault_end`.
    pub fn row(&self, fault: &str, from: Instant, fault_end: Instant, to: Instant) -> Row {
        let records = self.rec.records.lock().unwrap();
        let mut counts: BTreeMap<Kind, Counts> = Kind::ALL
            .iter()
            .chain([&Kind::AtIdp])
            .map(|k| (*k, Counts::default()))
            .collect();
        let mut last_failure: Option<Instant> = None;
        for r in records.iter().filter(|r| r.sent >= from && r.sent < to) {
            let gateway = r.kind != Kind::AtIdp;
            let c = counts.entry(r.kind).or_default();
            c.sent += 1;
            c.resent += usize::from(r.resent);
            c.worst = c.worst.max(r.latency);
            match r.outcome {
                Outcome::Ok => continue,
                Outcome::Status(s) => {
                    c.failed += 1;
                    *c.statuses.entry(s).or_default() += 1;
                }
                Outcome::Socket => c.socket += 1,
                Outcome::Lost => c.lost += 1,
            }
            if gateway {
                let answered = r.sent + r.latency;
                last_failure = Some(last_failure.map_or(answered, |l| l.max(answered)));
            }
        }
        Row {
            fault: fault.to_owned(),
            counts,
            recovery: last_failure
                .map_or(Duration::ZERO, |l| l.saturating_duration_since(fault_end)),
        }
    }

    /// Stops the workers.
    pub async fn stop(self) {
        self.rec.stopped.store(true, Ordering::SeqCst);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// The table, one line per fault and kind.
pub fn table(rows: &[Row]) -> String {
    let mut out = format!(
        "{:<44} {:<8} {:>7} {:>7} {:>7} {:>5} {:>6} {:>9} {:>9}  {}\n",
        "fault",
        "kind",
        "sent",
        "failed",
        "socket",
        "lost",
        "resent",
        "worst",
        "recovery",
        "failed statuses"
    );
    for row in rows {
        for (kind, c) in &row.counts {
            out.push_str(&format!(
                "{:<44} {:<8} {:>7} {:>7} {:>7} {:>5} {:>6} {:>8.2}s {:>8.2}s  {:?}\n",
                row.fault,
                format!("{kind:?}"),
                c.sent,
                c.failed,
                c.socket,
                c.lost,
                c.resent,
                c.worst.as_secs_f64(),
                row.recovery.as_secs_f64(),
                c.statuses
            ));
        }
    }
    out
}

/// The gateway configuration the suite runs: cookie sessions (they survive reloads and
/// restarts) or, given the inside of a `[redis]` section, Redis sessions; one provider with a 2 s
/// timeout; two upstream targets with health checks.
pub fn config(issuer: &str, origin: &str, targets: &[String], redis: Option<&str>) -> String {
    let targets: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
    let mut toml = Toml::new()
        .session(SECRET, if redis.is_some() { "store = \"redis\"" } else { "" })
        .provider(
            "op",
            issuer,
            "s",
            origin,
            "timeout = \"2s\"\nconnect_timeout = \"1s\"",
        )
        .raw(&format!(
            "[[upstreams]]\nname = \"app\"\ntargets = [{}]\nretries = 1\nconnect_timeout = \"500ms\"\n\
             health_check = {{ kind = \"http\", path = \"/healthz\", interval = \"300ms\", timeout = \"300ms\" }}\n",
            targets.join(", ")
        ))
        .route("app", &["/app"], "app", "provider = \"op\"", "")
        .route("api", &["/api"], "app", "provider = \"op\", methods = [\"bearer\"]", "")
        .route("public", &[], "app", "", "");
    if let Some(lines) = redis {
        toml = toml.raw(&format!(
            "[redis]\n{lines}\nkey_prefix = \"faults:\"\ncommand_timeout = \"500ms\"\n"
        ));
    }
    toml.build()
}

/// `[server]` lines of the suite's gateway.
pub fn server_lines(state_dir: &std::path::Path) -> String {
    format!(
        "state_dir = \"{}\"\nlogin_rate_limit = 0\nupgrade_ready_timeout = \"5s\"",
        state_dir.display()
    )
}

/// Everything the suite runs against: the OP, two upstream targets and the gateway.
pub struct Rig {
    /// The OP (`None` while it is down).
    pub idp: Option<HostileOp>,
    idp_port: u16,
    /// The OP's issuer URL.
    pub issuer: String,
    targets: Vec<Option<TestUpstream>>,
    target_ports: Vec<u16>,
    /// The gateway now serving.
    pub gw: GatewayProcess,
    /// Processes that handed their sockets over and are draining.
    retired: Vec<GatewayProcess>,
    /// `http://127.0.0.1:port`
    pub origin: String,
    port: u16,
    body: String,
    server_extra: String,
    _state: tempfile::TempDir,
}

impl Rig {
    /// Starts the OP, two targets and a gateway, and waits until the gateway is ready.
    pub async fn start(redis: Option<&str>) -> Rig {
        let idp = HostileOp::start(Attack::None);
        let targets: Vec<TestUpstream> = ["t1", "t2"]
            .iter()
            .map(|n| TestUpstream::start(n))
            .collect();
        let port = free_port();
        let origin = format!("http://127.0.0.1:{port}");
        let state = tempfile::tempdir().unwrap();
        let addresses: Vec<String> = targets.iter().map(|t| t.address()).collect();
        let body = config(&idp.issuer, &origin, &addresses, redis);
        let server_extra = server_lines(state.path());
        let mut rig = Rig {
            idp_port: idp.port(),
            issuer: idp.issuer.clone(),
            idp: Some(idp),
            target_ports: targets.iter().map(|t| t.addr.port()).collect(),
            targets: targets.into_iter().map(Some).collect(),
            gw: start_gateway(&body, &server_extra, port),
            retired: Vec::new(),
            origin,
            port,
            body,
            server_extra,
            _state: state,
        };
        rig.wait_ready().await;
        rig
    }

    /// Waits (up to 20 s) for the gateway's `/readyz` to answer 200.
    pub async fn wait_ready(&mut self) {
        let url = format!("http://127.0.0.1:{}/readyz", self.gw.metrics_port);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = client().get(&url).send().await
                && r.status() == 200
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "gateway not ready:\n{}",
                self.gw.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the OP (connections are refused).
    pub fn idp_down(&mut self) {
        self.idp = None;
    }

    /// Starts the OP again at the same issuer.
    pub fn idp_up(&mut self) {
        self.idp = Some(HostileOp::start_on(self.idp_port, Attack::None));
    }

    /// Holds every OP answer back by `ms`.
    pub fn idp_delay(&self, ms: u64) {
        if let Some(idp) = &self.idp {
            idp.set_delay_ms(ms);
        }
    }

    /// Kills upstream target `i` (every connection to it closes).
    pub fn kill_target(&mut self, i: usize) {
        if let Some(mut t) = self.targets[i].take() {
            t.kill();
        }
    }

    /// Starts target `i` again on its port.
    pub fn restore_target(&mut self, i: usize) {
        self.targets[i] = Some(TestUpstream::start_on(
            self.target_ports[i],
            &format!("t{}", i + 1),
        ));
    }

    /// A reload as the systemd unit does it: a new `run --upgrade` process, and SIGQUIT to the
    /// serving one, which drains while the new one serves.
    pub fn reload(&mut self) {
        let new = self.gw.start_upgrade();
        self.gw.signal("QUIT");
        let old = std::mem::replace(&mut self.gw, new);
        self.retired.push(old);
    }

    /// SIGTERM to the serving gateway; returns once it has exited (within its grace period).
    pub fn stop(&mut self) -> Duration {
        let t = Instant::now();
        self.gw.signal("TERM");
        self.gw
            .wait_exit(Duration::from_secs(15))
            .expect("the gateway exits after its grace period");
        t.elapsed()
    }

    /// Starts a fresh gateway process on the same port and state.
    pub fn restart(&mut self) {
        let fresh = start_gateway(&self.body, &self.server_extra, self.port);
        let old = std::mem::replace(&mut self.gw, fresh);
        self.retired.push(old);
    }

    /// Drops the drained processes that have exited.
    #[allow(dead_code)] // benches/faults.rs (the soak)
    pub fn reap_exited(&mut self) {
        self.retired.retain_mut(|p| !p.has_exited());
    }

    /// Waits for the drained processes to exit by themselves, and prints every process's
    /// failed sign-ins (shown by the test harness when an assertion fails).
    pub fn reap(&mut self) {
        for mut p in self.retired.drain(..) {
            p.wait_exit(Duration::from_secs(20));
            print_failed_sign_ins(&p);
        }
        print_failed_sign_ins(&self.gw);
    }

    /// The serving gateway's PID.
    #[allow(dead_code)] // benches/faults.rs (the soak)
    pub fn pid(&self) -> u32 {
        self.gw.pid()
    }
}

fn print_failed_sign_ins(p: &GatewayProcess) {
    for line in p.log().lines().filter(|l| l.contains("sign-in failed")) {
        println!("gateway {}: {line}", p.pid());
    }
}

fn start_gateway(body: &str, server_extra: &str, port: u16) -> GatewayProcess {
    GatewayProcess::start_with(GatewayOptions {
        body,
        server_extra,
        grace_period: "3s",
        port: Some(port),
        ..Default::default()
    })
}

/// Runs faults a to f under the mixed load and returns one row per fault (plus a baseline).
pub async fn run(scale: Scale) -> Vec<Row> {
    let mut rig = Rig::start(None).await;
    let load = Load::start(&rig.origin, &rig.issuer, scale).await;
    let mut rows = Vec::new();
    let sleep = tokio::time::sleep;

    let t0 = Instant::now();
    sleep(scale.settle).await;
    rows.push(load.row("baseline (no fault)", t0, t0, Instant::now()));

    let t0 = Instant::now();
    rig.idp_down();
    sleep(scale.fault).await;
    rig.idp_up();
    let t1 = Instant::now();
    sleep(scale.settle).await;
    rows.push(load.row("a. IdP down, then back", t0, t1, Instant::now()));

    // Answers held for 5 s (long enough that callbacks meet the slow token endpoint): calls in
    // flight when it ends need 5 s more.
    let t0 = Instant::now();
    rig.idp_delay(5000);
    sleep(scale.fault.max(Duration::from_secs(8))).await;
    rig.idp_delay(0);
    let t1 = Instant::now();
    sleep(scale.settle.max(Duration::from_secs(6))).await;
    rows.push(load.row("b. IdP answering in 5 s", t0, t1, Instant::now()));

    let t0 = Instant::now();
    rig.kill_target(1);
    sleep(scale.fault).await;
    rig.restore_target(1);
    let t1 = Instant::now();
    sleep(scale.settle).await;
    rows.push(load.row(
        "c. one of two targets killed, restored",
        t0,
        t1,
        Instant::now(),
    ));

    let t0 = Instant::now();
    for i in 0..5 {
        if i == 2 {
            rig.idp_delay(5000);
        }
        rig.reload();
        sleep(scale.reload_every).await;
        if i == 2 {
            rig.idp_delay(0);
        }
    }
    let t1 = Instant::now();
    sleep(scale.settle).await;
    rows.push(load.row(
        "d. five reloads (one with the IdP slow)",
        t0,
        t1,
        Instant::now(),
    ));

    rows.push(sigterm_in_flight(&mut rig, &load).await);
    rig.restart();
    rig.wait_ready().await;
    load.rec.resume();

    load.rec.pause().await;
    rig.idp_down();
    rig.stop();
    rig.restart();
    load.rec.resume();
    let t0 = Instant::now();
    sleep(scale.fault).await;
    rig.idp_up();
    let t1 = Instant::now();
    sleep(scale.settle).await;
    rows.push(load.row("f. restart while the IdP is down", t0, t1, Instant::now()));

    load.stop().await;
    rig.reap();
    rows
}

/// e: requests in flight (slow ones, and one of each kind) when SIGTERM arrives all complete.
/// The steady load is paused first: requests sent after the listener closes are refused by
/// design (that is what reloads are for), so only those in flight are counted.
async fn sigterm_in_flight(rig: &mut Rig, load: &Load) -> Row {
    load.rec.pause().await;
    let t0 = Instant::now();
    let c = http(Duration::from_secs(15), false);
    let hits = || -> usize {
        rig.targets
            .iter()
            .flatten()
            .map(|t| t.hits.load(Ordering::SeqCst))
            .sum()
    };
    let before = hits();
    let mut in_flight = Vec::new();
    for i in 0..10 {
        let url = format!("{}/slow?ms={}", rig.origin, 500 + 100 * i);
        let c = c.clone();
        in_flight.push(tokio::spawn(async move {
            let t = Instant::now();
            (t, classify(c.get(url).send().await, 200).0)
        }));
    }
    // Signal once all ten have reached a target: in flight, not still queued.
    let deadline = Instant::now() + Duration::from_secs(10);
    while hits() < before + 10 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    rig.gw.signal("TERM");
    for h in in_flight {
        let (t, o) = h.await.unwrap();
        load.rec.record(t, Kind::Public, o);
    }
    rig.gw
        .wait_exit(Duration::from_secs(15))
        .expect("the gateway exits after its grace period");
    let t1 = Instant::now();
    load.row("e. SIGTERM with requests in flight", t0, t1, t1)
}

/// g: Redis faults under the same load, on gateways whose sessions live in Redis: a single
/// Redis stopped (SIGSTOP) then continued; then, behind a Sentinel, a failover (the master
/// killed; a SIGSTOP longer than the Sentinel's `down-after-milliseconds` is a failover too).
#[allow(dead_code)] // benches/faults.rs
pub async fn redis_faults(scale: Scale) -> Vec<Row> {
    let mut rows = Vec::new();
    let redis = RedisServer::start();
    let mut rig = Rig::start(Some(&format!("url = \"{}\"", redis.url()))).await;
    let load = Load::start(&rig.origin, &rig.issuer, scale).await;
    let t0 = Instant::now();
    redis.signal("STOP");
    tokio::time::sleep(scale.fault).await;
    redis.signal("CONT");
    let t1 = Instant::now();
    tokio::time::sleep(scale.settle).await;
    rows.push(load.row(
        "g. Redis stopped (SIGSTOP), continued",
        t0,
        t1,
        Instant::now(),
    ));
    load.stop().await;
    rig.reap();
    drop(rig);

    let mut sentinel = SentinelSet::start();
    let lines = format!(
        "sentinel = {{ master = \"{SENTINEL_MASTER}\", nodes = [\"redis://127.0.0.1:{}\"] }}",
        sentinel.port
    );
    let mut rig = Rig::start(Some(&lines)).await;
    let load = Load::start(&rig.origin, &rig.issuer, scale).await;
    tokio::time::sleep(scale.settle).await;
    sentinel.wait_replicated();
    let t0 = Instant::now();
    tokio::task::block_in_place(|| sentinel.kill_master());
    let t1 = Instant::now();
    tokio::time::sleep(scale.settle * 2).await;
    rows.push(load.row(
        "g. Sentinel failover (master killed)",
        t0,
        t1,
        Instant::now(),
    ));
    load.stop().await;
    rig.reap();
    rows
}
