//! Structured logs through `tracing`, as text for people or JSON for log pipelines.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt;

use crate::config::RuntimeConfig;
use crate::error::RuntimeError;

/// Installs the global subscriber. Call once, at the binary's start.
pub fn init_logging(config: &RuntimeConfig) -> Result<(), RuntimeError> {
    let filter = EnvFilter::try_new(&config.log_level).map_err(|e| {
        RuntimeError::Config(vec![format!(
            "key `log_level` (env MAILSTREAM_LOG_LEVEL): {e}"
        )])
    })?;
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let result = if config.log_format == "json" {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
    // A subscriber already set (tests, embedding) is fine.
    let _ = result;
    if config.otlp_endpoint.is_some() {
        tracing::warn!(
            "otlp_endpoint is set but OTLP export is not built in yet; traces are carried in headers only"
        );
    }
    Ok(())
}
