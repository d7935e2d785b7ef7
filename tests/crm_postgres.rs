//! The CRM sink's PostgreSQL backend (`mailstream run crm-sink`) against the real stack: Kafka,
//! the schema registry and PostgreSQL from `dev/up`.
//!
//! - Every message lands once (duplicates, a re-score, an excluded email, attachments, one of
//!   which fails into a follow-up); resetting the group to the earliest offset and running
//!   again changes no row, not even its `xmin`.
//! - A message the database rejects is dead-lettered and the rest of its batch committed.
//! - A database outage (the connections cut for `MAILSTREAM_PG_OUTAGE_SECS`, 8 s by default;
//!   600 for the ten minutes) blocks the sink: `/readyz` not ready and
//!   `crm_sink_blocked{cause="unavailable"}` while it lasts, nothing written or dead-lettered,
//!   the process alive throughout; afterwards it recovers on its own and loses nothing.
//! - Dry run: results say `dry-run`, and the database is not touched.
//! - Bounces, opt-outs and departures change the contacts they name; leads keep the scorer's
//!   routing; a replay changes neither.
//! - Time to first response: an email of ours answers the earlier inbound emails of its thread
//!   once, in whichever order the sink meets them; a replay times nothing again.
//! - Throughput (ignored: a measurement, not a check).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use mailstream_runtime::AvroRecord;
use mailstream_runtime::blob::sha256_hex;
use mailstream_runtime::records::{
    Address, AutoReply, Bounce, BounceRecipient, Contact, CrmResult, Meeting, Routing, RuleHit,
    ScoredLead,
};
use mailstream_tests::crm::{
    Cut, crm_results, known_sender, produce_leads, produce_leads_in_order, reply_lead, sink_log,
    sink_metric, sink_metric_until, sink_metric_within, sink_readyz_until, spawn_sink,
    with_attachment,
};
use mailstream_tests::crm_db::{TABLES, database_url, psql, psql_rows, schema_of, snapshot};
use mailstream_tests::{TestEnv, collect, decode, env_or, free_port, http_get, now_ms, terminate};
use serde_json::{Value, json};

/// The sink's gauge of what blocks it, by cause.
const BLOCKED: &str = "mailstream_crm_sink_blocked";

/// The crm-results, with their message ids.
async fn results(env: &TestEnv, want: usize) -> Vec<(String, CrmResult)> {
    crm_results(env, want, Duration::from_secs(120))
        .await
        .into_iter()
        .map(|r| (r.message_id.clone(), r))
        .collect()
}

fn count(results: &[(String, CrmResult)], outcome: &str) -> usize {
    results.iter().filter(|(_, r)| r.outcome == outcome).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_writes_each_message_once_and_a_replay_changes_no_row() {
    let env = TestEnv::new("crmpg");
    let schema = schema_of(&env);
    let url = database_url();
    let settings = [
        ("MAILSTREAM_CRM_SINK_DATABASE_URL", url.as_str()),
        ("MAILSTREAM_CRM_SINK_SCHEMA", schema.as_str()),
    ];
    let t = now_ms() - 10_000;
    let mut m1 = with_attachment(
        reply_lead("pg-1@client.test", "sam@client.test", t),
        Some("quote.pdf"),
        &sha256_hex(b"a"),
    );
    m1 = with_attachment(m1, None, &sha256_hex(b"b"));
    m1.deal_id = Some("deal-42".into());
    m1.resolved.deal_id = Some("deal-42".into());
    m1.resolved.deal_source = Some("recipient".into());
    (m1.score, m1.status) = (45, "qualified".into());
    let m2 = known_sender(
        reply_lead("pg-2@client.test", "kim@client.test", t + 1),
        "c-known",
    );
    let mut m3 = reply_lead("pg-3@client.test", "sam@client.test", t + 2);
    (m3.score, m3.status) = (5, "nurture".into());
    // An invitation: its meeting lands on the activity.
    m3.resolved.email.meeting = Some(Meeting {
        method: "REQUEST".into(),
        summary: Some("Demo".into()),
        start: Some("20261210T150000Z".into()),
        starts_at: Some(1_796_914_800_000),
        ..Meeting::default()
    });
    let m4 = with_attachment(
        with_attachment(
            reply_lead("pg-4@other.test", "lee@other.test", t + 3),
            Some("ok.pdf"),
            &sha256_hex(b"c"),
        ),
        Some("bad.pdf"),
        "not-a-sha256",
    );
    let mut m5 = reply_lead("pg-5@client.test", "mailer-daemon@client.test", t + 4);
    (m5.score, m5.status, m5.tags) = (0, "excluded".into(), vec!["bounce".into()]);
    let m6 = known_sender(
        reply_lead("pg-6@client.test", "kim@client.test", t + 5),
        "c-known",
    );
    let mut m6_rescored = m6.clone();
    (m6_rescored.score, m6_rescored.status) = (30, "review".into());
    m6_rescored.breakdown.push(RuleHit {
        rule_id: "auth-pass".into(),
        points: 5,
        evidence: "spf and dkim pass".into(),
    });
    // Two waves force the order partitions could deliver anyway: the newest emails of account
    // acct-1 (m6, client.test) before an older one with other values (m4, other.test).
    let newest = vec![m2, m6, m6_rescored];
    let rest = vec![m1.clone(), m3, m4, m5, m1.clone()];
    let records: Vec<ScoredLead> = newest.iter().chain(&rest).cloned().collect();

    let port = free_port();
    let mut run = spawn_sink(&env, "a", port, &settings);
    produce_leads(&env, &newest).await;
    assert_eq!(results(&env, newest.len()).await.len(), newest.len());
    produce_leads(&env, &rest).await;
    let first = results(&env, records.len()).await;
    assert_eq!(
        first.len(),
        records.len(),
        "one result per record: {first:?}"
    );
    assert_eq!(
        (
            count(&first, "written"),
            count(&first, "unchanged"),
            count(&first, "skipped")
        ),
        (6, 1, 1),
        "{first:?}"
    );
    type Labels = &'static [(&'static str, &'static str)];
    let metrics: [(&str, Labels, f64); 8] = [
        ("mailstream_crm_activities_total", &[], 5.0),
        ("mailstream_crm_unique_messages_total", &[], 5.0),
        ("mailstream_crm_write_latency_seconds_count", &[], 5.0),
        (
            "mailstream_crm_writes_total",
            &[("outcome", "written")],
            6.0,
        ),
        (
            "mailstream_crm_contact_coverage_total",
            &[("known", "true")],
            2.0,
        ),
        (
            "mailstream_crm_contact_coverage_total",
            &[("known", "false")],
            3.0,
        ),
        (
            "mailstream_crm_attachments_total",
            &[("outcome", "ok")],
            3.0,
        ),
        (
            "mailstream_crm_attachments_total",
            &[("outcome", "failed")],
            1.0,
        ),
    ];
    for (name, labels, want) in metrics {
        assert_eq!(
            sink_metric_until(port, name, labels, want).await,
            want,
            "{name} {labels:?}"
        );
    }
    terminate(&mut run, Duration::from_secs(30));

    let by_id: HashMap<&str, &CrmResult> = first.iter().map(|(k, r)| (k.as_str(), r)).collect();
    // UUIDv5 of mailto:<email> (the derivation is unit-tested in the crate): same on a replay.
    let sam_id = by_id["pg-1@client.test"]
        .contact_id
        .clone()
        .expect("contact id");
    assert_eq!(
        (sam_id.len(), &sam_id[14..15]),
        (36, "5"),
        "a UUIDv5: {sam_id}"
    );
    assert_eq!(
        by_id["pg-1@client.test"].contact_id.as_deref(),
        Some(sam_id.as_str())
    );
    assert_eq!(
        by_id["pg-3@client.test"].contact_id.as_deref(),
        Some(sam_id.as_str())
    );
    assert_eq!(
        [&by_id["pg-1@client.test"], &by_id["pg-3@client.test"]]
            .iter()
            .filter(|r| r.contact_created)
            .count(),
        1,
        "the contact was created by one of the sender's two emails"
    );
    assert_eq!(
        by_id["pg-2@client.test"].contact_id.as_deref(),
        Some("c-known")
    );
    let m4 = by_id["pg-4@other.test"];
    assert_eq!(
        (
            m4.attachments_written,
            m4.attachments_failed,
            m4.follow_ups.len()
        ),
        (1, 1, 1)
    );
    assert_eq!(by_id["pg-5@client.test"].outcome, "skipped");

    let per_message = psql_rows(&format!(
        "SELECT message_id, count(*) FROM {schema}.email_activities GROUP BY 1"
    ));
    assert_eq!(
        per_message.len(),
        5,
        "an activity per written message, none for the excluded"
    );
    assert!(
        per_message.iter().all(|r| r[1] == "1"),
        "one activity per message_id: {per_message:?}"
    );
    let contacts = psql_rows(&format!(
        "SELECT email, contact_id, created_by_message_id IS NULL FROM {schema}.contacts ORDER BY email"
    ));
    assert_eq!(contacts.len(), 3, "{contacts:?}");
    assert_eq!(contacts[0], ["kim@client.test", "c-known", "t"]);
    assert_eq!(contacts[2][..2], ["sam@client.test", sam_id.as_str()]);
    let lead_row = psql_rows(&format!(
        "SELECT score, status FROM {schema}.leads WHERE message_id = 'pg-6@client.test'"
    ));
    assert_eq!(lead_row, [["30", "review"]], "the later record wins");
    let breakdown: Value = serde_json::from_str(&psql(&format!(
        "SELECT breakdown::text FROM {schema}.leads WHERE message_id = 'pg-6@client.test'"
    )))
    .expect("JSON");
    assert_eq!(
        breakdown[1],
        json!({"rule_id": "auth-pass", "points": 5, "evidence": "spf and dkim pass"})
    );
    let attachments = psql(&format!(
        "SELECT count(*) FROM {schema}.attachments WHERE message_id = 'pg-1@client.test'"
    ));
    assert_eq!(attachments, "2");
    let meetings = psql_rows(&format!(
        "SELECT message_id, meeting->>'method', meeting->>'summary', meeting->>'start' \
         FROM {schema}.email_activities WHERE meeting IS NOT NULL"
    ));
    assert_eq!(
        meetings,
        [["pg-3@client.test", "REQUEST", "Demo", "20261210T150000Z"]]
    );
    let follow_ups = psql_rows(&format!("SELECT message_id, kind FROM {schema}.follow_ups"));
    assert_eq!(follow_ups, [["pg-4@other.test", "attachment"]]);
    let deal = psql_rows(&format!(
        "SELECT account_id FROM {schema}.deals WHERE deal_id = 'deal-42'"
    ));
    assert_eq!(deal, [["acct-1"]], "the deal");
    let account = psql_rows(&format!(
        "SELECT domain, updated_by FROM {schema}.accounts WHERE account_id = 'acct-1'"
    ));
    assert_eq!(
        account,
        [["client.test", "pg-6@client.test"]],
        "the newest email's values, though an older one came later"
    );
    let before = snapshot(&schema);

    // Every email that proposed a new contact feeds it back (sam: pg-1 twice and pg-3; lee:
    // pg-4), with the id the CRM holds; the compacted topic keeps one per email.
    let fed_back = collect(
        &env.consumer(&["contacts"]),
        4,
        Duration::from_secs(30),
        Duration::from_secs(1),
    )
    .await;
    assert_eq!(
        fed_back.len(),
        4,
        "each email that proposed a contact fed it back"
    );
    for record in &fed_back {
        let value = decode(env.registry(), record.payload.as_deref().expect("payload")).await;
        let contact = Contact::from_avro(value).expect("a Contact");
        assert_eq!(
            record.key.as_deref(),
            Some(contact.email.as_str()),
            "keyed by email"
        );
        let row = contacts
            .iter()
            .find(|c| c[0] == contact.email)
            .expect("in the table");
        assert_eq!(contact.contact_id, row[1], "the CRM's id");
    }
    assert_eq!(
        fed_back
            .iter()
            .filter(|r| r.key.as_deref() == Some("sam@client.test"))
            .count(),
        3
    );

    env.reset_to_earliest("crm-sink");
    let port = free_port();
    let mut replay = spawn_sink(&env, "a", port, &settings);
    let all = results(&env, 2 * records.len()).await;
    assert_eq!(
        all.len(),
        2 * records.len(),
        "the replay wrote a result per record"
    );
    let unchanged = sink_metric_until(
        port,
        "mailstream_crm_writes_total",
        &[("outcome", "unchanged")],
        7.0,
    )
    .await;
    let activities = sink_metric(port, "mailstream_crm_activities_total", &[]).await;
    let unique = sink_metric(port, "mailstream_crm_unique_messages_total", &[]).await;
    terminate(&mut replay, Duration::from_secs(30));
    let after = snapshot(&schema);
    for table in TABLES {
        assert_eq!(
            before[*table], after[*table],
            "{table}: no row rewritten (xmin and values identical)"
        );
    }
    let outcomes: Vec<(&str, &str)> = all
        .iter()
        .map(|(k, r)| (k.as_str(), r.outcome.as_str()))
        .collect();
    assert_eq!(
        (
            count(&all, "written"),
            count(&all, "unchanged"),
            count(&all, "skipped")
        ),
        (6, 8, 2),
        "the replay changed nothing: {outcomes:?}"
    );
    assert_eq!((unchanged, activities, unique), (7.0, 0.0, 0.0));
    let log = sink_log(&env, "a");
    assert!(!log.contains("sam@client.test") && !log.contains("kim@client.test"));
}

/// What emails say about contacts lands on the contacts (a hard bounce marks the address as
/// bouncing, a soft one and a delay change nothing; an unsubscribe request and a complaint opt
/// the contact out; a left-the-company answer makes the contact inactive and names the
/// replacement), whether or not the email itself is written; the scorer's routing lands on
/// the lead; a replay changes no row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contacts_learn_from_bounces_opt_outs_and_departures_and_leads_keep_their_routing() {
    let env = TestEnv::new("crmsig");
    let schema = schema_of(&env);
    let url = database_url();
    let settings = [
        ("MAILSTREAM_CRM_SINK_DATABASE_URL", url.as_str()),
        ("MAILSTREAM_CRM_SINK_SCHEMA", schema.as_str()),
    ];
    let t = now_ms() - 10_000;
    // First the people, as leads: the sink creates their contacts.
    let mut kim = reply_lead("sig-1@client.test", "kim@client.test", t);
    kim.routing = Some(Routing {
        language: Some("de".into()),
        country: Some("de".into()),
        intent: "sales".into(),
        intent_rule: Some("buying-signal".into()),
        intent_evidence: Some("subject mentions \"angebot\"".into()),
        team: Some("dach".into()),
        route: Some("german".into()),
        owner: Some("anna@in.example.com".into()),
    });
    let people = [
        kim,
        reply_lead("sig-2@client.test", "sam@client.test", t + 1),
        reply_lead("sig-3@client.test", "lee@client.test", t + 2),
        reply_lead("sig-4@client.test", "ada@client.test", t + 3),
    ];
    // Then what mail says about them: all excluded, none written as an email.
    let excluded = |id: &str, sender: &str, at: i64| {
        let mut l = reply_lead(id, sender, at);
        (l.score, l.status, l.routing) = (0, "excluded".into(), None);
        l
    };
    let recipient = |address: &str, class: &str| BounceRecipient {
        address: address.into(),
        class: class.into(),
        reason: Some(
            if class == Bounce::HARD {
                "user-unknown"
            } else {
                "mailbox-full"
            }
            .into(),
        ),
        ..BounceRecipient::default()
    };
    let mut bounce = excluded("sig-5@client.test", "mailer-daemon@mx.client.test", t + 4);
    bounce.resolved.email.bounce = Some(Bounce {
        class: Bounce::HARD.into(),
        recipients: vec![
            recipient("kim@client.test", Bounce::HARD),
            recipient("sam@client.test", Bounce::SOFT),
            recipient("ada@client.test", Bounce::DELAYED),
        ],
        ..Bounce::default()
    });
    let answer = |id: &str, sender: &str, at: i64, class: &str, replacement: Option<&str>| {
        let mut l = excluded(id, sender, at);
        l.resolved.email.auto_reply = Some(AutoReply {
            class: class.into(),
            replacement: replacement.map(|r| Address {
                email: r.into(),
                name: None,
            }),
            ..AutoReply::default()
        });
        l
    };
    let signals = [
        bounce,
        answer(
            "sig-6@client.test",
            "sam@client.test",
            t + 5,
            AutoReply::UNSUBSCRIBE,
            None,
        ),
        answer(
            "sig-7@client.test",
            "lee@client.test",
            t + 6,
            AutoReply::LEFT_COMPANY,
            Some("max@client.test"),
        ),
        answer(
            "sig-8@client.test",
            "ada@client.test",
            t + 7,
            AutoReply::OUT_OF_OFFICE,
            None,
        ),
    ];

    let port = free_port();
    let mut run = spawn_sink(&env, "a", port, &settings);
    produce_leads(&env, &people).await;
    assert_eq!(results(&env, people.len()).await.len(), people.len());
    produce_leads(&env, &signals).await;
    let all = results(&env, people.len() + signals.len()).await;
    assert_eq!(
        count(&all, "skipped"),
        signals.len(),
        "the signals' emails are not written"
    );
    let changed = |signal: &'static str| async move {
        sink_metric(
            port,
            "mailstream_crm_contact_signals_total",
            &[("signal", signal)],
        )
        .await
    };
    let counted = (
        changed("bouncing").await,
        changed("opted-out").await,
        changed("left").await,
    );
    terminate(&mut run, Duration::from_secs(30));
    assert_eq!(
        counted,
        (1.0, 1.0, 1.0),
        "one contact changed by each signal"
    );

    let contacts = psql_rows(&format!(
        "SELECT email, coalesce(email_status, '-'), coalesce(bounce_reason, '-'), \
         coalesce(opt_out_reason, '-'), active, coalesce(replacement_email, '-') \
         FROM {schema}.contacts ORDER BY email"
    ));
    assert_eq!(
        contacts,
        [
            ["ada@client.test", "-", "-", "-", "t", "-"],
            ["kim@client.test", "bouncing", "user-unknown", "-", "t", "-"],
            ["lee@client.test", "-", "-", "-", "f", "max@client.test"],
            ["sam@client.test", "-", "-", "unsubscribe", "t", "-"],
        ],
        "a soft bounce, a delay and an out-of-office change nothing"
    );
    let routed = psql_rows(&format!(
        "SELECT intent, language, team, owner FROM {schema}.leads WHERE message_id = 'sig-1@client.test'"
    ));
    assert_eq!(routed, [["sales", "de", "dach", "anna@in.example.com"]]);

    let before = snapshot(&schema);
    env.reset_to_earliest("crm-sink");
    let port = free_port();
    let mut replay = spawn_sink(&env, "a", port, &settings);
    let again = results(&env, 2 * (people.len() + signals.len())).await;
    assert_eq!(again.len(), 2 * (people.len() + signals.len()));
    let replayed = (
        sink_metric(
            port,
            "mailstream_crm_contact_signals_total",
            &[("signal", "bouncing")],
        )
        .await,
        sink_metric(
            port,
            "mailstream_crm_contact_signals_total",
            &[("signal", "opted-out")],
        )
        .await,
    );
    terminate(&mut replay, Duration::from_secs(30));
    assert_eq!(replayed, (0.0, 0.0), "a replay changes no contact");
    let after = snapshot(&schema);
    for table in TABLES {
        assert_eq!(before[*table], after[*table], "{table}: no row rewritten");
    }
    let log = sink_log(&env, "a");
    assert!(!log.contains("kim@client.test") && !log.contains("lee@client.test"));
}

/// Time to first response (issue 19). Thread A: two inbound emails, then two of our replies
/// (journal copies: `outbound`, excluded): the first reply answers both, the second nothing.
/// Thread B: our reply reaches the sink before the inbound email it answers (they came through
/// different partitions); the inbound activity is written already answered. A replay of
/// everything times nothing again and rewrites no row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_responses_are_timed_once_whatever_the_order() {
    let env = TestEnv::new("crmttfr");
    let schema = schema_of(&env);
    let url = database_url();
    let settings = [
        ("MAILSTREAM_CRM_SINK_DATABASE_URL", url.as_str()),
        ("MAILSTREAM_CRM_SINK_SCHEMA", schema.as_str()),
    ];
    let t = now_ms() - 3_600_000;
    let minute = 60_000;
    let inbound = |id: &str, thread: &str, at: i64| {
        let mut l = reply_lead(id, "kim@client.test", at);
        l.thread_id = thread.into();
        l.resolved.thread_id = thread.into();
        l
    };
    let ours = |id: &str, thread: &str, at: i64| {
        let mut l = inbound(id, thread, at);
        (l.score, l.status, l.routing, l.breakdown) = (0, "excluded".into(), None, Vec::new());
        l.tags = vec!["outbound".into()];
        l.sender_email = Some("dana@in.example.com".into());
        let r = &mut l.resolved;
        r.outbound = true;
        r.sender_email = Some("dana@in.example.com".into());
        r.new_contact = None;
        l
    };
    let stages = [
        vec![
            inbound("a1@client.test", "a1@client.test", t),
            inbound("a2@client.test", "a1@client.test", t + minute),
        ],
        vec![ours("r1@in.example.com", "a1@client.test", t + 2 * minute)],
        vec![ours("r2@in.example.com", "a1@client.test", t + 3 * minute)],
        vec![ours("rb@in.example.com", "b1@client.test", t + 5 * minute)],
        vec![inbound("b1@client.test", "b1@client.test", t + 4 * minute)],
    ];
    const COUNT: &str = "mailstream_crm_first_response_seconds_count";
    const SUM: &str = "mailstream_crm_first_response_seconds_sum";
    let port = free_port();
    let mut run = spawn_sink(&env, "a", port, &settings);
    let mut sent = 0;
    for stage in &stages {
        produce_leads(&env, stage).await;
        sent += stage.len();
        assert_eq!(results(&env, sent).await.len(), sent);
    }
    let counted = sink_metric_until(port, COUNT, &[], 3.0).await;
    let waited = sink_metric(port, SUM, &[]).await;
    terminate(&mut run, Duration::from_secs(30));
    assert_eq!(counted, 3.0, "a1, a2 and b1 answered, each once");
    assert_eq!(
        waited,
        120.0 + 60.0 + 60.0,
        "r1 − a1, r1 − a2, rb − b1 in seconds"
    );
    let answered = psql_rows(&format!(
        "SELECT message_id, coalesce(extract(epoch FROM first_response_at - received_at)::text, '-') \
         FROM {schema}.email_activities ORDER BY message_id"
    ));
    let seconds = |id: &str, s: &str| [id.to_string(), s.to_string()];
    assert_eq!(
        answered,
        [
            seconds("a1@client.test", "120.000000"),
            seconds("a2@client.test", "60.000000"),
            seconds("b1@client.test", "60.000000"),
        ],
        "our replies are not written as activities (excluded), and answer the inbound ones"
    );

    let before = snapshot(&schema);
    env.reset_to_earliest("crm-sink");
    let port = free_port();
    let mut replay = spawn_sink(&env, "a", port, &settings);
    assert_eq!(results(&env, 2 * sent).await.len(), 2 * sent);
    let again = sink_metric(port, COUNT, &[]).await;
    terminate(&mut replay, Duration::from_secs(30));
    assert_eq!(again, 0.0, "a replay answers nothing again");
    let after = snapshot(&schema);
    for table in TABLES {
        assert_eq!(before[*table], after[*table], "{table}: no row rewritten");
    }
}

/// PostgreSQL writes a whole batch in one database transaction, and any failed statement aborts
/// it: a message the database rejects (a NUL byte, which PostgreSQL text cannot hold) after
/// others of its batch were written must go to the dead-letter topic while the messages before
/// it (lost with the transaction; the batch is read again) and after it are committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_dead_letters_a_rejected_message_and_keeps_the_rest_of_its_batch() {
    let env = TestEnv::new("crmpgpoison");
    let schema = schema_of(&env);
    let url = database_url();
    let t = now_ms() - 10_000;
    let mut leads: Vec<ScoredLead> = (1..=5)
        .map(|i| {
            reply_lead(
                &format!("batch-{i}@client.test"),
                &format!("s{i}@client.test"),
                t + i,
            )
        })
        .collect();
    leads[2].subject = Some("Pricing\u{0}question".into());
    leads[2].resolved.email.subject = leads[2].subject.clone();
    // In order on one partition, all of it before the sink starts, and a batch stays open for
    // 2 s: the five are one batch, the rejected message third.
    produce_leads_in_order(&env, &leads).await;
    let port = free_port();
    let mut run = spawn_sink(
        &env,
        "a",
        port,
        &[
            ("MAILSTREAM_CRM_SINK_DATABASE_URL", url.as_str()),
            ("MAILSTREAM_CRM_SINK_SCHEMA", schema.as_str()),
            ("MAILSTREAM_BATCH_MAX_MS", "2000"),
            ("MAILSTREAM_BATCH_IDLE_MS", "0"),
            // Fewer attempts, so a call still fits the transaction with the longer batch.
            ("MAILSTREAM_CRM_SINK_MAX_ATTEMPTS", "3"),
        ],
    );
    let seen = results(&env, 4).await;
    let dlq = collect(
        &env.consumer(&["scored.dlq"]),
        1,
        Duration::from_secs(60),
        Duration::from_secs(2),
    )
    .await;
    terminate(&mut run, Duration::from_secs(30));

    let kept = [
        "batch-1@client.test",
        "batch-2@client.test",
        "batch-4@client.test",
        "batch-5@client.test",
    ];
    let mut keys: Vec<&str> = seen.iter().map(|(k, _)| k.as_str()).collect();
    keys.sort();
    assert_eq!(keys, kept);
    assert!(seen.iter().all(|(_, r)| r.outcome == "written"), "{seen:?}");
    let dead: Vec<&str> = dlq.iter().filter_map(|r| r.key.as_deref()).collect();
    assert_eq!(dead, ["batch-3@client.test"]);
    assert_eq!(dlq[0].headers["mailstream.error.class"], "crm-rejected");
    let written = psql(&format!(
        "SELECT message_id FROM {schema}.email_activities ORDER BY message_id"
    ));
    let written: Vec<&str> = written.lines().collect();
    assert_eq!(
        written, kept,
        "the messages around the rejected one are in the database"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_logs_the_writes_and_makes_none() {
    let env = TestEnv::new("crmdry");
    let schema = schema_of(&env);
    let url = database_url();
    let t = now_ms();
    let mut excluded = reply_lead("dry-3@client.test", "ooo@client.test", t);
    excluded.status = "excluded".into();
    let records = vec![
        reply_lead("dry-1@client.test", "sam@client.test", t),
        known_sender(
            reply_lead("dry-2@client.test", "kim@client.test", t),
            "c-known",
        ),
        excluded,
    ];
    let mut run = spawn_sink(
        &env,
        "a",
        free_port(),
        &[
            ("MAILSTREAM_CRM_SINK_DATABASE_URL", url.as_str()),
            ("MAILSTREAM_CRM_SINK_SCHEMA", schema.as_str()),
            ("MAILSTREAM_CRM_SINK_DRY_RUN", "true"),
        ],
    );
    produce_leads(&env, &records).await;
    let seen = results(&env, 3).await;
    terminate(&mut run, Duration::from_secs(30));
    assert_eq!(
        (count(&seen, "dry-run"), count(&seen, "skipped")),
        (2, 1),
        "{seen:?}"
    );
    let planned = seen
        .iter()
        .find(|(k, _)| k == "dry-1@client.test")
        .map(|(_, r)| r)
        .expect("dry-1");
    assert!(planned.contact_created && planned.activity_id.is_none());
    let schemas = psql(&format!(
        "SELECT count(*) FROM information_schema.schemata WHERE schema_name = '{schema}'"
    ));
    assert_eq!(
        schemas, "0",
        "a dry run creates nothing, not even the schema"
    );
    let log = sink_log(&env, "a");
    assert!(log.contains("dry run: would write"), "{log}");
    assert!(log.contains("insert-activity") && log.contains("dry-1@client.test"));
    assert!(!log.contains("sam@client.test"), "no addresses in the logs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_stalls_the_sink_and_loses_nothing() {
    let env = TestEnv::new("crmdown");
    let schema = schema_of(&env);
    let config: tokio_postgres::Config = database_url().parse().expect("database URL");
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        _ => "127.0.0.1".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let proxy = Cut::start(format!("{host}:{port}")).await.expect("proxy");
    let via_proxy = format!(
        "postgres://{}@{}/{}",
        config.get_user().unwrap_or("mailstream"),
        proxy.addr,
        config.get_dbname().unwrap_or("mailstream")
    );
    let metrics_port = free_port();
    let mut run = spawn_sink(
        &env,
        "a",
        metrics_port,
        &[
            ("MAILSTREAM_CRM_SINK_DATABASE_URL", via_proxy.as_str()),
            ("MAILSTREAM_CRM_SINK_SCHEMA", schema.as_str()),
            ("MAILSTREAM_RETRY_BACKOFF_MAX_MS", "1000"),
            ("MAILSTREAM_STALL_TIMEOUT_MS", "2000"),
        ],
    );
    let outage = Duration::from_secs(env_or("MAILSTREAM_PG_OUTAGE_SECS", 8));
    let t = now_ms();
    let batch = |from: usize| -> Vec<ScoredLead> {
        (from..from + 3)
            .map(|i| {
                reply_lead(
                    &format!("down-{i}@client.test"),
                    &format!("s{i}@client.test"),
                    t,
                )
            })
            .collect()
    };
    produce_leads(&env, &batch(0)).await;
    assert_eq!(
        results(&env, 3).await.len(),
        3,
        "written while the database is up"
    );

    proxy.cut();
    let cut_at = Instant::now();
    produce_leads(&env, &batch(3)).await;
    let (status, why) = sink_readyz_until(metrics_port, 503, Duration::from_secs(30)).await;
    assert_eq!(status, 503, "not ready while the database is down: {why}");
    let blocked = [("cause", "unavailable")];
    let timeout = Duration::from_secs(10);
    assert_eq!(
        sink_metric_within(metrics_port, BLOCKED, &blocked, 1.0, timeout).await,
        1.0
    );
    while cut_at.elapsed() < outage {
        let exited = run.try_wait().expect("the sink's status");
        assert!(
            exited.is_none(),
            "the sink exited during the outage: {exited:?}"
        );
        tokio::time::sleep((outage - cut_at.elapsed()).min(Duration::from_secs(5))).await;
    }
    let during = collect(
        &env.consumer(&["crm-results"]),
        4,
        Duration::from_secs(1),
        Duration::ZERO,
    )
    .await;
    assert_eq!(
        during.len(),
        3,
        "nothing is written, or dead-lettered, while the database is down"
    );
    proxy.restore();
    let restored = Instant::now();

    let all = results(&env, 6).await;
    let written_after = restored.elapsed();
    let (status, why) = sink_readyz_until(metrics_port, 200, Duration::from_secs(30)).await;
    assert_eq!(status, 200, "ready again: {why}");
    assert_eq!(
        sink_metric_within(metrics_port, BLOCKED, &blocked, 0.0, timeout).await,
        0.0
    );
    println!(
        "database cut off for {:.0} s: the sink stayed up, its backlog written {:.1} s after",
        outage.as_secs_f64(),
        written_after.as_secs_f64()
    );
    let dlq = collect(
        &env.consumer(&["scored.dlq"]),
        1,
        Duration::from_secs(3),
        Duration::ZERO,
    )
    .await;
    let failures = sink_metric(
        metrics_port,
        "mailstream_crm_write_failures_total",
        &[("class", "connection")],
    )
    .await;
    terminate(&mut run, Duration::from_secs(30));
    assert_eq!(
        all.len(),
        6,
        "every record written once the database is back: {all:?}"
    );
    assert!(all.iter().all(|(_, r)| r.outcome == "written"));
    assert!(dlq.is_empty(), "an outage is not a poison record");
    assert!(failures >= 1.0, "the outage was counted");
    let activities = psql(&format!("SELECT count(*) FROM {schema}.email_activities"));
    assert_eq!(activities, "6");
    assert!(
        sink_log(&env, "a").contains("transient failure"),
        "the runtime retried the batch"
    );
}

/// Throughput of the PostgreSQL backend (not part of the suite: `cargo test -p mailstream-tests
/// --test crm_postgres -- --ignored throughput --nocapture`). 2,000 leads from distinct senders,
/// each with an attachment: a new contact, an activity, an attachment and a lead per record.
/// The baseline, in the same run: the same records through the sink in a dry run (everything
/// but the database), so the ratio says what the writes cost on this machine, whatever its load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check"]
async fn postgres_throughput() {
    let n = 2_000;
    let t = now_ms() - 60_000;
    let records: Vec<ScoredLead> = (0..n)
        .map(|i| {
            with_attachment(
                reply_lead(
                    &format!("bench-{i}@client.test"),
                    &format!("s{i}@client.test"),
                    t + i as i64,
                ),
                Some("a.pdf"),
                &sha256_hex(i.to_string().as_bytes()),
            )
        })
        .collect();
    let url = database_url();
    let dry_env = TestEnv::new("crmbenchdry");
    let dry_schema = schema_of(&dry_env);
    let dry = sink_throughput(
        &dry_env,
        &records,
        &[
            ("MAILSTREAM_CRM_SINK_DATABASE_URL", url.as_str()),
            ("MAILSTREAM_CRM_SINK_SCHEMA", dry_schema.as_str()),
            ("MAILSTREAM_CRM_SINK_DRY_RUN", "true"),
        ],
    )
    .await;
    let env = TestEnv::new("crmbench");
    let schema = schema_of(&env);
    let written = sink_throughput(
        &env,
        &records,
        &[
            ("MAILSTREAM_CRM_SINK_DATABASE_URL", url.as_str()),
            ("MAILSTREAM_CRM_SINK_SCHEMA", schema.as_str()),
        ],
    )
    .await;
    println!(
        "crm-sink postgres: {n} records, {:.0} records/s ({:.2} ms in process per record) = {:.2} of a dry run's {:.0} records/s ({:.2} ms)",
        written.0,
        written.1,
        written.0 / dry.0,
        dry.0,
        dry.1
    );
}

/// Records per second through a sink with `settings` after its first result, and the mean time
/// in `process` per record (ms).
async fn sink_throughput(
    env: &TestEnv,
    records: &[ScoredLead],
    settings: &[(&str, &str)],
) -> (f64, f64) {
    let n = records.len();
    for chunk in records.chunks(500) {
        produce_leads(env, chunk).await;
    }
    let port = free_port();
    let mut run = spawn_sink(env, "a", port, settings);
    let first = collect(
        &env.consumer(&["crm-results"]),
        1,
        Duration::from_secs(60),
        Duration::ZERO,
    )
    .await;
    assert_eq!(first.len(), 1);
    let started = Instant::now();
    let all = collect(
        &env.consumer(&["crm-results"]),
        n,
        Duration::from_secs(600),
        Duration::ZERO,
    )
    .await;
    let elapsed = started.elapsed();
    let (_, metrics) = http_get(&format!("http://127.0.0.1:{port}/metrics")).await;
    terminate(&mut run, Duration::from_secs(30));
    assert_eq!(all.len(), n);
    let sample = |name: &str| {
        metrics
            .lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    let per_record = sample("mailstream_processing_seconds_sum")
        / sample("mailstream_processing_seconds_count").max(1.0);
    ((n - 1) as f64 / elapsed.as_secs_f64(), per_record * 1000.0)
}
