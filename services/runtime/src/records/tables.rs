//! The compacted tables and state the resolver and the CRM sink share: `Contact` (schema
//! `contacts.avsc`), `Account` (`accounts.avsc`), `ThreadLink` (`threads.avsc`), the resolver's
//! seen-set entry `DedupeEntry` (`dedupe-entry.avsc`), its replies waiting for a parent
//! `PendingReply` (`pending-reply.avsc`), its audit record `Duplicate`
//! (`duplicate.avsc`), `Erasure` (`erasure.avsc`), a person `mailstream erase` removed, and
//! `OptOut` (`opt-out.avsc`), an address that asked to be removed.

use serde::{Deserialize, Serialize};

/// A known contact, keyed by lower-cased email.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Contact {
    pub email: String,
    pub contact_id: String,
    pub name: Option<String>,
    pub account_id: Option<String>,
    pub updated_at: i64,
}

/// A company, keyed by lower-case email domain.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Account {
    pub domain: String,
    pub account_id: String,
    pub name: Option<String>,
    pub target_account: bool,
    pub updated_at: i64,
}

/// What a message id was linked to, so replies join the same thread and deal.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ThreadLink {
    pub message_id: String,
    pub thread_id: String,
    pub deal_id: Option<String>,
    pub contact_id: Option<String>,
    pub linked_at: i64,
    /// The email waits for a parent (none known yet, or the one it found waits itself): its
    /// thread and deal may still change, so replies linked to it wait with it.
    #[serde(default)]
    pub waiting: bool,
}

/// A reply the resolver could not link yet: none of the messages it replies to was known.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PendingReply {
    pub message_id: String,
    /// In-Reply-To, then References newest first: the order parents are looked up in.
    pub parents: Vec<String>,
    /// Where the reply is in `parsed` (the partition of this entry), to read it back.
    pub parsed_offset: i64,
    pub received_at: i64,
}

/// The resolver's memory of a message id it has let through.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DedupeEntry {
    pub message_id: String,
    pub first_seen_at: i64,
    /// The intake event that was kept.
    pub ingest_id: String,
    /// Deliveries of this message id seen so far.
    pub copies: i32,
}

/// A delivery collapsed into an earlier copy of the same message id.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Duplicate {
    pub message_id: String,
    pub ingest_id: String,
    pub kept_ingest_id: String,
    pub envelope_rcpt_to: Vec<String>,
    pub copies: i32,
    pub seen_at: i64,
}

/// A person erased, keyed by `subject` (a keyed hash of their address, never the address).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Erasure {
    pub subject: String,
    pub erased_at: i64,
    pub messages: i32,
    pub crm_rows: i32,
    pub blobs: i32,
    pub tombstones: i32,
}

/// An address that asked to be removed or complained, keyed by `email` (lower-cased).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct OptOut {
    pub email: String,
    /// `received_at` of the email that said so.
    pub opted_out_at: i64,
    /// `unsubscribe` or `complaint`.
    pub reason: String,
    pub message_id: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::roundtrip::through_schema;

    #[test]
    fn round_trip_through_their_schemas() {
        let contact = Contact {
            email: "ali@acme.io".into(),
            contact_id: "c1".into(),
            name: Some("Ali".into()),
            account_id: Some("a1".into()),
            updated_at: 1,
        };
        assert_eq!(through_schema("contacts.avsc", contact.clone()), contact);
        let account = Account {
            domain: "acme.io".into(),
            account_id: "a1".into(),
            name: None,
            target_account: true,
            updated_at: 2,
        };
        assert_eq!(through_schema("accounts.avsc", account.clone()), account);
        let link = ThreadLink {
            message_id: "m2".into(),
            thread_id: "m1".into(),
            deal_id: Some("42".into()),
            contact_id: None,
            linked_at: 3,
            waiting: true,
        };
        assert_eq!(through_schema("threads.avsc", link.clone()), link);
        let pending = PendingReply {
            message_id: "m3".into(),
            parents: vec!["m2".into(), "m1".into()],
            parsed_offset: 17,
            received_at: 5,
        };
        assert_eq!(
            through_schema("pending-reply.avsc", pending.clone()),
            pending
        );
        let entry = DedupeEntry {
            message_id: "m1".into(),
            first_seen_at: 4,
            ingest_id: "i1".into(),
            copies: 2,
        };
        assert_eq!(through_schema("dedupe-entry.avsc", entry.clone()), entry);
        let duplicate = Duplicate {
            message_id: "m1".into(),
            ingest_id: "i2".into(),
            kept_ingest_id: "i1".into(),
            envelope_rcpt_to: vec!["sales@in.example.com".into()],
            copies: 2,
            seen_at: 5,
        };
        assert_eq!(
            through_schema("duplicate.avsc", duplicate.clone()),
            duplicate
        );
        let erasure = Erasure {
            subject: "ab".repeat(32),
            erased_at: 6,
            messages: 2,
            crm_rows: 5,
            blobs: 1,
            tombstones: 4,
        };
        assert_eq!(through_schema("erasure.avsc", erasure.clone()), erasure);
        let opt_out = OptOut {
            email: "kim@acme.example".into(),
            opted_out_at: 6,
            reason: "unsubscribe".into(),
            message_id: "m9".into(),
        };
        assert_eq!(through_schema("opt-out.avsc", opt_out.clone()), opt_out);
    }
}
