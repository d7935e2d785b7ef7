//! The CRM part of `mailstream erase`: who the person is to the CRM (their addresses, their
//! emails, and the ids the CRM gave their contacts and activities, from the `contacts` table
//! and `crm-results`), and how what the backend deleted is printed.

use std::collections::BTreeSet;

use mailstream_crm_sink::{CrmErased, Person};
use mailstream_runtime::avro::AvroCodec;
use mailstream_runtime::records::{Contact, CrmResult};

use super::{Found, Topics, decode, key_of};

/// The person as the CRM backend `backend` knows them: `addresses`, the emails `found`, the
/// contact ids of every `contacts` record of their addresses, and the activity ids of the
/// backend's crm-results of their emails.
pub(super) async fn person(
    topics: &mut Topics<'_>,
    decoder: &AvroCodec,
    addresses: &[String],
    found: &Found,
    backend: &str,
) -> anyhow::Result<Person> {
    let mut contact_ids = BTreeSet::new();
    for record in topics.all("contacts").await? {
        if !key_of(record).is_some_and(|k| addresses.contains(&k)) {
            continue;
        }
        if let Some(contact) = decode::<Contact>(decoder, record).await {
            contact_ids.insert(contact.contact_id);
        }
    }
    let mut activity_ids = BTreeSet::new();
    for record in topics.all("crm-results").await? {
        if !key_of(record).is_some_and(|k| found.message_ids.contains(&k)) {
            continue;
        }
        let Some(result) = decode::<CrmResult>(decoder, record).await else {
            continue;
        };
        if result.backend == backend {
            activity_ids.extend(result.activity_id);
        }
    }
    Ok(Person {
        addresses: addresses.to_vec(),
        message_ids: found.message_ids.iter().cloned().collect(),
        contact_ids: contact_ids.into_iter().collect(),
        activity_ids: activity_ids.into_iter().collect(),
    })
}

/// The report's CRM line: what the backend deleted (or would), by kind, and what it kept but
/// detached from the person.
pub(super) fn line(crm: &CrmErased, verb: &str) -> String {
    let mut line = format!(
        "CRM ({}): {} record(s) {verb}deleted ({})",
        crm.backend,
        crm.total(),
        crm.deleted_kinds()
    );
    if !crm.detached.is_empty() {
        line.push_str(&format!(
            "; kept, the person {verb}removed from them: {}",
            crm.detached_kinds()
        ));
    }
    line
}
