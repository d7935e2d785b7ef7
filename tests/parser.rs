//! The parser against the real stack: RawEmail records (inline and claim-checked) go to
//! `raw-email`, `mailstream run parser` turns them into `parsed` records keyed by message id,
//! poison records land in `raw-email.dlq` with their error headers while the stream goes on, and
//! `mailstream parse FILE` prints the same record as the processor wrote for that file.

use std::collections::BTreeMap;
use std::time::Duration;

use mailstream_runtime::AvroRecord;
use mailstream_runtime::blob::{BlobStore, sha256_hex};
use mailstream_runtime::records::{Envelope, IngestSource, ParsedEmail, RawEmail};
use mailstream_tests::mail::{comparable, fixture};
use mailstream_tests::{TestEnv, collect, decode, now_ms, output, terminate};

fn raw_email(id: &str, raw: Option<Vec<u8>>, blob: Option<(String, String)>) -> RawEmail {
    let (blob_uri, sha) = match (&raw, blob) {
        (_, Some((uri, sha))) => (Some(uri), sha),
        (Some(raw), None) => (None, sha256_hex(raw)),
        (None, None) => (None, String::new()),
    };
    RawEmail {
        ingest_id: id.into(),
        source: IngestSource::Smtp,
        received_at: now_ms(),
        envelope: Envelope {
            mail_from: Some("bounce@Sender.example".into()),
            rcpt_to: vec!["Deals@In.Example.com".into()],
            remote_addr: Some("127.0.0.1:40000".into()),
            helo: Some("mx.sender.example".into()),
        },
        size: raw.as_ref().map_or(0, |r| r.len() as i64),
        sha256: sha,
        raw,
        blob_uri,
        origin: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parser_normalizes_dead_letters_and_matches_the_cli() {
    let env = TestEnv::new("parser");
    let blob_dir = std::env::temp_dir().join(format!("parser-blobs-{}", uuid::Uuid::new_v4()));
    let blob_url = format!("file://{}", blob_dir.display());
    let blobs = BlobStore::open(&blob_url, &[]).expect("blob store");

    let read = |name: &str| std::fs::read(fixture(name)).expect("fixture");
    // The multipart fixture travels by claim check, as ingest sends large messages.
    let nested = read("nested-multipart.eml");
    let claim = blobs.put(nested.clone()).await.expect("put blob");
    let missing_blob = format!("{blob_url}/{}", sha256_hex(b"never stored"));
    let inputs = vec![
        raw_email("in-reply-top", Some(read("reply-top.eml")), None),
        raw_email("in-nested", None, Some(claim)),
        raw_email("in-dsn", Some(read("dsn.eml")), None),
        raw_email("in-not-email", Some(read("not-email.txt")), None),
        raw_email("in-nothing", None, None),
        raw_email(
            "in-blob-missing",
            None,
            Some((missing_blob, sha256_hex(b"never stored"))),
        ),
        raw_email("in-list", Some(read("list.eml")), None),
        raw_email("in-no-id", Some(read("no-message-id.eml")), None),
    ];
    let mut records = Vec::new();
    for input in inputs {
        let key = input.ingest_id.clone();
        let value = input.into_avro().expect("to avro");
        records.push((key, env.encode("raw-email", value).await));
    }
    env.produce("raw-email", records).await;

    let mut child = env.spawn(
        "parser",
        "a",
        &[("MAILSTREAM_PARSER_BLOB_URL", blob_url.as_str())],
    );
    let parsed_consumer = env.consumer(&["parsed"]);
    let dlq_consumer = env.consumer(&["raw-email.dlq"]);
    let parsed = collect(
        &parsed_consumer,
        5,
        Duration::from_secs(90),
        Duration::from_secs(2),
    )
    .await;
    let dead = collect(
        &dlq_consumer,
        3,
        Duration::from_secs(30),
        Duration::from_secs(1),
    )
    .await;
    let status = terminate(&mut child, Duration::from_secs(30));
    assert!(status.success(), "graceful shutdown exits 0, got {status}");

    // Parsed records: keyed by message id, one per good input.
    let mut by_ingest: BTreeMap<String, ParsedEmail> = BTreeMap::new();
    for seen in &parsed {
        let value = decode(env.registry(), seen.payload.as_deref().expect("payload")).await;
        let record = ParsedEmail::from_avro(value).expect("a ParsedEmail");
        assert_eq!(
            seen.key.as_deref(),
            Some(record.message_id.as_str()),
            "keyed by message_id"
        );
        by_ingest.insert(record.ingest_id.clone(), record);
    }
    assert_eq!(
        by_ingest.keys().map(String::as_str).collect::<Vec<_>>(),
        ["in-dsn", "in-list", "in-nested", "in-no-id", "in-reply-top"],
        "every good record parsed exactly once ({} records)",
        parsed.len()
    );
    assert_eq!(parsed.len(), 5, "no duplicates");

    let top = &by_ingest["in-reply-top"];
    assert_eq!(top.message_id, "CAF=top.1@mail.client.example");
    assert_eq!(top.in_reply_to.as_deref(), Some("meeting.1@example.com"));
    assert_eq!(
        top.stripped_text.as_deref(),
        Some("Tuesday at 2pm works for us. I'll bring our CTO.")
    );
    assert_eq!(top.envelope_rcpt_to, ["Deals@in.example.com"]);
    assert_eq!(
        top.envelope_mail_from.as_deref(),
        Some("bounce@sender.example")
    );

    let nested_record = &by_ingest["in-nested"];
    assert_eq!(nested_record.attachments.len(), 3);
    for attachment in &nested_record.attachments {
        let uri = attachment.blob_uri.as_deref().expect("attachment stored");
        let bytes = blobs
            .get(uri, Some(&attachment.sha256))
            .await
            .expect("attachment bytes in the blob store");
        assert_eq!(bytes.len() as i64, attachment.size);
    }
    assert_eq!(
        nested_record.attachments[2].filename.as_deref(),
        Some("Angebot für Müller – v2.docx")
    );
    assert!(
        !nested_record
            .html
            .as_deref()
            .unwrap_or_default()
            .contains("mailtrack.io")
    );

    let dsn = &by_ingest["in-dsn"];
    let bounce = dsn.bounce.as_ref().expect("a bounce");
    assert_eq!(bounce.failed_recipients, ["nobody@unknown.example.org"]);
    assert_eq!(bounce.status.as_deref(), Some("5.1.1"));
    assert_eq!(
        by_ingest["in-list"]
            .list
            .as_ref()
            .and_then(|l| l.list_id.as_deref()),
        Some("dev.lists.example.org")
    );
    assert!(by_ingest["in-no-id"].message_id_generated);

    // Dead letters: original key, error headers, class per cause.
    let mut classes = BTreeMap::new();
    for seen in &dead {
        let key = seen.key.clone().expect("key kept");
        for header in [
            "mailstream.error.class",
            "mailstream.error.message",
            "mailstream.error.processor",
            "mailstream.error.source.topic",
            "mailstream.error.time",
        ] {
            assert!(seen.headers.contains_key(header), "{key}: {header} missing");
        }
        assert_eq!(seen.headers["mailstream.error.processor"], "parser");
        assert_eq!(seen.headers["mailstream.error.source.topic"], "raw-email");
        classes.insert(key, seen.headers["mailstream.error.class"].clone());
    }
    assert_eq!(
        classes,
        BTreeMap::from([
            ("in-blob-missing".to_string(), "blob-missing".to_string()),
            ("in-not-email".to_string(), "mime-unparseable".to_string()),
            ("in-nothing".to_string(), "mime-missing".to_string()),
        ])
    );

    // The offline command prints the same record for the same file.
    for (ingest_id, file) in [
        ("in-reply-top", "reply-top.eml"),
        ("in-nested", "nested-multipart.eml"),
        ("in-dsn", "dsn.eml"),
    ] {
        let path = fixture(file);
        let out = output(env.mailstream(&[
            "parse",
            "--blob-url",
            &blob_url,
            path.to_str().expect("utf-8 path"),
        ]));
        assert!(
            out.status.success(),
            "mailstream parse {file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8(out.stdout).expect("utf-8 output");
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.len(), 1, "one JSON line per message");
        let cli: ParsedEmail = serde_json::from_str(lines[0]).expect("a ParsedEmail as JSON");
        assert_eq!(
            comparable(&cli),
            comparable(&by_ingest[ingest_id]),
            "{file}: CLI and processor agree"
        );
    }
    let _ = std::fs::remove_dir_all(&blob_dir);
}

#[test]
fn parse_command_reads_mbox_and_stdin_and_fails_on_non_email() {
    let env = TestEnv::with_prefix(mailstream_tests::Stack::get(), "unused-");
    let mbox = fixture("two-messages.mbox");
    let out = output(env.mailstream(&["parse", mbox.to_str().expect("path")]));
    assert!(out.status.success());
    let records: Vec<ParsedEmail> = String::from_utf8(out.stdout)
        .expect("utf-8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json record"))
        .collect();
    assert_eq!(records.len(), 2, "an mbox is split into its messages");
    assert_eq!(records[0].message_id, "mbox.1@example.com");
    assert_eq!(
        records[0].text.as_deref(),
        Some("First message.\nFrom the mbox escaping.")
    );
    assert_eq!(records[1].subject.as_deref(), Some("Second"));

    let bad = fixture("not-email.txt");
    let out = output(env.mailstream(&["parse", bad.to_str().expect("path")]));
    assert_eq!(out.status.code(), Some(1), "non-email exits 1");
    assert!(String::from_utf8_lossy(&out.stderr).contains("mime-unparseable"));
    assert!(out.stdout.is_empty());

    let mut cmd = env.mailstream(&["parse", "-"]);
    cmd.stdin(std::fs::File::open(fixture("qp-latin1.eml")).expect("open"));
    let out = output(cmd);
    assert!(out.status.success());
    let record: ParsedEmail =
        serde_json::from_slice(out.stdout.trim_ascii_end()).expect("json record");
    assert_eq!(record.subject.as_deref(), Some("Devis société Müller"));
    assert_eq!(record.ingest_id, "stdin");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn card_numbers_ibans_and_configured_ids_are_masked_before_anything_is_written() {
    let env = TestEnv::new("redact");
    let blob_dir = std::env::temp_dir().join(format!("redact-blobs-{}", uuid::Uuid::new_v4()));
    let blob_url = format!("file://{}", blob_dir.display());
    let blobs = BlobStore::open(&blob_url, &[]).expect("blob store");
    // The body is longer than the record keeps (1 KiB here): its whole text goes to the blob
    // store, and must be masked there too.
    let filler = "Some words about our requirements for the new fleet. ".repeat(40);
    let raw = format!(
        "From: Ann <ann@buyer.example>\r\nTo: sales@in.example.com\r\nSubject: Order, card 4111 1111 1111 1111\r\n\
         Message-ID: <redact.1@buyer.example>\r\nDate: Mon, 1 Dec 2025 10:00:00 +0000\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\r\n\
         Please charge 5500-0000-0000-0004 or wire to DE89 3704 0044 0532 0130 00.\r\n\
         My employee id is EMP-123456.\r\n{filler}\r\nAgain: 4111111111111111\r\n"
    );
    let input = raw_email("in-redact", Some(raw.into_bytes()), None);
    let value = input.into_avro().expect("to avro");
    env.produce(
        "raw-email",
        vec![("in-redact".into(), env.encode("raw-email", value).await)],
    )
    .await;
    let http = format!("127.0.0.1:{}", mailstream_tests::free_port());
    let mut child = env.spawn(
        "parser",
        "a",
        &[
            ("MAILSTREAM_PARSER_BLOB_URL", blob_url.as_str()),
            ("MAILSTREAM_PARSER_MAX_BODY_BYTES", "1024"),
            ("MAILSTREAM_PARSER_REDACT_PATTERNS", r"\bEMP-\d{6}\b"),
            ("MAILSTREAM_HTTP_ADDR", http.as_str()),
        ],
    );
    let parsed = collect(
        &env.consumer(&["parsed"]),
        1,
        Duration::from_secs(90),
        Duration::from_secs(1),
    )
    .await;
    assert_eq!(parsed.len(), 1, "one parsed record");
    let metrics = mailstream_tests::http_get(&format!("http://{http}/metrics"))
        .await
        .1;
    let status = terminate(&mut child, Duration::from_secs(30));
    assert!(status.success(), "graceful shutdown exits 0, got {status}");

    let value = decode(
        env.registry(),
        parsed[0].payload.as_deref().expect("payload"),
    )
    .await;
    let record = ParsedEmail::from_avro(value).expect("a ParsedEmail");
    assert_eq!(
        record.subject.as_deref(),
        Some("Order, card **** **** **** 1111")
    );
    let text = record.text.as_deref().expect("text");
    assert!(
        text.starts_with(
            "Please charge ****-****-****-0004 or wire to DE** **** **** **** **30 00.\nMy employee id is **********."
        ),
        "{text}"
    );
    // The whole body, kept in the blob store because the record's copy was cut.
    let cut = record
        .truncated
        .iter()
        .find(|t| t.field == "text")
        .expect("the text was cut");
    let whole = blobs
        .get(cut.blob_uri.as_deref().expect("stored whole"), None)
        .await
        .expect("the whole text");
    let whole = String::from_utf8(whole).expect("utf-8");
    assert!(whole.contains("Again: ************1111"), "{whole:?}");
    for secret in [
        "4111111111111111",
        "4111 1111",
        "5500-0000",
        "3704 0044",
        "EMP-123456",
    ] {
        assert!(
            !whole.contains(secret) && !text.contains(secret),
            "{secret} left"
        );
    }
    // Counted by kind, per field masked (the reply-stripped text repeats the body's), never
    // logged.
    let count = |kind| {
        mailstream_tests::pipeline::metric(
            &metrics,
            "mailstream_parser_redactions_total",
            &[("kind", kind)],
        )
    };
    assert!(count("card") >= 3.0, "{}", count("card"));
    assert!(count("iban") >= 1.0 && count("pattern") >= 1.0);
    assert!(
        !metrics.contains("4111") && !metrics.contains("EMP-"),
        "no value in metrics"
    );
    let _ = std::fs::remove_dir_all(&blob_dir);
}
