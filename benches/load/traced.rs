//! The tracing rows: the gateway restarted with `[tracing]` on (every request sampled) and
//! exporting to a sink in this process that accepts OTLP/HTTP posts as a collector would, only
//! counting them.

use super::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// What the sink received: export requests and their bytes.
#[derive(Default)]
pub struct SinkCounts {
    pub posts: AtomicU64,
    pub bytes: AtomicU64,
}

/// Starts the sink on a free port: its traces URL, and its counts.
pub async fn start_sink() -> (String, Arc<SinkCounts>) {
    let counts = Arc::new(SinkCounts::default());
    let c = counts.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let c = c.clone();
            async move {
                c.posts.fetch_add(1, Ordering::Relaxed);
                c.bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
                // An empty ExportTraceServiceResponse.
                (
                    [("content-type", "application/x-protobuf")],
                    Vec::<u8>::new(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1/traces", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, counts)
}

/// The gateway's config (cookie store) with every request traced to `endpoint`.
pub fn traced_gateway_config(d: &Path, p: &Ports, endpoint: &str) -> String {
    format!(
        "{}\n[tracing]\notlp_endpoint = \"{endpoint}\"\nsample_ratio = 1.0\n",
        gateway_config(d, p, "cookie")
    )
}
