//! `RawEmail` (schema `raw-email.avsc`): one inbound email as received, written by ingest and
//! read by the parser.

use serde::{Deserialize, Serialize};

/// How an email arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum IngestSource {
    #[serde(rename = "SMTP")]
    Smtp,
    #[serde(rename = "HTTP")]
    Http,
    #[serde(rename = "BACKFILL")]
    Backfill,
}

/// The SMTP envelope, or its equivalent for HTTP and backfill.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Envelope {
    /// MAIL FROM reverse path; `None` for the null sender `<>`.
    pub mail_from: Option<String>,
    pub rcpt_to: Vec<String>,
    pub remote_addr: Option<String>,
    pub helo: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawEmail {
    pub ingest_id: String,
    pub source: IngestSource,
    /// Milliseconds since the epoch.
    pub received_at: i64,
    pub envelope: Envelope,
    pub size: i64,
    /// Hex SHA-256 of the raw message.
    pub sha256: String,
    /// The raw message when under the inline limit.
    #[serde(with = "apache_avro::serde::bytes_opt")]
    pub raw: Option<Vec<u8>>,
    /// Claim check: where the raw message is stored when over the inline limit.
    pub blob_uri: Option<String>,
    /// Backfill: the file (and position) the email came from.
    pub origin: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::roundtrip::through_schema;

    #[test]
    fn round_trips_through_its_schema() {
        let email = RawEmail {
            ingest_id: "0b7c".into(),
            source: IngestSource::Smtp,
            received_at: 1_700_000_000_123,
            envelope: Envelope {
                mail_from: Some("a@example.com".into()),
                rcpt_to: vec!["deal-42@in.example.com".into()],
                remote_addr: Some("127.0.0.1:5000".into()),
                helo: None,
            },
            size: 5,
            sha256: "ab".into(),
            raw: Some(b"hello".to_vec()),
            blob_uri: None,
            origin: None,
        };
        assert_eq!(through_schema("raw-email.avsc", email.clone()), email);
    }
}
