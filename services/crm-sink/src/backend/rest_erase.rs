//! Erasing a person from the generic REST CRM (`mailstream erase`): the resources the
//! [`RestBackend`] created for them, addressed by the ids the CRM gave them.
//!
//! - **activities**: `DELETE <activities_path>/<activity_id>` for each activity id the
//!   backend's crm-results hold for the person's emails (the CRM's answer to the write keyed
//!   `<message_id>:activity`). The CRM deletes an activity's attachments with it.
//! - **contacts**: `DELETE <contacts_path>/<contact_id>` for each id the `contacts` table holds
//!   for their addresses (the ids the CRM answered when the sink created them, or the CRM
//!   export's for known contacts).
//!
//! A 404 is already gone (not counted): an erase can be run again. A dry run asks `GET` of the
//! same paths instead and counts what is there. Deals are the companies' and stay. Every call
//! goes through the sink's one [`HttpClient`](super::rest::HttpClient) (retries,
//! `Retry-After`, rate limit).

use std::time::Instant;

use reqwest::Method;

use super::erase::{CrmErased, Person};
use super::rest::{Call, RestBackend, encode_segment};
use crate::error::Failure;

impl RestBackend {
    /// Deletes (when `execute`) or counts the person's activities and contacts.
    pub async fn erase(
        &self,
        person: &Person,
        execute: bool,
        deadline: Instant,
    ) -> Result<CrmErased, Failure> {
        let mut erased = CrmErased::new("rest", &["activities", "contacts"]);
        let resources = [
            (
                "activities",
                &self.endpoints.activities,
                &person.activity_ids,
            ),
            ("contacts", &self.endpoints.contacts, &person.contact_ids),
        ];
        for (kind, base, ids) in resources {
            for id in ids {
                if self.remove(kind, base, id, execute, deadline).await? {
                    erased.add(kind, 1);
                }
            }
        }
        Ok(erased)
    }

    /// Deletes (or, in a dry run, looks up) `<base>/<id>`: whether it was there.
    async fn remove(
        &self,
        kind: &str,
        base: &str,
        id: &str,
        execute: bool,
        deadline: Instant,
    ) -> Result<bool, Failure> {
        let (op, method) = if execute {
            (format!("erase-{kind}"), Method::DELETE)
        } else {
            (format!("erase-{kind}-lookup"), Method::GET)
        };
        let call = Call {
            op: &op,
            method,
            path: format!("{}/{}", base.trim_end_matches('/'), encode_segment(id)),
            idempotency_key: None,
            body: None,
            accept_conflict: false,
            accept_missing: true,
        };
        let (answer, _) = self.http.call(&call, deadline).await?;
        Ok(answer.status != 404)
    }
}
