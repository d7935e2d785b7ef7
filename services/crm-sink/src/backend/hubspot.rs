//! The HubSpot backend (CRM v3), on the shared [`HttpClient`] (retries, `Retry-After`, rate
//! limit, concurrency cap, bearer token).
//!
//! Per message:
//! 1. the contact is upserted by email: `POST /crm/v3/objects/contacts/batch/upsert` with
//!    `idProperty: email` (HubSpot answers with the contact's id and whether it is `new`);
//! 2. the account's company, when the account has a domain, is upserted by it:
//!    `POST /crm/v3/objects/companies/batch/upsert` with `idProperty: domain` and its name (the
//!    result's `account_id` is HubSpot's company id);
//! 3. the email engagement is created: `POST /crm/v3/objects/emails` with `hs_timestamp`,
//!    `hs_email_direction: INCOMING_EMAIL`, subject and text, the message id in a unique-value
//!    email property (`hubspot_message_id_property`, default `mailstream_message_id`, created
//!    once in the portal), and associations to the contact (type 198), the company (186) and
//!    the deal (210).
//!    A replay meets the unique property: HubSpot answers 409, and the existing email is read
//!    back by that property (`GET /crm/v3/objects/emails/<message_id>?idProperty=...`).
//! 4. a relinked record (the resolver's second record of a reply whose parent came later) finds
//!    its email that way and associates it with the deal the parent gave it:
//!    `PUT /crm/v4/objects/emails/<id>/associations/default/deals/<deal_id>`. HubSpot's emails
//!    hold no thread link of ours, so the deal is what moves.
//!
//! Deals are HubSpot's own (the id a deal address such as `deal-42@` names), so they are
//! associated, not created; HubSpot's object ids are numeric, so a deal id that is not (a
//! `deal-Q3_acme@` address) is not associated (HubSpot would refuse the whole email), and a
//! warning says so. Property values are cut to HubSpot's limit ([`VALUE_LIMIT`]); the whole
//! text stays in the blob store. Attachment bytes are not uploaded to HubSpot's file manager
//! by this backend: attachments are counted neither written nor failed.
//!
//! The requests are checked against HubSpot's published API (the models of its official
//! client) by `tests/crm_hubspot_contract.rs` and the stand-in in `dev/hubspot-contract/`.

use std::time::Instant;

use reqwest::Method;
use serde_json::{Value, json};

use super::rest::{Answer, Call, HttpClient, encode_segment, require_id};
use super::{CrmBackend, WritePlan, WriteReport, idempotency_key};
use crate::error::Failure;
use crate::events;

/// HubSpot-defined association type ids (CRM v4 association types).
pub const EMAIL_TO_CONTACT: u32 = 198;
pub const EMAIL_TO_COMPANY: u32 = 186;
pub const EMAIL_TO_DEAL: u32 = 210;

/// The longest property value HubSpot takes, in UTF-16 code units (its string limit is 65,536
/// characters; counting code units is never more than that).
pub const VALUE_LIMIT: usize = 65_536;

pub const CONTACTS_UPSERT: &str = "/crm/v3/objects/contacts/batch/upsert";
pub const COMPANIES_UPSERT: &str = "/crm/v3/objects/companies/batch/upsert";
pub const EMAILS: &str = "/crm/v3/objects/emails";

/// HubSpot CRM v3.
pub struct HubspotBackend {
    pub http: HttpClient,
    /// The unique-value email property that holds the message id.
    pub message_id_property: String,
}

/// Splits a display name into HubSpot's first and last name (at the first space).
pub fn split_name(name: Option<&str>) -> (Option<String>, Option<String>) {
    match name.map(str::trim).filter(|n| !n.is_empty()) {
        None => (None, None),
        Some(n) => match n.split_once(char::is_whitespace) {
            Some((first, last)) => (Some(first.to_string()), Some(last.trim().to_string())),
            None => (Some(n.to_string()), None),
        },
    }
}

/// `value` cut to [`VALUE_LIMIT`] UTF-16 code units, at a character boundary.
pub fn fit_value(value: &str) -> String {
    let mut units = 0;
    let end = value
        .char_indices()
        .find(|(_, c)| {
            units += c.len_utf16();
            units > VALUE_LIMIT
        })
        .map_or(value.len(), |(i, _)| i);
    value[..end].to_string()
}

/// Whether `id` can name a HubSpot object (its ids are numeric).
pub fn is_object_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 20 && id.bytes().all(|b| b.is_ascii_digit())
}

/// The batch-upsert body for one contact.
pub fn contact_body(email: &str, name: Option<&str>) -> Value {
    let (first, last) = split_name(name);
    let mut properties = json!({"email": email});
    if let Some(first) = first {
        properties["firstname"] = json!(fit_value(&first));
    }
    if let Some(last) = last {
        properties["lastname"] = json!(fit_value(&last));
    }
    json!({"inputs": [{"idProperty": "email", "id": email, "properties": properties}]})
}

/// The batch-upsert body for the account's company, by its domain (the company's unique
/// property), with its name when known.
pub fn company_body(domain: &str, name: Option<&str>) -> Value {
    let mut properties = json!({"domain": domain});
    if let Some(name) = name.map(str::trim).filter(|n| !n.is_empty()) {
        properties["name"] = json!(fit_value(name));
    }
    json!({"inputs": [{"idProperty": "domain", "id": domain, "properties": properties}]})
}

/// The HubSpot ids an email engagement is associated with.
#[derive(Debug, Clone, Copy, Default)]
pub struct Associations<'a> {
    pub contact: Option<&'a str>,
    pub company: Option<&'a str>,
    pub deal: Option<&'a str>,
}

/// The create body of the email engagement, with its associations (to the contact, the
/// company and the deal, each when given).
pub fn email_body(plan: &WritePlan, property: &str, to: Associations<'_>) -> Value {
    let a = &plan.activity;
    let mut properties = json!({
        "hs_timestamp": plan.received_at.timestamp_millis().to_string(),
        "hs_email_direction": "INCOMING_EMAIL",
        "hs_email_subject": fit_value(a.subject.as_deref().unwrap_or_default()),
        "hs_email_text": fit_value(a.text.as_deref().unwrap_or_default()),
    });
    properties[property] = json!(plan.message_id);
    let association = |id: &str, type_id: u32| {
        json!({"to": {"id": id}, "types": [
            {"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": type_id}
        ]})
    };
    let associations: Vec<Value> = [
        (to.contact, EMAIL_TO_CONTACT),
        (to.company, EMAIL_TO_COMPANY),
        (to.deal, EMAIL_TO_DEAL),
    ]
    .into_iter()
    .filter_map(|(id, type_id)| Some(association(id?, type_id)))
    .collect();
    json!({"properties": properties, "associations": associations})
}

impl HubspotBackend {
    /// A batch upsert of one object (`op`: operation, path, idempotency-key suffix): its id and
    /// whether HubSpot created it (`new`), counted into `report`.
    async fn upsert(
        &self,
        plan: &WritePlan,
        (op, path, key): (&str, &str, &str),
        body: &Value,
        report: &mut WriteReport,
        deadline: Instant,
    ) -> Result<(String, bool), Failure> {
        let call = Call {
            op,
            method: Method::POST,
            path: path.into(),
            idempotency_key: Some(idempotency_key(&plan.message_id, key)),
            body: Some(body),
            accept_conflict: false,
            accept_missing: false,
        };
        let (answer, n) = self.http.call(&call, deadline).await?;
        report.attempts += n;
        let result = answer.body.get("results").and_then(|r| r.get(0));
        let new = result.and_then(|r| r.get("new")) == Some(&Value::Bool(true));
        report.changed |= new;
        Ok((require_id(&answer, op)?, new))
    }

    /// Reads back the email that holds `message_id` in the unique property.
    async fn existing_email(
        &self,
        plan: &WritePlan,
        deadline: Instant,
    ) -> Result<(Answer, u32), Failure> {
        let call = Call {
            op: "email-lookup",
            method: Method::GET,
            path: format!(
                "{EMAILS}/{}?idProperty={}",
                encode_segment(&plan.message_id),
                encode_segment(&self.message_id_property)
            ),
            idempotency_key: None,
            body: None,
            accept_conflict: false,
            accept_missing: false,
        };
        self.http.call(&call, deadline).await
    }
}

impl CrmBackend for HubspotBackend {
    fn name(&self) -> &'static str {
        "hubspot"
    }

    async fn write(&mut self, plan: &WritePlan, deadline: Instant) -> Result<WriteReport, Failure> {
        let deal_id = plan.deal.as_ref().map(|d| d.deal_id.as_str());
        let deal_id = deal_id.filter(|id| {
            let numeric = is_object_id(id);
            if !numeric {
                events::deal_not_associated(&plan.message_id, id);
            }
            numeric
        });
        let mut report = WriteReport {
            account_id: plan.account.as_ref().map(|a| a.account_id.clone()),
            deal_id: deal_id.map(str::to_string),
            ..WriteReport::default()
        };
        if let Some(k) = &plan.contact {
            let body = contact_body(&k.email, k.name.as_deref());
            let op = ("contact-upsert", CONTACTS_UPSERT, "contact");
            let (id, new) = self.upsert(plan, op, &body, &mut report, deadline).await?;
            report.contact_created = k.create && new;
            report.contact_id = Some(id);
        }
        let domain = plan
            .account
            .as_ref()
            .and_then(|a| Some((a, a.domain.as_deref()?)));
        let company_id = match domain {
            Some((account, domain)) => {
                let body = company_body(domain, account.name.as_deref());
                let op = ("company-upsert", COMPANIES_UPSERT, "company");
                let (id, _) = self.upsert(plan, op, &body, &mut report, deadline).await?;
                report.account_id = Some(id.clone());
                Some(id)
            }
            None => None,
        };
        let to = Associations {
            contact: report.contact_id.as_deref(),
            company: company_id.as_deref(),
            deal: deal_id,
        };
        let body = email_body(plan, &self.message_id_property, to);
        let call = Call {
            op: "email-create",
            method: Method::POST,
            path: EMAILS.into(),
            idempotency_key: Some(idempotency_key(&plan.message_id, "activity")),
            body: Some(&body),
            accept_conflict: true,
            accept_missing: false,
        };
        let (mut answer, n) = self.http.call(&call, deadline).await?;
        report.attempts += n;
        if answer.status == 409 {
            let (existing, n) = self.existing_email(plan, deadline).await?;
            report.attempts += n;
            answer = Answer {
                replayed: true,
                ..existing
            };
        }
        report.changed |= !answer.replayed;
        report.activity_created = !answer.replayed;
        let email_id = require_id(&answer, "email-create")?;
        if let (true, true, Some(deal)) = (plan.relinked, answer.replayed, deal_id) {
            // The email exists from the first record: associate it with the deal its parent's
            // arrival gave it (PUT is idempotent: a replay associates nothing new).
            let call = Call {
                op: "email-deal-associate",
                method: Method::PUT,
                path: format!(
                    "/crm/v4/objects/emails/{}/associations/default/deals/{}",
                    encode_segment(&email_id),
                    encode_segment(deal)
                ),
                idempotency_key: None,
                body: None,
                accept_conflict: false,
                accept_missing: false,
            };
            let (_, n) = self.http.call(&call, deadline).await?;
            report.attempts += n;
        }
        report.activity_id = Some(email_id);
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_split_into_first_and_last() {
        assert_eq!(
            split_name(Some("Ali Gupta")),
            (Some("Ali".into()), Some("Gupta".into()))
        );
        assert_eq!(split_name(Some(" Cher ")), (Some("Cher".into()), None));
        assert_eq!(split_name(Some("  ")), (None, None));
        let body = contact_body("ali@acme.io", Some("Ali van Dijk"));
        assert_eq!(body["inputs"][0]["idProperty"], "email");
        assert_eq!(body["inputs"][0]["id"], "ali@acme.io");
        assert_eq!(body["inputs"][0]["properties"]["lastname"], "van Dijk");
    }

    #[test]
    fn values_fit_hubspots_limit_and_only_numeric_ids_name_objects() {
        assert_eq!(fit_value("short"), "short");
        let long = "é".repeat(VALUE_LIMIT + 5);
        assert_eq!(fit_value(&long).chars().count(), VALUE_LIMIT);
        let astral = "😀".repeat(VALUE_LIMIT);
        let cut = fit_value(&astral);
        assert_eq!(cut.encode_utf16().count(), VALUE_LIMIT);
        assert!(is_object_id("901"));
        assert!(!is_object_id("Q3_acme"));
        assert!(!is_object_id(""));
    }
}
