//! The operator commands on the real stack: `replay` (dry run, refusal while the group has live
//! members, every target, and a replay of the parser and the CRM sink that changes nothing
//! downstream), `dlq list|show|replay` (decoded dead letters, re-injected exactly once),
//! `tail --from-datetime`, `lag`, `schemas check` and `topology docs --check`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use mailstream_tests::crm_db::{psql, sample_emails, samples, snapshot, spawn_stream_processors};
use mailstream_tests::mail::temp_dir;
use mailstream_tests::{
    Seen, TestEnv, bench_record, collect, ctl, now_ms, output, replay_when_stopped, terminate,
};
use rdkafka::producer::FutureRecord;
use serde_json::Value as Json;

/// Runs `mailstream ARGS` in the test's namespace: (exit code, stdout, stderr).
/// Runs a command that must succeed and print JSON.
fn ctl_json(env: &TestEnv, args: &[&str]) -> Json {
    let (code, out, err) = ctl(env, args);
    assert_eq!(code, 0, "mailstream {args:?} failed: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?} printed no JSON ({e}): {out}"))
}

/// `processor`'s committed offset per partition, from `mailstream lag --json`.
fn committed(env: &TestEnv, processor: &str) -> BTreeMap<i64, Option<i64>> {
    let lag = ctl_json(env, &["lag", processor, "--json"]);
    lag[0]["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .map(|p| {
            (
                p["partition"].as_i64().expect("partition"),
                p["committed"].as_i64(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_is_a_dry_run_refused_while_running_and_a_replayed_parser_and_sink_change_nothing() {
    let env = TestEnv::new("ops-replay");
    let schema = format!("ops_{}", &env.prefix[13..21].replace('-', "_"));
    for csv in ["contacts.csv", "accounts.csv"] {
        let (code, _, err) = ctl(
            &env,
            &[
                "tables",
                "load",
                samples().join(csv).to_str().expect("path"),
            ],
        );
        assert_eq!(code, 0, "{err}");
    }
    let blobs = temp_dir("ops-blobs");
    let blob_url = format!("file://{}", blobs.display());
    let files = sample_emails();
    let mut backfill = env.mailstream(&["backfill"]);
    backfill
        .args(&files)
        .env("MAILSTREAM_INGEST_BLOB_URL", &blob_url);
    let out = output(backfill);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut pipeline = spawn_stream_processors(&env, &blob_url, &schema);
    let expected = files.len() - 1; // all but the not-an-email sample
    let crm_results = env.consumer(&["crm-results"]);
    let mut first = collect(
        &crm_results,
        expected,
        Duration::from_secs(180),
        Duration::from_secs(3),
    )
    .await;
    // A reply the resolver met before its parent (backfill feeds them all at once) is linked
    // in the parent's transaction: its second record reaches the CRM moments later.
    first.extend(collect(&crm_results, 2, Duration::from_secs(5), Duration::ZERO).await);
    let distinct: BTreeSet<&Option<String>> = first.iter().map(|r| &r.key).collect();
    assert_eq!(
        distinct.len(),
        expected,
        "a crm-result for every distinct email"
    );
    assert!(
        first.len() - expected <= 2,
        "at most one more for each of the two replies (10-, 11-): {}",
        first.len()
    );
    let before = snapshot(&schema);
    let activities: usize = psql(&format!("SELECT count(*) FROM {schema}.email_activities"))
        .parse()
        .expect("a count");
    assert!(
        activities >= 5,
        "the CRM holds the emails: {activities} activities"
    );
    let parser_before = committed(&env, "parser");
    assert!(
        parser_before.values().any(|c| c.is_some_and(|o| o > 0)),
        "{parser_before:?}"
    );

    // A dry run prints current → new per partition and changes nothing.
    let (code, out, err) = ctl(&env, &["replay", "parser", "--to-earliest"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("dry run: nothing changed"), "{out}");
    assert_eq!(
        out.matches(" → ").count(),
        6,
        "one line per partition: {out}"
    );
    assert!(
        out.contains("live member"),
        "the dry run warns about the running parser: {out}"
    );
    assert_eq!(committed(&env, "parser"), parser_before);

    // --execute while the parser runs is refused, naming the members and what to do.
    let (code, _, err) = ctl(&env, &["replay", "parser", "--to-earliest", "--execute"]);
    assert_ne!(code, 0);
    for needle in [
        "refusing",
        "1 live member",
        "mailstream-a",
        "Stop every instance of `parser`",
        "mailstream lag parser",
    ] {
        assert!(err.contains(needle), "{needle} in: {err}");
    }
    assert_eq!(committed(&env, "parser"), parser_before);

    // Stopped, the parser and the sink are rewound; started again, nothing changes downstream.
    for child in &mut pipeline {
        terminate(child, Duration::from_secs(30));
    }
    let resolved_before = collect(
        &env.consumer(&["resolved"]),
        expected,
        Duration::from_secs(10),
        Duration::from_secs(1),
    )
    .await;
    let out = replay_when_stopped(&env, &["replay", "parser", "--to-earliest", "--execute"]);
    assert!(out.contains("moved 6 partition offset(s)"), "{out}");
    assert!(
        committed(&env, "parser").values().all(|c| *c == Some(0)),
        "parser back at 0"
    );
    replay_when_stopped(&env, &["replay", "crm-sink", "--to-earliest", "--execute"]);
    assert!(committed(&env, "crm-sink").values().all(|c| *c == Some(0)));
    let mut pipeline = spawn_stream_processors(&env, &blob_url, &schema);
    let replayed = collect(
        &crm_results,
        expected,
        Duration::from_secs(120),
        Duration::from_secs(5),
    )
    .await;
    let duplicates = collect(
        &env.consumer(&["duplicates"]),
        expected,
        Duration::from_secs(60),
        Duration::from_secs(2),
    )
    .await;
    for child in &mut pipeline {
        terminate(child, Duration::from_secs(30));
    }
    assert_eq!(
        replayed.len(),
        first.len(),
        "the sink re-read every scored record once"
    );
    assert_eq!(
        duplicates.len(),
        expected,
        "the resolver collapsed every re-parsed email"
    );
    let resolved_after = collect(
        &env.consumer(&["resolved"]),
        expected,
        Duration::from_secs(10),
        Duration::from_secs(2),
    )
    .await;
    assert_eq!(
        resolved_after.len(),
        resolved_before.len(),
        "no new resolved record"
    );
    assert_eq!(
        snapshot(&schema),
        before,
        "no CRM row changed or was rewritten"
    );
    assert_eq!(
        psql(&format!(
            "SELECT count(*) FROM {schema}.email_activities GROUP BY message_id HAVING count(*) > 1"
        )),
        "",
        "no duplicate activity"
    );
}

/// Produces `count` bench records to partition 0 of bench.in, one second apart from `base`.
async fn bench_records_at(env: &TestEnv, base: i64, count: i64) {
    let producer = env.producer();
    let topic = env.topic("bench.in");
    for i in 0..count {
        let payload = env
            .encode("bench.in", bench_record(&format!("r{i}"), 8))
            .await;
        let key = format!("r{i}");
        producer
            .send(
                FutureRecord::to(&topic)
                    .partition(0)
                    .timestamp(base + i * 1000)
                    .key(&key)
                    .payload(&payload),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("delivered");
    }
}

fn rfc3339(millis: i64) -> String {
    chrono::DateTime::from_timestamp_millis(millis)
        .expect("valid time")
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_to_an_offset_by_a_shift_and_to_a_time_clamps_to_the_log_and_tail_starts_at_a_time()
{
    let env = TestEnv::new("ops-offsets");
    let base = now_ms() - 600_000;
    bench_records_at(&env, base, 10).await;
    let p0 = |env: &TestEnv| committed(env, "passthrough")[&0];
    let replay = |args: &[&str]| {
        let mut all = vec!["replay", "passthrough"];
        all.extend_from_slice(args);
        let (code, out, err) = ctl(&env, &all);
        assert_eq!(code, 0, "{all:?}: {err}");
        out
    };

    replay(&["--to-offset", "0:3", "--execute"]);
    let after = committed(&env, "passthrough");
    assert_eq!(after[&0], Some(3));
    assert!(
        after
            .iter()
            .filter(|(p, _)| **p != 0)
            .all(|(_, c)| c.is_none()),
        "only partition 0: {after:?}"
    );
    replay(&["--shift-by", "4", "--partitions", "0", "--execute"]);
    assert_eq!(p0(&env), Some(7));
    let out = replay(&["--shift-by", "-100", "--partitions", "0", "--execute"]);
    assert!(out.contains("clamped to 0"), "{out}");
    assert_eq!(p0(&env), Some(0));
    let out = replay(&[
        "--to-datetime",
        &rfc3339(base + 4500),
        "--partitions",
        "0",
        "--execute",
    ]);
    assert!(out.contains("0 →        5"), "{out}");
    assert_eq!(p0(&env), Some(5), "the first record at or after the time");
    let out = replay(&[
        "--to-datetime",
        &rfc3339(base + 60_000),
        "--partitions",
        "0",
    ]);
    assert!(
        out.contains("no record at or after the time") && out.contains("dry run"),
        "{out}"
    );
    assert_eq!(p0(&env), Some(5), "a dry run changes nothing");
    let out = replay(&["--to-offset", "0:99", "--execute"]);
    assert!(
        out.contains("99 is past the log end: clamped to 10"),
        "{out}"
    );
    assert_eq!(p0(&env), Some(10));
    let plan = ctl_json(&env, &["replay", "passthrough", "--to-earliest", "--json"]);
    assert_eq!(plan["executed"], false);
    assert_eq!(plan["partitions"][0]["current"], 10);
    assert_eq!(plan["partitions"][0]["new"], 0);
    assert_eq!(p0(&env), Some(10));

    // Mistakes say what to do.
    let (code, _, err) = ctl(&env, &["replay", "passthrough", "--to-offset", "9:1"]);
    assert!(code != 0 && err.contains("has no partition 9"), "{err}");
    let (code, _, err) = ctl(&env, &["replay", "ingest", "--to-earliest"]);
    assert!(code != 0 && err.contains("reads no topic"), "{err}");
    let (code, _, err) = ctl(&env, &["replay", "nosuch", "--to-earliest"]);
    assert!(code != 0 && err.contains("known: "), "{err}");
    let (code, _, err) = ctl(
        &env,
        &["replay", "passthrough", "--to-datetime", "yesterday"],
    );
    assert!(code != 0 && err.contains("RFC 3339"), "{err}");

    // tail --from-datetime starts at the same record.
    let from = rfc3339(base + 4500);
    let (code, out, err) = ctl(
        &env,
        &[
            "tail",
            "bench.in",
            "--from-datetime",
            &from,
            "--limit",
            "5",
            "--idle-timeout",
            "15",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let lines: Vec<Json> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let offsets: Vec<i64> = lines
        .iter()
        .map(|l| l["offset"].as_i64().expect("offset"))
        .collect();
    assert_eq!(offsets, [5, 6, 7, 8, 9]);
    assert_eq!(lines[0]["key"], "r5");
    assert_eq!(
        lines[0]["value"]["id"], "r5",
        "decoded through the registry"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_lists_shows_and_replays_a_dead_letter_exactly_once_with_the_marker_header() {
    let env = TestEnv::new("ops-dlq");
    let blobs = temp_dir("ops-dlq-blobs");
    let blob_url = format!("file://{}", blobs.display());
    env.produce_with_headers(
        "raw-email",
        "poison-1",
        b"not avro at all",
        &[("x-origin", "test")],
    )
    .await;
    let mut backfill = env.mailstream(&["backfill"]);
    backfill
        .arg(samples().join("09-not-an-email.eml"))
        .env("MAILSTREAM_INGEST_BLOB_URL", &blob_url);
    assert!(output(backfill).status.success());
    let mut parser = env.spawn(
        "parser",
        "a",
        &[("MAILSTREAM_PARSER_BLOB_URL", blob_url.as_str())],
    );
    let dead = collect(
        &env.consumer(&["raw-email.dlq"]),
        2,
        Duration::from_secs(60),
        Duration::from_secs(1),
    )
    .await;
    terminate(&mut parser, Duration::from_secs(30));
    assert_eq!(dead.len(), 2);
    let originals = collect(
        &env.consumer(&["raw-email"]),
        2,
        Duration::from_secs(10),
        Duration::from_secs(1),
    )
    .await;

    let list = ctl_json(&env, &["dlq", "list", "raw-email", "--json"]);
    let by_class: BTreeMap<String, &Json> = list
        .as_array()
        .expect("list")
        .iter()
        .map(|l| (l["class"].as_str().unwrap_or("").to_string(), l))
        .collect();
    let poison = by_class["avro-decode"];
    let not_mail = by_class["mime-unparseable"];
    assert_eq!(poison["processor"], "parser");
    assert!(
        poison["reason"]
            .as_str()
            .is_some_and(|r| r.contains("magic byte")),
        "{poison}"
    );
    assert!(
        not_mail["reason"]
            .as_str()
            .is_some_and(|r| r.contains("not an RFC 5322 message")),
        "{not_mail}"
    );
    let at = |l: &Json| format!("{}:{}", l["partition"], l["offset"]);
    let (code, out, _) = ctl(&env, &["dlq", "list"]);
    assert_eq!(code, 0);
    assert!(
        out.contains(&format!("raw-email.dlq {}  mime-unparseable", at(not_mail))),
        "{out}"
    );

    // show: the Avro one decoded through the registry, the other as a text preview; headers.
    let (code, out, err) = ctl(&env, &["dlq", "show", "raw-email.dlq", &at(not_mail)]);
    assert_eq!(code, 0, "{err}");
    for needle in [
        "mailstream.error.class: mime-unparseable",
        "decoded through the registry",
        "\"source\": \"BACKFILL\"",
        "09-not-an-email.eml",
    ] {
        assert!(out.contains(needle), "{needle} in: {out}");
    }
    let shown = ctl_json(&env, &["dlq", "show", "raw-email", &at(poison), "--json"]);
    assert_eq!(shown["value"], Json::Null);
    assert_eq!(shown["value_preview"]["utf8"], "not avro at all");
    assert_eq!(shown["headers"]["x-origin"], "test");
    assert_eq!(
        shown["headers"]["mailstream.error.source.topic"],
        "raw-email"
    );

    // replay: a dry run writes nothing; --execute twice re-injects each exactly once.
    let (code, out, _) = ctl(&env, &["dlq", "replay", "raw-email.dlq", "--all"]);
    assert!(
        code == 0 && out.contains("dry run: 2 would be re-injected"),
        "{out}"
    );
    let (code, _, err) = ctl(
        &env,
        &[
            "dlq",
            "replay",
            "raw-email.dlq",
            "--select",
            "0:99",
            "--execute",
        ],
    );
    assert!(
        code != 0 && err.contains("no dead letter at raw-email.dlq 0:99"),
        "{err}"
    );
    let (code, out, err) = ctl(
        &env,
        &["dlq", "replay", "raw-email.dlq", "--all", "--execute"],
    );
    assert!(
        code == 0 && out.contains("2 re-injected, 0 already replayed"),
        "{out}{err}"
    );
    let again = ctl_json(
        &env,
        &[
            "dlq",
            "replay",
            "raw-email.dlq",
            "--class",
            "avro-decode",
            "--execute",
            "--json",
        ],
    );
    assert_eq!(again["records"].as_array().map(Vec::len), Some(1));
    assert_eq!(again["records"][0]["action"], "already-replayed");
    let (_, out, _) = ctl(
        &env,
        &["dlq", "replay", "raw-email.dlq", "--all", "--execute"],
    );
    assert!(out.contains("0 re-injected, 2 already replayed"), "{out}");

    let all: Vec<Seen> = collect(
        &env.consumer(&["raw-email"]),
        4,
        Duration::from_secs(20),
        Duration::from_secs(3),
    )
    .await;
    let replays: Vec<&Seen> = all
        .iter()
        .filter(|s| s.headers.contains_key("mailstream.replay.of"))
        .collect();
    assert_eq!(all.len(), 4, "two originals and one copy of each");
    assert_eq!(replays.len(), 2);
    for r in &replays {
        let of = &r.headers["mailstream.replay.of"];
        let original = originals
            .iter()
            .find(|o| o.key == r.key)
            .expect("same key as an original");
        assert_eq!(r.payload, original.payload, "original value");
        assert_eq!(r.partition, original.partition, "original partition");
        assert!(of.starts_with("raw-email.dlq/0/"), "{of}");
        assert!(
            !r.headers.keys().any(|k| k.starts_with("mailstream.error.")),
            "{:?}",
            r.headers
        );
        if r.key.as_deref() == Some("poison-1") {
            assert_eq!(
                r.headers.get("x-origin").map(String::as_str),
                Some("test"),
                "original headers kept"
            );
        }
    }
    let (_, out, _) = ctl(&env, &["dlq", "list", "raw-email.dlq"]);
    assert_eq!(out.matches("[replayed → raw-email/").count(), 2, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_shows_committed_end_and_lag_per_partition() {
    let env = TestEnv::new("ops-lag");
    let records: Vec<(String, Vec<u8>)> =
        (0..7).map(|i| (format!("k{i}"), b"x".to_vec())).collect();
    env.produce("raw-email", records).await;
    let lag = ctl_json(&env, &["lag", "parser", "--json"]);
    let parser = &lag[0];
    assert_eq!(parser["processor"], "parser");
    assert_eq!(parser["topic"], "raw-email");
    assert_eq!(parser["total_lag"], 7);
    assert_eq!(parser["members"].as_array().map(Vec::len), Some(0));
    let partitions = parser["partitions"].as_array().expect("partitions");
    assert_eq!(partitions.len(), 6);
    assert_eq!(
        partitions
            .iter()
            .map(|p| p["end"].as_i64().unwrap_or(-1))
            .sum::<i64>(),
        7
    );
    assert!(
        partitions
            .iter()
            .all(|p| p["committed"].is_null() && p["lag"] == p["end"])
    );
    let (code, out, _) = ctl(&env, &["lag"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("parser       total lag 7") && out.contains("no live members"),
        "{out}"
    );
    for p in ["resolver", "scorer", "crm-sink"] {
        assert!(out.contains(&format!("{p:<12} total lag 0")), "{out}");
    }
    ctl(&env, &["replay", "parser", "--to-latest", "--execute"]);
    let lag = ctl_json(&env, &["lag", "parser", "--json"]);
    assert_eq!(lag[0]["total_lag"], 0);
    let (code, _, err) = ctl(&env, &["lag", "ingest"]);
    assert!(code != 0 && err.contains("reads no topic"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemas_check_passes_for_the_build_and_names_the_field_of_a_breaking_change() {
    let env = TestEnv::new("ops-schemas");
    let (code, out, err) = ctl(&env, &["schemas", "check"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("0 incompatible"), "{out}");

    // A fresh namespace whose bench.in subject holds a schema without `sent_at`: the build's
    // schema adds it as a required field without a default, which BACKWARD refuses.
    let fresh = TestEnv::with_prefix(env.stack.clone(), &format!("{}v2-", env.prefix));
    let old = serde_json::json!({
        "type": "record", "name": "BenchRecord", "namespace": "io.mailstream.bench",
        "fields": [{"name": "id", "type": "string"}, {"name": "payload", "type": "bytes"}]
    });
    let response = reqwest::Client::new()
        .post(format!(
            "{}/subjects/{}bench.in-value/versions",
            env.stack.registry, fresh.prefix
        ))
        .header("content-type", "application/vnd.schemaregistry.v1+json")
        .json(&serde_json::json!({"schema": old.to_string()}))
        .send()
        .await
        .expect("registry reachable");
    assert!(
        response.status().is_success(),
        "{:?}",
        response.text().await
    );
    let (code, out, err) = ctl(&fresh, &["schemas", "check"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("incompatible") && out.contains("sent_at"),
        "the field is named: {out}"
    );
    assert!(err.contains("bench-record.avsc"), "{err}");
    let report: Json = serde_json::from_str(
        &ctl(
            &fresh,
            &["schemas", "check", "--topic", "bench.in", "--json"],
        )
        .1,
    )
    .expect("JSON");
    assert_eq!(report["ok"], false);
    assert_eq!(report["subjects"][0]["status"], "incompatible");
    assert!(
        report["subjects"][0]["messages"]
            .to_string()
            .contains("sent_at")
    );
    let (_, out, _) = ctl(&fresh, &["schemas", "check", "--topic", "raw-email"]);
    assert!(
        out.starts_with("new "),
        "a subject not registered yet is new: {out}"
    );
}

#[test]
fn topology_docs_are_current_and_a_stale_copy_names_the_command() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let env = TestEnv::with_prefix(mailstream_tests::Stack::get(), "");
    let run = |args: &[&str]| {
        let mut cmd = env.mailstream(args);
        cmd.current_dir(&root);
        output(cmd)
    };
    let out = run(&["topology", "docs", "--check"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stale = temp_dir("docs").join("TOPOLOGY.md");
    std::fs::write(&stale, "# old\n").expect("write");
    let out = run(&[
        "topology",
        "docs",
        "--check",
        "--out",
        stale.to_str().expect("path"),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("is stale")
            && err.contains("`mailstream topology docs`"),
        "{err}"
    );
    let out = run(&["topology", "docs", "--out", stale.to_str().expect("path")]);
    assert!(out.status.success());
    assert_eq!(
        std::fs::read_to_string(&stale).expect("written"),
        std::fs::read_to_string(root.join("topology/TOPOLOGY.md")).expect("committed")
    );
}
