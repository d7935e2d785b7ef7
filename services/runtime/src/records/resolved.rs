//! `ResolvedEmail` (schema `resolved.avsc`): one distinct email with its sender, account, deal
//! and thread resolved, written by the resolver and read by the scorer. Keyed by `message_id`.

use serde::{Deserialize, Serialize};

use super::ParsedEmail;

/// The known contact the sender resolved to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactMatch {
    pub contact_id: String,
    pub name: Option<String>,
    pub account_id: Option<String>,
}

/// The account (company) of the sender.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountMatch {
    pub account_id: String,
    pub name: Option<String>,
    pub domain: Option<String>,
    pub target_account: bool,
    /// `contact` (the contact's account) or `domain` (sender domain in the accounts table).
    pub matched_by: String,
}

/// An unknown sender the CRM sink should create as a contact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewContactProposal {
    pub email: String,
    pub name: Option<String>,
    pub domain: Option<String>,
    pub account_id: Option<String>,
}

/// A deduplicated email with its identities, deal and thread resolved.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ResolvedEmail {
    pub message_id: String,
    /// When mailstream accepted the first copy, milliseconds since the epoch.
    pub received_at: i64,
    pub email: ParsedEmail,
    /// Our addresses the email was sent to (lower-cased, sorted, unique).
    pub recipients: Vec<String>,
    pub sender_email: Option<String>,
    pub sender_domain: Option<String>,
    /// The sender's domain is free-mail or disposable.
    pub free_mail: bool,
    pub contact: Option<ContactMatch>,
    pub account: Option<AccountMatch>,
    pub new_contact: Option<NewContactProposal>,
    pub deal_id: Option<String>,
    /// `recipient` or `thread`.
    pub deal_source: Option<String>,
    pub thread_id: String,
    pub thread_parent: Option<String>,
    /// A second record of the email: a parent the first resolution could not find (the first
    /// record has no `thread_parent`) was linked once it arrived, with the thread and deal
    /// that follow. Each message id has one record without this, and at most one with it.
    #[serde(default)]
    pub thread_relinked: bool,
    /// Mail we sent (the sender is on our domains; not a forward or a form): not a lead, the
    /// first response to its thread's inbound emails.
    #[serde(default)]
    pub outbound: bool,
}

impl ResolvedEmail {
    /// The address of ours the email came in through, for attribution (`demo@`, `partners@`,
    /// a campaign's `demo+spring@`): the first of [`ResolvedEmail::recipients`] in To, else in
    /// Cc, else the first of them (an envelope or Bcc recipient); lower-cased.
    pub fn source_alias(&self) -> Option<&str> {
        let named = |header: &[super::Address]| {
            self.recipients
                .iter()
                .find(|ours| header.iter().any(|a| a.email.eq_ignore_ascii_case(ours)))
        };
        named(&self.email.to)
            .or_else(|| named(&self.email.cc))
            .or(self.recipients.first())
            .map(String::as_str)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::records::roundtrip::through_schema;
    use crate::records::{Address, AuthResults};

    pub(crate) fn sample() -> ResolvedEmail {
        ResolvedEmail {
            message_id: "m1@example.com".into(),
            received_at: 1_700_000_000_000,
            email: ParsedEmail {
                message_id: "m1@example.com".into(),
                ingest_id: "i1".into(),
                received_at: 1_700_000_000_000,
                subject: Some("Pricing".into()),
                from: Some(Address {
                    email: "ali@acme.io".into(),
                    name: Some("Ali".into()),
                }),
                auth: AuthResults::default(),
                ..ParsedEmail::default()
            },
            recipients: vec!["deal-42@in.example.com".into()],
            sender_email: Some("ali@acme.io".into()),
            sender_domain: Some("acme.io".into()),
            free_mail: false,
            contact: Some(ContactMatch {
                contact_id: "c1".into(),
                name: None,
                account_id: Some("a1".into()),
            }),
            account: Some(AccountMatch {
                account_id: "a1".into(),
                name: Some("Acme".into()),
                domain: Some("acme.io".into()),
                target_account: true,
                matched_by: "contact".into(),
            }),
            new_contact: Some(NewContactProposal {
                email: "x@y.z".into(),
                name: None,
                domain: Some("y.z".into()),
                account_id: None,
            }),
            deal_id: Some("42".into()),
            deal_source: Some("recipient".into()),
            thread_id: "m0@example.com".into(),
            thread_parent: Some("m0@example.com".into()),
            thread_relinked: true,
            outbound: true,
        }
    }

    #[test]
    fn the_source_alias_is_the_first_of_ours_in_to_then_cc_then_any() {
        let mut r = ResolvedEmail {
            recipients: vec![
                "deal-7@in.example.com".into(),
                "demo+spring@in.example.com".into(),
                "sales@in.example.com".into(),
            ],
            ..ResolvedEmail::default()
        };
        let address = |email: &str| Address {
            email: email.into(),
            name: None,
        };
        assert_eq!(
            r.source_alias(),
            Some("deal-7@in.example.com"),
            "none named"
        );
        r.email.cc = vec![address("Sales@In.Example.com")];
        assert_eq!(r.source_alias(), Some("sales@in.example.com"));
        r.email.to = vec![
            address("kim@client.test"),
            address("demo+spring@in.example.com"),
        ];
        assert_eq!(r.source_alias(), Some("demo+spring@in.example.com"));
        assert_eq!(ResolvedEmail::default().source_alias(), None);
    }

    #[test]
    fn round_trips_through_its_schema() {
        let record = sample();
        assert_eq!(through_schema("resolved.avsc", record.clone()), record);
    }
}
