//! The metrics listener: `GET /metrics` (Prometheus text), `GET /healthz` (the process is up),
//! `GET /readyz` (it is serving). Kept off the proxy listeners so it is never exposed by accident.

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

/// The metrics listener's request handler.
pub struct AdminApp;

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
            "/readyz" => text(200, "ready\n"),
            _ => text(404, "not found: try /metrics, /healthz or /readyz\n"),
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
