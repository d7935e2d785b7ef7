//! Names of the Kafka headers mailstream reads and writes, and the propagation of the
//! correlation id and W3C trace context from one topic to the next.

use rand::RngCore;

/// Correlation id: set at intake, copied to every record derived from it.
pub const CORRELATION_ID: &str = "mailstream.correlation_id";
/// W3C trace context (`00-<trace-id>-<span-id>-<flags>`).
pub const TRACEPARENT: &str = "traceparent";

/// Dead-letter headers (see `dlq.rs`).
pub const ERROR_CLASS: &str = "mailstream.error.class";
pub const ERROR_MESSAGE: &str = "mailstream.error.message";
pub const ERROR_PROCESSOR: &str = "mailstream.error.processor";
pub const ERROR_SOURCE_TOPIC: &str = "mailstream.error.source.topic";
pub const ERROR_SOURCE_PARTITION: &str = "mailstream.error.source.partition";
pub const ERROR_SOURCE_OFFSET: &str = "mailstream.error.source.offset";
pub const ERROR_TIME: &str = "mailstream.error.time";

/// The trace context of a record: its trace id and the span that produced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: String,
    pub parent_span_id: String,
    pub flags: String,
}

impl TraceContext {
    /// Parses a `traceparent` header value; `None` when it is not valid W3C trace context.
    pub fn parse(value: &str) -> Option<Self> {
        let parts: Vec<&str> = value.trim().split('-').collect();
        let hex = |s: &str, len: usize| s.len() == len && s.chars().all(|c| c.is_ascii_hexdigit());
        match parts.as_slice() {
            [version, trace, span, flags]
                if hex(version, 2)
                    && hex(trace, 32)
                    && hex(span, 16)
                    && hex(flags, 2)
                    && *trace != "0".repeat(32) =>
            {
                Some(Self {
                    trace_id: trace.to_ascii_lowercase(),
                    parent_span_id: span.to_ascii_lowercase(),
                    flags: flags.to_string(),
                })
            }
            _ => None,
        }
    }

    /// A new trace (for a record that arrived without one).
    pub fn new_root() -> Self {
        Self {
            trace_id: random_hex(16),
            parent_span_id: random_hex(8),
            flags: "01".into(),
        }
    }

    /// The `traceparent` for a record this hop writes: same trace, a new span id.
    pub fn child_header(&self) -> String {
        format!("00-{}-{}-{}", self.trace_id, random_hex(8), self.flags)
    }
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trip_keeps_the_trace_and_changes_the_span() {
        let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let ctx = TraceContext::parse(parent).expect("valid");
        let child = ctx.child_header();
        let child_ctx = TraceContext::parse(&child).expect("valid child");
        assert_eq!(child_ctx.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_ne!(child_ctx.parent_span_id, "00f067aa0ba902b7");
        assert!(TraceContext::parse("00-zz-1-01").is_none());
        assert!(
            TraceContext::parse(&format!("00-{}-00f067aa0ba902b7-01", "0".repeat(32))).is_none()
        );
    }
}
