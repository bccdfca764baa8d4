//! Printing the results: the table, ratios against their targets, the other figures.

use super::*;

/// One line of a ratio table: what, the ratio, its target (`None`: a control or a calibration).
pub type Ratio = (&'static str, f64, Option<f64>);

pub fn report_ratios(rows: &[Ratio], judged: bool) {
    for &(what, ratio, target) in rows {
        let (target, verdict) = match target {
            Some(t) => (
                format!(">= {t:.2}"),
                if judged { mark(ratio >= t) } else { "" },
            ),
            None if what.contains("twin") => ("1.00: the method's noise".to_owned(), ""),
            None if what.contains("traced") => ("none; the cost of tracing".to_owned(), ""),
            None if what.contains("sign-in") => ("none; a measurement".to_owned(), ""),
            None => ("none; a control".to_owned(), ""),
        };
        println!("  {what:<30} {ratio:>6.2}x     (target {target}) {verdict}");
    }
}

pub fn mark(ok: bool) -> &'static str {
    if ok { "ok" } else { "MISSED" }
}

/// What a full run measured.
pub struct Results<'a> {
    pub opts: &'a Opts,
    pub targets: &'a [Target],
    pub med: &'a [Wrk],
    pub memory_med: &'a [Wrk],
    pub cookie_len: usize,
    pub memory_cookie_len: usize,
    pub pairs: &'a [Ratio],
    pub pair_seconds: u32,
    pub peak_rss_kib: u64,
    pub logins_per_sec: f64,
    pub gateway_ms_per_login: f64,
    pub memory: &'a [Memory],
}

/// Prints the table, the ratios against their targets, and the other figures.
pub fn print_report(r: &Results<'_>) {
    let o = r.opts;
    println!();
    println!(
        "oidc-gateway load benchmark — {} round(s) x {} s per target, wrk -t2 -c{}, all on 127.0.0.1{}",
        o.rounds,
        o.seconds,
        o.connections,
        if o.quick {
            " (QUICK MODE: a smoke test, not a measurement)"
        } else {
            ""
        }
    );
    println!(
        "{:<22} {:>10} {:>10} {:>10}",
        "target", "req/s", "p50", "p99"
    );
    for ((name, _, _), r) in r.targets.iter().zip(r.med) {
        println!(
            "{name:<22} {:>10.0} {:>8.2}ms {:>8.2}ms",
            r.rps, r.p50_ms, r.p99_ms
        );
    }
    let med = r.med;
    let (nginx, bare, noauth, session, bearer) = (&med[0], &med[1], &med[2], &med[3], &med[4]);
    println!();
    println!(
        "ratios (same run){}:",
        if o.quick {
            " — quick mode, debug build: not judged"
        } else {
            ""
        }
    );
    report_ratios(
        &[
            ("session / no-auth", session.rps / noauth.rps, Some(0.95)),
            ("bearer / no-auth", bearer.rps / noauth.rps, Some(0.90)),
            ("no-auth / nginx", noauth.rps / nginx.rps, Some(0.60)),
            ("no-auth / bare Pingora", noauth.rps / bare.rps, Some(1.0)),
            ("session / no-auth + cookie", session.rps / med[5].rps, None),
            (
                "session / no-auth, memory st.",
                r.memory_med[1].rps / r.memory_med[0].rps,
                Some(0.95),
            ),
        ],
        !o.quick,
    );
    println!(
        "  (session cookie: {} bytes with the cookie store, {} with the memory store)",
        r.cookie_len, r.memory_cookie_len
    );
    let dp99 = session.p99_ms - noauth.p99_ms;
    println!(
        "  {:<30} {:>+6.2} ms  (target <= 1 ms) {}",
        "p99 session - p99 no-auth",
        dp99,
        if o.quick { "" } else { mark(dp99 <= 1.0) }
    );
    println!(
        "paired ratios: two processes loaded at the same moment (wrk -t1 -c{} each), median of \
         {} x {} s; a route of one gateway is paired with the no-auth route of its twin:",
        o.connections / 2,
        o.rounds,
        r.pair_seconds
    );
    report_ratios(r.pairs, !o.quick);
    println!(
        "gateway peak RSS: {:.1} MiB",
        r.peak_rss_kib as f64 / 1024.0
    );
    println!(
        "logins: {:.0}/s end to end with the dev IdP ({} logins, 4 at a time); gateway time per login net of IdP calls: {:.2} ms",
        r.logins_per_sec, o.logins, r.gateway_ms_per_login
    );
    print_memory(r.memory);
}
