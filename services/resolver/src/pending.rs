//! Replies waiting for a parent, so thread links converge whatever order emails arrive in.
//!
//! Rules:
//! - **Who waits.** An email naming parents (In-Reply-To, References) none of which has a link
//!   yet is resolved at once (a thread of its own root, no `thread_parent`, no deal from the
//!   thread) and remembered here: its parents in lookup order and its `parsed` offset. So is
//!   one linked to a parent that waits itself (its thread and deal may still change): its own
//!   link says `waiting`, and replies linked to it wait in turn. A
//!   [`KeyedStore`] per input partition whose changelog is `resolver.pending-replies`
//!   (co-partitioned with `parsed`, written in the batch's transaction, restored on
//!   assignment), bounded by `reply_wait_max_hours` in record time and
//!   `reply_wait_max_entries`.
//! - **What wakes it.** A parent's link appearing: one this instance writes (at once), or one
//!   any resolver wrote, seen as an arrival in the `threads` table (taken before each record
//!   and when the input is idle). An index parent → waiting replies makes an arrival one
//!   lookup. After anything that may have lost an arrival (an abort, an undone record, a
//!   restore, more arrivals than the table kept), every waiting reply is checked against the
//!   tables once.
//! - **Linking** is the resolver's ([`crate::Resolver`]): the reply is read back from `parsed`
//!   and resolved again; when a parent link that does not wait is found a second `resolved` record goes out
//!   (`thread_relinked`), its thread link is updated and its wait tombstoned, in one
//!   transaction, and the replies waiting on it are woken in turn.
//! - The index may name replies no longer waiting (linked, evicted, rolled back): each is
//!   checked against the store before it is woken (and dropped from the index then), and the
//!   index is rebuilt from the store when it grows past twice the store.

use std::collections::HashMap;

use mailstream_runtime::records::{ParsedEmail, PendingReply};
use mailstream_runtime::{KeyedStore, Outputs, StoreLimits};

use crate::identity::parents_of;
use crate::settings::ResolverSettings;

/// The changelog of the waiting replies.
pub const PENDING_REPLIES: &str = "resolver.pending-replies";

/// Parents remembered per waiting reply (the first in lookup order).
const MAX_PARENTS: usize = 32;

/// The replies of this instance's partitions waiting for a parent.
#[derive(Debug)]
pub struct PendingReplies {
    store: KeyedStore<PendingReply>,
    /// parent message id → (partition, reply message id) waiting on it.
    index: HashMap<String, Vec<(i32, String)>>,
    indexed: usize,
    /// Arrivals may have been missed: check every waiting reply at the next wake.
    recheck: bool,
}

impl PendingReplies {
    pub fn new(settings: &ResolverSettings) -> Self {
        let limits = StoreLimits {
            max_entries: settings.reply_wait_max_entries,
            max_age_ms: settings.reply_wait_max_ms(),
        };
        Self {
            store: KeyedStore::new(PENDING_REPLIES, limits),
            index: HashMap::new(),
            indexed: 0,
            recheck: false,
        }
    }

    /// Remembers `email`, read from `partition` at `offset`, as waiting for one of its parents.
    /// An email that names none does not wait.
    pub fn wait(&mut self, partition: i32, offset: i64, email: &ParsedEmail, out: &mut Outputs) {
        let parents: Vec<String> = parents_of(email)
            .into_iter()
            .take(MAX_PARENTS)
            .cloned()
            .collect();
        if parents.is_empty() {
            return;
        }
        let reply = PendingReply {
            message_id: email.message_id.clone(),
            parents,
            parsed_offset: offset,
            received_at: email.received_at,
        };
        self.add_to_index(partition, &reply);
        self.store
            .put(partition, &email.message_id, reply, email.received_at, out);
    }

    /// Whether a wake must look at every waiting reply.
    pub fn needs_recheck(&self) -> bool {
        self.recheck && !self.store.is_empty()
    }

    /// The waiting replies one of the `arrived` message ids may link, as (partition, reply),
    /// each once. A reply that still finds no parent (or one that waits itself) stays waiting
    /// and indexed: the next write of that parent's link wakes it again. With `missed`
    /// (arrivals were lost), or after a rollback or restore, every waiting reply with a parent
    /// `linked` is returned instead.
    pub fn woken(
        &mut self,
        arrived: &[String],
        missed: bool,
        linked: impl Fn(&str) -> bool,
    ) -> Vec<(i32, PendingReply)> {
        if missed || self.recheck {
            self.recheck = false;
            self.rebuild_index();
            let mut woken: Vec<(i32, PendingReply)> = self
                .all()
                .filter(|(_, reply)| reply.parents.iter().any(|p| linked(p)))
                .map(|(partition, reply)| (partition, reply.clone()))
                .collect();
            woken.sort_by(|a, b| (a.0, &a.1.message_id).cmp(&(b.0, &b.1.message_id)));
            return woken;
        }
        let mut woken: Vec<(i32, PendingReply)> = Vec::new();
        for parent in arrived {
            let Some(waiting) = self.index.get_mut(parent) else {
                continue;
            };
            let store = &self.store;
            let before = waiting.len();
            waiting.retain(|(partition, id)| store.get(*partition, id).is_some());
            self.indexed -= before - waiting.len();
            for (partition, id) in waiting.iter() {
                let Some(reply) = store.get(*partition, id) else {
                    continue;
                };
                if !woken
                    .iter()
                    .any(|(p, r)| p == partition && r.message_id == *id)
                {
                    woken.push((*partition, reply.clone()));
                }
            }
            if waiting.is_empty() {
                self.index.remove(parent);
            }
        }
        woken
    }

    /// The reply `message_id` of `partition` stops waiting (a tombstone in the changelog).
    pub fn remove(&mut self, partition: i32, message_id: &str, out: &mut Outputs) {
        self.store.remove(partition, message_id, out);
    }

    /// Rebuilds `partition`'s waiting replies from their changelog; the next wake checks them
    /// all (their parents may have arrived while nobody owned them).
    pub fn restore(&mut self, partition: i32, records: Vec<(String, Option<PendingReply>, i64)>) {
        let aged = records
            .into_iter()
            .map(|(key, reply, produced_ms)| {
                let at = reply.as_ref().map_or(produced_ms, |r| r.received_at);
                (key, reply, at)
            })
            .collect();
        self.store.restore(partition, aged);
        self.recheck = true;
    }

    pub fn drop_partition(&mut self, partition: i32) {
        self.store.drop_partition(partition);
        self.rebuild_index();
    }

    /// Replies waiting in `partition`.
    pub fn len(&self, partition: i32) -> usize {
        self.store.len(partition)
    }

    pub fn is_empty(&self) -> bool {
        self.store.is_empty()
    }

    pub fn mark(&self) -> usize {
        self.store.mark()
    }

    pub fn commit(&mut self) {
        self.store.commit();
    }

    pub fn rollback(&mut self) {
        self.store.rollback();
        self.recheck = true;
    }

    pub fn rollback_to(&mut self, mark: usize) {
        if mark < self.store.mark() {
            self.store.rollback_to(mark);
            self.recheck = true;
        }
    }

    fn all(&self) -> impl Iterator<Item = (i32, &PendingReply)> {
        self.store
            .partitions()
            .flat_map(|p| self.store.entries(p).map(move |(_, reply)| (p, reply)))
    }

    fn add_to_index(&mut self, partition: i32, reply: &PendingReply) {
        for parent in &reply.parents {
            self.index
                .entry(parent.clone())
                .or_default()
                .push((partition, reply.message_id.clone()));
            self.indexed += 1;
        }
        let waiting: usize = self.store.partitions().map(|p| self.store.len(p)).sum();
        if self.indexed > 2 * (waiting + 1) * MAX_PARENTS {
            self.rebuild_index();
        }
    }

    fn rebuild_index(&mut self) {
        let mut index: HashMap<String, Vec<(i32, String)>> = HashMap::new();
        let mut indexed = 0;
        for (partition, reply) in self.all() {
            for parent in &reply.parents {
                index
                    .entry(parent.clone())
                    .or_default()
                    .push((partition, reply.message_id.clone()));
                indexed += 1;
            }
        }
        self.index = index;
        self.indexed = indexed;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(id: &str, in_reply_to: &str, references: &[&str], at: i64) -> ParsedEmail {
        ParsedEmail {
            message_id: id.into(),
            in_reply_to: Some(in_reply_to.into()),
            references: references.iter().map(|r| r.to_string()).collect(),
            received_at: at,
            ..ParsedEmail::default()
        }
    }

    fn pending(max_entries: usize) -> PendingReplies {
        PendingReplies::new(&ResolverSettings {
            reply_wait_max_entries: max_entries,
            ..ResolverSettings::default()
        })
    }

    fn ids(woken: &[(i32, PendingReply)]) -> Vec<&str> {
        woken.iter().map(|(_, r)| r.message_id.as_str()).collect()
    }

    #[test]
    fn an_arriving_parent_wakes_the_replies_waiting_on_it_until_they_stop_waiting() {
        let mut waiting = pending(100);
        let mut out = Outputs::default();
        waiting.wait(2, 10, &reply("r1", "p", &["root", "p"], 1), &mut out);
        waiting.wait(3, 11, &reply("r2", "q", &["root", "q"], 2), &mut out);
        waiting.wait(3, 12, &ParsedEmail::default(), &mut out);
        assert_eq!(out.len(), 2, "an email naming no parent does not wait");
        let stored = waiting.store.get(2, "r1").expect("r1 waits");
        assert_eq!(
            stored.parents,
            ["p", "root"],
            "In-Reply-To, then References newest first"
        );
        assert_eq!(stored.parsed_offset, 10);
        let woken = waiting.woken(&["root".into(), "p".into()], false, |_| false);
        assert_eq!(
            ids(&woken),
            ["r1", "r2"],
            "both reference the root; r1 once"
        );
        let woken = waiting.woken(&["p".into(), "unrelated".into()], false, |_| false);
        assert_eq!(
            ids(&woken),
            ["r1"],
            "still waiting: the next write of p wakes it again"
        );
        waiting.remove(2, "r1", &mut out);
        assert!(waiting.woken(&["p".into()], false, |_| true).is_empty());
        assert_eq!(
            ids(&waiting.woken(&["root".into()], false, |_| true)),
            ["r2"]
        );
        assert_eq!((waiting.len(2), waiting.len(3)), (0, 1));
    }

    #[test]
    fn after_a_rollback_every_waiting_reply_is_checked_against_the_tables() {
        let mut waiting = pending(100);
        let mut out = Outputs::default();
        waiting.wait(0, 1, &reply("r1", "p1", &[], 1), &mut out);
        waiting.wait(0, 2, &reply("r2", "p2", &[], 2), &mut out);
        waiting.commit();
        // Linked in a batch that then aborts: the arrival was taken, the wait comes back.
        let woken = waiting.woken(&["p1".into()], false, |_| true);
        waiting.remove(0, &woken[0].1.message_id, &mut out);
        assert!(waiting.woken(&["p1".into()], false, |_| true).is_empty());
        waiting.rollback();
        assert!(waiting.needs_recheck());
        let woken = waiting.woken(&[], false, |parent| parent == "p1");
        assert_eq!(ids(&woken), ["r1"], "found without its arrival");
        assert!(!waiting.needs_recheck());
        let woken = waiting.woken(&["p2".into()], false, |_| true);
        assert_eq!(ids(&woken), ["r2"], "the rebuilt index still knows r2");
    }

    #[test]
    fn the_oldest_replies_stop_waiting_beyond_the_bound() {
        let mut waiting = pending(2);
        let mut out = Outputs::default();
        for (n, id) in ["r1", "r2", "r3"].into_iter().enumerate() {
            waiting.wait(
                0,
                n as i64,
                &reply(id, &format!("p-{id}"), &[], n as i64),
                &mut out,
            );
        }
        assert_eq!(waiting.len(0), 2);
        assert_eq!(out.len(), 4, "three waits and the oldest one's tombstone");
        assert!(waiting.woken(&["p-r1".into()], false, |_| true).is_empty());
        assert_eq!(
            ids(&waiting.woken(&["p-r3".into()], false, |_| true)),
            ["r3"]
        );
    }

    #[test]
    fn a_restored_partition_is_checked_in_full() {
        let mut waiting = pending(100);
        let restored = PendingReply {
            message_id: "r9".into(),
            parents: vec!["p9".into()],
            parsed_offset: 4,
            received_at: 9,
        };
        waiting.restore(5, vec![("r9".into(), Some(restored), 100)]);
        let woken = waiting.woken(&[], false, |parent| parent == "p9");
        assert_eq!(
            woken,
            [(5, waiting.store.get(5, "r9").cloned().expect("kept"))]
        );
    }
}
