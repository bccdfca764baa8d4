//! `run --upgrade`: the new process gets ready first (providers discovered, or loaded from
//! `state_dir`), and only then asks the running one to hand its listening sockets over, so a
//! reload never trades a working process for one that cannot verify anything. A dead provider
//! cannot block a reload forever: past `upgrade_ready_timeout` the takeover happens anyway.

use crate::oidc::provider::Providers;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::path::Path;
use std::time::{Duration, Instant};

/// Waits (at most `timeout`) until the providers in `needed` are known.
pub fn wait_until_ready(
    providers: &Providers,
    needed: &[crate::config::ProviderId],
    timeout: Duration,
) {
    let start = Instant::now();
    let missing = providers.discover_now(needed, timeout);
    if missing.is_empty() {
        tracing::info!(waited = ?start.elapsed(), "ready: taking over from the running process");
    } else {
        tracing::warn!(
            waited = ?start.elapsed(),
            "not ready after server.upgrade_ready_timeout (no discovery for: {}): taking over anyway",
            missing.join(", ")
        );
    }
}

/// Sends SIGQUIT to the process named in `pid_file`, if it is a running instance of this
/// program other than this process: it then hands the sockets over (Pingora's graceful
/// upgrade). Without such a process (no daemon, or it was already signalled), nothing is sent
/// and the sockets come when the old process gets SIGQUIT from elsewhere.
pub fn signal_old(pid_file: &str) {
    let Some(pid) = std::fs::read_to_string(pid_file)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
    else {
        tracing::info!(
            pid_file,
            "no running instance named in the PID file: waiting for the sockets"
        );
        return;
    };
    if pid == std::process::id() as i32 || !same_program(pid) {
        tracing::info!(
            pid,
            pid_file,
            "the PID file names no other instance of this program"
        );
        return;
    }
    match kill(Pid::from_raw(pid), Signal::SIGQUIT) {
        Ok(()) => tracing::info!(pid, "asked the running process to hand its sockets over"),
        Err(e) => tracing::warn!(pid, "cannot signal the running process: {e}"),
    }
}

/// Whether process `pid` runs a program of the same file name as this one (a stale PID file
/// may name an unrelated process that reused the number).
fn same_program(pid: i32) -> bool {
    let name_of = |path: &Path| path.file_name().map(|n| n.to_owned());
    let ours = std::env::current_exe().ok().and_then(|p| name_of(&p));
    let theirs = std::fs::read(format!("/proc/{pid}/cmdline"))
        .ok()
        .and_then(|c| {
            let argv0 = c.split(|&b| b == 0).next()?.to_vec();
            String::from_utf8(argv0).ok()
        })
        .and_then(|a| name_of(Path::new(&a)));
    ours.is_some() && ours == theirs
}
