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

/// A `MakeWriter` for JSON lines that drops the `log.*` fields (`log.file`, `log.line`,
/// `log.module_path`, `log.target`) which `tracing-log` adds to the events of the `log` crate
/// (Pingora's): `tracing-subscriber` writes the string ones as they are, and `log.file` is a
/// path on the build machine. Our own events carry none; only lines that have one are re-read.
#[derive(Clone)]
pub struct WithoutLogFields<M>(M);

/// One line on its way to the inner writer.
pub struct CleanLine<W>(W);

impl<W: Write> Write for CleanLine<W> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if memchr::memmem::find(data, b"\"log.").is_some()
            && let Ok(mut fields) =
                serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(data)
        {
            fields.retain(|k, _| !k.starts_with("log."));
            let mut line = serde_json::to_vec(&fields).map_err(std::io::Error::other)?;
            line.push(b'\n');
            self.0.write_all(&line)?;
            return Ok(data.len());
        }
        self.0.write_all(data)?;
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for WithoutLogFields<M> {
    type Writer = CleanLine<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        CleanLine(self.0.make_writer())
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

/// `w`, boxed; for JSON lines, without the `log.*` fields.
fn boxed<M>(w: M, json: bool) -> tracing_subscriber::fmt::writer::BoxMakeWriter
where
    M: for<'a> MakeWriter<'a> + Clone + Send + Sync + 'static,
{
    if json {
        tracing_subscriber::fmt::writer::BoxMakeWriter::new(WithoutLogFields(w))
    } else {
        tracing_subscriber::fmt::writer::BoxMakeWriter::new(w)
    }
}

/// Installs the global subscriber. `RUST_LOG` overrides `level` (Pingora's noisiest targets
/// stay quiet unless it names them). With `background`, lines are batched and written by a
/// flusher thread (keep the returned guard alive until exit); without (daemon mode, where a
/// fork would lose that thread) they are written directly.
pub fn init(level: &str, json: bool, background: bool) -> Option<LogGuard> {
    // Pingora's load balancer logs every health flip with a full peer dump; the gateway logs
    // the same event in one line, so keep Pingora's to errors unless asked otherwise. Pingora's
    // socket handover logs "ERROR No incoming socket transfer" every second while a new process
    // waits for the old one's sockets, which is what a normal reload does; a handover that
    // fails is still an error, logged by its bootstrap ("Bootstrap failed"). These quieter
    // defaults come first, so `level` or `RUST_LOG` can still ask for them.
    let wanted = std::env::var("RUST_LOG").unwrap_or_else(|_| level.to_owned());
    let filter = EnvFilter::try_new(format!(
        "pingora_load_balancing=error,pingora_core::server::transfer_fd=off,{wanted}"
    ))
    .unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = if background {
        let (w, g) = batch_writer();
        let _ = ACCESS_SINK.set(AccessSink {
            json,
            batch: Some(w.0.clone()),
        });
        (boxed(w, json), Some(g))
    } else {
        let _ = ACCESS_SINK.set(AccessSink { json, batch: None });
        (boxed(std::io::stdout, json), None)
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
    fn json_lines_lose_the_log_crates_fields_and_keep_the_rest() {
        let mut out = Vec::new();
        {
            let mut line = CleanLine(&mut out);
            line.write_all(
                br#"{"level":"INFO","message":"Bootstrap done","log.file":"/root/.cargo/registry/src/x/pingora-core/src/server/mod.rs","log.line":120,"log.target":"pingora_core::server","log.module_path":"pingora_core::server"}"#,
            )
            .unwrap();
            line.write_all(b"{\"message\":\"ours\"}\n").unwrap();
        }
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "{\"level\":\"INFO\",\"message\":\"Bootstrap done\"}\n{\"message\":\"ours\"}\n"
        );
    }

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
