//! A *lenient* upstream for attacker-side tests, and a raw-socket client to go with it.
//!
//! nginx, hyper and axum refuse odd request lines themselves, which hides a gateway that forwards
//! them. This upstream accepts any request line, the way werkzeug or Python's `http.server` do,
//! and records the bytes it received, so a test can compare what was routed and authorized with
//! what reached the upstream. It answers every request with an empty 200.
//!
//! It is deliberately not an HTTP library: it splits the head at the first blank line and reads
//! a body only by the first `Content-Length`, like the lenient servers it stands in for.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Received {
    /// The request line, without CRLF, byte for byte.
    pub line: Vec<u8>,
    /// Header fields in arrival order: (name as sent, value).
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body, as framed by the first `Content-Length`.
    pub body: Vec<u8>,
}

impl Received {
    /// The method, as sent.
    pub fn method(&self) -> &[u8] {
        self.line.split(|&b| b == b' ').next().unwrap_or(&[])
    }

    /// The request-target, as sent.
    pub fn target(&self) -> &[u8] {
        self.line.split(|&b| b == b' ').nth(1).unwrap_or(&[])
    }

    /// Every value of header `name` (any case).
    pub fn header_values(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .collect()
    }

    /// The request line, for messages.
    pub fn line_lossy(&self) -> String {
        String::from_utf8_lossy(&self.line).into_owned()
    }
}

/// A running lenient upstream.
pub struct LenientUpstream {
    /// Where it listens.
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    stop: Arc<AtomicBool>,
}

impl LenientUpstream {
    /// Starts one on a free loopback port.
    pub fn start() -> LenientUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind lenient upstream");
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (rec, st) = (received.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let rec = rec.clone();
                std::thread::spawn(move || serve(conn, rec));
            }
        });
        LenientUpstream {
            addr,
            received,
            stop,
        }
    }

    /// `127.0.0.1:port`
    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    /// Takes every request recorded so far.
    pub fn take(&self) -> Vec<Received> {
        std::mem::take(&mut *self.received.lock().unwrap())
    }

    /// How many requests are recorded.
    pub fn count(&self) -> usize {
        self.received.lock().unwrap().len()
    }
}

impl Drop for LenientUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve(mut conn: TcpStream, received: Arc<Mutex<Vec<Received>>>) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let mut buf = Vec::new();
    loop {
        let Some(head_end) = read_until_blank_line(&mut conn, &mut buf) else {
            return;
        };
        let head = buf[..head_end].to_vec();
        buf.drain(..head_end + 4);
        let mut lines = head
            .split(|&b| b == b'\n')
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
        let line = lines.next().unwrap_or(&[]).to_vec();
        let headers: Vec<(String, Vec<u8>)> = lines
            .filter_map(|l| {
                let colon = l.iter().position(|&b| b == b':')?;
                let name = String::from_utf8_lossy(&l[..colon]).into_owned();
                let value = l[colon + 1..].trim_ascii().to_vec();
                Some((name, value))
            })
            .collect();
        let len = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| std::str::from_utf8(v).ok()?.trim().parse::<usize>().ok())
            .unwrap_or(0);
        while buf.len() < len {
            let mut chunk = [0u8; 4096];
            match conn.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body: Vec<u8> = buf.drain(..len).collect();
        received.lock().unwrap().push(Received {
            line,
            headers,
            body,
        });
        if conn
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Lenient: 1\r\n\r\n")
            .is_err()
        {
            return;
        }
    }
}

/// Reads until `buf` holds a blank line; returns where it starts.
pub fn read_until_blank_line(conn: &mut TcpStream, buf: &mut Vec<u8>) -> Option<usize> {
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(i);
        }
        let mut chunk = [0u8; 4096];
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        if buf.len() > 1 << 20 {
            return None;
        }
    }
}

/// A response read off a raw socket.
#[derive(Debug, Clone)]
pub struct RawResponse {
    /// The status code (0 when the connection closed without a status line).
    pub status: u16,
    /// Everything received, for messages.
    pub text: String,
}

impl RawResponse {
    /// The value of response header `name`, if present.
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.text.split("\r\n\r\n").next()?;
        head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    }
}

/// Sends `request` bytes on a new connection to `port` and reads until the peer closes (send
/// `Connection: close`) or `timeout` passes.
pub fn raw_request(port: u16, request: &[u8], timeout: Duration) -> RawResponse {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the gateway");
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    s.write_all(request).unwrap();
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    while Instant::now() < deadline {
        let mut chunk = [0u8; 8192];
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| text.strip_prefix("HTTP/1.0 "))
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    RawResponse { status, text }
}
