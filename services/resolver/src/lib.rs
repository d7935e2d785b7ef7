//! The resolver: `parsed` → `resolved`, one record per distinct email.
//!
//! - **Dedupe** on message_id. `parsed` is keyed by message_id, so every copy of an email lands
//!   on the same partition; the seen-set is a [`KeyedStore`] per partition backed by the
//!   compacted `resolver.dedupe` changelog, written in the batch's transaction and restored on
//!   assignment. A later copy is counted, written to the `duplicates` audit topic, and dropped.
//! - **Resolution** ([`identity`]): sender → contact and account from the `contacts` and
//!   `accounts` tables, deal addresses, thread links from the `threads` table, which the
//!   resolver itself maintains (one link per email, keyed by message_id), bounded by age and
//!   count with tombstones ([`threads`]). Who may become a contact: [`policy`].
//! - **Erasure**: an email any participant of which `mailstream erase` removed after it was
//!   received (a replay of their mail) is dropped before anything is written for it
//!   ([`mailstream_runtime::erasure`]; `resolver_erased_total`).
//!
//! The business rules live in [`identity::Resolution`], a pure function shared with the
//! offline `mailstream score`; this file only wires state and tables around it.

pub mod csv;
pub mod deal;
pub mod directory;
pub mod events;
pub mod freemail;
pub mod identity;
pub mod policy;
pub mod settings;
pub mod threads;

use std::sync::Arc;

use mailstream_runtime::erasure::Erasures;
use mailstream_runtime::records::{
    Account, Contact, DedupeEntry, Duplicate, ParsedEmail, ThreadLink,
};
use mailstream_runtime::{
    BuildContext, GlobalTable, Incoming, KeyedStore, Outputs, ProcessError, Processor,
    RestoreContext, RuntimeError, StoreLimits,
};

pub use directory::{MemoryDirectory, TableDirectory, ThreadOverlay};
pub use identity::{Directory, Resolution, thread_link};
pub use settings::{ContactPolicy, ResolverSettings};
pub use threads::{THREADS, ThreadLinks};

use events::ResolverMetrics;

/// Topics the resolver writes.
pub const OUTPUT: &str = "resolved";
pub const DEDUPE_CHANGELOG: &str = "resolver.dedupe";
pub const DUPLICATES: &str = "duplicates";

/// Thread links of this instance kept in memory until the threads table has them.
const OVERLAY_CAPACITY: usize = 100_000;

/// The resolver processor.
pub struct Resolver {
    resolution: Resolution,
    seen: KeyedStore<DedupeEntry>,
    contacts: Arc<GlobalTable<Contact>>,
    accounts: Arc<GlobalTable<Account>>,
    threads: Arc<GlobalTable<ThreadLink>>,
    /// People erased (`mailstream erase`); none without an `erasure_key`.
    erasures: Option<Erasures>,
    /// The links of this instance's partitions, which it writes and tombstones.
    links: ThreadLinks,
    overlay: ThreadOverlay,
    /// Where the seen-set, the links and the overlay stood before the record being processed,
    /// so a record the runtime dead-letters can be undone alone.
    record_marks: (usize, usize, usize),
    audit_duplicates: bool,
    metrics: ResolverMetrics,
}

/// Builds the resolver from its checked settings and loads the three tables to their ends.
pub async fn build(
    ctx: BuildContext,
    settings: ResolverSettings,
) -> Result<Resolver, RuntimeError> {
    let resolution = Resolution::new(&settings).map_err(|e| RuntimeError::Config(vec![e]))?;
    let naming = ctx.naming();
    let contacts =
        GlobalTable::start(&ctx.config, &naming, "contacts", ctx.shutdown.clone()).await?;
    let accounts =
        GlobalTable::start(&ctx.config, &naming, "accounts", ctx.shutdown.clone()).await?;
    let threads = GlobalTable::start(&ctx.config, &naming, THREADS, ctx.shutdown.clone()).await?;
    let erasures = Erasures::start(&ctx.config, &naming, ctx.shutdown.clone()).await?;
    let limits = StoreLimits {
        max_entries: settings.dedupe_max_entries,
        max_age_ms: i64::try_from(settings.dedupe_max_age_hours.saturating_mul(3_600_000))
            .unwrap_or(i64::MAX),
    };
    Ok(Resolver {
        resolution,
        seen: KeyedStore::new(DEDUPE_CHANGELOG, limits),
        contacts,
        accounts,
        threads,
        erasures,
        links: ThreadLinks::new(&settings),
        overlay: ThreadOverlay::new(OVERLAY_CAPACITY),
        record_marks: (0, 0, 0),
        audit_duplicates: settings.audit_duplicates,
        metrics: ResolverMetrics::register(&ctx.metrics)?,
    })
}

impl Resolver {
    /// A later copy of an email already let through: remember it, audit it, drop it.
    fn collapse(
        &mut self,
        partition: i32,
        email: &ParsedEmail,
        kept: DedupeEntry,
        out: &mut Outputs,
    ) -> Result<(), ProcessError> {
        let copies = kept.copies.saturating_add(1);
        if self.audit_duplicates {
            out.send(
                DUPLICATES,
                email.message_id.clone(),
                Duplicate {
                    message_id: email.message_id.clone(),
                    ingest_id: email.ingest_id.clone(),
                    kept_ingest_id: kept.ingest_id.clone(),
                    envelope_rcpt_to: email.envelope_rcpt_to.clone(),
                    copies,
                    seen_at: email.received_at,
                },
            );
        }
        let entry = DedupeEntry { copies, ..kept };
        self.seen
            .put(partition, &email.message_id, entry, email.received_at, out);
        events::duplicate_collapsed(&self.metrics, &email.message_id, copies);
        Ok(())
    }
}

impl Processor for Resolver {
    type Input = ParsedEmail;
    const NAME: &'static str = "resolver";

    async fn process(
        &mut self,
        record: Incoming<ParsedEmail>,
        out: &mut Outputs,
    ) -> Result<(), ProcessError> {
        let partition = record.meta.partition;
        let email = record.value;
        self.record_marks = (self.seen.mark(), self.links.mark(), self.overlay.mark());
        // An erased person's email (a replay of it): nothing about it is written.
        if self.erasures.as_ref().is_some_and(|e| e.erased(&email)) {
            events::erased_dropped(&self.metrics, &email.message_id);
            return Ok(());
        }
        if let Some(kept) = self.seen.get(partition, &email.message_id).cloned() {
            return self.collapse(partition, &email, kept, out);
        }
        let directory = TableDirectory {
            contacts: &self.contacts,
            accounts: &self.accounts,
            threads: &self.threads,
            overlay: &self.overlay,
        };
        let (resolved, refusal) = self.resolution.resolve_explained(email, &directory);
        if let Some(reason) = refusal {
            events::contact_refused(&self.metrics, &resolved.message_id, reason);
        }
        let entry = DedupeEntry {
            message_id: resolved.message_id.clone(),
            first_seen_at: resolved.received_at,
            ingest_id: resolved.email.ingest_id.clone(),
            copies: 1,
        };
        self.seen.put(
            partition,
            &resolved.message_id,
            entry,
            resolved.received_at,
            out,
        );
        let link = thread_link(&resolved);
        self.links.put(partition, link.clone(), out);
        self.overlay.insert(link);
        let sender = match (&resolved.contact, &resolved.account, &resolved.new_contact) {
            (Some(_), _, _) => "contact",
            (None, Some(_), _) => "account",
            (None, None, Some(_)) => "new",
            _ => "unknown",
        };
        events::email_resolved(&self.metrics, sender, resolved.deal_id.is_some());
        out.send(OUTPUT, resolved.message_id.clone(), resolved);
        Ok(())
    }

    async fn on_assigned(
        &mut self,
        partitions: &[i32],
        ctx: &RestoreContext<'_>,
    ) -> Result<(), ProcessError> {
        for &partition in partitions {
            let records = ctx
                .read_changelog::<DedupeEntry>(DEDUPE_CHANGELOG, partition)
                .await?;
            self.seen.restore(partition, records);
            events::seen_set_restored(partition, self.seen.len(partition));
            self.links.restore(partition, ctx).await?;
        }
        Ok(())
    }

    fn on_revoked(&mut self, partitions: &[i32]) {
        for &partition in partitions {
            self.seen.drop_partition(partition);
            self.links.drop_partition(partition);
        }
    }

    fn on_commit(&mut self) {
        self.seen.commit();
        self.links.commit();
        self.overlay.commit();
    }

    fn on_abort(&mut self) {
        self.seen.rollback();
        self.links.rollback();
        self.overlay.rollback();
    }

    fn undo_record(&mut self) {
        let (seen, links, overlay) = self.record_marks;
        self.seen.rollback_to(seen);
        self.links.rollback_to(links);
        self.overlay.rollback_to(overlay);
    }
}
