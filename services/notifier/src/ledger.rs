//! The durable record of what was sent: one [`Notification`] per channel and lead event in the
//! `notifications` topic, keyed by `<channel>|<message_id>|<lead_key>` and written to the
//! partition number of the `scored` record it is about.
//!
//! A webhook takes no idempotency key (Slack's does not), so the batch's Kafka transaction
//! cannot cover the send: a record of it written in the transaction would be undone by every
//! abort (a rebalance, a transient failure elsewhere in the batch) and the send repeated. So the
//! record is written **outside** the transaction, by an idempotent producer with `acks=all`,
//! right after the channel accepted the notification and before the next record is processed;
//! `read_committed` readers see it at once (it belongs to no transaction).
//!
//! - The instance remembers its own records (also across aborts); on assignment it reads the
//!   partition's records back ([`Ledger::restore`]) before the partition's first record. A
//!   partition moves only when its owner polls again, after the record it was processing is
//!   recorded, so the new owner finds every earlier send.
//! - A record that could not be written is kept and written again before the batch commits
//!   ([`Ledger::flush`], from `before_commit`): the input offsets never move past a send whose
//!   record is not durable. If its partition is revoked first (Kafka unreachable for the whole
//!   batch), the record is dropped with the partition and the new owner sends that one again.
//! - The topic keeps records at least as long as `scored` keeps the events (checked at
//!   start-up), so every event a replay can reach still has its record.
//!
//! The guarantee is **at least once, with a window of one produce**: a crash (kill -9, a node
//! lost) after the channel accepted a notification and before its record is acknowledged (a
//! few milliseconds: the request's answer travelling back, then one `acks=all` produce) sends
//! it again after the restart. Everything else (aborts, rebalances, restarts, operator
//! replays, DLQ replays) sends nothing twice. The generic webhook also carries the event id
//! (`Idempotency-Key`, `X-Mailstream-Event-Id`), so a receiver that dedupes closes the window
//! itself.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use mailstream_runtime::avro::{AvroCodec, registry_settings};
use mailstream_runtime::{
    Naming, ProcessError, RestoreContext, RuntimeConfig, RuntimeError, Topology, kafka,
};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::{Deserialize, Serialize};

/// The logical topic of the records.
pub const TOPIC: &str = "notifications";
/// The input the records are co-partitioned with.
pub const INPUT: &str = "scored";

/// A notification a channel accepted (schema `notification.avsc`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Notification {
    pub event_key: String,
    pub channel: String,
    pub message_id: String,
    pub lead_key: String,
    pub score: i32,
    pub received_at: i64,
    pub sent_at: i64,
    pub attempts: i32,
    pub status: i32,
}

/// The key of the record of `event_id` on `channel`.
pub fn event_key(channel: &str, event_id: &str) -> String {
    format!("{channel}|{event_id}")
}

/// What was sent, per input partition, and the producer that records it.
pub struct Ledger {
    producer: FutureProducer,
    codec: AvroCodec,
    topic: String,
    sent: HashMap<i32, HashSet<String>>,
    /// Records not yet acknowledged, written again by [`Ledger::flush`].
    pending: Vec<(i32, Notification)>,
}

/// Whether `topology` lets the records cover every event a replay can reach: the topic has the
/// input's partitions (a record lands on its event's partition number) and keeps records at
/// least as long as the input keeps events.
pub fn check_topology(topology: &Topology) -> Result<(), String> {
    let (Some(records), Some(input)) = (topology.topic(TOPIC), topology.topic(INPUT)) else {
        return Err(format!("the topology needs topics `{TOPIC}` and `{INPUT}`"));
    };
    if records.partitions != input.partitions {
        return Err(format!(
            "`{TOPIC}` has {} partitions and `{INPUT}` {}: they must be equal (a send is recorded on its event's partition number)",
            records.partitions, input.partitions
        ));
    }
    let retention = |t: &mailstream_runtime::topology::ResolvedTopic| {
        t.config
            .get("retention.ms")
            .and_then(|r| r.parse::<i64>().ok())
            .map(|r| if r < 0 { i64::MAX } else { r })
            // Kafka's default: 7 days.
            .unwrap_or(604_800_000)
    };
    let compact_only = records
        .config
        .get("cleanup.policy")
        .is_some_and(|p| !p.contains("delete"));
    if !compact_only && retention(&records) < retention(&input) {
        return Err(format!(
            "`{TOPIC}` keeps records {} ms and `{INPUT}` events {} ms: a replay could reach events whose record is gone and notify them again",
            retention(&records),
            retention(&input)
        ));
    }
    Ok(())
}

impl Ledger {
    /// Connects the producer and registers the record schema.
    pub async fn start(
        config: &RuntimeConfig,
        naming: &Naming,
        topology: &Topology,
    ) -> Result<Self, RuntimeError> {
        check_topology(topology).map_err(RuntimeError::Topology)?;
        let codec = AvroCodec::new(
            registry_settings(config)?,
            topology,
            naming,
            &[TOPIC.to_string()],
        )?;
        codec.register_outputs().await?;
        let mut client = kafka::durable_producer_config(config);
        client
            .set("linger.ms", "0")
            .set("message.timeout.ms", "10000");
        let producer = client
            .create()
            .map_err(|e| RuntimeError::kafka("creating the notifications producer", e))?;
        Ok(Self {
            producer,
            codec,
            topic: naming.topic(TOPIC),
            sent: HashMap::new(),
            pending: Vec::new(),
        })
    }

    pub fn contains(&self, partition: i32, key: &str) -> bool {
        self.sent.get(&partition).is_some_and(|s| s.contains(key))
    }

    /// Records remembered for `partition`.
    pub fn len(&self, partition: i32) -> usize {
        self.sent.get(&partition).map_or(0, HashSet::len)
    }

    /// Reads back every record of `partition`.
    pub async fn restore(
        &mut self,
        partition: i32,
        ctx: &RestoreContext<'_>,
    ) -> Result<(), ProcessError> {
        let records = ctx.read_changelog::<Notification>(TOPIC, partition).await?;
        let set = self.sent.entry(partition).or_default();
        for (key, value, _) in records {
            match value {
                Some(_) => set.insert(key),
                None => set.remove(&key),
            };
        }
        Ok(())
    }

    pub fn forget(&mut self, partition: i32) {
        self.sent.remove(&partition);
        self.pending.retain(|(p, _)| *p != partition);
    }

    /// Records that `n` was sent: remembered at once (no retry in this process sends it again),
    /// then written and acknowledged; on failure kept for [`Ledger::flush`].
    pub async fn record(
        &mut self,
        partition: i32,
        n: Notification,
        deadline: Instant,
    ) -> Result<(), ProcessError> {
        self.sent
            .entry(partition)
            .or_default()
            .insert(n.event_key.clone());
        self.pending.push((partition, n));
        self.flush(deadline).await
    }

    /// Writes every pending record, each acknowledged by the in-sync replicas.
    pub async fn flush(&mut self, deadline: Instant) -> Result<(), ProcessError> {
        while let Some((partition, n)) = self.pending.first().cloned() {
            let payload = self.codec.encode(TOPIC, &n).await?;
            let wait = deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(500));
            let delivery = self
                .producer
                .send(
                    FutureRecord::to(&self.topic)
                        .partition(partition)
                        .key(&n.event_key)
                        .payload(&payload),
                    wait,
                )
                .await;
            if let Err((e, _)) = delivery {
                return Err(ProcessError::transient(format!(
                    "recording a sent notification in {}[{partition}]: {e}",
                    self.topic
                )));
            }
            self.pending.remove(0);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_topology_covers_every_replayable_event() {
        let topology = Topology::embedded().expect("topology");
        assert_eq!(check_topology(&topology), Ok(()));
        let short = mailstream_runtime::catalog::TOPOLOGY_YAML.replace(
            "config: {cleanup.policy: \"compact,delete\", retention.ms: \"2592000000\"",
            "config: {cleanup.policy: \"compact,delete\", retention.ms: \"86400000\"",
        );
        let topology = Topology::parse(&short).expect("topology");
        let e = check_topology(&topology).expect_err("too short a retention");
        assert!(e.contains("notify them again"), "{e}");
    }
}
