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
//! | contacts | it fills a name, account, title, company, phone or website the row lacks (CRM-owned values are never overwritten) |
//! | deals | it fills the account the row lacks |
//! | follow-ups | it is the first for its (message, part) |
//!
//! ("Newer and different" alone is not enough for rows that messages from several partitions
//! share: a newer email equal to the row is skipped, an older different one then overwrites the
//! row, and a replay of the newer one would change it back.)
//!
//! Keys that come from email (message ids, addresses, attachment filenames) can be of any length,
//! and a btree index entry holds ~2.7 KB: they are unique through `crm_key(col)`, their SHA-256
//! (migration `0003_keys_of_any_length`), and every `ON CONFLICT` names that expression. Ids
//! (accounts, contacts, deals: primary keys) are bounded before they get here
//! ([`fit_id`](super::keys::fit_id)).
//!
//! ## Errors, by what a retry can change
//!
//! [`classify`] reads the SQLSTATE (the class is its first two characters):
//!
//! | SQLSTATE | meaning | verdict |
//! |---|---|---|
//! | 40001, 40P01 | serialization failure, deadlock | retried in place (the batch when others were written in its transaction) |
//! | 28 | invalid authorization (a wrong password, a role that may not log in) | auth: the sink is blocked, naming `database_url`; nothing dead-lettered |
//! | 21, 22, 23, 27, 44, 54, P0 | cardinality, data exception (a NUL byte, a bad encoding, a value out of range), integrity constraint, triggered data change, check option, program limit (an index row too large), a trigger's `RAISE` | the record is poison: dead-lettered (`crm-rejected`) with the SQLSTATE and message |
//! | 08, 57 (but 57014), no SQLSTATE (I/O, a closed connection) | connection lost, server shutting down or refusing connections | outage: the batch is read again later, nothing dead-lettered |
//! | no SQLSTATE, a refused TLS handshake (`postgres_tls.rs`) | the server's certificate not trusted or not for its host, a server without TLS under `require` | TLS: a configuration fault; the sink is blocked naming `database_ca_file` and `database_url`, nothing dead-lettered |
//! | 57014 | statement timeout, cancelled | outage (timeout) |
//! | 25, 40 (others), 53, 55, 58, F0, XX, any other | transaction state (a standby after a failover), insufficient resources (disk, memory, connections), lock not available, system and internal errors | outage (server) |
//! | 03, 0A, 0B, 24, 26, 2B, 2D, 2F, 34, 38, 39, 3B, 3D, 3F, 42 | our own statements are wrong: syntax, an undefined table or column, missing privileges, a schema that is not ours, prepared statements or routines broken | broken: the process stops (`ProcessError::Fatal`); no record is to blame and no retry can help |
//!
//! Class 42 is never the record's fault: every value travels as a typed parameter, so only our
//! SQL (or a schema changed under it) can be wrong.

use std::sync::LazyLock;

use tokio_postgres::error::SqlState;

use super::postgres_tls::{error_chain, is_tls_fault};
use crate::error::{Failure, FailureClass};
use crate::events::redact;

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
   account_id = COALESCE(t.account_id, EXCLUDED.account_id),
   title = COALESCE(t.title, EXCLUDED.title), company = COALESCE(t.company, EXCLUDED.company),
   phone = COALESCE(t.phone, EXCLUDED.phone), website = COALESCE(t.website, EXCLUDED.website),
   updated_at = EXCLUDED.updated_at
 WHERE (t.name IS NULL AND EXCLUDED.name IS NOT NULL)
    OR (t.account_id IS NULL AND EXCLUDED.account_id IS NOT NULL)
    OR (t.title IS NULL AND EXCLUDED.title IS NOT NULL)
    OR (t.company IS NULL AND EXCLUDED.company IS NOT NULL)
    OR (t.phone IS NULL AND EXCLUDED.phone IS NOT NULL)
    OR (t.website IS NULL AND EXCLUDED.website IS NOT NULL)
 RETURNING contact_id, created_by_message_id";

pub const CONTACT_INSERT: &str = "INSERT INTO contacts AS t (contact_id, email, name, account_id, created_by_message_id, created_at, updated_at, title, company, phone, website)
 VALUES ($1, $2, $3, $4, $5, $6, $6, $7, $8, $9, $10)";

/// A contact upserted by its id (a contact the resolver knows): its id, `created_by_message_id`
/// and whether the statement changed it; when it changed nothing, the row read in the same
/// statement (by email first, as [`CONTACT_LOOKUP`]).
pub static CONTACT_BY_ID: LazyLock<String> =
    LazyLock::new(|| contact_upsert("ON CONFLICT (contact_id)"));

/// A contact created for an unknown sender, upserted by its address; answers as
/// [`CONTACT_BY_ID`].
pub static CONTACT_BY_EMAIL: LazyLock<String> =
    LazyLock::new(|| contact_upsert("ON CONFLICT (crm_key(email))"));

fn contact_upsert(conflict: &str) -> String {
    format!(
        "WITH up AS ({CONTACT_INSERT} {conflict} {CONTACT_SET})
 SELECT contact_id, created_by_message_id, true FROM up
 UNION ALL
 (SELECT contact_id, created_by_message_id, false FROM contacts
   WHERE NOT EXISTS (SELECT 1 FROM up) AND (email = $2 OR contact_id = $1)
   ORDER BY (email = $2) DESC LIMIT 1)"
    )
}

/// The contact of address `$1` or id `$2`, read on its own (a statement of
/// [`CONTACT_BY_ID`]'s that found neither: the row was committed after its snapshot).
pub const CONTACT_LOOKUP: &str = "SELECT contact_id, created_by_message_id, false FROM contacts
 WHERE email = $1 OR contact_id = $2 ORDER BY (email = $1) DESC LIMIT 1";

pub const DEAL: &str = "INSERT INTO deals AS t (deal_id, account_id, source, first_message_id, created_at, updated_at)
 VALUES ($1, $2, $3, $4, $5, $5)
 ON CONFLICT (deal_id) DO UPDATE SET account_id = EXCLUDED.account_id, updated_at = EXCLUDED.updated_at
 WHERE t.account_id IS NULL AND EXCLUDED.account_id IS NOT NULL
 RETURNING deal_id";

/// An activity's first response when it is written: the earliest of our emails (`responses`)
/// in its thread (`$7`) at or after it (`$2`); none for an email of ours.
const FIRST_RESPONSE: &str = "CASE WHEN EXISTS (SELECT 1 FROM responses x WHERE x.message_id = $1) THEN NULL
   ELSE (SELECT min(r.received_at) FROM responses r WHERE r.thread_id = $7 AND r.received_at >= $2) END";

pub static ACTIVITY: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO email_activities AS t (message_id, received_at, subject, sender_email,
   recipients, body_text, thread_id, thread_parent, contact_id, account_id, deal_id, auth, tags, source_offset,
   meeting, first_response_at)
 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, {FIRST_RESPONSE})
 ON CONFLICT (crm_key(message_id)) DO UPDATE SET received_at = EXCLUDED.received_at, subject = EXCLUDED.subject,
   sender_email = EXCLUDED.sender_email, recipients = EXCLUDED.recipients, body_text = EXCLUDED.body_text,
   thread_id = EXCLUDED.thread_id, thread_parent = EXCLUDED.thread_parent, contact_id = EXCLUDED.contact_id,
   account_id = EXCLUDED.account_id, deal_id = EXCLUDED.deal_id, auth = EXCLUDED.auth, tags = EXCLUDED.tags,
   source_offset = EXCLUDED.source_offset, meeting = EXCLUDED.meeting,
   first_response_at = COALESCE(t.first_response_at, EXCLUDED.first_response_at)
 WHERE EXCLUDED.source_offset > t.source_offset
   AND (EXCLUDED.received_at, EXCLUDED.subject, EXCLUDED.sender_email, EXCLUDED.recipients, EXCLUDED.body_text,
        EXCLUDED.thread_id, EXCLUDED.thread_parent, EXCLUDED.contact_id, EXCLUDED.account_id,
        EXCLUDED.deal_id, EXCLUDED.auth, EXCLUDED.tags, EXCLUDED.meeting)
       IS DISTINCT FROM (t.received_at, t.subject, t.sender_email, t.recipients, t.body_text, t.thread_id,
        t.thread_parent, t.contact_id, t.account_id, t.deal_id, t.auth, t.tags, t.meeting)
 RETURNING activity_id, (xmax = 0) AS inserted,
   (extract(epoch FROM first_response_at - received_at) * 1000)::bigint AS response_ms"
    )
});

/// The activity upserted ([`ACTIVITY`]): its id, whether it was inserted, whether the
/// statement changed it and, inserted with a first response, the milliseconds until it; when
/// it changed nothing, the row as it was (read in the same statement).
pub static OWN_ACTIVITY: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH up AS ({activity})
 SELECT activity_id, inserted, true, response_ms FROM up
 UNION ALL
 SELECT activity_id, false, false, NULL::bigint FROM email_activities
  WHERE NOT EXISTS (SELECT 1 FROM up) AND message_id = $1",
        activity = *ACTIVITY
    )
});

/// An email of ours (`$1`, in thread `$2`, received `$3`) recorded in `responses`, and the first
/// response of the inbound activities of its thread received before it, each locked in id order
/// (two sinks answering one thread take their locks in the same order). One row per activity
/// it answered first: the milliseconds since it was received. A replay of the same email
/// changes no row and returns none; a later answer recorded before an earlier one (they came
/// through different partitions) is replaced by the earlier, without a second row.
pub const RESPONSE: &str = "WITH r AS (
   INSERT INTO responses AS t (message_id, thread_id, received_at) VALUES ($1, $2, $3)
   ON CONFLICT (crm_key(message_id)) DO UPDATE SET thread_id = EXCLUDED.thread_id,
     received_at = EXCLUDED.received_at
   WHERE (t.thread_id, t.received_at) IS DISTINCT FROM (EXCLUDED.thread_id, EXCLUDED.received_at)
   RETURNING 1),
 answered AS (
   SELECT e.activity_id, e.first_response_at IS NULL AS first FROM email_activities e
   WHERE EXISTS (SELECT 1 FROM r) AND e.thread_id = $2 AND e.received_at <= $3
     AND (e.first_response_at IS NULL OR e.first_response_at > $3) AND e.message_id <> $1
     AND NOT EXISTS (SELECT 1 FROM responses x WHERE x.message_id = e.message_id)
   ORDER BY e.activity_id FOR UPDATE OF e)
 UPDATE email_activities a SET first_response_at = $3 FROM answered
 WHERE a.activity_id = answered.activity_id
 RETURNING answered.first, (extract(epoch FROM $3 - a.received_at) * 1000)::bigint";

/// Every stored attachment of message `$1` (at offset `$2`) upserted in one statement: the
/// columns come as arrays (`$3`..`$8`: filename, content type, size, sha256,
/// storage URL, inline), the activity is the message's (written by the statement before, in the
/// same transaction). One row returned per attachment changed.
pub const ATTACHMENTS: &str =
    "INSERT INTO attachments AS t (message_id, filename, content_type, size, sha256,
   storage_url, inline, source_offset, activity_id)
 SELECT $1, a.filename, a.content_type, a.size, a.sha256, a.storage_url, a.inline, $2,
   (SELECT activity_id FROM email_activities WHERE message_id = $1)
 FROM unnest($3::text[], $4::text[], $5::bigint[], $6::text[], $7::text[], $8::boolean[])
   WITH ORDINALITY AS a(filename, content_type, size, sha256, storage_url, inline, n)
 ORDER BY a.n
 ON CONFLICT (crm_key(message_id), sha256, crm_key(filename)) DO UPDATE SET content_type = EXCLUDED.content_type,
   size = EXCLUDED.size, storage_url = EXCLUDED.storage_url, inline = EXCLUDED.inline,
   source_offset = EXCLUDED.source_offset
 WHERE EXCLUDED.source_offset > t.source_offset
   AND (EXCLUDED.content_type, EXCLUDED.size, EXCLUDED.storage_url, EXCLUDED.inline)
       IS DISTINCT FROM (t.content_type, t.size, t.storage_url, t.inline)
 RETURNING id";

/// Every follow-up of message `$1` in one statement (parts `$2`, reasons `$3`): the first for
/// its (message, part) is kept.
pub const FOLLOW_UPS: &str = "INSERT INTO follow_ups (message_id, kind, part, reason)
 SELECT $1, 'attachment', f.part, f.reason
 FROM unnest($2::text[], $3::text[]) WITH ORDINALITY AS f(part, reason, n) ORDER BY f.n
 ON CONFLICT (crm_key(message_id), kind, part) DO NOTHING RETURNING id";

pub const LEAD: &str = "INSERT INTO leads AS t (message_id, sender_email, sender_name, subject, received_at, lead_key,
   contact_id, account_id, deal_id, score, status, breakdown, rules_version, source_offset,
   intent, language, team, owner, source_alias)
 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)
 ON CONFLICT (crm_key(message_id), crm_key(sender_email)) DO UPDATE SET sender_name = EXCLUDED.sender_name,
   subject = EXCLUDED.subject, received_at = EXCLUDED.received_at, lead_key = EXCLUDED.lead_key,
   contact_id = EXCLUDED.contact_id, account_id = EXCLUDED.account_id, deal_id = EXCLUDED.deal_id,
   score = EXCLUDED.score, status = EXCLUDED.status, breakdown = EXCLUDED.breakdown,
   rules_version = EXCLUDED.rules_version, source_offset = EXCLUDED.source_offset,
   intent = EXCLUDED.intent, language = EXCLUDED.language, team = EXCLUDED.team, owner = EXCLUDED.owner,
   source_alias = EXCLUDED.source_alias
 WHERE EXCLUDED.source_offset > t.source_offset
   AND (EXCLUDED.sender_name, EXCLUDED.subject, EXCLUDED.received_at, EXCLUDED.lead_key, EXCLUDED.contact_id,
        EXCLUDED.account_id, EXCLUDED.deal_id, EXCLUDED.score, EXCLUDED.status, EXCLUDED.breakdown,
        EXCLUDED.rules_version, EXCLUDED.intent, EXCLUDED.language, EXCLUDED.team, EXCLUDED.owner,
        EXCLUDED.source_alias)
       IS DISTINCT FROM (t.sender_name, t.subject, t.received_at, t.lead_key, t.contact_id, t.account_id,
        t.deal_id, t.score, t.status, t.breakdown, t.rules_version, t.intent, t.language, t.team, t.owner,
        t.source_alias)
 RETURNING id";

/// A hard bounce of contact `$1`: bouncing, with the reason of the latest one (`$3` its time).
pub const CONTACT_BOUNCING: &str =
    "UPDATE contacts SET email_status = 'bouncing', bounce_reason = $2,
   bounced_at = $3, updated_at = GREATEST(updated_at, $3)
 WHERE email = $1 AND (bounced_at IS NULL OR bounced_at < $3) RETURNING contact_id";

/// Contact `$1` opted out (`$3`: unsubscribe or complaint) at `$2`; the first opt-out stays.
pub const CONTACT_OPTED_OUT: &str = "UPDATE contacts SET opted_out_at = $2, opt_out_reason = $3,
   updated_at = GREATEST(updated_at, $2)
 WHERE email = $1 AND opted_out_at IS NULL RETURNING contact_id";

/// Contact `$1` left the company at `$3`; `$2` is who to write to instead, when named.
pub const CONTACT_LEFT: &str = "UPDATE contacts SET active = false, inactive_since = $3,
   replacement_email = $2, updated_at = GREATEST(updated_at, $3)
 WHERE email = $1 AND active RETURNING contact_id";

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
        // tokio-postgres's own text is generic ("error performing TLS handshake"): the
        // causes say what happened.
        None => redact(&error_chain(e), 300),
    }
}

/// What a retry can change about a failed statement (see the module doc's table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Another attempt may succeed at once (serialization failure, deadlock).
    RetryInPlace,
    /// The record's values: every attempt gets the same answer.
    Poison,
    /// The database, or our access to it, is down: the batch is read again later.
    Outage(FailureClass),
    /// Our credentials were refused: the sink is blocked until `database_url` is fixed.
    Auth,
    /// Our own statements are wrong: the process stops.
    Broken,
}

/// The verdict on a SQLSTATE (five characters; the class is the first two).
pub fn verdict(sqlstate: &str) -> Verdict {
    if sqlstate == SqlState::T_R_SERIALIZATION_FAILURE.code()
        || sqlstate == SqlState::T_R_DEADLOCK_DETECTED.code()
    {
        return Verdict::RetryInPlace;
    }
    if sqlstate == SqlState::QUERY_CANCELED.code() {
        return Verdict::Outage(FailureClass::Timeout);
    }
    match sqlstate.get(..2).unwrap_or_default() {
        "21" | "22" | "23" | "27" | "44" | "54" | "P0" => Verdict::Poison,
        "08" | "57" => Verdict::Outage(FailureClass::Connection),
        "28" => Verdict::Auth,
        "03" | "0A" | "0B" | "24" | "26" | "2B" | "2D" | "2F" | "34" | "38" | "39" | "3B"
        | "3D" | "3F" | "42" => Verdict::Broken,
        _ => Verdict::Outage(FailureClass::Server),
    }
}

/// A failed statement as the retrier sees it (an error without a SQLSTATE never reached the
/// server's executor: the connection is the problem, or its TLS: see `postgres_tls.rs`).
pub fn classify(e: &tokio_postgres::Error) -> Failure {
    let reason = safe_error(e);
    if is_tls_fault(e) {
        return Failure::Tls { reason };
    }
    let Some(code) = e.code() else {
        return Failure::Outage {
            class: FailureClass::Connection,
            reason,
        };
    };
    match verdict(code.code()) {
        Verdict::RetryInPlace => Failure::Retry {
            class: FailureClass::Server,
            reason,
            retry_after: None,
        },
        Verdict::Poison => Failure::Poison {
            class: FailureClass::Client,
            reason,
        },
        Verdict::Outage(class) => Failure::Outage { class, reason },
        Verdict::Auth => Failure::Auth {
            setting: "database_url",
            reason,
        },
        Verdict::Broken => Failure::Broken {
            class: FailureClass::Client,
            reason: format!("a statement of the sink is wrong: {reason}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_are_judged_by_what_a_retry_can_change() {
        let outage = |class| Verdict::Outage(class);
        for (sqlstate, want) in [
            ("40001", Verdict::RetryInPlace),
            ("40P01", Verdict::RetryInPlace),
            // The record's values.
            ("21000", Verdict::Poison),
            ("22021", Verdict::Poison), // a NUL byte
            ("22001", Verdict::Poison), // too long for a varchar
            ("23505", Verdict::Poison),
            ("23514", Verdict::Poison),
            ("27000", Verdict::Poison),
            ("44000", Verdict::Poison),
            ("54000", Verdict::Poison), // index row size exceeds maximum
            ("54001", Verdict::Poison),
            ("P0001", Verdict::Poison),
            // The database, or the way to it.
            ("08006", outage(FailureClass::Connection)),
            ("57P01", outage(FailureClass::Connection)),
            ("57P03", outage(FailureClass::Connection)),
            ("57014", outage(FailureClass::Timeout)),
            ("25006", outage(FailureClass::Server)), // a standby after a failover
            ("28P01", Verdict::Auth),
            ("28000", Verdict::Auth),
            ("40003", outage(FailureClass::Server)),
            ("53100", outage(FailureClass::Server)), // disk full
            ("53300", outage(FailureClass::Server)), // too many connections
            ("55P03", outage(FailureClass::Server)), // lock not available
            ("58030", outage(FailureClass::Server)),
            ("XX000", outage(FailureClass::Server)),
            ("ZZ999", outage(FailureClass::Server)),
            ("", outage(FailureClass::Server)),
            // Our statements.
            ("42601", Verdict::Broken),
            ("42P01", Verdict::Broken),
            ("42703", Verdict::Broken),
            ("42501", Verdict::Broken),
            ("0A000", Verdict::Broken),
            ("26000", Verdict::Broken),
            ("3F000", Verdict::Broken),
        ] {
            assert_eq!(verdict(sqlstate), want, "SQLSTATE {sqlstate}");
        }
    }
}
