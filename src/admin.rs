//! The metrics listener: `GET /metrics` (Prometheus text), `GET /healthz` (the process is up),
//! `GET /readyz` (it can serve: with `[redis]`, Redis answers). Kept off the proxy listeners so
//! it is never exposed by accident.

use crate::fleet::Fleet;
use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use std::sync::Arc;

/// The metrics listener's request handler.
#[derive(Default)]
pub struct AdminApp {
    /// The fleet's Redis, which readiness depends on.
    pub fleet: Option<Arc<Fleet>>,
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let path = session.req_header().uri.path().to_owned();
        match path.as_str() {
            "/metrics" => {
                pingora_prometheus::PrometheusHttpApp
                    .response(session)
                    .await
            }
            "/healthz" => text(200, "ok\n"),
            "/readyz" => self.ready().await,
            _ => text(404, "not found: try /metrics, /healthz or /readyz\n"),
        }
    }
}

impl AdminApp {
    /// 200 when every dependency answers, else 503 naming what does not. A Redis behind an
    /// open circuit breaker is reported at once, without waiting for a timeout.
    async fn ready(&self) -> Response<Vec<u8>> {
        let Some(fleet) = &self.fleet else {
            return text(200, "ready\n");
        };
        if fleet.redis.ping().await {
            text(200, "ready\nredis: ok\n")
        } else {
            text(503, "not ready\nredis: unavailable\n")
        }
    }
}

fn text(status: u16, body: &str) -> Response<Vec<u8>> {
    let mut r = Response::new(body.as_bytes().to_vec());
    *r.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::OK);
    let headers = r.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(
        http::header::CONTENT_LENGTH,
        http::HeaderValue::from(body.len()),
    );
    r
}
