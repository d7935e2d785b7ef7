//! The exactly-once read-process-write loop every processor runs in.
//!
//! Invariants (see ARCHITECTURE.md):
//! 1. Outputs, dead letters and the input offsets of a batch are written in one Kafka
//!    transaction: downstream `read_committed` readers see all of a batch or none of it.
//! 2. A batch never commits across a rebalance: if the assignment changed while it was open,
//!    it is aborted and its records are re-read from the committed offsets by their new owner.
//! 3. A zombie cannot commit: offsets are sent with the consumer group metadata, so a member
//!    fenced by a newer generation fails its commit (KIP-447), and the stable transactional id
//!    fences a crashed predecessor when its replacement starts.
//! 4. One bad record never stops a partition: poison goes to the DLQ in the same transaction.
//!    So does a record whose output can never be written: over its topic's record budget
//!    (checked before anything is sent), or refused by the broker for good (remembered by the
//!    delivery callback; the batch is re-read, that input retried in a transaction of its
//!    own, and dead-lettered if refused again).
//! 5. Work no record triggers (`Processor::on_idle`, asked after half a second without input)
//!    is written in a transaction of its own, without input offsets, and ended like a batch.

mod batch;
mod consumer;
mod producer;
mod record;

use std::collections::{BTreeMap, BTreeSet};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{BaseRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use tracing::Instrument;

pub use batch::{Backoff, Batch};
pub use record::ConsumedRecord;

use self::consumer::new_consumer;
use self::producer::{Replacements, TxnProducer, init_transactions, new_producer};
use crate::avro::{self, AvroCodec, registry_settings};
use crate::config::RuntimeConfig;
use crate::dlq::DeadLetter;
use crate::error::{ProcessError, RuntimeError};
use crate::events;
use crate::headers::{self, TraceContext};
use crate::health::{self, Health};
use crate::kafka::{self, Rejection, Source, StreamContext};
use crate::metrics::Metrics;
use crate::processor::{AvroRecord, Incoming, Outputs, Processor, RecordMeta};
use crate::shutdown::Shutdown;
use crate::state::RestoreContext;
use crate::telemetry;
use crate::topology::{DLQ_SUFFIX, Naming, Topology};

/// How long an abort waits for the records already sent to be acknowledged.
const ABORT_SETTLE: Duration = Duration::from_secs(5);

/// An output ready to send: logical topic, explicit partition, key, payload (None = tombstone).
type EncodedOutput = (String, Option<i32>, Option<String>, Option<Vec<u8>>);

/// Why a batch ended without committing.
enum BatchFailure {
    /// Abort and re-read the batch; `backoff` when the cause may persist for a while (the
    /// partitions then count as stalled until a batch commits).
    Retry {
        reason: String,
        backoff: bool,
    },
    Fatal(RuntimeError),
}

impl BatchFailure {
    /// Abort and re-read at once: nothing outside needs time to recover.
    fn reread(reason: impl Into<String>) -> Self {
        Self::Retry {
            reason: reason.into(),
            backoff: false,
        }
    }
}

impl From<RuntimeError> for BatchFailure {
    fn from(e: RuntimeError) -> Self {
        BatchFailure::Fatal(e)
    }
}

/// Classifies an error of a transactional producer call: a fatal transactional error, or a
/// call that hung, ends the producer; anything else aborts and retries the batch.
fn txn_failure(error: RuntimeError) -> BatchFailure {
    let retry = match &error {
        RuntimeError::Kafka {
            source: KafkaError::Transaction(e),
            ..
        } => !e.is_fatal(),
        RuntimeError::Kafka { .. } => true,
        _ => false,
    };
    if retry {
        BatchFailure::Retry {
            reason: error.to_string(),
            backoff: true,
        }
    } else {
        BatchFailure::Fatal(error)
    }
}

/// Runs `processor` until `shutdown` fires or a fatal error occurs, counting into `metrics`.
pub async fn run<P: Processor>(
    config: RuntimeConfig,
    topology: Topology,
    processor: P,
    metrics: Metrics,
    shutdown: Shutdown,
) -> Result<(), RuntimeError> {
    let health = Health::with_stall_timeout(Duration::from_millis(config.stall_timeout_ms));
    let bound = health::serve(&config.http_addr, health.clone(), metrics.clone()).await?;
    tracing::info!(processor = P::NAME, http = %bound, "serving /metrics, /healthz, /readyz");
    let mut stream = Stream::new(config, &topology, processor, metrics, health)?;
    let mut shutdown = shutdown;
    stream.start(&mut shutdown).await?;
    let result = stream.run_loop(shutdown).await;
    stream.close();
    result
}

struct Stream<P: Processor> {
    processor: P,
    config: RuntimeConfig,
    naming: Naming,
    input: String,
    input_topic: String,
    dlq_topic: String,
    consumer: StreamConsumer<StreamContext>,
    producer: Arc<TxnProducer>,
    codec: AvroCodec,
    metrics: Metrics,
    health: Arc<Health>,
    /// Input partitions the processor has been told it owns.
    assigned: BTreeSet<i32>,
    /// The rebalance count the processor's view of the assignment is from.
    known_rebalances: u64,
    /// The largest key plus value each declared output takes (logical topic → bytes).
    budgets: BTreeMap<String, usize>,
    /// Partitions counted as stalled in the metrics, to clear once a batch commits.
    stalled: BTreeSet<i32>,
    /// The largest record the producer may send (see [`kafka::producer_config`]).
    max_record_bytes: usize,
    /// Producers replaced in-process, and whether another may be.
    replacements: Replacements,
    /// When the open transaction's work must be done ([`RecordMeta::deadline`]).
    work_deadline: Instant,
}

impl<P: Processor> Stream<P> {
    fn new(
        config: RuntimeConfig,
        topology: &Topology,
        processor: P,
        metrics: Metrics,
        health: Arc<Health>,
    ) -> Result<Self, RuntimeError> {
        let spec = topology.processor(P::NAME)?;
        let input = spec.input.clone().ok_or_else(|| {
            RuntimeError::Topology(format!("processor `{}` has no input topic", P::NAME))
        })?;
        let naming = Naming::new(config.topic_prefix.clone());
        let dlq = format!("{input}{DLQ_SUFFIX}");
        let budgets: BTreeMap<String, usize> = spec
            .outputs
            .iter()
            .map(|t| (t.clone(), topology.record_budget(t)))
            .collect();
        let max_record_bytes = spec
            .outputs
            .iter()
            .chain([&dlq])
            .map(|t| topology.max_message_bytes(t))
            .max()
            .unwrap_or_default();
        let consumer = new_consumer(&config, &naming, P::NAME, &metrics, &health)?;
        let producer = new_producer(&config, &naming, P::NAME, max_record_bytes)?;
        let codec = AvroCodec::new(
            registry_settings(&config)?,
            topology,
            &naming,
            &spec.outputs,
        )?;
        Ok(Self {
            input_topic: naming.topic(&input),
            dlq_topic: naming.topic(&dlq),
            input,
            processor,
            config,
            naming,
            consumer,
            producer,
            codec,
            metrics,
            health,
            assigned: BTreeSet::new(),
            known_rebalances: 0,
            budgets,
            stalled: BTreeSet::new(),
            max_record_bytes,
            replacements: Replacements::default(),
            work_deadline: Instant::now(),
        })
    }

    /// Registers schemas, fences predecessors, subscribes. Ready afterwards.
    /// Registers the output schemas and initialises transactions, waiting out a registry or
    /// brokers that cannot be reached (retriable errors) until they can, or shutdown.
    async fn start(&mut self, shutdown: &mut Shutdown) -> Result<(), RuntimeError> {
        let mut backoff = Backoff::new(Duration::from_millis(self.config.retry_backoff_max_ms));
        while let Err(error) = self.codec.register_outputs().await {
            self.wait_to_retry(error, &mut backoff, shutdown).await?;
            if shutdown.is_triggered() {
                return Ok(());
            }
        }
        while let Err(error) = init_transactions(&self.producer, P::NAME).await {
            self.wait_to_retry(error, &mut backoff, shutdown).await?;
            if shutdown.is_triggered() {
                return Ok(());
            }
        }
        self.subscribe()?;
        events::series_initialised(&self.metrics, P::NAME, &self.input, self.budgets.keys());
        self.health.set_ready(true);
        tracing::info!(
            processor = P::NAME,
            input = %self.input_topic,
            group = %self.naming.group(P::NAME),
            "processor started"
        );
        Ok(())
    }

    async fn run_loop(&mut self, mut shutdown: Shutdown) -> Result<(), RuntimeError> {
        let mut backoff = Backoff::new(Duration::from_millis(self.config.retry_backoff_max_ms));
        while !shutdown.is_triggered() {
            let unfetched = self.unfetched();
            if !unfetched.is_empty() {
                self.renew_consumer(&unfetched)?;
            }
            let mut batch = Batch::default();
            let outcome = match self.fill_batch(&mut batch, &mut shutdown).await {
                Ok(()) if batch.is_empty() => continue,
                Ok(()) if batch.saw_rebalance(self.consumer.context().rebalances()) => {
                    Err(BatchFailure::reread(
                        "the partition assignment changed while the batch was open",
                    ))
                }
                Ok(()) => self.commit(&batch).await,
                Err(failure) => Err(failure),
            };
            match outcome {
                Ok(()) => {
                    backoff.reset();
                    self.consumer.context().committed(batch.next_offsets());
                    self.processor.on_commit();
                    self.producer.context().forget_all();
                    self.progressed();
                }
                Err(BatchFailure::Retry {
                    reason,
                    backoff: wait,
                }) => {
                    if let Err(error) = self.abort(&batch, &reason, &mut shutdown).await {
                        self.replace_producer(&batch, error, &mut shutdown).await?;
                        continue;
                    }
                    if wait {
                        let delay = backoff.next_delay();
                        events::transient_failure(&self.metrics, P::NAME, &reason, delay);
                        let partitions: Vec<i32> = batch.partitions().collect();
                        let stalled = self.health.failed(partitions.clone(), &reason);
                        events::partitions_stalled(
                            &self.metrics,
                            P::NAME,
                            &self.input,
                            &partitions,
                            stalled,
                        );
                        self.stalled.extend(partitions);
                        self.consumer.context().refresh_lag_ages(&self.input);
                        tokio::select! {
                            _ = tokio::time::sleep(delay) => {}
                            _ = shutdown.wait() => {}
                        }
                    }
                }
                Err(BatchFailure::Fatal(error)) if error.needs_new_producer() => {
                    self.replace_producer(&batch, error, &mut shutdown).await?;
                }
                Err(BatchFailure::Fatal(error)) => {
                    // One try, so read_committed readers need not wait for the transaction to
                    // time out; the process exits and its restart reads from the committed
                    // offsets (and fences this transaction if the abort failed).
                    if !batch.is_empty()
                        && let Err(abort) = self.abort_call().await
                    {
                        tracing::warn!(processor = P::NAME, %abort, "could not abort before exiting");
                    }
                    return Err(error);
                }
            }
        }
        Ok(())
    }

    /// Consumes and processes records until the batch is full, its time is up, or shutdown.
    async fn fill_batch(
        &mut self,
        batch: &mut Batch,
        shutdown: &mut Shutdown,
    ) -> Result<(), BatchFailure> {
        let max_records = self.config.batch_max_records as usize;
        let max_bytes = self.config.batch_max_bytes;
        let max_age = Duration::from_millis(self.config.batch_max_ms);
        // An open batch whose input pauses this long commits: the input is drained for now.
        let idle = Some(Duration::from_millis(self.config.batch_idle_ms))
            .filter(|idle| !idle.is_zero() && *idle < max_age);
        let mut deadline: Option<Instant> = None;
        loop {
            self.health.beat();
            let wait = match deadline {
                None => Duration::from_millis(500),
                Some(d) => d.saturating_duration_since(Instant::now()),
            };
            if batch.len() >= max_records
                || batch.bytes() >= max_bytes
                || (deadline.is_some() && wait.is_zero())
            {
                return Ok(());
            }
            let (wait, idle_close) = match idle {
                Some(idle) if deadline.is_some() && idle < wait => (idle, true),
                _ => (wait, false),
            };
            let received = tokio::select! {
                biased;
                _ = shutdown.wait() => return Ok(()),
                r = tokio::time::timeout(wait, self.consumer.recv()) => r,
            };
            let message = match received {
                // Nothing to read: caught up, which is progress too.
                Err(_) if batch.is_empty() => {
                    if !self.unfetched().is_empty() {
                        return Ok(());
                    }
                    self.progressed();
                    if self.idle(batch).await? {
                        return Ok(());
                    }
                    continue;
                }
                Err(_) if idle_close => return Ok(()),
                Err(_) => continue,
                Ok(Err(error)) => {
                    tracing::warn!(processor = P::NAME, %error, "consumer error");
                    continue;
                }
                Ok(Ok(message)) => {
                    self.health.brokers_up();
                    ConsumedRecord::from_message(&message)
                }
            };
            let rebalances = self.consumer.context().rebalances();
            if rebalances != self.known_rebalances {
                if !batch.is_empty() {
                    // Abort; the rewind covers this record's partition too.
                    let _first = batch.track(message.partition, message.offset, 0);
                    return Err(BatchFailure::reread(
                        "the partition assignment changed while the batch was open",
                    ));
                }
                if let Err(failure) = self.sync_assignment(rebalances).await {
                    self.unread(&message)?;
                    return Err(failure);
                }
            }
            if batch.is_empty() {
                let producer = &self.producer;
                tokio::task::block_in_place(|| producer.begin_transaction())
                    .map_err(|e| txn_failure(RuntimeError::kafka("beginning a transaction", e)))?;
                self.work_deadline = Instant::now() + self.config.transaction_work_time();
                deadline = Some(Instant::now() + max_age);
                // Rebalance callbacks run inside recv(), before the message is returned, so
                // this is the assignment the whole batch must still hold at commit.
                batch.start(self.consumer.context().rebalances());
            }
            // A record something was refused for goes in a transaction of its own, so what
            // the broker refuses next time is surely its own.
            let rejection = self
                .producer
                .context()
                .rejection(message.partition, message.offset);
            let suspect = rejection.is_some();
            if suspect && !batch.is_empty() {
                self.unread(&message)?;
                return Ok(());
            }
            if batch.track(
                message.partition,
                message.offset,
                message.payload.as_ref().map_or(0, Vec::len),
            ) {
                self.consumer
                    .context()
                    .read_uncommitted(message.partition, message.timestamp_ms);
            }
            self.handle(message, rejection).await?;
            if suspect {
                return Ok(());
            }
        }
    }

    /// Tells the processor which partitions it lost and gained since it last looked, so it can
    /// drop and restore state before the new assignment's first record.
    async fn sync_assignment(&mut self, rebalances: u64) -> Result<(), BatchFailure> {
        let current: BTreeSet<i32> = self
            .consumer
            .assignment()
            .map_err(|e| RuntimeError::kafka("reading the assignment", e))?
            .elements_for_topic(&self.input_topic)
            .iter()
            .map(|e| e.partition())
            .collect();
        let revoked = self.consumer.context().take_revoked();
        let kept: BTreeSet<i32> = self.assigned.difference(&revoked).copied().collect();
        let lost: Vec<i32> = self
            .assigned
            .iter()
            .filter(|p| !current.contains(p) || revoked.contains(p))
            .copied()
            .collect();
        let gained: Vec<i32> = current.difference(&kept).copied().collect();
        self.release(&lost);
        if !gained.is_empty() {
            let ctx = RestoreContext {
                config: &self.config,
                naming: &self.naming,
                codec: &self.codec,
            };
            let started = Instant::now();
            self.health.set_restoring(true);
            let restored = self.processor.on_assigned(&gained, &ctx).await;
            self.health.set_restoring(false);
            match restored {
                Ok(()) => tracing::debug!(
                    processor = P::NAME,
                    partitions = ?gained,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "state restored"
                ),
                Err(ProcessError::Transient(reason)) => {
                    return Err(BatchFailure::Retry {
                        reason: format!("restoring state: {reason}"),
                        backoff: true,
                    });
                }
                Err(other) => {
                    return Err(BatchFailure::Fatal(RuntimeError::Processor(format!(
                        "restoring state: {other}"
                    ))));
                }
            }
        }
        self.assigned = current;
        self.known_rebalances = rebalances;
        Ok(())
    }

    /// Tells the processor it no longer owns `lost`, and forgets what the loop kept of them.
    fn release(&mut self, lost: &[i32]) {
        if lost.is_empty() {
            return;
        }
        self.processor.on_revoked(lost);
        for partition in lost {
            self.producer.context().forget_partition(*partition);
            // Its stall series went with the revocation; clearing it would bring it back.
            self.stalled.remove(partition);
        }
    }

    /// Puts a consumed record back: the next poll returns it again.
    /// Failing to is fatal: the next poll would return the record after it, and committing
    /// past it would lose it (a restart reads from the committed offsets instead).
    fn unread(&self, record: &ConsumedRecord) -> Result<(), BatchFailure> {
        self.consumer
            .seek(
                &self.input_topic,
                record.partition,
                Offset::Offset(record.offset),
                Duration::from_secs(10),
            )
            .map_err(|e| {
                BatchFailure::Fatal(RuntimeError::kafka(
                    format!(
                        "putting back offset {} of partition {}",
                        record.offset, record.partition
                    ),
                    e,
                ))
            })
    }

    /// Processes one record and sends its outputs, or its dead letter. `rejection`: what an
    /// earlier pass found refused of its outputs (the record is then alone in its batch).
    async fn handle(
        &mut self,
        record: ConsumedRecord,
        rejection: Option<Rejection>,
    ) -> Result<(), BatchFailure> {
        let started = Instant::now();
        let correlation_id = record
            .header_str(headers::CORRELATION_ID)
            .unwrap_or_else(|| format!("{}-{}-{}", self.input, record.partition, record.offset));
        let source = Source {
            partition: record.partition,
            offset: record.offset,
            dead_letter: false,
        };
        // Something this record produced was refused on an earlier pass: it is alone now.
        if let Some(rejection) = rejection {
            self.producer
                .context()
                .alone(record.partition, record.offset);
            if rejection.outputs_refused || rejection.dead_letter_refused {
                return self.dead_letter_rejected(&record, rejection, started).await;
            }
        }
        let incoming_traceparent = record.header_str(headers::TRACEPARENT);
        let trace = incoming_traceparent
            .as_deref()
            .and_then(TraceContext::parse)
            .unwrap_or_else(TraceContext::new_root);
        let span = tracing::info_span!(
            "process",
            otel.name = P::NAME,
            processor = P::NAME,
            partition = record.partition,
            offset = record.offset,
            correlation_id = %correlation_id,
        );
        if let Some(parent) = &incoming_traceparent {
            telemetry::set_remote_parent(&span, parent);
        }

        let result = self
            .process(&record, &correlation_id)
            .instrument(span.clone())
            .await;
        match result {
            Ok(encoded) => {
                let traceparent =
                    telemetry::traceparent_of(&span).unwrap_or_else(|| trace.child_header());
                self.send_outputs(encoded, &correlation_id, &traceparent, source)
                    .await?;
            }
            Err(ProcessError::Poison { class, reason }) => {
                self.dead_letter(&record, &class, &reason, true).await?;
            }
            Err(ProcessError::Transient(reason)) => {
                return Err(BatchFailure::Retry {
                    reason,
                    backoff: true,
                });
            }
            Err(ProcessError::Fatal(reason)) => {
                return Err(BatchFailure::Fatal(RuntimeError::Processor(reason)));
            }
        }
        events::record_consumed(&self.metrics, P::NAME, &self.input, started.elapsed());
        Ok(())
    }

    /// Dead-letters a record whose outputs (or whose dead letter) the broker refused for good.
    async fn dead_letter_rejected(
        &mut self,
        record: &ConsumedRecord,
        rejection: Rejection,
        started: Instant,
    ) -> Result<(), BatchFailure> {
        if rejection.dead_letter_refused {
            // Even the record itself did not fit the DLQ: the letter keeps the key, the
            // headers and where to read the value (the input topic, until its retention).
            let reason = format!(
                "{}; the value was left out of this dead letter (read it at {}/{}/{})",
                rejection.reason, self.input, record.partition, record.offset
            );
            self.dead_letter(record, "dead-letter-refused", &reason, false)
                .await?;
        } else {
            self.dead_letter(record, "output-refused", &rejection.reason, true)
                .await?;
        }
        events::record_consumed(&self.metrics, P::NAME, &self.input, started.elapsed());
        Ok(())
    }

    /// Sends `record` (its value unless `with_value` is false) to the DLQ with the reason.
    async fn dead_letter(
        &mut self,
        record: &ConsumedRecord,
        class: &str,
        reason: &str,
        with_value: bool,
    ) -> Result<(), BatchFailure> {
        let letter = DeadLetter {
            processor: P::NAME,
            topic: &self.input,
            partition: record.partition,
            offset: record.offset,
            class,
            reason,
        };
        let headers = letter.headers(&record.headers);
        let dlq = self.dlq_topic.clone();
        let payload = record.payload.as_deref().filter(|_| with_value);
        let source = Source {
            partition: record.partition,
            offset: record.offset,
            dead_letter: true,
        };
        self.send(&dlq, None, record.key_bytes(), payload, headers, source)
            .await?;
        events::record_dead_lettered(
            &self.metrics,
            P::NAME,
            &self.input,
            record.partition,
            record.offset,
            class,
            reason,
        );
        Ok(())
    }

    /// Decode, process and encode; nothing is sent until every output encoded. When the record
    /// ends up poison after the processor saw it, the processor undoes what it changed.
    async fn process(
        &mut self,
        record: &ConsumedRecord,
        correlation_id: &str,
    ) -> Result<Vec<EncodedOutput>, ProcessError> {
        let value = self.codec.decode(record.payload.as_deref()).await?;
        let value =
            P::Input::from_avro(value).map_err(|e| ProcessError::poison("avro-mapping", e))?;
        let incoming = Incoming {
            key: record.key_string(),
            value,
            meta: RecordMeta {
                topic: self.input.clone(),
                partition: record.partition,
                offset: record.offset,
                timestamp_ms: record.timestamp_ms,
                correlation_id: correlation_id.to_string(),
                deadline: self.work_deadline,
            },
        };
        let mut out = Outputs::default();
        let result = match AssertUnwindSafe(self.processor.process(incoming, &mut out))
            .catch_unwind()
            .await
        {
            Err(panic) => Err(ProcessError::poison("panic", panic_message(&panic))),
            Ok(Err(error)) => Err(error),
            Ok(Ok(())) => self.encode(out).await,
        };
        if matches!(result, Err(ProcessError::Poison { .. })) {
            self.processor.undo_record();
        }
        result
    }

    /// Encodes a record's outputs, each checked against its topic's record budget.
    async fn encode(&mut self, out: Outputs) -> Result<Vec<EncodedOutput>, ProcessError> {
        let mut encoded = Vec::with_capacity(out.records.len());
        for emitted in out.records {
            let Some(&budget) = self.budgets.get(&emitted.topic) else {
                return Err(ProcessError::fatal(format!(
                    "processor `{}` wrote to `{}`, which is not one of its outputs in the topology",
                    P::NAME,
                    emitted.topic
                )));
            };
            let payload = match emitted.value {
                Some(value) => {
                    let (id, writer) = self.codec.output(&emitted.topic).await?;
                    Some(avro::frame(id, writer, &*value)?)
                }
                None => None,
            };
            let size =
                emitted.key.as_ref().map_or(0, String::len) + payload.as_ref().map_or(0, Vec::len);
            if size > budget {
                return Err(ProcessError::poison(
                    "record-too-large",
                    format!(
                        "the `{}` record would be {size} bytes; the topic takes at most {budget} (key and value)",
                        emitted.topic
                    ),
                ));
            }
            encoded.push((emitted.topic, emitted.partition, emitted.key, payload));
        }
        Ok(encoded)
    }

    /// Sends a record's encoded outputs inside the open transaction, with the correlation id
    /// and trace context headers.
    async fn send_outputs(
        &self,
        encoded: Vec<EncodedOutput>,
        correlation_id: &str,
        traceparent: &str,
        source: Source,
    ) -> Result<(), BatchFailure> {
        for (topic, partition, key, payload) in encoded {
            let physical = self.naming.topic(&topic);
            let headers = OwnedHeaders::new_with_capacity(2)
                .insert(rdkafka::message::Header {
                    key: headers::CORRELATION_ID,
                    value: Some(correlation_id.as_bytes()),
                })
                .insert(rdkafka::message::Header {
                    key: headers::TRACEPARENT,
                    value: Some(traceparent.as_bytes()),
                });
            self.send(
                &physical,
                partition,
                key.as_deref().map(str::as_bytes),
                payload.as_deref(),
                headers,
                source,
            )
            .await?;
            events::record_produced(&self.metrics, P::NAME, &topic);
        }
        Ok(())
    }

    /// No input for a while and no batch open: asks the processor for outputs no record
    /// triggers ([`Processor::on_idle`]). When it has some, opens a transaction for them alone
    /// and returns true: `batch` then holds them (no input offsets) and is committed as usual.
    async fn idle(&mut self, batch: &mut Batch) -> Result<bool, BatchFailure> {
        let rebalances = self.consumer.context().rebalances();
        if rebalances != self.known_rebalances {
            self.sync_assignment(rebalances).await?;
        }
        let mut out = Outputs::default();
        let result = match AssertUnwindSafe(self.processor.on_idle(&mut out))
            .catch_unwind()
            .await
        {
            Err(panic) => Err(ProcessError::poison("panic", panic_message(&panic))),
            Ok(Err(error)) => Err(error),
            Ok(Ok(())) if out.is_empty() => return Ok(false),
            Ok(Ok(())) => self.encode(out).await,
        };
        let encoded = match result {
            Ok(encoded) => encoded,
            Err(ProcessError::Fatal(reason)) => {
                return Err(BatchFailure::Fatal(RuntimeError::Processor(reason)));
            }
            Err(error) => {
                self.processor.undo_record();
                events::idle_outputs_dropped(P::NAME, &error);
                return Ok(false);
            }
        };
        let producer = &self.producer;
        tokio::task::block_in_place(|| producer.begin_transaction())
            .map_err(|e| txn_failure(RuntimeError::kafka("beginning a transaction", e)))?;
        self.work_deadline = Instant::now() + self.config.transaction_work_time();
        batch.start(rebalances);
        batch.track_idle_outputs(encoded.len());
        let trace = TraceContext::new_root();
        let correlation_id = format!("{}-idle", P::NAME);
        let source = Source {
            partition: -1,
            offset: -1,
            dead_letter: false,
        };
        self.send_outputs(encoded, &correlation_id, &trace.child_header(), source)
            .await?;
        Ok(true)
    }

    /// Sends one record inside the open transaction, waiting while the local queue is full.
    /// A record librdkafka refuses for good marks `source` as rejected and re-reads the batch,
    /// whose next pass dead-letters it.
    async fn send(
        &self,
        topic: &str,
        partition: Option<i32>,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        headers: OwnedHeaders,
        source: Source,
    ) -> Result<(), BatchFailure> {
        let mut record: BaseRecord<'_, [u8], [u8], Box<Source>> =
            BaseRecord::with_opaque_to(topic, Box::new(source)).headers(headers);
        if let Some(key) = key {
            record = record.key(key);
        }
        if let Some(payload) = payload {
            record = record.payload(payload);
        }
        if let Some(partition) = partition {
            record = record.partition(partition);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((KafkaError::MessageProduction(code), _)) if kafka::is_unwritable(code) => {
                    let reason = format!("producing to {topic}: {code}");
                    events::record_refused(source.partition, source.offset, &reason);
                    self.producer.context().reject(source, reason.clone());
                    return Err(BatchFailure::reread(reason));
                }
                Err((error, _)) => {
                    return Err(txn_failure(RuntimeError::kafka(
                        format!("producing to {topic}"),
                        error,
                    )));
                }
            }
        }
    }

    /// The stream made progress: whatever stalled it is over.
    fn progressed(&mut self) {
        self.health.progressed();
        if !self.stalled.is_empty() {
            let partitions: Vec<i32> = std::mem::take(&mut self.stalled).into_iter().collect();
            events::partitions_stalled(
                &self.metrics,
                P::NAME,
                &self.input,
                &partitions,
                Duration::ZERO,
            );
        }
    }

    /// Sends the batch's offsets with the group metadata and commits the transaction.
    async fn commit(&mut self, batch: &Batch) -> Result<(), BatchFailure> {
        let started = Instant::now();
        // What the processor made durable elsewhere must be durable before the offsets are:
        // a crash between the two replays the batch, which idempotent writes absorb.
        match self.processor.before_commit(self.work_deadline).await {
            Ok(()) => {}
            Err(ProcessError::Fatal(reason)) => {
                return Err(BatchFailure::Fatal(RuntimeError::Processor(reason)));
            }
            Err(other) => {
                return Err(BatchFailure::Retry {
                    reason: format!("before commit: {other}"),
                    backoff: true,
                });
            }
        }
        let offsets = batch.commit_offsets(&self.input_topic)?;
        // A batch of idle outputs alone has no input offsets to send.
        if offsets.count() > 0 {
            let metadata = self
                .consumer
                .group_metadata()
                .ok_or_else(|| BatchFailure::Retry {
                    reason: "the consumer has no group metadata yet".into(),
                    backoff: true,
                })?;
            self.txn_call(
                "send offsets",
                "sending offsets to the transaction",
                move |producer, timeout| {
                    producer.send_offsets_to_transaction(&offsets, &metadata, timeout)
                },
            )
            .await
            .map_err(txn_failure)?;
        }
        let offsets_sent = started.elapsed();
        self.await_deliveries(self.txn_call_timeout()).await?;
        self.txn_call(
            "commit",
            "committing the transaction",
            |producer, timeout| producer.commit_transaction(timeout),
        )
        .await
        .map_err(txn_failure)?;
        events::transaction_committed(
            &self.metrics,
            P::NAME,
            batch.len(),
            offsets_sent,
            started.elapsed(),
        );
        Ok(())
    }

    /// How long a blocking transactional call may wait: the transaction's own timeout, after
    /// which the coordinator has aborted it anyway. A longer wait would only keep every
    /// partition of the batch (and the readers of its outputs, which stop at the open
    /// transaction) waiting for nothing.
    fn txn_call_timeout(&self) -> Duration {
        Duration::from_millis(self.config.transaction_timeout_ms)
    }

    /// Runs a blocking transactional call of the producer, bounded even where librdkafka
    /// does not bound it (see [`producer::call`]).
    async fn txn_call<T: Send + 'static>(
        &self,
        name: &'static str,
        context: &str,
        f: impl FnOnce(&TxnProducer, Duration) -> rdkafka::error::KafkaResult<T> + Send + 'static,
    ) -> Result<T, RuntimeError> {
        producer::call(
            &self.producer,
            P::NAME,
            name,
            context,
            self.txn_call_timeout(),
            f,
        )
        .await
    }

    /// Aborts the open transaction, once.
    async fn abort_call(&self) -> Result<(), RuntimeError> {
        self.txn_call("abort", "aborting the transaction", |producer, timeout| {
            producer.abort_transaction(timeout)
        })
        .await
    }

    /// Waits until every record of the transaction is acknowledged, checking every millisecond.
    ///
    /// `commit_transaction` flushes too, but rust-rdkafka's flush sleeps in 100 ms polls of a
    /// queue the threaded producer's own thread serves, so any record still in flight when it
    /// is called (one held back by a CONCURRENT_TRANSACTIONS retry, say) costs a whole 100 ms.
    async fn await_deliveries(&self, limit: Duration) -> Result<(), BatchFailure> {
        let deadline = Instant::now() + limit;
        while self.producer.in_flight_count() > 0 {
            if Instant::now() > deadline {
                return Err(BatchFailure::Retry {
                    reason: format!(
                        "{} records not acknowledged within {limit:?}",
                        self.producer.in_flight_count()
                    ),
                    backoff: true,
                });
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        Ok(())
    }

    /// Aborts the open transaction and rewinds so the batch is read again.
    ///
    /// Every partition of the batch that is still assigned goes back to its committed offset,
    /// read from the group coordinator: that is where the aborted batch began for partitions
    /// this member kept, and where the last owner stopped for partitions a rebalance moved.
    /// Both steps are retried through a broker outage (nothing may be read past the aborted
    /// records before the rewind took effect); only a fatal error or shutdown ends the wait.
    async fn abort(
        &mut self,
        batch: &Batch,
        reason: &str,
        shutdown: &mut Shutdown,
    ) -> Result<(), RuntimeError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut backoff = Backoff::new(Duration::from_millis(self.config.retry_backoff_max_ms));
        // Let the records already sent reach the broker first: an abort racing the request
        // that adds their partitions to the transaction is refused by the coordinator
        // (INVALID_TXN_STATE, fatal to the producer). Bounded: a broker that is down may never
        // acknowledge them, and the abort purges what is left.
        if let Err(BatchFailure::Retry { reason, .. }) = self.await_deliveries(ABORT_SETTLE).await {
            tracing::debug!(
                processor = P::NAME,
                reason,
                "aborting with records in flight"
            );
        }
        loop {
            match self.abort_call().await {
                Ok(()) => break,
                Err(error) => self.wait_to_retry(error, &mut backoff, shutdown).await?,
            }
            if shutdown.is_triggered() {
                return Ok(());
            }
        }
        events::transaction_aborted(&self.metrics, P::NAME, batch.len(), reason);
        self.processor.on_abort();
        self.rewind_batch(batch, &mut backoff, shutdown).await
    }

    /// Replaces a producer that was fenced or hung (`error`, see
    /// [`RuntimeError::needs_new_producer`]) with a new one and reads the batch again: the
    /// new producer's `init_transactions` fences the old one and waits for the coordinator to
    /// end the batch's transaction. Any other error, or one that [`Replacements`] refuses
    /// (too soon after the last, too many still hung), is returned (the process exits).
    async fn replace_producer(
        &mut self,
        batch: &Batch,
        error: RuntimeError,
        shutdown: &mut Shutdown,
    ) -> Result<(), RuntimeError> {
        if !self.replacements.allowed(&error) {
            return Err(error);
        }
        events::producer_replaced(&self.metrics, P::NAME, &error);
        let producer = new_producer(&self.config, &self.naming, P::NAME, self.max_record_bytes)?;
        let mut backoff = Backoff::new(Duration::from_millis(self.config.retry_backoff_max_ms));
        while let Err(error) = init_transactions(&producer, P::NAME).await {
            self.wait_to_retry(error, &mut backoff, shutdown).await?;
            if shutdown.is_triggered() {
                return Ok(());
            }
        }
        let old = std::mem::replace(&mut self.producer, producer);
        self.replacements.retire(old);
        backoff.reset();
        // The failed call may have been a commit the coordinator carried out (its answer
        // lost with a broker): the new producer's init_transactions has ended the transaction
        // either way, so the offsets committed for the batch say which. Undoing a committed
        // batch in memory would leave the processor's state behind its changelog (a resolver
        // would let a later copy of the batch's emails through).
        let owned = self.owned_partitions(batch)?;
        let committed = loop {
            if owned.count() == 0 {
                break false;
            }
            match self.committed(&owned) {
                Ok(offsets) => break batch.committed_in(&self.input_topic, &offsets) == Some(true),
                Err(error) => self.wait_to_retry(error, &mut backoff, shutdown).await?,
            }
            if shutdown.is_triggered() {
                return Ok(());
            }
        };
        if committed {
            events::transaction_committed_after_all(P::NAME, batch.len());
            self.consumer.context().committed(batch.next_offsets());
            self.processor.on_commit();
            self.producer.context().forget_all();
            return Ok(());
        }
        self.processor.on_abort();
        self.rewind_batch(batch, &mut backoff, shutdown).await
    }

    /// The partitions of `batch` this member still owns.
    fn owned_partitions(&self, batch: &Batch) -> Result<TopicPartitionList, RuntimeError> {
        let mut owned = TopicPartitionList::new();
        if batch.is_empty() {
            return Ok(owned);
        }
        let assignment = self
            .consumer
            .assignment()
            .map_err(|e| RuntimeError::kafka("reading the assignment to rewind", e))?;
        for partition in batch.partitions() {
            if assignment
                .find_partition(&self.input_topic, partition)
                .is_some()
            {
                owned.add_partition(&self.input_topic, partition);
            }
        }
        Ok(owned)
    }

    /// Rewinds every partition of `batch` this member still owns to its committed offset.
    async fn rewind_batch(
        &mut self,
        batch: &Batch,
        backoff: &mut Backoff,
        shutdown: &mut Shutdown,
    ) -> Result<(), RuntimeError> {
        let owned = self.owned_partitions(batch)?;
        if owned.count() == 0 {
            return Ok(());
        }
        while let Err(error) = self.rewind(&owned) {
            self.wait_to_retry(error, backoff, shutdown).await?;
            if shutdown.is_triggered() {
                return Ok(());
            }
        }
        Ok(())
    }

    /// The group's committed offsets of `owned` (read_committed: a transaction's offsets count
    /// once it has committed).
    fn committed(&self, owned: &TopicPartitionList) -> Result<TopicPartitionList, RuntimeError> {
        let consumer = &self.consumer;
        tokio::task::block_in_place(|| {
            consumer.committed_offsets(owned.clone(), Duration::from_secs(10))
        })
        .map_err(|e| RuntimeError::kafka("reading committed offsets to rewind", e))
    }

    /// Seeks each partition of `owned` to its committed offset.
    fn rewind(&self, owned: &TopicPartitionList) -> Result<(), RuntimeError> {
        let consumer = &self.consumer;
        let committed = self.committed(owned)?;
        let mut rewind = TopicPartitionList::new();
        for element in committed.elements() {
            let offset = match element.offset() {
                Offset::Offset(o) => Offset::Offset(o),
                // Nothing committed yet: start over as auto.offset.reset says (earliest).
                _ => Offset::Beginning,
            };
            rewind
                .add_partition_offset(&self.input_topic, element.partition(), offset)
                .map_err(|e| RuntimeError::kafka("rewinding", e))?;
        }
        let sought = tokio::task::block_in_place(|| {
            consumer.seek_partitions(rewind, Duration::from_secs(10))
        })
        .map_err(|e| RuntimeError::kafka("rewinding after an abort", e))?;
        // A partition whose seek failed would go on after the aborted records: retry.
        for element in sought.elements() {
            if let Err(e) = element.error() {
                return Err(RuntimeError::kafka(
                    format!("rewinding partition {} after an abort", element.partition()),
                    e,
                ));
            }
        }
        Ok(())
    }

    /// Waits out a retriable error of the abort path (a broker outage), staying alive and
    /// counting the partitions as stalled; a non-retriable one is returned.
    async fn wait_to_retry(
        &mut self,
        error: RuntimeError,
        backoff: &mut Backoff,
        shutdown: &mut Shutdown,
    ) -> Result<(), RuntimeError> {
        if !error.is_retriable() {
            return Err(error);
        }
        let reason = error.to_string();
        let delay = backoff.next_delay();
        events::transient_failure(&self.metrics, P::NAME, &reason, delay);
        self.consumer.context().refresh_lag_ages(&self.input);
        self.health.beat();
        self.health
            .failed(self.stalled.iter().copied().collect(), &reason);
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.wait() => {}
        }
        Ok(())
    }

    /// Leaves the group and flushes the producer.
    fn close(&mut self) {
        self.health.set_ready(false);
        self.consumer.unsubscribe();
        let _ = self.producer.flush(Duration::from_secs(10));
        tracing::info!(processor = P::NAME, "processor stopped");
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "the processor panicked".into()
    }
}
