//! The loop's transactional producer: building it, bounding its blocking calls, replacing it.
//!
//! Every blocking call into the producer runs on a thread of its own and is waited for at most
//! its timeout plus [`HUNG_CALL_MARGIN`]. librdkafka does not bound every call by the timeout it
//! is given: `send_offsets_to_transaction` waits for its own request flow without limit
//! (`RD_POLL_INFINITE`), and was seen blocked for minutes after a partition leader and the group
//! coordinator died together. A call that does not come back is reported as
//! [`RuntimeError::Hung`]; the loop then replaces the producer as if it had been fenced. The
//! abandoned producer is never dropped while a call is inside it: the call's thread holds it
//! and frees it when (if ever) the call returns.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use rdkafka::error::KafkaResult;
use rdkafka::producer::{Producer, ThreadedProducer};

use crate::config::RuntimeConfig;
use crate::error::RuntimeError;
use crate::events;
use crate::kafka::{self, DeliveryContext};
use crate::topology::Naming;

pub(super) type TxnProducer = ThreadedProducer<DeliveryContext>;

/// Timeout of `init_transactions`, which waits for the coordinator to end a predecessor's
/// open transaction.
const INIT_TRANSACTIONS_TIMEOUT: Duration = Duration::from_secs(30);

/// How long past its own timeout a blocking call is waited for before it counts as hung.
const HUNG_CALL_MARGIN: Duration = Duration::from_secs(5);

/// A transactional call slower than this is reported ([`events::transaction_call_slow`]).
const SLOW_TXN_CALL: Duration = Duration::from_secs(5);

/// A producer is replaced in-process at most once in this long; needing it again sooner, the
/// process exits. A transaction that outlived its timeout (a partition leader dying mid-batch)
/// fences its producer once; two live instances sharing one instance id fence each other over
/// and over, which must end in a visible crash loop, not a silent one.
const RECOVERY_INTERVAL: Duration = Duration::from_secs(60);

/// Abandoned producers whose hung call has still not returned, at most: each holds its
/// threads and buffers, so past this many the process exits and its restart frees them.
const MAX_ABANDONED: usize = 2;

/// The transactional producer of processor `processor`'s outputs (not yet initialised).
pub(super) fn new_producer(
    config: &RuntimeConfig,
    naming: &Naming,
    processor: &str,
    max_record_bytes: usize,
) -> Result<Arc<TxnProducer>, RuntimeError> {
    kafka::producer_config(config, naming, processor, max_record_bytes)
        .create_with_context(DeliveryContext::default())
        .map(Arc::new)
        .map_err(|e| RuntimeError::kafka("creating the transactional producer", e))
}

/// Initialises a new transactional producer: fences every earlier producer of its
/// transactional id and waits for the coordinator to end their open transaction.
pub(super) async fn init_transactions(
    producer: &Arc<TxnProducer>,
    processor: &'static str,
) -> Result<(), RuntimeError> {
    call(
        producer,
        processor,
        "init transactions",
        "initialising transactions (fencing predecessors)",
        INIT_TRANSACTIONS_TIMEOUT,
        |producer, timeout| producer.init_transactions(timeout),
    )
    .await
}

/// Runs the blocking call `f` (named `name`, failing with `context`) on a thread of its own,
/// giving it `timeout`, and waits for it at most `timeout` plus [`HUNG_CALL_MARGIN`]. A slow
/// call is reported; one that does not return is [`RuntimeError::Hung`].
pub(super) async fn call<T: Send + 'static>(
    producer: &Arc<TxnProducer>,
    processor: &'static str,
    name: &'static str,
    context: &str,
    timeout: Duration,
    f: impl FnOnce(&TxnProducer, Duration) -> KafkaResult<T> + Send + 'static,
) -> Result<T, RuntimeError> {
    let (sender, receiver) = futures::channel::oneshot::channel();
    let held = Arc::clone(producer);
    let started = Instant::now();
    std::thread::Builder::new()
        .name("txn-call".into())
        .spawn(move || {
            let result = f(&held, timeout);
            drop(held);
            // The receiver is gone only when the call was given up on: nothing to tell.
            let _ = sender.send(result);
        })
        .map_err(|source| RuntimeError::Io {
            context: format!("starting a thread for the producer call `{name}`"),
            source,
        })?;
    let limit = timeout + HUNG_CALL_MARGIN;
    let returned = tokio::time::timeout(limit, receiver).await;
    let elapsed = started.elapsed();
    match returned {
        Ok(Ok(result)) => {
            if elapsed > SLOW_TXN_CALL {
                events::transaction_call_slow(processor, name, elapsed, result.is_ok());
            }
            result.map_err(|e| RuntimeError::kafka(context, e))
        }
        // The call's thread ended without an answer (it panicked) or never answered.
        Ok(Err(_)) | Err(_) => Err(RuntimeError::Hung {
            call: name.into(),
            waited: elapsed,
        }),
    }
}

/// Decides whether a producer may be replaced in-process ([`RECOVERY_INTERVAL`],
/// [`MAX_ABANDONED`]) and keeps hold of the abandoned ones until their calls return.
#[derive(Default)]
pub(super) struct Replacements {
    last: Option<Instant>,
    abandoned: Vec<Weak<TxnProducer>>,
}

impl Replacements {
    /// Whether the producer that failed with `error` may be replaced now.
    pub(super) fn allowed(&mut self, error: &RuntimeError) -> bool {
        self.abandoned.retain(|p| p.strong_count() > 0);
        error.needs_new_producer()
            && self.last.is_none_or(|at| at.elapsed() >= RECOVERY_INTERVAL)
            && self.abandoned.len() < MAX_ABANDONED
    }

    /// Lets go of `old`, which `new` replaced: it is freed off the loop's thread, once no call
    /// is inside it (dropping purges what it still holds and waits up to 0.5 s).
    pub(super) fn retire(&mut self, old: Arc<TxnProducer>) {
        self.last = Some(Instant::now());
        self.abandoned.push(Arc::downgrade(&old));
        let freeing = std::thread::Builder::new()
            .name("txn-retire".into())
            .spawn(move || drop(old));
        if let Err(error) = freeing {
            tracing::warn!(%error, "could not start a thread to free a replaced producer");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::ClientConfig;

    /// A producer that never reaches a broker: enough to hold calls on.
    fn offline_producer() -> Arc<TxnProducer> {
        let producer: TxnProducer = ClientConfig::new()
            .set("bootstrap.servers", "127.0.0.1:1")
            .create_with_context(DeliveryContext::default())
            .expect("creating an offline producer");
        Arc::new(producer)
    }

    #[tokio::test]
    async fn a_call_that_does_not_return_is_hung_and_keeps_its_producer_alive() {
        let producer = offline_producer();
        let stuck = Duration::ZERO + HUNG_CALL_MARGIN + Duration::from_millis(700);
        let started = Instant::now();
        let error = call(
            &producer,
            "test",
            "stuck",
            "a stuck call",
            Duration::ZERO,
            move |_, _| {
                std::thread::sleep(stuck);
                Ok(())
            },
        )
        .await
        .expect_err("the call outlives its limit");
        assert!(
            matches!(&error, RuntimeError::Hung { call, .. } if call == "stuck"),
            "{error}"
        );
        assert!(error.needs_new_producer());
        assert!(
            started.elapsed() < stuck,
            "gave up at its limit, not when the call returned"
        );

        let mut replacements = Replacements::default();
        assert!(replacements.allowed(&error));
        let weak = Arc::downgrade(&producer);
        replacements.retire(producer);
        assert!(
            weak.strong_count() > 0,
            "the hung call's thread still holds the producer"
        );
        assert!(
            !replacements.allowed(&error),
            "a second replacement within the interval"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(weak.strong_count(), 0, "freed once the call returned");
    }

    #[tokio::test]
    async fn a_call_that_returns_in_time_gives_its_result() {
        let producer = offline_producer();
        let answer = call(
            &producer,
            "test",
            "quick",
            "a quick call",
            Duration::from_secs(1),
            |_, t| Ok(t),
        )
        .await
        .expect("the call returns");
        assert_eq!(
            answer,
            Duration::from_secs(1),
            "the call is given its timeout"
        );
        assert_eq!(
            Arc::strong_count(&producer),
            1,
            "the call's thread let go of the producer"
        );
    }
}
