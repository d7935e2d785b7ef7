//! Named events: each thing worth counting or logging happens here, once, so logs and metrics
//! never disagree. Events carry no email content (addresses, bodies): logs stay PII-free.

use std::time::Duration;

use crate::error::RuntimeError;
use crate::metrics::{Metrics, RUNTIME_DEAD_LETTER_CLASSES, TRANSACTION_OUTCOMES};

/// The processor is starting: every series it reports, but those of partitions (which follow
/// the assignment, [`partitions_assigned`]), exists from now on at zero. `input` is its input
/// topic and `outputs` are the topics it writes, both as the topology names them.
pub fn series_initialised<'a>(
    m: &Metrics,
    processor: &str,
    input: &str,
    outputs: impl IntoIterator<Item = &'a String>,
) {
    m.records_in.with_label_values(&[processor, input]);
    let mut written = Vec::new();
    for output in outputs {
        m.records_out.with_label_values(&[processor, output]);
        written.push(output.as_str());
    }
    for class in RUNTIME_DEAD_LETTER_CLASSES {
        m.records_dead_lettered
            .with_label_values(&[processor, input, class]);
    }
    for outcome in TRANSACTION_OUTCOMES {
        m.transactions.with_label_values(&[processor, outcome]);
    }
    m.transient_retries.with_label_values(&[processor]);
    m.consumers_renewed.with_label_values(&[processor]);
    m.processing_seconds.with_label_values(&[processor]);
    m.commit_seconds.with_label_values(&[processor]);
    tracing::debug!(processor, input, outputs = ?written, "metric series initialised");
}

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

/// The producer can do nothing more (`error`): it was fenced (the coordinator ended its
/// transaction, which outlived `transaction.timeout.ms`, or another producer took its
/// transactional id), librdkafka raised a fatal error on it, or one of its calls hung. A new
/// producer replaces it and the batch is processed again.
pub fn producer_replaced(m: &Metrics, processor: &str, error: &RuntimeError) {
    let outcome = if error.is_fenced() {
        "fenced"
    } else if error.is_fatal_to_producer() {
        "fatal"
    } else {
        "hung"
    };
    m.transactions
        .with_label_values(&[processor, outcome])
        .inc();
    tracing::warn!(
        processor,
        outcome,
        %error,
        "producer {outcome}; replacing it and processing the batch again"
    );
}

/// The transaction of a batch of `records` whose producer had to be replaced turned out to have
/// committed (the coordinator carried out a commit whose answer was lost): the batch counts
/// as done and is not read again.
pub fn transaction_committed_after_all(processor: &str, records: usize) {
    tracing::warn!(
        processor,
        records,
        "the replaced producer's last transaction had committed; the batch is done"
    );
}

/// A table could not be loaded at start because no broker answered: start-up waits for them.
pub fn table_waiting_for_brokers(topic: &str, problem: &str) {
    tracing::warn!(
        table = topic,
        problem,
        "waiting for the brokers to load the table"
    );
}

/// A table's reader failed `count` times since this was last said (every 10 s at most), the
/// last with `error` (brokers down: the table stands still until they are back).
pub fn table_reader_errors(topic: &str, error: &rdkafka::error::KafkaError, count: u64) {
    tracing::warn!(table = topic, %error, count, "table reader errors");
}

/// A table row could not be decoded because the schema registry did not answer (`problem`):
/// the table waits for it at `offset` rather than miss the row (said again every 10 s).
pub fn table_waiting_for_registry(topic: &str, offset: i64, problem: &str) {
    tracing::warn!(
        table = topic,
        offset,
        problem,
        "waiting for the schema registry to decode a table row"
    );
}

/// The registry answered again: the table's row at `offset` decoded and the table goes on.
pub fn table_registry_back(topic: &str, offset: i64) {
    tracing::info!(
        table = topic,
        offset,
        "schema registry back; the table goes on"
    );
}

/// Outputs a processor emitted with no input (`Processor::on_idle`) were dropped: it returned
/// `error` (poison or transient) or panicked. It is asked again at the next idle moment.
pub fn idle_outputs_dropped(processor: &str, error: &crate::error::ProcessError) {
    tracing::warn!(processor, %error, "idle outputs dropped; asked again when next idle");
}

/// A blocking transactional call (`call`: "send offsets", "commit", "abort") took `elapsed`,
/// longer than a healthy cluster ever needs: a coordinator or partition leader is being moved or
/// is unreachable, and every partition of the batch waits behind the call.
pub fn transaction_call_slow(processor: &str, call: &str, elapsed: Duration, ok: bool) {
    tracing::warn!(
        processor,
        call,
        elapsed_ms = elapsed.as_millis() as u64,
        ok,
        "slow transactional call"
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

/// `partitions` of `topic` were assigned to this member: their lag and stall series exist from
/// now on, at zero until librdkafka's statistics (or a stall) say otherwise.
pub fn partitions_assigned(m: &Metrics, processor: &str, topic: &str, partitions: &[i32]) {
    for partition in partitions {
        let labels = [processor, topic, &partition.to_string()];
        m.consumer_lag.with_label_values(&labels);
        m.consumer_lag_seconds.with_label_values(&labels);
        m.partition_stalled_seconds.with_label_values(&labels);
    }
}

/// `partitions` of `topic` were revoked: their series go, the member that gets them reports them.
pub fn partitions_revoked(m: &Metrics, processor: &str, topic: &str, partitions: &[i32]) {
    for partition in partitions {
        let labels = [processor, topic, &partition.to_string()];
        for removed in [
            m.consumer_lag.remove_label_values(&labels),
            m.consumer_lag_seconds.remove_label_values(&labels),
            m.partition_stalled_seconds.remove_label_values(&labels),
        ] {
            // Only a series that never existed (the partition was not assigned here) fails.
            if let Err(error) = removed {
                tracing::debug!(processor, topic, partition, %error, "no series to remove");
            }
        }
    }
}

/// librdkafka's statistics: `partition` of `topic` is `lag` records behind, the oldest of them
/// written `age_secs` ago.
pub fn consumer_lag(
    m: &Metrics,
    processor: &str,
    topic: &str,
    partition: i32,
    lag: i64,
    age_secs: f64,
) {
    m.consumer_lag
        .with_label_values(&[processor, topic, &partition.to_string()])
        .set(lag);
    consumer_lag_age(m, processor, topic, partition, age_secs);
}

/// The oldest record of `partition` of `topic` not yet committed was written `age_secs` ago.
pub fn consumer_lag_age(m: &Metrics, processor: &str, topic: &str, partition: i32, age_secs: f64) {
    m.consumer_lag_seconds
        .with_label_values(&[processor, topic, &partition.to_string()])
        .set(age_secs);
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

/// Assigned `partitions` of `topic` have not been fetched for `idle` while the group was
/// steady ([`crate::kafka::StreamContext::unfetched`]): the consumer is replaced by a new one,
/// which reads the committed offsets afresh.
pub fn consumer_renewed(
    m: &Metrics,
    processor: &str,
    topic: &str,
    partitions: &[i32],
    idle: Duration,
) {
    m.consumers_renewed.with_label_values(&[processor]).inc();
    tracing::warn!(
        processor,
        topic,
        ?partitions,
        idle_secs = idle.as_secs(),
        "assigned partitions never started fetching (librdkafka#5586); replacing the consumer"
    );
}

/// librdkafka reported a client-level error (all brokers down, authentication, ...).
pub fn client_error(processor: &str, error: &rdkafka::error::KafkaError, reason: &str) {
    tracing::error!(processor, %error, reason, "kafka client error");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(m: &Metrics, name: &str) -> Vec<String> {
        m.render()
            .lines()
            .filter(|l| l.starts_with(name))
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn series_exist_at_zero_from_the_start() {
        let m = Metrics::new();
        let outputs = ["parsed".to_string()];
        series_initialised(&m, "parser", "raw-email", &outputs);
        for (name, count) in [
            ("mailstream_records_in_total{", 1),
            ("mailstream_records_out_total{", 1),
            (
                "mailstream_records_dead_lettered_total{",
                RUNTIME_DEAD_LETTER_CLASSES.len(),
            ),
            ("mailstream_transactions_total{", TRANSACTION_OUTCOMES.len()),
            ("mailstream_transient_retries_total{", 1),
            ("mailstream_processing_seconds_count{", 1),
            ("mailstream_transaction_commit_seconds_count{", 1),
        ] {
            let found = lines(&m, name);
            assert_eq!(found.len(), count, "{name}: {found:?}");
            assert!(found.iter().all(|l| l.ends_with(" 0")), "{found:?}");
        }
    }

    #[test]
    fn partition_series_follow_the_assignment() {
        let m = Metrics::new();
        partitions_assigned(&m, "parser", "raw-email", &[0, 1, 2]);
        assert_eq!(lines(&m, "mailstream_consumer_lag{").len(), 3);
        assert_eq!(lines(&m, "mailstream_partition_stalled_seconds{").len(), 3);
        assert_eq!(lines(&m, "mailstream_consumer_lag_seconds{").len(), 3);
        consumer_lag(&m, "parser", "raw-email", 1, 42, 7.5);
        partitions_revoked(&m, "parser", "raw-email", &[1, 2, 7]);
        assert_eq!(
            lines(&m, "mailstream_consumer_lag{"),
            ["mailstream_consumer_lag{partition=\"0\",processor=\"parser\",topic=\"raw-email\"} 0"]
        );
        assert_eq!(lines(&m, "mailstream_consumer_lag_seconds{").len(), 1);
        assert_eq!(lines(&m, "mailstream_partition_stalled_seconds{").len(), 1);
    }
}
