//! The ingest service against the real stack, driven by real clients: Python's `smtplib`,
//! `swaks` and `curl` against `mailstream run ingest`, and `mailstream backfill` over a maildir
//! and an mbox written here. Every record is read back from `raw-email` (read_committed) and
//! decoded through the registry.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::Duration;

use mailstream_runtime::blob::sha256_hex;
use mailstream_runtime::records::{IngestSource, RawEmail};
use mailstream_tests::mail::{
    curl, message, now_secs, raw_emails, run, self_signed_cert, sign, smtplib, start, swaks,
    temp_dir,
};
use mailstream_tests::pipeline::metric;
use mailstream_tests::{TestEnv, http_get, terminate};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_clients_reach_raw_email_and_refusals_write_nothing() {
    let env = TestEnv::new("ing-smtp");
    let dir = temp_dir("smtp");
    let mut ingest = start(
        &env,
        &dir.join("blobs"),
        &[("MAILSTREAM_INGEST_MAX_MESSAGE_BYTES", "65536")],
    )
    .await;

    let py_msg = message("from python", 2_000);
    let py_file = dir.join("py.eml");
    std::fs::write(&py_file, &py_msg).expect("write");
    let out = smtplib(
        ingest.smtp,
        &py_file,
        "alice@sender.test",
        "py.client.test",
        &["deals+acme-42@in.example.com", "Team@Example.ORG"],
    );
    assert!(out.contains("SENT"), "{out}");

    let sw_msg = message("from swaks", 1_000);
    let sw_file = dir.join("swaks.eml");
    // swaks ends DATA with "\r\n.\r\n" after the file, so the file leaves off the last CRLF.
    std::fs::write(&sw_file, &sw_msg[..sw_msg.len() - 2]).expect("write");
    let (code, out) = swaks(ingest.smtp, &sw_file, "sales+eu@in.example.com");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("250 2.0.0 OK: queued as"), "{out}");

    // A recipient outside the accepted domains: 550 5.7.1, and no transaction to send.
    let out = smtplib(
        ingest.smtp,
        &py_file,
        "alice@sender.test",
        "py.client.test",
        &["someone@elsewhere.test"],
    );
    assert!(out.contains("RCPT-REFUSED [550]"), "{out}");
    assert!(out.contains("5.7.1"), "{out}");

    // Oversize: smtplib declares SIZE= on MAIL FROM and is refused there; swaks does not
    // declare it, sends the whole message and is refused after the final dot.
    let big = message("too big", 100_000);
    let big_file = dir.join("big.eml");
    std::fs::write(&big_file, &big).expect("write");
    let out = smtplib(
        ingest.smtp,
        &big_file,
        "alice@sender.test",
        "py.client.test",
        &["deals@in.example.com"],
    );
    assert!(out.contains("MAIL-REFUSED 552 5.3.4"), "{out}");
    let (code, out) = swaks(ingest.smtp, &big_file, "deals@in.example.com");
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("552 5.3.4"), "{out}");

    let records = raw_emails(&env, 2).await;
    assert_eq!(
        records.len(),
        2,
        "exactly the two accepted emails are written"
    );
    let by_helo: BTreeMap<String, RawEmail> = records
        .into_iter()
        .map(|(_, e)| (e.envelope.helo.clone().expect("helo"), e))
        .collect();

    let py = &by_helo["py.client.test"];
    assert_eq!(py.source, IngestSource::Smtp);
    assert_eq!(py.envelope.mail_from.as_deref(), Some("alice@sender.test"));
    assert_eq!(
        py.envelope.rcpt_to,
        vec!["deals+acme-42@in.example.com", "Team@Example.ORG"]
    );
    assert!(
        py.envelope
            .remote_addr
            .as_deref()
            .is_some_and(|a| a.starts_with("127.0.0.1:"))
    );
    assert_eq!(py.raw.as_deref(), Some(py_msg.as_slice()), "exact bytes");
    assert_eq!(py.size, py_msg.len() as i64);
    assert_eq!(py.sha256, sha256_hex(&py_msg));
    assert!(py.blob_uri.is_none());

    let sw = &by_helo["swaks.client.test"];
    assert_eq!(sw.envelope.mail_from.as_deref(), Some("bob@sender.test"));
    assert_eq!(sw.envelope.rcpt_to, vec!["sales+eu@in.example.com"]);
    assert_eq!(sw.raw.as_deref(), Some(sw_msg.as_slice()), "exact bytes");
    assert_eq!(sw.sha256, sha256_hex(&sw_msg));
    assert_ne!(sw.ingest_id, py.ingest_id);

    let (_, text) = http_get(&format!("http://{}/metrics", ingest.metrics)).await;
    let smtp = [("channel", "smtp")];
    assert_eq!(
        metric(&text, "mailstream_ingest_accepted_total", &smtp),
        2.0
    );
    let refused = |reason| {
        metric(
            &text,
            "mailstream_ingest_refused_total",
            &[("channel", "smtp"), ("reason", reason)],
        )
    };
    assert_eq!(refused("domain-not-accepted"), 1.0);
    assert_eq!(refused("too-large"), 2.0);
    assert_eq!(
        metric(
            &text,
            "mailstream_ingest_durable_write_seconds_count",
            &smtp
        ),
        2.0
    );
    let status = terminate(&mut ingest.child, Duration::from_secs(40));
    assert!(status.success(), "graceful shutdown exits 0, got {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_http_posts_are_ingested_and_bad_ones_refused() {
    let env = TestEnv::new("ing-http");
    let dir = temp_dir("http");
    let mut ingest = start(
        &env,
        &dir.join("blobs"),
        &[("MAILSTREAM_INGEST_MAX_MESSAGE_BYTES", "65536")],
    )
    .await;
    let msg = message("over http", 3_000);
    let file = dir.join("m.eml");
    std::fs::write(&file, &msg).expect("write");
    let ts = now_secs().to_string();

    let (status, body) = curl(
        ingest.http,
        &file,
        "message/rfc822",
        &ts,
        &format!("sha256={}", sign(&ts, &msg)),
    );
    assert_eq!(status, 202, "{body}");
    let reply: serde_json::Value = serde_json::from_str(&body).expect("json");
    let ingest_id = reply["ingest_id"].as_str().expect("ingest_id").to_string();

    let (status, body) = curl(ingest.http, &file, "message/rfc822", &ts, &"0".repeat(64));
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("bad-signature"), "{body}");

    let stale = (now_secs() - 3_600).to_string();
    let (status, body) = curl(
        ingest.http,
        &file,
        "message/rfc822",
        &stale,
        &sign(&stale, &msg),
    );
    assert_eq!(status, 401, "{body}");
    assert!(
        body.contains("stale-timestamp") && body.contains("replay window"),
        "{body}"
    );

    let (status, body) = curl(ingest.http, &file, "text/plain", &ts, &sign(&ts, &msg));
    assert_eq!(status, 415, "{body}");

    let big = message("too big", 100_000);
    let big_file = dir.join("big.eml");
    std::fs::write(&big_file, &big).expect("write");
    let (status, body) = curl(
        ingest.http,
        &big_file,
        "message/rfc822",
        &ts,
        &sign(&ts, &big),
    );
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("too-large"), "{body}");

    let records = raw_emails(&env, 1).await;
    assert_eq!(records.len(), 1, "only the good request is written");
    let email = &records[0].1;
    assert_eq!(email.ingest_id, ingest_id);
    assert_eq!(email.source, IngestSource::Http);
    assert_eq!(
        email.envelope.rcpt_to,
        vec!["deals+acme@in.example.com", "ops@example.org"]
    );
    assert_eq!(
        email.envelope.mail_from.as_deref(),
        Some("carol@sender.test")
    );
    assert_eq!(email.raw.as_deref(), Some(msg.as_slice()));
    assert_eq!(email.sha256, sha256_hex(&msg));
    let status = terminate(&mut ingest.child, Duration::from_secs(40));
    assert!(status.success(), "graceful shutdown exits 0, got {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_inline_limit_goes_to_the_blob_store() {
    let env = TestEnv::new("ing-blob");
    let dir = temp_dir("blob");
    let mut ingest = start(
        &env,
        &dir.join("blobs"),
        &[("MAILSTREAM_INGEST_INLINE_LIMIT_BYTES", "4096")],
    )
    .await;
    let msg = message("large", 50_000);
    let file = dir.join("large.eml");
    std::fs::write(&file, &msg).expect("write");
    let out = smtplib(
        ingest.smtp,
        &file,
        "alice@sender.test",
        "py.client.test",
        &["deals@in.example.com"],
    );
    assert!(out.contains("SENT"), "{out}");

    let records = raw_emails(&env, 1).await;
    assert_eq!(records.len(), 1);
    let email = &records[0].1;
    assert!(email.raw.is_none(), "no inline bytes over the limit");
    assert_eq!(email.size, msg.len() as i64);
    assert_eq!(email.sha256, sha256_hex(&msg));
    let uri = email.blob_uri.as_deref().expect("blob_uri");
    let path = uri.strip_prefix("file://").expect("a file:// blob");
    let stored = std::fs::read(path).expect("the blob exists");
    assert_eq!(
        sha256_hex(&stored),
        email.sha256,
        "blob bytes hash to sha256"
    );
    assert_eq!(stored, msg);
    let status = terminate(&mut ingest.child, Duration::from_secs(40));
    assert!(status.success(), "graceful shutdown exits 0, got {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_of_a_maildir_and_an_mbox_is_deterministic() {
    let env = TestEnv::new("ing-backfill");
    let dir = temp_dir("backfill");
    let maildir = dir.join("Maildir");
    for sub in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(maildir.join(sub)).expect("maildir");
    }
    let m1 = message("maildir new", 500);
    let m2 = message("maildir cur", 500);
    std::fs::write(maildir.join("new/1700000000.1.host"), &m1).expect("write");
    std::fs::write(maildir.join("cur/1700000001.2.host:2,S"), &m2).expect("write");
    std::fs::write(maildir.join("tmp/partial"), b"ignored").expect("write");
    let mbox = dir.join("archive.mbox");
    std::fs::write(
        &mbox,
        "From alice@sender.test Mon Jan  1 00:00:00 2024\n\
Subject: one\nMessage-ID: <one@sender.test>\n\nfirst\n>From the escaped line\n\n\
From bob@sender.test Mon Jan  1 00:00:01 2024\n\
Subject: two\nMessage-ID: <two@sender.test>\n\nsecond\n\n\
From carol@sender.test Mon Jan  1 00:00:02 2024\n\
Subject: three\nMessage-ID: <three@sender.test>\n\nthird\n",
    )
    .expect("write");
    let mut expected: BTreeSet<Vec<u8>> = BTreeSet::new();
    expected.insert(m1);
    expected.insert(m2);
    expected.insert(
        b"Subject: one\nMessage-ID: <one@sender.test>\n\nfirst\nFrom the escaped line\n".to_vec(),
    );
    expected.insert(b"Subject: two\nMessage-ID: <two@sender.test>\n\nsecond\n".to_vec());
    expected.insert(b"Subject: three\nMessage-ID: <three@sender.test>\n\nthird\n".to_vec());

    let blob_url = format!("file://{}", dir.join("blobs").display());
    let backfill = || {
        let mut cmd = env.mailstream(&["backfill"]);
        cmd.arg(&maildir)
            .arg(&mbox)
            .env("MAILSTREAM_INGEST_BLOB_URL", &blob_url);
        let (code, out) = run(&mut cmd);
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("read 5, sent 5, skipped 0, failed 0"), "{out}");
    };

    backfill();
    let first = raw_emails(&env, 5).await;
    assert_eq!(first.len(), 5, "every message arrives once");
    let bytes: BTreeSet<Vec<u8>> = first
        .iter()
        .map(|(_, e)| e.raw.clone().expect("inline"))
        .collect();
    assert_eq!(bytes, expected);
    for (_, e) in &first {
        assert_eq!(e.source, IngestSource::Backfill);
        assert!(e.origin.is_some());
    }
    let first_ids: BTreeSet<String> = first.iter().map(|(_, e)| e.ingest_id.clone()).collect();
    assert_eq!(first_ids.len(), 5);

    backfill();
    let all = raw_emails(&env, 10).await;
    assert_eq!(all.len(), 10);
    let second_ids: BTreeSet<String> = all
        .iter()
        .filter(|(seen, _)| {
            !first
                .iter()
                .any(|(f, _)| f.partition == seen.partition && f.offset == seen.offset)
        })
        .map(|(_, e)| e.ingest_id.clone())
        .collect();
    assert_eq!(
        second_ids, first_ids,
        "the second run reuses every ingest id"
    );
}

const STARTTLS: &str = r#"
import smtplib, ssl, sys
port, path = int(sys.argv[1]), sys.argv[2]
s = smtplib.SMTP("127.0.0.1", port, local_hostname="tls.client.test")
s.ehlo()
assert s.has_extn("starttls"), "STARTTLS advertised"
s.starttls(context=ssl._create_unverified_context())
s.ehlo()
assert not s.has_extn("starttls"), "no STARTTLS inside TLS"
print("TLS", s.sock.version())
s.sendmail("dave@sender.test", ["deals@in.example.com"], open(path, "rb").read())
print("SENT")
s.quit()
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_with_a_configured_certificate() {
    let env = TestEnv::new("ing-tls");
    let dir = temp_dir("tls");
    let (cert, key) = self_signed_cert(&dir, "mx.test");
    let (cert_s, key_s) = (cert.display().to_string(), key.display().to_string());
    let mut ingest = start(
        &env,
        &dir.join("blobs"),
        &[
            ("MAILSTREAM_INGEST_TLS_CERT_PATH", cert_s.as_str()),
            ("MAILSTREAM_INGEST_TLS_KEY_PATH", key_s.as_str()),
        ],
    )
    .await;
    let msg = message("over tls", 1_000);
    let file = dir.join("m.eml");
    std::fs::write(&file, &msg).expect("write");
    let (code, out) = run(Command::new("python3")
        .arg("-c")
        .arg(STARTTLS)
        .arg(ingest.smtp.to_string())
        .arg(&file));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("TLS TLSv1.3") && out.contains("SENT"), "{out}");

    let records = raw_emails(&env, 1).await;
    assert_eq!(records.len(), 1);
    let email = &records[0].1;
    assert_eq!(email.envelope.helo.as_deref(), Some("tls.client.test"));
    assert_eq!(email.raw.as_deref(), Some(msg.as_slice()));
    let status = terminate(&mut ingest.child, Duration::from_secs(40));
    assert!(status.success(), "graceful shutdown exits 0, got {status}");
}
