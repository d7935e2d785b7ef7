//! Two CRM sink instances against one PostgreSQL schema, sharing contacts, accounts and deals:
//! 300 emails from 10 senders of 3 companies, spread over every partition of `scored`. The
//! sinks' batches used to upsert the shared rows in batch-wide transactions in different
//! orders and deadlock (`40P01`); now no instance logs a deadlock and every row is right.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use mailstream_runtime::records::ScoredLead;
use mailstream_tests::crm::{crm_results, produce_leads, scored_lead, sink_log, spawn_sink};
use mailstream_tests::crm_db::{database_url, psql, schema_of};
use mailstream_tests::{TestEnv, free_port, http_get, now_ms, terminate};

const COMPANIES: [&str; 3] = ["north", "east", "west"];
const SENDERS: usize = 10;
const EMAILS: usize = 300;

/// Sender `i` works at company `i % 3`.
fn sender(i: usize) -> (String, &'static str) {
    let company = COMPANIES[i % COMPANIES.len()];
    (format!("person{i}@{company}.example"), company)
}

fn emails() -> Vec<ScoredLead> {
    let t = now_ms() - 60_000;
    (0..EMAILS)
        .map(|n| {
            let (from, company) = sender(n % SENDERS);
            scored_lead(
                &format!("rep-{n}@mail.example"),
                &from,
                &format!("acct-{company}"),
                Some(&format!("deal-{company}")),
                t + n as i64,
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sinks_share_contacts_and_accounts_without_deadlocks() {
    let env = TestEnv::new("crmreplicas");
    let schema = schema_of(&env);
    let url = database_url();
    let settings = [
        ("MAILSTREAM_CRM_SINK_DATABASE_URL", url.as_str()),
        ("MAILSTREAM_CRM_SINK_SCHEMA", schema.as_str()),
        // Large batches: long database transactions, the condition that deadlocked.
        ("MAILSTREAM_BATCH_MAX_MS", "400"),
        ("MAILSTREAM_BATCH_IDLE_MS", "0"),
        ("MAILSTREAM_BATCH_MAX_RECORDS", "100"),
    ];
    let ports = [free_port(), free_port()];
    let mut runs = [
        spawn_sink(&env, "a", ports[0], &settings),
        spawn_sink(&env, "b", ports[1], &settings),
    ];
    // Both members in the group before the traffic comes, so both write at once.
    let started = Instant::now();
    for port in ports {
        while http_get(&format!("http://127.0.0.1:{port}/readyz")).await.0 != 200 {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "sink not ready"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    tokio::time::sleep(Duration::from_secs(5)).await;

    let leads = emails();
    produce_leads(&env, &leads).await;
    let results = crm_results(&env, EMAILS, Duration::from_secs(180)).await;
    for run in &mut runs {
        terminate(run, Duration::from_secs(30));
    }

    let mut per_message: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &results {
        *per_message.entry(r.message_id.as_str()).or_default() += 1;
    }
    assert_eq!(per_message.len(), EMAILS, "a result for every email");
    assert!(
        per_message.values().all(|n| *n == 1),
        "exactly one result per email"
    );
    let logs = [sink_log(&env, "a"), sink_log(&env, "b")];
    for (instance, log) in ["a", "b"].iter().zip(&logs) {
        assert!(
            !log.contains("40P01") && !log.contains("deadlock"),
            "instance {instance} met a deadlock:\n{log}"
        );
    }
    assert!(
        logs.iter()
            .all(|log| log.contains("connected to PostgreSQL")
                || log.contains("PostgreSQL CRM ready")),
        "both instances ran"
    );

    let q = |sql: &str| psql(&sql.replace("{s}", &schema));
    assert_eq!(
        q("SELECT count(*) FROM {s}.email_activities"),
        EMAILS.to_string()
    );
    assert_eq!(q("SELECT count(*) FROM {s}.leads"), EMAILS.to_string());
    assert_eq!(
        q(
            "SELECT string_agg(account_id || '=' || name, ',' ORDER BY account_id) FROM {s}.accounts"
        ),
        "acct-east=Company acct-east,acct-north=Company acct-north,acct-west=Company acct-west"
    );
    assert_eq!(
        q("SELECT string_agg(deal_id || '=' || account_id, ',' ORDER BY deal_id) FROM {s}.deals"),
        "deal-east=acct-east,deal-north=acct-north,deal-west=acct-west"
    );
    let contacts =
        q("SELECT string_agg(email || '=' || account_id, ',' ORDER BY email) FROM {s}.contacts");
    let mut want: Vec<String> = (0..SENDERS)
        .map(|i| {
            let (email, company) = sender(i);
            format!("{email}=acct-{company}")
        })
        .collect();
    want.sort();
    assert_eq!(
        contacts,
        want.join(","),
        "one contact per sender, at its company"
    );
    assert_eq!(
        q(
            "SELECT count(*) FROM {s}.email_activities a JOIN {s}.contacts c \
           ON c.contact_id = a.contact_id AND c.email = a.sender_email \
           AND c.account_id = a.account_id \
           JOIN {s}.deals d ON d.deal_id = a.deal_id AND d.account_id = a.account_id"
        ),
        EMAILS.to_string(),
        "every activity points at its sender's contact, account and deal"
    );
    assert_eq!(
        q("SELECT count(DISTINCT created_by_message_id) FROM {s}.contacts"),
        SENDERS.to_string(),
        "each contact created by one email"
    );
}
