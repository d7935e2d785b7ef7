//! Bookkeeping of one transaction's worth of input: which offsets it covers per partition.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::{Offset, TopicPartitionList};

use crate::error::RuntimeError;

/// Offsets covered by the open transaction.
#[derive(Debug, Default)]
pub struct Batch {
    /// partition → (first offset, last offset) consumed in this batch.
    ranges: BTreeMap<i32, (i64, i64)>,
    records: usize,
    /// Outputs a processor emitted with no input ([`crate::Processor::on_idle`]).
    idle_outputs: usize,
    /// Input payload bytes.
    bytes: u64,
    /// The consumer's rebalance count when the first record arrived.
    rebalances_at_start: u64,
}

impl Batch {
    /// Starts a batch with its first record, under assignment generation `rebalances`.
    pub fn start(&mut self, rebalances: u64) {
        self.rebalances_at_start = rebalances;
    }

    /// Whether the assignment changed since the first record.
    pub fn saw_rebalance(&self, rebalances_now: u64) -> bool {
        rebalances_now != self.rebalances_at_start
    }

    /// Adds a record of `bytes` payload bytes at `partition`/`offset` to the batch; true when
    /// it is the batch's first record of `partition`.
    pub fn track(&mut self, partition: i32, offset: i64, bytes: usize) -> bool {
        self.records += 1;
        self.bytes += bytes as u64;
        match self.ranges.entry(partition) {
            std::collections::btree_map::Entry::Occupied(mut range) => {
                range.get_mut().1 = offset;
                false
            }
            std::collections::btree_map::Entry::Vacant(range) => {
                range.insert((offset, offset));
                true
            }
        }
    }

    /// Adds `outputs` emitted with no input record to the batch.
    pub fn track_idle_outputs(&mut self, outputs: usize) {
        self.idle_outputs += outputs;
    }

    /// Whether the batch holds nothing: no transaction is open for it.
    pub fn is_empty(&self) -> bool {
        self.records == 0 && self.idle_outputs == 0
    }

    pub fn len(&self) -> usize {
        self.records
    }

    /// Input payload bytes of the batch.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The offsets to commit: one past the last record of each partition.
    pub fn commit_offsets(&self, topic: &str) -> Result<TopicPartitionList, RuntimeError> {
        let mut tpl = TopicPartitionList::new();
        for (partition, next) in self.next_offsets() {
            tpl.add_partition_offset(topic, partition, Offset::Offset(next))
                .map_err(|e| RuntimeError::kafka("building the offsets to commit", e))?;
        }
        Ok(tpl)
    }

    /// Each partition's offset after the batch (what a commit of it stores).
    pub fn next_offsets(&self) -> impl Iterator<Item = (i32, i64)> + '_ {
        self.ranges.iter().map(|(p, (_, last))| (*p, last + 1))
    }

    /// The partitions the batch read from.
    pub fn partitions(&self) -> impl Iterator<Item = i32> + '_ {
        self.ranges.keys().copied()
    }

    /// Whether `committed`, the group's committed offsets of `topic` read once the batch's
    /// transaction has surely ended, shows that it committed: every partition of the batch
    /// listed is at or past the batch's end (a transaction commits all of them or none).
    /// `None` when it lists none of the batch's partitions (they all moved to other members).
    pub fn committed_in(&self, topic: &str, committed: &TopicPartitionList) -> Option<bool> {
        let mut listed = committed
            .elements_for_topic(topic)
            .into_iter()
            .filter_map(|e| Some((e.offset(), self.ranges.get(&e.partition())?.1 + 1)))
            .peekable();
        listed.peek()?;
        Some(listed.all(|(offset, end)| matches!(offset, Offset::Offset(o) if o >= end)))
    }
}

/// Exponential backoff with full jitter, for transient failures.
#[derive(Debug)]
pub struct Backoff {
    attempt: u32,
    max: Duration,
}

impl Backoff {
    pub fn new(max: Duration) -> Self {
        Self { attempt: 0, max }
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    pub fn next_delay(&mut self) -> Duration {
        let base = Duration::from_millis(100).saturating_mul(1 << self.attempt.min(16));
        self.attempt = self.attempt.saturating_add(1);
        let cap = base.min(self.max);
        cap.mul_f64(rand::random::<f64>())
            .max(Duration::from_millis(10))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_one_past_the_last_offset_of_each_partition() {
        let mut batch = Batch::default();
        batch.track(0, 10, 100);
        batch.track(1, 5, 100);
        batch.track(0, 11, 100);
        let tpl = batch.commit_offsets("t").expect("valid");
        let offsets: Vec<_> = tpl
            .elements()
            .iter()
            .map(|e| (e.partition(), e.offset()))
            .collect();
        assert_eq!(
            offsets,
            vec![(0, Offset::Offset(12)), (1, Offset::Offset(6))]
        );
        assert_eq!(batch.partitions().collect::<Vec<_>>(), vec![0, 1]);
        assert_eq!((batch.len(), batch.bytes()), (3, 300));
    }

    #[test]
    fn a_batch_committed_when_its_partitions_are_committed_past_it() {
        let mut batch = Batch::default();
        batch.track(0, 10, 1);
        batch.track(0, 11, 1);
        batch.track(3, 7, 1);
        let offsets = |list: &[(i32, Offset)]| {
            let mut tpl = TopicPartitionList::new();
            for (p, o) in list {
                tpl.add_partition_offset("t", *p, *o).expect("valid");
            }
            tpl
        };
        let done = offsets(&[(0, Offset::Offset(12)), (3, Offset::Offset(8))]);
        assert_eq!(batch.committed_in("t", &done), Some(true));
        let before = offsets(&[(0, Offset::Offset(10)), (3, Offset::Offset(7))]);
        assert_eq!(batch.committed_in("t", &before), Some(false));
        let never = offsets(&[(0, Offset::Invalid)]);
        assert_eq!(batch.committed_in("t", &never), Some(false));
        let moved = offsets(&[(5, Offset::Offset(99))]);
        assert_eq!(
            batch.committed_in("t", &moved),
            None,
            "none of its partitions"
        );
    }

    #[test]
    fn backoff_stays_under_its_cap() {
        let mut backoff = Backoff::new(Duration::from_millis(500));
        for _ in 0..40 {
            assert!(backoff.next_delay() <= Duration::from_millis(500));
        }
    }
}
