//! The statements of the PostgreSQL backend, and how its errors are classified.
//!
//! Every upsert is guarded so that once the input has been processed, processing any record of
//! it again changes no row (each row is at a fixpoint), whatever order the partitions were
//! interleaved in:
//!
//! | rows | a record changes the row when |
//! |---|---|
//! | activities, attachments, leads (keyed by message) | it comes from a later input offset and its values are `IS DISTINCT FROM` the row's (one message id is one partition, read in offset order) |
//! | accounts | it is newer by `(received_at, message_id)` (last writer wins); an id-only mention only inserts |
//! | contacts | it fills a name or account the row lacks (CRM-owned values are never overwritten) |
//! | deals | it fills the account the row lacks |
//! | follow-ups | it is the first for its (message, part) |
//!
//! ("Newer and different" alone is not enough for rows that messages from several partitions
//! share: a newer email equal to the row is skipped, an older different one then overwrites the
//! row, and a replay of the newer one would change it back.)

use tokio_postgres::error::SqlState;

use crate::events::redact;
use crate::retry::{Failure, FailureClass};

pub const ACCOUNT: &str = "INSERT INTO accounts AS t (account_id, name, domain, target_account, created_at, updated_at, updated_by)
 VALUES ($1, $2, $3, $4, $5, $5, $6)
 ON CONFLICT (account_id) DO UPDATE SET name = EXCLUDED.name, domain = EXCLUDED.domain,
   target_account = EXCLUDED.target_account, updated_at = EXCLUDED.updated_at, updated_by = EXCLUDED.updated_by
 WHERE (EXCLUDED.updated_at, EXCLUDED.updated_by) > (t.updated_at, t.updated_by)
 RETURNING account_id";

pub const ACCOUNT_ID_ONLY: &str =
    "INSERT INTO accounts (account_id, created_at, updated_at, updated_by)
 VALUES ($1, $2, '-infinity', '')
 ON CONFLICT (account_id) DO NOTHING
 RETURNING account_id";

pub const CONTACT_SET: &str = "DO UPDATE SET name = COALESCE(t.name, EXCLUDED.name),
   account_id = COALESCE(t.account_id, EXCLUDED.account_id), updated_at = EXCLUDED.updated_at
 WHERE (t.name IS NULL AND EXCLUDED.name IS NOT NULL)
    OR (t.account_id IS NULL AND EXCLUDED.account_id IS NOT NULL)
 RETURNING contact_id, created_by_message_id";

pub const CONTACT_INSERT: &str = "INSERT INTO contacts AS t (contact_id, email, name, account_id, created_by_message_id, created_at, updated_at)
 VALUES ($1, $2, $3, $4, $5, $6, $6)";

pub const DEAL: &str = "INSERT INTO deals AS t (deal_id, account_id, source, first_message_id, created_at, updated_at)
 VALUES ($1, $2, $3, $4, $5, $5)
 ON CONFLICT (deal_id) DO UPDATE SET account_id = EXCLUDED.account_id, updated_at = EXCLUDED.updated_at
 WHERE t.account_id IS NULL AND EXCLUDED.account_id IS NOT NULL
 RETURNING deal_id";

pub const ACTIVITY: &str = "INSERT INTO email_activities AS t (message_id, received_at, subject, sender_email,
   recipients, body_text, thread_id, thread_parent, contact_id, account_id, deal_id, auth, tags, source_offset)
 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
 ON CONFLICT (message_id) DO UPDATE SET received_at = EXCLUDED.received_at, subject = EXCLUDED.subject,
   sender_email = EXCLUDED.sender_email, recipients = EXCLUDED.recipients, body_text = EXCLUDED.body_text,
   thread_id = EXCLUDED.thread_id, thread_parent = EXCLUDED.thread_parent, contact_id = EXCLUDED.contact_id,
   account_id = EXCLUDED.account_id, deal_id = EXCLUDED.deal_id, auth = EXCLUDED.auth, tags = EXCLUDED.tags,
   source_offset = EXCLUDED.source_offset
 WHERE EXCLUDED.source_offset > t.source_offset
   AND (EXCLUDED.received_at, EXCLUDED.subject, EXCLUDED.sender_email, EXCLUDED.recipients, EXCLUDED.body_text,
        EXCLUDED.thread_id, EXCLUDED.thread_parent, EXCLUDED.contact_id, EXCLUDED.account_id,
        EXCLUDED.deal_id, EXCLUDED.auth, EXCLUDED.tags)
       IS DISTINCT FROM (t.received_at, t.subject, t.sender_email, t.recipients, t.body_text, t.thread_id,
        t.thread_parent, t.contact_id, t.account_id, t.deal_id, t.auth, t.tags)
 RETURNING activity_id, (xmax = 0) AS inserted";

pub const ATTACHMENT: &str =
    "INSERT INTO attachments AS t (message_id, filename, content_type, size, sha256,
   storage_url, inline, source_offset)
 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
 ON CONFLICT (message_id, sha256, filename) DO UPDATE SET content_type = EXCLUDED.content_type,
   size = EXCLUDED.size, storage_url = EXCLUDED.storage_url, inline = EXCLUDED.inline,
   source_offset = EXCLUDED.source_offset
 WHERE EXCLUDED.source_offset > t.source_offset
   AND (EXCLUDED.content_type, EXCLUDED.size, EXCLUDED.storage_url, EXCLUDED.inline)
       IS DISTINCT FROM (t.content_type, t.size, t.storage_url, t.inline)
 RETURNING id";

pub const FOLLOW_UP: &str =
    "INSERT INTO follow_ups (message_id, kind, part, reason) VALUES ($1, 'attachment', $2, $3)
 ON CONFLICT (message_id, kind, part) DO NOTHING RETURNING id";

pub const LEAD: &str = "INSERT INTO leads AS t (message_id, sender_email, sender_name, subject, received_at, lead_key,
   contact_id, account_id, deal_id, score, status, breakdown, rules_version, source_offset)
 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
 ON CONFLICT (message_id, sender_email) DO UPDATE SET sender_name = EXCLUDED.sender_name,
   subject = EXCLUDED.subject, received_at = EXCLUDED.received_at, lead_key = EXCLUDED.lead_key,
   contact_id = EXCLUDED.contact_id, account_id = EXCLUDED.account_id, deal_id = EXCLUDED.deal_id,
   score = EXCLUDED.score, status = EXCLUDED.status, breakdown = EXCLUDED.breakdown,
   rules_version = EXCLUDED.rules_version, source_offset = EXCLUDED.source_offset
 WHERE EXCLUDED.source_offset > t.source_offset
   AND (EXCLUDED.sender_name, EXCLUDED.subject, EXCLUDED.received_at, EXCLUDED.lead_key, EXCLUDED.contact_id,
        EXCLUDED.account_id, EXCLUDED.deal_id, EXCLUDED.score, EXCLUDED.status, EXCLUDED.breakdown,
        EXCLUDED.rules_version)
       IS DISTINCT FROM (t.sender_name, t.subject, t.received_at, t.lead_key, t.contact_id, t.account_id,
        t.deal_id, t.score, t.status, t.breakdown, t.rules_version)
 RETURNING id";

/// An error's text without values from the rows (DETAIL lines name them): SQLSTATE, message,
/// table and constraint.
pub fn safe_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut text = format!(
                "SQLSTATE {} {}",
                db.code().code(),
                redact(db.message(), 200)
            );
            if let Some(constraint) = db.constraint() {
                text.push_str(&format!(" (constraint {constraint})"));
            }
            text
        }
        None => redact(&e.to_string(), 200),
    }
}

/// Integrity and data errors are the record's fault; serialization failures and deadlocks are
/// worth another try; everything else (connection, server, timeouts, missing tables) is an
/// outage of the database.
pub fn classify(e: &tokio_postgres::Error) -> Failure {
    let reason = safe_error(e);
    let Some(code) = e.code() else {
        return Failure::Outage {
            class: FailureClass::Connection,
            reason,
        };
    };
    let class = &code.code()[..2];
    if *code == SqlState::T_R_SERIALIZATION_FAILURE || *code == SqlState::T_R_DEADLOCK_DETECTED {
        Failure::Retriable {
            class: FailureClass::Server,
            reason,
            retry_after: None,
        }
    } else if class == "23" || class == "22" {
        Failure::Rejected {
            class: FailureClass::Client,
            reason,
        }
    } else if *code == SqlState::QUERY_CANCELED {
        Failure::Outage {
            class: FailureClass::Timeout,
            reason,
        }
    } else {
        let class = if class == "08" || class == "57" {
            FailureClass::Connection
        } else {
            FailureClass::Server
        };
        Failure::Outage { class, reason }
    }
}
