//! The durable write every channel ends in: builds the `RawEmail` record (inline bytes, or a
//! claim check in the blob store over `inline_limit_bytes`), encodes it with the registered
//! Avro schema and produces it to `raw-email` with a durable producer
//! ([`mailstream_runtime::kafka::durable`]: idempotent, `acks=all`, one request in flight),
//! returning only after the broker acknowledged it. SMTP answers 250 and HTTP 202 only after
//! [`Publisher::publish`] returned `Ok`.
//!
//! Record key: the ingest id. Headers: `mailstream.correlation_id` = the ingest id and a new
//! root W3C `traceparent`, so each email starts one trace.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mailstream_runtime::avro::{AvroCodec, registry_settings};
use mailstream_runtime::blob::{BlobStore, sha256_hex};
use mailstream_runtime::error::ProcessError;
use mailstream_runtime::headers::{CORRELATION_ID, TRACEPARENT, TraceContext};
use mailstream_runtime::kafka::durable_producer_config;
use mailstream_runtime::records::{Envelope, IngestSource, RawEmail};
use mailstream_runtime::{Naming, RuntimeConfig, Topology};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::util::Timeout;

use crate::config::IngestSettings;
use crate::error::{IngestError, PublishError};
use crate::events::{self, IngestMetrics};

/// The logical output topic.
pub const RAW_EMAIL: &str = "raw-email";

/// How long a record may wait for the broker before the write counts as failed (the sender is
/// then told to retry).
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

/// One email to write.
#[derive(Debug, Clone)]
pub struct Intake {
    pub source: IngestSource,
    pub envelope: Envelope,
    pub raw: Vec<u8>,
    /// Backfill: where the email came from.
    pub origin: Option<String>,
    /// A fixed ingest id (the backfill's deterministic one); `None` draws a random UUID.
    pub ingest_id: Option<String>,
}

/// What was written.
#[derive(Debug, Clone)]
pub struct Published {
    pub ingest_id: String,
    pub sha256: String,
    pub size: usize,
    pub blob_uri: Option<String>,
}

/// Writes `RawEmail` records durably. Shared by every session and request (`Arc`).
pub struct Publisher {
    producer: FutureProducer,
    codec: AvroCodec,
    blobs: BlobStore,
    topic: String,
    inline_limit: usize,
    metrics: IngestMetrics,
}

impl Publisher {
    /// Connects the producer, opens the blob store and registers the `raw-email` schema.
    pub async fn connect(
        config: &RuntimeConfig,
        settings: &IngestSettings,
        metrics: IngestMetrics,
    ) -> Result<Self, IngestError> {
        let topology = Topology::embedded()?;
        let naming = Naming::new(config.topic_prefix.clone());
        let codec = AvroCodec::new(
            registry_settings(config)?,
            &topology,
            &naming,
            &[RAW_EMAIL.to_string()],
        )?;
        codec.register_outputs().await?;
        let blobs = BlobStore::open(&settings.blob_url, &config.blob_options()).map_err(|e| {
            IngestError::Config(vec![format!(
                "{}: {e}",
                mailstream_runtime::config::key_label(crate::NAME, "blob_url")
            )])
        })?;
        let mut client = durable_producer_config(config);
        client
            .set("linger.ms", "2")
            .set("compression.type", "zstd")
            .set("message.max.bytes", "8388608")
            .set(
                "message.timeout.ms",
                DELIVERY_TIMEOUT.as_millis().to_string(),
            );
        let producer: FutureProducer = client
            .create()
            .map_err(|e| IngestError::Kafka(format!("creating the producer: {e}")))?;
        Ok(Self {
            producer,
            codec,
            blobs,
            topic: naming.topic(RAW_EMAIL),
            inline_limit: usize::try_from(settings.inline_limit_bytes).unwrap_or(usize::MAX),
            metrics,
        })
    }

    pub fn metrics(&self) -> &IngestMetrics {
        &self.metrics
    }

    /// Writes `intake` and waits for the broker's acknowledgement. `channel` labels metrics.
    pub async fn publish(&self, intake: Intake, channel: &str) -> Result<Published, PublishError> {
        let started = Instant::now();
        let ingest_id = intake
            .ingest_id
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let size = intake.raw.len();
        let (sha256, raw, blob_uri) = if size > self.inline_limit {
            let (uri, sha) = self.blobs.put(intake.raw).await.map_err(classify_blob)?;
            (sha, None, Some(uri))
        } else {
            (sha256_hex(&intake.raw), Some(intake.raw), None)
        };
        let record = RawEmail {
            ingest_id: ingest_id.clone(),
            source: intake.source,
            received_at: now_ms(),
            envelope: intake.envelope,
            size: i64::try_from(size).unwrap_or(i64::MAX),
            sha256: sha256.clone(),
            raw,
            blob_uri: blob_uri.clone(),
            origin: intake.origin,
        };
        let payload = self
            .codec
            .encode(RAW_EMAIL, &record)
            .await
            .map_err(|e| match e {
                ProcessError::Transient(m) => PublishError::Transient(m),
                other => PublishError::Permanent(other.to_string()),
            })?;
        let traceparent = TraceContext::new_root().child_header();
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: CORRELATION_ID,
                value: Some(ingest_id.as_str()),
            })
            .insert(Header {
                key: TRACEPARENT,
                value: Some(traceparent.as_str()),
            });
        let record = FutureRecord::to(&self.topic)
            .key(ingest_id.as_str())
            .payload(&payload)
            .headers(headers);
        self.producer
            .send(record, Timeout::After(DELIVERY_TIMEOUT))
            .await
            .map_err(|(e, _)| classify_kafka(e))?;
        events::accepted(
            &self.metrics,
            channel,
            &ingest_id,
            size,
            blob_uri.is_some(),
            started.elapsed(),
        );
        Ok(Published {
            ingest_id,
            sha256,
            size,
            blob_uri,
        })
    }

    /// Waits for anything still queued (every publish awaits its own delivery, so this is a
    /// safety net at shutdown).
    pub async fn flush(&self) {
        let producer = self.producer.clone();
        let result =
            tokio::task::spawn_blocking(move || producer.flush(Timeout::After(DELIVERY_TIMEOUT)))
                .await;
        if let Ok(Err(e)) = result {
            tracing::warn!(error = %e, "flushing the producer at shutdown failed");
        }
    }
}

fn classify_blob(e: ProcessError) -> PublishError {
    match e {
        ProcessError::Transient(m) => PublishError::Transient(m),
        other => PublishError::Permanent(other.to_string()),
    }
}

fn classify_kafka(e: KafkaError) -> PublishError {
    match e.rdkafka_error_code() {
        Some(RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::InvalidRecord) => {
            PublishError::Permanent(format!("the broker refused the record: {e}"))
        }
        _ => PublishError::Transient(format!("writing to Kafka: {e}")),
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}
