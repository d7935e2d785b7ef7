//! Erasure on the real stack: three emails over SMTP through every processor into PostgreSQL —
//! two of them with Erin taking part (one from her with a private and a shared attachment, one
//! to her in Cc) and one without her that carries the same shared attachment. `mailstream erase`
//! first reports exactly what it would remove and changes nothing; with `--execute` it removes
//! her CRM rows, her compacted-table keys and her private blob (not the shared one), records her
//! in `erasures` by a keyed hash only, and says until when the stream topics keep copies. Then
//! every processor is replayed from the earliest offset and nothing of her comes back.

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine;
use mailstream_runtime::records::{CrmResult, Erasure};
use mailstream_tests::crm_db::{
    SAMPLE_DOMAIN, clamd_address, database_url, psql, schema_of, spawn_stream_processors_with,
};
use mailstream_tests::mail::{any_file_contains, smtplib, start, temp_dir};
use mailstream_tests::{Seen, TestEnv, collect, decode_as, replay_when_stopped, terminate};

const ERIN: &str = "erin@erase-me.example";
const FRANK: &str = "frank@keep-me.example";
const KEY: &str = "erasure-test-key-0123456789";
const PRIVATE: &str = "Erin's private salary expectations: confidential.\n";
const SHARED: &str = "Product brochure 2026: fleet telematics for everyone.\n";

fn message(id: &str, from: &str, cc: Option<&str>, attachments: &[(&str, &str)]) -> String {
    let b64 = |text: &str| base64::engine::general_purpose::STANDARD.encode(text);
    let cc = cc.map(|c| format!("Cc: {c}\r\n")).unwrap_or_default();
    let parts: String = attachments
        .iter()
        .map(|(name, body)| {
            format!(
                "--b1\r\nContent-Type: text/plain; name=\"{name}\"\r\n\
                 Content-Disposition: attachment; filename=\"{name}\"\r\n\
                 Content-Transfer-Encoding: base64\r\n\r\n{}\r\n",
                b64(body)
            )
        })
        .collect();
    format!(
        "From: {from}\r\nTo: sales@{SAMPLE_DOMAIN}\r\n{cc}Subject: Fleet pricing {id}\r\n\
         Message-ID: <{id}>\r\nDate: Mon, 1 Dec 2025 10:00:00 +0000\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n\
         --b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nWhat does the fleet plan cost?\r\n\
         {parts}--b1--\r\n"
    )
}

/// Rows of every CRM table in `schema` whose JSON mentions `text`, as `table: count` lines.
fn crm_rows_mentioning(schema: &str, text: &str) -> String {
    let tables = [
        "contacts",
        "email_activities",
        "attachments",
        "leads",
        "follow_ups",
    ];
    tables
        .iter()
        .map(|t| {
            let n = psql(&format!(
                "SELECT count(*) FROM {schema}.{t} r WHERE lower(row_to_json(r)::text) LIKE '%{text}%'"
            ));
            format!("{t}: {n}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The latest record per key of a compacted topic (`None`: a tombstone).
fn latest(records: &[Seen]) -> HashMap<String, Option<Vec<u8>>> {
    records
        .iter()
        .filter_map(|r| Some((r.key.clone()?, r.payload.clone())))
        .collect()
}

fn contains(bytes: &[u8], text: &str) -> bool {
    bytes.windows(text.len()).any(|w| w == text.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erased_person_is_gone_from_the_crm_tables_and_blobs_and_stays_gone_after_a_replay() {
    let env = TestEnv::new("erase");
    let schema = schema_of(&env);
    let blobs = temp_dir("erase-blobs");
    let blob_url = format!("file://{}", blobs.display());
    let clamd = clamd_address();
    let parser_vars = [("MAILSTREAM_PARSER_CLAMD_ADDRESS", clamd.as_str())];
    let common = [("MAILSTREAM_ERASURE_KEY", KEY)];
    let mut ingest = start(
        &env,
        &blobs,
        &[("MAILSTREAM_INGEST_ACCEPTED_DOMAINS", SAMPLE_DOMAIN)],
    )
    .await;
    let mut processors =
        spawn_stream_processors_with(&env, &blob_url, &schema, &parser_vars, &common);

    let run = uuid::Uuid::new_v4().simple().to_string();
    let id = |n: &str| format!("{n}-{}@mail.example", &run[..8]);
    let (from_erin, erin_in_cc, franks) = (id("erin-1"), id("frank-cc-erin"), id("frank-2"));
    let mails = [
        message(
            &from_erin,
            &format!("Erin Example <{ERIN}>"),
            None,
            &[("private.txt", PRIVATE), ("brochure.txt", SHARED)],
        ),
        message(&erin_in_cc, FRANK, Some(ERIN), &[]),
        message(&franks, FRANK, None, &[("brochure.txt", SHARED)]),
    ];
    let dir = temp_dir("erase-mail");
    for (n, mail) in mails.iter().enumerate() {
        let file = dir.join(format!("{n}.eml"));
        std::fs::write(&file, mail).expect("write a message");
        let sent = smtplib(
            ingest.smtp,
            &file,
            "relay@mail.example",
            "mail.example",
            &[&format!("sales@{SAMPLE_DOMAIN}")],
        );
        assert!(sent.contains("SENT"), "{sent}");
    }
    let crm_results = env.consumer(&["crm-results"]);
    let first = collect(&crm_results, 3, Duration::from_secs(120), Duration::ZERO).await;
    assert_eq!(first.len(), 3, "the three emails reached the CRM");
    for child in processors.iter_mut().chain([&mut ingest.child]) {
        terminate(child, Duration::from_secs(30));
    }
    assert!(
        crm_rows_mentioning(&schema, ERIN).contains("contacts: 1"),
        "the sink created Erin's contact: {}",
        crm_rows_mentioning(&schema, ERIN)
    );

    // A dry run reports and changes nothing.
    let db = database_url();
    let erase = |execute: bool| {
        let mut args = vec!["erase", "--email", "Erin@Erase-Me.example", "--json"];
        if execute {
            args.push("--execute");
        }
        let mut cmd = env.mailstream(&args);
        cmd.env("MAILSTREAM_ERASURE_KEY", KEY)
            .env("MAILSTREAM_CRM_SINK_DATABASE_URL", &db)
            .env("MAILSTREAM_CRM_SINK_SCHEMA", &schema)
            .env("MAILSTREAM_PARSER_BLOB_URL", &blob_url);
        let out = mailstream_tests::output(cmd);
        assert!(
            out.status.success(),
            "erase failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(!text.contains("erin@"), "the report names nobody: {text}");
        serde_json::from_str::<serde_json::Value>(&text).expect("a JSON report")
    };
    let dry = erase(false);
    assert_eq!(dry["executed"], false);
    assert_eq!(dry["messages"], 2, "{dry}");
    assert!(crm_rows_mentioning(&schema, ERIN).contains("contacts: 1"));
    assert!(
        any_file_contains(&blobs, PRIVATE.as_bytes()),
        "a dry run deletes no blob"
    );

    let report = erase(true);
    for field in [
        "messages",
        "tombstones",
        "blobs_deleted",
        "blobs_shared",
        "crm",
    ] {
        assert_eq!(
            report[field], dry[field],
            "the dry run said what --execute did: {field}"
        );
    }
    assert_eq!(
        report["blobs_deleted"], 1,
        "the private attachment: {report}"
    );
    assert_eq!(
        report["blobs_shared"], 1,
        "the brochure Frank's email has too"
    );
    assert_eq!(report["crm"]["contacts"], 1, "{report}");
    assert_eq!(
        report["crm"]["activities"], 2,
        "her email and the one she was in Cc of"
    );
    assert_eq!(report["tombstones"]["contacts"], 1, "{report}");
    assert_eq!(report["tombstones"]["threads"], 2, "{report}");
    assert_eq!(report["tombstones"]["resolver.dedupe"], 2, "{report}");
    let copies = report["copies"].as_array().expect("copies");
    let parsed = copies
        .iter()
        .find(|c| c["topic"] == "parsed")
        .expect("parsed keeps copies until retention");
    assert_eq!(parsed["records"], 2);
    assert!(parsed["expires_by"].is_string(), "{parsed}");

    assert_eq!(
        crm_rows_mentioning(&schema, ERIN),
        "contacts: 0, email_activities: 0, attachments: 0, leads: 0, follow_ups: 0"
    );
    assert!(
        !any_file_contains(&blobs, PRIVATE.as_bytes()),
        "her private attachment is gone"
    );
    assert!(
        any_file_contains(&blobs, SHARED.as_bytes()),
        "the shared one stays"
    );
    let franks_activity =
        format!("SELECT count(*) FROM {schema}.email_activities WHERE message_id = '{franks}'");
    assert_eq!(psql(&franks_activity), "1", "Frank's own email stays");
    let frank_after_erasure = crm_rows_mentioning(&schema, FRANK);

    // Replay every processor from the start: the sink meets her scored records again, the
    // resolver her parsed ones.
    for processor in ["parser", "resolver", "scorer", "crm-sink"] {
        replay_when_stopped(&env, &["replay", processor, "--to-earliest", "--execute"]);
    }
    let mut processors =
        spawn_stream_processors_with(&env, &blob_url, &schema, &parser_vars, &common);
    // The sink reads the first run's three scored records (hers skipped as erased, Frank's
    // unchanged) and the replayed scorer's copy of Frank's: the scorer drops hers from the
    // first run's resolved records. The resolver drops both copies of each of hers (the first
    // run's parsed records and the replayed parser's) and collapses both of Frank's as seen.
    let replayed = collect(
        &crm_results,
        4,
        Duration::from_secs(120),
        Duration::from_secs(5),
    )
    .await;
    let duplicates = collect(
        &env.consumer(&["duplicates"]),
        2,
        Duration::from_secs(60),
        Duration::from_secs(2),
    )
    .await;
    for child in &mut processors {
        terminate(child, Duration::from_secs(30));
    }
    let results = decode_as(env.registry(), &replayed, |r: &CrmResult| {
        r.message_id.as_str()
    })
    .await;
    let outcomes = |id: &str| -> Vec<(String, Option<String>)> {
        results
            .iter()
            .filter(|r| r.message_id == id)
            .map(|r| (r.outcome.clone(), r.reason.clone()))
            .collect()
    };
    let erased = ("skipped".to_string(), Some("erased".to_string()));
    assert_eq!(outcomes(&from_erin), std::slice::from_ref(&erased));
    assert_eq!(outcomes(&erin_in_cc), [erased]);
    let franks_outcomes = outcomes(&franks);
    assert_eq!(franks_outcomes.len(), 2);
    assert!(
        franks_outcomes.iter().all(|(o, _)| o == "unchanged"),
        "{franks_outcomes:?}"
    );
    assert_eq!(
        results.len(),
        4,
        "nothing of hers came through the resolver or the scorer again"
    );
    assert_eq!(
        duplicates.len(),
        2,
        "both copies of Frank's email collapsed as seen"
    );
    assert_eq!(
        crm_rows_mentioning(&schema, ERIN),
        "contacts: 0, email_activities: 0, attachments: 0, leads: 0, follow_ups: 0",
        "the replay brought nothing of hers back"
    );
    assert_eq!(
        crm_rows_mentioning(&schema, FRANK),
        frank_after_erasure,
        "Frank's rows unchanged by the replay"
    );

    // The compacted topics: her keys end in tombstones; no latest value names her.
    for topic in ["contacts", "leads", "threads", "resolver.dedupe"] {
        let records = collect(
            &env.consumer(&[topic]),
            usize::MAX,
            Duration::from_secs(5),
            Duration::ZERO,
        )
        .await;
        for (key, value) in latest(&records) {
            let hers = key.contains("erin")
                || key == from_erin
                || key == erin_in_cc
                || value.as_deref().is_some_and(|v| contains(v, "erin"));
            assert!(
                !hers || value.is_none(),
                "{topic}: `{key}` still has a value"
            );
        }
    }
    // The erasure is recorded by a keyed hash, never by her address.
    let erasures = collect(
        &env.consumer(&["erasures"]),
        2,
        Duration::from_secs(10),
        Duration::from_secs(1),
    )
    .await;
    assert!(!erasures.is_empty());
    for record in &erasures {
        let key = record.key.as_deref().expect("keyed");
        assert!(
            key.len() == 64 && key.chars().all(|c| c.is_ascii_hexdigit()),
            "{key}"
        );
        assert!(!contains(
            record.payload.as_deref().unwrap_or_default(),
            "erin"
        ));
    }
    let recorded = decode_as(env.registry(), &erasures, |e: &Erasure| e.subject.as_str()).await;
    assert_eq!(recorded.last().map(|e| e.messages), Some(2));
    let _ = std::fs::remove_dir_all(&blobs);
}
