//! The CRM sink (`mailstream run crm-sink`) against the real stack: Kafka, the schema registry and
//! PostgreSQL from `dev/up`, and a local HTTP CRM inside the test that injects faults.
//!
//! - PostgreSQL: every message lands once (duplicates, a re-score, an excluded email, attachments,
//!   one of which fails into a follow-up); resetting the group to the earliest offset and running
//!   again changes no row, not even its `xmin`.
//! - REST: bursts of 429 with `Retry-After` in both forms, 503s, a timeout after the write, slow
//!   answers and 400 for poison records: every non-poison message is accepted exactly once per
//!   operation, the DLQ holds exactly the poison records, crm-results one result per message.
//! - Dry run: results say `dry-run`, and the database is not touched.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use mailstream_runtime::AvroRecord;
use mailstream_runtime::records::{
    Attachment, AuthResults, Contact, ContactMatch, CrmResult, Disposition, RuleHit, ScoredLead,
};
use mailstream_tests::crm::{Cut, crm_results, produce_leads, scored_lead, sink_log, spawn_sink};
use mailstream_tests::crm_db::{TABLES, schema_of};
use mailstream_tests::pipeline;
use mailstream_tests::{TestEnv, collect, decode, free_port, http_get, now_ms, terminate};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const TOKEN: &str = "test-token-s3cret";

fn sha(seed: &str) -> String {
    hex::encode(Sha256::digest(seed.as_bytes()))
}

/// A scored lead from an unknown sender (so the resolver proposed a new contact) at account
/// `acct-1`, with quoted history in its text (the sink writes the stripped text) and passing
/// SPF and DKIM.
fn lead(message_id: &str, sender: &str, received_at: i64) -> ScoredLead {
    let mut l = scored_lead(message_id, sender, "acct-1", None, received_at);
    let email = &mut l.resolved.email;
    email.text = Some("Hello, what does it cost?\n\n> earlier".into());
    email.stripped_text = Some("Hello, what does it cost?".into());
    email.auth = AuthResults {
        spf: Some("pass".into()),
        dkim: Some("pass".into()),
        dmarc: None,
    };
    l
}

/// The same lead from a known contact.
fn known(mut l: ScoredLead, contact_id: &str) -> ScoredLead {
    l.contact_id = Some(contact_id.into());
    l.lead_key = contact_id.into();
    l.resolved.new_contact = None;
    l.resolved.contact = Some(ContactMatch {
        contact_id: contact_id.into(),
        name: Some("Kim Known".into()),
        account_id: Some("acct-1".into()),
    });
    l
}

fn attach(mut l: ScoredLead, name: Option<&str>, sha256: &str) -> ScoredLead {
    l.resolved.email.attachments.push(Attachment {
        filename: name.map(Into::into),
        content_type: "application/pdf".into(),
        sniffed_type: Some("application/pdf".into()),
        size: 1234,
        sha256: sha256.into(),
        disposition: Disposition::Attachment,
        content_id: None,
        blob_uri: Some(format!("file:///blobs/{sha256}")),
        executable: false,
    });
    l
}

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

fn database_url() -> String {
    std::env::var("MAILSTREAM_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://mailstream@127.0.0.1:5433/mailstream".into())
}

async fn pg() -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(&database_url(), tokio_postgres::NoTls)
        .await
        .expect("connect to PostgreSQL (is the stack up? dev/up)");
    tokio::spawn(connection);
    client
}

/// Every row of every CRM table, with the transaction that wrote it (`xmin`).
async fn snapshot(db: &tokio_postgres::Client, schema: &str) -> BTreeMap<String, Vec<String>> {
    let mut tables = BTreeMap::new();
    for table in TABLES {
        let rows = db
            .query(
                &format!(
                    "SELECT xmin::text || ' ' || t::text FROM {schema}.{table} t ORDER BY t::text"
                ),
                &[],
            )
            .await
            .expect("snapshot query");
        tables.insert(
            (*table).to_string(),
            rows.iter().map(|r| r.get(0)).collect(),
        );
    }
    tables
}

/// Resets the sink's consumer group to the earliest offset of `scored` (the group must be
/// empty: retried while the stopped sink's membership lapses).
fn reset_offsets(env: &TestEnv) {
    let tool = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dev/kafka-tool");
    let group = format!("{}mailstream-crm-sink", env.prefix);
    let mut last = String::new();
    for _ in 0..30 {
        let out = Command::new(&tool)
            .args([
                "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
                "--bootstrap-server",
                &env.stack.bootstrap,
                "--group",
                &group,
                "--topic",
                &env.topic("scored"),
                "--reset-offsets",
                "--to-earliest",
                "--execute",
            ])
            .output()
            .expect("run dev/kafka-tool");
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        if out.status.success() && stdout.contains("NEW-OFFSET") {
            return;
        }
        last = format!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
        std::thread::sleep(Duration::from_secs(1));
    }
    panic!("could not reset the offsets of {group}: {last}");
}

/// Metric `name` with `labels` on the sink's `/metrics` (panics when it has no such sample).
async fn metric(port: u16, name: &str, labels: &[(&str, &str)]) -> f64 {
    let (_, body) = http_get(&format!("http://127.0.0.1:{port}/metrics")).await;
    pipeline::metric(&body, name, labels)
}

/// Waits until `/metrics` shows `want` for `name` with `labels` (results commit a moment
/// before the sink counts them), and returns what it shows last.
async fn metric_eventually(port: u16, name: &str, labels: &[(&str, &str)], want: f64) -> f64 {
    let started = Instant::now();
    loop {
        let value = metric(port, name, labels).await;
        if value == want || started.elapsed() > Duration::from_secs(10) {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
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
    let mut m1 = attach(
        lead("pg-1@client.test", "sam@client.test", t),
        Some("quote.pdf"),
        &sha("a"),
    );
    m1 = attach(m1, None, &sha("b"));
    m1.deal_id = Some("deal-42".into());
    m1.resolved.deal_id = Some("deal-42".into());
    m1.resolved.deal_source = Some("recipient".into());
    (m1.score, m1.status) = (45, "qualified".into());
    let m2 = known(
        lead("pg-2@client.test", "kim@client.test", t + 1),
        "c-known",
    );
    let mut m3 = lead("pg-3@client.test", "sam@client.test", t + 2);
    (m3.score, m3.status) = (5, "nurture".into());
    let m4 = attach(
        attach(
            lead("pg-4@other.test", "lee@other.test", t + 3),
            Some("ok.pdf"),
            &sha("c"),
        ),
        Some("bad.pdf"),
        "not-a-sha256",
    );
    let mut m5 = lead("pg-5@client.test", "mailer-daemon@client.test", t + 4);
    (m5.score, m5.status, m5.tags) = (0, "excluded".into(), vec!["bounce".into()]);
    let m6 = known(
        lead("pg-6@client.test", "kim@client.test", t + 5),
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
            metric_eventually(port, name, labels, want).await,
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

    let db = pg().await;
    let per_message = db
        .query(
            &format!("SELECT message_id, count(*) FROM {schema}.email_activities GROUP BY 1"),
            &[],
        )
        .await
        .expect("activities");
    assert_eq!(
        per_message.len(),
        5,
        "an activity per written message, none for the excluded"
    );
    assert!(
        per_message.iter().all(|r| r.get::<_, i64>(1) == 1),
        "one activity per message_id"
    );
    let contacts = db
        .query(&format!("SELECT email, contact_id, created_by_message_id FROM {schema}.contacts ORDER BY email"), &[])
        .await
        .expect("contacts");
    let contacts: Vec<(String, String, Option<String>)> = contacts
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(contacts.len(), 3, "{contacts:?}");
    assert_eq!(
        (
            contacts[0].0.as_str(),
            contacts[0].1.as_str(),
            contacts[0].2.as_deref()
        ),
        ("kim@client.test", "c-known", None)
    );
    assert_eq!(contacts[2].0, "sam@client.test");
    assert_eq!(contacts[2].1, sam_id);
    let lead_row = db
        .query_one(
            &format!("SELECT score, status, breakdown::text FROM {schema}.leads WHERE message_id = 'pg-6@client.test'"),
            &[],
        )
        .await
        .expect("the re-scored lead");
    assert_eq!(
        (lead_row.get::<_, i32>(0), lead_row.get::<_, String>(1)),
        (30, "review".into()),
        "the later record wins"
    );
    let breakdown: Value = serde_json::from_str(lead_row.get(2)).expect("JSON");
    assert_eq!(
        breakdown[1],
        json!({"rule_id": "auth-pass", "points": 5, "evidence": "spf and dkim pass"})
    );
    let attachments = db
        .query_one(
            &format!(
                "SELECT count(*) FROM {schema}.attachments WHERE message_id = 'pg-1@client.test'"
            ),
            &[],
        )
        .await
        .expect("attachments");
    assert_eq!(attachments.get::<_, i64>(0), 2);
    let follow_up = db
        .query_one(
            &format!("SELECT message_id, kind FROM {schema}.follow_ups"),
            &[],
        )
        .await
        .expect("one follow-up");
    assert_eq!(
        (follow_up.get::<_, String>(0), follow_up.get::<_, String>(1)),
        ("pg-4@other.test".into(), "attachment".into())
    );
    let deal = db
        .query_one(
            &format!(
                "SELECT account_id, first_message_id FROM {schema}.deals WHERE deal_id = 'deal-42'"
            ),
            &[],
        )
        .await
        .expect("the deal");
    assert_eq!(deal.get::<_, Option<String>>(0).as_deref(), Some("acct-1"));
    let account = db
        .query_one(
            &format!(
                "SELECT domain, updated_by FROM {schema}.accounts WHERE account_id = 'acct-1'"
            ),
            &[],
        )
        .await
        .expect("the account");
    assert_eq!(
        (account.get::<_, String>(0), account.get::<_, String>(1)),
        ("client.test".into(), "pg-6@client.test".into()),
        "the newest email's values, though an older one came later"
    );
    let before = snapshot(&db, &schema).await;

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
            .find(|c| c.0 == contact.email)
            .expect("in the table");
        assert_eq!(contact.contact_id, row.1, "the CRM's id");
    }
    assert_eq!(
        fed_back
            .iter()
            .filter(|r| r.key.as_deref() == Some("sam@client.test"))
            .count(),
        3
    );

    reset_offsets(&env);
    let port = free_port();
    let mut replay = spawn_sink(&env, "a", port, &settings);
    let all = results(&env, 2 * records.len()).await;
    assert_eq!(
        all.len(),
        2 * records.len(),
        "the replay wrote a result per record"
    );
    let unchanged = metric_eventually(
        port,
        "mailstream_crm_writes_total",
        &[("outcome", "unchanged")],
        7.0,
    )
    .await;
    let activities = metric(port, "mailstream_crm_activities_total", &[]).await;
    let unique = metric(port, "mailstream_crm_unique_messages_total", &[]).await;
    terminate(&mut replay, Duration::from_secs(30));
    let after = snapshot(&db, &schema).await;
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
            lead(
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
    let producer = env.producer();
    let topic = env.topic("scored");
    for l in &leads {
        let payload = env
            .encode("scored", l.clone().into_avro().expect("to avro"))
            .await;
        producer
            .send(
                rdkafka::producer::FutureRecord::to(&topic)
                    .key(&l.message_id)
                    .payload(&payload)
                    .partition(0),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("delivered");
    }
    let port = free_port();
    let mut run = spawn_sink(
        &env,
        "a",
        port,
        &[
            ("MAILSTREAM_CRM_SINK_DATABASE_URL", url.as_str()),
            ("MAILSTREAM_CRM_SINK_SCHEMA", schema.as_str()),
            ("MAILSTREAM_BATCH_MAX_MS", "2000"),
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
    let db = pg().await;
    let rows = db
        .query(
            &format!("SELECT message_id FROM {schema}.email_activities ORDER BY message_id"),
            &[],
        )
        .await
        .expect("activities");
    let written: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
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
    let mut excluded = lead("dry-3@client.test", "ooo@client.test", t);
    excluded.status = "excluded".into();
    let records = vec![
        lead("dry-1@client.test", "sam@client.test", t),
        known(lead("dry-2@client.test", "kim@client.test", t), "c-known"),
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
    let db = pg().await;
    let schemas = db
        .query_one(
            "SELECT count(*) FROM information_schema.schemata WHERE schema_name = $1",
            &[&schema],
        )
        .await
        .expect("schemata");
    assert_eq!(
        schemas.get::<_, i64>(0),
        0,
        "a dry run creates nothing, not even the schema"
    );
    let log = sink_log(&env, "a");
    assert!(log.contains("dry run: would write"), "{log}");
    assert!(log.contains("insert-activity") && log.contains("dry-1@client.test"));
    assert!(!log.contains("sam@client.test"), "no addresses in the logs");
}

/// What the fault-injecting CRM saw and did.
#[derive(Default)]
struct Crm {
    requests: u64,
    /// Attempts per idempotency key, with the time of each.
    attempts: HashMap<String, Vec<Instant>>,
    /// The first successful answer per key, replayed to later calls with the same key.
    stored: HashMap<String, (u16, Value)>,
    /// Writes applied per key (a second one would be a duplicate).
    applied: HashMap<String, u32>,
    /// Activities created per message id.
    activities: HashMap<String, u32>,
    contacts: HashMap<String, String>,
    faults: BTreeMap<&'static str, u32>,
    next_id: u64,
    burst_started: bool,
    burst_left: u32,
}

type Shared = Arc<Mutex<Crm>>;

enum Fault {
    None,
    TooManySeconds,
    TooManyDate,
    Burst,
    Unavailable,
    Timeout,
    Slow,
    Reject,
}

/// The fault script: by markers in the message id (the key's prefix), the operation and the
/// attempt of this key; `burst`: the request falls in a burst of 429s across keys.
fn fault(key: &str, op: &str, attempt: usize, burst: bool) -> Fault {
    if (key.contains("poison") && op == "activity")
        || (key.contains("attfail") && op == "attachment")
    {
        Fault::Reject
    } else if key.contains("r429s") && attempt <= 2 {
        Fault::TooManySeconds
    } else if key.contains("r429d") && attempt == 1 {
        Fault::TooManyDate
    } else if key.contains("r503") && attempt <= 3 {
        Fault::Unavailable
    } else if key.contains("timeout") && op == "activity" && attempt == 1 {
        Fault::Timeout
    } else if key.contains("slow") {
        Fault::Slow
    } else if burst {
        Fault::Burst
    } else {
        Fault::None
    }
}

fn answer(status: u16, body: Value, headers: &[(&str, String)]) -> Response {
    let mut response = (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        body.to_string(),
    )
        .into_response();
    response
        .headers_mut()
        .insert("content-type", "application/json".parse().expect("header"));
    for (name, value) in headers {
        response.headers_mut().insert(
            axum::http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
            value.parse().expect("value"),
        );
    }
    response
}

/// Applies a write once per key; later calls with the key get the stored answer replayed.
fn apply(crm: &mut Crm, op: &str, key: &str, body: &Value) -> (u16, Value, bool) {
    if let Some((status, stored)) = crm.stored.get(key) {
        return (*status, stored.clone(), true);
    }
    *crm.applied.entry(key.to_string()).or_default() += 1;
    crm.next_id += 1;
    let n = crm.next_id;
    let (status, answer) = match op {
        "contact" => {
            let email = body["email"].as_str().unwrap_or_default().to_string();
            match crm.contacts.get(&email) {
                Some(id) => (200, json!({"id": id, "created": false})),
                None => {
                    let id = format!("ct-{n}");
                    crm.contacts.insert(email, id.clone());
                    (201, json!({"id": id, "created": true}))
                }
            }
        }
        "deal" => (200, json!({"id": body["id"]})),
        "activity" => {
            let message = body["message_id"].as_str().unwrap_or_default().to_string();
            *crm.activities.entry(message).or_default() += 1;
            (201, json!({"id": format!("act-{n}")}))
        }
        _ => (201, json!({"id": format!("att-{n}")})),
    };
    crm.stored.insert(key.to_string(), (status, answer.clone()));
    (status, answer, false)
}

async fn handle(State(crm): State<Shared>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    if header("authorization") != format!("Bearer {TOKEN}") {
        return answer(401, json!({"error": "unauthorized"}), &[]);
    }
    let key = header("idempotency-key");
    let path = uri.path();
    let op = match path {
        "/contacts" => "contact",
        "/deals" => "deal",
        "/activities" => "activity",
        p if p.starts_with("/activities/") && p.ends_with("/attachments") => "attachment",
        _ => return answer(404, json!({"error": "no such endpoint"}), &[]),
    };
    if key.is_empty() {
        return answer(400, json!({"error": "Idempotency-Key required"}), &[]);
    }
    let body: Value = serde_json::from_slice(&body).unwrap_or_default();
    let fault = {
        let mut crm = crm.lock().expect("lock");
        crm.requests += 1;
        if crm.requests > 1 && !crm.burst_started && key.contains("plain") {
            // A burst of 429s begins with the first plain request and hits whatever comes.
            (crm.burst_started, crm.burst_left) = (true, 4);
        }
        let burst = crm.burst_left > 0;
        let attempts = crm.attempts.entry(key.clone()).or_default();
        attempts.push(Instant::now());
        let fault = fault(&key, op, attempts.len(), burst);
        if matches!(fault, Fault::Burst) {
            crm.burst_left -= 1;
        }
        let kind = match fault {
            Fault::None => None,
            Fault::TooManySeconds => Some("429-seconds"),
            Fault::TooManyDate => Some("429-date"),
            Fault::Burst => Some("429-burst"),
            Fault::Unavailable => Some("503"),
            Fault::Timeout => Some("timeout"),
            Fault::Slow => Some("slow"),
            Fault::Reject => Some("400"),
        };
        if let Some(kind) = kind {
            *crm.faults.entry(kind).or_default() += 1;
        }
        fault
    };
    match fault {
        Fault::TooManySeconds => return answer(429, json!({}), &[("retry-after", "1".into())]),
        Fault::TooManyDate => {
            let at = chrono::Utc::now() + chrono::Duration::seconds(2);
            let date = at.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
            return answer(429, json!({}), &[("retry-after", date)]);
        }
        Fault::Burst => return answer(429, json!({}), &[("retry-after", "0".into())]),
        Fault::Unavailable => return answer(503, json!({"error": "maintenance"}), &[]),
        Fault::Reject => {
            return answer(
                400,
                json!({"error": "subject rejected for sam@client.test"}),
                &[],
            );
        }
        Fault::Slow => tokio::time::sleep(Duration::from_millis(300)).await,
        Fault::Timeout | Fault::None => {}
    }
    let (status, body, replayed) = apply(&mut crm.lock().expect("lock"), op, &key, &body);
    if matches!(fault, Fault::Timeout) {
        // The write is done, but the answer comes after the client gave up.
        tokio::time::sleep(Duration::from_millis(1_500)).await;
    }
    let headers = if replayed {
        vec![("idempotent-replayed", "true".to_string())]
    } else {
        vec![]
    };
    answer(status, body, &headers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_backend_rides_out_faults_without_losing_or_duplicating() {
    let env = TestEnv::new("crmrest");
    let crm: Shared = Arc::default();
    let app = Router::new().fallback(handle).with_state(crm.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base_url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });

    let t = now_ms() - 1_000;
    let mut plain = attach(
        lead("rest-plain-1@client.test", "sam@client.test", t),
        Some("q.pdf"),
        &sha("q"),
    );
    plain.deal_id = Some("d-7".into());
    let records = vec![
        plain,
        known(
            lead("rest-plain-2@client.test", "kim@client.test", t),
            "c-known",
        ),
        lead("rest-r429s@client.test", "a@client.test", t),
        lead("rest-r429d@client.test", "b@client.test", t),
        lead("rest-r503@client.test", "c@client.test", t),
        lead("rest-timeout@client.test", "d@client.test", t),
        lead("rest-slow@client.test", "e@client.test", t),
        attach(
            lead("rest-attfail@client.test", "f@client.test", t),
            Some("x.pdf"),
            &sha("x"),
        ),
        lead("rest-poison-1@client.test", "g@client.test", t),
        lead("rest-poison-2@client.test", "h@client.test", t),
        lead("rest-plain-3@client.test", "i@client.test", t),
        lead("rest-plain-4@client.test", "j@client.test", t),
    ];
    let poison = ["rest-poison-1@client.test", "rest-poison-2@client.test"];
    let mut run = spawn_sink(
        &env,
        "a",
        free_port(),
        &[
            ("MAILSTREAM_CRM_SINK_BACKEND", "rest"),
            ("MAILSTREAM_CRM_SINK_BASE_URL", base_url.as_str()),
            ("MAILSTREAM_CRM_SINK_TOKEN", TOKEN),
            ("MAILSTREAM_CRM_SINK_MAX_ATTEMPTS", "6"),
            ("MAILSTREAM_CRM_SINK_BACKOFF_BASE_MS", "20"),
            ("MAILSTREAM_CRM_SINK_BACKOFF_MAX_MS", "200"),
            ("MAILSTREAM_CRM_SINK_RETRY_AFTER_MAX_MS", "3000"),
            ("MAILSTREAM_CRM_SINK_REQUEST_TIMEOUT_MS", "500"),
            ("MAILSTREAM_CRM_SINK_RATE_LIMIT_PER_SEC", "50"),
            ("MAILSTREAM_CRM_SINK_MAX_CONCURRENCY", "2"),
        ],
    );
    produce_leads(&env, &records).await;
    let seen = results(&env, records.len() - poison.len()).await;
    let dlq = collect(
        &env.consumer(&["scored.dlq"]),
        poison.len(),
        Duration::from_secs(60),
        Duration::from_secs(2),
    )
    .await;
    terminate(&mut run, Duration::from_secs(30));

    let mut keys: Vec<&str> = seen.iter().map(|(k, _)| k.as_str()).collect();
    keys.sort();
    let mut expected: Vec<&str> = records
        .iter()
        .map(|r| r.message_id.as_str())
        .filter(|m| !poison.contains(m))
        .collect();
    expected.sort();
    assert_eq!(
        keys, expected,
        "one result per non-poison message, none for poison"
    );
    assert!(
        seen.iter()
            .all(|(_, r)| r.outcome == "written" && r.backend == "rest"),
        "{seen:?}"
    );
    let mut dead: Vec<&str> = dlq.iter().filter_map(|s| s.key.as_deref()).collect();
    dead.sort();
    assert_eq!(dead, poison, "the DLQ holds exactly the poison records");
    for letter in &dlq {
        assert_eq!(letter.headers["mailstream.error.class"], "crm-rejected");
        let message = &letter.headers["mailstream.error.message"];
        assert!(message.contains("400"), "{message}");
        assert!(
            !message.contains("sam@client.test"),
            "no addresses in dead-letter headers: {message}"
        );
    }
    let by_id: HashMap<&str, &CrmResult> = seen.iter().map(|(k, r)| (k.as_str(), r)).collect();
    let failed = by_id["rest-attfail@client.test"];
    assert_eq!(
        (
            failed.attachments_written,
            failed.attachments_failed,
            failed.follow_ups.len()
        ),
        (0, 1, 1)
    );
    assert!(failed.activity_id.is_some(), "the activity stays written");
    let plain = by_id["rest-plain-1@client.test"];
    assert_eq!(
        (plain.attachments_written, plain.contact_created),
        (1, true)
    );
    assert!(
        plain
            .contact_id
            .as_deref()
            .is_some_and(|id| id.starts_with("ct-")),
        "the CRM's contact id"
    );
    assert!(by_id["rest-timeout@client.test"].attempts >= 2);

    let crm = crm.lock().expect("lock");
    for message in &expected {
        assert_eq!(
            crm.activities.get(*message),
            Some(&1),
            "{message}: exactly one activity"
        );
    }
    for message in poison {
        assert_eq!(
            crm.activities.get(message),
            None,
            "{message}: rejected, never created"
        );
    }
    let twice: Vec<_> = crm.applied.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "a write applied twice: {twice:?}");
    for kind in [
        "429-seconds",
        "429-date",
        "429-burst",
        "503",
        "timeout",
        "slow",
        "400",
    ] {
        assert!(
            crm.faults.get(kind).is_some_and(|n| *n > 0),
            "fault {kind} injected: {:?}",
            crm.faults
        );
    }
    let timeout_key = "rest-timeout@client.test:activity";
    assert_eq!(
        crm.attempts[timeout_key].len(),
        2,
        "timed out once, then replayed"
    );
    let spaced = &crm.attempts["rest-r429s@client.test:contact"];
    assert!(
        spaced.len() == 3 && spaced[1] - spaced[0] >= Duration::from_millis(950),
        "Retry-After: 1 honoured"
    );
    let dated = &crm.attempts["rest-r429d@client.test:activity"];
    assert!(
        dated.len() == 2 && dated[1] - dated[0] >= Duration::from_millis(900),
        "Retry-After date honoured"
    );
    let attachment: Vec<_> = crm
        .attempts
        .iter()
        .filter(|(k, _)| k.starts_with("rest-attfail@client.test:attachment:"))
        .collect();
    assert_eq!(attachment.len(), 1);
    assert_eq!(
        attachment[0].1.len(),
        1,
        "a rejected attachment is not retried: a follow-up"
    );
    drop(crm);
    let log = sink_log(&env, "a");
    assert!(!log.contains(TOKEN), "the token is never logged");
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
        ],
    );
    let t = now_ms();
    let batch = |from: usize| -> Vec<ScoredLead> {
        (from..from + 3)
            .map(|i| {
                lead(
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
    produce_leads(&env, &batch(3)).await;
    let during = collect(
        &env.consumer(&["crm-results"]),
        4,
        Duration::from_secs(5),
        Duration::ZERO,
    )
    .await;
    assert_eq!(
        during.len(),
        3,
        "nothing is written, or dead-lettered, while the database is down"
    );
    proxy.restore();

    let all = results(&env, 6).await;
    let dlq = collect(
        &env.consumer(&["scored.dlq"]),
        1,
        Duration::from_secs(3),
        Duration::ZERO,
    )
    .await;
    let failures = metric(
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
    let db = pg().await;
    let rows = db
        .query_one(
            &format!("SELECT count(*) FROM {schema}.email_activities"),
            &[],
        )
        .await
        .expect("count");
    assert_eq!(rows.get::<_, i64>(0), 6);
    assert!(
        sink_log(&env, "a").contains("transient failure"),
        "the runtime retried the batch"
    );
}

/// A HubSpot stand-in: contacts batch upsert by email, emails with a unique message-id
/// property (409 on a second create) and a read by that property.
#[derive(Default)]
struct Hubspot {
    contacts: HashMap<String, String>,
    /// Message id → (email id, create body).
    emails: HashMap<String, (String, Value)>,
    creates: u32,
    conflicts: u32,
    throttled: bool,
}

async fn hubspot(
    State(hs): State<Arc<Mutex<Hubspot>>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if headers.get("authorization").and_then(|v| v.to_str().ok())
        != Some(&format!("Bearer {TOKEN}"))
    {
        return answer(401, json!({"status": "error"}), &[]);
    }
    let body: Value = serde_json::from_slice(&body).unwrap_or_default();
    let mut hs = hs.lock().expect("lock");
    let n = hs.contacts.len() + hs.emails.len() + 1;
    match uri.path() {
        "/crm/v3/objects/contacts/batch/upsert" => {
            let input = &body["inputs"][0];
            assert_eq!(input["idProperty"], "email");
            let email = input["id"].as_str().unwrap_or_default().to_string();
            let new = !hs.contacts.contains_key(&email);
            let id = hs
                .contacts
                .entry(email)
                .or_insert_with(|| format!("{}", 5000 + n))
                .clone();
            answer(
                200,
                json!({"status": "COMPLETE", "results": [{"id": id, "new": new, "properties": input["properties"]}]}),
                &[],
            )
        }
        "/crm/v3/objects/emails" => {
            if !hs.throttled {
                hs.throttled = true;
                return answer(
                    429,
                    json!({"status": "error", "category": "RATE_LIMITS"}),
                    &[("retry-after", "1".into())],
                );
            }
            let message_id = body["properties"]["mailstream_message_id"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if hs.emails.contains_key(&message_id) {
                hs.conflicts += 1;
                return answer(409, json!({"status": "error", "category": "CONFLICT"}), &[]);
            }
            hs.creates += 1;
            let id = format!("{}", 9000 + n);
            hs.emails.insert(message_id, (id.clone(), body.clone()));
            answer(
                201,
                json!({"id": id, "properties": body["properties"]}),
                &[],
            )
        }
        path => {
            let wanted = uri.query() == Some("idProperty=mailstream_message_id");
            let id = path
                .strip_prefix("/crm/v3/objects/emails/")
                .map(|m| m.replace("%40", "@"));
            match id.and_then(|m| hs.emails.get(&m)).filter(|_| wanted) {
                Some((id, _)) => answer(200, json!({"id": id}), &[]),
                None => answer(404, json!({"status": "error"}), &[]),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hubspot_backend_upserts_contacts_and_creates_each_email_once() {
    let env = TestEnv::new("crmhs");
    let hs: Arc<Mutex<Hubspot>> = Arc::default();
    let app = Router::new().fallback(hubspot).with_state(hs.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base_url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    let t = now_ms();
    let mut first = lead("hs-1@client.test", "sam@client.test", t);
    first.deal_id = Some("901".into());
    let second = lead("hs-2@client.test", "sam@client.test", t + 1);
    let records = vec![first.clone(), second, first];
    let mut run = spawn_sink(
        &env,
        "a",
        free_port(),
        &[
            ("MAILSTREAM_CRM_SINK_BACKEND", "hubspot"),
            ("MAILSTREAM_CRM_SINK_BASE_URL", base_url.as_str()),
            ("MAILSTREAM_CRM_SINK_TOKEN", TOKEN),
        ],
    );
    produce_leads(&env, &records).await;
    let seen = results(&env, 3).await;
    terminate(&mut run, Duration::from_secs(30));
    assert_eq!(seen.len(), 3, "{seen:?}");
    let (first, duplicate): (Vec<_>, Vec<_>) = seen
        .iter()
        .filter(|(k, _)| k == "hs-1@client.test")
        .partition(|(_, r)| r.outcome == "written");
    assert_eq!((first.len(), duplicate.len()), (1, 1), "{seen:?}");
    let (first, duplicate) = (&first[0].1, &duplicate[0].1);
    assert_eq!(
        duplicate.outcome, "unchanged",
        "the replay met the unique property"
    );
    assert_eq!(
        duplicate.activity_id, first.activity_id,
        "and found the same email"
    );
    let hs = hs.lock().expect("lock");
    assert_eq!((hs.creates, hs.conflicts, hs.contacts.len()), (2, 1, 1));
    let contact_id = &hs.contacts["sam@client.test"];
    let created = seen.iter().filter(|(_, r)| r.contact_created).count();
    assert_eq!(created, 1, "the contact was new once");
    assert!(
        seen.iter()
            .all(|(_, r)| r.contact_id.as_ref() == Some(contact_id))
    );
    let (_, body) = &hs.emails["hs-1@client.test"];
    assert_eq!(body["properties"]["hs_email_direction"], "INCOMING_EMAIL");
    assert_eq!(body["properties"]["hs_timestamp"], t.to_string());
    assert_eq!(
        body["properties"]["hs_email_text"],
        "Hello, what does it cost?"
    );
    let types = |i: usize| body["associations"][i]["types"][0]["associationTypeId"].clone();
    assert_eq!(
        (body["associations"][0]["to"]["id"].clone(), types(0)),
        (json!(contact_id), json!(198))
    );
    assert_eq!(
        (body["associations"][1]["to"]["id"].clone(), types(1)),
        (json!("901"), json!(210))
    );
}

/// Throughput of the PostgreSQL backend (not part of the suite: `cargo test -p mailstream-tests
/// --test crm_sink -- --ignored throughput --nocapture`). 2,000 leads from distinct senders,
/// each with an attachment: a new contact, an activity, an attachment and a lead per record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check"]
async fn postgres_throughput() {
    let env = TestEnv::new("crmbench");
    let schema = schema_of(&env);
    let url = database_url();
    let n = 2_000;
    let t = now_ms() - 60_000;
    let records: Vec<ScoredLead> = (0..n)
        .map(|i| {
            attach(
                lead(
                    &format!("bench-{i}@client.test"),
                    &format!("s{i}@client.test"),
                    t + i as i64,
                ),
                Some("a.pdf"),
                &sha(&i.to_string()),
            )
        })
        .collect();
    for chunk in records.chunks(500) {
        produce_leads(&env, chunk).await;
    }
    let port = free_port();
    let mut run = spawn_sink(
        &env,
        "a",
        port,
        &[
            ("MAILSTREAM_CRM_SINK_DATABASE_URL", url.as_str()),
            ("MAILSTREAM_CRM_SINK_SCHEMA", schema.as_str()),
        ],
    );
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
    let processing: Vec<&str> = metrics
        .lines()
        .filter(|l| {
            l.starts_with("mailstream_processing_seconds_sum")
                || l.starts_with("mailstream_processing_seconds_count")
        })
        .collect();
    println!(
        "crm-sink postgres: {n} records in {:.1} s after the first result = {:.0} records/s; {processing:?}",
        elapsed.as_secs_f64(),
        (n - 1) as f64 / elapsed.as_secs_f64()
    );
}
