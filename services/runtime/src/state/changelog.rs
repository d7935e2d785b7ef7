//! Reading a changelog partition back, to restore a [`super::KeyedStore`] on assignment.
//!
//! A partition is read from its beginning to the high watermark seen when reading starts,
//! `read_committed`, so the records of an open or aborted transaction never come back. Control
//! records (transaction markers) take offsets too: the read ends on the position, not on a count
//! of records. A read that does not reach the watermark in time is a transient failure (the
//! runtime retries the assignment), never a partial restore.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::avro::AvroCodec;
use crate::config::RuntimeConfig;
use crate::error::ProcessError;
use crate::kafka;
use crate::processor::AvroRecord;
use crate::topology::Naming;

/// What a processor may use while partitions are being assigned: reading changelogs.
pub struct RestoreContext<'a> {
    pub(crate) config: &'a RuntimeConfig,
    pub(crate) naming: &'a Naming,
    pub(crate) codec: &'a AvroCodec,
}

impl<'a> RestoreContext<'a> {
    /// A context for reading changelogs outside the processing loop (benchmarks, tools); the
    /// loop builds its own before calling `Processor::on_assigned`.
    pub fn new(config: &'a RuntimeConfig, naming: &'a Naming, codec: &'a AvroCodec) -> Self {
        Self {
            config,
            naming,
            codec,
        }
    }

    /// Every committed record of `partition` of the logical changelog topic, oldest first, as
    /// (key, value or `None` for a tombstone, timestamp ms).
    pub async fn read_changelog<V: AvroRecord>(
        &self,
        changelog: &str,
        partition: i32,
    ) -> Result<Vec<(String, Option<V>, i64)>, ProcessError> {
        let topic = self.naming.topic(changelog);
        let raw = read_partition(self.config, &topic, partition)?;
        let mut records = Vec::with_capacity(raw.len());
        for (key, payload, timestamp) in raw {
            let value = match payload {
                None => None,
                Some(bytes) => {
                    let value = self.codec.decode(Some(&bytes)).await?;
                    Some(V::from_avro(value).map_err(ProcessError::fatal)?)
                }
            };
            records.push((key, value, timestamp));
        }
        Ok(records)
    }
}

type RawRecord = (String, Option<Vec<u8>>, i64);

/// How long reading one changelog partition may take before it counts as a transient failure.
const RESTORE_TIMEOUT: Duration = Duration::from_secs(120);

/// Reads one partition from the beginning to its high watermark (read_committed).
fn read_partition(
    config: &RuntimeConfig,
    topic: &str,
    partition: i32,
) -> Result<Vec<RawRecord>, ProcessError> {
    let transient = |what: &str, e: rdkafka::error::KafkaError| {
        ProcessError::transient(format!("{what} {topic}[{partition}]: {e}"))
    };
    let consumer: BaseConsumer = kafka::reader_config(config, &format!("{topic}-restore"))
        .create()
        .map_err(|e| transient("creating a reader for", e))?;
    let (_, high) = consumer
        .fetch_watermarks(topic, partition, Duration::from_secs(10))
        .map_err(|e| transient("reading the watermarks of", e))?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Beginning)
        .map_err(|e| transient("assigning", e))?;
    consumer
        .assign(&tpl)
        .map_err(|e| transient("assigning", e))?;
    let mut records = Vec::new();
    let mut position = 0;
    let deadline = std::time::Instant::now() + RESTORE_TIMEOUT;
    // Control records (transaction markers) count in offsets, so stop on the position, not
    // on the number of records read.
    while position < high {
        if std::time::Instant::now() > deadline {
            return Err(ProcessError::transient(format!(
                "restoring {topic}[{partition}] did not reach offset {high} within {RESTORE_TIMEOUT:?} (an open transaction?)"
            )));
        }
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => {
                position = m.offset() + 1;
                let key = m
                    .key()
                    .map(|k| String::from_utf8_lossy(k).into_owned())
                    .unwrap_or_default();
                let timestamp = m.timestamp().to_millis().unwrap_or_default();
                records.push((key, m.payload().map(<[u8]>::to_vec), timestamp));
            }
            Some(Err(e)) => return Err(transient("reading", e)),
            None => {
                position = consumer
                    .position()
                    .ok()
                    .and_then(|p| p.find_partition(topic, partition).map(|e| e.offset()))
                    .and_then(|o| o.to_raw())
                    .unwrap_or(position)
                    .max(position);
            }
        }
    }
    Ok(records)
}
