//! The second baseline: a minimal Pingora 0.9 `ProxyHttp` with default settings — it looks for
//! a cookie, adds one upstream header and counts requests, nothing else. It tells how much of
//! the gateway's distance to nginx is Pingora's own per-request cost on this machine.
//!
//! It runs as its own process (the bench binary started again with `--bare-pingora`), so it
//! shares nothing with the load generator's runtime.

use async_trait::async_trait;
use pingora::prelude::*;
use pingora::server::configuration::{Opt, ServerConf};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

/// `--bare-pingora LISTEN_PORT UPSTREAM_PORT`: serves until SIGTERM.
pub fn serve(listen: u16, upstream: u16) {
    let conf = ServerConf {
        // As many threads as the gateway uses (one per core here); everything else default.
        threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        pid_file: std::env::temp_dir()
            .join(format!("bare-pingora-{listen}.pid"))
            .display()
            .to_string(),
        upgrade_sock: std::env::temp_dir()
            .join(format!("bare-pingora-{listen}.sock"))
            .display()
            .to_string(),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
    server.bootstrap();
    let mut proxy = http_proxy_service(
        &server.configuration,
        Bare {
            upstream: SocketAddr::from(([127, 0, 0, 1], upstream)),
            requests: AtomicU64::new(0),
        },
    );
    proxy.add_tcp(&format!("127.0.0.1:{listen}"));
    server.add_service(proxy);
    server.run_forever();
}

struct Bare {
    upstream: SocketAddr,
    requests: AtomicU64,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = bool;

    fn new_ctx(&self) -> bool {
        false
    }

    async fn request_filter(&self, session: &mut Session, has_cookie: &mut bool) -> Result<bool> {
        *has_cookie = session.req_header().headers.contains_key("cookie");
        Ok(false)
    }

    async fn upstream_peer(&self, _: &mut Session, _: &mut bool) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream, false, String::new())))
    }

    async fn upstream_request_filter(
        &self,
        _: &mut Session,
        req: &mut RequestHeader,
        has_cookie: &mut bool,
    ) -> Result<()> {
        req.insert_header("x-has-cookie", if *has_cookie { "1" } else { "0" })
    }

    async fn logging(&self, _: &mut Session, _: Option<&Error>, _: &mut bool) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }
}
