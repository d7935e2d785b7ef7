//! Real mail clients and a running ingest, for tests that feed the pipeline the way users do:
//! Python's `smtplib`, `swaks` and `curl` with an HMAC signature, against `mailstream run ingest`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use mailstream_runtime::AvroRecord;
use mailstream_runtime::records::{ParsedEmail, RawEmail};

use crate::{Seen, TestEnv, collect, decode, free_port, http_get};

/// Recipient domains the test ingest accepts.
pub const DOMAINS: &str = "in.example.com,example.org";
/// The HMAC secret of the test ingest's HTTP intake.
pub const SECRET: &str = "test-secret-0123456789abcdef";

/// A running `mailstream run ingest` and its ports.
pub struct Ingest {
    pub child: Child,
    pub smtp: u16,
    pub http: u16,
    pub metrics: String,
}

/// Whether any file under `dir` (a blob store, say) holds `needle`.
pub fn any_file_contains(dir: &Path, needle: &[u8]) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|entry| {
        let path = entry.path();
        if path.is_dir() {
            any_file_contains(&path, needle)
        } else {
            std::fs::read(&path).is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
        }
    })
}

pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mailstream-{name}-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Starts `mailstream run ingest` on free ports and waits until it is ready.
pub async fn start(env: &TestEnv, blobs: &Path, extra: &[(&str, &str)]) -> Ingest {
    let (smtp, http) = (free_port(), free_port());
    let metrics = format!("127.0.0.1:{}", free_port());
    let mut child = spawn(env, blobs, smtp, http, &metrics, extra);
    let started = Instant::now();
    loop {
        if http_get(&format!("http://{metrics}/readyz")).await.0 == 200 {
            break;
        }
        if let Some(status) = child.try_wait().expect("wait") {
            panic!("ingest exited during start-up: {status} (log in target/debug/test-logs)");
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "ingest not ready in 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ingest {
        child,
        smtp,
        http,
        metrics,
    }
}

/// Starts another `mailstream run ingest` on the ports of `ingest` (one that died), without
/// waiting for it: its clients reconnect as they would to a restarted MX.
pub fn respawn(env: &TestEnv, blobs: &Path, ingest: &Ingest, extra: &[(&str, &str)]) -> Child {
    spawn(env, blobs, ingest.smtp, ingest.http, &ingest.metrics, extra)
}

fn spawn(
    env: &TestEnv,
    blobs: &Path,
    smtp: u16,
    http: u16,
    metrics: &str,
    extra: &[(&str, &str)],
) -> Child {
    let smtp_addr = format!("127.0.0.1:{smtp}");
    let http_addr = format!("127.0.0.1:{http}");
    let blob_url = format!("file://{}", blobs.display());
    let mut vars = vec![
        ("MAILSTREAM_HTTP_ADDR", metrics),
        ("MAILSTREAM_INGEST_SMTP_ADDR", smtp_addr.as_str()),
        ("MAILSTREAM_INGEST_HTTP_ADDR", http_addr.as_str()),
        ("MAILSTREAM_INGEST_ACCEPTED_DOMAINS", DOMAINS),
        ("MAILSTREAM_INGEST_HMAC_SECRET", SECRET),
        ("MAILSTREAM_INGEST_BLOB_URL", blob_url.as_str()),
        ("MAILSTREAM_INGEST_HOSTNAME", "mx.test"),
    ];
    vars.extend_from_slice(extra);
    env.spawn("ingest", "a", &vars)
}

pub fn run(cmd: &mut Command) -> (i32, String) {
    let out = cmd.output().expect("run client");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

pub const SMTPLIB: &str = r#"
import smtplib, sys
port, path, frm, helo = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
rcpts = sys.argv[5:]
s = smtplib.SMTP("127.0.0.1", port, local_hostname=helo)
code, _ = s.ehlo()
for ext in ("pipelining", "size", "8bitmime", "smtputf8", "enhancedstatuscodes"):
    assert s.has_extn(ext), ext
try:
    s.sendmail(frm, rcpts, open(path, "rb").read())
    print("SENT")
except smtplib.SMTPRecipientsRefused as e:
    print("RCPT-REFUSED", sorted(c for c, _ in e.recipients.values()), [m.decode() for _, m in e.recipients.values()])
except smtplib.SMTPSenderRefused as e:
    print("MAIL-REFUSED", e.smtp_code, e.smtp_error.decode())
except smtplib.SMTPDataError as e:
    print("DATA-REFUSED", e.smtp_code, e.smtp_error.decode())
s.quit()
"#;

pub fn smtplib(port: u16, file: &Path, from: &str, helo: &str, rcpts: &[&str]) -> String {
    let mut cmd = Command::new("python3");
    cmd.arg("-c")
        .arg(SMTPLIB)
        .arg(port.to_string())
        .arg(file)
        .arg(from)
        .arg(helo)
        .args(rcpts);
    let (code, out) = run(&mut cmd);
    assert_eq!(code, 0, "python failed: {out}");
    out
}

pub fn swaks(port: u16, file: &Path, to: &str) -> (i32, String) {
    run(Command::new("swaks")
        .args(["--server", "127.0.0.1", "--port", &port.to_string()])
        .args(["--helo", "swaks.client.test", "--from", "bob@sender.test"])
        .args(["--to", to, "--data"])
        .arg(format!("@{}", file.display())))
}

/// The envelope headers [`curl`] sends.
pub const CURL_RCPT_TO: &str = "deals+acme@in.example.com, ops@example.org";
pub const CURL_MAIL_FROM: &str = "carol@sender.test";

/// The signature of a [`curl`] request: v2, over its envelope headers and `body`.
pub fn sign(timestamp: &str, body: &[u8]) -> String {
    sign_v2(timestamp, Some(CURL_RCPT_TO), Some(CURL_MAIL_FROM), body)
}

/// The v2 signature (`services/ingest/src/http/signature.rs`):
/// HMAC-SHA256 over `v2 LF {timestamp} LF {rcpt_to} LF {mail_from} LF {body}`, an absent header
/// signed as empty.
pub fn sign_v2(
    timestamp: &str,
    rcpt_to: Option<&str>,
    mail_from: Option<&str>,
    body: &[u8],
) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("key");
    for field in [
        "v2",
        timestamp,
        rcpt_to.unwrap_or_default(),
        mail_from.unwrap_or_default(),
    ] {
        mac.update(field.as_bytes());
        mac.update(b"\n");
    }
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// The v1 signature, over `{timestamp}.{body}` only: accepted without envelope headers.
pub fn sign_v1(timestamp: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("key");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// POSTs `file` with curl; returns (status, body).
pub fn curl(
    port: u16,
    file: &Path,
    content_type: &str,
    ts: &str,
    signature: &str,
) -> (u16, String) {
    let (code, out) = run(Command::new("curl")
        .args(["-sS", "-w", "\n%{http_code}", "-X", "POST"])
        .arg(format!("http://127.0.0.1:{port}/v1/messages"))
        .args(["-H", &format!("Content-Type: {content_type}")])
        .args(["-H", &format!("X-Mailstream-Timestamp: {ts}")])
        .args(["-H", &format!("X-Mailstream-Signature: {signature}")])
        .args(["-H", &format!("X-Mailstream-Rcpt-To: {CURL_RCPT_TO}")])
        .args(["-H", &format!("X-Mailstream-Mail-From: {CURL_MAIL_FROM}")])
        .arg("--data-binary")
        .arg(format!("@{}", file.display())));
    assert_eq!(code, 0, "curl failed: {out}");
    let (body, status) = out.trim_end().rsplit_once('\n').expect("status line");
    (status.parse().expect("status"), body.to_string())
}

/// A fixture of the parser's corpus (`services/parser/tests/fixtures/`).
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../services/parser/tests/fixtures")
        .join(name)
}

/// The record as JSON without the fields that depend on the delivery rather than the message.
pub fn comparable(record: &ParsedEmail) -> serde_json::Value {
    let mut value = serde_json::to_value(record).expect("json");
    if let serde_json::Value::Object(map) = &mut value {
        for key in [
            "ingest_id",
            "received_at",
            "envelope_rcpt_to",
            "envelope_mail_from",
        ] {
            map.remove(key);
        }
    }
    value
}

/// A CRLF message of about `body_bytes` bytes, with a line starting with a dot.
pub fn message(subject: &str, body_bytes: usize) -> Vec<u8> {
    let mut m = format!(
        "From: Alice <alice@sender.test>\r\nTo: deals@in.example.com\r\nSubject: {subject}\r\n\
Message-ID: <{}@sender.test>\r\n\r\nHello,\r\n.a line that starts with a dot\r\n",
        uuid::Uuid::new_v4()
    )
    .into_bytes();
    while m.len() < body_bytes {
        m.extend_from_slice(b"lorem ipsum dolor sit amet consectetur adipiscing elit sed do\r\n");
    }
    m
}

/// The `raw-email` records (reads until `want` arrived, then 3 s more), each checked to be
/// keyed by its ingest id and to carry the correlation and trace headers.
pub async fn raw_emails(env: &TestEnv, want: usize) -> Vec<(Seen, RawEmail)> {
    let seen = collect(
        &env.consumer(&["raw-email"]),
        want,
        Duration::from_secs(60),
        Duration::from_secs(3),
    )
    .await;
    let mut out = Vec::new();
    for record in seen {
        let value = decode(env.registry(), record.payload.as_deref().expect("payload")).await;
        let email = RawEmail::from_avro(value).expect("a RawEmail");
        assert_eq!(record.key.as_deref(), Some(email.ingest_id.as_str()), "key");
        assert_eq!(
            record.headers.get("mailstream.correlation_id"),
            Some(&email.ingest_id)
        );
        assert!(record.headers["traceparent"].starts_with("00-"));
        out.push((record, email));
    }
    out
}

/// A self-signed certificate and key for `cn` in `dir` (openssl): (cert.pem, key.pem).
pub fn self_signed_cert(dir: &Path, cn: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let (code, out) = run(Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", &format!("/CN={cn}"), "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert));
    assert_eq!(code, 0, "openssl: {out}");
    (cert, key)
}
