//! Mail sent the way users send it reaches `parsed` through the real stack: Python's `smtplib`
//! and `swaks` over SMTP and `curl` over signed HTTP, into `mailstream run ingest`, through
//! `raw-email` and `mailstream run parser`. For each file, `mailstream parse` shows the same
//! record the pipeline produced.

use std::collections::BTreeMap;
use std::time::Duration;

use mailstream_runtime::AvroRecord;
use mailstream_runtime::records::ParsedEmail;
use mailstream_tests::mail::{
    comparable, curl, fixture, now_secs, sign, smtplib, start, swaks, temp_dir,
};
use mailstream_tests::{TestEnv, collect, decode, output, terminate};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_from_real_clients_reaches_parsed_as_mailstream_parse_shows_it() {
    let env = TestEnv::new("pipe");
    let blobs = temp_dir("pipe-blobs");
    let blob_url = format!("file://{}", blobs.display());
    let mut ingest = start(&env, &blobs, &[]).await;
    let mut parser = env.spawn(
        "parser",
        "a",
        &[("MAILSTREAM_PARSER_BLOB_URL", blob_url.as_str())],
    );

    let via_smtplib = fixture("qp-latin1.eml");
    let via_swaks = fixture("nested-multipart.eml");
    let via_curl = fixture("reply-top.eml");
    let sent = smtplib(
        ingest.smtp,
        &via_smtplib,
        "alice@sender.test",
        "client.test",
        &["Deals+Q3@in.example.com"],
    );
    assert!(sent.contains("SENT"), "{sent}");
    let (code, out) = swaks(ingest.smtp, &via_swaks, "ops@example.org");
    assert_eq!(code, 0, "{out}");
    let body = std::fs::read(&via_curl).expect("fixture");
    let ts = now_secs().to_string();
    let (status, answer) = curl(
        ingest.http,
        &via_curl,
        "message/rfc822",
        &ts,
        &sign(&ts, &body),
    );
    assert_eq!(status, 202, "{answer}");

    let seen = collect(
        &env.consumer(&["parsed"]),
        3,
        Duration::from_secs(90),
        Duration::from_secs(3),
    )
    .await;
    terminate(&mut parser, Duration::from_secs(30));
    terminate(&mut ingest.child, Duration::from_secs(30));
    assert_eq!(seen.len(), 3, "one parsed record per email");

    let mut by_subject = BTreeMap::new();
    for record in &seen {
        let value = decode(env.registry(), record.payload.as_deref().expect("payload")).await;
        let parsed = ParsedEmail::from_avro(value).expect("a ParsedEmail");
        assert_eq!(
            record.key.as_deref(),
            Some(parsed.message_id.as_str()),
            "keyed by message_id"
        );
        assert!(record.headers.contains_key("mailstream.correlation_id"));
        by_subject.insert(parsed.subject.clone().unwrap_or_default(), parsed);
    }

    for (file, rcpt) in [
        (&via_smtplib, vec!["Deals+Q3@in.example.com"]),
        (&via_swaks, vec!["ops@example.org"]),
        (
            &via_curl,
            vec!["deals+acme@in.example.com", "ops@example.org"],
        ),
    ] {
        let out = output(env.mailstream(&[
            "parse",
            "--blob-url",
            &blob_url,
            file.to_str().expect("path"),
        ]));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let cli: ParsedEmail = serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim())
            .expect("one JSON record");
        let piped = by_subject
            .get(&cli.subject.clone().unwrap_or_default())
            .unwrap_or_else(|| panic!("{} did not come through the pipeline", file.display()));
        assert_eq!(
            comparable(&cli),
            comparable(piped),
            "{}: pipeline and CLI agree",
            file.display()
        );
        let envelope: Vec<String> = piped
            .envelope_rcpt_to
            .iter()
            .map(|r| r.to_lowercase())
            .collect();
        let expected: Vec<String> = rcpt.iter().map(|r| r.to_lowercase()).collect();
        assert_eq!(
            envelope,
            expected,
            "{}: envelope recipients carried through",
            file.display()
        );
    }
}
