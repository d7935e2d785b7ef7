//! What `mailstream erase` hands a CRM backend ([`Person`]) and what the backend reports back
//! ([`CrmErased`]): the records it deleted (or, in a dry run, would delete), named by the kinds
//! that backend holds, so one report shape serves PostgreSQL's tables, the REST CRM's
//! resources, HubSpot's objects and Tryton's models.
//!
//! | backend | finds the person by | deletes |
//! |---|---|---|
//! | `postgres` | address, message ids | `contacts`, `activities`, `attachments`, `leads`, `follow_ups` rows ([`super::postgres_purge`]) |
//! | `rest` | the contact ids of the `contacts` table, the activity ids of the backend's crm-results | `contacts`, `activities` (DELETE; a 404 is already gone) ([`super::rest_erase`]) |
//! | `hubspot` | address (`idProperty=email`), message ids (the unique message-id property) | `emails` (archived), `contacts` (GDPR delete) ([`super::hubspot_erase`]) |
//! | `tryton` | address (email contact mechanisms), message ids (the notes' first line) | `notes`, `opportunities` only theirs, `parties` with their `contact_mechanisms` ([`super::tryton`]) |
//!
//! A dry run makes the same lookups and no change, so its counts are what `--execute` deletes
//! while nobody else changes the CRM in between.
//!
//! Retention (`mailstream retention run`) reports in the same shape ([`Expired`]) and deletes
//! through the same calls: an old unqualified message is, to the REST CRM and HubSpot, a
//! [`Person`] with only that message's id and activity id (no address, no contact: contacts
//! stay), so its activity or email goes exactly as an erase's would; Tryton searches its notes
//! itself (`tryton_expire.rs`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::postgres_purge::DeletedRows;

/// How long one erase may spend on a CRM's API, retries included: past it the command fails
/// (and can be run again: every backend's erase is idempotent).
pub const HTTP_ERASE_BUDGET: Duration = Duration::from_secs(600);

/// The person to erase, as `mailstream erase` found them in the topics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Person {
    /// Their addresses, lower-cased.
    pub addresses: Vec<String>,
    /// The emails they took part in (found in `parsed`).
    pub message_ids: Vec<String>,
    /// The CRM's ids of their contacts, as the latest `contacts` table records of their
    /// addresses name them (the sink feeds back the ids the CRM gave the contacts it created).
    pub contact_ids: Vec<String>,
    /// The CRM's ids of the activities the sink wrote for their emails, from the crm-results of
    /// the configured backend.
    pub activity_ids: Vec<String>,
}

/// What a backend deleted for a person (or, in a dry run, would delete).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CrmErased {
    /// `postgres`, `rest`, `hubspot` or `tryton`.
    pub backend: &'static str,
    /// Records deleted, by kind (PostgreSQL: by table; serialized beside `backend`, so the JSON
    /// report reads `crm.contacts`, `crm.notes`, ...).
    #[serde(flatten)]
    pub deleted: BTreeMap<&'static str, u64>,
    /// Records kept because they are not only the person's, changed so they no longer point to
    /// them (Tryton: an opportunity other people's emails are on loses them as its party).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub detached: BTreeMap<&'static str, u64>,
}

impl CrmErased {
    /// An empty report of `backend` that names each of `kinds` (zero until counted).
    pub fn new(backend: &'static str, kinds: &[&'static str]) -> Self {
        Self {
            backend,
            deleted: kinds.iter().map(|k| (*k, 0)).collect(),
            detached: BTreeMap::new(),
        }
    }

    /// Every record deleted.
    pub fn total(&self) -> u64 {
        self.deleted.values().sum()
    }

    /// The deleted records by kind, for a report line: `activities 2, follow ups 0`.
    pub fn deleted_kinds(&self) -> String {
        kinds(&self.deleted)
    }

    /// The detached records by kind, as [`Self::deleted_kinds`].
    pub fn detached_kinds(&self) -> String {
        kinds(&self.detached)
    }

    /// Counts `n` more deleted records of `kind`.
    pub fn add(&mut self, kind: &'static str, n: u64) {
        *self.deleted.entry(kind).or_default() += n;
    }
}

impl From<DeletedRows> for CrmErased {
    fn from(rows: DeletedRows) -> Self {
        let deleted = [
            ("contacts", rows.contacts),
            ("activities", rows.activities),
            ("attachments", rows.attachments),
            ("leads", rows.leads),
            ("follow_ups", rows.follow_ups),
        ];
        Self {
            backend: "postgres",
            deleted: deleted.into_iter().collect(),
            detached: BTreeMap::new(),
        }
    }
}

fn kinds(counts: &BTreeMap<&'static str, u64>) -> String {
    counts
        .iter()
        .map(|(kind, n)| format!("{} {n}", kind.replace('_', " ")))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What retention removed (or, in a dry run, would): the expired messages the CRM still held,
/// their records by the backend's kinds, and the blob URIs of their attachments no remaining
/// attachment points to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Expired {
    /// Messages whose records were found (and deleted): none on a second run.
    pub messages: usize,
    pub rows: CrmErased,
    pub unreferenced_blobs: Vec<String>,
    /// The ids of those messages (for the command to find their blobs; not reported).
    #[serde(skip)]
    pub message_ids: Vec<String>,
}

impl Expired {
    /// Adds one message's records (`erased`), when the CRM held any.
    pub fn add(&mut self, message_id: &str, erased: &CrmErased) {
        if erased.total() == 0 {
            return;
        }
        self.messages += 1;
        self.message_ids.push(message_id.to_string());
        for (kind, n) in erased.deleted.iter().filter(|(_, n)| **n > 0) {
            self.rows.add(kind, *n);
        }
    }
}

/// The deadline of one erase on an HTTP CRM, from now.
pub fn http_deadline() -> Instant {
    Instant::now() + HTTP_ERASE_BUDGET
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_postgres_report_keeps_its_table_names_beside_the_backend() {
        let rows = DeletedRows {
            contacts: 1,
            activities: 2,
            attachments: 3,
            leads: 4,
            follow_ups: 5,
        };
        let erased = CrmErased::from(rows);
        assert_eq!(erased.total(), rows.total());
        let json = serde_json::to_value(&erased).expect("JSON");
        assert_eq!(
            json,
            serde_json::json!({"backend": "postgres", "contacts": 1, "activities": 2,
                "attachments": 3, "leads": 4, "follow_ups": 5})
        );
        let mut tryton = CrmErased::new("tryton", &["notes", "parties"]);
        tryton.add("notes", 2);
        tryton.detached.insert("opportunities", 1);
        let json = serde_json::to_value(&tryton).expect("JSON");
        assert_eq!(
            json,
            serde_json::json!({"backend": "tryton", "notes": 2, "parties": 0,
                "detached": {"opportunities": 1}})
        );
        assert_eq!(tryton.total(), 2);
    }
}
