//! The bound of the `threads` table: each resolver owns the thread links of its input
//! partitions, and tombstones the old ones.
//!
//! Rules:
//! - **Ownership.** `threads` is co-partitioned with `parsed` (same partition count, checked at
//!   start against the topology): the link of an email read from `parsed` partition P is
//!   written to `threads` partition P. The ages of P's links are a [`KeyedStore`] whose
//!   changelog *is* the `threads` topic (it keeps keys and times only: lookups read the
//!   table), so the owner of P restores them from `threads` partition P on assignment, and
//!   every change goes out in the batch's transaction (undone on abort).
//! - **Age, in record time.** After each link written at `received_at` T, the links of P last
//!   written before `T - threads_max_age_days` are tombstoned, then the oldest while more than
//!   `threads_max_entries` remain (ties by message id). T is the email's `received_at`, never
//!   the wall clock, and a restored link's time is its `linked_at` (its email's `received_at`),
//!   not the time the record was produced: which links go, and in which batch, is a function of
//!   the partition's records alone (invariant 11), whatever restarts happened in between.
//! - **Lookups hide what the bound removes.** Resolution ignores a parent link older than the
//!   same age at the replying email's `received_at` ([`crate::identity`]), so whether an expired
//!   link is already tombstoned (or still in some instance's copy of the table) changes no
//!   output. Only the count bound, a safety valve, can remove a link resolution would still
//!   use.
//! - Every resolver's [`mailstream_runtime::GlobalTable`] of `threads` applies the tombstones
//!   as it reads them, so its memory and start-up time follow the bound, not the history.

use mailstream_runtime::records::ThreadLink;
use mailstream_runtime::{
    KeyedStore, Outputs, ProcessError, RestoreContext, StoreLimits, Topology,
};

use crate::pending::PENDING_REPLIES;
use crate::settings::ResolverSettings;

/// The table topic of thread links, and the topic it is co-partitioned with.
pub const THREADS: &str = "threads";
const INPUT: &str = "parsed";

/// The thread links of this instance's input partitions: their keys and ages.
#[derive(Debug)]
pub struct ThreadLinks {
    store: KeyedStore<()>,
}

impl ThreadLinks {
    pub fn new(settings: &ResolverSettings) -> Self {
        let limits = StoreLimits {
            max_entries: settings.threads_max_entries,
            max_age_ms: settings.threads_max_age_ms(),
        };
        Self {
            store: KeyedStore::new(THREADS, limits),
        }
    }

    /// Writes `link` (read from input `partition`) to the table; tombstones what the bound no
    /// longer allows.
    pub fn put(&mut self, partition: i32, link: ThreadLink, out: &mut Outputs) {
        let key = link.message_id.clone();
        let at = link.linked_at;
        out.send_to_partition(THREADS, partition, key.clone(), link);
        self.store.track(partition, &key, (), at, out);
    }

    /// Rebuilds `partition`'s links from `threads` partition `partition`, each aged by its
    /// `linked_at`.
    pub async fn restore(
        &mut self,
        partition: i32,
        ctx: &RestoreContext<'_>,
    ) -> Result<(), ProcessError> {
        let records = ctx.read_changelog::<ThreadLink>(THREADS, partition).await?;
        let aged = records
            .into_iter()
            .map(|(key, link, produced_ms)| {
                let at = link.as_ref().map_or(produced_ms, |l| l.linked_at);
                (key, link.map(|_| ()), at)
            })
            .collect();
        self.store.restore(partition, aged);
        links_restored(partition, self.store.len(partition));
        Ok(())
    }

    pub fn drop_partition(&mut self, partition: i32) {
        self.store.drop_partition(partition);
    }

    pub fn mark(&self) -> usize {
        self.store.mark()
    }

    pub fn commit(&mut self) {
        self.store.commit();
    }

    pub fn rollback(&mut self) {
        self.store.rollback();
    }

    pub fn rollback_to(&mut self, mark: usize) {
        self.store.rollback_to(mark);
    }

    /// Links held for `partition`.
    pub fn len(&self, partition: i32) -> usize {
        self.store.len(partition)
    }

    pub fn is_empty(&self) -> bool {
        self.store.is_empty()
    }
}

/// Refuses a topology where `threads` or `resolver.pending-replies` is not co-partitioned with
/// `parsed`: an entry would be written to a partition no owner restores (or that does not
/// exist).
pub fn copartition_problems(topology: &Topology) -> Vec<String> {
    let partitions = |name: &str| topology.topic(name).map(|t| t.partitions);
    [THREADS, PENDING_REPLIES]
        .into_iter()
        .filter_map(|table| match (partitions(INPUT), partitions(table)) {
            (Some(input), Some(own)) if input == own => None,
            (input, own) => Some(format!(
                "topic `{table}` must have as many partitions as `{INPUT}` (its entries are written to their email's partition): {table} {own:?}, {INPUT} {input:?}"
            )),
        })
        .collect()
}

/// Refuses a reply wait at least as long as `parsed` keeps records: a waiting reply is read
/// back from it when its parent arrives.
pub fn reply_wait_problem(topology: &Topology, reply_wait_max_ms: i64) -> Option<String> {
    let retention: i64 = topology
        .topic(INPUT)?
        .config
        .get("retention.ms")?
        .parse()
        .ok()
        .filter(|ms: &i64| *ms >= 0)?;
    (reply_wait_max_ms >= retention).then(|| {
        format!(
            "must be shorter than the retention of `{INPUT}` ({} hours): a waiting reply is read back from it",
            retention / 3_600_000
        )
    })
}

/// A partition's thread links were rebuilt from the table.
fn links_restored(partition: i32, links: usize) {
    tracing::info!(
        partition,
        links,
        "thread links restored from the threads table"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000;

    fn link(id: &str, linked_at: i64) -> ThreadLink {
        ThreadLink {
            message_id: id.into(),
            thread_id: id.into(),
            linked_at,
            ..ThreadLink::default()
        }
    }

    fn links(max_age_days: u64, max_entries: usize) -> ThreadLinks {
        ThreadLinks::new(&ResolverSettings {
            threads_max_age_days: max_age_days,
            threads_max_entries: max_entries,
            ..ResolverSettings::default()
        })
    }

    #[test]
    fn links_older_than_the_age_at_the_newest_record_are_tombstoned() {
        let mut links = links(30, 100);
        let mut out = Outputs::default();
        links.put(4, link("old", 0), &mut out);
        links.put(4, link("recent", 20 * DAY), &mut out);
        links.put(4, link("new", 30 * DAY + 1), &mut out); // "old" is past 30 days
        assert_eq!(links.len(4), 2);
        assert_eq!(out.len(), 4, "three links and one tombstone");
        assert!(links.store.get(4, "old").is_none() && links.store.get(4, "recent").is_some());
    }

    #[test]
    fn a_link_arriving_late_is_kept_until_the_next_record_past_its_age() {
        let mut links = links(30, 100);
        let mut out = Outputs::default();
        links.put(0, link("live", 100 * DAY), &mut out);
        links.put(0, link("backfilled", 0), &mut out);
        assert_eq!(links.len(0), 2, "its own write does not evict it");
        links.put(0, link("next", 100 * DAY + 1), &mut out);
        assert_eq!(links.len(0), 2, "gone at the next record of the partition");
        assert_eq!(out.len(), 4);
    }

    #[test]
    fn an_aborted_batch_keeps_the_links_it_would_have_tombstoned() {
        let mut links = links(1, 100);
        let mut out = Outputs::default();
        links.put(0, link("a", 0), &mut out);
        links.commit();
        links.put(0, link("b", 2 * DAY), &mut out);
        assert_eq!(links.len(0), 1);
        links.rollback();
        assert_eq!(links.len(0), 1, "only `a`, as committed");
        links.put(0, link("c", DAY / 2), &mut out);
        assert_eq!(links.len(0), 2, "`a` is still there, within a day of `c`");
    }

    #[test]
    fn the_embedded_topology_co_partitions_the_resolver_tables_with_parsed() {
        let topology = Topology::embedded().expect("embedded topology");
        assert!(copartition_problems(&topology).is_empty());
        let day = 86_400_000;
        assert_eq!(reply_wait_problem(&topology, day), None);
        assert!(
            reply_wait_problem(&topology, 7 * day).is_some(),
            "parsed keeps 7 days"
        );
    }
}
