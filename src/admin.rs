//! The metrics listener: `GET /metrics` (Prometheus text), `GET /healthz` (the process is up),
//! `GET /readyz` (it can serve: see `readiness`). Kept off the proxy listeners so it is never
//! exposed by accident.

use crate::clock;
use crate::readiness::Readiness;
use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use std::sync::Arc;

/// The metrics listener's request handler.
pub struct AdminApp {
    /// What readiness depends on.
    pub readiness: Arc<Readiness>,
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let path = session.req_header().uri.path().to_owned();
        match path.as_str() {
            "/metrics" => {
                if let Some(p) = self.readiness.providers() {
                    p.export_ages(clock::now());
                }
                pingora_prometheus::PrometheusHttpApp
                    .response(session)
                    .await
            }
            "/healthz" => text(200, "ok\n"),
            "/readyz" => self.ready().await,
            #[cfg(feature = "testing")]
            "/test/clock" => advance_clock(session),
            _ => text(404, "not found: try /metrics, /healthz or /readyz\n"),
        }
    }
}

impl AdminApp {
    /// 200 when every dependency is there, else 503; the JSON body names what is missing.
    async fn ready(&self) -> Response<Vec<u8>> {
        let report = self.readiness.check().await;
        let mut body = report.body.to_string();
        body.push('\n');
        let status = if report.ready { 200 } else { 503 };
        respond(status, "application/json", body.into_bytes())
    }
}

/// `POST /test/clock?advance=N`: moves this process's clock N seconds forward. Compiled only
/// with the `testing` feature, which the test suite turns on and a release build never has.
#[cfg(feature = "testing")]
fn advance_clock(session: &ServerSession) -> Response<Vec<u8>> {
    let req = session.req_header();
    let seconds = req
        .uri
        .query()
        .and_then(|q| q.strip_prefix("advance="))
        .and_then(|n| n.parse().ok());
    match seconds {
        Some(n) if req.method == http::Method::POST => {
            text(200, &format!("{}\n", clock::advance(n)))
        }
        _ => text(400, "expected POST /test/clock?advance=<seconds>\n"),
    }
}

fn text(status: u16, body: &str) -> Response<Vec<u8>> {
    respond(
        status,
        "text/plain; charset=utf-8",
        body.as_bytes().to_vec(),
    )
}

fn respond(status: u16, content_type: &'static str, body: Vec<u8>) -> Response<Vec<u8>> {
    let len = body.len();
    let mut r = Response::new(body);
    *r.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::OK);
    let headers = r.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    headers.insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(len));
    r
}
