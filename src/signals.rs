//! Signals to a `run` process, including those that arrive while it is still starting.
//!
//! Pingora listens for SIGQUIT (hand the sockets over) only once its main loop runs, after the
//! upgrade wait, the socket takeover and the services' start. Until then SIGQUIT's default action
//! killed the process, so a reload reaching a gateway that was itself still taking over lost the
//! sockets: the old process had handed them to the one that died, and nobody handed them on. Here
//! a SIGQUIT is caught as soon as `run` begins and answered as soon as the main loop runs.
//! SIGTERM and SIGINT keep their default action while starting: stopping a process that serves
//! nothing yet loses nothing.

use async_trait::async_trait;
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::signal::unix::{Signal, SignalKind, signal};

/// Catches SIGQUIT from now on; the returned watch answers it once the server runs.
pub fn catch_early_quit() -> std::io::Result<QuitWatch> {
    let quit = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGQUIT, quit.clone())?;
    Ok(QuitWatch { early_quit: quit })
}

/// Runs `server` until a signal ends it, then exits the process (as `Server::run_forever`).
pub fn run_forever(server: Server, watch: QuitWatch) -> ! {
    server.run(RunArgs {
        shutdown_signal: Box::new(watch),
    });
    std::process::exit(0)
}

/// Pingora's signal watch (SIGQUIT upgrade, SIGTERM drain, SIGINT quick exit), plus a SIGQUIT
/// that came before it listened.
pub struct QuitWatch {
    early_quit: Arc<AtomicBool>,
}

#[async_trait]
impl ShutdownSignalWatch for QuitWatch {
    async fn recv(&self) -> ShutdownSignal {
        // Listen first, then look at the flag: a SIGQUIT between the two is seen by both, and
        // none is missed.
        let mut quit = listen(SignalKind::quit());
        let mut term = listen(SignalKind::terminate());
        let mut int = listen(SignalKind::interrupt());
        if self.early_quit.load(Ordering::SeqCst) {
            tracing::info!("SIGQUIT came while starting: handing the sockets on now");
            return ShutdownSignal::GracefulUpgrade;
        }
        tokio::select! {
            _ = next(&mut quit) => ShutdownSignal::GracefulUpgrade,
            _ = next(&mut term) => ShutdownSignal::GracefulTerminate,
            _ = next(&mut int) => ShutdownSignal::FastShutdown,
        }
    }
}

fn listen(kind: SignalKind) -> Option<Signal> {
    signal(kind)
        .inspect_err(|e| tracing::error!("cannot listen for signal {}: {e}", kind.as_raw_value()))
        .ok()
}

/// The next delivery of `s`; never, for a signal that could not be listened for.
async fn next(s: &mut Option<Signal>) {
    match s {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}
