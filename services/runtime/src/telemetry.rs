//! Logs and traces.
//!
//! Logs: `tracing` to stderr, as text for people or JSON for log pipelines.
//! Traces (opt-in, `otlp_endpoint`): each processed record is a span exported over OTLP/HTTP,
//! parented on the W3C `traceparent` header of the record it came from; the records it writes
//! carry the span's own `traceparent`, so one email is one trace from intake to the CRM. Without
//! an endpoint the trace context is still carried from topic to topic (see `headers.rs`).

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::{SpanExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, fmt};

use crate::config::RuntimeConfig;
use crate::error::RuntimeError;

/// Flushes and stops trace export when dropped (at the end of `main`).
#[must_use = "traces are flushed when the guard is dropped"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(e) = provider.shutdown()
        {
            eprintln!("flushing traces failed: {e}");
        }
    }
}

/// Installs the global subscriber (logs, and traces when `otlp_endpoint` is set) for `service`.
pub fn init(config: &RuntimeConfig, service: &str) -> Result<TelemetryGuard, RuntimeError> {
    let filter = EnvFilter::try_new(&config.log_level).map_err(|e| {
        RuntimeError::Config(vec![format!(
            "key `log_level` (env MAILSTREAM_LOG_LEVEL): {e}"
        )])
    })?;
    let logs = if config.log_format == "json" {
        fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(std::io::stderr)
            .boxed()
    } else {
        fmt::layer().with_writer(std::io::stderr).boxed()
    };
    let provider = match &config.otlp_endpoint {
        Some(endpoint) => Some(tracer_provider(endpoint, service)?),
        None => None,
    };
    let traces = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("mailstream"))
            .boxed()
    });
    // A subscriber that is already set (tests, embedding) is kept.
    let _ = tracing_subscriber::registry()
        .with(traces)
        .with(logs.with_filter(filter))
        .try_init();
    Ok(TelemetryGuard { provider })
}

fn tracer_provider(endpoint: &str, service: &str) -> Result<SdkTracerProvider, RuntimeError> {
    let exporter = SpanExporter::builder()
        .with_http()
        .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
        .build()
        .map_err(|e| {
            RuntimeError::Config(vec![format!(
                "key `otlp_endpoint` (env MAILSTREAM_OTLP_ENDPOINT): {e}"
            )])
        })?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            Resource::builder()
                .with_service_name(format!("mailstream-{service}"))
                .build(),
        )
        .build())
}

/// Makes the `traceparent` of an incoming record the parent of `span`.
pub fn set_remote_parent(span: &Span, traceparent: &str) {
    let carrier = HashMap::from([("traceparent".to_string(), traceparent.to_string())]);
    let context = TraceContextPropagator::new().extract(&carrier);
    let _ = span.set_parent(context);
}

/// The `traceparent` naming `span`, when trace export is on (`None` otherwise).
pub fn traceparent_of(span: &Span) -> Option<String> {
    let context = span.context();
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    carrier.remove("traceparent")
}
