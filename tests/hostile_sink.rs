//! The CRM sink against emails whose fields PostgreSQL cannot index as text (issue 13), on the
//! real stack: a 3,000-character From address, a 10 KB Message-ID (and thread id), a 5 KB
//! attachment filename and a 5,000-character deal id, all random (incompressible), then a
//! canary behind them on the same partition. The canary reaches the CRM within seconds, each
//! hostile email is in the CRM tables, the one value PostgreSQL truly cannot store (a NUL byte
//! in text) is dead-lettered with its SQLSTATE, nothing is lost, and a replay from the earliest
//! offset changes no row (`xmin` included).

use std::time::{Duration, Instant};

use mailstream_runtime::records::{Attachment, Disposition, ScoredLead};
use mailstream_tests::crm::{crm_results, produce_leads_in_order, scored_lead, spawn_sink};
use mailstream_tests::crm_db::{TABLES, database_url, psql, schema_of, snapshot};
use mailstream_tests::{TestEnv, collect, free_port, now_ms, terminate};
use rand::Rng;
use rand::distr::Alphanumeric;

/// `n` random lower-case letters and digits: nothing for PostgreSQL to compress.
fn random(n: usize) -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(n)
        .map(|b| char::from(b).to_ascii_lowercase())
        .collect()
}

/// A scored lead from an unknown sender (the resolver proposed a new contact).
fn lead(message_id: &str, sender: &str, received_at: i64) -> ScoredLead {
    scored_lead(message_id, sender, "acct-h", None, received_at)
}

/// The hostile emails (each named), in the order they are sent.
fn hostile(t: i64) -> Vec<(&'static str, ScoredLead)> {
    let long_from = format!("{}@client.test", random(3_000));
    let from = lead(&format!("from-{}@client.test", random(12)), &long_from, t);
    let long_id = format!("{}@client.test", random(10_240));
    let id = lead(&long_id, "ida@client.test", t + 1);
    let mut file = lead(
        &format!("file-{}@client.test", random(12)),
        "fay@client.test",
        t + 2,
    );
    file.resolved.email.attachments.push(Attachment {
        filename: Some(format!("{}.pdf", random(5_120))),
        content_type: "application/pdf".into(),
        sniffed_type: None,
        size: 1234,
        sha256: "a".repeat(64),
        disposition: Disposition::Attachment,
        content_id: None,
        blob_uri: None,
        executable: false,
        malware: None,
    });
    let mut deal = lead(
        &format!("deal-{}@client.test", random(12)),
        "dee@client.test",
        t + 3,
    );
    deal.deal_id = Some(random(5_000));
    deal.resolved.deal_id = deal.deal_id.clone();
    let mut nul = lead(
        &format!("nul-{}@client.test", random(12)),
        "nul@client.test",
        t + 4,
    );
    nul.subject = Some("Pricing\u{0}question".into());
    vec![
        ("from", from),
        ("message-id", id),
        ("filename", file),
        ("deal-id", deal),
        ("nul", nul),
    ]
}

fn sink(env: &TestEnv, schema: &str) -> std::process::Child {
    let url = database_url();
    spawn_sink(
        env,
        "a",
        free_port(),
        &[
            ("MAILSTREAM_CRM_SINK_DATABASE_URL", url.as_str()),
            ("MAILSTREAM_CRM_SINK_SCHEMA", schema),
        ],
    )
}

/// `SELECT count(*) FROM <schema>.<table> WHERE <column> = <value>` (the value bound as a
/// psql variable, so it can be of any length).
fn count_where(schema: &str, table: &str, column: &str, value: &str) -> usize {
    let escaped = value.replace('\'', "''");
    psql(&format!(
        "SELECT count(*) FROM {schema}.{table} WHERE {column} = '{escaped}'"
    ))
    .parse()
    .expect("a count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_fields_reach_the_crm_and_hold_up_nothing() {
    let env = TestEnv::new("hostilesink");
    let schema = schema_of(&env);
    let t = now_ms() - 10_000;
    let warmup = lead(
        &format!("warmup-{}@client.test", random(12)),
        "wes@client.test",
        t - 1,
    );
    let hostile = hostile(t);
    let canary = lead(
        &format!("canary-{}@client.test", random(12)),
        "cal@client.test",
        t + 10,
    );

    let mut run = sink(&env, &schema);
    produce_leads_in_order(&env, [&warmup]).await;
    assert_eq!(
        crm_results(&env, 1, Duration::from_secs(120)).await.len(),
        1,
        "the sink is up"
    );
    let sent = Instant::now();
    let behind: Vec<&ScoredLead> = hostile.iter().map(|(_, l)| l).chain([&canary]).collect();
    produce_leads_in_order(&env, behind).await;
    let canary_seen = loop {
        let seen = crm_results(&env, 1 + hostile.len(), Duration::from_secs(2)).await;
        if seen.iter().any(|r| r.message_id == canary.message_id) {
            break sent.elapsed();
        }
        assert!(
            sent.elapsed() < Duration::from_secs(30),
            "the canary is held up behind the hostile emails"
        );
    };
    let first = crm_results(&env, hostile.len() + 1, Duration::from_secs(30)).await;
    let dlq = collect(
        &env.consumer(&["scored.dlq"]),
        1,
        Duration::from_secs(30),
        Duration::from_secs(1),
    )
    .await;
    terminate(&mut run, Duration::from_secs(30));
    eprintln!("the canary reached the CRM {canary_seen:?} after the hostile emails were sent");
    assert!(canary_seen < Duration::from_secs(15), "{canary_seen:?}");

    // Every hostile email but the NUL one is written; that one is dead-lettered with its
    // SQLSTATE; nothing is lost or written twice.
    let written: Vec<&str> = first
        .iter()
        .filter(|r| r.outcome == "written")
        .map(|r| r.message_id.as_str())
        .collect();
    assert_eq!(written.len(), first.len(), "all written");
    for (name, l) in hostile.iter().filter(|(name, _)| *name != "nul") {
        assert_eq!(
            written.iter().filter(|id| **id == l.message_id).count(),
            1,
            "{name}: one result"
        );
        assert_eq!(
            count_where(&schema, "email_activities", "message_id", &l.message_id),
            1,
            "{name}: its activity is in the CRM"
        );
    }
    assert!(written.contains(&canary.message_id.as_str()));
    assert_eq!(
        first.len(),
        hostile.len() + 1,
        "warm-up, four hostile, canary"
    );
    let nul = &hostile[4].1;
    assert_eq!(dlq.len(), 1, "only the NUL byte is dead-lettered");
    assert_eq!(dlq[0].key.as_deref(), Some(nul.message_id.as_str()));
    assert_eq!(dlq[0].headers["mailstream.error.class"], "crm-rejected");
    assert!(
        dlq[0].headers["mailstream.error.message"].contains("SQLSTATE 22021"),
        "{:?}",
        dlq[0].headers
    );

    // The long values are stored whole; the long deal id as its bounded form.
    let (from, file, deal) = (&hostile[0].1, &hostile[2].1, &hostile[3].1);
    let sender = from.sender_email.as_deref().expect("sender");
    assert_eq!(count_where(&schema, "contacts", "email", sender), 1);
    assert_eq!(count_where(&schema, "leads", "sender_email", sender), 1);
    let filename = file.resolved.email.attachments[0]
        .filename
        .as_deref()
        .expect("filename");
    assert_eq!(count_where(&schema, "attachments", "filename", filename), 1);
    let deal_id = psql(&format!(
        "SELECT deal_id FROM {schema}.email_activities WHERE message_id = '{}'",
        deal.message_id
    ));
    let long_deal = deal.deal_id.as_deref().expect("deal id");
    assert!(
        deal_id.starts_with(&long_deal[..64]) && deal_id.contains("~sha256:"),
        "{deal_id}"
    );
    assert_eq!(count_where(&schema, "deals", "deal_id", &deal_id), 1);

    // A replay of everything changes no row.
    let before = snapshot(&schema);
    env.reset_to_earliest("crm-sink");
    let mut replay = sink(&env, &schema);
    let all = crm_results(&env, 2 * first.len(), Duration::from_secs(60)).await;
    terminate(&mut replay, Duration::from_secs(30));
    assert_eq!(all.len(), 2 * first.len(), "a result per record, again");
    assert_eq!(
        all.iter().filter(|r| r.outcome == "unchanged").count(),
        first.len(),
        "the replay changed nothing: {:?}",
        all.iter().map(|r| &r.outcome).collect::<Vec<_>>()
    );
    let after = snapshot(&schema);
    for table in TABLES {
        assert_eq!(
            before[*table], after[*table],
            "{table}: no row rewritten (xmin and values identical)"
        );
    }
}
