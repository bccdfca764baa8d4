//! A tiny OTLP/HTTP collector for tests: it accepts `POST /v1/traces` (protobuf), decodes the
//! spans as a real collector would, and keeps them for the test to inspect.

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One received span, flattened.
#[derive(Debug, Clone)]
pub struct SpanRecord {
    /// `service.name` of its resource.
    pub service: String,
    pub name: String,
    /// Hex ids.
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_id: String,
    /// OTLP span kind (2 server, 3 client, 1 internal).
    pub kind: i32,
    /// String and integer attributes, as text.
    pub attributes: Vec<(String, String)>,
    pub start_ns: u64,
    pub end_ns: u64,
}

impl SpanRecord {
    /// The value of attribute `key`.
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// A running collector.
pub struct OtlpCollector {
    /// `http://127.0.0.1:PORT/v1/traces`
    pub endpoint: String,
    spans: Arc<Mutex<Vec<SpanRecord>>>,
    _server: tokio::task::JoinHandle<()>,
}

impl OtlpCollector {
    /// Starts it on a free port (call inside a Tokio runtime).
    pub async fn start() -> OtlpCollector {
        let spans: Arc<Mutex<Vec<SpanRecord>>> = Arc::default();
        let app = axum::Router::new()
            .route("/v1/traces", post(receive))
            .with_state(spans.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        OtlpCollector {
            endpoint: format!("http://{addr}/v1/traces"),
            spans,
            _server: server,
        }
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<SpanRecord> {
        self.spans.lock().unwrap().clone()
    }

    /// Waits (up to 10 s) until a span satisfies `found`, and returns every span received.
    pub async fn wait_for(
        &self,
        what: &str,
        found: impl Fn(&SpanRecord) -> bool,
    ) -> Vec<SpanRecord> {
        self.wait_until(what, |spans| spans.iter().any(&found))
            .await
    }

    /// Waits (up to 10 s) until the spans received so far satisfy `done`, and returns them.
    pub async fn wait_until(
        &self,
        what: &str,
        done: impl Fn(&[SpanRecord]) -> bool,
    ) -> Vec<SpanRecord> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let spans = self.spans();
            if done(&spans) {
                return spans;
            }
            assert!(
                Instant::now() < deadline,
                "no span {what} arrived; received: {:#?}",
                spans.iter().map(|s| &s.name).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn receive(State(spans): State<Arc<Mutex<Vec<SpanRecord>>>>, body: Bytes) -> Vec<u8> {
    let req = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf export request");
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let text = |v: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>| {
        use opentelemetry_proto::tonic::common::v1::any_value::Value;
        match v.as_ref().and_then(|v| v.value.as_ref()) {
            Some(Value::StringValue(s)) => s.clone(),
            Some(Value::IntValue(i)) => i.to_string(),
            Some(Value::BoolValue(b)) => b.to_string(),
            Some(Value::DoubleValue(d)) => d.to_string(),
            _ => String::new(),
        }
    };
    let mut out = spans.lock().unwrap();
    for rs in req.resource_spans {
        let service = rs
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|a| a.key == "service.name")
            .map(|a| text(&a.value))
            .unwrap_or_default();
        for ss in rs.scope_spans {
            for s in ss.spans {
                out.push(SpanRecord {
                    service: service.clone(),
                    name: s.name,
                    trace_id: hex(&s.trace_id),
                    span_id: hex(&s.span_id),
                    parent_id: hex(&s.parent_span_id),
                    kind: s.kind,
                    attributes: s
                        .attributes
                        .iter()
                        .map(|a| (a.key.clone(), text(&a.value)))
                        .collect(),
                    start_ns: s.start_time_unix_nano,
                    end_ns: s.end_time_unix_nano,
                });
            }
        }
    }
    ExportTraceServiceResponse::default().encode_to_vec()
}
