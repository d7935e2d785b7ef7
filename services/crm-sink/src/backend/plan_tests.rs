//! Unit tests of the write plan: what a `ScoredLead` turns into, and the ids and keys that make
//! replays land on the same rows.

use mailstream_runtime::AvroRecord;
use mailstream_runtime::records::{
    AccountMatch, Address, Attachment, ContactMatch, Disposition, NewContactProposal, ParsedEmail,
    ResolvedEmail, RuleHit, ScoredLead,
};

use super::*;

fn attachment(name: Option<&str>, sha: &str) -> Attachment {
    Attachment {
        filename: name.map(Into::into),
        content_type: "application/pdf".into(),
        sniffed_type: None,
        size: 10,
        sha256: sha.into(),
        disposition: Disposition::Attachment,
        content_id: None,
        blob_uri: Some(format!("file:///b/{sha}")),
        executable: false,
        malware: None,
    }
}

fn lead() -> ScoredLead {
    ScoredLead {
        message_id: "m1@acme.io".into(),
        received_at: 1_700_000_000_000,
        lead_key: "ali@acme.io".into(),
        sender_email: Some("Ali@Acme.io".into()),
        sender_domain: Some("acme.io".into()),
        subject: Some("Pricing".into()),
        account_id: Some("a1".into()),
        deal_id: Some("42".into()),
        thread_id: "m1@acme.io".into(),
        score: 45,
        status: "qualified".into(),
        tags: vec!["new-contact".into()],
        breakdown: vec![RuleHit {
            rule_id: "subject-intent".into(),
            points: 20,
            evidence: "pricing".into(),
        }],
        rules_version: "0123456789ab".into(),
        resolved: ResolvedEmail {
            message_id: "m1@acme.io".into(),
            email: ParsedEmail {
                from: Some(Address {
                    email: "ali@acme.io".into(),
                    name: Some("Ali Gupta".into()),
                }),
                text: Some("full\n> quoted".into()),
                stripped_text: Some("full".into()),
                attachments: vec![
                    attachment(Some("q.pdf"), "aa"),
                    attachment(Some("q.pdf"), "aa"),
                    attachment(None, "bb"),
                ],
                ..ParsedEmail::default()
            },
            recipients: vec!["deal-42@in.example.com".into()],
            account: Some(AccountMatch {
                account_id: "a1".into(),
                name: Some("Acme".into()),
                domain: Some("acme.io".into()),
                target_account: true,
                matched_by: "domain".into(),
            }),
            new_contact: Some(NewContactProposal {
                email: "Ali@acme.io".into(),
                name: Some("Ali Gupta".into()),
                domain: Some("acme.io".into()),
                account_id: Some("a1".into()),
            }),
            deal_source: Some("recipient".into()),
            ..ResolvedEmail::default()
        },
        ..ScoredLead::default()
    }
}

#[test]
fn an_unknown_sender_becomes_a_contact_with_a_deterministic_id() {
    let plan = WritePlan::from_scored(&lead(), 7);
    let contact = plan.contact.clone().expect("a contact");
    assert!(contact.create);
    assert_eq!(contact.email, "ali@acme.io");
    assert_eq!(contact.contact_id, new_contact_id("ALI@acme.io "));
    assert_eq!(
        contact.contact_id,
        uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, b"mailto:ali@acme.io").to_string()
    );
    assert!(!plan.known_contact);
    assert_eq!(plan.source_offset, 7);
    assert_eq!(plan.received_at.timestamp_millis(), 1_700_000_000_000);
    assert_eq!(
        WritePlan::from_scored(&lead(), 7),
        plan,
        "derivation is pure"
    );
}

#[test]
fn a_known_contact_is_upserted_not_created() {
    let mut scored = lead();
    scored.contact_id = Some("c9".into());
    scored.resolved.contact = Some(ContactMatch {
        contact_id: "c9".into(),
        name: Some("Ali G.".into()),
        account_id: Some("a1".into()),
    });
    let plan = WritePlan::from_scored(&scored, 0);
    let contact = plan.contact.expect("a contact");
    assert!(!contact.create && plan.known_contact);
    assert_eq!(contact.contact_id, "c9");
    assert_eq!(contact.name.as_deref(), Some("Ali G."));
    scored.sender_email = None;
    scored.resolved.new_contact = None;
    let plan = WritePlan::from_scored(&scored, 0);
    assert!(
        plan.contact.is_none() && plan.lead.is_none(),
        "no email, no row keyed by it"
    );
}

#[test]
fn account_deal_activity_lead_and_attachments_are_planned() {
    let plan = WritePlan::from_scored(&lead(), 0);
    let account = plan.account.clone().expect("account");
    assert_eq!(account.target_account, Some(true));
    assert_eq!(account.name.as_deref(), Some("Acme"));
    let deal = plan.deal.clone().expect("deal");
    assert_eq!(
        (deal.deal_id.as_str(), deal.source.as_deref()),
        ("42", Some("recipient"))
    );
    assert_eq!(
        plan.activity.text.as_deref(),
        Some("full"),
        "the stripped text"
    );
    assert_eq!(plan.activity.sender_email.as_deref(), Some("ali@acme.io"));
    assert_eq!(
        plan.activity.auth,
        json!({"spf": null, "dkim": null, "dmarc": null})
    );
    let lead = plan.lead.clone().expect("lead");
    assert_eq!(
        lead.breakdown,
        json!([{"rule_id": "subject-intent", "points": 20, "evidence": "pricing"}])
    );
    assert_eq!((lead.score, lead.status.as_str()), (45, "qualified"));
    assert_eq!(
        plan.attachments.len(),
        2,
        "the repeated (sha256, filename) is one part"
    );
    assert_eq!(plan.attachments[1].filename, "");
    assert_ne!(plan.attachments[0].part, plan.attachments[1].part);
    assert_eq!(plan.attachments[0].part.len(), 16);
    let ops: Vec<String> = plan.operations().into_iter().map(|(op, _)| op).collect();
    assert_eq!(
        ops,
        [
            "upsert-account",
            "create-contact",
            "upsert-deal",
            "insert-activity",
            "insert-attachment",
            "insert-attachment",
            "upsert-lead"
        ]
    );
    let logged = format!("{:?}", plan.operations());
    assert!(!logged.contains('@'), "no addresses: {logged}");
}

#[test]
fn an_account_named_only_by_id_keeps_what_the_row_has() {
    let mut scored = lead();
    scored.resolved.account = None;
    let account = WritePlan::from_scored(&scored, 0).account.expect("account");
    assert_eq!((account.name, account.target_account), (None, None));
}

#[test]
fn ids_too_long_for_a_primary_key_are_bounded_everywhere_they_are_written() {
    let long = "x".repeat(5_000);
    let mut scored = lead();
    scored.deal_id = Some(long.clone());
    scored.account_id = Some(long.clone());
    scored
        .resolved
        .account
        .as_mut()
        .expect("account")
        .account_id = long.clone();
    scored
        .resolved
        .new_contact
        .as_mut()
        .expect("proposal")
        .account_id = Some(long.clone());
    let plan = WritePlan::from_scored(&scored, 0);
    let fitted = super::keys::fit_id(&long);
    assert!(fitted.len() < 200);
    let account = plan.account.expect("account");
    assert_eq!(
        (account.account_id.as_str(), account.target_account),
        (fitted.as_str(), Some(true)),
        "still the resolver's account match"
    );
    let deal = plan.deal.expect("deal");
    assert_eq!(deal.deal_id, fitted);
    assert_eq!(deal.account_id.as_deref(), Some(fitted.as_str()));
    assert_eq!(
        plan.contact.expect("contact").account_id.as_deref(),
        Some(fitted.as_str())
    );
    scored.contact_id = Some(long.clone());
    scored.resolved.new_contact = None;
    let known = WritePlan::from_scored(&scored, 0).contact.expect("contact");
    assert_eq!(
        (known.contact_id.as_str(), known.account_id.as_deref()),
        (fitted.as_str(), Some(fitted.as_str()))
    );
}

#[test]
fn idempotency_keys_are_stable_header_values() {
    assert_eq!(
        idempotency_key("m1@acme.io", "activity"),
        "m1@acme.io:activity"
    );
    assert_eq!(
        idempotency_key("a b%ü", "contact"),
        "a%20b%25%C3%BC:contact"
    );
}

#[test]
fn the_sample_record_survives_avro() {
    // The plan is derived from what the runtime decodes: the typed record round-trips.
    let value = lead().into_avro().expect("to avro");
    assert_eq!(ScoredLead::from_avro(value).expect("from avro"), lead());
}

#[test]
fn attachments_the_tables_cannot_hold_are_named_before_any_statement() {
    let good = AttachmentPlan {
        filename: "quote.pdf".into(),
        content_type: "application/pdf".into(),
        size: 10,
        sha256: "a".repeat(64),
        blob_uri: Some("file:///blobs/aa".into()),
        inline: false,
        part: "p1".into(),
    };
    assert_eq!(good.problem(), None);
    let with = |f: &dyn Fn(&mut AttachmentPlan)| {
        let mut a = good.clone();
        f(&mut a);
        a.problem().expect("a problem")
    };
    assert!(with(&|a| a.sha256 = "not-a-sha256".into()).contains("sha256"));
    assert!(with(&|a| a.sha256 = "A".repeat(64)).contains("sha256"));
    assert!(with(&|a| a.size = -1).contains("negative size"));
    assert!(with(&|a| a.filename = "a\0b.pdf".into()).contains("NUL"));
    assert!(with(&|a| a.blob_uri = Some("file:///\0".into())).contains("NUL"));
}

#[test]
fn the_rules_visibility_keeps_the_text_attachments_and_subject_out_of_the_crm() {
    let shown = |visibility: &str| {
        let l = ScoredLead {
            visibility: visibility.into(),
            ..lead()
        };
        let plan = WritePlan::from_scored(&l, 0);
        let lead_subject = plan.lead.as_ref().and_then(|p| p.subject.clone());
        (
            plan.activity.subject.is_some() && lead_subject.is_some(),
            plan.activity.text.is_some(),
            plan.attachments.len(),
        )
    };
    assert_eq!(shown("full"), (true, true, 2));
    assert_eq!(shown(""), (true, true, 2), "an older record is shown whole");
    assert_eq!(shown("subject"), (true, false, 0));
    assert_eq!(shown("metadata"), (false, false, 0));
}
