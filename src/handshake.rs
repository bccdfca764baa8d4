//! A deadline for TLS handshakes (`tls_handshake_timeout`).
//!
//! Pingora 0.9 gives every handshake a fixed 60 s, before any code of ours sees the
//! connection: a client that sends nothing, or trickles its ClientHello a byte at a time, holds
//! a socket and a task for that long. Its one hook before the handshake is a pre-TLS callback,
//! so this keeps a duplicate of each new socket's descriptor there and shuts the socket down
//! when the handshake has not finished in time; the handshake then fails and Pingora drops
//! the connection. [`HandshakeDeadline::finished`] (called once the proxy has the connection)
//! lets the duplicate go at once.

use async_trait::async_trait;
use dashmap::DashMap;
use pingora::listeners::PreTlsProcess;
use pingora::protocols::SocketDigest;
use pingora::protocols::Stream;
use pingora::protocols::l4::stream::Stream as L4Stream;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Handshakes in progress, by socket cookie (`SO_COOKIE`: unique for the kernel's lifetime,
/// unlike a descriptor number, which is reused).
pub struct HandshakeDeadline {
    timeout: Duration,
    pending: Arc<DashMap<u64, Arc<Pending>>>,
}

/// A duplicate of a socket whose handshake is under way; `None` once it finished.
struct Pending(Mutex<Option<std::net::TcpStream>>);

impl Pending {
    fn take(&self) -> Option<std::net::TcpStream> {
        self.0.lock().map(|mut s| s.take()).unwrap_or(None)
    }
}

impl HandshakeDeadline {
    /// Handshakes must finish within `timeout` of the connection's accept.
    pub fn new(timeout: Duration) -> Arc<HandshakeDeadline> {
        Arc::new(HandshakeDeadline {
            timeout,
            pending: Arc::new(DashMap::new()),
        })
    }

    /// The handshake of `stream` is done: its deadline no longer applies.
    pub fn finished(&self, stream: &Stream) {
        let Some(cookie) = stream
            .get_socket_digest()
            .and_then(|d| d.socket_cookie().ok())
        else {
            return;
        };
        if let Some((_, p)) = self.pending.remove(&cookie) {
            drop(p.take());
        }
    }

    /// Handshakes under way.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether no handshake is under way.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

#[async_trait]
impl PreTlsProcess for HandshakeDeadline {
    async fn process(&self, stream: &mut L4Stream) -> pingora::Result<()> {
        let fd = stream.as_raw_fd();
        let cookie = SocketDigest::from_raw_fd(fd).socket_cookie().ok();
        // SAFETY: `fd` is the open socket of `stream`, which we hold for this whole call.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        let (Some(cookie), Ok(dup)) = (cookie, borrowed.try_clone_to_owned()) else {
            // Without a cookie or a duplicate there is nothing to watch with: Pingora's own
            // 60 s still applies.
            return Ok(());
        };
        let pending = Arc::new(Pending(Mutex::new(Some(std::net::TcpStream::from(dup)))));
        self.pending.insert(cookie, pending.clone());
        let (all, timeout) = (self.pending.clone(), self.timeout);
        tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            all.remove_if(&cookie, |_, p| Arc::ptr_eq(p, &pending));
            if let Some(socket) = pending.take() {
                // Still handshaking: end it. Reads and writes on the socket fail at once.
                let _ = socket.shutdown(std::net::Shutdown::Both);
                crate::metrics::refused("tls_handshake_timeout");
            }
        });
        Ok(())
    }
}
