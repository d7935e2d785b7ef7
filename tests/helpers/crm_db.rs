//! The CRM's PostgreSQL tables as tests see them, and the stream processors that fill them: the
//! bundled samples (`dev/samples/`), `psql` queries, a snapshot of every CRM table with each
//! row's `xmin` (which changes whenever a row is rewritten, so "a replay changed nothing" is
//! checked to the letter), and the four stream processors writing into a test's own schema.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use crate::TestEnv;

/// The recipient domain of the bundled samples.
pub const SAMPLE_DOMAIN: &str = "in.mailstream.test";

/// Every table the CRM sink writes.
pub const TABLES: &[&str] = &[
    "accounts",
    "contacts",
    "deals",
    "email_activities",
    "attachments",
    "leads",
    "follow_ups",
    "responses",
];

/// `dev/samples/`: the sample emails and the contacts/accounts CSV exports.
pub fn samples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../dev/samples")
}

/// The sample `.eml` files, sorted.
pub fn sample_emails() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(samples())
        .expect("dev/samples")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "eml"))
        .collect();
    files.sort();
    files
}

/// The local stack's PostgreSQL (from the environment `dev/test` exports, else the default).
pub fn database_url() -> String {
    std::env::var("MAILSTREAM_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://mailstream@127.0.0.1:5433/mailstream".into())
}

/// Runs one SQL statement with `psql`; its unaligned, trimmed output.
pub fn psql(sql: &str) -> String {
    let out = Command::new("psql")
        .args([&database_url(), "-v", "ON_ERROR_STOP=1", "-qAt", "-c", sql])
        .output()
        .expect("run psql");
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The rows `sql` selects, each split into its columns (no value may hold `|`; NULL reads as
/// an empty string).
pub fn psql_rows(sql: &str) -> Vec<Vec<String>> {
    psql(sql)
        .lines()
        .map(|l| l.split('|').map(str::to_string).collect())
        .collect()
}

/// Every row of every CRM table in `schema`, with its `xmin`, table by table.
pub fn snapshot(schema: &str) -> BTreeMap<String, String> {
    TABLES
        .iter()
        .map(|t| {
            let rows = psql(&format!(
                "SELECT string_agg(xmin::text || ' ' || row_to_json(r)::text, E'\\n' ORDER BY row_to_json(r)::text) FROM {schema}.{t} r"
            ));
            (t.to_string(), rows)
        })
        .collect()
}

/// This test's own PostgreSQL schema, from its topic prefix.
pub fn schema_of(env: &TestEnv) -> String {
    env.prefix.trim_end_matches('-').replace('-', "_")
}

/// Starts parser (scanning with the local clamd), resolver, scorer and crm-sink (PostgreSQL,
/// `schema`) as instance `a`.
pub fn spawn_stream_processors(env: &TestEnv, blob_url: &str, schema: &str) -> Vec<Child> {
    let clamd = clamd_address();
    spawn_stream_processors_with(
        env,
        blob_url,
        schema,
        &[("MAILSTREAM_PARSER_CLAMD_ADDRESS", clamd.as_str())],
        &[],
    )
}

/// [`spawn_stream_processors`] with `parser_vars` set for the parser (its clamd among them)
/// and `common` for every processor.
pub fn spawn_stream_processors_with(
    env: &TestEnv,
    blob_url: &str,
    schema: &str,
    parser_vars: &[(&str, &str)],
    common: &[(&str, &str)],
) -> Vec<Child> {
    let db = database_url();
    let mut parser = joined(common, &[("MAILSTREAM_PARSER_BLOB_URL", blob_url)]);
    parser.extend_from_slice(parser_vars);
    let sink = [
        ("MAILSTREAM_CRM_SINK_SCHEMA", schema),
        ("MAILSTREAM_CRM_SINK_DATABASE_URL", db.as_str()),
    ];
    vec![
        env.spawn("parser", "a", &parser),
        env.spawn(
            "resolver",
            "a",
            &joined(
                common,
                &[("MAILSTREAM_RESOLVER_OUR_DOMAINS", SAMPLE_DOMAIN)],
            ),
        ),
        env.spawn("scorer", "a", common),
        env.spawn("crm-sink", "a", &joined(common, &sink)),
    ]
}

fn joined<'a>(
    common: &[(&'a str, &'a str)],
    own: &[(&'a str, &'a str)],
) -> Vec<(&'a str, &'a str)> {
    common.iter().chain(own).copied().collect()
}

/// The local clamd (`dev/up` exports it as `MAILSTREAM_CLAMD_ADDRESS`), else its default.
pub fn clamd_address() -> String {
    std::env::var("MAILSTREAM_CLAMD_ADDRESS").unwrap_or_else(|_| "tcp://127.0.0.1:3310".into())
}

/// The CA of the local PostgreSQL's TLS certificate (`dev/up` exports it as
/// `MAILSTREAM_PG_CA_FILE`), else where `dev/up` puts it.
pub fn pg_ca_file() -> PathBuf {
    std::env::var_os("MAILSTREAM_PG_CA_FILE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let state = std::env::var_os("MAILSTREAM_STATE").map_or_else(
                || {
                    PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
                        .join(".local/state/mailstream")
                },
                PathBuf::from,
            );
            state.join("postgres/tls/ca.crt")
        })
}

/// [`database_url`] with query parameters added (`sslmode=verify-full`, `application_name=..`).
pub fn database_url_with(params: &[(&str, &str)]) -> String {
    let url = database_url();
    let query: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{}", query.join("&"))
}

/// Whether each live session named `application_name` is encrypted (`pg_stat_ssl.ssl`), one
/// entry per session.
pub fn sessions_ssl(application_name: &str) -> Vec<bool> {
    let out = psql(&format!(
        "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
         WHERE a.application_name = '{}' ORDER BY a.pid",
        application_name.replace('\'', "''")
    ));
    out.lines().map(|l| l.trim() == "t").collect()
}

/// Mail over SMTP into PostgreSQL: ingest (accepting [`SAMPLE_DOMAIN`]) and the four stream
/// processors writing into the test's own schema ([`schema_of`]), for tests that send `.eml`
/// text and read the CRM tables.
pub struct SmtpToCrm {
    pub schema: String,
    pub ingest: crate::mail::Ingest,
    pub processors: Vec<Child>,
    /// The blob store's directory (`file://` URL given to ingest and the parser).
    pub blobs: PathBuf,
    mail_dir: PathBuf,
}

impl SmtpToCrm {
    /// Starts ingest and the stream processors; `parser_vars` and `common` as for
    /// [`spawn_stream_processors_with`] (the parser scans with the local clamd unless
    /// `parser_vars` says otherwise).
    pub async fn start(
        env: &TestEnv,
        parser_vars: &[(&str, &str)],
        common: &[(&str, &str)],
    ) -> Self {
        let name = env.prefix.trim_end_matches('-');
        let blobs = crate::mail::temp_dir(&format!("{name}-blobs"));
        let blob_url = format!("file://{}", blobs.display());
        let schema = schema_of(env);
        let ingest = crate::mail::start(
            env,
            &blobs,
            &[("MAILSTREAM_INGEST_ACCEPTED_DOMAINS", SAMPLE_DOMAIN)],
        )
        .await;
        let clamd = clamd_address();
        let mut parser = vec![("MAILSTREAM_PARSER_CLAMD_ADDRESS", clamd.as_str())];
        parser.extend_from_slice(parser_vars);
        let processors = spawn_stream_processors_with(env, &blob_url, &schema, &parser, common);
        Self {
            schema,
            ingest,
            processors,
            blobs,
            mail_dir: crate::mail::temp_dir(&format!("{name}-mail")),
        }
    }

    /// Sends `text` (a whole message) over SMTP from `sender` to `rcpts`; asserts it was taken.
    pub fn send(&self, text: &str, sender: &str, rcpts: &[&str]) {
        let file = self.mail_dir.join(format!("{}.eml", uuid::Uuid::new_v4()));
        std::fs::write(&file, text).expect("write the email");
        let helo = sender.rsplit_once('@').map_or("client.test", |(_, d)| d);
        let sent = crate::mail::smtplib(self.ingest.smtp, &file, sender, helo, rcpts);
        assert!(sent.contains("SENT"), "{sender}: {sent}");
    }

    /// Stops the processors and ingest (SIGTERM, then kill after 30 s).
    pub fn stop(&mut self) {
        for child in &mut self.processors {
            crate::terminate(child, std::time::Duration::from_secs(30));
        }
        crate::terminate(&mut self.ingest.child, std::time::Duration::from_secs(30));
    }
}
