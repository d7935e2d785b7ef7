//! Local keyed state, partitioned like the input and backed by a compacted changelog topic.
//!
//! A processor that must remember (the resolver's seen-set of message ids and its thread links)
//! keeps a [`KeyedStore`]. Rules:
//!
//! - **Changelog.** Every change is also emitted to the changelog topic, to the same partition
//!   number as the input record that caused it, in the same transaction as the output. So the
//!   changelog holds exactly the state of the committed input offsets; on assignment the store
//!   is rebuilt from it ([`RestoreContext::read_changelog`], then [`KeyedStore::restore`], which
//!   applies tombstones) before that partition's records are processed.
//! - **Undo.** Changes since the last commit are kept in an undo log: [`KeyedStore::rollback`]
//!   undoes them all when a transaction aborts, [`KeyedStore::rollback_to`] those since a
//!   [`KeyedStore::mark`] (one dead-lettered record). Evictions are changes too, undone alike.
//! - **Bounds, per partition.** After each [`KeyedStore::put`] at time `now`, entries last
//!   written before `now - max_age_ms` are evicted, then the oldest while more than
//!   `max_entries` remain. Oldest means the smallest write time, ties broken by key, so the
//!   order is a function of the records alone. Each evicted entry is tombstoned in the
//!   changelog (same partition) so compaction removes it there too; a restore does not evict
//!   (the next `put` does).
//! - **Cost.** Each partition keeps its keys ordered by age beside the map ([`index`]): a `put`
//!   costs O(log n), and each eviction O(log n) once per entry, whatever the store's size.
//! - **Time is the caller's** (record time, never the wall clock), so a replay makes the same
//!   decisions.

mod changelog;
mod index;

use std::collections::HashMap;

use crate::processor::{AvroRecord, Outputs};

pub use changelog::{RecordReader, RestoreContext};
use index::{Entry, Partition};

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
    partitions: HashMap<i32, Partition<V>>,
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
        self.partitions.get(&partition).map_or(0, Partition::len)
    }

    pub fn is_empty(&self) -> bool {
        self.partitions.values().all(Partition::is_empty)
    }

    /// Sets `key` and emits the change to the changelog; evicts what the limits no longer allow.
    pub fn put(&mut self, partition: i32, key: &str, value: V, now_ms: i64, out: &mut Outputs) {
        out.send_to_partition(&self.changelog, partition, key, value.clone());
        self.track(partition, key, value, now_ms, out);
    }

    /// Sets `key` like [`KeyedStore::put`] but emits nothing for it: for a store that keeps
    /// less than the record its caller wrote to the changelog itself (same partition), such
    /// as only the keys and ages of a table. Evictions are tombstoned all the same.
    pub fn track(&mut self, partition: i32, key: &str, value: V, now_ms: i64, out: &mut Outputs) {
        let entry = Entry {
            value,
            touched_ms: now_ms,
        };
        let previous = self
            .partitions
            .entry(partition)
            .or_default()
            .insert(key.to_string(), entry);
        self.undo.push(Undo {
            partition,
            key: key.to_string(),
            previous,
        });
        self.evict(partition, now_ms, out);
    }

    /// Removes entries older than `max_age_ms`, then the oldest beyond `max_entries`, oldest
    /// first (those past the age are the oldest, so one walk from the front does both).
    fn evict(&mut self, partition: i32, now_ms: i64, out: &mut Outputs) {
        let Some(map) = self.partitions.get_mut(&partition) else {
            return;
        };
        let cutoff = now_ms.saturating_sub(self.limits.max_age_ms);
        while let Some((touched_ms, key)) = map.oldest()
            && (*touched_ms < cutoff || map.len() > self.limits.max_entries)
        {
            let key = key.clone();
            let previous = map.remove(&key);
            out.tombstone_to_partition(&self.changelog, partition, key.clone());
            self.undo.push(Undo {
                partition,
                key,
                previous,
            });
        }
    }

    /// Removes `key` (a tombstone in the changelog), if it is there.
    pub fn remove(&mut self, partition: i32, key: &str, out: &mut Outputs) {
        let Some(previous) = self
            .partitions
            .get_mut(&partition)
            .and_then(|p| p.remove(key))
        else {
            return;
        };
        out.tombstone_to_partition(&self.changelog, partition, key);
        self.undo.push(Undo {
            partition,
            key: key.to_string(),
            previous: Some(previous),
        });
    }

    /// Every (key, value) of `partition`, in no particular order.
    pub fn entries(&self, partition: i32) -> impl Iterator<Item = (&String, &V)> {
        self.partitions
            .get(&partition)
            .into_iter()
            .flat_map(|p| p.iter().map(|(k, e)| (k, &e.value)))
    }

    /// The partitions held.
    pub fn partitions(&self) -> impl Iterator<Item = i32> + '_ {
        self.partitions.keys().copied()
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

    /// Undoes every change made since `mark` was taken, newest first. Changes to a partition
    /// dropped since are skipped: it is rebuilt from its changelog if it comes back.
    pub fn rollback_to(&mut self, mark: usize) {
        while self.undo.len() > mark
            && let Some(undo) = self.undo.pop()
        {
            let Some(map) = self.partitions.get_mut(&undo.partition) else {
                continue;
            };
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
        let mut map = Partition::default();
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
        store.put(0, "a", v("1"), 100, &mut out);
        store.commit();
        store.put(0, "a", v("2"), 110, &mut out);
        store.put(0, "b", v("3"), 120, &mut out);
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
        store.put(0, "a", v("1"), 0, &mut out);
        let mark = store.mark();
        store.put(0, "a", v("2"), 1, &mut out);
        store.put(0, "b", v("3"), 2, &mut out);
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
        store.put(3, "old", v("x"), 0, &mut out);
        store.put(3, "b", v("x"), 1_500, &mut out); // "old" ages out
        store.put(3, "c", v("x"), 1_600, &mut out);
        store.put(3, "d", v("x"), 1_700, &mut out); // "b" is the oldest beyond 2
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

    fn limits(max_entries: usize, max_age_ms: i64) -> StoreLimits {
        StoreLimits {
            max_entries,
            max_age_ms,
        }
    }

    /// The tombstoned keys in `out`, in the order they were emitted.
    fn tombstoned(out: &Outputs) -> Vec<String> {
        out.records
            .iter()
            .filter(|r| r.value.is_none())
            .filter_map(|r| r.key.clone())
            .collect()
    }

    /// Every partition's age index agrees with its map.
    fn consistent(store: &KeyedStore<GenericRecord>) -> bool {
        store.partitions.values().all(Partition::is_consistent)
    }

    /// (key, touched_ms) of `partition`, oldest first.
    fn ages(store: &KeyedStore<GenericRecord>, partition: i32) -> Vec<(String, i64)> {
        store.partitions.get(&partition).map_or(Vec::new(), |p| {
            p.by_age().map(|(t, k)| (k.clone(), *t)).collect()
        })
    }

    #[test]
    fn evicts_oldest_first_ties_by_key_aged_out_ones_included() {
        let mut store = KeyedStore::new("log", limits(3, 1_000));
        let mut out = Outputs::default();
        for key in ["z", "y", "x"] {
            store.put(0, key, v(key), 10, &mut out);
        }
        store.put(0, "w", v("w"), 20, &mut out); // one over: "x" (ties by key)
        assert_eq!(tombstoned(&out), ["x"]);
        store.put(0, "y", v("y"), 30, &mut out); // touched: no longer the oldest
        store.put(0, "v", v("v"), 40, &mut out); // over again: "z" at 10
        assert_eq!(tombstoned(&out), ["x", "z"]);
        store.put(0, "u", v("u"), 1_035, &mut out); // "w" (20) and "y" (30) aged out
        assert_eq!(tombstoned(&out), ["x", "z", "w", "y"]);
        assert_eq!(ages(&store, 0), [("v".into(), 40), ("u".into(), 1_035)]);
        assert!(consistent(&store));
    }

    #[test]
    fn rollbacks_restore_entries_and_their_age_order() {
        let mut store = KeyedStore::new("log", limits(2, 1_000));
        let mut out = Outputs::default();
        store.put(1, "a", v("a"), 10, &mut out);
        store.put(1, "b", v("b"), 20, &mut out);
        store.commit();
        let before = ages(&store, 1);

        store.put(1, "a", v("a2"), 30, &mut out); // touches "a"
        let mark = store.mark();
        store.put(1, "c", v("c"), 40, &mut out); // evicts "b"
        store.put(1, "d", v("d"), 2_000, &mut out); // ages out "a", "c"
        assert_eq!(ages(&store, 1), [("d".into(), 2_000)]);
        store.rollback_to(mark);
        assert_eq!(ages(&store, 1), [("b".into(), 20), ("a".into(), 30)]);
        assert!(consistent(&store));

        store.rollback();
        assert_eq!(ages(&store, 1), before);
        assert_eq!(store.get(1, "a"), Some(&v("a")));
        assert!(consistent(&store));
        // The restored order drives the next eviction: "a" (10) is the oldest again.
        let mut next = Outputs::default();
        store.put(1, "e", v("e"), 50, &mut next);
        assert_eq!(tombstoned(&next), ["a"]);
    }

    #[test]
    fn rollback_skips_a_partition_dropped_since() {
        let mut store = KeyedStore::new("log", limits(10, 1_000));
        let mut out = Outputs::default();
        store.put(2, "a", v("a"), 10, &mut out);
        store.drop_partition(2);
        store.rollback();
        assert_eq!(store.len(2), 0);
        assert!(store.partitions.is_empty(), "nothing resurrected");
    }

    #[test]
    fn restore_builds_the_age_index_and_the_next_put_evicts_from_it() {
        let mut store = KeyedStore::new("log", limits(2, 1_000));
        store.restore(
            0,
            vec![
                ("a".into(), Some(v("1")), 30),
                ("b".into(), Some(v("2")), 10),
                ("c".into(), Some(v("3")), 20),
                ("b".into(), None, 40),
                ("d".into(), Some(v("4")), 25),
            ],
        );
        assert_eq!(store.len(0), 3, "a restore does not evict");
        assert!(consistent(&store));
        let mut out = Outputs::default();
        store.put(0, "e", v("5"), 50, &mut out);
        assert_eq!(tombstoned(&out), ["c", "d"]);
        assert_eq!(store.get(0, "a"), Some(&v("1")));
    }

    /// The rule as the store had it before the index: scan, age first, then sort by count.
    fn reference_evict(map: &mut HashMap<String, i64>, now: i64, limits: StoreLimits) {
        let cutoff = now.saturating_sub(limits.max_age_ms);
        let mut by_age: Vec<(i64, String)> = map.iter().map(|(k, t)| (*t, k.clone())).collect();
        by_age.sort();
        let aged = by_age.iter().filter(|(t, _)| *t < cutoff).count();
        let over = (map.len() - aged).saturating_sub(limits.max_entries);
        for (_, key) in by_age.into_iter().take(aged + over) {
            map.remove(&key);
        }
    }

    #[test]
    fn random_puts_and_rollbacks_match_the_scanning_rule() {
        let limits = limits(50, 400);
        let mut store = KeyedStore::new("log", limits);
        let mut committed: HashMap<String, i64> = HashMap::new();
        let mut model = committed.clone();
        let mut seed: u64 = 0x5eed;
        let mut next = |n: u64| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) % n
        };
        let mut now = 0_i64;
        for step in 0..5_000 {
            let mut out = Outputs::default();
            // Mostly forward in time, sometimes a late record.
            now += i64::try_from(next(10)).unwrap_or_default() - 2;
            let key = format!("k{}", next(120));
            store.put(0, &key, v(&key), now, &mut out);
            model.insert(key, now);
            reference_evict(&mut model, now, limits);
            match step % 7 {
                0 => {
                    store.commit();
                    committed = model.clone();
                }
                3 if next(3) == 0 => {
                    store.rollback();
                    model = committed.clone();
                }
                _ => {}
            }
            let mut expected: Vec<(i64, String)> =
                model.iter().map(|(k, t)| (*t, k.clone())).collect();
            expected.sort();
            let held: Vec<(i64, String)> =
                ages(&store, 0).into_iter().map(|(k, t)| (t, k)).collect();
            assert_eq!(held, expected, "step {step}");
            assert!(consistent(&store), "step {step}");
        }
    }

    #[test]
    fn track_emits_only_the_tombstones_of_what_it_evicts() {
        let mut store: KeyedStore<()> = KeyedStore::new("log", limits(1, 1_000));
        let mut out = Outputs::default();
        store.track(0, "a", (), 10, &mut out);
        assert!(out.is_empty(), "the caller wrote the record itself");
        store.track(0, "b", (), 20, &mut out);
        assert_eq!(out.len(), 1);
        assert!(out.records[0].value.is_none() && out.records[0].partition == Some(0));
        store.rollback();
        assert!(store.is_empty());
    }
}
