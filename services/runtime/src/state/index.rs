//! One partition of a [`super::KeyedStore`]: the entries by key, and the same keys ordered by
//! age.
//!
//! Rules:
//! - `by_age` holds exactly one `(touched_ms, key)` per entry of `entries`, with the entry's
//!   `touched_ms`: every change goes through [`Partition::insert`] and [`Partition::remove`],
//!   which update both, so the two never disagree.
//! - The oldest entry is the first of `by_age`: smallest `touched_ms`, ties broken by key. That
//!   is the eviction order, so eviction costs O(log n) per evicted entry and never scans.

use std::collections::{BTreeSet, HashMap};

/// A value and the (record) time it was last written.
#[derive(Debug, Clone)]
pub(super) struct Entry<V> {
    pub value: V,
    pub touched_ms: i64,
}

/// The entries of one partition, with their age index.
#[derive(Debug)]
pub(super) struct Partition<V> {
    entries: HashMap<String, Entry<V>>,
    by_age: BTreeSet<(i64, String)>,
}

impl<V> Default for Partition<V> {
    fn default() -> Self {
        Self {
            entries: HashMap::new(),
            by_age: BTreeSet::new(),
        }
    }
}

impl<V> Partition<V> {
    pub fn get(&self, key: &str) -> Option<&Entry<V>> {
        self.entries.get(key)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Sets `key`, returning what it replaced.
    pub fn insert(&mut self, key: String, entry: Entry<V>) -> Option<Entry<V>> {
        let touched_ms = entry.touched_ms;
        let previous = self.entries.insert(key.clone(), entry);
        if let Some(old) = &previous {
            self.by_age.remove(&(old.touched_ms, key.clone()));
        }
        self.by_age.insert((touched_ms, key));
        previous
    }

    /// Removes `key`, returning its entry.
    pub fn remove(&mut self, key: &str) -> Option<Entry<V>> {
        let removed = self.entries.remove(key)?;
        self.by_age.remove(&(removed.touched_ms, key.to_string()));
        Some(removed)
    }

    /// Every (key, entry), in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Entry<V>)> {
        self.entries.iter()
    }

    /// The oldest entry's (touched_ms, key): the next to evict.
    pub fn oldest(&self) -> Option<&(i64, String)> {
        self.by_age.first()
    }
}

#[cfg(test)]
impl<V> Partition<V> {
    /// Every (touched_ms, key), oldest first.
    pub fn by_age(&self) -> impl Iterator<Item = &(i64, String)> {
        self.by_age.iter()
    }

    /// Whether the index holds exactly one row per entry, with the entry's time.
    pub fn is_consistent(&self) -> bool {
        self.by_age.len() == self.entries.len()
            && self
                .by_age
                .iter()
                .all(|(t, k)| self.entries.get(k).is_some_and(|e| e.touched_ms == *t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(touched_ms: i64) -> Entry<u8> {
        Entry {
            value: 0,
            touched_ms,
        }
    }

    #[test]
    fn overwrites_and_removals_keep_one_index_row_per_entry() {
        let mut p = Partition::default();
        p.insert("b".into(), at(5));
        p.insert("a".into(), at(5));
        p.insert("c".into(), at(1));
        assert_eq!(p.oldest(), Some(&(1, "c".to_string())));
        p.insert("c".into(), at(9)); // touched again: no longer the oldest
        p.insert("a".into(), at(5)); // same time: still one row
        assert!(p.is_consistent());
        let order: Vec<&str> = p.by_age().map(|(_, k)| k.as_str()).collect();
        assert_eq!(order, ["a", "b", "c"], "by time, ties by key");
        assert!(p.remove("a").is_some() && p.remove("a").is_none());
        assert!(p.is_consistent() && p.len() == 2);
    }
}
