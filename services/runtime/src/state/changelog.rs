//! Reading a changelog partition back, to restore a [`super::KeyedStore`] on assignment.
//!
//! A partition is read from its beginning to the high watermark seen when reading starts,
//! `read_committed`, so the records of an open or aborted transaction never come back. Control
//! records (transaction markers) take offsets too: the read ends on the position, not on a count
//! of records. A read that does not reach the watermark in time is a transient failure (the
//! runtime retries the assignment), never a partial restore.
//!
//! [`RecordReader`] reads one committed record back by its offset, for a processor that must
//! see again an input it handled earlier (the resolver relinking a reply): it keeps no copy.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::avro::AvroCodec;
use crate::config::RuntimeConfig;
use crate::error::{ProcessError, RuntimeError};
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

/// How long reading one record back may take before it counts as a transient failure.
const READ_BACK_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads single committed records of one topic back by partition and offset.
pub struct RecordReader {
    topic: String,
    consumer: BaseConsumer,
    codec: AvroCodec,
}

impl RecordReader {
    /// A reader of the logical topic `logical`, decoding through `codec`.
    pub fn new(
        config: &RuntimeConfig,
        naming: &Naming,
        logical: &str,
        codec: AvroCodec,
    ) -> Result<Self, RuntimeError> {
        let topic = naming.topic(logical);
        let consumer = kafka::reader_config(config, &format!("{topic}-read-back"))
            .create()
            .map_err(|e| RuntimeError::kafka(format!("creating a reader of {topic}"), e))?;
        Ok(Self {
            topic,
            consumer,
            codec,
        })
    }

    /// The committed record at `partition`/`offset`, or `None` when it is no longer there
    /// (deleted by retention) or was never a record (a transaction marker, an aborted write).
    pub async fn read<V: AvroRecord>(
        &self,
        partition: i32,
        offset: i64,
    ) -> Result<Option<V>, ProcessError> {
        let payload = tokio::task::block_in_place(|| self.read_payload(partition, offset))?;
        let Some(payload) = payload else {
            return Ok(None);
        };
        let value = self.codec.decode(Some(&payload)).await?;
        V::from_avro(value).map(Some).map_err(ProcessError::fatal)
    }

    fn read_payload(&self, partition: i32, offset: i64) -> Result<Option<Vec<u8>>, ProcessError> {
        let topic = &self.topic;
        let transient = |what: &str, e: rdkafka::error::KafkaError| {
            ProcessError::transient(format!("{what} {topic}[{partition}]@{offset}: {e}"))
        };
        let (low, high) = self
            .consumer
            .fetch_watermarks(topic, partition, READ_BACK_TIMEOUT)
            .map_err(|e| transient("reading the watermarks to read back", e))?;
        if offset < low || offset >= high {
            return Ok(None);
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Offset(offset))
            .map_err(|e| transient("assigning", e))?;
        self.consumer
            .assign(&tpl)
            .map_err(|e| transient("assigning", e))?;
        let deadline = std::time::Instant::now() + READ_BACK_TIMEOUT;
        while std::time::Instant::now() < deadline {
            match self.consumer.poll(Duration::from_millis(500)) {
                Some(Ok(m)) if m.offset() == offset => return Ok(m.payload().map(<[u8]>::to_vec)),
                // The offset held no record a read_committed reader sees.
                Some(Ok(m)) if m.offset() > offset => return Ok(None),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(transient("reading back", e)),
                None => {
                    let position = self
                        .consumer
                        .position()
                        .ok()
                        .and_then(|p| p.find_partition(topic, partition).map(|e| e.offset()))
                        .and_then(|o| o.to_raw());
                    if position.is_some_and(|p| p > offset) {
                        return Ok(None);
                    }
                }
            }
        }
        Err(ProcessError::transient(format!(
            "reading back {topic}[{partition}]@{offset} took over {READ_BACK_TIMEOUT:?}"
        )))
    }
}
