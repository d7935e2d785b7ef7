//! The CRM sink's PostgreSQL connections over TLS, against the local PostgreSQL of `dev/up`
//! (`ssl = on`, a server certificate for 127.0.0.1 and localhost signed by a dev CA,
//! `MAILSTREAM_PG_CA_FILE`):
//!
//! - `sslmode=verify-full` with the dev CA (`database_ca_file`): every email is written, and
//!   the server's `pg_stat_ssl` says each of the sink's sessions is encrypted;
//! - `sslmode=require` without a CA: written over TLS too;
//! - `sslmode=verify-full` with another CA (a self-signed one made here): the sink refuses to
//!   start, its error names the certificate problem and the setting to fix, and nothing is
//!   written or dead-lettered;
//! - the default (`prefer`) uses TLS since the server offers it, so a password would not travel
//!   in cleartext.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use mailstream_runtime::records::ScoredLead;
use mailstream_tests::crm::{crm_results, produce_leads, scored_lead, sink_log, spawn_sink};
use mailstream_tests::crm_db::{database_url_with, pg_ca_file, psql, schema_of, sessions_ssl};
use mailstream_tests::{TestEnv, collect, free_port, now_ms, terminate};

/// `n` leads from distinct senders, message ids starting with `tag`.
fn leads(tag: &str, n: usize) -> Vec<ScoredLead> {
    let t = now_ms();
    (0..n)
        .map(|i| {
            scored_lead(
                &format!("{tag}-{i}@client.test"),
                &format!("{tag}{i}@client.test"),
                "acct-tls",
                None,
                t,
            )
        })
        .collect()
}

/// The dev CA, checked to exist (dev/up makes it).
fn dev_ca() -> String {
    let ca = pg_ca_file();
    assert!(
        ca.is_file(),
        "{} is missing: run dev/up (it turns TLS on for PostgreSQL)",
        ca.display()
    );
    ca.display().to_string()
}

/// A unique `application_name` for this test's sink, to find its sessions in `pg_stat_activity`.
fn app_name(env: &TestEnv) -> String {
    format!("{}crm-sink", env.prefix)
}

/// Waits until the sink has `want` sessions, and returns whether each is encrypted.
async fn sessions(app: &str, want: usize) -> Vec<bool> {
    let started = Instant::now();
    loop {
        let ssl = sessions_ssl(app);
        if ssl.len() >= want || started.elapsed() > Duration::from_secs(30) {
            return ssl;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn activities(schema: &str) -> i64 {
    psql(&format!("SELECT count(*) FROM {schema}.email_activities"))
        .parse()
        .expect("a count")
}

/// Runs the sink with `url` (and the CA file when given), writes `n` emails through it and
/// checks every one landed over encrypted sessions.
async fn writes_over_tls(name: &str, params: &[(&str, &str)], ca_file: Option<&str>, n: usize) {
    let env = TestEnv::new(name);
    let schema = schema_of(&env);
    let app = app_name(&env);
    let mut params = params.to_vec();
    params.push(("application_name", app.as_str()));
    let url = database_url_with(&params);
    let mut settings = vec![
        ("MAILSTREAM_CRM_SINK_DATABASE_URL", url.as_str()),
        ("MAILSTREAM_CRM_SINK_SCHEMA", schema.as_str()),
    ];
    if let Some(ca) = ca_file {
        settings.push(("MAILSTREAM_CRM_SINK_DATABASE_CA_FILE", ca));
    }
    let port = free_port();
    let mut run = spawn_sink(&env, "a", port, &settings);
    let sent = leads(name, n);
    produce_leads(&env, &sent).await;
    let results = crm_results(&env, n, Duration::from_secs(120)).await;
    let ssl = sessions(&app, 2).await;
    terminate(&mut run, Duration::from_secs(30));
    let log = sink_log(&env, "a");
    assert_eq!(results.len(), n, "every email written: {results:?}\n{log}");
    assert!(
        results.iter().all(|r| r.outcome == "written"),
        "{results:?}"
    );
    assert_eq!(activities(&schema), n as i64);
    assert!(
        ssl.len() >= 2 && ssl.iter().all(|s| *s),
        "pg_stat_ssl: every session of the sink ({app}) is encrypted: {ssl:?}"
    );
    assert!(
        log.contains("the PostgreSQL session is encrypted"),
        "the sink says so at start-up:\n{log}"
    );
    assert!(
        !log.contains("does not support TLS") && !log.contains("cleartext"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_with_the_ca_file_writes_every_email_over_tls() {
    let ca = dev_ca();
    writes_over_tls("tlsfull", &[("sslmode", "verify-full")], Some(&ca), 5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_writes_over_tls_without_a_ca() {
    writes_over_tls("tlsreq", &[("sslmode", "require")], None, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_prefer_uses_tls_when_the_server_offers_it() {
    writes_over_tls("tlspref", &[], None, 2).await;
}

/// A self-signed CA no server here is signed by, in a fresh directory.
fn other_ca(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).expect("temp dir");
    let (cert, key) = (dir.join("other-ca.crt"), dir.join("other-ca.key"));
    let out = Command::new("openssl")
        .args(["req", "-x509", "-new", "-nodes", "-newkey", "ec"])
        .args(["-pkeyopt", "ec_paramgen_curve:P-256", "-days", "2"])
        .args(["-subj", "/CN=not the mailstream dev CA"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    cert
}

/// Waits for the process to exit on its own.
fn exit_status(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let started = Instant::now();
    while started.elapsed() < timeout {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_with_a_wrong_ca_refuses_to_write_and_says_why() {
    let env = TestEnv::new("tlsbad");
    let schema = schema_of(&env);
    let dir = std::env::temp_dir().join(format!("{}tls", env.prefix));
    let wrong = other_ca(&dir);
    let url = database_url_with(&[("sslmode", "verify-full")]);
    let sent = leads("tlsbad", 3);
    produce_leads(&env, &sent).await;
    let port = free_port();
    let mut run = spawn_sink(
        &env,
        "a",
        port,
        &[
            ("MAILSTREAM_CRM_SINK_DATABASE_URL", url.as_str()),
            ("MAILSTREAM_CRM_SINK_SCHEMA", schema.as_str()),
            (
                "MAILSTREAM_CRM_SINK_DATABASE_CA_FILE",
                &wrong.display().to_string(),
            ),
        ],
    );
    let status = exit_status(&mut run, Duration::from_secs(60));
    if status.is_none() {
        terminate(&mut run, Duration::from_secs(30));
    }
    let results = collect(
        &env.consumer(&["crm-results"]),
        1,
        Duration::from_secs(3),
        Duration::ZERO,
    )
    .await;
    let dlq = collect(
        &env.consumer(&["scored.dlq"]),
        1,
        Duration::from_secs(3),
        Duration::ZERO,
    )
    .await;
    let log = sink_log(&env, "a");
    let _ = std::fs::remove_dir_all(&dir);
    let status = status.expect("the sink stops at start-up: it cannot trust the server");
    assert!(!status.success(), "{status:?}\n{log}");
    assert!(
        log.contains("error performing TLS handshake: invalid peer certificate: UnknownIssuer"),
        "the error keeps its cause: the certificate's issuer is unknown:\n{log}"
    );
    assert!(
        log.contains("MAILSTREAM_CRM_SINK_DATABASE_CA_FILE"),
        "and names the setting to fix:\n{log}"
    );
    assert!(
        results.is_empty(),
        "nothing written: {} results",
        results.len()
    );
    assert!(dlq.is_empty(), "a TLS refusal is not a poison record");
    let tables = psql(&format!(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = '{schema}'"
    ));
    assert_eq!(tables, "0", "the CRM schema was never touched");
}
