//! Ingest errors, classified by how the caller should react.

use mailstream_runtime::RuntimeError;

/// Why an email could not be written durably.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The broker, the registry or the blob store failed; the sender should retry later
    /// (SMTP 451, HTTP 503).
    #[error("temporary failure: {0}")]
    Transient(String),
    /// The email cannot be written as it is (it does not fit the schema or the broker's
    /// limits); retrying will not help (SMTP 554, HTTP 422).
    #[error("permanent failure: {0}")]
    Permanent(String),
}

/// Errors that stop the ingest service or the backfill.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// Invalid configuration, every problem on its own line.
    #[error("invalid configuration:\n{}", .0.join("\n"))]
    Config(Vec<String>),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS: {0}")]
    Tls(String),
    #[error("kafka: {0}")]
    Kafka(String),
}

impl IngestError {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}
