//! Retention in Tryton (`mailstream retention run`): the notes recording old unqualified emails,
//! found by searching Tryton itself (complete whatever the topics still hold), deleted through
//! the REST API with the erase's calls (`DELETE <model>/<id>`; a 404 is already gone).
//!
//! Found: every note whose first line is [`NOTE_MARKER`] (one the sink wrote) and whose header
//! says `Lead: score N (<status>)` with one of the statuses (searched with `like`, then checked
//! on the parsed header) and `Received: <time>` before the cut-off (parsed: the note's
//! `create_date` is when the sink wrote it, which a replay makes later). A note without a lead
//! line (an email without a sender) is never expired, as in PostgreSQL.
//!
//! Deleted: those notes, and an opportunity they hang on only when every note on it is one of
//! them and it is still a `lead` (cancelled first: Tryton deletes only cancelled ones; the
//! notes go with it). An opportunity past the lead stage is the company's work and stays, as do
//! parties and their contact mechanisms (contacts stay, as in PostgreSQL). A dry run makes the
//! searches only; its counts are what `--execute` deletes.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::super::http::{like_literal, record_id};
use super::super::{NOTE_MARKER, TrytonBackend};
use crate::backend::WriteReport;
use crate::backend::erase::{CrmErased, Expired};
use crate::error::Failure;

/// The only opportunity state retention deletes (the sink creates leads).
const EXPIRABLE: &str = "lead";

/// What a note's header says about its email.
#[derive(Debug, PartialEq, Eq)]
pub struct NoteHeader {
    pub message_id: String,
    pub received_at: DateTime<Utc>,
    pub status: Option<String>,
}

/// The header of a note the sink wrote (`None` for any other note): its first line's message
/// id, its `Received:` time and its `Lead:` status, read up to the blank line before the text.
pub fn note_header(message: &str) -> Option<NoteHeader> {
    let mut lines = message.lines();
    let message_id = lines.next()?.strip_prefix(NOTE_MARKER)?.to_string();
    let mut received_at = None;
    let mut status = None;
    for line in lines.take_while(|l| !l.is_empty()) {
        if let Some(time) = line.strip_prefix("Received: ") {
            received_at = DateTime::parse_from_rfc3339(time).ok();
        } else if let Some(lead) = line.strip_prefix("Lead: score ") {
            let status_of = lead.split_once(" (").and_then(|(_, s)| s.strip_suffix(')'));
            status = status_of.map(str::to_string);
        }
    }
    Some(NoteHeader {
        message_id,
        received_at: received_at?.with_timezone(&Utc),
        status,
    })
}

impl TrytonBackend {
    /// Deletes (when `execute`) or counts the notes of emails whose lead has one of `statuses`
    /// and was received before `before`, and the lead-stage opportunities only they are on.
    pub async fn expire(
        &self,
        statuses: &[String],
        before: DateTime<Utc>,
        execute: bool,
        deadline: Instant,
    ) -> Result<Expired, Failure> {
        let calls = &mut WriteReport::default();
        let mut expired = Expired {
            rows: CrmErased::new("tryton", &["notes", "opportunities"]),
            ..Expired::default()
        };
        if statuses.is_empty() {
            return Ok(expired);
        }
        let mut domain = vec![json!("OR")];
        for status in statuses {
            let line = format!("%\nLead: score % ({})\n%", like_literal(status));
            domain.push(json!(["message", "like", line]));
        }
        let marker = format!("{}%", like_literal(NOTE_MARKER));
        let domain = json!([["message", "like", marker], domain]);
        let op = ("retention-note-search", "ir.note");
        let candidates = self
            .api
            .search(calls, op, &domain, &["resource", "message"], deadline);
        // Note id → its message id, for the expired notes only.
        let mut notes = BTreeMap::new();
        let mut opportunities = BTreeSet::new();
        for note in candidates.await? {
            let message = note.get("message").and_then(Value::as_str);
            let Some(header) = message.and_then(note_header) else {
                continue;
            };
            let unqualified = header.status.is_some_and(|s| statuses.contains(&s));
            if !unqualified || header.received_at >= before {
                continue;
            }
            notes.insert(record_id(&note, op.0)?, header.message_id);
            let resource = note.get("resource").and_then(Value::as_str);
            let on = resource.and_then(|r| r.strip_prefix("sale.opportunity,")?.parse().ok());
            opportunities.extend(on.map(|id: i64| id));
        }
        let expired_notes: BTreeSet<i64> = notes.keys().copied().collect();
        let doomed = self
            .doomed_opportunities(&opportunities, &expired_notes, calls, deadline)
            .await?;
        if !execute {
            expired.rows.add("opportunities", doomed.len() as u64);
        }
        let mut cascaded: BTreeSet<i64> = BTreeSet::new();
        for (id, on_it) in doomed.iter().filter(|_| execute) {
            let path = format!("sale.opportunity/{id}");
            self.api
                .action(
                    calls,
                    "retention-opportunity-cancel",
                    &format!("{path}/cancel"),
                    deadline,
                )
                .await?;
            if self
                .api
                .delete(calls, "retention-opportunity-delete", &path, deadline)
                .await?
            {
                expired.rows.add("opportunities", 1);
            }
            cascaded.extend(on_it);
        }
        for (id, message_id) in &notes {
            let gone = cascaded.contains(id)
                || !execute
                || (self.api)
                    .delete(calls, "retention-note", &format!("ir.note/{id}"), deadline)
                    .await?;
            if gone {
                let mut one = CrmErased::new("tryton", &[]);
                one.add("notes", 1);
                expired.add(message_id, &one);
            }
        }
        Ok(expired)
    }

    /// The lead-stage opportunities among `ids` every note on which is in `expired`, with
    /// those notes.
    async fn doomed_opportunities(
        &self,
        ids: &BTreeSet<i64>,
        expired: &BTreeSet<i64>,
        calls: &mut WriteReport,
        deadline: Instant,
    ) -> Result<BTreeMap<i64, BTreeSet<i64>>, Failure> {
        let ids: Vec<Value> = ids.iter().map(|id| json!(id)).collect();
        let op = (
            "retention-opportunity-search",
            "sale.opportunity",
            &["state"][..],
        );
        let leads: Vec<i64> = self
            .search_in(calls, op, "id", &ids, deadline)
            .await?
            .iter()
            .filter(|o| o.get("state").and_then(Value::as_str) == Some(EXPIRABLE))
            .map(|o| record_id(o, op.0))
            .collect::<Result<_, _>>()?;
        let notes_on = self
            .notes_on_opportunities(calls, "retention-note-search", leads, deadline)
            .await?;
        Ok(notes_on
            .into_iter()
            .filter(|(_, notes)| notes.is_subset(expired))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_note_header_names_the_message_its_time_and_status_and_other_notes_none() {
        let note = "mailstream email m-1@x\nFrom: Ann <ann@x>\nSubject: Lead: score 9 (qualified)\nReceived: 2026-01-02T03:04:05Z\nLead: score 5 (nurture)\n\nLead: score 1 (excluded)";
        let header = note_header(note).expect("the sink's note");
        assert_eq!(header.message_id, "m-1@x");
        assert_eq!(header.status.as_deref(), Some("nurture"));
        assert_eq!(header.received_at.to_rfc3339(), "2026-01-02T03:04:05+00:00");
        assert!(note_header("a note someone typed").is_none());
        let no_lead = note_header("mailstream email m-2@x\nReceived: 2026-01-02T03:04:05Z\n\nhi");
        assert_eq!(no_lead.and_then(|h| h.status), None);
    }
}
