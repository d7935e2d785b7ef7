//! Kafka clients configured for exactly-once read-process-write.
//!
//! The consumer reads `read_committed` and never commits on its own; offsets are committed only
//! inside the producer's transaction. The producer's transactional id is stable per instance
//! (`<prefix>mailstream-<processor>-<instance>`), so a restarted instance fences its predecessor
//! and its open transaction is aborted at once instead of blocking readers until it times out.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::producer::{DeliveryResult, ProducerContext};
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, TopicPartitionList};

use crate::config::RuntimeConfig;
use crate::events;
use crate::health::{Health, now_ms};
use crate::metrics::Metrics;
use crate::topology::Naming;

/// Properties common to every client, then the user's pass-through properties.
pub fn base_config(config: &RuntimeConfig) -> ClientConfig {
    let mut client = ClientConfig::new();
    apply_base(&mut client, config);
    client
}

/// Sets the shared settings ([`base_config`]) on `client`, over its defaults. Not through
/// `ClientConfig::config_map`, which replaces secret values (`sasl.password`, ...) with a
/// placeholder: copied from there, every SASL client would send that as its password.
fn apply_base(client: &mut ClientConfig, config: &RuntimeConfig) {
    client.set("bootstrap.servers", config.bootstrap_servers());
    client.set("client.id", format!("mailstream-{}", config.instance_id()));
    for (key, value) in &config.kafka {
        client.set(key, value);
    }
}

/// The consumer of a processor's input.
pub fn consumer_config(config: &RuntimeConfig, naming: &Naming, processor: &str) -> ClientConfig {
    let mut client = ClientConfig::new();
    // Defaults a user may override through `kafka.*`.
    client.set("auto.offset.reset", "earliest");
    client.set("session.timeout.ms", "10000");
    client.set("heartbeat.interval.ms", "3000");
    client.set("statistics.interval.ms", "5000");
    client.set("fetch.wait.max.ms", "50");
    // Incremental rebalancing: when a member joins or leaves, only the partitions that move
    // are revoked; the others keep flowing and keep their state (eager assignment stops the
    // whole group and rebuilds every member's state at each scale step). Measured by
    // `bench-rebalance` (BENCHMARKS.md).
    client.set("partition.assignment.strategy", "cooperative-sticky");
    // librdkafka prefetches up to 64 MB per consumer by default; a processor needs far less.
    // Measured (BENCHMARKS.md): 4 MB moves the pass-through as fast as 16 MB did, and a
    // backlogged pipeline stage holds 50-80 MiB instead of 80-130.
    client.set("queued.max.messages.kbytes", "4096");
    // Once that prefetch queue is full, librdkafka postpones the partition's next fetch by
    // this much (default 1 s): a processor that drains its queue faster than that would sit
    // idle for most of the second. Measured: ~0.7 s stalls per 16 MB in the pass-through.
    client.set("fetch.queue.backoff.ms", "10");
    apply_base(&mut client, config);
    // Managed: exactly-once depends on these.
    client.set("group.id", naming.group(processor));
    if config.static_membership {
        client.set(
            "group.instance.id",
            naming.transactional_id(processor, &config.instance_id()),
        );
    }
    client.set("enable.auto.commit", "false");
    client.set("enable.auto.offset.store", "false");
    client.set("isolation.level", "read_committed");
    client
}

/// A reader that assigns partitions itself (changelog restore, tables, tail): committed data
/// only, never commits offsets. `group` only names it to the broker.
pub fn reader_config(config: &RuntimeConfig, group: &str) -> ClientConfig {
    let mut client = base_config(config);
    client
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed");
    client
}

/// A producer whose delivery report means written: idempotent, `acks=all`, and one request in
/// flight per broker connection, set after the user's properties (the three are managed keys).
///
/// One request in flight closes a loss librdkafka's pipelining allows (found by the chaos
/// suite, reproduced in `tests/cluster.rs`): a producer's first batch on a partition refused
/// with a retriable error (NOT_ENOUGH_REPLICAS while a cluster recovers) and queued for retry,
/// the next batch already in flight and accepted (a broker takes any sequence number from a
/// producer it holds no state for: a new one, or one idle past `producer.id.expiration.ms`),
/// and librdkafka then reports the refused batch delivered ("implicitly acked by subsequent
/// batch success"). With one request in flight, a batch is sent only after every earlier one
/// on that connection was answered, so a later success cannot vouch for an unwritten batch.
pub fn durable(client: &mut ClientConfig) -> &mut ClientConfig {
    client
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("max.in.flight.requests.per.connection", "1")
}

/// [`base_config`] made [`durable`]: the producer of every write that must not be lost.
pub fn durable_producer_config(config: &RuntimeConfig) -> ClientConfig {
    let mut client = base_config(config);
    durable(&mut client);
    client
}

/// The transactional producer of a processor's outputs.
///
/// `max_record_bytes` is the largest cap of a topic it writes (dead letters included), so
/// librdkafka's own size check never refuses what a topic takes.
pub fn producer_config(
    config: &RuntimeConfig,
    naming: &Naming,
    processor: &str,
    max_record_bytes: usize,
) -> ClientConfig {
    let mut client = ClientConfig::new();
    client.set("linger.ms", "5");
    client.set(
        "message.max.bytes",
        max_record_bytes.max(1_048_576).to_string(),
    );
    client.set("compression.type", "zstd");
    // A transaction that starts right after a commit often meets CONCURRENT_TRANSACTIONS while
    // the coordinator still writes the previous commit's markers (a few ms); librdkafka retries
    // AddOffsetsToTxn after retry.backoff.ms, whose 100 ms default would land in every commit.
    client.set("retry.backoff.ms", "10");
    client.set("retry.backoff.max.ms", "1000");
    client.set(
        "transaction.timeout.ms",
        config.transaction_timeout_ms.to_string(),
    );
    apply_base(&mut client, config);
    client.set(
        "transactional.id",
        naming.transactional_id(processor, &config.instance_id()),
    );
    durable(&mut client);
    client
}

/// Consumer callbacks: counts rebalances (an open batch must not commit across one), turns
/// librdkafka statistics into the consumer-lag gauge, tells readiness whether the brokers
/// are reachable, and notices assigned partitions librdkafka never starts fetching
/// ([`StreamContext::unfetched`]).
pub struct StreamContext {
    processor: &'static str,
    naming: Naming,
    metrics: Metrics,
    health: Arc<Health>,
    rebalances: AtomicU64,
    /// Partitions revoked since the stream loop last looked.
    revoked: Mutex<BTreeSet<i32>>,
    /// How long records have waited, per input partition ([`StreamContext::read_uncommitted`]).
    waiting: Mutex<Waiting>,
    /// Assigned partitions whose fetcher has not started while the group was steady, and
    /// since when (ms), by the statistics ([`StreamContext::unfetched`]).
    unfetched: Mutex<BTreeMap<i32, i64>>,
}

/// What the consumer-lag gauges are computed from, per input partition.
///
/// librdkafka's own `consumer_lag` statistic needs offsets the consumer committed itself, so it
/// is -1 for offsets committed through a transaction: the runtime keeps the committed
/// positions it knows instead.
#[derive(Debug, Default)]
struct Waiting {
    /// The offset the last transaction of this member committed (the next to read).
    committed: BTreeMap<i32, i64>,
    /// The timestamp (ms) of the oldest record read but not committed yet.
    oldest_read: BTreeMap<i32, i64>,
}

impl Waiting {
    /// Records between the committed position of `partition` and its last stable offset:
    /// the position this member committed, else the one the group had when it was assigned,
    /// else (nothing committed yet) the partition's start. Transaction markers count.
    fn lag(&self, partition: i32, stats: &rdkafka::statistics::Partition) -> Option<i64> {
        if stats.ls_offset < 0 {
            return None;
        }
        let position = self
            .committed
            .get(&partition)
            .copied()
            .or((stats.committed_offset >= 0).then_some(stats.committed_offset))
            .unwrap_or(stats.lo_offset.max(0));
        Some((stats.ls_offset - position).max(0))
    }

    /// Age in seconds at `now_ms` of the oldest record of `partition` read and not committed
    /// yet: under a backlog, the head of the backlog (each batch reads it first); while
    /// batches fail, the record they keep re-reading.
    fn age_secs(&self, partition: i32, now_ms: i64) -> f64 {
        self.oldest_read
            .get(&partition)
            .map_or(0.0, |&read| (now_ms - read).max(0) as f64 / 1000.0)
    }

    fn forget(&mut self, partition: i32) {
        self.committed.remove(&partition);
        self.oldest_read.remove(&partition);
    }
}

impl StreamContext {
    pub fn new(
        processor: &'static str,
        naming: Naming,
        metrics: Metrics,
        health: Arc<Health>,
    ) -> Self {
        Self {
            processor,
            naming,
            metrics,
            health,
            rebalances: AtomicU64::new(0),
            revoked: Mutex::new(BTreeSet::new()),
            waiting: Mutex::new(Waiting::default()),
            unfetched: Mutex::new(BTreeMap::new()),
        }
    }

    /// Assigned partitions librdkafka has not been fetching for `longer_than` although the
    /// group was steady all along (its coordinator known, no rebalance under way).
    ///
    /// librdkafka starts fetching an assigned partition once it has read the partition's
    /// committed offset. When that read is answered NOT_COORDINATOR (the group's coordinator
    /// moved: a broker restarted, a leader changed), it refreshes the coordinator but never
    /// reads again (librdkafka#5586, open in 2.12): the partition stays assigned and idle for
    /// good, its lag grows, and nothing else looks wrong. The legitimate waits are shorter:
    /// an open transaction of the previous owner delays the read by at most its timeout, and
    /// while there is no coordinator the group is not steady. Found by the replicated chaos
    /// run; the stream loop renews its consumer when this is not empty.
    pub fn unfetched(&self, longer_than: Duration) -> Vec<i32> {
        let since = now_ms() as i64 - longer_than.as_millis() as i64;
        self.unfetched
            .lock()
            .map(|unfetched| {
                unfetched
                    .iter()
                    .filter(|(_, at)| **at <= since)
                    .map(|(partition, _)| *partition)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Notes, from one statistics report, which assigned partitions are not being fetched.
    fn note_unfetched(&self, statistics: &Statistics, now: i64) {
        let steady = statistics
            .cgrp
            .as_ref()
            .is_some_and(|group| group.state == "up" && group.join_state == "steady");
        let Ok(mut unfetched) = self.unfetched.lock() else {
            return;
        };
        if !steady {
            unfetched.clear();
            return;
        }
        let idle: BTreeSet<i32> = statistics
            .topics
            .values()
            .flat_map(|topic| topic.partitions.iter())
            // librdkafka's fetch states before a fetcher starts (or after it stopped).
            .filter(|(id, p)| {
                **id >= 0 && p.desired && matches!(p.fetch_state.as_str(), "none" | "stopped")
            })
            .map(|(id, _)| *id)
            .collect();
        unfetched.retain(|partition, _| idle.contains(partition));
        for partition in idle {
            unfetched.entry(partition).or_insert(now);
        }
    }

    /// The stream loop read the first record of `partition` since its last commit, written at
    /// `timestamp_ms` (a record re-read after an abort keeps the age of its first reading).
    pub fn read_uncommitted(&self, partition: i32, timestamp_ms: Option<i64>) {
        let at = timestamp_ms.unwrap_or_else(|| now_ms() as i64);
        if let Ok(mut waiting) = self.waiting.lock() {
            waiting.oldest_read.entry(partition).or_insert(at);
        }
    }

    /// Sets the lag-in-seconds gauge of every partition of `topic` (logical) with a record read
    /// and not committed, between statistics: those are served only while the stream loop
    /// polls the consumer, not while it waits out a failure.
    pub fn refresh_lag_ages(&self, topic: &str) {
        let now = now_ms() as i64;
        if let Ok(waiting) = self.waiting.lock() {
            for &partition in waiting.oldest_read.keys() {
                events::consumer_lag_age(
                    &self.metrics,
                    self.processor,
                    topic,
                    partition,
                    waiting.age_secs(partition, now),
                );
            }
        }
    }

    /// A transaction committed these (partition, next offset) positions: everything read from
    /// them before is committed.
    pub fn committed(&self, positions: impl IntoIterator<Item = (i32, i64)>) {
        if let Ok(mut waiting) = self.waiting.lock() {
            for (partition, next) in positions {
                waiting.oldest_read.remove(&partition);
                waiting.committed.insert(partition, next);
            }
        }
    }

    /// Partitions revoked since the last call (their state must be rebuilt if they return).
    pub fn take_revoked(&self) -> BTreeSet<i32> {
        self.revoked
            .lock()
            .map(|mut r| std::mem::take(&mut *r))
            .unwrap_or_default()
    }

    /// Increases on every assignment change.
    pub fn rebalances(&self) -> u64 {
        self.rebalances.load(Ordering::SeqCst)
    }

    /// The partitions of `tpl` by logical topic.
    fn by_topic(&self, tpl: &TopicPartitionList) -> BTreeMap<String, Vec<i32>> {
        let mut topics: BTreeMap<String, Vec<i32>> = BTreeMap::new();
        for element in tpl.elements() {
            let topic = element.topic();
            let logical = self.naming.logical(topic).unwrap_or(topic);
            topics
                .entry(logical.to_string())
                .or_default()
                .push(element.partition());
        }
        topics
    }
}

impl ClientContext for StreamContext {
    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            self.health.brokers_down();
        }
        events::client_error(self.processor, &error, reason);
    }

    fn stats(&self, statistics: Statistics) {
        if statistics
            .brokers
            .values()
            .any(|b| b.nodeid >= 0 && b.state == "UP")
        {
            self.health.brokers_up();
        }
        let now = now_ms() as i64;
        self.note_unfetched(&statistics, now);
        for (topic, stats) in &statistics.topics {
            let logical = self.naming.logical(topic).unwrap_or(topic);
            let waiting = self.waiting.lock().ok();
            for (id, partition) in &stats.partitions {
                // librdkafka goes on reporting a partition it no longer fetches (`desired`
                // false): only assigned partitions have a series.
                let Some(waiting) = waiting.as_ref().filter(|_| *id >= 0 && partition.desired)
                else {
                    continue;
                };
                if let Some(lag) = waiting.lag(*id, partition) {
                    events::consumer_lag(
                        &self.metrics,
                        self.processor,
                        logical,
                        *id,
                        lag,
                        waiting.age_secs(*id, now),
                    );
                }
            }
        }
    }
}

impl ConsumerContext for StreamContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        self.rebalances.fetch_add(1, Ordering::SeqCst);
        let (kind, partitions) = match rebalance {
            Rebalance::Assign(tpl) => {
                for (topic, partitions) in self.by_topic(tpl) {
                    events::partitions_assigned(&self.metrics, self.processor, &topic, &partitions);
                }
                (
                    "assign",
                    tpl.elements().iter().map(|e| e.partition()).collect(),
                )
            }
            Rebalance::Revoke(tpl) => {
                let partitions: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
                if let Ok(mut revoked) = self.revoked.lock() {
                    revoked.extend(partitions.iter().copied());
                }
                if let Ok(mut waiting) = self.waiting.lock() {
                    for &partition in &partitions {
                        waiting.forget(partition);
                    }
                }
                for (topic, partitions) in self.by_topic(tpl) {
                    events::partitions_revoked(&self.metrics, self.processor, &topic, &partitions);
                }
                ("revoke", partitions)
            }
            Rebalance::Error(_) => ("error", Vec::new()),
        };
        events::rebalanced(self.processor, kind, &partitions);
    }
}

/// Produce errors no retry can fix: the broker (or librdkafka's own check) refuses the record
/// itself. Every other produce error may pass on a later try.
pub fn is_unwritable(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::MessageSizeTooLarge
            | RDKafkaErrorCode::InvalidMessageSize
            | RDKafkaErrorCode::MessageBatchTooLarge
            | RDKafkaErrorCode::InvalidMessage
            | RDKafkaErrorCode::InvalidRecord
            | RDKafkaErrorCode::PolicyViolation
    )
}

/// The input record a produced record was written for: a delivery's opaque.
#[derive(Debug, Clone, Copy)]
pub struct Source {
    pub partition: i32,
    pub offset: i64,
    /// The produced record was the input's dead letter.
    pub dead_letter: bool,
}

/// What is known of an input record whose produced records the broker refused.
#[derive(Debug, Clone, Default)]
pub struct Rejection {
    pub reason: String,
    /// The record is being retried in a transaction of its own, so a refusal now is its own
    /// and not a batch neighbour's (the broker refuses a whole record batch at once).
    pub alone: bool,
    /// Its outputs were refused while it was alone: dead-letter it.
    pub outputs_refused: bool,
    /// Even its dead letter was refused while it was alone: dead-letter it without the value.
    pub dead_letter_refused: bool,
}

/// Producer callbacks. A failed delivery makes its transaction fail to commit, so the stream
/// loop aborts and re-reads the batch. When the broker refused a record for good
/// ([`is_unwritable`]) the input it was written for is remembered here; the loop then retries
/// that input in a transaction of its own, and dead-letters it if it is refused again. One
/// record that cannot be written never stalls its partition, and its batch neighbours, refused
/// with it, are not dead-lettered for it.
#[derive(Default)]
pub struct DeliveryContext {
    rejected: Mutex<HashMap<(i32, i64), Rejection>>,
    /// Whether `rejected` may hold anything: every record asks, almost always of an empty map.
    any: AtomicBool,
}

impl DeliveryContext {
    /// Remembers that what `source` produced was refused.
    pub fn reject(&self, source: Source, reason: String) {
        if let Ok(mut rejected) = self.rejected.lock() {
            self.any.store(true, Ordering::SeqCst);
            let entry = rejected
                .entry((source.partition, source.offset))
                .or_default();
            entry.reason = reason;
            if entry.alone {
                if source.dead_letter {
                    entry.dead_letter_refused = true;
                } else {
                    entry.outputs_refused = true;
                }
            }
        }
    }

    /// What is known of input `partition`/`offset`, if anything it produced was refused. Kept
    /// until a batch commits, so a pass that fails for another reason does not lose it.
    pub fn rejection(&self, partition: i32, offset: i64) -> Option<Rejection> {
        if !self.any.load(Ordering::SeqCst) {
            return None;
        }
        self.rejected
            .lock()
            .ok()?
            .get(&(partition, offset))
            .cloned()
    }

    /// Input `partition`/`offset` is now processed in a transaction of its own.
    pub fn alone(&self, partition: i32, offset: i64) {
        if let Ok(mut rejected) = self.rejected.lock()
            && let Some(entry) = rejected.get_mut(&(partition, offset))
        {
            entry.alone = true;
        }
    }

    /// A batch committed: the rejected inputs it held are written or dead-lettered.
    pub fn forget_all(&self) {
        if !self.any.load(Ordering::SeqCst) {
            return;
        }
        if let Ok(mut rejected) = self.rejected.lock() {
            rejected.clear();
            self.any.store(false, Ordering::SeqCst);
        }
    }

    /// Forgets every rejection of inputs of `partition` (it moved to another member).
    pub fn forget_partition(&self, partition: i32) {
        if let Ok(mut rejected) = self.rejected.lock() {
            rejected.retain(|(p, _), _| *p != partition);
            self.any.store(!rejected.is_empty(), Ordering::SeqCst);
        }
    }
}

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = Box<Source>;

    fn delivery(&self, result: &DeliveryResult<'_>, source: Self::DeliveryOpaque) {
        match result {
            // Records of an aborted transaction are purged from the queue: expected.
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::PurgeQueue), _)) => {}
            Err((KafkaError::MessageProduction(code), _)) if is_unwritable(*code) => {
                let reason = format!("the broker refused the record: {code}");
                events::record_refused(source.partition, source.offset, &reason);
                self.reject(*source, reason);
            }
            Err((error, _)) => {
                tracing::warn!(%error, "record delivery failed; its transaction will abort");
            }
            Ok(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Waiting;
    use rdkafka::statistics::Partition;

    #[test]
    fn every_client_gets_the_secret_values_themselves() {
        let source = crate::ConfigSource::default()
            .with_env("MAILSTREAM_BOOTSTRAP_SERVERS", "127.0.0.1:9094")
            .with_env("MAILSTREAM_SCHEMA_REGISTRY_URL", "http://127.0.0.1:8081")
            .with_env("MAILSTREAM_RDKAFKA_SASL_PASSWORD", "s3cret-007")
            .with_env("MAILSTREAM_RDKAFKA_SSL_KEY_PASSWORD", "k3y-pass");
        let (config, _) =
            crate::config::load::<crate::NoSettings>("passthrough", &source).expect("config");
        let naming = crate::Naming::new("t-");
        for (name, client) in [
            (
                "consumer",
                super::consumer_config(&config, &naming, "passthrough"),
            ),
            (
                "producer",
                super::producer_config(&config, &naming, "passthrough", 1 << 20),
            ),
            ("reader", super::reader_config(&config, "t-reader")),
        ] {
            assert_eq!(client.get("sasl.password"), Some("s3cret-007"), "{name}");
            assert_eq!(client.get("ssl.key.password"), Some("k3y-pass"), "{name}");
        }
    }

    fn stats(lo: i64, ls: i64, committed: i64) -> Partition {
        Partition {
            lo_offset: lo,
            ls_offset: ls,
            committed_offset: committed,
            ..Partition::default()
        }
    }

    #[test]
    fn lag_counts_from_the_position_this_member_committed_else_the_group_s_else_the_start() {
        let mut w = Waiting::default();
        assert_eq!(
            w.lag(0, &stats(5, 50, -1001)),
            Some(45),
            "nothing committed"
        );
        assert_eq!(
            w.lag(0, &stats(5, 50, 20)),
            Some(30),
            "the group's at assignment"
        );
        w.committed.insert(0, 48);
        assert_eq!(
            w.lag(0, &stats(5, 50, 20)),
            Some(2),
            "our own transaction's"
        );
        assert_eq!(
            w.lag(0, &stats(5, -1, 20)),
            None,
            "no stable offset known yet"
        );
    }

    #[test]
    fn lag_age_is_that_of_the_oldest_record_read_and_not_committed() {
        let mut w = Waiting::default();
        assert_eq!(w.age_secs(0, 10_000), 0.0);
        w.oldest_read.insert(0, 4_000);
        assert_eq!(w.age_secs(0, 13_000), 9.0);
        w.forget(0);
        assert_eq!(w.age_secs(0, 14_000), 0.0);
    }
}
