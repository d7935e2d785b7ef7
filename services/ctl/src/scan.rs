//! Bounded reads for the operator commands: the committed records of some partitions from a
//! given offset up to the end of the log as it was when the read started, then stop. Uses an
//! assigned (never subscribed) `read_committed` consumer that commits nothing, so it moves no
//! group's offsets; partition EOF events tell when each partition is done.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use mailstream_runtime::{RuntimeConfig, kafka};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

/// How long a bounded read may take before it gives up.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// One record, owned (the runtime's own copy of a consumed message).
pub use mailstream_runtime::stream::ConsumedRecord as Scanned;

/// A partition to read: from `start` up to (not including) `end`.
#[derive(Debug, Clone, Copy)]
pub struct Range {
    pub partition: i32,
    pub start: i64,
    pub end: i64,
}

/// A bounded reader of this deployment's topics (one consumer per reader).
pub struct Reader {
    consumer: StreamConsumer,
}

impl Reader {
    pub fn new(config: &RuntimeConfig) -> anyhow::Result<Self> {
        let group = format!("{}mailstream-ctl-scan", config.topic_prefix);
        let consumer = kafka::reader_config(config, &group)
            .set("enable.partition.eof", "true")
            .set("auto.offset.reset", "earliest")
            .create()
            .context("creating a Kafka consumer (check bootstrap_servers)")?;
        Ok(Self { consumer })
    }

    /// Every partition of `physical` from its start to its current end; `None` when the topic
    /// does not exist.
    pub fn ranges(&self, physical: &str) -> anyhow::Result<Option<Vec<Range>>> {
        let metadata = self
            .consumer
            .fetch_metadata(Some(physical), crate::groups::TIMEOUT)
            .with_context(|| format!("reading the metadata of {physical} (is Kafka reachable?)"))?;
        let Some(topic) = metadata
            .topics()
            .first()
            .filter(|t| t.error().is_none() && !t.partitions().is_empty())
        else {
            return Ok(None);
        };
        let mut ranges = Vec::new();
        for p in topic.partitions() {
            let (low, high) = crate::groups::watermarks(&self.consumer, physical, p.id())?;
            ranges.push(Range {
                partition: p.id(),
                start: low,
                end: high,
            });
        }
        ranges.sort_by_key(|r| r.partition);
        Ok(Some(ranges))
    }

    /// Reads `ranges` of `physical`; at most `limit` records per partition when given.
    pub async fn read(
        &self,
        physical: &str,
        ranges: &[Range],
        limit: Option<usize>,
    ) -> anyhow::Result<Vec<Scanned>> {
        let consumer = &self.consumer;
        let mut tpl = TopicPartitionList::new();
        let mut open = BTreeSet::new();
        for r in ranges.iter().filter(|r| r.end > r.start) {
            tpl.add_partition_offset(physical, r.partition, Offset::Offset(r.start))
                .context("building the assignment")?;
            open.insert(r.partition);
        }
        let mut out = Vec::new();
        if open.is_empty() {
            return Ok(out);
        }
        consumer
            .assign(&tpl)
            .with_context(|| format!("assigning {physical}"))?;
        let started = Instant::now();
        let mut counts = std::collections::BTreeMap::new();
        while !open.is_empty() {
            let left = READ_TIMEOUT.saturating_sub(started.elapsed());
            if left.is_zero() {
                bail!(
                    "reading {physical} did not reach the end of partitions {open:?} within {READ_TIMEOUT:?} (is Kafka healthy?)"
                );
            }
            let message = match tokio::time::timeout(left, consumer.recv()).await {
                Err(_) => continue,
                Ok(Err(KafkaError::PartitionEOF(p))) => {
                    open.remove(&p);
                    continue;
                }
                Ok(Err(e)) => {
                    eprintln!("warning: reading {physical}: {e} (retrying)");
                    continue;
                }
                Ok(Ok(m)) => m,
            };
            if message.topic() != physical {
                continue;
            }
            let p = message.partition();
            let Some(range) = ranges.iter().find(|r| r.partition == p) else {
                continue;
            };
            if !open.contains(&p) || message.offset() >= range.end {
                open.remove(&p);
                continue;
            }
            let count = counts.entry(p).or_insert(0usize);
            *count += 1;
            out.push(Scanned::from_message(&message));
            if message.offset() + 1 >= range.end || limit.is_some_and(|l| *count >= l) {
                open.remove(&p);
            }
        }
        consumer.unassign().ok();
        out.sort_by_key(|s| (s.partition, s.offset));
        Ok(out)
    }
}
