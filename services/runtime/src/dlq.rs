//! The dead-letter path: a record that cannot be processed is written, unchanged, to
//! `<input>.dlq` with headers that say what went wrong and where it came from, in the same
//! transaction as the input's offset. The stream goes on.

use rdkafka::message::{Header, OwnedHeaders};

use crate::headers;

/// The longest reason a dead letter carries; a longer one is cut (at a character boundary) so
/// the headers always fit the room the topology keeps for them.
pub const MAX_REASON_BYTES: usize = 4096;

/// `reason` cut to [`MAX_REASON_BYTES`].
fn bounded(reason: &str) -> &str {
    if reason.len() <= MAX_REASON_BYTES {
        return reason;
    }
    let mut end = MAX_REASON_BYTES;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

/// Where a dead letter came from and why.
#[derive(Debug, Clone)]
pub struct DeadLetter<'a> {
    pub processor: &'a str,
    /// Logical source topic.
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub class: &'a str,
    pub reason: &'a str,
}

impl DeadLetter<'_> {
    /// The original headers with the error headers appended.
    pub fn headers(&self, original: &[(String, Option<Vec<u8>>)]) -> OwnedHeaders {
        let mut out = OwnedHeaders::new_with_capacity(original.len() + 7);
        for (key, value) in original {
            out = out.insert(Header {
                key,
                value: value.as_deref(),
            });
        }
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let partition = self.partition.to_string();
        let offset = self.offset.to_string();
        for (key, value) in [
            (headers::ERROR_CLASS, self.class),
            (headers::ERROR_MESSAGE, bounded(self.reason)),
            (headers::ERROR_PROCESSOR, self.processor),
            (headers::ERROR_SOURCE_TOPIC, self.topic),
            (headers::ERROR_SOURCE_PARTITION, partition.as_str()),
            (headers::ERROR_SOURCE_OFFSET, offset.as_str()),
            (headers::ERROR_TIME, now.as_str()),
        ] {
            out = out.insert(Header {
                key,
                value: Some(value.as_bytes()),
            });
        }
        out
    }
}
