//! The CRM sink's `rest` backend through CRM outages, against the real stack and the REST CRM
//! stand-in (`tests/helpers/crm.rs`) behind a proxy that can refuse connections:
//!
//! - refused connections, then 503, then 429 with `Retry-After`: nothing but the poison record
//!   reaches `scored.dlq`, `/readyz` is 503 during the outage (naming no progress) and 200
//!   after, `crm_sink_blocked{cause="unavailable"}` is 1 then 0, and every email ends in the
//!   CRM exactly once (one activity per message id, every write applied once per key);
//! - 401 (a revoked token): nothing dead-lettered, `crm_sink_blocked{cause="auth"}` is 1,
//!   `/readyz` and an ERROR log name the setting, and once the CRM takes the token again
//!   everything is delivered.

use std::time::Duration;

use mailstream_runtime::records::ScoredLead;
use mailstream_tests::crm::{
    Burst, Cut, FakeCrm, crm_results, produce_leads, scored_lead, sink_log, sink_metric,
    sink_metric_within, sink_readyz, sink_readyz_until, spawn_sink,
};
use mailstream_tests::{TestEnv, collect, free_port, now_ms, terminate};

const TOKEN: &str = "outage-token-s3cret";
/// The sink's gauge of what blocks it, by cause.
const BLOCKED: &str = "mailstream_crm_sink_blocked";

/// `n` leads of wave `wave` from distinct senders.
fn wave(wave: usize, n: usize) -> Vec<ScoredLead> {
    let t = now_ms();
    (0..n)
        .map(|i| {
            scored_lead(
                &format!("out-{wave}-{i}@client.test"),
                &format!("s{wave}x{i}@client.test"),
                "acct-1",
                None,
                t,
            )
        })
        .collect()
}

/// The sink's settings for the stand-in at `base_url`: short retries in place, a short stall
/// timeout and runtime backoff (a CI-size outage).
fn settings(base_url: &str) -> Vec<(&'static str, String)> {
    [
        ("MAILSTREAM_CRM_SINK_BACKEND", "rest"),
        ("MAILSTREAM_CRM_SINK_BASE_URL", base_url),
        ("MAILSTREAM_CRM_SINK_TOKEN", TOKEN),
        ("MAILSTREAM_CRM_SINK_MAX_ATTEMPTS", "3"),
        ("MAILSTREAM_CRM_SINK_BACKOFF_MAX_MS", "200"),
        ("MAILSTREAM_CRM_SINK_RETRY_AFTER_MAX_MS", "5000"),
        ("MAILSTREAM_CRM_SINK_REQUEST_TIMEOUT_MS", "500"),
        ("MAILSTREAM_CRM_SINK_RATE_LIMIT_PER_SEC", "0"),
        ("MAILSTREAM_STALL_TIMEOUT_MS", "2000"),
        ("MAILSTREAM_RETRY_BACKOFF_MAX_MS", "1000"),
    ]
    .into_iter()
    .map(|(k, v)| (k, v.to_string()))
    .collect()
}

fn spawn(env: &TestEnv, port: u16, settings: &[(&'static str, String)]) -> std::process::Child {
    let pairs: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
    spawn_sink(env, "a", port, &pairs)
}

/// `crm_sink_blocked{cause}` on the sink's `/metrics`.
async fn blocked(port: u16, cause: &str) -> f64 {
    sink_metric(port, BLOCKED, &[("cause", cause)]).await
}

/// Polls `crm_sink_blocked{cause}` until it is `want` (or `timeout`); returns the last value.
async fn blocked_until(port: u16, cause: &str, want: f64, timeout: Duration) -> f64 {
    sink_metric_within(port, BLOCKED, &[("cause", cause)], want, timeout).await
}

/// Every message of `leads` has exactly one activity in the stand-in, and no write was applied
/// twice.
fn exactly_once(crm: &FakeCrm, leads: &[ScoredLead]) {
    let rows = crm.rows();
    for lead in leads {
        assert_eq!(
            rows.activities.get(&lead.message_id),
            Some(&1),
            "{}: exactly one activity",
            lead.message_id
        );
    }
    let twice: Vec<_> = rows.applied.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "a write applied twice: {twice:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crm_outage_stalls_the_sink_and_dead_letters_only_poison() {
    let env = TestEnv::new("crmout");
    let crm = FakeCrm::start(TOKEN).await.expect("stand-in");
    let cut = Cut::start(crm.base_url.trim_start_matches("http://").to_string())
        .await
        .expect("proxy");
    let port = free_port();
    let mut run = spawn(&env, port, &settings(&format!("http://{}", cut.addr)));

    let mut up = wave(0, 10);
    let poison = scored_lead(
        "out-poison-1@client.test",
        "p@client.test",
        "acct-1",
        None,
        now_ms(),
    );
    up.push(poison.clone());
    produce_leads(&env, &up).await;
    assert_eq!(
        crm_results(&env, 10, Duration::from_secs(60)).await.len(),
        10
    );
    assert_eq!(
        sink_readyz_until(port, 200, Duration::from_secs(10))
            .await
            .0,
        200
    );

    // Connections refused.
    cut.cut();
    let refused = wave(1, 10);
    produce_leads(&env, &refused).await;
    let (status, why) = sink_readyz_until(port, 503, Duration::from_secs(20)).await;
    assert_eq!(status, 503, "not ready while the CRM is unreachable: {why}");
    assert!(why.contains("no progress"), "{why}");
    assert_eq!(
        blocked_until(port, "unavailable", 1.0, Duration::from_secs(5)).await,
        1.0
    );
    assert_eq!(blocked(port, "auth").await, 0.0);

    // Back, but answering 503 for a while, then 429 with Retry-After.
    crm.burst(Burst::Unavailable, Duration::from_secs(4));
    crm.burst(
        Burst::TooMany {
            retry_after_secs: 2,
        },
        Duration::from_secs(4),
    );
    cut.restore();
    let throttled = wave(2, 10);
    produce_leads(&env, &throttled).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        sink_readyz(port).await.0,
        503,
        "still failing in the 503 burst"
    );

    let all = crm_results(&env, 30, Duration::from_secs(120)).await;
    let (status, why) = sink_readyz_until(port, 200, Duration::from_secs(20)).await;
    assert_eq!(status, 200, "ready once the CRM answers: {why}");
    assert_eq!(
        blocked_until(port, "unavailable", 0.0, Duration::from_secs(5)).await,
        0.0
    );
    let dlq = collect(
        &env.consumer(&["scored.dlq"]),
        1,
        Duration::from_secs(10),
        Duration::from_secs(3),
    )
    .await;
    terminate(&mut run, Duration::from_secs(30));

    let mut delivered: Vec<&str> = all.iter().map(|r| r.message_id.as_str()).collect();
    delivered.sort();
    let mut expected: Vec<&str> = up
        .iter()
        .chain(&refused)
        .chain(&throttled)
        .map(|l| l.message_id.as_str())
        .filter(|m| *m != poison.message_id)
        .collect();
    expected.sort();
    assert_eq!(
        delivered, expected,
        "one result per message, none for poison"
    );
    let dead: Vec<&str> = dlq.iter().filter_map(|s| s.key.as_deref()).collect();
    assert_eq!(dead, [poison.message_id.as_str()], "only the poison record");
    assert_eq!(dlq[0].headers["mailstream.error.class"], "crm-rejected");
    let delivered_leads: Vec<ScoredLead> = up
        .iter()
        .chain(&refused)
        .chain(&throttled)
        .filter(|l| l.message_id != poison.message_id)
        .cloned()
        .collect();
    exactly_once(&crm, &delivered_leads);
    let faults = crm.faults();
    for kind in ["503", "429", "400"] {
        assert!(
            faults.get(kind).is_some_and(|n| *n > 0),
            "{kind}: {faults:?}"
        );
    }
    let log = sink_log(&env, "a");
    assert!(
        log.contains("the CRM is unavailable"),
        "the block was logged"
    );
    assert!(!log.contains(TOKEN), "the token is never logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_blocks_the_sink_loudly_and_dead_letters_nothing() {
    let env = TestEnv::new("crmauth");
    let crm = FakeCrm::start(TOKEN).await.expect("stand-in");
    let port = free_port();
    let mut run = spawn(&env, port, &settings(&crm.base_url));

    let before = wave(0, 5);
    produce_leads(&env, &before).await;
    assert_eq!(crm_results(&env, 5, Duration::from_secs(60)).await.len(), 5);

    crm.refuse_credentials(true);
    let refused = wave(1, 5);
    produce_leads(&env, &refused).await;
    assert_eq!(
        blocked_until(port, "auth", 1.0, Duration::from_secs(20)).await,
        1.0,
        "crm_sink_blocked{{cause=\"auth\"}}"
    );
    assert_eq!(blocked(port, "unavailable").await, 0.0);
    let (status, why) = sink_readyz_until(port, 503, Duration::from_secs(20)).await;
    assert_eq!(status, 503, "{why}");
    assert!(
        why.contains("crm-sink.token") && why.contains("MAILSTREAM_CRM_SINK_TOKEN"),
        "readiness names the setting: {why}"
    );
    let log = sink_log(&env, "a");
    let line = log
        .lines()
        .find(|l| l.contains("refused the sink's credentials"))
        .unwrap_or_default();
    assert!(
        line.contains("ERROR") && line.contains("crm-sink.token"),
        "an ERROR naming the setting: {line:?}"
    );
    let stuck = crm_results(&env, 6, Duration::from_secs(3)).await;
    assert_eq!(stuck.len(), 5, "nothing written while the token is refused");

    crm.refuse_credentials(false);
    let all = crm_results(&env, 10, Duration::from_secs(60)).await;
    assert_eq!(
        blocked_until(port, "auth", 0.0, Duration::from_secs(10)).await,
        0.0
    );
    assert_eq!(
        sink_readyz_until(port, 200, Duration::from_secs(20))
            .await
            .0,
        200
    );
    let dlq = collect(
        &env.consumer(&["scored.dlq"]),
        1,
        Duration::from_secs(3),
        Duration::ZERO,
    )
    .await;
    terminate(&mut run, Duration::from_secs(30));
    assert_eq!(
        all.len(),
        10,
        "everything delivered once the token is taken"
    );
    assert!(dlq.is_empty(), "a refused token dead-letters nothing");
    let leads: Vec<ScoredLead> = before.into_iter().chain(refused).collect();
    exactly_once(&crm, &leads);
    assert!(crm.faults().get("401").is_some_and(|n| *n > 0));
    assert!(
        !sink_log(&env, "a").contains(TOKEN),
        "the token is never logged"
    );
}
