//! Local keyed state, partitioned like the input and backed by a compacted changelog topic.
//!
//! A processor that must remember (the resolver's seen-set of message ids) keeps a
//! [`KeyedStore`]. Every change is also emitted to the changelog topic, to the same partition
//! number as the input record that caused it, in the same transaction as the output. So the
//! changelog holds exactly the state of the committed input offsets; on assignment the store is
//! rebuilt from it ([`RestoreContext::read_changelog`]) before that partition's records are
//! processed. Changes since the last commit are kept in an undo log and rolled back when a
//! transaction aborts. Memory is bounded by entry count and age; an evicted entry is tombstoned
//! in the changelog so compaction removes it there too.
//!
//! Time is the caller's (record time, not the wall clock), so a replay makes the same decisions.

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::avro::AvroCodec;
use crate::config::RuntimeConfig;
use crate::error::ProcessError;
use crate::kafka;
use crate::processor::{AvroRecord, Outputs};
use crate::topology::Naming;

#[derive(Debug, Clone)]
struct Entry<V> {
    value: V,
    touched_ms: i64,
}

#[derive(Debug)]
struct Undo<V> {
    partition: i32,
    key: String,
    previous: Option<Entry<V>>,
}

/// Limits of a store, per partition.
#[derive(Debug, Clone, Copy)]
pub struct StoreLimits {
    pub max_entries: usize,
    pub max_age_ms: i64,
}

/// A changelog-backed map from key to `V`, one map per input partition.
#[derive(Debug)]
pub struct KeyedStore<V> {
    changelog: String,
    limits: StoreLimits,
    partitions: HashMap<i32, HashMap<String, Entry<V>>>,
    undo: Vec<Undo<V>>,
}

impl<V: AvroRecord + Clone> KeyedStore<V> {
    /// A store whose changelog is the logical topic `changelog`.
    pub fn new(changelog: impl Into<String>, limits: StoreLimits) -> Self {
        Self {
            changelog: changelog.into(),
            limits,
            partitions: HashMap::new(),
            undo: Vec::new(),
        }
    }

    pub fn changelog(&self) -> &str {
        &self.changelog
    }

    pub fn get(&self, partition: i32, key: &str) -> Option<&V> {
        self.partitions
            .get(&partition)
            .and_then(|p| p.get(key))
            .map(|e| &e.value)
    }

    /// Entries held for `partition`.
    pub fn len(&self, partition: i32) -> usize {
        self.partitions.get(&partition).map_or(0, HashMap::len)
    }

    pub fn is_empty(&self) -> bool {
        self.partitions.values().all(HashMap::is_empty)
    }

    /// Sets `key` and emits the change to the changelog; evicts what the limits no longer allow.
    pub fn put(
        &mut self,
        partition: i32,
        key: &str,
        value: V,
        now_ms: i64,
        out: &mut Outputs,
    ) -> Result<(), ProcessError> {
        out.send_to_partition(&self.changelog, partition, key, value.clone())?;
        let map = self.partitions.entry(partition).or_default();
        let previous = map.insert(
            key.to_string(),
            Entry {
                value,
                touched_ms: now_ms,
            },
        );
        self.undo.push(Undo {
            partition,
            key: key.to_string(),
            previous,
        });
        self.evict(partition, now_ms, out);
        Ok(())
    }

    /// Removes entries older than `max_age_ms`, then the oldest beyond `max_entries`.
    fn evict(&mut self, partition: i32, now_ms: i64, out: &mut Outputs) {
        let Some(map) = self.partitions.get_mut(&partition) else {
            return;
        };
        let cutoff = now_ms.saturating_sub(self.limits.max_age_ms);
        let mut doomed: Vec<(String, i64)> = map
            .iter()
            .filter(|(_, e)| e.touched_ms < cutoff)
            .map(|(k, e)| (k.clone(), e.touched_ms))
            .collect();
        let over = map.len().saturating_sub(doomed.len());
        if over > self.limits.max_entries {
            let mut rest: Vec<(String, i64)> = map
                .iter()
                .filter(|(_, e)| e.touched_ms >= cutoff)
                .map(|(k, e)| (k.clone(), e.touched_ms))
                .collect();
            rest.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
            doomed.extend(rest.into_iter().take(over - self.limits.max_entries));
        }
        for (key, _) in doomed {
            let previous = map.remove(&key);
            out.tombstone_to_partition(&self.changelog, partition, key.clone());
            self.undo.push(Undo {
                partition,
                key,
                previous,
            });
        }
    }

    /// The changes since the last commit are durable.
    pub fn commit(&mut self) {
        self.undo.clear();
    }

    /// The transaction aborted: undo every change since the last commit.
    pub fn rollback(&mut self) {
        self.rollback_to(0);
    }

    /// A point to roll back to: take one before processing a record, so the changes of a
    /// record that ends up dead-lettered (its outputs, changelog entries included, are never
    /// written) can be undone alone with [`KeyedStore::rollback_to`].
    pub fn mark(&self) -> usize {
        self.undo.len()
    }

    /// Undoes every change made since `mark` was taken.
    pub fn rollback_to(&mut self, mark: usize) {
        while self.undo.len() > mark
            && let Some(undo) = self.undo.pop()
        {
            let map = self.partitions.entry(undo.partition).or_default();
            match undo.previous {
                Some(entry) => {
                    map.insert(undo.key, entry);
                }
                None => {
                    map.remove(&undo.key);
                }
            }
        }
    }

    /// Replaces `partition`'s state with the changelog's (`None` values are tombstones).
    pub fn restore(&mut self, partition: i32, records: Vec<(String, Option<V>, i64)>) {
        let mut map = HashMap::new();
        for (key, value, touched_ms) in records {
            match value {
                Some(value) => {
                    map.insert(key, Entry { value, touched_ms });
                }
                None => {
                    map.remove(&key);
                }
            }
        }
        self.partitions.insert(partition, map);
    }

    /// Forgets a partition this instance no longer owns.
    pub fn drop_partition(&mut self, partition: i32) {
        self.partitions.remove(&partition);
    }
}

/// What a processor may use while partitions are being assigned: reading changelogs.
pub struct RestoreContext<'a> {
    pub(crate) config: &'a RuntimeConfig,
    pub(crate) naming: &'a Naming,
    pub(crate) codec: &'a AvroCodec,
}

impl RestoreContext<'_> {
    /// Every committed record of `partition` of the logical changelog topic, oldest first, as
    /// (key, value or `None` for a tombstone, timestamp ms).
    pub async fn read_changelog<V: AvroRecord>(
        &self,
        changelog: &str,
        partition: i32,
    ) -> Result<Vec<(String, Option<V>, i64)>, ProcessError> {
        let topic = self.naming.topic(changelog);
        let raw = read_partition(self.config, &topic, partition)?;
        let mut records = Vec::with_capacity(raw.len());
        for (key, payload, timestamp) in raw {
            let value = match payload {
                None => None,
                Some(bytes) => {
                    let value = self.codec.decode(Some(&bytes)).await?;
                    Some(V::from_avro(value).map_err(ProcessError::fatal)?)
                }
            };
            records.push((key, value, timestamp));
        }
        Ok(records)
    }
}

type RawRecord = (String, Option<Vec<u8>>, i64);

/// How long reading one changelog partition may take before it counts as a transient failure.
const RESTORE_TIMEOUT: Duration = Duration::from_secs(120);

/// Reads one partition from the beginning to its high watermark (read_committed).
fn read_partition(
    config: &RuntimeConfig,
    topic: &str,
    partition: i32,
) -> Result<Vec<RawRecord>, ProcessError> {
    let transient = |what: &str, e: rdkafka::error::KafkaError| {
        ProcessError::transient(format!("{what} {topic}[{partition}]: {e}"))
    };
    let consumer: BaseConsumer = kafka::reader_config(config, &format!("{topic}-restore"))
        .create()
        .map_err(|e| transient("creating a reader for", e))?;
    let (_, high) = consumer
        .fetch_watermarks(topic, partition, Duration::from_secs(10))
        .map_err(|e| transient("reading the watermarks of", e))?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Beginning)
        .map_err(|e| transient("assigning", e))?;
    consumer
        .assign(&tpl)
        .map_err(|e| transient("assigning", e))?;
    let mut records = Vec::new();
    let mut position = 0;
    let deadline = std::time::Instant::now() + RESTORE_TIMEOUT;
    // Control records (transaction markers) count in offsets, so stop on the position, not
    // on the number of records read.
    while position < high {
        if std::time::Instant::now() > deadline {
            return Err(ProcessError::transient(format!(
                "restoring {topic}[{partition}] did not reach offset {high} within {RESTORE_TIMEOUT:?} (an open transaction?)"
            )));
        }
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => {
                position = m.offset() + 1;
                let key = m
                    .key()
                    .map(|k| String::from_utf8_lossy(k).into_owned())
                    .unwrap_or_default();
                let timestamp = m.timestamp().to_millis().unwrap_or_default();
                records.push((key, m.payload().map(<[u8]>::to_vec), timestamp));
            }
            Some(Err(e)) => return Err(transient("reading", e)),
            None => {
                position = consumer
                    .position()
                    .ok()
                    .and_then(|p| p.find_partition(topic, partition).map(|e| e.offset()))
                    .and_then(|o| o.to_raw())
                    .unwrap_or(position)
                    .max(position);
            }
        }
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::processor::GenericRecord;
    use apache_avro::types::Value;

    fn v(s: &str) -> GenericRecord {
        GenericRecord(Value::String(s.into()))
    }

    #[test]
    fn rollback_restores_the_state_of_the_last_commit() {
        let mut store = KeyedStore::new(
            "log",
            StoreLimits {
                max_entries: 10,
                max_age_ms: 1_000,
            },
        );
        let mut out = Outputs::default();
        store.put(0, "a", v("1"), 100, &mut out).expect("put");
        store.commit();
        store.put(0, "a", v("2"), 110, &mut out).expect("put");
        store.put(0, "b", v("3"), 120, &mut out).expect("put");
        store.rollback();
        assert_eq!(store.get(0, "a"), Some(&v("1")));
        assert_eq!(store.get(0, "b"), None);
        assert_eq!(out.len(), 3, "every change went to the changelog");
    }

    #[test]
    fn rollback_to_a_mark_undoes_only_the_later_changes() {
        let mut store = KeyedStore::new(
            "log",
            StoreLimits {
                max_entries: 10,
                max_age_ms: 1_000_000,
            },
        );
        let mut out = Outputs::default();
        store.put(0, "a", v("1"), 0, &mut out).expect("put");
        let mark = store.mark();
        store.put(0, "a", v("2"), 1, &mut out).expect("put");
        store.put(0, "b", v("3"), 2, &mut out).expect("put");
        store.rollback_to(mark);
        assert_eq!(store.get(0, "a"), Some(&v("1")));
        assert_eq!(store.get(0, "b"), None);
        store.rollback();
        assert!(store.get(0, "a").is_none());
    }

    #[test]
    fn eviction_by_age_and_count_tombstones_the_changelog() {
        let mut store = KeyedStore::new(
            "log",
            StoreLimits {
                max_entries: 2,
                max_age_ms: 1_000,
            },
        );
        let mut out = Outputs::default();
        store.put(3, "old", v("x"), 0, &mut out).expect("put");
        store.put(3, "b", v("x"), 1_500, &mut out).expect("put"); // "old" ages out
        store.put(3, "c", v("x"), 1_600, &mut out).expect("put");
        store.put(3, "d", v("x"), 1_700, &mut out).expect("put"); // "b" is the oldest beyond 2
        assert_eq!(store.len(3), 2);
        assert!(store.get(3, "old").is_none() && store.get(3, "b").is_none());
        let tombstones: Vec<_> = out
            .records
            .iter()
            .filter(|r| r.value.is_none())
            .map(|r| (r.key.clone(), r.partition))
            .collect();
        assert_eq!(
            tombstones,
            vec![
                (Some("old".to_string()), Some(3)),
                (Some("b".to_string()), Some(3))
            ]
        );
    }

    #[test]
    fn restore_applies_tombstones() {
        let mut store: KeyedStore<GenericRecord> = KeyedStore::new(
            "log",
            StoreLimits {
                max_entries: 10,
                max_age_ms: 1_000,
            },
        );
        store.restore(
            1,
            vec![
                ("a".into(), Some(v("1")), 5),
                ("b".into(), Some(v("2")), 6),
                ("a".into(), None, 7),
            ],
        );
        assert_eq!(store.get(1, "a"), None);
        assert_eq!(store.get(1, "b"), Some(&v("2")));
    }
}
