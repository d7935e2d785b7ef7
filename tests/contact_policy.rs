//! Who becomes a contact, on the real stack (issue 19):
//!
//! - the resolver proposes a person writing from a company, but not a role address (`info@`)
//!   nor list mail (`List-Id`, `Precedence: bulk`), and counts each refusal by reason; restarted
//!   with `contact_policy = never` it proposes nobody;
//! - the CRM sink with a `never_log` list writes nothing for an email whose sender or a Cc is on
//!   it (no row in any PostgreSQL table) and says `skipped`, reason `never-log`, in crm-results,
//!   while the email next to it is written.

use std::time::Duration;

use mailstream_runtime::AvroRecord;
use mailstream_runtime::records::{Address, ListInfo, ParsedEmail, ResolvedEmail};
use mailstream_tests::crm::{crm_results, produce_leads, scored_lead, sink_log, spawn_sink};
use mailstream_tests::crm_db::{database_url, psql, schema_of, snapshot};
use mailstream_tests::mail::DOMAINS;
use mailstream_tests::pipeline;
use mailstream_tests::{TestEnv, collect, decode_as, free_port, http_get, now_ms, terminate};

/// An email from `from` to our sales address.
fn parsed(id: &str, from: &str) -> ParsedEmail {
    ParsedEmail {
        message_id: id.into(),
        ingest_id: format!("ingest-{id}"),
        received_at: now_ms(),
        envelope_rcpt_to: vec!["sales@in.example.com".into()],
        from: Some(Address {
            email: from.into(),
            name: Some("Some Body".into()),
        }),
        subject: Some(format!("question {id}")),
        ..ParsedEmail::default()
    }
}

async fn produce_parsed(env: &TestEnv, emails: Vec<ParsedEmail>) {
    let mut records = Vec::new();
    for email in emails {
        let key = email.message_id.clone();
        records.push((
            key,
            env.encode("parsed", email.into_avro().expect("avro")).await,
        ));
    }
    env.produce("parsed", records).await;
}

/// `resolver_contacts_refused_total{reason}` of the resolver serving `/metrics` on `port`.
async fn refused(port: u16, reason: &str) -> f64 {
    let (_, body) = http_get(&format!("http://127.0.0.1:{port}/metrics")).await;
    pipeline::metric(
        &body,
        "mailstream_resolver_contacts_refused_total",
        &[("reason", reason)],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_addresses_and_bulk_mail_are_not_proposed_and_policy_never_proposes_nobody() {
    let env = TestEnv::new("contact-policy");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let base = [
        ("MAILSTREAM_RESOLVER_OUR_DOMAINS", DOMAINS),
        ("MAILSTREAM_HTTP_ADDR", addr.as_str()),
    ];
    let mut resolver = env.spawn("resolver", "a", &base);
    let mut bulk = parsed("bulk@lists.test", "dana@lists.test");
    bulk.list = Some(ListInfo {
        list_id: Some("announce.lists.test".into()),
        precedence: Some("bulk".into()),
    });
    produce_parsed(
        &env,
        vec![
            parsed("person@prospect.test", "sam.lee@prospect.test"),
            parsed("role@prospect.test", "Info@Prospect.test"),
            bulk,
        ],
    )
    .await;
    let consumer = env.consumer(&["resolved"]);
    let first = collect(
        &consumer,
        3,
        Duration::from_secs(90),
        Duration::from_secs(1),
    )
    .await;
    let first: Vec<ResolvedEmail> = decode_as(env.registry(), &first, |r: &ResolvedEmail| {
        r.message_id.as_str()
    })
    .await;
    let proposed = |all: &[ResolvedEmail], id: &str| {
        all.iter()
            .find(|r| r.message_id == id)
            .unwrap_or_else(|| panic!("{id} resolved"))
            .new_contact
            .as_ref()
            .map(|p| p.email.clone())
    };
    assert_eq!(first.len(), 3);
    assert_eq!(
        proposed(&first, "person@prospect.test").as_deref(),
        Some("sam.lee@prospect.test"),
        "a person writing from a company is proposed"
    );
    assert_eq!(
        proposed(&first, "role@prospect.test"),
        None,
        "info@ is a role"
    );
    assert_eq!(proposed(&first, "bulk@lists.test"), None, "list mail");
    assert_eq!(refused(port, "role").await, 1.0);
    assert_eq!(refused(port, "bulk").await, 1.0);
    assert_eq!(refused(port, "policy").await, 0.0);
    terminate(&mut resolver, Duration::from_secs(30));

    // The same deployment told to propose nobody.
    let mut never = base.to_vec();
    never.push(("MAILSTREAM_RESOLVER_CONTACT_POLICY", "never"));
    let mut resolver = env.spawn("resolver", "a", &never);
    produce_parsed(
        &env,
        vec![parsed("later@prospect.test", "kim@prospect.test")],
    )
    .await;
    let second = collect(
        &consumer,
        1,
        Duration::from_secs(90),
        Duration::from_secs(1),
    )
    .await;
    let second: Vec<ResolvedEmail> = decode_as(env.registry(), &second, |r: &ResolvedEmail| {
        r.message_id.as_str()
    })
    .await;
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].message_id, "later@prospect.test");
    assert_eq!(second[0].sender_email.as_deref(), Some("kim@prospect.test"));
    assert!(second[0].new_contact.is_none(), "contact_policy = never");
    assert_eq!(refused(port, "policy").await, 1.0);
    terminate(&mut resolver, Duration::from_secs(30));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_never_log_participant_leaves_no_crm_row_and_a_skipped_result() {
    let env = TestEnv::new("never-log");
    let schema = schema_of(&env);
    let url = database_url();
    let mut sink = spawn_sink(
        &env,
        "a",
        free_port(),
        &[
            ("MAILSTREAM_CRM_SINK_DATABASE_URL", url.as_str()),
            ("MAILSTREAM_CRM_SINK_SCHEMA", schema.as_str()),
            (
                "MAILSTREAM_CRM_SINK_NEVER_LOG",
                "@LawFirm.test, ceo@board.test",
            ),
        ],
    );
    let t = now_ms() - 10_000;
    let counsel = scored_lead(
        "nl-1@client.test",
        "counsel@lawfirm.test",
        "acct-law",
        Some("deal-law"),
        t,
    );
    let mut copied = scored_lead(
        "nl-2@client.test",
        "dana@prospect.test",
        "acct-prospect",
        Some("deal-cc"),
        t + 1,
    );
    copied.resolved.email.cc = vec![Address {
        email: "CEO+private@Board.test".into(),
        name: None,
    }];
    let plain = scored_lead(
        "nl-3@client.test",
        "sam@prospect.test",
        "acct-prospect",
        None,
        t + 2,
    );
    produce_leads(&env, &[counsel, copied, plain]).await;
    let results = crm_results(&env, 3, Duration::from_secs(90)).await;
    terminate(&mut sink, Duration::from_secs(30));

    let outcome = |id: &str| {
        results
            .iter()
            .find(|r| r.message_id == id)
            .map(|r| (r.outcome.clone(), r.reason.clone()))
            .unwrap_or_else(|| panic!("a result for {id}: {results:?}"))
    };
    let never_logged = ("skipped".to_string(), Some("never-log".to_string()));
    assert_eq!(
        outcome("nl-1@client.test"),
        never_logged,
        "the sender's domain"
    );
    assert_eq!(
        outcome("nl-2@client.test"),
        never_logged,
        "an address in Cc"
    );
    assert_eq!(outcome("nl-3@client.test"), ("written".to_string(), None));
    assert_eq!(results.len(), 3, "{results:?}");

    assert_eq!(
        psql(&format!(
            "SELECT string_agg(message_id, ',') FROM {schema}.email_activities"
        )),
        "nl-3@client.test"
    );
    let rows = format!("{:?}", snapshot(&schema));
    for trace in [
        "lawfirm.test",
        "board.test",
        "dana@prospect.test",
        "nl-1@",
        "nl-2@",
        "deal-law",
        "deal-cc",
        "acct-law",
    ] {
        assert!(!rows.contains(trace), "`{trace}` in the CRM: {rows}");
    }
    let log = sink_log(&env, "a");
    assert!(
        !log.contains("lawfirm") && !log.contains("board.test"),
        "the sink logged a never-log address: {log}"
    );
}
