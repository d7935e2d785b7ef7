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
//! - **Replies before their parents**: a reply none of whose parents is known yet waits
//!   ([`pending`]); when one arrives (here or at another resolver, through `threads`) the
//!   reply is resolved again and a second `resolved` record (`thread_relinked`) carries its
//!   thread and deal, so the links end the same whatever order emails arrive in.
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
pub mod pending;
pub mod policy;
pub mod settings;
pub mod threads;

use std::sync::Arc;

use mailstream_runtime::avro::{AvroCodec, registry_settings};
use mailstream_runtime::erasure::Erasures;
use mailstream_runtime::records::{
    Account, Contact, DedupeEntry, Duplicate, ParsedEmail, PendingReply, ResolvedEmail, ThreadLink,
};
use mailstream_runtime::{
    Arrivals, BuildContext, GlobalTable, Incoming, KeyedStore, Outputs, ProcessError, Processor,
    RecordReader, RestoreContext, RuntimeError, StoreLimits,
};

pub use directory::{MemoryDirectory, TableDirectory, ThreadOverlay};
pub use identity::{Directory, Resolution, thread_link};
pub use pending::{PENDING_REPLIES, PendingReplies};
pub use settings::{ContactPolicy, ResolverSettings};
pub use threads::{THREADS, ThreadLinks};

use events::ResolverMetrics;

/// Topics the resolver writes.
pub const OUTPUT: &str = "resolved";
pub const DEDUPE_CHANGELOG: &str = "resolver.dedupe";
pub const DUPLICATES: &str = "duplicates";
const INPUT: &str = "parsed";

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
    /// Replies of this instance's partitions waiting for a parent, and where they are read
    /// back from.
    pending: PendingReplies,
    parsed: RecordReader,
    /// Where the seen-set, the links, the overlay and the waiting replies stood before the
    /// record being processed, so a record the runtime dead-letters can be undone alone.
    record_marks: (usize, usize, usize, usize),
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
    threads.record_arrivals();
    let parsed = RecordReader::new(
        &ctx.config,
        &naming,
        INPUT,
        AvroCodec::decoder(registry_settings(&ctx.config)?),
    )?;
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
        pending: PendingReplies::new(&settings),
        parsed,
        record_marks: (0, 0, 0, 0),
        audit_duplicates: settings.audit_duplicates,
        metrics: ResolverMetrics::register(&ctx.metrics)?,
    })
}

impl Resolver {
    fn marks(&self) -> (usize, usize, usize, usize) {
        (
            self.seen.mark(),
            self.links.mark(),
            self.overlay.mark(),
            self.pending.mark(),
        )
    }

    /// Links the waiting replies a parent among `arrived` (or, when arrivals were missed, any
    /// known parent) now resolves: each is read back from `parsed`, resolved again, and sent
    /// as a second `resolved` record with its link updated; the replies waiting on a linked
    /// one are woken in turn.
    async fn link_waiting(
        &mut self,
        arrivals: Arrivals,
        out: &mut Outputs,
    ) -> Result<(), ProcessError> {
        let (mut arrived, mut missed) = (arrivals.keys, arrivals.overflowed);
        self.overlay.forget((!missed).then_some(arrived.as_slice()));
        while !arrived.is_empty() || missed || self.pending.needs_recheck() {
            let directory = TableDirectory {
                contacts: &self.contacts,
                accounts: &self.accounts,
                threads: &self.threads,
                overlay: &self.overlay,
            };
            let woken = self.pending.woken(&arrived, missed, |id| {
                directory.thread(id).is_some_and(|link| !link.waiting)
            });
            (arrived, missed) = (Vec::new(), false);
            for (partition, reply) in woken {
                if let Some(linked) = self.link(partition, &reply, out).await? {
                    arrived.push(linked);
                }
            }
        }
        Ok(())
    }

    /// Whether `resolved` must wait for a parent: it names some but none is known, or the one
    /// it was linked to waits itself (its thread and deal may still change).
    fn waits(&self, resolved: &ResolvedEmail) -> bool {
        match &resolved.thread_parent {
            None => !identity::parents_of(&resolved.email).is_empty(),
            Some(parent) => self.directory().thread(parent).is_some_and(|l| l.waiting),
        }
    }

    fn directory(&self) -> TableDirectory<'_> {
        TableDirectory {
            contacts: &self.contacts,
            accounts: &self.accounts,
            threads: &self.threads,
            overlay: &self.overlay,
        }
    }

    /// Links one waiting reply if a parent of it resolves now to a link that does not wait
    /// itself; the linked message id.
    async fn link(
        &mut self,
        partition: i32,
        reply: &PendingReply,
        out: &mut Outputs,
    ) -> Result<Option<String>, ProcessError> {
        let email: Option<ParsedEmail> = self.parsed.read(partition, reply.parsed_offset).await?;
        let Some(email) = email.filter(|e| e.message_id == reply.message_id) else {
            events::waiting_reply_unreadable(&reply.message_id, partition, reply.parsed_offset);
            self.pending.remove(partition, &reply.message_id, out);
            return Ok(None);
        };
        if self.erasures.as_ref().is_some_and(|e| e.erased(&email)) {
            self.pending.remove(partition, &reply.message_id, out);
            return Ok(None);
        }
        let mut resolved = self.resolution.resolve(email, &self.directory());
        let Some(parent) = resolved.thread_parent.clone() else {
            return Ok(None);
        };
        if self.waits(&resolved) {
            return Ok(None);
        }
        resolved.thread_relinked = true;
        let link = thread_link(&resolved);
        self.links.put(partition, link.clone(), out);
        self.overlay.insert(link);
        self.pending.remove(partition, &resolved.message_id, out);
        events::reply_relinked(&self.metrics, &resolved.message_id, &parent);
        let id = resolved.message_id.clone();
        out.send(OUTPUT, id.clone(), resolved);
        Ok(Some(id))
    }

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
        let offset = record.meta.offset;
        let email = record.value;
        self.record_marks = self.marks();
        // Parents that arrived through the threads table since the last record.
        self.link_waiting(self.threads.take_arrivals(), out).await?;
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
        let waits = self.waits(&resolved);
        let link = ThreadLink {
            waiting: waits,
            ..thread_link(&resolved)
        };
        self.links.put(partition, link.clone(), out);
        self.overlay.insert(link);
        if waits {
            self.pending.wait(partition, offset, &resolved.email, out);
            events::reply_waits(&self.metrics, &resolved.message_id);
        }
        let sender = match (&resolved.contact, &resolved.account, &resolved.new_contact) {
            (Some(_), _, _) => "contact",
            (None, Some(_), _) => "account",
            (None, None, Some(_)) => "new",
            _ => "unknown",
        };
        events::email_resolved(&self.metrics, sender, resolved.deal_id.is_some());
        let id = resolved.message_id.clone();
        out.send(OUTPUT, id.clone(), resolved);
        // Replies that arrived before this email and wait for it.
        let arrived = Arrivals {
            keys: vec![id],
            overflowed: false,
        };
        self.link_waiting(arrived, out).await
    }

    async fn on_idle(&mut self, out: &mut Outputs) -> Result<(), ProcessError> {
        let arrivals = self.threads.take_arrivals();
        if arrivals.keys.is_empty() && !arrivals.overflowed && !self.pending.needs_recheck() {
            return Ok(());
        }
        self.record_marks = self.marks();
        self.link_waiting(arrivals, out).await
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
            let waiting = ctx
                .read_changelog::<PendingReply>(PENDING_REPLIES, partition)
                .await?;
            self.pending.restore(partition, waiting);
            events::waiting_replies_restored(partition, self.pending.len(partition));
        }
        Ok(())
    }

    fn on_revoked(&mut self, partitions: &[i32]) {
        for &partition in partitions {
            self.seen.drop_partition(partition);
            self.links.drop_partition(partition);
            self.pending.drop_partition(partition);
        }
    }

    fn on_commit(&mut self) {
        self.seen.commit();
        self.links.commit();
        self.overlay.commit();
        self.pending.commit();
    }

    fn on_abort(&mut self) {
        self.seen.rollback();
        self.links.rollback();
        self.overlay.rollback();
        self.pending.rollback();
    }

    fn undo_record(&mut self) {
        let (seen, links, overlay, pending) = self.record_marks;
        self.seen.rollback_to(seen);
        self.links.rollback_to(links);
        self.overlay.rollback_to(overlay);
        self.pending.rollback_to(pending);
    }
}
