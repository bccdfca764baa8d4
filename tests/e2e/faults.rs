//! The fault-injection suite, CI-sized: a steady mixed load (browser sessions, bearer tokens, new
//! logins, public requests) while the IdP goes down, answers slowly, an upstream target dies,
//! the gateway is reloaded five times, stopped with requests in flight, and restarted while the
//! IdP is down. Every request's outcome is counted; the expectations of the operations guide's
//! "what happens when" table are asserted here. `cargo bench --bench faults` runs it longer.

use crate::support;

use std::time::Duration;
use support::faults::{self, Counts, Kind, Row};

fn counts<'a>(rows: &'a [Row], fault: &str, kind: Kind) -> &'a Counts {
    let row = rows
        .iter()
        .find(|r| r.fault.starts_with(fault))
        .unwrap_or_else(|| panic!("no row for {fault}"));
    &row.counts[&kind]
}

fn all_served(c: &Counts) -> bool {
    c.failed == 0 && c.socket == 0 && c.lost == 0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn faults_under_a_mixed_load_lose_nothing_that_had_a_session() {
    let rows = faults::run(faults::SHORT).await;
    let table = faults::table(&rows);
    println!("{table}");
    let check = |ok: bool, what: &str| assert!(ok, "{what}\n{table}");

    for kind in Kind::ALL {
        check(counts(&rows, "baseline", kind).sent > 0, "the load ran");
    }
    // Sessions and cached bearer tokens are served through a, b, c, d and f.
    for fault in ["a.", "b.", "c.", "d.", "f."] {
        for kind in [Kind::Session, Kind::Bearer] {
            let c = counts(&rows, fault, kind);
            check(c.sent > 0, &format!("{fault} {kind:?}: nothing sent"));
            check(all_served(c), &format!("{fault} {kind:?}: not all served"));
        }
    }
    // Idempotent requests: none failed while a target died (retried, then routed around).
    for kind in Kind::ALL {
        check(
            all_served(counts(&rows, "c.", kind)),
            &format!("c. {kind:?}: a request failed while a target died"),
        );
    }
    // Reloads: nothing failed or was reset; logins may meet the slow IdP (503/504), no more.
    for kind in [Kind::Session, Kind::Bearer, Kind::Public] {
        check(
            all_served(counts(&rows, "d.", kind)),
            &format!("d. {kind:?}: a request failed during the reloads"),
        );
    }
    // A login sends a step again only when a gateway process closed the connection it kept
    // (reloads, restarts); nothing closes it in these.
    for fault in ["baseline", "a.", "b.", "c."] {
        check(
            counts(&rows, fault, Kind::Login).resent == 0,
            &format!("{fault} Login: a step had to be sent again"),
        );
    }
    let d = counts(&rows, "d.", Kind::Login);
    check(
        d.socket == 0 && d.lost == 0 && d.statuses.keys().all(|s| [503, 504].contains(s)),
        "d. Login: reset, lost, or an unclear failure",
    );
    // SIGTERM: every request in flight completed.
    let e = counts(&rows, "e.", Kind::Public);
    check(
        e.sent == 10 && all_served(e),
        "e. in-flight requests did not all complete",
    );
    // New logins while the IdP is down or slow: a clear 503 (the gateway cannot reach it) or
    // 504 (the token endpoint timed out) within the provider timeout (2 s) plus scheduling,
    // never a hang, and never a redirect to a provider that is known to be down for long.
    for (fault, clear) in [("a.", &[503][..]), ("b.", &[503, 504][..])] {
        let c = counts(&rows, fault, Kind::Login);
        check(
            c.lost == 0 && c.socket == 0,
            &format!("{fault} Login: a login hung"),
        );
        check(
            c.worst < Duration::from_millis(3500),
            &format!("{fault} Login: a gateway step took {:?}", c.worst),
        );
        check(
            c.failed > 0 && c.statuses.keys().all(|s| clear.contains(s)),
            &format!(
                "{fault} Login: expected clear {clear:?}, got {:?}",
                c.statuses
            ),
        );
    }
}
