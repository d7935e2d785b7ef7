//! The resolver's named events: each is counted and logged here, once. No email content
//! (addresses, subjects) is logged: message ids and counts only.
//!
//! Every series exists from the start, at zero: `resolver_resolved_total` for each
//! [`SENDER_MATCHES`] value with and without a deal, `resolver_contacts_refused_total` for each
//! [`Refusal`] reason.

use mailstream_runtime::RuntimeError;
use mailstream_runtime::metrics::{Metrics, register};
use prometheus::{IntCounter, IntCounterVec, Opts};

use crate::policy::Refusal;

/// How a sender was identified (`resolver_resolved_total{sender}`): a known contact, an
/// account of its domain, a new contact proposed, or not at all.
pub const SENDER_MATCHES: [&str; 4] = ["contact", "account", "new", "unknown"];

/// The resolver's metrics, registered next to the runtime's (names get the `mailstream_` prefix).
#[derive(Clone)]
pub struct ResolverMetrics {
    duplicates: IntCounter,
    erased: IntCounter,
    waits: IntCounter,
    relinked: IntCounter,
    resolved: IntCounterVec,
    refused: IntCounterVec,
}

impl ResolverMetrics {
    pub fn register(metrics: &Metrics) -> Result<Self, RuntimeError> {
        let registry = &metrics.registry;
        let duplicates = register(
            registry,
            IntCounter::new(
                "resolver_duplicates_total",
                "Deliveries collapsed into an earlier copy of the same message id.",
            ),
        )?;
        let erased = register(
            registry,
            IntCounter::new(
                "resolver_erased_total",
                "Emails dropped because a participant was erased (mailstream erase) after they were received: a replay of an erased person's mail.",
            ),
        )?;
        let waits = register(
            registry,
            IntCounter::new(
                "resolver_reply_waits_total",
                "Replies resolved before any message they reply to was known, remembered until one arrives (reply_wait_max_hours).",
            ),
        )?;
        let relinked = register(
            registry,
            IntCounter::new(
                "resolver_replies_relinked_total",
                "Waiting replies linked once a parent arrived: a second resolved record (thread_relinked).",
            ),
        )?;
        let resolved = register(
            registry,
            IntCounterVec::new(
                Opts::new(
                    "resolver_resolved_total",
                    "Distinct emails resolved, by how the sender was identified (contact, account, new, unknown) and whether a deal was found.",
                ),
                &["sender", "deal"],
            ),
        )?;
        let refused = register(
            registry,
            IntCounterVec::new(
                Opts::new(
                    "resolver_contacts_refused_total",
                    "Unknown senders not proposed as contacts, by reason (policy, bounce, bulk, automatic, role, free-mail, ours).",
                ),
                &["reason"],
            ),
        )?;
        for sender in SENDER_MATCHES {
            for deal in ["yes", "no"] {
                resolved.with_label_values(&[sender, deal]);
            }
        }
        for reason in Refusal::ALL {
            refused.with_label_values(&[reason.name()]);
        }
        Ok(Self {
            duplicates,
            erased,
            waits,
            relinked,
            resolved,
            refused,
        })
    }
}

/// A later copy of a message id was collapsed.
pub fn duplicate_collapsed(m: &ResolverMetrics, message_id: &str, copies: i32) {
    m.duplicates.inc();
    tracing::debug!(message_id, copies, "duplicate collapsed");
}

/// An email of an erased person was dropped (nothing written for it).
pub fn erased_dropped(m: &ResolverMetrics, message_id: &str) {
    m.erased.inc();
    tracing::debug!(message_id, "email of an erased person dropped");
}

/// A distinct email was resolved.
pub fn email_resolved(m: &ResolverMetrics, sender: &str, deal: bool) {
    m.resolved
        .with_label_values(&[sender, if deal { "yes" } else { "no" }])
        .inc();
}

/// An unknown sender was not proposed as a contact.
pub fn contact_refused(m: &ResolverMetrics, message_id: &str, reason: Refusal) {
    m.refused.with_label_values(&[reason.name()]).inc();
    tracing::debug!(
        message_id,
        reason = reason.name(),
        "sender not proposed as a contact"
    );
}

/// State for newly assigned partitions was rebuilt from the changelog.
pub fn seen_set_restored(partition: i32, entries: usize) {
    tracing::info!(
        partition,
        entries,
        "dedupe seen-set restored from its changelog"
    );
}

/// A reply none of whose parents is known was resolved and waits for one.
pub fn reply_waits(m: &ResolverMetrics, message_id: &str) {
    m.waits.inc();
    tracing::debug!(message_id, "reply waits for a parent");
}

/// A waiting reply was linked to a parent that arrived after it.
pub fn reply_relinked(m: &ResolverMetrics, message_id: &str, parent: &str) {
    m.relinked.inc();
    tracing::debug!(message_id, parent, "waiting reply linked to its parent");
}

/// A waiting reply could not be read back from `parsed` (gone by retention): it stops waiting.
pub fn waiting_reply_unreadable(message_id: &str, partition: i32, offset: i64) {
    tracing::warn!(
        message_id,
        partition,
        offset,
        "a reply waiting for its parent is no longer in parsed; it stays unlinked"
    );
}

/// Waiting replies of newly assigned partitions were rebuilt from their changelog.
pub fn waiting_replies_restored(partition: i32, replies: usize) {
    tracing::info!(
        partition,
        replies,
        "replies waiting for a parent restored from their changelog"
    );
}
