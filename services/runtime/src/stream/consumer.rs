//! The loop's consumer: building it, and replacing it when librdkafka leaves assigned
//! partitions unfetched ([`StreamContext::unfetched`]).

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};

use super::Stream;
use crate::config::RuntimeConfig;
use crate::error::RuntimeError;
use crate::events;
use crate::health::Health;
use crate::kafka::{self, StreamContext};
use crate::metrics::Metrics;
use crate::processor::Processor;
use crate::topology::Naming;

/// How much longer than a transaction may stay open an assigned partition may go unfetched
/// while its group is steady before the consumer is replaced: an open transaction of the
/// partition's previous owner legitimately holds its committed offset back that long.
const UNFETCHED_MARGIN: Duration = Duration::from_secs(20);

/// The consumer of processor `processor`'s input (not yet subscribed).
pub(super) fn new_consumer(
    config: &RuntimeConfig,
    naming: &Naming,
    processor: &'static str,
    metrics: &Metrics,
    health: &Arc<Health>,
) -> Result<StreamConsumer<StreamContext>, RuntimeError> {
    let context = StreamContext::new(processor, naming.clone(), metrics.clone(), health.clone());
    kafka::consumer_config(config, naming, processor)
        .create_with_context(context)
        .map_err(|e| RuntimeError::kafka("creating the consumer", e))
}

impl<P: Processor> Stream<P> {
    /// How long an assigned partition may go unfetched before the consumer is replaced.
    fn unfetched_limit(&self) -> Duration {
        Duration::from_millis(self.config.transaction_timeout_ms) + UNFETCHED_MARGIN
    }

    /// Assigned partitions librdkafka has left unfetched past [`Self::unfetched_limit`].
    pub(super) fn unfetched(&self) -> Vec<i32> {
        self.consumer.context().unfetched(self.unfetched_limit())
    }

    /// Subscribes the consumer to the input topic.
    pub(super) fn subscribe(&self) -> Result<(), RuntimeError> {
        self.consumer
            .subscribe(&[&self.input_topic])
            .map_err(|e| RuntimeError::kafka(format!("subscribing to {}", self.input_topic), e))
    }

    /// Replaces the consumer, which has left `unfetched` assigned and idle: the old one leaves
    /// the group (a static member keeps its place), the processor drops what it held for its
    /// partitions, and the new one joins and reads the committed offsets afresh, as a restart
    /// would, without one. Called with no batch open.
    pub(super) fn renew_consumer(&mut self, unfetched: &[i32]) -> Result<(), RuntimeError> {
        events::consumer_renewed(
            &self.metrics,
            P::NAME,
            &self.input,
            unfetched,
            self.unfetched_limit(),
        );
        self.health.set_ready(false);
        let held: Vec<i32> = std::mem::take(&mut self.assigned).into_iter().collect();
        self.release(&held);
        let fresh = new_consumer(
            &self.config,
            &self.naming,
            P::NAME,
            &self.metrics,
            &self.health,
        )?;
        let old = std::mem::replace(&mut self.consumer, fresh);
        // Closing waits for the group to take the partitions back.
        tokio::task::block_in_place(move || drop(old));
        self.known_rebalances = 0;
        self.subscribe()?;
        self.health.set_ready(true);
        Ok(())
    }
}
