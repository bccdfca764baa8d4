//! OpenTelemetry traces (`[tracing]`): a server span per request, with child spans for
//! authentication, the gateway's own endpoints, every call to a provider and the upstream call,
//! exported over OTLP/HTTP in batches. W3C `traceparent` goes to the upstream; a client's is
//! continued only when it comes from `trusted_proxies` (anyone else could pick trace ids, or
//! force sampling).
//!
//! Off by default, and then free: no tracer is installed, and every hook returns after one
//! check of a `OnceLock`. The exporter runs on a thread of its own, started by a background
//! service after Pingora has daemonized (a thread started before the fork would not survive it).

use crate::config::TracingSettings;
use async_trait::async_trait;
use opentelemetry::context::FutureExt;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{Span, SpanKind, Status, TraceContextExt, Tracer, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};
use pingora::http::RequestHeader;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::future::Future;
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

/// The tracer, once the exporter runs.
static TRACER: OnceLock<SdkTracer> = OnceLock::new();

/// The tracer, when tracing is on (the one check every hook makes).
fn tracer() -> Option<&'static SdkTracer> {
    TRACER.get()
}

/// Builds the exporter and the tracer provider for `settings`.
fn provider(settings: &TracingSettings) -> Result<SdkTracerProvider, String> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_endpoint(&settings.otlp_endpoint)
        .with_timeout(settings.timeout)
        .build()
        .map_err(|e| format!("tracing: cannot build the OTLP exporter: {e}"))?;
    let sampler = Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(settings.sample_ratio)));
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(settings.service_name.clone())
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(sampler)
        .with_resource(resource)
        .build())
}

/// The tracer provider, for the flush at shutdown.
static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// Starts the exporter and turns tracing on. Its thread must not be started before Pingora
/// daemonizes (it would not survive the fork): without `--daemon` this runs while the server
/// is built, so the first discovery is traced too; with it, when [`TraceExport`] starts.
pub fn install(settings: &TracingSettings) -> Result<(), String> {
    if PROVIDER.get().is_some() {
        return Ok(());
    }
    // The exporter's blocking HTTP client must be built outside any async runtime.
    let settings = settings.clone();
    let provider = std::thread::spawn(move || provider(&settings))
        .join()
        .map_err(|_| "tracing: the OTLP exporter failed to start".to_owned())??;
    let _ = TRACER.set(provider.tracer("oidc-gateway"));
    let _ = PROVIDER.set(provider);
    Ok(())
}

/// Keeps the exporter running while the server runs (starting it, after a daemonizing fork),
/// and flushes what is left when the server stops.
pub struct TraceExport(pub TracingSettings);

#[async_trait]
impl BackgroundService for TraceExport {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        match install(&self.0) {
            Ok(()) => tracing::info!(
                endpoint = %self.0.otlp_endpoint,
                ratio = self.0.sample_ratio,
                "tracing requests (OTLP/HTTP)"
            ),
            Err(e) => {
                tracing::error!("{e}; requests are not traced");
                return;
            }
        }
        let _ = shutdown.changed().await;
        if let Some(provider) = PROVIDER.get() {
            // Blocks until the last batch is sent (within the export timeout).
            let provider = provider.clone();
            let _ = std::thread::spawn(move || provider.shutdown()).join();
        }
    }
}

/// The trace of one request: its server span, and the span of the current upstream attempt.
pub struct RequestTrace {
    cx: Context,
    upstream: Option<Context>,
}

impl RequestTrace {
    /// Starts the request's span, at `started`; `None` when tracing is off. The client's
    /// `traceparent` is continued only when `trusted()` (the peer is a trusted proxy).
    pub fn start(
        req: &RequestHeader,
        trusted: impl FnOnce() -> bool,
        started: Instant,
    ) -> Option<RequestTrace> {
        let tracer = tracer()?;
        let parent = if trusted() {
            TraceContextPropagator::new().extract(&Headers(&req.headers))
        } else {
            Context::new()
        };
        let method = req.method.as_str().to_owned();
        let span = tracer
            .span_builder(method.clone())
            .with_kind(SpanKind::Server)
            .with_start_time(back_to(started.elapsed()))
            .with_attributes([
                KeyValue::new("http.request.method", method),
                // The path only: a query may hold a code or a token.
                KeyValue::new("url.path", req.uri.path().to_owned()),
            ])
            .start_with_context(tracer, &parent);
        Some(RequestTrace {
            cx: parent.with_span(span),
            upstream: None,
        })
    }

    /// Names the span after the route that took the request (`GET app`).
    pub fn route(&self, method: &str, route: &str) {
        let span = self.cx.span();
        span.update_name(format!("{method} {route}"));
        span.set_attribute(KeyValue::new("http.route", route.to_owned()));
    }

    /// Starts the span of an upstream attempt (ending the previous one, a failed connect).
    pub fn upstream_attempt(&mut self, upstream: &str, target: &str) {
        let Some(tracer) = tracer() else { return };
        if let Some(previous) = self.upstream.take() {
            let span = previous.span();
            span.set_status(Status::error("connect failed; retried"));
            span.end();
        }
        let span = tracer
            .span_builder(format!("upstream {upstream}"))
            .with_kind(SpanKind::Client)
            .with_attributes([
                KeyValue::new("server.address", target.to_owned()),
                KeyValue::new("oidc_gateway.upstream", upstream.to_owned()),
            ])
            .start_with_context(tracer, &self.cx);
        self.upstream = Some(self.cx.with_span(span));
    }

    /// Sets `traceparent` (and `tracestate`) on the upstream request: the upstream attempt's
    /// span is the parent. Whatever the client sent is replaced.
    pub fn inject(&self, req: &mut RequestHeader) {
        req.remove_header("traceparent");
        req.remove_header("tracestate");
        let cx = self.upstream.as_ref().unwrap_or(&self.cx);
        TraceContextPropagator::new().inject_context(cx, &mut HeadersMut(req));
    }

    /// Ends the spans: the response's status, an error from 500 up.
    pub fn finish(self, status: u16) {
        if let Some(upstream) = self.upstream {
            upstream.span().end();
        }
        let span = self.cx.span();
        if status > 0 {
            span.set_attribute(KeyValue::new(
                "http.response.status_code",
                i64::from(status),
            ));
        }
        if status >= 500 || status == 0 {
            span.set_status(Status::error(""));
        }
        span.end();
    }
}

/// Runs `fut` in a child span `name` of the request's span (spans of provider calls made
/// inside become its children); without a trace, just runs it.
pub async fn within<F: Future>(
    trace: Option<&RequestTrace>,
    name: &'static str,
    fut: F,
) -> F::Output {
    let (Some(trace), Some(tracer)) = (trace, tracer()) else {
        return fut.await;
    };
    let span = tracer
        .span_builder(name)
        .with_kind(SpanKind::Internal)
        .start_with_context(tracer, &trace.cx);
    let cx = trace.cx.with_span(span);
    let out = fut.with_context(cx.clone()).await;
    cx.span().end();
    out
}

/// Records a call to a provider that took `elapsed` and has just ended: a child of the
/// request being served, or a trace of its own for background calls (discovery, keys).
pub fn idp_call(provider: &str, endpoint: &str, elapsed: Duration) {
    let Some(tracer) = tracer() else { return };
    let mut span = tracer
        .span_builder(format!("idp {endpoint}"))
        .with_kind(SpanKind::Client)
        .with_start_time(back_to(elapsed))
        .with_attributes([
            KeyValue::new("oidc_gateway.provider", provider.to_owned()),
            KeyValue::new("oidc_gateway.idp_endpoint", endpoint.to_owned()),
        ])
        .start_with_context(tracer, &Context::current());
    span.end();
}

/// The wall-clock time `ago` before now.
fn back_to(ago: Duration) -> SystemTime {
    SystemTime::now()
        .checked_sub(ago)
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

/// Request headers, read by the W3C propagator.
struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// The upstream request's headers, written by the W3C propagator.
struct HeadersMut<'a>(&'a mut RequestHeader);

impl Injector for HeadersMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        // An empty `tracestate` is no state: not a header.
        if value.is_empty() {
            return;
        }
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            let _ = self.0.insert_header(name, value);
        }
    }
}
