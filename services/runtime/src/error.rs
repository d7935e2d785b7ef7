//! Errors that say how to react.
//!
//! A processor never decides *how* to retry or where a bad record goes; it only says what kind
//! of failure it met. The runtime turns that into an action:
//!
//! | kind        | action                                                               |
//! |-------------|----------------------------------------------------------------------|
//! | `Poison`    | the record goes to the dead-letter topic in the same transaction     |
//! | `Transient` | the transaction is aborted, the batch rewound, retried after backoff |
//! | `Fatal`     | the transaction is aborted and the process exits non-zero            |

use std::fmt;

/// What a processor reports for one record.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The record itself is bad: retrying cannot help. It is dead-lettered with `class`
    /// (a short machine-readable slug such as `mime-unparseable`) and `reason`.
    #[error("poison record ({class}): {reason}")]
    Poison { class: String, reason: String },
    /// Something outside the record failed (a dependency, the network). Retrying may help.
    #[error("transient failure: {0}")]
    Transient(String),
    /// The process cannot go on (bad configuration discovered late, a broken invariant).
    #[error("fatal: {0}")]
    Fatal(String),
}

impl ProcessError {
    pub fn poison(class: impl Into<String>, reason: impl fmt::Display) -> Self {
        Self::Poison {
            class: class.into(),
            reason: reason.to_string(),
        }
    }

    pub fn transient(reason: impl fmt::Display) -> Self {
        Self::Transient(reason.to_string())
    }

    pub fn fatal(reason: impl fmt::Display) -> Self {
        Self::Fatal(reason.to_string())
    }
}

/// Errors of the runtime itself, each tagged with the part of the system it comes from.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// Configuration is invalid; every problem found is listed, one per line.
    #[error("invalid configuration:\n{}", .0.join("\n"))]
    Config(Vec<String>),
    #[error("topology: {0}")]
    Topology(String),
    #[error("kafka: {context}: {source}")]
    Kafka {
        context: String,
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// A blocking call into librdkafka (`call`) did not return within `waited`, its own timeout
    /// plus a margin: the client it was made on is abandoned and replaced.
    #[error("kafka: {call} did not return within {waited:?}")]
    Hung {
        call: String,
        waited: std::time::Duration,
    },
    #[error("schema registry: {0}")]
    Registry(String),
    #[error("processor: {0}")]
    Processor(String),
    #[error("io: {context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl RuntimeError {
    pub fn kafka(context: impl Into<String>, source: rdkafka::error::KafkaError) -> Self {
        Self::Kafka {
            context: context.into(),
            source,
        }
    }

    /// Whether retrying the failed operation later may succeed.
    pub fn is_retriable(&self) -> bool {
        match self {
            Self::Kafka { source, .. } => match source {
                rdkafka::error::KafkaError::Transaction(e) => e.is_retriable(),
                other => other
                    .rdkafka_error_code()
                    .is_some_and(|c| !matches!(c, rdkafka::types::RDKafkaErrorCode::Fatal)),
            },
            Self::Registry(_) => true,
            _ => false,
        }
    }

    /// Whether the transactional producer was fenced: the coordinator ended its transaction
    /// (it outlived `transaction.timeout.ms`, so the producer's epoch was bumped) or another
    /// producer initialised the same transactional id. That producer can do nothing more; a
    /// new one, initialised afresh, can.
    pub fn is_fenced(&self) -> bool {
        use rdkafka::types::RDKafkaErrorCode::{Fenced, InvalidProducerEpoch, ProducerFenced};
        match self {
            Self::Kafka { source, .. } => matches!(
                source.rdkafka_error_code(),
                Some(Fenced | ProducerFenced | InvalidProducerEpoch)
            ),
            _ => false,
        }
    }

    /// Whether librdkafka raised a fatal error on the producer (for example
    /// INVALID_TXN_STATE when an abort races a request a broker outage cut short): the
    /// instance is unusable from then on, and librdkafka's documented remedy is a new one.
    pub fn is_fatal_to_producer(&self) -> bool {
        match self {
            Self::Kafka { source, .. } => match source {
                rdkafka::error::KafkaError::Transaction(e) => e.is_fatal(),
                other => matches!(
                    other.rdkafka_error_code(),
                    Some(rdkafka::types::RDKafkaErrorCode::Fatal)
                ),
            },
            _ => false,
        }
    }

    /// Whether the transactional producer can do nothing more and a new one, initialised
    /// afresh, must take its place: it was fenced, raised a fatal error, or one of its calls
    /// hung.
    pub fn needs_new_producer(&self) -> bool {
        self.is_fenced() || self.is_fatal_to_producer() || matches!(self, Self::Hung { .. })
    }
}

pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;
