//! Kafka clients configured for exactly-once read-process-write.
//!
//! The consumer reads `read_committed` and never commits on its own; offsets are committed only
//! inside the producer's transaction. The producer's transactional id is stable per instance
//! (`<prefix>mailstream-<processor>-<instance>`), so a restarted instance fences its predecessor
//! and its open transaction is aborted at once instead of blocking readers until it times out.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::producer::{DeliveryResult, ProducerContext};
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaErrorCode;

use crate::config::RuntimeConfig;
use crate::events;
use crate::metrics::Metrics;
use crate::topology::Naming;

/// Properties common to every client, then the user's pass-through properties.
pub fn base_config(config: &RuntimeConfig) -> ClientConfig {
    let mut client = ClientConfig::new();
    client.set("bootstrap.servers", config.bootstrap_servers());
    client.set("client.id", format!("mailstream-{}", config.instance_id()));
    for (key, value) in &config.kafka {
        client.set(key, value);
    }
    client
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
    // librdkafka prefetches up to 64 MB per consumer by default; a processor needs far less.
    // Measured (BENCHMARKS.md): 4 MB moves the pass-through as fast as 16 MB did, and a
    // backlogged pipeline stage holds 50-80 MiB instead of 80-130.
    client.set("queued.max.messages.kbytes", "4096");
    // Once that prefetch queue is full, librdkafka postpones the partition's next fetch by
    // this much (default 1 s): a processor that drains its queue faster than that would sit
    // idle for most of the second. Measured: ~0.7 s stalls per 16 MB in the pass-through.
    client.set("fetch.queue.backoff.ms", "10");
    for (k, v) in base_config(config).config_map() {
        client.set(k, v);
    }
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

/// The transactional producer of a processor's outputs.
pub fn producer_config(config: &RuntimeConfig, naming: &Naming, processor: &str) -> ClientConfig {
    let mut client = ClientConfig::new();
    client.set("linger.ms", "5");
    client.set("message.max.bytes", "8388608");
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
    for (k, v) in base_config(config).config_map() {
        client.set(k, v);
    }
    client.set(
        "transactional.id",
        naming.transactional_id(processor, &config.instance_id()),
    );
    client.set("enable.idempotence", "true");
    client
}

/// Consumer callbacks: counts rebalances (an open batch must not commit across one) and turns
/// librdkafka statistics into the consumer-lag gauge.
pub struct StreamContext {
    processor: &'static str,
    naming: Naming,
    metrics: Metrics,
    rebalances: AtomicU64,
    /// Partitions revoked since the stream loop last looked.
    revoked: Mutex<BTreeSet<i32>>,
}

impl StreamContext {
    pub fn new(processor: &'static str, naming: Naming, metrics: Metrics) -> Self {
        Self {
            processor,
            naming,
            metrics,
            rebalances: AtomicU64::new(0),
            revoked: Mutex::new(BTreeSet::new()),
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
}

impl ClientContext for StreamContext {
    fn stats(&self, statistics: Statistics) {
        for (topic, stats) in &statistics.topics {
            let logical = self.naming.logical(topic).unwrap_or(topic);
            for (id, partition) in &stats.partitions {
                if *id >= 0 && partition.consumer_lag >= 0 {
                    events::consumer_lag(
                        &self.metrics,
                        self.processor,
                        logical,
                        *id,
                        partition.consumer_lag,
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
            Rebalance::Assign(tpl) => (
                "assign",
                tpl.elements().iter().map(|e| e.partition()).collect(),
            ),
            Rebalance::Revoke(tpl) => {
                let partitions: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
                if let Ok(mut revoked) = self.revoked.lock() {
                    revoked.extend(partitions.iter().copied());
                }
                ("revoke", partitions)
            }
            Rebalance::Error(_) => ("error", Vec::new()),
        };
        events::rebalanced(self.processor, kind, &partitions);
    }
}

/// Producer callbacks: a failed delivery is logged here; the transaction it belongs to then
/// fails to commit and is aborted and retried by the stream loop.
pub struct DeliveryContext;

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: Self::DeliveryOpaque) {
        match result {
            // Records of an aborted transaction are purged from the queue: expected.
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::PurgeQueue), _)) => {}
            Err((error, _)) => {
                tracing::warn!(%error, "record delivery failed; its transaction will abort");
            }
            Ok(_) => {}
        }
    }
}
