//! Log setup: `tracing` for our own events and, through its `log` bridge, Pingora's.
//!
//! Request threads never write to stdout themselves: each line is appended to a shared buffer
//! that a flusher thread writes out ten times a second. A channel-per-line writer (such as
//! `tracing_appender::non_blocking`) wakes its writer thread for every line, and on a busy
//! proxy those cross-thread wake-ups cost more than the logging itself. Two buffers take turns
//! (one filling, one being written), so neither is regrown from empty after every flush.
//! Nothing is dropped: past a soft bound the flusher is woken early; past a hard bound (stdout
//! is slow) the writing thread flushes itself, which is the only back-pressure.
//!
//! Access-log lines skip `tracing`'s formatter: [`access_line`] hands the line, already
//! formatted by `access_log`, straight to the same sink.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// How often buffered lines are written out.
const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// Beyond this many buffered bytes the flusher is woken before its time.
const SOFT_MAX_BUFFERED: usize = 512 * 1024;
/// Beyond this many buffered bytes the writing thread flushes them itself.
const MAX_BUFFERED: usize = 4 * 1024 * 1024;

struct Shared {
    /// Lines waiting to be written.
    buf: Mutex<Vec<u8>>,
    /// The other buffer: held while it is written out, so flushes never overlap.
    out: Mutex<Vec<u8>>,
    stop: Mutex<bool>,
    wake: Condvar,
}

impl Shared {
    fn new() -> Self {
        Shared {
            buf: Mutex::new(Vec::with_capacity(64 * 1024)),
            out: Mutex::new(Vec::with_capacity(64 * 1024)),
            stop: Mutex::new(false),
            wake: Condvar::new(),
        }
    }

    fn append(&self, data: &[u8]) {
        let len = {
            let mut buf = self.buf.lock().unwrap_or_else(|e| e.into_inner());
            buf.extend_from_slice(data);
            buf.len()
        };
        if len > MAX_BUFFERED {
            self.flush();
        } else if len > SOFT_MAX_BUFFERED && len - data.len() <= SOFT_MAX_BUFFERED {
            self.wake.notify_one();
        }
    }

    fn flush(&self) {
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::swap(
            &mut *self.buf.lock().unwrap_or_else(|e| e.into_inner()),
            &mut *out,
        );
        if !out.is_empty() {
            let mut stdout = std::io::stdout().lock();
            let _ = stdout.write_all(&out);
            let _ = stdout.flush();
            out.clear();
        }
    }
}

/// Where access-log lines go, and in which format; set once by [`init`].
struct AccessSink {
    json: bool,
    /// The batching buffer, or `None` to write each line to stdout at once.
    batch: Option<Arc<Shared>>,
}

static ACCESS_SINK: OnceLock<AccessSink> = OnceLock::new();

/// Whether access lines should be JSON objects; `None` before [`init`] (nothing is written then).
pub fn access_json() -> Option<bool> {
    ACCESS_SINK.get().map(|s| s.json)
}

/// Writes one formatted access-log line (ending in a newline) to the log's sink.
pub fn access_line(line: &[u8]) {
    match ACCESS_SINK.get() {
        Some(AccessSink {
            batch: Some(shared),
            ..
        }) => shared.append(line),
        Some(AccessSink { batch: None, .. }) => {
            let _ = std::io::stdout().lock().write_all(line);
        }
        None => {}
    }
}

/// A `MakeWriter` appending each line to the shared buffer.
#[derive(Clone)]
pub struct BatchWriter(Arc<Shared>);

/// One line being written.
pub struct BatchLine<'a>(&'a Shared);

impl Write for BatchLine<'_> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.append(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for BatchWriter {
    type Writer = BatchLine<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        BatchLine(&self.0)
    }
}

/// Keeps the flusher running; flushes what is left when dropped.
pub struct LogGuard {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        *self.shared.stop.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.shared.wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.shared.flush();
    }
}

/// A batching writer and the guard that runs its flusher thread.
pub fn batch_writer() -> (BatchWriter, LogGuard) {
    let shared = Arc::new(Shared::new());
    let s = shared.clone();
    let thread = std::thread::Builder::new()
        .name("log-flusher".into())
        .spawn(move || {
            let mut stop = s.stop.lock().unwrap_or_else(|e| e.into_inner());
            while !*stop {
                stop = s
                    .wake
                    .wait_timeout(stop, FLUSH_EVERY)
                    .map(|(g, _)| g)
                    .unwrap_or_else(|e| e.into_inner().0);
                drop(stop);
                s.flush();
                stop = s.stop.lock().unwrap_or_else(|e| e.into_inner());
            }
        })
        .ok();
    (BatchWriter(shared.clone()), LogGuard { shared, thread })
}

/// Installs the global subscriber. `RUST_LOG` overrides `level`. With `background`, lines are
/// batched and written by a flusher thread (keep the returned guard alive until exit); without
/// (daemon mode, where a fork would lose that thread) they are written directly.
pub fn init(level: &str, json: bool, background: bool) -> Option<LogGuard> {
    // Pingora's load balancer logs every health flip with a full peer dump; the gateway logs
    // the same event in one line, so keep Pingora's to errors unless asked otherwise.
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(format!("pingora_load_balancing=error,{level}")))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = if background {
        let (w, g) = batch_writer();
        let _ = ACCESS_SINK.set(AccessSink {
            json,
            batch: Some(w.0.clone()),
        });
        (
            tracing_subscriber::fmt::writer::BoxMakeWriter::new(w),
            Some(g),
        )
    } else {
        let _ = ACCESS_SINK.set(AccessSink { json, batch: None });
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_buffered_then_flushed_in_order() {
        let (w, guard) = batch_writer();
        for i in 0..3 {
            let mut line = w.make_writer();
            line.write_all(format!("line {i}\n").as_bytes()).unwrap();
        }
        assert_eq!(&*w.0.buf.lock().unwrap(), b"line 0\nline 1\nline 2\n");
        drop(guard);
        assert!(
            w.0.buf.lock().unwrap().is_empty(),
            "dropping the guard flushes"
        );
    }
}
