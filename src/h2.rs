//! HTTP/2 client connections, accepted here rather than in Pingora's own loop, whose idle timer
//! is looked at only when frames stop arriving: a client flooding SETTINGS, PING or
//! WINDOW_UPDATE frames (which open no request) kept its connection for as long as it flooded.
//! Here idle means no request in progress, whatever frames arrive: the connection is closed
//! `keepalive_timeout` after its last request ended (or after a HEADERS frame whose header block
//! never completes).
//!
//! Everything else is as in Pingora's loop: one task per request, a graceful GOAWAY on
//! shutdown, at most 32 malformed streams. The `h2` crate's limits stay in force (Pingora's
//! bounded defaults plus `h2_max_concurrent_streams` and `h2_max_header_list_size`, see
//! `server.rs`): streams reset before they were accepted (rapid reset), header lists and
//! CONTINUATION floods, protocol errors. A stream the client resets after it was accepted ends
//! its request's work within milliseconds (Pingora notices the reset while it waits for the
//! upstream).

use pingora::apps::HttpServerApp;
use pingora::protocols::http::ServerSession;
use pingora::protocols::http::v2::server::{H2Accept, HttpSession, handshake};
use pingora::protocols::{Digest, Stream};
use pingora::server::ShutdownWatch;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Streams rejected at acceptance (malformed) before the connection is closed, as Pingora's
/// own loop allows.
const MAX_MALFORMED: usize = 32;

/// Requests of one connection being handled; wakes the accept loop when one ends.
struct Active {
    count: AtomicUsize,
    ended: Notify,
}

struct Handling(Arc<Active>);

impl Drop for Handling {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::AcqRel);
        self.0.ended.notify_one();
    }
}

/// Serves one HTTP/2 connection with `app` until it closes, has no request in progress for
/// `idle`, or the process shuts down.
pub async fn serve<A>(app: &Arc<A>, stream: Stream, shutdown: &ShutdownWatch, idle: Duration)
where
    A: HttpServerApp + Send + Sync + 'static,
{
    let digest = Arc::new(Digest {
        ssl_digest: stream.get_ssl_digest(),
        timing_digest: stream.get_timing_digest(),
        proxy_digest: stream.get_proxy_digest(),
        socket_digest: stream.get_socket_digest(),
    });
    // A client that never sends its preface is idle too.
    let mut conn = match tokio::time::timeout(idle, handshake(stream, app.h2_options())).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            tracing::debug!("HTTP/2 handshake failed: {e}");
            return;
        }
        Err(_) => return,
    };
    let active = Arc::new(Active {
        count: AtomicUsize::new(0),
        ended: Notify::new(),
    });
    let mut watch = shutdown.clone();
    let mut closing = false;
    let mut malformed = 0usize;
    let mut idle_since = Instant::now();
    loop {
        let busy = active.count.load(Ordering::Acquire) > 0;
        let deadline = idle_since + idle;
        let accepted = tokio::select! {
            biased;
            changed = watch.changed(), if !closing => {
                if changed.is_err() || *watch.borrow() {
                    conn.graceful_shutdown();
                    closing = true;
                }
                continue;
            }
            // Unconstrained: a flood of frames must not use up the task's budget before the
            // timer is looked at.
            () = tokio::task::unconstrained(tokio::time::sleep_until(deadline)), if !busy && !closing => {
                return;
            }
            () = active.ended.notified(), if busy => {
                if active.count.load(Ordering::Acquire) == 0 {
                    idle_since = Instant::now();
                }
                continue;
            }
            accepted = HttpSession::from_h2_conn(&mut conn, digest.clone()) => accepted,
        };
        match accepted {
            Err(e) => {
                tracing::debug!("HTTP/2 connection ended: {e}");
                return;
            }
            Ok(None) => return,
            Ok(Some(H2Accept::Rejected)) => {
                malformed += 1;
                if malformed > MAX_MALFORMED {
                    return;
                }
            }
            Ok(Some(H2Accept::Session(session))) => {
                idle_since = Instant::now();
                active.count.fetch_add(1, Ordering::AcqRel);
                let handling = Handling(active.clone());
                let (app, shutdown) = (app.clone(), shutdown.clone());
                tokio::spawn(async move {
                    let _handling = handling;
                    app.process_new_http(ServerSession::new_http2(session), &shutdown)
                        .await;
                });
            }
        }
    }
}
