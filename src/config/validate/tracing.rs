//! `[tracing]`: where spans go, and how many.

use super::*;

impl Builder<'_> {
    pub(super) fn tracing(
        &mut self,
        raw: Option<&toml::Spanned<RawTracing>>,
    ) -> Option<TracingSettings> {
        let raw = raw?;
        let (span, r) = (raw.span(), raw.get_ref());
        let key = |k: &str| format!("tracing.{k}");
        let endpoint = match &r.otlp_endpoint {
            Some(e) => self.url(e, &key("otlp_endpoint")).map(|mut url| {
                // A collector's base address (as OTEL_EXPORTER_OTLP_ENDPOINT) gets the traces path.
                if url.path() == "/" {
                    url.set_path("/v1/traces");
                }
                url.to_string()
            }),
            None => {
                self.err(
                    span,
                    key("otlp_endpoint"),
                    "missing otlp_endpoint: the collector's OTLP/HTTP address, e.g. otlp_endpoint = \"http://127.0.0.1:4318/v1/traces\"",
                );
                None
            }
        };
        let sample_ratio = match &r.sample_ratio {
            None => 1.0,
            Some(s) if (0.0..=1.0).contains(s.get_ref()) => *s.get_ref(),
            Some(s) => {
                self.err(
                    s.span(),
                    key("sample_ratio"),
                    format!(
                        "{} is out of range: expected a share from 0.0 (none) to 1.0 (every trace)",
                        s.get_ref()
                    ),
                );
                1.0
            }
        };
        let service_name = match &r.service_name {
            Some(n) if n.get_ref().trim().is_empty() => {
                self.err(n.span(), key("service_name"), "must not be empty");
                String::new()
            }
            Some(n) => n.get_ref().clone(),
            None => "oidc-gateway".to_owned(),
        };
        let timeout = self.duration(&r.timeout, &key("timeout"), Duration::from_secs(5));
        Some(TracingSettings {
            otlp_endpoint: endpoint?,
            sample_ratio,
            service_name,
            timeout,
        })
    }
}
