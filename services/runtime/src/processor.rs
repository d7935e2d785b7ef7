//! The contract between the runtime and a processor.
//!
//! A processor is a small struct implementing [`Processor`]: it receives one decoded record at a
//! time and emits zero or more output records through [`Outputs`]. Consuming, Avro, transactions,
//! offsets, dead letters, metrics, tracing, health and shutdown belong to the runtime
//! ([`crate::stream`]), so a processor file reads as its business logic.

use std::future::Future;
use std::time::Instant;

use apache_avro::types::Value;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::catalog::WriterSchema;
use crate::error::ProcessError;
use crate::state::RestoreContext;

/// A type that travels as an Avro record. Implemented for every serde type, and for
/// [`GenericRecord`] when a processor works on untyped values.
pub trait AvroRecord: Sized + Send + 'static {
    fn from_avro(value: Value) -> Result<Self, String>;
    fn into_avro(self) -> Result<Value, String>;
    /// Appends the record's Avro binary encoding under `schema` to `out`. Serde types write
    /// themselves field by field (no intermediate `Value`).
    fn write_avro(&self, schema: &WriterSchema, out: &mut Vec<u8>) -> Result<(), String>;
}

impl<T: Serialize + DeserializeOwned + Send + 'static> AvroRecord for T {
    fn from_avro(value: Value) -> Result<Self, String> {
        apache_avro::from_value(&value).map_err(|e| e.to_string())
    }

    fn into_avro(self) -> Result<Value, String> {
        apache_avro::to_value(self).map_err(|e| e.to_string())
    }

    fn write_avro(&self, schema: &WriterSchema, out: &mut Vec<u8>) -> Result<(), String> {
        schema.write_ser(self, out)
    }
}

/// An Avro value as decoded, for processors that do not need a typed view.
#[derive(Debug, Clone, PartialEq)]
pub struct GenericRecord(pub Value);

impl AvroRecord for GenericRecord {
    fn from_avro(value: Value) -> Result<Self, String> {
        Ok(Self(value))
    }

    fn into_avro(self) -> Result<Value, String> {
        Ok(self.0)
    }

    fn write_avro(&self, schema: &WriterSchema, out: &mut Vec<u8>) -> Result<(), String> {
        schema.write_value(&self.0, out)
    }
}

/// Where a consumed record came from.
#[derive(Debug, Clone)]
pub struct RecordMeta {
    /// Logical topic name (without the deployment prefix).
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// Kafka timestamp in milliseconds, if the record has one.
    pub timestamp_ms: Option<i64>,
    /// Carried from the first topic to the last in the `mailstream.correlation_id` header.
    pub correlation_id: String,
    /// When the work for this record must be done: its batch's transaction commits after, and
    /// the coordinator aborts one older than `transaction_timeout_ms`
    /// ([`crate::RuntimeConfig::transaction_work_time`] after the transaction began). Work
    /// that cannot finish by then should fail as transient: the batch is retried.
    pub deadline: Instant,
}

/// One consumed record, decoded.
#[derive(Debug)]
pub struct Incoming<T> {
    pub key: Option<String>,
    pub value: T,
    pub meta: RecordMeta,
}

/// An output record as the processor handed it over, encoded by the runtime against the
/// output topic's schema.
pub(crate) trait EmittedValue: Send {
    fn write_avro(&self, schema: &WriterSchema, out: &mut Vec<u8>) -> Result<(), String>;
}

impl<T: AvroRecord> EmittedValue for T {
    fn write_avro(&self, schema: &WriterSchema, out: &mut Vec<u8>) -> Result<(), String> {
        AvroRecord::write_avro(self, schema, out)
    }
}

/// An output a processor asked for, not yet encoded.
pub(crate) struct Emitted {
    pub topic: String,
    /// An explicit partition (changelogs follow their input partition); `None` = by key.
    pub partition: Option<i32>,
    pub key: Option<String>,
    /// `None` is a tombstone (deletes `key` from a compacted topic).
    pub value: Option<Box<dyn EmittedValue>>,
}

impl std::fmt::Debug for Emitted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emitted")
            .field("topic", &self.topic)
            .field("partition", &self.partition)
            .field("key", &self.key)
            .field("tombstone", &self.value.is_none())
            .finish()
    }
}

/// The records a processor emits for one input. They are written in the same transaction as
/// the input's offset, so they appear downstream exactly once or not at all.
#[derive(Debug, Default)]
pub struct Outputs {
    pub(crate) records: Vec<Emitted>,
}

impl Outputs {
    /// Emits `value` to the logical topic `topic`. Where it goes is checked when the
    /// processor returns: a topic that is not one of its outputs in the topology is fatal, a
    /// record over the topic's budget dead-letters the input.
    pub fn send<T: AvroRecord>(&mut self, topic: &str, key: impl Into<String>, value: T) {
        self.records.push(Emitted {
            topic: topic.to_string(),
            partition: None,
            key: Some(key.into()),
            value: Some(Box::new(value)),
        });
    }

    /// Emits `value` to partition `partition` of `topic` (for changelogs co-partitioned with
    /// the input).
    pub fn send_to_partition<T: AvroRecord>(
        &mut self,
        topic: &str,
        partition: i32,
        key: impl Into<String>,
        value: T,
    ) {
        self.send(topic, key, value);
        if let Some(last) = self.records.last_mut() {
            last.partition = Some(partition);
        }
    }

    /// Emits a tombstone for `key` on the compacted topic `topic`.
    pub fn tombstone(&mut self, topic: &str, key: impl Into<String>) {
        self.records.push(Emitted {
            topic: topic.to_string(),
            partition: None,
            key: Some(key.into()),
            value: None,
        });
    }

    /// Emits a tombstone for `key` to partition `partition` of `topic`.
    pub fn tombstone_to_partition(&mut self, topic: &str, partition: i32, key: impl Into<String>) {
        self.tombstone(topic, key);
        if let Some(last) = self.records.last_mut() {
            last.partition = Some(partition);
        }
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

/// A stream processor: the business logic of one service.
///
/// The runtime calls [`Processor::process`] for each record in order per partition. Outputs of
/// one transaction become visible together; when a transaction is aborted (rebalance, transient
/// failure) [`Processor::on_abort`] lets a processor drop state it changed since the last commit.
pub trait Processor: Send + 'static {
    /// The decoded value type of the input topic.
    type Input: AvroRecord;

    /// The processor's name in the topology (also its config section).
    const NAME: &'static str;

    fn process(
        &mut self,
        record: Incoming<Self::Input>,
        out: &mut Outputs,
    ) -> impl Future<Output = Result<(), ProcessError>> + Send;

    /// Partitions of the input were assigned to this instance: restore their state (from
    /// changelogs, through `ctx`) before their first record is processed.
    fn on_assigned(
        &mut self,
        partitions: &[i32],
        ctx: &RestoreContext<'_>,
    ) -> impl Future<Output = Result<(), ProcessError>> + Send {
        let _ = (partitions, ctx);
        async { Ok(()) }
    }

    /// Partitions were taken away: forget their state.
    fn on_revoked(&mut self, partitions: &[i32]) {
        let _ = partitions;
    }

    /// The open transaction is about to commit (its records are processed, its outputs sent):
    /// make durable what `process` held back, such as a database transaction spanning the
    /// batch. An error aborts the batch as one from `process` would: transient (and poison,
    /// which no single record owns here) retry the batch, fatal stops the processor.
    /// It must be done by `deadline`, the batch's [`RecordMeta::deadline`].
    fn before_commit(
        &mut self,
        deadline: Instant,
    ) -> impl Future<Output = Result<(), ProcessError>> + Send {
        let _ = deadline;
        async { Ok(()) }
    }

    /// No input has arrived for a while (half a second) and no transaction is open: emit what
    /// no input record triggers, such as a link whose other half arrived through a table. The
    /// outputs go in a transaction of their own, without input offsets, ended like a batch:
    /// [`Processor::on_commit`] or [`Processor::on_abort`] (then `on_idle` comes again). Poison
    /// or a transient error drops them ([`Processor::undo_record`], logged) until the next
    /// call; fatal stops the processor. State changed here must be on partitions the processor
    /// owns, in stores whose changelog takes the change in the same transaction.
    fn on_idle(
        &mut self,
        out: &mut Outputs,
    ) -> impl Future<Output = Result<(), ProcessError>> + Send {
        let _ = out;
        async { Ok(()) }
    }

    /// The transaction holding every record processed since the last call has committed.
    fn on_commit(&mut self) {}

    /// The transaction was aborted; its records will be processed again.
    fn on_abort(&mut self) {}

    /// The record `process` was just called with is dead-lettered instead: the processor
    /// returned poison, panicked, or an output can never be written (over its topic's record
    /// budget). None of its outputs are written, so undo what processing it changed in memory
    /// (a state store rolls back to a [`crate::state::KeyedStore::mark`] taken before it).
    fn undo_record(&mut self) {}
}
