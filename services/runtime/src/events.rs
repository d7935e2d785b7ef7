//! Named events: each thing worth counting or logging happens here, once, so logs and metrics
//! never disagree. Events carry no email content (addresses, bodies): logs stay PII-free.

use std::time::Duration;

use crate::metrics::Metrics;

/// A transaction committed `records` inputs in `elapsed` (of which `offsets` sending offsets).
pub fn transaction_committed(
    m: &Metrics,
    processor: &str,
    records: usize,
    offsets: Duration,
    elapsed: Duration,
) {
    m.transactions
        .with_label_values(&[processor, "committed"])
        .inc();
    m.commit_seconds
        .with_label_values(&[processor])
        .observe(elapsed.as_secs_f64());
    tracing::debug!(
        processor,
        records,
        offsets_ms = offsets.as_millis() as u64,
        elapsed_ms = elapsed.as_millis() as u64,
        "transaction committed"
    );
}

/// A transaction was aborted; its inputs will be consumed again.
pub fn transaction_aborted(m: &Metrics, processor: &str, records: usize, reason: &str) {
    m.transactions
        .with_label_values(&[processor, "aborted"])
        .inc();
    tracing::warn!(
        processor,
        records,
        reason,
        "transaction aborted; the batch will be processed again"
    );
}

pub fn record_consumed(m: &Metrics, processor: &str, topic: &str, elapsed: Duration) {
    m.records_in.with_label_values(&[processor, topic]).inc();
    m.processing_seconds
        .with_label_values(&[processor])
        .observe(elapsed.as_secs_f64());
}

pub fn record_produced(m: &Metrics, processor: &str, topic: &str) {
    m.records_out.with_label_values(&[processor, topic]).inc();
}

/// A record went to the dead-letter topic.
#[allow(clippy::too_many_arguments)]
pub fn record_dead_lettered(
    m: &Metrics,
    processor: &str,
    topic: &str,
    partition: i32,
    offset: i64,
    class: &str,
    reason: &str,
) {
    m.records_dead_lettered
        .with_label_values(&[processor, topic, class])
        .inc();
    tracing::warn!(
        processor,
        topic,
        partition,
        offset,
        class,
        reason,
        "record dead-lettered"
    );
}

/// A transient failure; the batch is retried after `backoff`.
pub fn transient_failure(m: &Metrics, processor: &str, reason: &str, backoff: Duration) {
    m.transient_retries.with_label_values(&[processor]).inc();
    tracing::warn!(
        processor,
        reason,
        backoff_ms = backoff.as_millis() as u64,
        "transient failure; retrying"
    );
}

/// The group's assignment changed; an open batch is aborted and re-read.
pub fn rebalanced(processor: &str, kind: &str, partitions: &[i32]) {
    tracing::info!(processor, kind, ?partitions, "partitions rebalanced");
}

pub fn consumer_lag(m: &Metrics, processor: &str, topic: &str, partition: i32, lag: i64) {
    m.consumer_lag
        .with_label_values(&[processor, topic, &partition.to_string()])
        .set(lag);
}

/// The broker (or librdkafka's own check) refused a record for good; the input it was written
/// for is dead-lettered when its batch is read again.
pub fn record_refused(partition: i32, offset: i64, reason: &str) {
    tracing::warn!(
        input_partition = partition,
        input_offset = offset,
        reason,
        "record refused for good; its input will be dead-lettered"
    );
}

/// Batches over `partitions` have failed for `stalled` without progress (zero: flowing again).
pub fn partitions_stalled(
    m: &Metrics,
    processor: &str,
    topic: &str,
    partitions: &[i32],
    stalled: Duration,
) {
    for partition in partitions {
        m.partition_stalled_seconds
            .with_label_values(&[processor, topic, &partition.to_string()])
            .set(stalled.as_secs_f64());
    }
}

/// librdkafka reported a client-level error (all brokers down, authentication, ...).
pub fn client_error(processor: &str, error: &rdkafka::error::KafkaError, reason: &str) {
    tracing::error!(processor, %error, reason, "kafka client error");
}
