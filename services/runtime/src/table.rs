//! Global tables: a compacted topic (contacts, accounts, threads) read in full by every
//! instance and kept current in memory, for lookups while processing.
//!
//! The reader assigns itself every partition from the beginning (no consumer group: every
//! instance needs every key), reads `read_committed`, and applies upserts and tombstones. A row
//! is never skipped because the schema registry did not answer: the table waits for it (at
//! start, start-up waits), since a row missed then would be missing until it is written again.
//! [`GlobalTable::start`] returns once the table has caught up with the end offsets it saw at
//! start, so the first record a processor sees is resolved against a complete table; after that
//! a background task follows new records until shutdown.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::avro::{AvroCodec, registry_settings};
use crate::config::RuntimeConfig;
use crate::error::{ProcessError, RuntimeError};
use crate::events;
use crate::kafka;
use crate::processor::AvroRecord;
use crate::shutdown::Shutdown;
use crate::stream::Backoff;
use crate::topology::Naming;

/// How long start-up waits for the table's topic to appear in the metadata.
const TOPIC_WAIT: Duration = Duration::from_secs(20);

/// How long catching up at start may go without reading a record.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(300);

/// How often start-up says it is still waiting for unreachable brokers, and a table for the
/// registry.
const UNREACHABLE_REPORT: Duration = Duration::from_secs(10);

/// Why a table's partitions could not be listed.
enum Discovery {
    /// The brokers did not answer: nothing is known about the topic.
    Unreachable(String),
    /// The brokers answered without the topic (or without partitions for it).
    Missing(String),
}

/// How many arrivals a table keeps between two [`GlobalTable::take_arrivals`].
const ARRIVALS_MAX: usize = 100_000;

/// An in-memory view of a compacted topic: key → latest value.
#[derive(Debug)]
pub struct GlobalTable<V> {
    topic: String,
    rows: RwLock<HashMap<String, V>>,
    /// Keys upserted since the last take, once [`GlobalTable::record_arrivals`] asked for them.
    arrivals: Mutex<Option<Arrivals>>,
    /// When a reader error was last said, and how many came since.
    reader_errors: Mutex<(Option<Instant>, u64)>,
}

/// The keys a table applied an upsert for since they were last taken, in the order applied
/// (each row is in the table before its key is here).
#[derive(Debug, Default)]
pub struct Arrivals {
    pub keys: Vec<String>,
    /// More than [`ARRIVALS_MAX`] arrived: `keys` holds the first of them only, so a caller
    /// that must not miss one looks at the whole table instead.
    pub overflowed: bool,
}

impl<V: AvroRecord + Clone + Sync> GlobalTable<V> {
    /// Reads the logical topic `table` to its current end, then follows it in the background.
    pub async fn start(
        config: &RuntimeConfig,
        naming: &Naming,
        table: &str,
        shutdown: Shutdown,
    ) -> Result<Arc<Self>, RuntimeError> {
        let topic = naming.topic(table);
        let kafka_error = |context: &str, e| RuntimeError::kafka(format!("{context} {topic}"), e);
        let consumer: StreamConsumer =
            kafka::reader_config(config, &format!("{topic}-table-reader"))
                .create()
                .map_err(|e| kafka_error("creating the table reader of", e))?;
        // A topic created moments ago (by `topology apply`) may not be in the metadata yet, or
        // have no leader yet: retry for a while before calling it missing. Brokers that cannot
        // be reached say nothing about the topic: wait for them as long as it takes.
        let mut looking = Instant::now();
        let mut reported = Instant::now();
        let (ends, tpl) = loop {
            match discover(&consumer, &topic) {
                Ok(found) => break found,
                Err(Discovery::Unreachable(problem)) => {
                    looking = Instant::now();
                    if reported.elapsed() > UNREACHABLE_REPORT {
                        events::table_waiting_for_brokers(&topic, &problem);
                        reported = Instant::now();
                    }
                    if shutdown.is_triggered() {
                        return Err(RuntimeError::Topology(format!(
                            "table topic {topic}: shut down while waiting for the brokers ({problem})"
                        )));
                    }
                }
                Err(Discovery::Missing(problem)) if looking.elapsed() > TOPIC_WAIT => {
                    return Err(RuntimeError::Topology(format!(
                        "table topic {topic}: {problem} (does it exist? run `mailstream topology apply`)"
                    )));
                }
                Err(Discovery::Missing(_)) => {}
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        consumer
            .assign(&tpl)
            .map_err(|e| kafka_error("assigning", e))?;

        let table = Arc::new(Self {
            topic: topic.clone(),
            rows: RwLock::new(HashMap::new()),
            arrivals: Mutex::new(None),
            reader_errors: Mutex::new((None, 0)),
        });
        let codec = AvroCodec::decoder(registry_settings(config)?);
        let started = Instant::now();
        let mut progressed = Instant::now();
        let mut shutdown = shutdown;
        let retry_max = Duration::from_millis(config.retry_backoff_max_ms);
        while !caught_up(&consumer, &topic, &ends) {
            if progressed.elapsed() > CATCH_UP_TIMEOUT {
                return Err(RuntimeError::Registry(format!(
                    "table {topic} made no progress catching up for {CATCH_UP_TIMEOUT:?}"
                )));
            }
            if let Ok(received) =
                tokio::time::timeout(Duration::from_millis(200), consumer.recv()).await
            {
                let read = received.is_ok();
                table
                    .apply(&codec, received, retry_max, &mut shutdown)
                    .await;
                // After the apply: waiting out the registry for a row is not stalling.
                if read {
                    progressed = Instant::now();
                }
            }
            if shutdown.is_triggered() {
                return Err(RuntimeError::Registry(format!(
                    "table {topic}: shut down while loading"
                )));
            }
        }
        tracing::info!(table = %topic, rows = table.len(), elapsed_ms = started.elapsed().as_millis() as u64, "table loaded");

        let follower = table.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.wait() => break,
                    received = consumer.recv() => {
                        follower.apply(&codec, received, retry_max, &mut shutdown).await;
                    }
                }
            }
        });
        Ok(table)
    }

    async fn apply(
        &self,
        codec: &AvroCodec,
        received: Result<rdkafka::message::BorrowedMessage<'_>, rdkafka::error::KafkaError>,
        retry_max: Duration,
        shutdown: &mut Shutdown,
    ) {
        let message = match received {
            Ok(m) => m,
            Err(error) => {
                self.reader_error(&error);
                return;
            }
        };
        let Some(key) = message
            .key()
            .map(|k| String::from_utf8_lossy(k).into_owned())
        else {
            return;
        };
        let value = match message.payload() {
            None => None,
            Some(bytes) => {
                let Some(value) = self
                    .decode(codec, bytes, message.offset(), retry_max, shutdown)
                    .await
                else {
                    return;
                };
                match V::from_avro(value) {
                    Ok(v) => Some(v),
                    Err(reason) => {
                        tracing::warn!(table = %self.topic, offset = message.offset(), %reason, "table row skipped: does not map to its type");
                        return;
                    }
                }
            }
        };
        let upsert = value.is_some();
        if let Ok(mut rows) = self.rows.write() {
            match value {
                Some(v) => {
                    rows.insert(key.clone(), v);
                }
                None => {
                    rows.remove(&key);
                }
            }
        }
        if upsert
            && let Ok(mut arrivals) = self.arrivals.lock()
            && let Some(arrivals) = arrivals.as_mut()
        {
            if arrivals.keys.len() < ARRIVALS_MAX {
                arrivals.keys.push(key);
            } else {
                arrivals.overflowed = true;
            }
        }
    }

    /// A reader error, said at most every [`UNREACHABLE_REPORT`] with how many came since: a
    /// broker outage surfaces as one per partition at once, hundreds in a second.
    fn reader_error(&self, error: &rdkafka::error::KafkaError) {
        let Ok(mut errors) = self.reader_errors.lock() else {
            return;
        };
        let (reported, since) = &mut *errors;
        *since += 1;
        if reported.is_none_or(|at| at.elapsed() > UNREACHABLE_REPORT) {
            events::table_reader_errors(&self.topic, error, *since);
            *errors = (Some(Instant::now()), 0);
        }
    }

    /// Decodes the row at `offset`. A registry that cannot answer is waited out, however long
    /// (a row skipped for it would be missing from the table for good: a resolver started
    /// during a registry outage once loaded its threads and accounts tables empty); `None` for
    /// a row that can never decode (skipped, with a warning) or at shutdown.
    async fn decode(
        &self,
        codec: &AvroCodec,
        bytes: &[u8],
        offset: i64,
        retry_max: Duration,
        shutdown: &mut Shutdown,
    ) -> Option<apache_avro::types::Value> {
        let mut backoff = Backoff::new(retry_max);
        let mut reported: Option<Instant> = None;
        loop {
            match codec.decode(Some(bytes)).await {
                Ok(value) => {
                    if reported.is_some() {
                        events::table_registry_back(&self.topic, offset);
                    }
                    return Some(value);
                }
                Err(ProcessError::Transient(problem)) => {
                    if reported.is_none_or(|at| at.elapsed() > UNREACHABLE_REPORT) {
                        events::table_waiting_for_registry(&self.topic, offset, &problem);
                        reported = Some(Instant::now());
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(backoff.next_delay()) => {}
                        _ = shutdown.wait() => return None,
                    }
                }
                Err(error) => {
                    tracing::warn!(table = %self.topic, offset, %error, "table row skipped: undecodable");
                    return None;
                }
            }
        }
    }

    /// From now on, remember the key of every upsert applied, for [`GlobalTable::take_arrivals`].
    pub fn record_arrivals(&self) {
        if let Ok(mut arrivals) = self.arrivals.lock() {
            arrivals.get_or_insert_with(Arrivals::default);
        }
    }

    /// The keys upserted since the last call (none unless [`GlobalTable::record_arrivals`]).
    pub fn take_arrivals(&self) -> Arrivals {
        self.arrivals
            .lock()
            .ok()
            .and_then(|mut arrivals| arrivals.as_mut().map(std::mem::take))
            .unwrap_or_default()
    }

    /// The latest value of `key`.
    pub fn get(&self, key: &str) -> Option<V> {
        self.rows
            .read()
            .ok()
            .and_then(|rows| rows.get(key).cloned())
    }

    pub fn len(&self) -> usize {
        self.rows.read().map(|rows| rows.len()).unwrap_or_default()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The partitions of `topic` with their end offsets, and an assignment of all of them from the
/// beginning.
fn discover(
    consumer: &StreamConsumer,
    topic: &str,
) -> Result<(HashMap<i32, i64>, TopicPartitionList), Discovery> {
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(|e| Discovery::Unreachable(format!("reading its metadata: {e}")))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return Err(Discovery::Missing("no partitions in the metadata".into()));
    }
    let mut ends = HashMap::new();
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        let (_, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .map_err(|e| {
                Discovery::Unreachable(format!("reading the watermarks of partition {p}: {e}"))
            })?;
        ends.insert(p, high);
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .map_err(|e| Discovery::Missing(format!("assigning partition {p}: {e}")))?;
    }
    Ok((ends, tpl))
}

/// Whether every partition's position reached the end offset seen at start.
fn caught_up(consumer: &StreamConsumer, topic: &str, ends: &HashMap<i32, i64>) -> bool {
    let Ok(positions) = consumer.position() else {
        return false;
    };
    ends.iter().all(|(partition, end)| {
        *end == 0
            || positions
                .find_partition(topic, *partition)
                .and_then(|e| e.offset().to_raw())
                .is_some_and(|position| position >= *end)
    })
}
