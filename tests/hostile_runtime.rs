//! Records that can never be written, and a partition that cannot move, through the
//! pass-through processor on the real stack: an output over its topic's record budget is
//! dead-lettered before anything is sent; an output the broker refuses (its topic's cap drifted
//! below the topology's) is retried alone and then dead-lettered, while its batch neighbours
//! still come out exactly once; a stalled partition turns `/readyz` not-ready with the reason,
//! names itself in a metric, and recovers on its own.

use std::time::{Duration, Instant};

use mailstream_tests::pipeline::metric;
use mailstream_tests::{
    Seen, TestEnv, bench_id, bench_record, collect, decode, free_port, http_get, terminate,
};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;

const IN: &str = "bench.in";
const OUT: &str = "bench.out";
const DLQ: &str = "bench.in.dlq";

/// Sets topic configs on the broker behind the topology's back (drift an operator could make).
async fn alter_topic(env: &TestEnv, logical: &str, entries: &[(&str, &str)]) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &env.stack.bootstrap)
        .create()
        .expect("admin client");
    let topic = env.topic(logical);
    let config = entries.iter().fold(
        AlterConfig::new(ResourceSpecifier::Topic(&topic)),
        |c, (k, v)| c.set(k, v),
    );
    let results = admin
        .alter_configs(&[config], &AdminOptions::new())
        .await
        .expect("alter configs");
    for result in results {
        result.expect("topic config altered");
    }
}

async fn ids(env: &TestEnv, seen: &[Seen]) -> Vec<String> {
    let mut ids = Vec::new();
    for record in seen {
        let payload = record.payload.as_deref().expect("payload");
        ids.push(bench_id(&decode(env.registry(), payload).await));
    }
    ids
}

/// Runs the pass-through until `want` outputs came out, then reads the dead letters: (the
/// outputs' ids in order, the dead letters).
async fn pass_through(env: &TestEnv, want: usize) -> (Vec<String>, Vec<Seen>) {
    let mut child = env.spawn("passthrough", "a", &[]);
    let out = collect(
        &env.consumer(&[OUT]),
        want,
        Duration::from_secs(90),
        Duration::from_secs(3),
    )
    .await;
    let dlq = collect(
        &env.consumer(&[DLQ]),
        1,
        Duration::from_secs(30),
        Duration::from_secs(1),
    )
    .await;
    terminate(&mut child, Duration::from_secs(30));
    (ids(env, &out).await, dlq)
}

/// Produces bench records `(id, payload size)` under one key, so they share a partition.
async fn produce(env: &TestEnv, records: &[(&str, usize)]) {
    let mut encoded = Vec::new();
    for (id, size) in records {
        encoded.push((
            "same".to_string(),
            env.encode(IN, bench_record(id, *size)).await,
        ));
    }
    env.produce(IN, encoded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_over_its_topic_budget_is_dead_lettered_and_the_stream_goes_on() {
    let env = TestEnv::new("budget");
    // bench.out takes the broker default (1,048,588 bytes); its record budget is 64 KiB less.
    produce(&env, &[("before", 10), ("huge", 990_000), ("after", 10)]).await;
    let (out, dlq) = pass_through(&env, 2).await;
    assert_eq!(out, ["before", "after"]);
    assert_eq!(dlq.len(), 1, "only the oversized record is dead-lettered");
    let h = &dlq[0].headers;
    assert_eq!(h["mailstream.error.class"], "record-too-large");
    assert!(h["mailstream.error.message"].contains("bench.out"), "{h:?}");
    assert_eq!(h["mailstream.error.source.offset"], "1");
    assert!(
        dlq[0].payload.as_ref().is_some_and(|p| p.len() > 990_000),
        "the dead letter keeps the original value"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_the_broker_refuses_is_retried_alone_then_dead_lettered() {
    let env = TestEnv::new("refused");
    // The broker now takes less than the topology says: the runtime's own check passes the
    // 200 KB record, the broker refuses it (MESSAGE_TOO_LARGE).
    alter_topic(&env, OUT, &[("max.message.bytes", "100000")]).await;
    produce(
        &env,
        &[("one", 10), ("two", 10), ("big", 200_000), ("three", 10)],
    )
    .await;
    let (out, dlq) = pass_through(&env, 3).await;
    assert_eq!(
        out,
        ["one", "two", "three"],
        "the refused record's neighbours come out exactly once, in order"
    );
    assert_eq!(dlq.len(), 1, "only the refused record is dead-lettered");
    let h = &dlq[0].headers;
    assert_eq!(h["mailstream.error.class"], "output-refused");
    assert!(h["mailstream.error.message"].contains("too large"), "{h:?}");
    assert_eq!(h["mailstream.error.source.offset"], "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_partition_turns_readiness_off_with_the_reason_and_recovers() {
    let env = TestEnv::new("stall");
    // The broker refuses every record written to bench.out as too old (INVALID_TIMESTAMP, a
    // failure a retry can fix: the clock or the setting may change), until the operator puts
    // the setting back: records wait 1.5 s in the producer (linger) and the topic takes none
    // older than 0.5 s. The margin matters: the broker validates its own abort markers
    // against the same setting, and a marker refused wedges the transactional id in
    // PrepareAbort until the broker restarts (Kafka 4.3's coordinator never retries it), so
    // the setting must stay far above a marker's age (a millisecond or so).
    alter_topic(&env, OUT, &[("message.timestamp.before.max.ms", "500")]).await;
    produce(&env, &[("stuck", 10)]).await;
    let http = format!("127.0.0.1:{}", free_port());
    let mut child = env.spawn(
        "passthrough",
        "a",
        &[
            ("MAILSTREAM_HTTP_ADDR", http.as_str()),
            ("MAILSTREAM_STALL_TIMEOUT_MS", "2000"),
            ("MAILSTREAM_RETRY_BACKOFF_MAX_MS", "1000"),
            ("MAILSTREAM_RDKAFKA_MESSAGE_TIMEOUT_MS", "3000"),
            ("MAILSTREAM_RDKAFKA_LINGER_MS", "1500"),
        ],
    );
    let started = Instant::now();
    let (status, body) = loop {
        let (status, body) = http_get(&format!("http://{http}/readyz")).await;
        if status == 503 && body.contains("no progress") {
            break (status, body);
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "readiness never reported the stall; last: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(status, 503);
    assert!(body.contains("partitions ["), "{body}");
    let metrics = http_get(&format!("http://{http}/metrics")).await.1;
    assert!(
        metrics.contains("mailstream_partition_stalled_seconds{"),
        "the stall metric is served: {metrics}"
    );
    assert!(
        metric(&metrics, "mailstream_partition_stalled_seconds", &[]) > 0.0,
        "the stalled partition is named in the metric"
    );
    assert_eq!(
        http_get(&format!("http://{http}/healthz")).await.0,
        200,
        "a stalled stream is alive: restarting it would not help"
    );
    // The lag in seconds: the stuck record's age (refreshed at every retry and from librdkafka's
    // statistics every 5 s); in records, from the statistics, which the loop serves only
    // between transactional calls (each up to the 10 s transaction timeout).
    let lag = |metrics: &str| {
        (
            metric(metrics, "mailstream_consumer_lag", &[]),
            metric(metrics, "mailstream_consumer_lag_seconds", &[]),
        )
    };
    let started = Instant::now();
    loop {
        let (records, age) = lag(&http_get(&format!("http://{http}/metrics")).await.1);
        if age >= 3.0 {
            assert!(records <= 1.0, "one record waits: {records}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the stuck record never showed in the lag: {records} records, {age} s"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    alter_topic(
        &env,
        OUT,
        &[("message.timestamp.before.max.ms", "9223372036854775807")],
    )
    .await;
    let out = collect(
        &env.consumer(&[OUT]),
        1,
        Duration::from_secs(90),
        Duration::from_secs(1),
    )
    .await;
    assert_eq!(
        ids(&env, &out).await,
        ["stuck"],
        "the record comes out once"
    );
    let started = Instant::now();
    while http_get(&format!("http://{http}/readyz")).await.0 != 200 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "readiness did not come back"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let metrics = http_get(&format!("http://{http}/metrics")).await.1;
    assert_eq!(
        metric(&metrics, "mailstream_partition_stalled_seconds", &[]),
        0.0,
        "the metric clears once the partition moves"
    );
    let started = Instant::now();
    while lag(&http_get(&format!("http://{http}/metrics")).await.1) != (0.0, 0.0) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the lag did not return to 0 once caught up"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    terminate(&mut child, Duration::from_secs(30));
}
