//! What a message costs the PostgreSQL backend, measured without Kafka (not part of the suite:
//! `source ~/.local/state/mailstream/env; cargo test -p mailstream-crm-sink --lib --
//! --ignored write_cost --nocapture`). Each round writes 2,000 plans shaped like the sink's
//! throughput test (a new contact, an account, an activity, an attachment and a lead each), a
//! COMMIT every 100, into a fresh schema; the baseline in the same run is one round trip to the
//! same server (`SELECT 1` on a prepared statement, timed between the rounds), so the figure,
//! a message's cost in round trips, holds on a loaded machine.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::json;

use super::postgres::PostgresBackend;
use super::postgres_tls::{Connector, Target};
use super::{
    AccountPlan, ActivityPlan, AttachmentPlan, ContactFields, ContactPlan, CrmBackend, LeadPlan,
    WritePlan, new_contact_id,
};
use crate::events::SinkMetrics;
use crate::retry::{Limiter, Retrier, RetryPolicy};

const MESSAGES: usize = 2_000;
const BATCH: usize = 100;
const ROUNDS: usize = 3;

fn plan(i: usize, at: DateTime<Utc>) -> WritePlan {
    let email = format!("s{i}@client.test");
    let message_id = format!("bench-{i}@client.test");
    WritePlan {
        message_id: message_id.clone(),
        received_at: at,
        source_offset: i as i64,
        status: "review".into(),
        known_contact: false,
        account: Some(AccountPlan {
            account_id: "acct-1".into(),
            name: Some("Client".into()),
            domain: Some("client.test".into()),
            target_account: Some(false),
        }),
        contact: Some(ContactPlan {
            contact_id: new_contact_id(&email),
            email: email.clone(),
            name: Some("Sam".into()),
            account_id: Some("acct-1".into()),
            create: true,
            details: ContactFields::default(),
        }),
        deal: None,
        activity: ActivityPlan {
            subject: Some(format!("Pricing question {message_id}")),
            sender_email: Some(email.clone()),
            sender_name: Some("Sam".into()),
            recipients: vec!["sales@in.example.com".into()],
            text: Some("Hello, what does it cost?".into()),
            thread_id: message_id.clone(),
            thread_parent: None,
            auth: json!({"spf": "pass", "dkim": "pass", "dmarc": null}),
            tags: vec![],
            meeting: None,
        },
        attachments: vec![AttachmentPlan {
            filename: "a.pdf".into(),
            content_type: "application/pdf".into(),
            size: 1234,
            sha256: format!("{:064x}", i),
            blob_uri: Some(format!("file:///blobs/{i}")),
            inline: false,
            part: format!("{i:016x}"),
        }],
        lead: Some(LeadPlan {
            lead_key: email.clone(),
            sender_email: email,
            sender_name: Some("Sam".into()),
            subject: Some("Pricing question".into()),
            score: 25,
            status: "review".into(),
            breakdown: json!([{"rule_id": "subject-intent", "points": 25, "evidence": "pricing"}]),
            rules_version: "0123456789ab".into(),
            intent: Some("sales".into()),
            language: Some("en".into()),
            team: None,
            owner: None,
            source_alias: Some("sales@in.example.com".into()),
        }),
        relinked: false,
        parent_unknown: false,
    }
}

/// Mean time of one round trip to the server (`SELECT 1`, prepared).
async fn round_trip(client: &tokio_postgres::Client) -> Duration {
    let statement = client.prepare("SELECT 1").await.expect("prepare");
    let n = 500;
    let started = Instant::now();
    for _ in 0..n {
        client.query_one(&statement, &[]).await.expect("SELECT 1");
    }
    started.elapsed() / n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check"]
async fn write_cost() {
    let Ok(url) = std::env::var("MAILSTREAM_DATABASE_URL") else {
        panic!("MAILSTREAM_DATABASE_URL is not set: source ~/.local/state/mailstream/env");
    };
    let target = Target::parse(&url, None).expect("database URL");
    let (_trigger, shutdown) = mailstream_runtime::Shutdown::new();
    let retrier = Retrier {
        policy: RetryPolicy {
            max_attempts: 5,
            cap: Duration::from_secs(1),
            retry_after_max: Duration::from_secs(1),
        },
        limiter: Limiter::new(0.0, 1, 1),
        request_timeout: Duration::from_secs(30),
        metrics: SinkMetrics::new(&prometheus::Registry::new()).expect("metrics"),
        shutdown,
    };
    let config = target.config().expect("config");
    let (probe, connection) = config
        .connect(tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    let at = Utc::now();
    let plans: Vec<WritePlan> = (0..MESSAGES).map(|i| plan(i, at)).collect();
    for round in 1..=ROUNDS {
        let schema = format!("bench_write_{}_{round}", std::process::id());
        let tls = Connector::new(&target).expect("connector");
        let (mut backend, _) =
            PostgresBackend::start(target.clone(), tls, schema.clone(), retrier.clone())
                .await
                .expect("start");
        let before = round_trip(&probe).await;
        let deadline = Instant::now() + Duration::from_secs(600);
        let started = Instant::now();
        for batch in plans.chunks(BATCH) {
            for plan in batch {
                backend.write(plan, deadline).await.expect("write");
            }
            backend.commit(deadline).await.expect("commit");
        }
        let per_message = started.elapsed() / MESSAGES as u32;
        let after = round_trip(&probe).await;
        let rt = (before + after) / 2;
        println!(
            "round {round}: {:.3} ms per message = {:.1} round trips of {:.3} ms ({:.0} messages/s)",
            per_message.as_secs_f64() * 1e3,
            per_message.as_secs_f64() / rt.as_secs_f64(),
            rt.as_secs_f64() * 1e3,
            1.0 / per_message.as_secs_f64()
        );
        probe
            .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
            .await
            .expect("drop the schema");
    }
}
