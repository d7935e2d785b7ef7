//! End to end on the real stack: the bundled sample emails (dev/samples/) go over SMTP through
//! ingest, parser, resolver, scorer and crm-sink into PostgreSQL; then every processor is
//! rewound to the earliest offset and run again, and no CRM row changes (not even rewritten:
//! the rows' xmin stays the same).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use mailstream_runtime::AvroRecord;
use mailstream_runtime::records::{CrmResult, ScoredLead};
use mailstream_tests::crm_db::{
    SAMPLE_DOMAIN, SmtpToCrm, psql, sample_emails, samples, snapshot, spawn_stream_processors,
};
use mailstream_tests::mail::{smtplib, start, temp_dir};
use mailstream_tests::{Seen, TestEnv, collect, decode, decode_as, output, terminate};

fn stop_all(processors: &mut [Child]) {
    for child in processors {
        terminate(child, Duration::from_secs(30));
    }
}

async fn results(env: &TestEnv, seen: &[Seen]) -> Vec<CrmResult> {
    decode_as(env.registry(), seen, |r: &CrmResult| r.message_id.as_str()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn samples_reach_postgres_over_smtp_and_a_replay_of_every_processor_changes_no_row() {
    let env = TestEnv::new("e2e");
    let schema = format!("e2e_{}", &env.prefix[6..14]);
    for csv in ["contacts.csv", "accounts.csv"] {
        let file = samples().join(csv);
        let out = output(env.mailstream(&["tables", "load", file.to_str().expect("path")]));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let blobs = temp_dir("e2e-blobs");
    let blob_url = format!("file://{}", blobs.display());
    let mut ingest = start(
        &env,
        &blobs,
        &[("MAILSTREAM_INGEST_ACCEPTED_DOMAINS", SAMPLE_DOMAIN)],
    )
    .await;
    let mut pipeline = spawn_stream_processors(&env, &blob_url, &schema);

    let files = sample_emails();
    let (later, first): (Vec<PathBuf>, Vec<PathBuf>) = files
        .iter()
        .cloned()
        .partition(|p| p.to_string_lossy().contains("-reply-joins-"));
    let rcpt = format!("sales@{SAMPLE_DOMAIN}");
    let send = |file: &Path, to: &str| {
        let sent = smtplib(
            ingest.smtp,
            file,
            "sender@client.test",
            "client.test",
            &[to],
        );
        assert!(sent.contains("SENT"), "{}: {sent}", file.display());
    };
    for file in &first {
        send(file, &rcpt);
    }
    send(&first[0], &format!("demo@{SAMPLE_DOMAIN}")); // a second delivery of the first email
    let crm_results = env.consumer(&["crm-results"]);
    // One result per distinct parseable email: all but the not-an-email sample.
    let wave1 = collect(
        &crm_results,
        first.len() - 1,
        Duration::from_secs(120),
        Duration::ZERO,
    )
    .await;
    assert_eq!(
        wave1.len(),
        first.len() - 1,
        "the first wave reached the CRM"
    );
    for file in &later {
        send(file, &rcpt);
    }
    let expected = files.len() - 1;
    let wave2 = collect(
        &crm_results,
        later.len(),
        Duration::from_secs(60),
        Duration::from_secs(3),
    )
    .await;
    let first_pass: Vec<Seen> = wave1.into_iter().chain(wave2).collect();
    assert_eq!(
        first_pass.len(),
        expected,
        "one crm-result per distinct email, no more"
    );

    // What the CRM holds.
    let activities = psql(&format!("SELECT count(*) FROM {schema}.email_activities"));
    let skipped = results(&env, &first_pass)
        .await
        .iter()
        .filter(|r| r.outcome == "skipped")
        .count();
    assert_eq!(
        skipped, 3,
        "out-of-office, bounce and newsletter are not written"
    );
    assert_eq!(
        activities,
        (expected - skipped).to_string(),
        "one activity per distinct email"
    );
    assert_eq!(
        psql(&format!(
            "SELECT count(*) FROM {schema}.email_activities GROUP BY message_id HAVING count(*) > 1"
        )),
        "",
        "no message_id twice"
    );
    assert_eq!(
        psql(&format!(
            "SELECT deal_id FROM {schema}.email_activities WHERE message_id = 'renewal-2003@mail.acme.io'"
        )),
        "42",
        "the later reply joined the deal of its thread"
    );
    assert_eq!(
        psql(&format!(
            "SELECT status FROM {schema}.leads WHERE message_id = 'demo-1001@mail.acme.io'"
        )),
        "qualified"
    );
    assert_eq!(
        psql(&format!("SELECT count(*) FROM {schema}.attachments")),
        "1"
    );
    let dlq = collect(
        &env.consumer(&["raw-email.dlq"]),
        1,
        Duration::from_secs(10),
        Duration::from_secs(1),
    )
    .await;
    assert_eq!(dlq.len(), 1, "the not-an-email sample is dead-lettered");
    assert_eq!(
        dlq[0]
            .headers
            .get("mailstream.error.class")
            .map(String::as_str),
        Some("mime-unparseable")
    );
    let before = snapshot(&schema);

    // The loop closes: the sink created Björn's contact for his RFP (wave 1) and fed it back
    // through the contacts table, so the resolver knows him when his follow-up arrives.
    let bjorn = psql(&format!(
        "SELECT contact_id FROM {schema}.contacts WHERE email = 'bjorn@nordicfreight.se' AND created_by_message_id = 'rfp-3003@nordicfreight.se'"
    ));
    assert!(
        !bjorn.is_empty(),
        "the sink created the RFP sender's contact"
    );
    let scored_first = decode_as(
        env.registry(),
        &collect(
            &env.consumer(&["scored"]),
            expected,
            Duration::from_secs(10),
            Duration::ZERO,
        )
        .await,
        |s: &ScoredLead| s.message_id.as_str(),
    )
    .await;
    let followup = scored_first
        .iter()
        .find(|s| s.message_id == "rfp-3004@nordicfreight.se")
        .expect("the follow-up was scored");
    assert_eq!(
        followup.contact_id.as_deref(),
        Some(bjorn.as_str()),
        "resolved to the contact the sink created"
    );
    assert!(
        followup.resolved.new_contact.is_none(),
        "no second proposal for a known contact"
    );
    assert_eq!(followup.thread_id, "rfp-3003@nordicfreight.se");

    let scored_before = collect(
        &env.consumer(&["scored"]),
        expected,
        Duration::from_secs(10),
        Duration::ZERO,
    )
    .await;

    // Replay: stop every processor, rewind each one to the earliest offset, run them again.
    stop_all(&mut pipeline);
    for processor in ["parser", "resolver", "scorer", "crm-sink"] {
        env.reset_to_earliest(processor);
    }
    let mut pipeline = spawn_stream_processors(&env, &blob_url, &schema);
    // The sink re-reads every scored record, old and re-scored: one more result for each.
    let replayed = collect(
        &crm_results,
        2 * expected,
        Duration::from_secs(120),
        Duration::from_secs(5),
    )
    .await;
    stop_all(&mut pipeline);
    terminate(&mut ingest.child, Duration::from_secs(30));

    assert!(
        replayed.len() >= 2 * expected,
        "the sink replayed: {} results",
        replayed.len()
    );
    for r in results(&env, &replayed).await {
        assert!(
            r.outcome == "unchanged" || r.outcome == "skipped",
            "{}: a replay wrote something ({})",
            r.message_id,
            r.outcome
        );
    }
    assert_eq!(
        snapshot(&schema),
        before,
        "no CRM row changed or was rewritten"
    );

    // The scorer re-scored the same emails to the same records.
    let scored_all = collect(
        &env.consumer(&["scored"]),
        2 * expected,
        Duration::from_secs(10),
        Duration::ZERO,
    )
    .await;
    let mut by_key: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
    for s in &scored_all {
        by_key
            .entry(s.key.clone().unwrap_or_default())
            .or_default()
            .push(s.payload.clone().unwrap_or_default());
    }
    assert_eq!(by_key.len(), scored_before.len());
    for (key, payloads) in &by_key {
        assert!(payloads.len() >= 2, "{key} was re-scored");
        let first =
            ScoredLead::from_avro(decode(env.registry(), &payloads[0]).await).expect("scored");
        for p in &payloads[1..] {
            let again = ScoredLead::from_avro(decode(env.registry(), p).await).expect("scored");
            assert_eq!(again, first, "{key}: the replay scored it the same");
        }
    }
}

/// A reply that reaches the CRM before the email it answers (sent first, over SMTP) is linked
/// there once the parent arrives: its activity gets the parent, and the deal the parent was
/// sent to, as if they had come in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_that_reaches_the_crm_before_its_parent_is_linked_there_when_it_arrives() {
    let env = TestEnv::new("e2e-relink");
    let mut crm = SmtpToCrm::start(&env, &[], &[]).await;
    let schema = crm.schema.clone();
    let parent_id = format!("quote-{}@buyer-relink.example", &env.prefix[13..21]);
    let reply_id = format!("reply-{}@buyer-relink.example", &env.prefix[13..21]);
    let email = |id: &str, headers: &str, subject: &str| {
        format!(
            "From: Ana Buyer <ana@buyer-relink.example>\r\nTo: sales@{SAMPLE_DOMAIN}\r\n\
             Subject: {subject}\r\nMessage-ID: <{id}>\r\n{headers}\
             Date: Mon, 07 Dec 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n\
             Content-Type: text/plain; charset=utf-8\r\n\r\nAbout the fleet quote.\r\n"
        )
    };
    let ana = "ana@buyer-relink.example";
    let results = env.consumer(&["crm-results"]);
    let reply_headers = format!("In-Reply-To: <{parent_id}>\r\nReferences: <{parent_id}>\r\n");
    let sales = format!("sales@{SAMPLE_DOMAIN}");
    crm.send(
        &email(&reply_id, &reply_headers, "Re: Fleet quote"),
        ana,
        &[&sales],
    );
    let first = collect(&results, 1, Duration::from_secs(120), Duration::ZERO).await;
    assert_eq!(first.len(), 1, "the reply reached the CRM");
    let row = |id: &str| {
        psql(&format!(
            "SELECT coalesce(thread_parent, '-') || ' ' || thread_id || ' ' || coalesce(deal_id, '-') \
             FROM {schema}.email_activities WHERE message_id = '{id}'"
        ))
    };
    assert_eq!(row(&reply_id), format!("- {parent_id} -"), "no parent yet");

    let deal = format!("deal-42@{SAMPLE_DOMAIN}");
    crm.send(&email(&parent_id, "", "Fleet quote"), ana, &[&deal]);
    // The parent's result, then the reply's second one (its relinked record).
    let more = collect(
        &results,
        2,
        Duration::from_secs(120),
        Duration::from_secs(2),
    )
    .await;
    crm.stop();
    assert_eq!(more.len(), 2, "the parent and the linked reply");
    assert_eq!(row(&parent_id), format!("- {parent_id} 42"));
    assert_eq!(
        row(&reply_id),
        format!("{parent_id} {parent_id} 42"),
        "the reply is linked to its parent and joins its deal"
    );
    assert_eq!(
        psql(&format!(
            "SELECT count(*) FROM {schema}.email_activities WHERE message_id IN ('{reply_id}', '{parent_id}')"
        )),
        "2",
        "one activity each"
    );
}
