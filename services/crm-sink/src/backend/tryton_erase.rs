//! Erasing a person from Tryton (`mailstream erase`): what the sink wrote for them, found by
//! searches and deleted through the REST API (`DELETE <model>/<id>`; a 404 is already gone, so
//! an erase can be run again after a failure).
//!
//! Found:
//! - their **parties**: those with an email contact mechanism equal (case-insensitively) to one
//!   of their addresses, as the sink searches them;
//! - their **notes**: the notes recording their emails (first line [`NOTE_MARKER`] and one of
//!   their message ids, wherever the note hangs), and every note on their parties;
//! - **opportunities**: those with one of their parties as party, or one of their notes. One is
//!   *only theirs*, and deleted, when its party is theirs or none, every note on it is theirs
//!   (a deal only their emails were written to) and Tryton can delete it (a lead, an
//!   opportunity, cancelled or draft: not won, lost or converted, which are the company's
//!   history). Any other is kept, and loses them as its party and, while it is a lead or an
//!   opportunity, the description made from one of their emails (its subject). Tryton lets a
//!   party be changed on a lead only: a kept opportunity past that state with them as party
//!   stops the erase, before anything is changed, naming it (Tryton's own Party › Erase wizard
//!   anonymises such a party).
//!
//! Deleted, in this order: the kept opportunities detached; the opportunities only theirs
//! (cancelled first from `lead` or `opportunity`: Tryton deletes only cancelled ones), with the
//! notes on them (Tryton deletes a record's notes with it); their other notes; their parties
//! (with their contact mechanisms, which Tryton deletes with the party). A dry run makes the
//! searches only; its counts are what `--execute` deletes.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use reqwest::Method;
use serde_json::{Value, json};

use super::http::{like_literal, many2one, record_id};
use super::{NOTE_MARKER, TrytonBackend};
use crate::backend::WriteReport;
use crate::backend::erase::{CrmErased, Person};
use crate::error::{Failure, FailureClass};

#[path = "tryton_expire.rs"]
mod expire;

/// Message ids per note search (a `like` clause each, in the URL).
const IDS_PER_SEARCH: usize = 20;
/// Values per `in` clause (in the URL).
const VALUES_PER_SEARCH: usize = 200;
/// Opportunity states Tryton cancels (it deletes cancelled and draft ones only).
const CANCELLABLE: [&str; 2] = ["lead", "opportunity"];
/// Opportunity states Tryton deletes (after cancelling the cancellable ones).
const DELETABLE: [&str; 4] = ["lead", "opportunity", "cancelled", "draft"];
/// Opportunity states whose description Tryton lets us change (the others are read-only).
const EDITABLE: [&str; 2] = ["lead", "opportunity"];

/// An opportunity the erase deletes or changes.
#[derive(Debug)]
struct Opportunity {
    state: String,
    /// Notes on it (all theirs when it is deleted).
    notes: BTreeSet<i64>,
}

/// What the person has in Tryton, found by searches only.
#[derive(Debug, Default)]
struct Found {
    /// Party id → its contact mechanisms.
    parties: BTreeMap<i64, u64>,
    /// Their notes by id (those on deleted opportunities included).
    notes: BTreeSet<i64>,
    delete: BTreeMap<i64, Opportunity>,
    /// Kept opportunities → the write that detaches the person.
    detach: BTreeMap<i64, Value>,
}

impl TrytonBackend {
    /// Deletes (when `execute`) or counts what the sink wrote for `person`.
    pub async fn erase(
        &self,
        person: &Person,
        execute: bool,
        deadline: Instant,
    ) -> Result<CrmErased, Failure> {
        let kinds = ["notes", "opportunities", "parties", "contact_mechanisms"];
        let mut erased = CrmErased::new("tryton", &kinds);
        let calls = &mut WriteReport::default();
        let found = self.find(person, calls, deadline).await?;
        if !found.detach.is_empty() {
            erased
                .detached
                .insert("opportunities", found.detach.len() as u64);
        }
        if !execute {
            erased.add("notes", found.notes.len() as u64);
            erased.add("opportunities", found.delete.len() as u64);
            erased.add("parties", found.parties.len() as u64);
            erased.add("contact_mechanisms", found.parties.values().sum());
            return Ok(erased);
        }
        for (id, change) in &found.detach {
            let path = format!("sale.opportunity/{id}");
            let op = ("erase-opportunity-detach", Method::PUT, path.as_str());
            self.api.save(calls, op, change, deadline).await?;
        }
        let mut cascaded = BTreeSet::new();
        for (id, opportunity) in &found.delete {
            let path = format!("sale.opportunity/{id}");
            if CANCELLABLE.contains(&opportunity.state.as_str()) {
                let cancel = format!("{path}/cancel");
                let op = "erase-opportunity-cancel";
                self.api.action(calls, op, &cancel, deadline).await?;
            }
            let op = "erase-opportunity-delete";
            if self.api.delete(calls, op, &path, deadline).await? {
                erased.add("opportunities", 1);
                erased.add("notes", opportunity.notes.len() as u64);
            }
            cascaded.extend(&opportunity.notes);
        }
        for id in found.notes.difference(&cascaded) {
            let path = format!("ir.note/{id}");
            if self
                .api
                .delete(calls, "erase-note", &path, deadline)
                .await?
            {
                erased.add("notes", 1);
            }
        }
        for (id, mechanisms) in &found.parties {
            let path = format!("party.party/{id}");
            if self
                .api
                .delete(calls, "erase-party", &path, deadline)
                .await?
            {
                erased.add("parties", 1);
                erased.add("contact_mechanisms", *mechanisms);
            }
        }
        Ok(erased)
    }

    /// The person's parties, notes and opportunities, and what becomes of each.
    async fn find(
        &self,
        person: &Person,
        calls: &mut WriteReport,
        deadline: Instant,
    ) -> Result<Found, Failure> {
        let mut found = Found::default();
        for address in &person.addresses {
            let domain = json!([
                ["type", "=", "email"],
                ["value", "ilike", like_literal(address)]
            ]);
            let op = ("erase-party-search", "party.contact_mechanism");
            let mechanisms = self.api.search(calls, op, &domain, &["party"], deadline);
            for party in mechanisms
                .await?
                .iter()
                .filter_map(|m| many2one(m, "party"))
            {
                found.parties.insert(party, 0);
            }
        }
        let parties: Vec<Value> = found.parties.keys().map(|id| json!(id)).collect();
        let op = (
            "erase-mechanism-search",
            "party.contact_mechanism",
            &["party"][..],
        );
        for mechanism in self
            .search_in(calls, op, "party", &parties, deadline)
            .await?
        {
            if let Some(n) = many2one(&mechanism, "party").and_then(|p| found.parties.get_mut(&p)) {
                *n += 1;
            }
        }
        // Their notes: by the message id line, and whatever hangs on their parties.
        let mut notes: Vec<Value> = Vec::new();
        for ids in person.message_ids.chunks(IDS_PER_SEARCH) {
            let mut domain = vec![json!("OR")];
            for id in ids {
                let first_line = format!("{NOTE_MARKER}{id}\n");
                domain.push(json!([
                    "message",
                    "like",
                    format!("{}%", like_literal(&first_line))
                ]));
            }
            let op = ("erase-note-search", "ir.note");
            let fields = ["resource", "message"];
            notes.extend(
                self.api
                    .search(calls, op, &json!(domain), &fields, deadline)
                    .await?,
            );
        }
        let on_parties: Vec<Value> = found
            .parties
            .keys()
            .map(|id| json!(format!("party.party,{id}")))
            .collect();
        let op = ("erase-note-search", "ir.note", &["resource", "message"][..]);
        notes.extend(
            self.search_in(calls, op, "resource", &on_parties, deadline)
                .await?,
        );
        let mut subjects = BTreeSet::new();
        let mut opportunities = BTreeSet::new();
        for note in &notes {
            found.notes.insert(record_id(note, "erase-note-search")?);
            let resource = note.get("resource").and_then(Value::as_str);
            if let Some(id) = resource
                .and_then(|r| r.strip_prefix("sale.opportunity,"))
                .and_then(|id| id.parse::<i64>().ok())
            {
                opportunities.insert(id);
            }
            let message = note.get("message").and_then(Value::as_str);
            let subject = message.and_then(|m| m.lines().find_map(|l| l.strip_prefix("Subject: ")));
            subjects.extend(subject.map(str::to_string));
        }
        self.opportunities(&mut found, &opportunities, &subjects, calls, deadline)
            .await?;
        Ok(found)
    }

    /// Sorts the opportunities of the person's parties and notes into deleted and kept.
    async fn opportunities(
        &self,
        found: &mut Found,
        noted: &BTreeSet<i64>,
        subjects: &BTreeSet<String>,
        calls: &mut WriteReport,
        deadline: Instant,
    ) -> Result<(), Failure> {
        let fields = ["party", "state", "description"];
        let op = ("erase-opportunity-search", "sale.opportunity", &fields[..]);
        let parties: Vec<Value> = found.parties.keys().map(|id| json!(id)).collect();
        let mut candidates = self
            .search_in(calls, op, "party", &parties, deadline)
            .await?;
        let noted: Vec<Value> = noted.iter().map(|id| json!(id)).collect();
        candidates.extend(self.search_in(calls, op, "id", &noted, deadline).await?);
        let mut by_id = BTreeMap::new();
        for opportunity in candidates {
            by_id.insert(record_id(&opportunity, op.0)?, opportunity);
        }
        let mut notes_on = self
            .notes_on_opportunities(calls, "erase-note-search", by_id.keys().copied(), deadline)
            .await?;
        for (id, opportunity) in by_id {
            let party = many2one(&opportunity, "party");
            let theirs = party.is_some_and(|p| found.parties.contains_key(&p));
            let notes = notes_on.remove(&id).unwrap_or_default();
            let state = opportunity.get("state").and_then(Value::as_str);
            let state = state.unwrap_or_default().to_string();
            let deletable = DELETABLE.contains(&state.as_str());
            if (theirs || party.is_none()) && notes.is_subset(&found.notes) && deletable {
                found.delete.insert(id, Opportunity { state, notes });
                continue;
            }
            let description = opportunity.get("description").and_then(Value::as_str);
            let mut change = serde_json::Map::new();
            if theirs {
                if state != "lead" {
                    return Err(Failure::Poison {
                        class: FailureClass::Client,
                        reason: format!(
                            "opportunity {id} ({state}) has the person as its party and stays (other people's emails are on it, or it is won, lost or converted), but Tryton changes the party of a lead only: anonymise the party with Tryton's Party › Erase, then run the erase again"
                        ),
                    });
                }
                change.insert("party".into(), Value::Null);
            }
            let editable = EDITABLE.contains(&state.as_str());
            if editable && description.is_some_and(|d| subjects.contains(d)) {
                change.insert("description".into(), Value::Null);
            }
            if !change.is_empty() {
                found.detach.insert(id, Value::Object(change));
            }
        }
        Ok(())
    }

    /// The notes on each of the opportunities `ids` (opportunity id → note ids); `op` names
    /// the search in the report and the logs.
    async fn notes_on_opportunities(
        &self,
        calls: &mut WriteReport,
        op: &str,
        ids: impl IntoIterator<Item = i64>,
        deadline: Instant,
    ) -> Result<BTreeMap<i64, BTreeSet<i64>>, Failure> {
        let resources: Vec<Value> = ids
            .into_iter()
            .map(|id| json!(format!("sale.opportunity,{id}")))
            .collect();
        let op = (op, "ir.note", &["resource"][..]);
        let mut notes_on: BTreeMap<i64, BTreeSet<i64>> = BTreeMap::new();
        for note in self
            .search_in(calls, op, "resource", &resources, deadline)
            .await?
        {
            let on = note.get("resource").and_then(Value::as_str);
            if let Some(id) = on.and_then(|r| r.strip_prefix("sale.opportunity,")?.parse().ok()) {
                let note = record_id(&note, op.0)?;
                notes_on.entry(id).or_default().insert(note);
            }
        }
        Ok(notes_on)
    }

    /// The records of `model` whose `field` is one of `values`, read with `fields`, searched
    /// in chunks (the domain travels in the URL).
    async fn search_in(
        &self,
        calls: &mut WriteReport,
        (op, model, fields): (&str, &str, &[&str]),
        field: &str,
        values: &[Value],
        deadline: Instant,
    ) -> Result<Vec<Value>, Failure> {
        let mut out = Vec::new();
        for chunk in values.chunks(VALUES_PER_SEARCH) {
            let domain = json!([[field, "in", chunk]]);
            let found = self
                .api
                .search(calls, (op, model), &domain, fields, deadline);
            out.extend(found.await?);
        }
        Ok(out)
    }
}
