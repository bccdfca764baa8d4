//! `cargo bench --bench faults`: the fault-injection suite at full scale (the IdP down for 10 s,
//! answering in 5 s, a target killed, five reloads, SIGTERM with requests in flight, a restart
//! with the IdP down, then Redis stopped and a Sentinel failover), printing the loss table.
//!
//! `cargo bench --bench faults -- --soak 30m`: the mixed load with a reload every minute, the
//! serving process's RSS and open file descriptors sampled every 10 s; RSS at the end must be
//! within 10% of RSS after warm-up.
//!
//! Under `cargo test` (no `--bench`) it does nothing: `tests/faults.rs` runs the CI-sized suite.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};
use support::faults::{self, Load, Rig};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        println!(
            "faults: `cargo bench --bench faults` runs it (tests/faults.rs is the CI-sized run)"
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
        let mut rows = faults::run(faults::LONG).await;
        rows.extend(faults::redis_faults(faults::LONG).await);
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
    let mut after_warm_up = None;
    println!(
        "{:>8} {:>8} {:>10} {:>6}",
        "t (s)", "pid", "RSS (KiB)", "fds"
    );
    while start.elapsed() < length {
        tokio::time::sleep(Duration::from_secs(10)).await;
        if Instant::now() >= next_reload {
            rig.reload();
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
        if after_warm_up.is_none() && start.elapsed() >= warm_up {
            after_warm_up = Some(rss);
        }
    }
    let end = Instant::now();
    let (rss_end, fds_end) = usage(rig.pid());
    let row = load.row("soak", start, end, end);
    load.stop().await;
    println!("{}", faults::table(&[row]));
    let base = after_warm_up.unwrap_or(rss_end).max(1);
    let growth = rss_end as f64 / base as f64 - 1.0;
    println!(
        "RSS after warm-up {base} KiB, at the end {rss_end} KiB ({:+.1}%); fds at the end {fds_end}",
        growth * 100.0
    );
    rig.reap();
    growth.abs() <= 0.10
}
