//! The provider webhooks of the HTTP intake against the real stack: `mailstream run ingest`
//! with Mailgun, SendGrid, Postmark and SES enabled, posted to by `curl` the way each provider
//! posts (Mailgun's raw-MIME `forward()` form, SendGrid's raw Inbound Parse form with basic auth
//! in the URL, Postmark's inbound JSON, SNS deliveries of SES receipt notifications signed by
//! a test certificate with `openssl`), every record read back from `raw-email`. Each valid post
//! lands exactly one record with the provider's envelope and the exact message; forged,
//! stale, replayed and unauthenticated posts are answered 401 with a reason and write nothing
//! (the reads wait 3 s past the expected records).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use mailstream_runtime::records::{IngestSource, RawEmail};
use mailstream_tests::mail::{
    Ingest, message, now_secs, raw_emails, run, self_signed_cert, start, temp_dir,
};
use mailstream_tests::{TestEnv, terminate};
use sha2::Sha256;

const MAILGUN_KEY: &str = "key-mailgun-test-0123456789abcdef";
const SENDGRID_PASSWORD: &str = "sendgrid-pass-0123456789";
const POSTMARK_PASSWORD: &str = "postmark-pass-0123456789";
const SES_TOPIC: &str = "arn:aws:sns:us-east-1:012345678912:mailstream-inbound";

/// An ingest with every provider on; the Mailgun key and a password come from files, as
/// Kubernetes mounts Secrets. SES: the "SNS certificate" is a self-signed one in `dir` (its
/// key signs the test's deliveries), the "bucket" the directory `dir/bucket`.
async fn ingest(env: &TestEnv, name: &str) -> (Ingest, std::path::PathBuf) {
    let dir = temp_dir(name);
    let (cert, _) = self_signed_cert(&dir, "sns.us-east-1.amazonaws.com");
    let bucket = format!("file://{}", dir.join("bucket").display());
    std::fs::create_dir_all(dir.join("bucket")).expect("bucket");
    let key_file = dir.join("mailgun-key");
    std::fs::write(&key_file, format!("{MAILGUN_KEY}\n")).expect("write");
    let password_file = dir.join("postmark-password");
    std::fs::write(&password_file, POSTMARK_PASSWORD).expect("write");
    let ingest = start(
        env,
        &dir.join("blobs"),
        &[
            ("MAILSTREAM_INGEST_MAX_MESSAGE_BYTES", "65536"),
            (
                "MAILSTREAM_INGEST_MAILGUN_SIGNING_KEY_FILE",
                key_file.to_str().expect("path"),
            ),
            ("MAILSTREAM_INGEST_SENDGRID_USERNAME", "sendgrid"),
            ("MAILSTREAM_INGEST_SENDGRID_PASSWORD", SENDGRID_PASSWORD),
            ("MAILSTREAM_INGEST_POSTMARK_USERNAME", "postmark"),
            (
                "MAILSTREAM_INGEST_POSTMARK_PASSWORD_FILE",
                password_file.to_str().expect("path"),
            ),
            ("MAILSTREAM_INGEST_SES_TOPIC_ARN", SES_TOPIC),
            (
                "MAILSTREAM_INGEST_SES_CERTIFICATE_PATH",
                cert.to_str().expect("path"),
            ),
            ("MAILSTREAM_INGEST_SES_BUCKET_URL", bucket.as_str()),
        ],
    )
    .await;
    (ingest, dir)
}

/// `curl -X POST` with `args`; returns (status, response headers, body).
fn post(url: &str, args: &[&str], dir: &Path) -> (u16, String, String) {
    let head = dir.join(format!("head-{}", uuid::Uuid::new_v4()));
    let (code, out) = run(Command::new("curl")
        .args(["-sS", "-w", "\n%{http_code}", "-X", "POST", "-D"])
        .arg(&head)
        .args(args)
        .arg(url));
    assert_eq!(code, 0, "curl failed: {out}");
    let (body, status) = out.trim_end().rsplit_once('\n').expect("status line");
    let headers = std::fs::read_to_string(&head).unwrap_or_default();
    (status.parse().expect("status"), headers, body.to_string())
}

/// Mailgun's signature: hex HMAC-SHA256 of timestamp + token with the signing key.
fn mailgun_signature(timestamp: &str, token: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(MAILGUN_KEY.as_bytes()).expect("key");
    mac.update(timestamp.as_bytes());
    mac.update(token.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// A Mailgun raw-MIME forward: the fields its documentation lists, the message from `file`.
fn mailgun_post(port: u16, file: &Path, ts: &str, token: &str, sig: &str) -> (u16, String) {
    let fields = [
        "recipient=deals+mg@in.example.com".to_string(),
        "sender=alice@sender.test".to_string(),
        "from=Alice <alice@sender.test>".to_string(),
        "subject=via mailgun".to_string(),
        format!("body-mime=<{}", file.display()),
        format!("timestamp={ts}"),
        format!("token={token}"),
        format!("signature={sig}"),
    ];
    let mut args = Vec::new();
    for field in &fields {
        args.extend(["-F", field.as_str()]);
    }
    let dir = file.parent().expect("dir");
    // The URL of a raw-MIME forward() ends in `mime`.
    let url = format!("http://127.0.0.1:{port}/v1/providers/mailgun/mime");
    let (status, _, body) = post(&url, &args, dir);
    (status, body)
}

fn only(records: Vec<(mailstream_tests::Seen, RawEmail)>, want: usize) -> Vec<RawEmail> {
    assert_eq!(
        records.len(),
        want,
        "exactly the accepted posts are written"
    );
    records.into_iter().map(|(_, e)| e).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mailgun_forwards_land_once_and_forged_stale_or_replayed_ones_do_not() {
    let env = TestEnv::new("ing-mailgun");
    let (mut ingest, dir) = ingest(&env, "mailgun").await;
    let msg = message("via mailgun", 3_000);
    let file = dir.join("m.eml");
    std::fs::write(&file, &msg).expect("write");
    let ts = now_secs().to_string();
    let token = format!("{:0>50}", uuid::Uuid::new_v4().simple());

    let (status, body) = mailgun_post(
        ingest.http,
        &file,
        &ts,
        &token,
        &mailgun_signature(&ts, &token),
    );
    assert_eq!(status, 202, "{body}");

    // The same request again: its token was used.
    let (status, body) = mailgun_post(
        ingest.http,
        &file,
        &ts,
        &token,
        &mailgun_signature(&ts, &token),
    );
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("replayed-token"), "{body}");

    let fresh = format!("{:0>50}", uuid::Uuid::new_v4().simple());
    let (status, body) = mailgun_post(ingest.http, &file, &ts, &fresh, &"0".repeat(64));
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("bad-signature"), "{body}");

    let stale = (now_secs() - 3_600).to_string();
    let (status, body) = mailgun_post(
        ingest.http,
        &file,
        &stale,
        &fresh,
        &mailgun_signature(&stale, &fresh),
    );
    assert_eq!(status, 401, "{body}");
    assert!(
        body.contains("stale-timestamp") && body.contains("replay window"),
        "{body}"
    );

    // A message over max_message_bytes (64 KiB here) is cut off while it streams in.
    let big = dir.join("big.eml");
    std::fs::write(&big, message("too big", 100_000)).expect("write");
    let huge = format!("{:0>50}", uuid::Uuid::new_v4().simple());
    let (status, body) = mailgun_post(
        ingest.http,
        &big,
        &ts,
        &huge,
        &mailgun_signature(&ts, &huge),
    );
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("too-large"), "{body}");

    // The same forward URL-encoded (a form without files), with its own token.
    let other = format!("{:0>50}", uuid::Uuid::new_v4().simple());
    let encoded_msg = message("via mailgun, url-encoded", 1_000);
    let encoded_file = dir.join("encoded.eml");
    std::fs::write(&encoded_file, &encoded_msg).expect("write");
    let mut args = Vec::new();
    let fields = [
        "recipient=deals+mg@in.example.com".to_string(),
        "sender=alice@sender.test".to_string(),
        format!("body-mime@{}", encoded_file.display()),
        format!("timestamp={ts}"),
        format!("token={other}"),
        format!("signature={}", mailgun_signature(&ts, &other)),
    ];
    for field in &fields {
        args.extend(["--data-urlencode", field.as_str()]);
    }
    let url = format!("http://127.0.0.1:{}/v1/providers/mailgun/mime", ingest.http);
    let (status, _, body) = post(&url, &args, &dir);
    assert_eq!(status, 202, "{body}");

    let records = only(raw_emails(&env, 2).await, 2);
    let (encoded, records): (Vec<RawEmail>, Vec<RawEmail>) = records
        .into_iter()
        .partition(|e| e.raw.as_deref() == Some(encoded_msg.as_slice()));
    assert_eq!(encoded.len(), 1, "the URL-encoded message, byte for byte");
    let email = &records[0];
    assert_eq!(email.source, IngestSource::Http);
    assert_eq!(email.origin.as_deref(), Some("provider:mailgun"));
    assert_eq!(
        email.envelope.mail_from.as_deref(),
        Some("alice@sender.test")
    );
    assert_eq!(email.envelope.rcpt_to, ["deals+mg@in.example.com"]);
    assert!(
        email
            .envelope
            .remote_addr
            .as_deref()
            .is_some_and(|a| a.starts_with("127.0.0.1:")),
        "the webhook's caller: {:?}",
        email.envelope.remote_addr
    );
    assert_eq!(email.raw.as_deref(), Some(msg.as_slice()), "exact bytes");
    let status = terminate(&mut ingest.child, Duration::from_secs(40));
    assert!(status.success(), "graceful shutdown exits 0, got {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sendgrid_raw_and_parsed_posts_with_basic_auth_land_and_others_are_refused() {
    let env = TestEnv::new("ing-sendgrid");
    let (mut ingest, dir) = ingest(&env, "sendgrid").await;
    let msg = message("via sendgrid", 3_000);
    let file = dir.join("m.eml");
    std::fs::write(&file, &msg).expect("write");
    let email_field = format!("email=<{}", file.display());
    // The fields of SendGrid's raw mode, as its documentation lists them.
    let form = [
        "-F",
        "to=Deals <deals+sg@in.example.com>",
        "-F",
        "from=Bob <bob@sender.test>",
        "-F",
        "subject=via sendgrid",
        "-F",
        "sender_ip=203.0.113.7",
        "-F",
        "spam_score=0.1",
        "-F",
        "dkim={@sender.test : pass}",
        "-F",
        "SPF=pass",
        "-F",
        r#"envelope={"to":["deals+sg@in.example.com","ops@example.org"],"from":"bounce-bob@sender.test"}"#,
        "-F",
        r#"charsets={"to":"UTF-8","subject":"UTF-8","from":"UTF-8"}"#,
        "-F",
        &email_field,
    ];
    let port = ingest.http;
    let url = |creds: &str| format!("http://{creds}127.0.0.1:{port}/v1/providers/sendgrid");

    let (status, _, body) = post(&url(&format!("sendgrid:{SENDGRID_PASSWORD}@")), &form, &dir);
    assert_eq!(status, 202, "{body}");

    for creds in [
        "sendgrid:wrong-password-0123@",
        "other:sendgrid-pass-0123456789@",
        "",
    ] {
        let (status, headers, body) = post(&url(creds), &form, &dir);
        assert_eq!(status, 401, "{creds}: {body}");
        assert!(body.contains("bad-auth"), "{body}");
        assert!(
            headers
                .to_ascii_lowercase()
                .contains("www-authenticate: basic"),
            "{headers}"
        );
    }

    // The default parsed mode: the header block, the bodies and the files, rebuilt.
    let header_block = dir.join("headers.txt");
    std::fs::write(
        &header_block,
        "Received: from mx.sender.test by mx.sendgrid.net;\n Mon, 7 Dec 2026 02:00:00 +0000\n\
         From: Bob <bob@sender.test>\nTo: deals+sg@in.example.com\n\
         Subject: via sendgrid parsed\nMessage-ID: <parsed-1@sender.test>\n\
         Date: Mon, 7 Dec 2026 02:00:00 +0000\nMIME-Version: 1.0\n\
         Content-Type: multipart/mixed; boundary=\"old\"\n",
    )
    .expect("write");
    let pdf = dir.join("quote.pdf");
    std::fs::write(&pdf, ATTACHMENT).expect("write");
    let headers_field = format!("headers=<{}", header_block.display());
    let file_field = format!("attachment1=@{};type=application/pdf", pdf.display());
    let parsed = [
        "-F",
        &headers_field,
        "-F",
        "text=Hello from the parsed mode.",
        "-F",
        "attachments=1",
        "-F",
        r#"attachment-info={"attachment1":{"filename":"quote.pdf","name":"quote.pdf","type":"application/pdf"}}"#,
        "-F",
        &file_field,
        "-F",
        r#"charsets={"headers":"UTF-8","text":"UTF-8"}"#,
        "-F",
        r#"envelope={"to":["deals+sg@in.example.com"],"from":"bounce-bob@sender.test"}"#,
    ];
    let good = url(&format!("sendgrid:{SENDGRID_PASSWORD}@"));
    let (status, _, body) = post(&good, &parsed, &dir);
    assert_eq!(status, 202, "{body}");
    // Neither mode: 400.
    let neither = [
        "-F",
        r#"envelope={"to":["a@in.example.com"],"from":"b@sender.test"}"#,
    ];
    let (status, _, body) = post(&good, &neither, &dir);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("bad-payload"), "{body}");

    let records = only(raw_emails(&env, 2).await, 2);
    for email in &records {
        assert_eq!(email.origin.as_deref(), Some("provider:sendgrid"));
        assert_eq!(
            email.envelope.mail_from.as_deref(),
            Some("bounce-bob@sender.test")
        );
    }
    let (raw, rebuilt): (Vec<&RawEmail>, Vec<&RawEmail>) = records
        .iter()
        .partition(|e| e.raw.as_deref() == Some(msg.as_slice()));
    assert_eq!(raw.len(), 1, "the raw mode's `email`, byte for byte");
    let email = raw[0];
    assert_eq!(
        email.envelope.rcpt_to,
        ["deals+sg@in.example.com", "ops@example.org"]
    );
    assert_eq!(email.envelope.remote_addr.as_deref(), Some("203.0.113.7"));
    let text = String::from_utf8_lossy(rebuilt[0].raw.as_deref().expect("inline"));
    for needle in [
        "Received: from mx.sender.test by mx.sendgrid.net;",
        "Subject: via sendgrid parsed",
        "Message-ID: <parsed-1@sender.test>",
        "Date: Mon, 7 Dec 2026 02:00:00 +0000",
        "Hello from the parsed mode.",
        "quote.pdf",
        &STANDARD.encode(ATTACHMENT),
    ] {
        assert!(text.contains(needle), "`{needle}` missing from:\n{text}");
    }
    assert!(
        !text.contains("boundary=\"old\""),
        "the old MIME structure is not kept"
    );
    let status = terminate(&mut ingest.child, Duration::from_secs(40));
    assert!(status.success(), "graceful shutdown exits 0, got {status}");
}

/// A binary attachment (so it is base64 in the rebuilt message too).
const ATTACHMENT: &[u8] = b"%PDF-1.4\n\x00\x01\x02\xff quote: 42 seats";

/// A Postmark inbound document shaped like the example of Postmark's documentation.
fn postmark_json(raw: Option<&[u8]>, subject: &str) -> String {
    let mut doc = serde_json::json!({
        "FromName": "Carol",
        "MessageStream": "inbound",
        "From": "carol@sender.test",
        "FromFull": {"Email": "carol@sender.test", "Name": "Carol", "MailboxHash": ""},
        "To": "deals+pm@in.example.com",
        "ToFull": [{"Email": "deals+pm@in.example.com", "Name": "Deals", "MailboxHash": "pm"}],
        "Cc": "", "CcFull": [], "Bcc": "", "BccFull": [],
        "OriginalRecipient": "deals+pm@in.example.com",
        "ReplyTo": "",
        "Subject": subject,
        "MessageID": uuid::Uuid::new_v4().to_string(),
        "Date": "Thu, 5 Apr 2012 16:59:01 +0200",
        "MailboxHash": "pm",
        "TextBody": "Hello from Postmark.",
        "HtmlBody": "",
        "StrippedTextReply": "",
        "Tag": "",
        "Headers": [
            {"Name": "X-Spam-Status", "Value": "No"},
            {"Name": "Return-Path", "Value": "<bounce-carol@sender.test>"}
        ],
        "Attachments": [
            {"Name": "quote.pdf", "Content": STANDARD.encode(ATTACHMENT), "ContentType": "application/pdf", "ContentLength": ATTACHMENT.len()}
        ]
    });
    if let Some(raw) = raw {
        doc["RawEmail"] = String::from_utf8_lossy(raw).into_owned().into();
    }
    doc.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postmark_json_lands_as_the_raw_email_or_rebuilt_and_bad_auth_is_refused() {
    let env = TestEnv::new("ing-postmark");
    let (mut ingest, dir) = ingest(&env, "postmark").await;
    let msg = message("via postmark", 3_000);
    let url = |creds: &str| {
        format!(
            "http://{creds}127.0.0.1:{}/v1/providers/postmark",
            ingest.http
        )
    };
    let good = url(&format!("postmark:{POSTMARK_PASSWORD}@"));
    let send = |url: &str, json: String| {
        let file = dir.join(format!("{}.json", uuid::Uuid::new_v4()));
        std::fs::write(&file, json).expect("write");
        let data = format!("@{}", file.display());
        let args = [
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            data.as_str(),
        ];
        post(url, &args, &dir)
    };

    let (status, _, body) = send(&good, postmark_json(Some(&msg), "via postmark"));
    assert_eq!(status, 202, "{body}");
    let (status, _, body) = send(&good, postmark_json(None, "rebuilt by mailstream"));
    assert_eq!(status, 202, "{body}");

    let (status, headers, body) = send(
        &url("postmark:not-the-password-0123@"),
        postmark_json(Some(&msg), "forged"),
    );
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("bad-auth"), "{body}");
    assert!(
        headers.to_ascii_lowercase().contains("www-authenticate"),
        "{headers}"
    );
    let (status, _, body) = send(&good, "{\"Subject\": ".to_string());
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("bad-payload"), "{body}");

    let records = only(raw_emails(&env, 2).await, 2);
    for email in &records {
        assert_eq!(email.origin.as_deref(), Some("provider:postmark"));
        assert_eq!(email.envelope.rcpt_to, ["deals+pm@in.example.com"]);
        assert_eq!(
            email.envelope.mail_from.as_deref(),
            Some("bounce-carol@sender.test")
        );
    }
    let (raw, rebuilt): (Vec<&RawEmail>, Vec<&RawEmail>) = records
        .iter()
        .partition(|e| e.raw.as_deref() == Some(msg.as_slice()));
    assert_eq!(raw.len(), 1, "RawEmail is kept byte for byte");
    let text = String::from_utf8_lossy(rebuilt[0].raw.as_deref().expect("inline"));
    for needle in [
        "Subject: rebuilt by mailstream",
        "<carol@sender.test>",
        "Date: Thu, 5 Apr 2012 16:59:01 +0200",
        "X-Spam-Status: No",
        "Hello from Postmark.",
        "quote.pdf",
        &STANDARD.encode(ATTACHMENT),
    ] {
        assert!(
            text.contains(needle),
            "`{needle}` missing from the rebuilt message:\n{text}"
        );
    }
    let status = terminate(&mut ingest.child, Duration::from_secs(40));
    assert!(status.success(), "graceful shutdown exits 0, got {status}");
}

/// An SNS delivery signed as SNS signs (SignatureVersion 2: SHA-256 over the documented
/// string to sign) with the key in `dir` (`key.pem`).
fn sns(dir: &Path, kind: &str, topic: &str, message: &str, timestamp: &str) -> serde_json::Value {
    let id = uuid::Uuid::new_v4().to_string();
    let mut doc = serde_json::json!({
        "Type": kind,
        "MessageId": id,
        "TopicArn": topic,
        "Message": message,
        "Timestamp": timestamp,
        "SignatureVersion": "2",
        "SigningCertURL": "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-test.pem",
    });
    let mut text = format!("Message\n{message}\nMessageId\n{id}\n");
    if kind == "SubscriptionConfirmation" {
        let url = "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&Token=tok";
        doc["SubscribeURL"] = url.into();
        doc["Token"] = "tok".into();
        text.push_str(&format!(
            "SubscribeURL\n{url}\nTimestamp\n{timestamp}\nToken\ntok\n"
        ));
    } else {
        text.push_str(&format!("Timestamp\n{timestamp}\n"));
    }
    text.push_str(&format!("TopicArn\n{topic}\nType\n{kind}\n"));
    doc["Signature"] = sign_rsa(dir, &text).into();
    doc
}

fn sign_rsa(dir: &Path, text: &str) -> String {
    let input = dir.join(format!("sts-{}", uuid::Uuid::new_v4()));
    let output = input.with_extension("sig");
    std::fs::write(&input, text).expect("write");
    let (code, out) = run(Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(&output)
        .arg(&input));
    assert_eq!(code, 0, "openssl: {out}");
    STANDARD.encode(std::fs::read(&output).expect("signature"))
}

/// SES's receipt notification (the shape of SES's documented example) for `action`.
fn ses_notification(action: serde_json::Value, content: Option<&[u8]>) -> String {
    let mut doc = serde_json::json!({
        "notificationType": "Received",
        "mail": {
            "timestamp": "2026-01-01T00:00:00.000Z",
            "source": "dave@sender.test",
            "messageId": "o3vrnil0e2ic28trm7dfhrc2v0clambda4nbp0g1",
            "destination": ["deals+ses@in.example.com", "someone@elsewhere.test"],
            "headersTruncated": false
        },
        "receipt": {
            "timestamp": "2026-01-01T00:00:00.000Z",
            "processingTimeMillis": 222,
            "recipients": ["deals+ses@in.example.com"],
            "spamVerdict": {"status": "PASS"},
            "virusVerdict": {"status": "PASS"},
            "spfVerdict": {"status": "PASS"},
            "dkimVerdict": {"status": "PASS"},
            "dmarcVerdict": {"status": "PASS"},
            "action": action
        }
    });
    if let Some(content) = content {
        doc["content"] = STANDARD.encode(content).into();
    }
    doc.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ses_notifications_verified_by_the_sns_certificate_land_from_sns_and_s3() {
    let env = TestEnv::new("ing-ses");
    let (mut ingest, dir) = ingest(&env, "ses").await;
    let url = format!("http://127.0.0.1:{}/v1/providers/ses", ingest.http);
    let send = |doc: &serde_json::Value| {
        let file = dir.join(format!("{}.json", uuid::Uuid::new_v4()));
        std::fs::write(&file, doc.to_string()).expect("write");
        let data = format!("@{}", file.display());
        // SNS posts its JSON as text/plain.
        let args = [
            "-H",
            "Content-Type: text/plain; charset=UTF-8",
            "--data-binary",
            data.as_str(),
        ];
        let (status, _, body) = post(&url, &args, &dir);
        (status, body)
    };
    let now = || chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);

    let confirm = sns(
        &dir,
        "SubscriptionConfirmation",
        SES_TOPIC,
        "You have chosen to subscribe",
        &now(),
    );
    let (status, body) = send(&confirm);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("subscription-pending"), "{body}");

    // The SNS action: the message inside the notification, base64.
    let small = message("via ses sns", 2_000);
    let sns_action =
        serde_json::json!({"type": "SNS", "topicArn": SES_TOPIC, "encoding": "BASE64"});
    let delivery = sns(
        &dir,
        "Notification",
        SES_TOPIC,
        &ses_notification(sns_action, Some(&small)),
        &now(),
    );
    let (status, body) = send(&delivery);
    assert_eq!(status, 202, "{body}");
    let (status, body) = send(&delivery);
    assert_eq!(status, 401, "the same MessageId again: {body}");
    assert!(body.contains("replayed-token"), "{body}");

    // The S3 action: the message in the bucket, named by the notification.
    let stored = message("via ses s3", 5_000);
    std::fs::create_dir_all(dir.join("bucket/inbound")).expect("dir");
    std::fs::write(
        dir.join("bucket/inbound/o3vrnil0e2ic28trm7dfhrc2v0clambda4nbp0g1"),
        &stored,
    )
    .expect("object");
    let s3_action = serde_json::json!({
        "type": "S3", "topicArn": SES_TOPIC, "bucketName": "amzn-s3-demo-bucket",
        "objectKey": "inbound/o3vrnil0e2ic28trm7dfhrc2v0clambda4nbp0g1"
    });
    let s3_notification = ses_notification(s3_action, None);
    let (status, body) = send(&sns(
        &dir,
        "Notification",
        SES_TOPIC,
        &s3_notification,
        &now(),
    ));
    assert_eq!(status, 202, "{body}");

    // Refused: a changed message, another topic, an old timestamp.
    let mut forged = sns(&dir, "Notification", SES_TOPIC, &s3_notification, &now());
    forged["Message"] = s3_notification.replace("deals+ses@", "ceo@").into();
    let (status, body) = send(&forged);
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("bad-signature"), "{body}");
    let other = "arn:aws:sns:us-east-1:999999999999:someone-else";
    let (status, body) = send(&sns(&dir, "Notification", other, &s3_notification, &now()));
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("wrong-topic"), "{body}");
    let old = (chrono::Utc::now() - chrono::Duration::hours(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let (status, body) = send(&sns(
        &dir,
        "Notification",
        SES_TOPIC,
        &s3_notification,
        &old,
    ));
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("stale-timestamp"), "{body}");

    let records = only(raw_emails(&env, 2).await, 2);
    for email in &records {
        assert_eq!(email.origin.as_deref(), Some("provider:ses"));
        assert_eq!(
            email.envelope.mail_from.as_deref(),
            Some("dave@sender.test")
        );
        assert_eq!(email.envelope.rcpt_to, ["deals+ses@in.example.com"]);
    }
    let mut raws: Vec<&[u8]> = records.iter().filter_map(|e| e.raw.as_deref()).collect();
    raws.sort();
    let mut want = [small.as_slice(), stored.as_slice()];
    want.sort();
    assert_eq!(raws, want, "both messages, byte for byte");
    let status = terminate(&mut ingest.child, Duration::from_secs(40));
    assert!(status.success(), "graceful shutdown exits 0, got {status}");
}
