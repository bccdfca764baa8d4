//! Client connections before Pingora's proxy sees a request: the connection cap, and a deadline
//! for the whole request header.
//!
//! Pingora 0.9 bounds each *read* (its keep-alive timeout, 60 s), and each byte a client sends
//! resets it: five connections sending a header line every two seconds stay open for ever. It has
//! no hook before `read_request`, so this service wraps Pingora's HTTP proxy ([`ServerApp`]) and
//! runs its HTTP/1 keep-alive loop itself:
//!
//! - a connection beyond `max_connections` gets a short 503 (HTTP/1) or is closed (HTTP/2);
//! - each request's header must be complete within `request_header_timeout`, counted from its
//!   first byte on a plain-TCP keep-alive connection (a peek tells when it arrives), or from the
//!   start of the wait where the stream cannot peek (TLS), so there the keep-alive idle time
//!   counts too;
//! - HTTP/2 connections go to the gateway's own accept loop (`h2.rs`): frames arrive whole; the
//!   idle time is bounded there, the body rate in `proxy.rs`.
//!
//! Whether a request's header is complete is signalled by `Gateway::new_ctx`, which Pingora calls
//! right after reading it, through a task-local flag ([`header_read`]).

use crate::handshake::HandshakeDeadline;
use crate::metrics;
use async_trait::async_trait;
use pingora::apps::{HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::{ALPN, Stream};
use pingora::server::ShutdownWatch;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// The answer to a connection over the cap, written before any request is read.
static OVER_CAPACITY: std::sync::LazyLock<Vec<u8>> = std::sync::LazyLock::new(|| {
    let body = r#"{"error":"too_many_connections","message":"The gateway is at its connection limit. Try again shortly."}"#;
    format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Retry-After: 1\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
});

tokio::task_local! {
    static HEADER_READ: Arc<AtomicBool>;
}

/// Called when a request's header has been read: lifts the header deadline of this request.
pub fn header_read() {
    let _ = HEADER_READ.try_with(|done| done.store(true, Ordering::Relaxed));
}

/// Limits on client connections.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served at once.
    pub max_connections: usize,
    /// Longest time to receive a request's header.
    pub header_timeout: Duration,
    /// Idle time allowed between requests on a kept-alive connection.
    pub keepalive: Duration,
}

/// Pingora's HTTP proxy `A` behind the connection cap and the header deadline.
pub struct Guarded<A> {
    app: Arc<A>,
    limits: Limits,
    open: AtomicUsize,
    /// The TLS listeners' handshake deadline, told when a handshake is done.
    handshakes: Option<Arc<HandshakeDeadline>>,
}

impl<A> Guarded<A> {
    /// Wraps `app`; `handshakes` is the deadline of its TLS listeners, if any.
    pub fn new(app: A, limits: Limits, handshakes: Option<Arc<HandshakeDeadline>>) -> Self {
        Guarded {
            app: Arc::new(app),
            limits,
            open: AtomicUsize::new(0),
            handshakes,
        }
    }

    /// Takes a connection slot, or `None` at the cap. The slot is given back on drop.
    fn enter(&self) -> Option<Slot<'_, A>> {
        let before = self.open.fetch_add(1, Ordering::AcqRel);
        let slot = Slot(self);
        (before < self.limits.max_connections).then_some(slot)
    }
}

struct Slot<'a, A>(&'a Guarded<A>);

impl<A> Drop for Slot<'_, A> {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

#[async_trait]
impl<A> ServerApp for Guarded<A>
where
    A: HttpServerApp + Send + Sync + 'static,
{
    async fn process_new(
        self: &Arc<Self>,
        mut stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        if let Some(h) = &self.handshakes
            && stream.get_ssl_digest().is_some()
        {
            h.finished(&stream);
        }
        let Some(_slot) = self.enter() else {
            metrics::refused("too_many_connections");
            if stream.selected_alpn_proto() != Some(ALPN::H2) {
                // Best effort and brief: a client that does not read is not waited for.
                let _ = tokio::time::timeout(Duration::from_secs(1), async {
                    stream.write_all(&OVER_CAPACITY).await?;
                    stream.flush().await
                })
                .await;
            }
            return None;
        };
        if stream.selected_alpn_proto() == Some(ALPN::H2) {
            crate::h2::serve(&self.app, stream, shutdown, self.limits.keepalive).await;
            return None;
        }
        let mut settings = None;
        let mut reused = false;
        // One flag per connection, lowered before each request.
        let done = Arc::new(AtomicBool::new(false));
        loop {
            if reused && !wait_for_next_request(&mut stream, self.limits.keepalive).await {
                return None;
            }
            let mut session = ServerSession::new_http1(stream);
            match settings.take() {
                Some(s) => pingora::apps::HttpPersistentSettings::apply_to_session(s, &mut session),
                None => session.set_keepalive(Some(self.limits.keepalive.as_secs().max(1))),
            }
            if *shutdown.borrow() {
                session.set_keepalive(None);
            }
            done.store(false, Ordering::Relaxed);
            let reuse = self.one_request(session, shutdown, &done).await?;
            let (next, persistent) = reuse.consume();
            stream = next;
            settings = persistent;
            reused = true;
        }
    }

    async fn cleanup(&self) {
        self.app.http_cleanup().await;
    }
}

impl<A> Guarded<A>
where
    A: HttpServerApp + Send + Sync + 'static,
{
    /// Serves one request, dropping the connection if its header is not complete in time.
    async fn one_request(
        &self,
        session: ServerSession,
        shutdown: &ShutdownWatch,
        done: &Arc<AtomicBool>,
    ) -> Option<pingora::apps::ReusedHttpStream> {
        // Formatted only if the deadline strikes.
        let client = session.client_addr().cloned();
        let serve = HEADER_READ.scope(done.clone(), self.app.process_new_http(session, shutdown));
        tokio::pin!(serve);
        // Most headers are already in the socket buffer (the keep-alive peek saw them arrive):
        // then the first poll reads them, and no timer is armed for this request at all.
        if let std::task::Poll::Ready(reuse) = futures::poll!(&mut serve) {
            return reuse;
        }
        if done.load(Ordering::Relaxed) {
            return serve.await;
        }
        tokio::select! {
            biased;
            reuse = &mut serve => reuse,
            _ = tokio::time::sleep(self.limits.header_timeout) => {
                if done.load(Ordering::Relaxed) {
                    return serve.await;
                }
                metrics::refused("header_timeout");
                tracing::info!(
                    target: "access",
                    client = %client.map_or_else(|| "-".to_owned(), |c| c.to_string()),
                    "request header not complete within {:?}: connection closed",
                    self.limits.header_timeout
                );
                None
            }
        }
    }
}

/// Waits (up to the keep-alive idle time) for the first byte of the next request on a reused
/// connection, so the header deadline starts there. `false`: closed or idle too long. Streams
/// that cannot peek (TLS) answer at once.
async fn wait_for_next_request(stream: &mut Stream, keepalive: Duration) -> bool {
    let mut first = [0u8; 1];
    matches!(
        tokio::time::timeout(keepalive, stream.try_peek(&mut first)).await,
        Ok(Ok(_))
    )
}

/// The SHA-256 digest of the TLS client certificate the connection presented (verified
/// against the listener's `client_ca_file`), if any.
pub fn client_cert_digest(session: &pingora::proxy::Session) -> Option<&[u8]> {
    let ssl = session.digest()?.ssl_digest.as_ref()?;
    Some(ssl.cert_digest.as_slice()).filter(|d| !d.is_empty())
}
