//! The blob store on a real S3 server: `dev/up`'s MinIO, reached with credentials from the
//! runtime's `blob_store` options (the secret key from a file, as Kubernetes mounts a Secret).
//! Ingest claim-checks a message over its inline limit into the bucket and the parser stores its
//! attachment there; both objects read back byte for byte under the SHA-256 the records carry.
//! With a wrong secret key, the parser stalls on the store (S3 refuses it) and dead-letters
//! nothing: a store that may work later is retried, never a reason to drop an email. The CRM
//! sink links an S3 attachment for the REST CRM by a presigned URL that fetches it without
//! credentials.

use std::time::Duration;

use mailstream_runtime::blob::{BlobStore, sha256_hex};
use mailstream_runtime::records::{ParsedEmail, RawEmail};
use mailstream_tests::crm::{
    FakeCrm, crm_results, produce_leads, reply_lead, spawn_sink, with_attachment,
};
use mailstream_tests::crm_db::SAMPLE_DOMAIN;
use mailstream_tests::mail::{smtplib, start, temp_dir};
use mailstream_tests::{TestEnv, collect, decode_as, free_port, http_get, now_ms, terminate};

/// The `blob_store` options that reach `dev/up`'s MinIO, with the secret key in `secret_file`.
fn s3_options(secret_file: &str) -> Vec<(String, String)> {
    let var = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!("{name} is not set: run dev/up and source ~/.local/state/mailstream/env")
        })
    };
    vec![
        (
            "MAILSTREAM_BLOB_STORE_AWS_ENDPOINT".into(),
            var("MAILSTREAM_S3_ENDPOINT"),
        ),
        ("MAILSTREAM_BLOB_STORE_AWS_ALLOW_HTTP".into(), "true".into()),
        (
            "MAILSTREAM_BLOB_STORE_AWS_REGION".into(),
            "us-east-1".into(),
        ),
        (
            "MAILSTREAM_BLOB_STORE_AWS_ACCESS_KEY_ID".into(),
            var("MAILSTREAM_S3_ACCESS_KEY_ID"),
        ),
        (
            "MAILSTREAM_BLOB_STORE_AWS_SECRET_ACCESS_KEY_FILE".into(),
            secret_file.to_string(),
        ),
    ]
}

/// The REST stand-in's bearer token.
const TOKEN: &str = "blob-link-token";

fn secret_file() -> String {
    std::env::var("MAILSTREAM_S3_SECRET_ACCESS_KEY_FILE")
        .expect("MAILSTREAM_S3_SECRET_ACCESS_KEY_FILE: run dev/up and source its env file")
}

/// The same options as a `BlobStore` takes them (option names without the env prefix).
fn store_options(vars: &[(String, String)]) -> Vec<(String, String)> {
    vars.iter()
        .map(|(k, v)| {
            let option = k
                .trim_start_matches("MAILSTREAM_BLOB_STORE_")
                .trim_end_matches("_FILE")
                .to_ascii_lowercase();
            let value = if k.ends_with("_FILE") {
                std::fs::read_to_string(v)
                    .expect("secret file")
                    .trim()
                    .to_string()
            } else {
                v.clone()
            };
            (option, value)
        })
        .collect()
}

fn email_with_attachment(pdf: &[u8]) -> String {
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(pdf);
    let lines: Vec<&str> = encoded
        .as_bytes()
        .chunks(76)
        .map(|c| std::str::from_utf8(c).expect("base64 is ascii"))
        .collect();
    format!(
        "From: Sam Sender <sam@client.test>\r\nTo: sales@{SAMPLE_DOMAIN}\r\nSubject: Our RFP\r\n\
         Message-ID: <s3-rfp@client.test>\r\nDate: Mon, 07 Dec 2026 09:00:00 +0000\r\n\
         MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n\
         --b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nPlease find our RFP attached.\r\n\
         --b1\r\nContent-Type: application/pdf; name=\"rfp.pdf\"\r\n\
         Content-Disposition: attachment; filename=\"rfp.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n\
         {}\r\n--b1--\r\n",
        lines.join("\r\n")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_and_parser_keep_blobs_in_s3_and_a_refused_key_stalls_without_dead_letters() {
    let env = TestEnv::new("blob-s3");
    let bucket = std::env::var("MAILSTREAM_S3_BUCKET").unwrap_or_else(|_| "mailstream".into());
    let blob_url = format!("s3://{bucket}/{}", env.prefix.trim_end_matches('-'));
    let vars = s3_options(&secret_file());
    let mut ingest_vars: Vec<(&str, &str)> =
        vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    ingest_vars.extend([
        ("MAILSTREAM_INGEST_ACCEPTED_DOMAINS", SAMPLE_DOMAIN),
        ("MAILSTREAM_INGEST_BLOB_URL", blob_url.as_str()),
        ("MAILSTREAM_INGEST_INLINE_LIMIT_BYTES", "1024"),
    ]);
    let unused = temp_dir("blob-s3-unused");
    let mut ingest = start(&env, &unused, &ingest_vars).await;
    let mut parser_vars = ingest_vars.clone();
    parser_vars.retain(|(k, _)| k.starts_with("MAILSTREAM_BLOB_STORE_"));
    parser_vars.push(("MAILSTREAM_PARSER_BLOB_URL", blob_url.as_str()));
    let mut parser = env.spawn("parser", "a", &parser_vars);

    let pdf: Vec<u8> = (0..4096u32).map(|i| (i * 7 % 251) as u8).collect();
    let dir = temp_dir("blob-s3-mail");
    let file = dir.join("rfp.eml");
    std::fs::write(&file, email_with_attachment(&pdf)).expect("write email");
    let rcpt = format!("sales@{SAMPLE_DOMAIN}");
    let sent = smtplib(
        ingest.smtp,
        &file,
        "sam@client.test",
        "client.test",
        &[rcpt.as_str()],
    );
    assert!(sent.contains("SENT"), "{sent}");

    let raw = collect(
        &env.consumer(&["raw-email"]),
        1,
        Duration::from_secs(60),
        Duration::ZERO,
    )
    .await;
    let parsed = collect(
        &env.consumer(&["parsed"]),
        1,
        Duration::from_secs(60),
        Duration::ZERO,
    )
    .await;
    terminate(&mut parser, Duration::from_secs(30));
    terminate(&mut ingest.child, Duration::from_secs(30));
    let raw: Vec<RawEmail> =
        decode_as(env.registry(), &raw, |r: &RawEmail| r.ingest_id.as_str()).await;
    let parsed: Vec<ParsedEmail> = decode_as(env.registry(), &parsed, |p: &ParsedEmail| {
        p.message_id.as_str()
    })
    .await;
    let store = BlobStore::open(&blob_url, &store_options(&vars)).expect("open the bucket");
    let raw = &raw[0];
    let raw_uri = raw
        .blob_uri
        .as_deref()
        .expect("claim-checked into the blob store");
    assert!(raw_uri.starts_with(&format!("s3://{bucket}/")), "{raw_uri}");
    let message = store
        .get(raw_uri, Some(&raw.sha256))
        .await
        .expect("the raw message is in S3");
    assert_eq!(message.len() as i64, raw.size);
    let attachment = parsed[0]
        .attachments
        .iter()
        .find(|a| a.filename.as_deref() == Some("rfp.pdf"))
        .expect("the attachment");
    let uri = attachment.blob_uri.as_deref().expect("stored");
    assert!(uri.starts_with(&format!("s3://{bucket}/")), "{uri}");
    let bytes = store
        .get(uri, Some(&sha256_hex(&pdf)))
        .await
        .expect("the attachment is in S3");
    assert_eq!(bytes, pdf, "byte for byte");

    // A parser whose secret key S3 refuses: it stalls on the store and dead-letters nothing.
    let wrong = dir.join("wrong-secret");
    std::fs::write(&wrong, "not-the-secret-key\n").expect("write");
    let wrong_vars = s3_options(wrong.to_str().expect("utf-8 path"));
    let http = format!("127.0.0.1:{}", free_port());
    let mut refused_vars: Vec<(&str, &str)> = wrong_vars
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    refused_vars.push(("MAILSTREAM_PARSER_BLOB_URL", blob_url.as_str()));
    refused_vars.push(("MAILSTREAM_HTTP_ADDR", http.as_str()));
    refused_vars.push(("MAILSTREAM_STALL_TIMEOUT_MS", "3000"));
    env.reset_to_earliest("parser");
    let mut refused = env.spawn("parser", "b", &refused_vars);
    let started = std::time::Instant::now();
    let mut ready = 200;
    while started.elapsed() < Duration::from_secs(40) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        ready = http_get(&format!("http://{http}/readyz")).await.0;
        if ready == 503 {
            break;
        }
    }
    let dlq = collect(
        &env.consumer(&["raw-email.dlq"]),
        1,
        Duration::from_secs(2),
        Duration::ZERO,
    )
    .await;
    terminate(&mut refused, Duration::from_secs(30));
    assert_eq!(ready, 503, "stalled on the refused store, and says so");
    assert!(
        dlq.is_empty(),
        "nothing dead-lettered: {} records",
        dlq.len()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The REST CRM gets an S3 attachment as a presigned HTTPS link (`attachment_url_expiry_secs`)
/// that fetches the bytes without credentials; the object itself stays private.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rest_crm_links_an_s3_attachment_by_a_presigned_url_it_can_fetch() {
    let env = TestEnv::new("blob-link");
    let bucket = std::env::var("MAILSTREAM_S3_BUCKET").unwrap_or_else(|_| "mailstream".into());
    let blob_url = format!("s3://{bucket}/{}", env.prefix.trim_end_matches('-'));
    let vars = s3_options(&secret_file());
    let store = BlobStore::open(&blob_url, &store_options(&vars)).expect("open the bucket");
    let pdf: Vec<u8> = (0..2048u32).map(|i| (i * 13 % 251) as u8).collect();
    let (uri, sha) = store.put(pdf.clone()).await.expect("stored");
    let mut lead = with_attachment(
        reply_lead("link-1@client.test", "sam@client.test", now_ms()),
        Some("rfp.pdf"),
        &sha,
    );
    lead.resolved.email.attachments[0].blob_uri = Some(uri.clone());

    let crm = FakeCrm::start(TOKEN).await.expect("stand-in");
    let mut sink_vars: Vec<(&str, &str)> =
        vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    sink_vars.extend([
        ("MAILSTREAM_CRM_SINK_BACKEND", "rest"),
        ("MAILSTREAM_CRM_SINK_BASE_URL", crm.base_url.as_str()),
        ("MAILSTREAM_CRM_SINK_TOKEN", TOKEN),
        ("MAILSTREAM_CRM_SINK_ATTACHMENT_URL_EXPIRY_SECS", "600"),
    ]);
    let mut sink = spawn_sink(&env, "a", free_port(), &sink_vars);
    produce_leads(&env, &[lead]).await;
    let results = crm_results(&env, 1, Duration::from_secs(60)).await;
    terminate(&mut sink, Duration::from_secs(30));
    assert_eq!(results[0].attachments_written, 1, "{results:?}");

    let urls: Vec<String> = crm.rows().attachment_urls.into_values().collect();
    let [url] = &urls[..] else {
        panic!("one attachment link: {urls:?}")
    };
    let endpoint = std::env::var("MAILSTREAM_S3_ENDPOINT").expect("dev/up's MinIO");
    assert!(
        url.starts_with(&endpoint)
            && url.contains("X-Amz-Signature=")
            && url.contains("X-Amz-Expires=600"),
        "a presigned URL of the object, not its URI: {url}"
    );
    let fetched = reqwest::get(url.as_str()).await.expect("GET the link");
    assert_eq!(fetched.status().as_u16(), 200);
    let bytes = fetched.bytes().await.expect("body");
    assert_eq!(
        bytes.as_ref(),
        pdf.as_slice(),
        "the attachment, byte for byte"
    );
    let unsigned = url.split('?').next().unwrap_or_default();
    let (status, _) = http_get(unsigned).await;
    assert_eq!(status, 403, "the object itself is not public");
    assert!(store.delete(&uri).await.expect("cleaned up"));
}
