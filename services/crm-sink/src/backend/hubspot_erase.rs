//! Erasing a person from HubSpot (`mailstream erase`), through the sink's one
//! [`HttpClient`](super::rest::HttpClient):
//!
//! 1. **emails**: each email engagement the sink created for one of their messages is found by
//!    the unique message-id property (`GET /crm/v3/objects/emails/<message_id>?idProperty=...`)
//!    and archived (`DELETE /crm/v3/objects/emails/<id>`; HubSpot keeps archived objects
//!    restorable for 90 days, then deletes them).
//! 2. **contacts**: each of their addresses that is a contact
//!    (`GET /crm/v3/objects/contacts/<email>?idProperty=email`) is deleted for good with
//!    HubSpot's GDPR delete (`POST /crm/v3/objects/contacts/gdpr-delete`, body
//!    `PublicGdprDeleteInput` `{"objectId": <email>, "idProperty": "email"}`), which also
//!    removes its associations. Only contacts found: HubSpot blocklists an address the GDPR
//!    delete does not find, and mail the person sends later is processed as usual.
//!
//! A 404 is already gone (not counted), so an erase can be run again. A dry run makes the
//! lookups only. Deals and companies are the portal's and stay.

use std::time::Instant;

use reqwest::Method;
use serde_json::{Value, json};

use super::erase::{CrmErased, Person};
use super::hubspot::{EMAILS, HubspotBackend};
use super::rest::{Answer, Call, encode_segment, require_id};
use crate::error::Failure;

/// HubSpot's GDPR delete of a contact.
pub const CONTACTS_GDPR_DELETE: &str = "/crm/v3/objects/contacts/gdpr-delete";
pub const CONTACTS: &str = "/crm/v3/objects/contacts";

/// The GDPR delete body (`PublicGdprDeleteInput`) of the contact with `email`.
pub fn gdpr_delete_body(email: &str) -> Value {
    json!({"objectId": email, "idProperty": "email"})
}

impl HubspotBackend {
    /// Archives (when `execute`) or counts the emails of the person's messages, then deletes
    /// (or counts) their contacts.
    pub async fn erase(
        &self,
        person: &Person,
        execute: bool,
        deadline: Instant,
    ) -> Result<CrmErased, Failure> {
        let mut erased = CrmErased::new("hubspot", &["emails", "contacts"]);
        for message_id in &person.message_ids {
            let path = format!(
                "{EMAILS}/{}?idProperty={}",
                encode_segment(message_id),
                encode_segment(&self.message_id_property)
            );
            let Some(found) = self
                .call("erase-email-lookup", Method::GET, path, None, deadline)
                .await?
            else {
                continue;
            };
            if !execute {
                erased.add("emails", 1);
                continue;
            }
            let id = require_id(&found, "erase-email-lookup")?;
            let path = format!("{EMAILS}/{}", encode_segment(&id));
            let archived = self.call("erase-email-archive", Method::DELETE, path, None, deadline);
            if archived.await?.is_some() {
                erased.add("emails", 1);
            }
        }
        for address in &person.addresses {
            let path = format!("{CONTACTS}/{}?idProperty=email", encode_segment(address));
            let lookup = self.call("erase-contact-lookup", Method::GET, path, None, deadline);
            if lookup.await?.is_none() {
                continue;
            }
            if execute {
                let body = gdpr_delete_body(address);
                let path = CONTACTS_GDPR_DELETE.to_string();
                let deleted = self.call(
                    "erase-contact-gdpr-delete",
                    Method::POST,
                    path,
                    Some(&body),
                    deadline,
                );
                if deleted.await?.is_none() {
                    continue;
                }
            }
            erased.add("contacts", 1);
        }
        Ok(erased)
    }

    /// One call whose 404 means "not there": `None` then, else the answer.
    async fn call(
        &self,
        op: &str,
        method: Method,
        path: String,
        body: Option<&Value>,
        deadline: Instant,
    ) -> Result<Option<Answer>, Failure> {
        let call = Call {
            op,
            method,
            path,
            idempotency_key: None,
            body,
            accept_conflict: false,
            accept_missing: true,
        };
        let (answer, _) = self.http.call(&call, deadline).await?;
        Ok((answer.status != 404).then_some(answer))
    }
}
