use mailstream_runtime::records::{Address, Bounce};

use super::*;
use crate::directory::MemoryDirectory;

fn resolution() -> Resolution {
    Resolution::new(&ResolverSettings {
        our_domains: vec!["in.example.com".into()],
        ..ResolverSettings::default()
    })
    .expect("valid settings")
}

fn directory() -> MemoryDirectory {
    let mut d = MemoryDirectory::default();
    d.contacts.insert(
        "ali@acme.io".into(),
        Contact {
            email: "ali@acme.io".into(),
            contact_id: "c-ali".into(),
            name: Some("Ali Gupta".into()),
            account_id: Some("a-acme".into()),
            updated_at: 0,
        },
    );
    d.accounts.insert(
        "acme.io".into(),
        Account {
            domain: "acme.io".into(),
            account_id: "a-acme".into(),
            name: Some("Acme".into()),
            target_account: true,
            updated_at: 0,
        },
    );
    d.accounts.insert(
        "gmail.com".into(),
        Account {
            domain: "gmail.com".into(),
            account_id: "a-google".into(),
            ..Account::default()
        },
    );
    d.threads.insert(
        "first@acme.io".into(),
        ThreadLink {
            message_id: "first@acme.io".into(),
            thread_id: "first@acme.io".into(),
            deal_id: Some("42".into()),
            contact_id: Some("c-ali".into()),
            linked_at: 0,
            waiting: false,
        },
    );
    d
}

fn email(from: &str) -> ParsedEmail {
    ParsedEmail {
        message_id: "m1@mail.test".into(),
        ingest_id: "i1".into(),
        received_at: 1_000,
        from: Some(Address {
            email: from.into(),
            name: Some("Someone".into()),
        }),
        envelope_rcpt_to: vec!["Sales@in.example.com".into()],
        ..ParsedEmail::default()
    }
}

#[test]
fn a_known_contact_resolves_with_its_account_and_target_flag() {
    for from in ["Ali@Acme.io", "ali+newsletter@acme.io"] {
        let r = resolution().resolve(email(from), &directory());
        let contact = r.contact.expect("contact found");
        assert_eq!(contact.contact_id, "c-ali", "{from}");
        let account = r.account.expect("account");
        assert_eq!(account.account_id, "a-acme");
        assert_eq!(account.matched_by, "contact");
        assert!(account.target_account, "details from the domain's account");
        assert!(r.new_contact.is_none());
    }
}

#[test]
fn an_unknown_sender_at_a_company_maps_by_domain_and_is_proposed() {
    let r = resolution().resolve(email("new.person@acme.io"), &directory());
    assert!(r.contact.is_none());
    assert_eq!(
        r.account.as_ref().map(|a| a.matched_by.as_str()),
        Some("domain")
    );
    let proposal = r.new_contact.expect("proposed");
    assert_eq!(proposal.email, "new.person@acme.io");
    assert_eq!(proposal.account_id.as_deref(), Some("a-acme"));
    assert_eq!(proposal.name.as_deref(), Some("Someone"));
}

#[test]
fn free_mail_never_maps_to_an_account() {
    let r = resolution().resolve(email("someone@gmail.com"), &directory());
    assert!(r.free_mail);
    assert!(
        r.account.is_none(),
        "gmail.com is in the accounts table but is free mail"
    );
    assert!(r.new_contact.is_some_and(|p| p.account_id.is_none()));
}

#[test]
fn robots_and_bounces_are_not_proposed_as_contacts() {
    let r = resolution().resolve(email("mailer-daemon@acme.io"), &directory());
    assert!(r.new_contact.is_none());
    let mut bounce = email("postmaster-bot@relay.test");
    bounce.bounce = Some(Bounce::default());
    assert!(
        resolution()
            .resolve(bounce, &directory())
            .new_contact
            .is_none()
    );
}

#[test]
fn recipients_are_ours_only_and_deal_addresses_route() {
    let mut e = email("ali@acme.io");
    e.to = vec![
        Address {
            email: "deal-77@in.example.com".into(),
            name: None,
        },
        Address {
            email: "partner@elsewhere.test".into(),
            name: None,
        },
    ];
    e.cc = vec![Address {
        email: "sales@in.example.com".into(),
        name: None,
    }];
    let r = resolution().resolve(e, &directory());
    assert_eq!(
        r.recipients,
        vec!["deal-77@in.example.com", "sales@in.example.com"]
    );
    assert_eq!(r.deal_id.as_deref(), Some("77"));
    assert_eq!(r.deal_source.as_deref(), Some("recipient"));
}

#[test]
fn a_reply_joins_the_thread_and_deal_of_its_parent() {
    let mut e = email("ali@acme.io");
    e.in_reply_to = Some("unknown@elsewhere.test".into());
    e.references = vec!["first@acme.io".into(), "unknown@elsewhere.test".into()];
    let r = resolution().resolve(e, &directory());
    assert_eq!(r.thread_id, "first@acme.io");
    assert_eq!(r.thread_parent.as_deref(), Some("first@acme.io"));
    assert_eq!(r.deal_id.as_deref(), Some("42"));
    assert_eq!(r.deal_source.as_deref(), Some("thread"));
    let link = thread_link(&r);
    assert_eq!(
        (link.thread_id.as_str(), link.deal_id.as_deref()),
        ("first@acme.io", Some("42"))
    );
}

#[test]
fn our_reply_is_outbound_in_its_thread_and_proposes_no_contact() {
    let mut e = email("Dana@In.Example.com");
    e.in_reply_to = Some("first@acme.io".into());
    e.envelope_rcpt_to = vec!["journal@in.example.com".into()];
    let (r, refusal) = resolution().resolve_explained(e, &directory());
    assert!(r.outbound, "from one of our domains");
    assert_eq!(r.thread_id, "first@acme.io");
    assert_eq!(r.deal_id.as_deref(), Some("42"));
    assert!(r.new_contact.is_none(), "we are not our own contacts");
    assert_eq!(refusal, Some(Refusal::Ours));
    // A customer's email is not.
    let r = resolution().resolve(email("new.person@acme.io"), &directory());
    assert!(!r.outbound);
}

#[test]
fn an_email_with_unknown_parents_starts_the_thread_of_its_oldest_reference() {
    let mut e = email("x@y.test");
    e.references = vec!["root@a.test".into(), "mid@a.test".into()];
    e.in_reply_to = Some("mid@a.test".into());
    let r = resolution().resolve(e, &directory());
    assert_eq!(r.thread_id, "root@a.test");
    assert!(r.thread_parent.is_none() && r.deal_id.is_none());
    let fresh = resolution().resolve(email("x@y.test"), &directory());
    assert_eq!(fresh.thread_id, "m1@mail.test");
}

#[test]
fn a_parent_link_older_than_the_thread_age_does_not_count() {
    let settings = ResolverSettings {
        threads_max_age_days: 1,
        ..ResolverSettings::default()
    };
    let resolution = Resolution::new(&settings).expect("valid settings");
    let day = settings.threads_max_age_ms();
    let reply = |received_at: i64| {
        let mut e = email("ali@acme.io");
        e.received_at = received_at;
        e.in_reply_to = Some("first@acme.io".into());
        e
    };
    // The parent was linked at 0: a day later it still counts, a millisecond more and it does not.
    let in_time = resolution.resolve(reply(day), &directory());
    assert_eq!(in_time.thread_parent.as_deref(), Some("first@acme.io"));
    assert_eq!(in_time.deal_id.as_deref(), Some("42"));
    let too_late = resolution.resolve(reply(day + 1), &directory());
    assert!(too_late.thread_parent.is_none() && too_late.deal_id.is_none());
    assert_eq!(
        too_late.thread_id, "first@acme.io",
        "its own thread, named by its reference"
    );
}

#[test]
fn a_refused_sender_is_not_proposed_and_says_why_but_a_known_one_still_resolves() {
    let (r, refusal) = resolution().resolve_explained(email("info@acme.io"), &directory());
    assert!(r.new_contact.is_none());
    assert_eq!(r.account.map(|a| a.account_id).as_deref(), Some("a-acme"));
    assert_eq!(refusal.map(crate::policy::Refusal::name), Some("role"));

    let never = Resolution::new(&ResolverSettings {
        contact_policy: crate::settings::ContactPolicy::Never,
        ..ResolverSettings::default()
    })
    .expect("valid settings");
    let (r, refusal) = never.resolve_explained(email("new.person@acme.io"), &directory());
    assert!(r.new_contact.is_none());
    assert_eq!(refusal.map(crate::policy::Refusal::name), Some("policy"));
    let (known, refusal) = never.resolve_explained(email("ali@acme.io"), &directory());
    assert!(
        known.contact.is_some() && refusal.is_none(),
        "a known contact is no refusal"
    );
}

#[test]
fn a_forwarded_email_resolves_to_its_original_sender_and_a_form_to_its_person() {
    use mailstream_runtime::records::{FormLead, Forwarded};
    // A colleague forwards a known contact's email: the contact, not the colleague.
    let mut forwarded = email("bob@in.example.com");
    forwarded.forwarded = Some(Forwarded {
        from: Some(Address {
            email: "Ali@Acme.io".into(),
            name: Some("Ali Gupta".into()),
        }),
        forwarder: forwarded.from.clone(),
        format: Forwarded::INLINE.into(),
        depth: 1,
        ..Forwarded::default()
    });
    let r = resolution().resolve(forwarded, &directory());
    assert!(!r.outbound, "forwarded by us, written by the lead");
    assert_eq!(r.sender_email.as_deref(), Some("ali@acme.io"));
    assert_eq!(r.contact.map(|c| c.contact_id).as_deref(), Some("c-ali"));
    let kept = r.email.forwarded.and_then(|f| f.forwarder);
    assert_eq!(kept.map(|a| a.email).as_deref(), Some("bob@in.example.com"));
    // A form notification from a robot: its person is proposed, with the form's name.
    let mut form = email("noreply@acme.io");
    form.form = Some(FormLead {
        provider: "contact-form-7".into(),
        person: Some(Address {
            email: "kim@newco.example".into(),
            name: Some("Kim Lee".into()),
        }),
        ..FormLead::default()
    });
    let r = resolution().resolve(form, &directory());
    assert_eq!(r.sender_email.as_deref(), Some("kim@newco.example"));
    let proposal = r.new_contact.expect("the form's person is proposed");
    assert_eq!(
        (proposal.email.as_str(), proposal.name.as_deref()),
        ("kim@newco.example", Some("Kim Lee"))
    );
}
