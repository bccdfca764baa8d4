//! `cargo bench --bench faults`: the fault-injection suite at full scale (the IdP down for 10 s,
//! answering in 5 s, a target killed, five reloads, SIGTERM with requests in flight, a restart
//! with the IdP down, then Redis stopped and a Sentinel failover), printing the loss table.
//!
//! `cargo bench --bench faults -- --soak 30m`: the mixed load with a reload every minute, the
//! serving process's RSS and open file descriptors sampled every 10 s; RSS at the end must be
//! within 10% of RSS after warm-up, compared at the same point of a process's minute (a fresh
//! process is smaller than one that has served for 50 s, whatever the run's length).
//!
//! `-- --redis-only` runs only the Redis faults.
//!
//! Under `cargo test` (no `--bench`) it does nothing: `tests/e2e/faults.rs` runs the CI-sized suite.

#[path = "../tests/e2e/support/mod.rs"]
#[allow(dead_code, unused_imports)] // the bench uses only the fault rig
mod support;

use std::time::{Duration, Instant};
use support::faults::{self, Load, Rig};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        println!(
            "faults: `cargo bench --bench faults` runs it (tests/e2e/faults.rs is the CI-sized run)"
        );
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    if let Some(i) = args.iter().position(|a| a == "--soak") {
        let length = args
            .get(i + 1)
            .and_then(|d| humantime::parse_duration(d).ok())
            .unwrap_or(Duration::from_secs(30 * 60));
        let ok = rt.block_on(soak(length));
        std::process::exit(if ok { 0 } else { 1 });
    }
    rt.block_on(async {
        let started = Instant::now();
        if !args.iter().any(|a| a == "--redis-only") {
            let rows = faults::run(faults::LONG).await;
            println!("{}", faults::table(&rows));
        }
        let rows = faults::redis_faults(faults::LONG).await;
        println!("{}", faults::table(&rows));
        println!("(ran {:.0?})", started.elapsed());
    });
}

/// Resident memory (KiB) and open descriptors of `pid`.
fn usage(pid: u32) -> (u64, usize) {
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
    (rss, fds)
}

async fn soak(length: Duration) -> bool {
    let warm_up = (length / 10).max(Duration::from_secs(30));
    let mut rig = Rig::start(None).await;
    let load = Load::start(&rig.origin, &rig.issuer, faults::SHORT).await;
    let start = Instant::now();
    let mut next_reload = start + Duration::from_secs(60);
    let mut reloaded = start;
    // (seconds since the serving process took over, RSS) of each sample after warm-up.
    let mut samples: Vec<(u64, u64)> = Vec::new();
    println!(
        "{:>8} {:>8} {:>10} {:>6}",
        "t (s)", "pid", "RSS (KiB)", "fds"
    );
    while start.elapsed() < length {
        tokio::time::sleep(Duration::from_secs(10)).await;
        if Instant::now() >= next_reload {
            rig.reload();
            reloaded = Instant::now();
            next_reload += Duration::from_secs(60);
            // Sample the new process once it serves.
            tokio::time::sleep(Duration::from_secs(2)).await;
            rig.reap_exited();
        }
        let (rss, fds) = usage(rig.pid());
        println!(
            "{:>8} {:>8} {:>10} {:>6}",
            start.elapsed().as_secs(),
            rig.pid(),
            rss,
            fds
        );
        if start.elapsed() >= warm_up {
            samples.push((reloaded.elapsed().as_secs() / 10, rss));
        }
    }
    let end = Instant::now();
    let (rss_end, fds_end) = usage(rig.pid());
    let row = load.row("soak", start, end, end);
    load.stop().await;
    println!("{}", faults::table(&[row]));
    // The last sample against the first one after warm-up taken as long after a takeover.
    let (phase, last) = samples.last().copied().unwrap_or((0, rss_end));
    let base = samples
        .iter()
        .find(|(p, _)| *p == phase)
        .map_or(last, |(_, r)| *r)
        .max(1);
    let growth = last as f64 / base as f64 - 1.0;
    println!(
        "RSS after warm-up {base} KiB, at the end {last} KiB, both ~{}0 s after a takeover ({:+.1}%); fds at the end {fds_end}",
        phase,
        growth * 100.0
    );
    rig.reap();
    growth.abs() <= 0.10
}
