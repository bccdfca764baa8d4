//! Log setup: `tracing` for our own events and, through its `log` bridge, Pingora's.

use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. `RUST_LOG` overrides `level`. With `background`, lines are
/// written by a separate thread so request threads never block on stdout; keep the returned
/// guard alive until exit so buffered lines are flushed.
pub fn init(level: &str, json: bool, background: bool) -> Option<WorkerGuard> {
    // Pingora's load balancer logs every health flip with a full peer dump; the gateway logs
    // the same event in one line, so keep Pingora's to errors unless asked otherwise.
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(format!("pingora_load_balancing=error,{level}")))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = if background {
        let (w, g) = tracing_appender::non_blocking(std::io::stdout());
        (
            tracing_subscriber::fmt::writer::BoxMakeWriter::new(w),
            Some(g),
        )
    } else {
        (
            tracing_subscriber::fmt::writer::BoxMakeWriter::new(std::io::stdout),
            None,
        )
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_writer(writer);
    let result = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
    if let Err(e) = result {
        eprintln!("logging was already set up: {e}");
    }
    guard
}
