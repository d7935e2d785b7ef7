//! Prometheus metrics of one processor instance. Emitted only through [`crate::events`], so
//! every metric change has a matching, named log event.
//!
//! Every series exists from the moment the processor is ready, at zero, so a dashboard of an
//! idle processor reads 0 rather than "no data" and an alert on an absent series means the
//! processor is gone, not that it has had no traffic since its restart
//! ([`crate::events::series_initialised`]):
//! - per processor: `transactions_total` for each outcome, `transient_retries_total`,
//!   `consumers_renewed_total`, and the
//!   `processing_seconds` and `transaction_commit_seconds` histograms;
//! - per topic: `records_in_total` of its input, `records_out_total` of each output of the
//!   topology, and `records_dead_lettered_total` of its input for each runtime error class
//!   ([`RUNTIME_DEAD_LETTER_CLASSES`]). A class of the processor's own (a poison reason it
//!   names) appears on its first use: the runtime cannot know it in advance;
//! - per assigned partition: `consumer_lag` and `consumer_lag_seconds` (0 until librdkafka's
//!   statistics report them, every 5 s) and `partition_stalled_seconds`, from the assignment on; a revoked partition's series go
//!   ([`crate::events::partitions_assigned`], [`crate::events::partitions_revoked`]).
//!
//! Processors that register metrics of their own on [`Metrics::registry`] follow the same
//! rule for the label values they know in advance.

use prometheus::core::Collector;
use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::error::RuntimeError;

/// Dead-letter classes the runtime itself gives (`mailstream.error.class`): a record that does
/// not decode, or does not map to the processor's input type, a processor that panicked, an
/// output over its topic's record budget, and outputs (or the dead letter itself) the broker
/// refused for good.
pub const RUNTIME_DEAD_LETTER_CLASSES: [&str; 6] = [
    "avro-decode",
    "avro-mapping",
    "panic",
    "record-too-large",
    "output-refused",
    "dead-letter-refused",
];

/// Transaction outcomes (`transactions_total{outcome}`).
pub const TRANSACTION_OUTCOMES: [&str; 5] = ["committed", "aborted", "fenced", "fatal", "hung"];

/// Every metric the runtime exposes on `/metrics`.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub records_in: IntCounterVec,
    pub records_out: IntCounterVec,
    pub records_dead_lettered: IntCounterVec,
    pub processing_seconds: HistogramVec,
    pub commit_seconds: HistogramVec,
    pub transactions: IntCounterVec,
    pub transient_retries: IntCounterVec,
    pub consumers_renewed: IntCounterVec,
    pub consumer_lag: IntGaugeVec,
    pub consumer_lag_seconds: GaugeVec,
    pub partition_stalled_seconds: GaugeVec,
}

/// Registers `metric`, as its constructor returned it, on `registry` and hands it back: the
/// one way metrics are added, the runtime's and each processor's own
/// (`metrics::register(registry, IntCounterVec::new(Opts::new(name, help), &["label"]))?`).
/// The error names the metric's definition or its clash with one already registered.
pub fn register<M>(registry: &Registry, metric: prometheus::Result<M>) -> Result<M, RuntimeError>
where
    M: Collector + Clone + 'static,
{
    let metric = metric.map_err(|e| RuntimeError::Processor(format!("defining a metric: {e}")))?;
    registry
        .register(Box::new(metric.clone()))
        .map_err(|e| RuntimeError::Processor(format!("registering a metric: {e}")))?;
    Ok(metric)
}

/// The runtime's own metrics are static definitions registered once on a fresh registry.
fn runtime_metric<M: Collector + Clone + 'static>(
    registry: &Registry,
    metric: prometheus::Result<M>,
) -> M {
    register(registry, metric).expect("the runtime's metric definitions are static and distinct")
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    runtime_metric(registry, IntCounterVec::new(Opts::new(name, help), labels))
}

fn histogram(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: Vec<f64>,
) -> HistogramVec {
    runtime_metric(
        registry,
        HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels),
    )
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new_custom(Some("mailstream".into()), None)
            .expect("the prefix is a valid metric name");
        // Fine around 10-250 ms, where commit and processing latencies live, so quantiles
        // interpolated from the buckets stay close to the truth.
        let latency = vec![
            0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1,
            0.125, 0.15, 0.2, 0.25, 0.35, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0,
        ];
        let consumer_lag = runtime_metric(
            &registry,
            IntGaugeVec::new(
                Opts::new(
                    "consumer_lag",
                    "Records between the committed offset and the end of the partition.",
                ),
                &["processor", "topic", "partition"],
            ),
        );
        let consumer_lag_seconds = runtime_metric(
            &registry,
            GaugeVec::new(
                Opts::new(
                    "consumer_lag_seconds",
                    "Age of the oldest record of the partition not yet committed (by its Kafka timestamp; since the lag was first seen when none has been read yet); 0 when caught up.",
                ),
                &["processor", "topic", "partition"],
            ),
        );
        let partition_stalled_seconds = runtime_metric(
            &registry,
            GaugeVec::new(
                Opts::new(
                    "partition_stalled_seconds",
                    "How long batches of this input partition have failed without progress (0: flowing); the reason is in /readyz and the transient-failure log.",
                ),
                &["processor", "topic", "partition"],
            ),
        );
        Self {
            records_in: counter(
                &registry,
                "records_in_total",
                "Records consumed.",
                &["processor", "topic"],
            ),
            records_out: counter(
                &registry,
                "records_out_total",
                "Records produced (committed or not).",
                &["processor", "topic"],
            ),
            records_dead_lettered: counter(
                &registry,
                "records_dead_lettered_total",
                "Records sent to a dead-letter topic, by error class.",
                &["processor", "topic", "class"],
            ),
            processing_seconds: histogram(
                &registry,
                "processing_seconds",
                "Time to process one record (decode, process, encode).",
                &["processor"],
                latency.clone(),
            ),
            commit_seconds: histogram(
                &registry,
                "transaction_commit_seconds",
                "Time to send offsets to and commit one transaction.",
                &["processor"],
                latency,
            ),
            transactions: counter(
                &registry,
                "transactions_total",
                "Transactions by outcome: committed; aborted (the batch is processed again); fenced (the coordinator ended it), fatal (librdkafka declared the producer unusable) or hung (a producer call never returned), where a new producer processes the batch again.",
                &["processor", "outcome"],
            ),
            transient_retries: counter(
                &registry,
                "transient_retries_total",
                "Batches retried after a transient failure.",
                &["processor"],
            ),
            consumers_renewed: counter(
                &registry,
                "consumers_renewed_total",
                "Consumers replaced because librdkafka left assigned partitions unfetched (a lost committed-offset read, librdkafka#5586).",
                &["processor"],
            ),
            consumer_lag,
            consumer_lag_seconds,
            partition_stalled_seconds,
            registry,
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let encoder = TextEncoder::new();
        if encoder.encode(&self.registry.gather(), &mut buf).is_err() {
            return String::new();
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
