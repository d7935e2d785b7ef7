//! The CRM sink's settings: file table `[crm-sink]`, environment `MAILSTREAM_CRM_SINK_<KEY>`.
//! Every problem is reported at once with its key ([`CrmSinkSettings::validate`]).
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `backend` | `postgres` | `postgres`, `rest`, `hubspot` or `tryton` |
//! | `database_url` | (required for postgres) | `postgres://user:pass@host:port/db`; never logged. `?sslmode=` `disable`, `prefer` (default: TLS whenever the server offers it), `require`, `verify-ca` or `verify-full` (libpq's meanings: `backend/postgres_tls.rs`); `sslrootcert=FILE` is `database_ca_file`; `application_name` (default `mailstream-crm-sink`) |
//! | `database_ca_file` | none (`verify-*`: the system's roots) | PEM file of the CA(s) the PostgreSQL server's certificate must chain to (`verify-ca`, `verify-full`, and `require` as in libpq); missing, unreadable or without a certificate stops start-up |
//! | `schema` | `crm` | PostgreSQL schema of the CRM tables (created, migrated at start) |
//! | `base_url` | (required for rest and tryton; hubspot: `https://api.hubapi.com`) | the CRM API's base URL (Tryton: the server's, e.g. `http://127.0.0.1:8000`) |
//! | `token` | none (required for tryton) | bearer token of the CRM API (Tryton: a validated REST user-application key); never logged |
//! | `tryton_database` | (required for tryton) | Tryton: the database name, the first segment of its REST paths (`/<database>/rest/model/...`) |
//! | `contacts_path` | `/contacts` | REST: contact upsert (by email) |
//! | `deals_path` | `/deals` | REST: deal upsert (by id) |
//! | `activities_path` | `/activities` | REST: email activity create; `<activities_path>/<id>` is `PATCH`ed by a relinked record (thread, parent, deal) and deleted by an erase |
//! | `attachments_path` | `/activities/{activity_id}/attachments` | REST: attachment create |
//! | `helpdesk_url` | (none: no tickets) | a helpdesk's REST API: a lead whose intent is one of `ticket_intents` and whose status is below `qualified` opens one ticket there, idempotent on the message id, its id in the crm-result (`helpdesk.rs`) |
//! | `helpdesk_token` | none | bearer token of the helpdesk; never logged |
//! | `helpdesk_tickets_path` | `/tickets` | the helpdesk's ticket create |
//! | `ticket_intents` | `support` | the intents whose leads open a ticket, comma separated |
//! | `attachment_url_expiry_secs` | 0 | REST: an attachment stored in S3 is linked by a presigned HTTPS URL valid this long (at most 604800), which the CRM fetches without credentials; 0 links the blob URI (`backend/links.rs`) |
//! | `hubspot_message_id_property` | `mailstream_message_id` | HubSpot: unique-value email property holding the message id |
//! | `max_attempts` | 6 | attempts per CRM call in place, the first included; then the batch is retried by the runtime |
//! | `backoff_max_ms` | 2000 | ceiling of the backoff between attempts in place (the runtime's `Backoff`: full jitter, doubling from 100 ms) |
//! | `backoff_base_ms` | 100 | deprecated and ignored (the runtime's backoff starts at 100 ms); still accepted so existing configuration loads |
//! | `retry_after_max_ms` | 300000 | longest `Retry-After` honoured: no call is made before it ends |
//! | `request_timeout_ms` | 2000 | per HTTP request; PostgreSQL statement and connect timeout |
//! | `rate_limit_per_sec` | postgres 0 (none), rest 20, hubspot 10, tryton 20 | token-bucket rate of CRM calls |
//! | `rate_limit_burst` | the rate (at least 1) | token-bucket size |
//! | `max_concurrency` | 4 | CRM calls in flight at once (attachments go in parallel) |
//! | `dry_run` | false | log the writes it would make, make none |
//! | `write_excluded` | false | also write excluded emails (auto-replies, bounces, list mail) |
//! | `never_log` | (none) | addresses (`ceo@board.example`, also with a `+tag`) and domains (`@lawfirm.example` or `lawfirm.example`, subdomains included), comma separated, case-insensitive: an email with **any participant** on the list (From, Sender, Reply-To, To, Cc, Bcc, envelope) is never written, whatever `write_excluded` says; its crm-results record is `skipped` with reason `never-log` (`never_log.rs`). List other people's addresses, never your own domains |
//!
//! Retries in place end where the record's time inside its Kafka transaction ends: the runtime's
//! `transaction_timeout_ms` less `batch_max_ms` (a record starts at most that long after its
//! batch opened) and the runtime's commit margin (`RuntimeConfig::least_record_time`: 7.9 s
//! with the runtime's defaults).
//! What still fails then is handed back to the runtime (transient: the batch is aborted and
//! retried after its backoff, never dead-lettered) instead of letting the broker time the
//! transaction out. One request must fit in that time: start-up fails otherwise, naming both keys.

use std::time::Duration;

use mailstream_runtime::RuntimeConfig;
use mailstream_runtime::config::{COMMIT_MARGIN, Settings, env_name, key_label, lenient};
use schemars::JsonSchema;
use serde::Deserialize;

use crate::backend::postgres_tls::{Connector, Target};
use crate::never_log::NeverLog;
use crate::retry::RetryPolicy;

/// The processor's name and config section.
pub const SECTION: &str = "crm-sink";

/// The default of the deprecated `backoff_base_ms` (any other value is warned about).
pub const DEPRECATED_BACKOFF_BASE_MS: u64 = 100;

/// The CRM the sink writes to (`backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    #[default]
    Postgres,
    Rest,
    Hubspot,
    Tryton,
}

impl Backend {
    /// The name in settings and in crm-results' `backend`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Postgres => "postgres",
            Self::Rest => "rest",
            Self::Hubspot => "hubspot",
            Self::Tryton => "tryton",
        }
    }
}

/// Settings of `mailstream run crm-sink`.
#[derive(Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CrmSinkSettings {
    /// `postgres`, `rest`, `hubspot` or `tryton`.
    #[serde(default)]
    pub backend: Backend,
    /// `postgres://user:pass@host:port/db`; never logged. `?sslmode=` `disable`, `prefer` (default:
    /// TLS whenever the server offers it), `require`, `verify-ca` or `verify-full` (libpq's
    /// meanings: `backend/postgres_tls.rs`); `sslrootcert=FILE` is `database_ca_file`;
    /// `application_name` (default `mailstream-crm-sink`).
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub database_url: Option<String>,
    /// PEM file of the CA(s) the PostgreSQL server's certificate must chain to (`verify-ca`,
    /// `verify-full`, and `require` as in libpq); missing, unreadable or without a certificate
    /// stops start-up.
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub database_ca_file: Option<String>,
    /// PostgreSQL schema of the CRM tables (created, migrated at start).
    #[serde(default = "defaults::schema", deserialize_with = "lenient::string")]
    pub schema: String,
    /// The CRM API's base URL (Tryton: the server's, e.g. `http://127.0.0.1:8000`).
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub base_url: Option<String>,
    /// Bearer token of the CRM API (Tryton: a validated REST user-application key); never logged.
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub token: Option<String>,
    /// REST: contact upsert (by email).
    #[serde(
        default = "defaults::contacts_path",
        deserialize_with = "lenient::string"
    )]
    pub contacts_path: String,
    /// REST: deal upsert (by id).
    #[serde(default = "defaults::deals_path", deserialize_with = "lenient::string")]
    pub deals_path: String,
    /// REST: email activity create.
    #[serde(
        default = "defaults::activities_path",
        deserialize_with = "lenient::string"
    )]
    pub activities_path: String,
    /// REST: attachment create.
    #[serde(
        default = "defaults::attachments_path",
        deserialize_with = "lenient::string"
    )]
    pub attachments_path: String,
    /// HubSpot: unique-value email property holding the message id.
    #[serde(
        default = "defaults::hubspot_property",
        deserialize_with = "lenient::string"
    )]
    pub hubspot_message_id_property: String,
    /// Tryton: the database name, the first segment of its REST paths
    /// (`/<database>/rest/model/...`).
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub tryton_database: Option<String>,
    /// Attempts per CRM call in place, the first included; then the batch is retried by the runtime.
    #[serde(default = "defaults::max_attempts")]
    pub max_attempts: u32,
    /// Deprecated and ignored (the runtime's backoff starts at 100 ms); still accepted so existing
    /// configuration loads.
    #[serde(default = "defaults::backoff_base_ms")]
    pub backoff_base_ms: u64,
    /// Ceiling of the backoff between attempts in place (the runtime's `Backoff`: full jitter,
    /// doubling from 100 ms).
    #[serde(default = "defaults::backoff_max_ms")]
    pub backoff_max_ms: u64,
    /// Longest `Retry-After` honoured: no call is made before it ends.
    #[serde(default = "defaults::retry_after_max_ms")]
    pub retry_after_max_ms: u64,
    /// Per HTTP request; PostgreSQL statement and connect timeout.
    #[serde(default = "defaults::request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Token-bucket rate of CRM calls.
    #[serde(default)]
    pub rate_limit_per_sec: Option<f64>,
    /// Token-bucket size.
    #[serde(default)]
    pub rate_limit_burst: Option<u32>,
    /// CRM calls in flight at once (attachments go in parallel).
    #[serde(default = "defaults::max_concurrency")]
    pub max_concurrency: u32,
    /// Log the writes it would make, make none.
    #[serde(default)]
    pub dry_run: bool,
    /// Also write excluded emails (auto-replies, bounces, list mail).
    #[serde(default)]
    pub write_excluded: bool,
    /// Addresses (`ceo@board.example`, also with a `+tag`) and domains (`@lawfirm.example` or
    /// `lawfirm.example`, subdomains included), comma separated, case-insensitive: an email with
    /// **any participant** on the list (From, Sender, Reply-To, To, Cc, Bcc, envelope) is never
    /// written, whatever `write_excluded` says; its crm-results record is `skipped` with reason
    /// `never-log` (`never_log.rs`). List other people's addresses, never your own domains.
    #[serde(default, deserialize_with = "lenient::list")]
    #[schemars(schema_with = "lenient::list_schema")]
    pub never_log: Vec<String>,
    /// REST: an attachment stored in S3 is linked by a presigned HTTPS URL valid this many
    /// seconds (at most 604800, S3's seven days), which the CRM can fetch without credentials;
    /// 0 links the blob URI itself.
    #[serde(default)]
    #[schemars(range(max = 604800))]
    pub attachment_url_expiry_secs: u64,
    /// A helpdesk's REST API (`https://help.example.com/api`): a lead whose intent is one of
    /// `ticket_intents` and whose status is below `qualified` opens a ticket there
    /// (`helpdesk.rs`). Unset: no tickets.
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub helpdesk_url: Option<String>,
    /// Bearer token of the helpdesk API; never logged.
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub helpdesk_token: Option<String>,
    /// Path of the helpdesk's ticket create, under `helpdesk_url`.
    #[serde(default = "defaults::helpdesk_tickets_path")]
    pub helpdesk_tickets_path: String,
    /// The intents (the rules file's) whose leads below `qualified` open a ticket.
    #[serde(
        default = "defaults::ticket_intents",
        deserialize_with = "lenient::list"
    )]
    #[schemars(schema_with = "lenient::list_schema")]
    pub ticket_intents: Vec<String>,
}

mod defaults {
    pub fn schema() -> String {
        "crm".into()
    }
    pub fn contacts_path() -> String {
        "/contacts".into()
    }
    pub fn deals_path() -> String {
        "/deals".into()
    }
    pub fn activities_path() -> String {
        "/activities".into()
    }
    pub fn attachments_path() -> String {
        "/activities/{activity_id}/attachments".into()
    }
    pub fn helpdesk_tickets_path() -> String {
        "/tickets".into()
    }
    pub fn ticket_intents() -> Vec<String> {
        vec!["support".into()]
    }
    pub fn hubspot_property() -> String {
        "mailstream_message_id".into()
    }
    pub fn max_attempts() -> u32 {
        6
    }
    pub fn backoff_base_ms() -> u64 {
        super::DEPRECATED_BACKOFF_BASE_MS
    }
    pub fn backoff_max_ms() -> u64 {
        2_000
    }
    pub fn retry_after_max_ms() -> u64 {
        300_000
    }
    pub fn request_timeout_ms() -> u64 {
        2_000
    }
    pub fn max_concurrency() -> u32 {
        4
    }
}

impl std::fmt::Debug for CrmSinkSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CrmSinkSettings")
            .field("backend", &self.backend)
            .field(
                "database_url",
                &self.database_url.as_ref().map(|_| "<redacted>"),
            )
            .field("database_ca_file", &self.database_ca_file)
            .field("schema", &self.schema)
            .field("base_url", &self.base_url)
            .field("tryton_database", &self.tryton_database)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("retry", &self.retry_policy())
            .field("dry_run", &self.dry_run)
            .field("write_excluded", &self.write_excluded)
            .field("never_log_entries", &self.never_log.len())
            .field(
                "attachment_url_expiry_secs",
                &self.attachment_url_expiry_secs,
            )
            .field("helpdesk_url", &self.helpdesk_url)
            .field(
                "helpdesk_token",
                &self.helpdesk_token.as_ref().map(|_| "<redacted>"),
            )
            .field("ticket_intents", &self.ticket_intents)
            .finish_non_exhaustive()
    }
}

/// `key `crm-sink.<name>` (env MAILSTREAM_CRM_SINK_<NAME>)`.
pub fn key(name: &str) -> String {
    key_label(SECTION, name)
}

impl CrmSinkSettings {
    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_attempts: self.max_attempts.max(1),
            cap: Duration::from_millis(self.backoff_max_ms),
            retry_after_max: Duration::from_millis(self.retry_after_max_ms),
        }
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// The token-bucket rate: the setting, else the backend's default (0 = no limit).
    pub fn rate(&self) -> f64 {
        self.rate_limit_per_sec.unwrap_or(match self.backend {
            Backend::Rest | Backend::Tryton => 20.0,
            Backend::Hubspot => 10.0,
            Backend::Postgres => 0.0,
        })
    }

    pub fn burst(&self) -> u32 {
        self.rate_limit_burst
            .unwrap_or_else(|| self.rate().ceil().clamp(1.0, f64::from(u32::MAX)) as u32)
    }

    /// The base URL of the HTTP backends (HubSpot's public API unless set).
    pub fn http_base_url(&self) -> Option<String> {
        match (&self.base_url, self.backend) {
            (Some(url), _) if !url.trim().is_empty() => Some(url.trim_end_matches('/').to_string()),
            (_, Backend::Hubspot) => Some("https://api.hubapi.com".into()),
            _ => None,
        }
    }

    /// The PostgreSQL URL with its TLS mode and CA file (`database_url`, `database_ca_file`).
    pub fn postgres_target(&self) -> Result<Target, (&'static str, String)> {
        Target::parse(
            self.database_url.as_deref().unwrap_or_default().trim(),
            self.database_ca_file.as_deref(),
        )
    }

    /// The never-log list (`never_log`), or each bad entry.
    pub fn never_log(&self) -> Result<NeverLog, Vec<String>> {
        NeverLog::parse(&self.never_log)
    }
}

impl Settings for CrmSinkSettings {
    /// Every problem, each naming its key, given the runtime's settings.
    fn problems(&self, runtime: &RuntimeConfig) -> Vec<String> {
        let budget = runtime.least_record_time().as_millis();
        let mut errors = Vec::new();
        let mut bad = |name: &str, what: String| errors.push(format!("{}: {what}", key(name)));
        match self.backend {
            Backend::Postgres => {
                let url = self.database_url.as_deref().unwrap_or_default().trim();
                if url.is_empty() {
                    bad(
                        "database_url",
                        "is required for the postgres backend, e.g. postgres://user@host:5432/db"
                            .into(),
                    );
                } else if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                    bad("database_url", "expected a postgres:// URL".into());
                } else if let Err((name, what)) = self.postgres_target().and_then(|target| {
                    // Loads the CA file (or the system's roots): a bad one stops start-up here.
                    Connector::new(&target).map(|_| ())
                }) {
                    bad(name, what);
                }
                let ok = !self.schema.is_empty()
                    && self.schema.len() <= 63
                    && self
                        .schema
                        .starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
                    && self
                        .schema
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
                if !ok {
                    bad(
                        "schema",
                        format!(
                            "expected a lower-case SQL identifier ([a-z_][a-z0-9_]*, at most 63), got `{}`",
                            self.schema
                        ),
                    );
                }
            }
            Backend::Rest | Backend::Hubspot | Backend::Tryton => match self.http_base_url() {
                None => bad(
                    "base_url",
                    format!(
                        "is required for the {} backend, e.g. https://crm.example.com/api/v1",
                        self.backend.name()
                    ),
                ),
                Some(url) if !(url.starts_with("http://") || url.starts_with("https://")) => bad(
                    "base_url",
                    format!("expected an http:// or https:// URL, got `{url}`"),
                ),
                Some(_) => {}
            },
        }
        if self.backend == Backend::Tryton {
            let database = self.tryton_database.as_deref().unwrap_or_default();
            if database.trim().is_empty() || database.contains('/') {
                bad(
                    "tryton_database",
                    "is required for the tryton backend: the database name, without `/`".into(),
                );
            }
            if self.token.as_deref().unwrap_or_default().is_empty() {
                bad(
                    "token",
                    "is required for the tryton backend: a REST user-application key".into(),
                );
            }
        }
        for (name, path) in [
            ("contacts_path", &self.contacts_path),
            ("deals_path", &self.deals_path),
            ("activities_path", &self.activities_path),
            ("attachments_path", &self.attachments_path),
        ] {
            if !path.starts_with('/') {
                bad(
                    name,
                    format!("expected a path starting with `/`, got `{path}`"),
                );
            }
        }
        if self.max_attempts == 0 {
            bad("max_attempts", "must be at least 1".into());
        }
        if let Some(url) = self.helpdesk_url.as_deref().map(str::trim)
            && !url.is_empty()
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            bad(
                "helpdesk_url",
                format!("expected an http:// or https:// URL, got `{url}`"),
            );
        }
        if !self.helpdesk_tickets_path.starts_with('/') {
            bad(
                "helpdesk_tickets_path",
                format!(
                    "expected a path starting with `/`, got `{}`",
                    self.helpdesk_tickets_path
                ),
            );
        }
        if self.attachment_url_expiry_secs > 604_800 {
            bad(
                "attachment_url_expiry_secs",
                format!(
                    "at most 604800 (seven days, S3's longest presigned URL), got {}",
                    self.attachment_url_expiry_secs
                ),
            );
        }
        if self.backoff_base_ms == 0 {
            bad("backoff_base_ms", "must be at least 1".into());
        }
        if self.backoff_max_ms < self.backoff_base_ms {
            bad(
                "backoff_max_ms",
                format!(
                    "must be at least backoff_base_ms ({})",
                    self.backoff_base_ms
                ),
            );
        }
        if self.request_timeout_ms == 0 {
            bad("request_timeout_ms", "must be at least 1".into());
        }
        if self
            .rate_limit_per_sec
            .is_some_and(|r| !r.is_finite() || r < 0.0)
        {
            bad("rate_limit_per_sec", "must be 0 (no limit) or more".into());
        }
        if self.rate_limit_burst == Some(0) {
            bad("rate_limit_burst", "must be at least 1".into());
        }
        if self.max_concurrency == 0 {
            bad("max_concurrency", "must be at least 1".into());
        }
        if let Err(entries) = self.never_log() {
            for what in entries {
                bad("never_log", what);
            }
        }
        if u128::from(self.request_timeout_ms) > budget {
            bad(
                "request_timeout_ms",
                format!(
                    "one request may take {} ms, more than the {budget} ms a record has inside a \
                     Kafka transaction (key `transaction_timeout_ms` (env {}) = {} less \
                     batch_max_ms {} and {} ms for the commit): lower the request \
                     timeout or raise the transaction timeout",
                    self.request_timeout_ms,
                    env_name(None, "transaction_timeout_ms"),
                    runtime.transaction_timeout_ms,
                    runtime.batch_max_ms,
                    COMMIT_MARGIN.as_millis(),
                ),
            );
        }
        errors
    }
}

#[cfg(test)]
#[path = "settings_tests.rs"]
pub(crate) mod tests;
