//! Ingest settings: the `[ingest]` table of the config file or `MAILSTREAM_INGEST_<KEY>`
//! environment variables, loaded through the runtime's layered config
//! (`config::load::<IngestSettings>("ingest", ..)`) and then validated here, with every problem
//! reported at once and the key named.
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `smtp_addr` | `0.0.0.0:2525` | SMTP listener; `""` turns SMTP off |
//! | `http_addr` | `0.0.0.0:8025` | HTTP intake listener (not the metrics `http_addr`); `""` turns it off |
//! | `accepted_domains` | (required for SMTP) | recipient domains accepted (catch-all per domain); list or comma-separated string |
//! | `max_message_bytes` | 26214400 (25 MiB) | largest message accepted (SMTP 552 5.3.4, HTTP 413) |
//! | `inline_limit_bytes` | 524288 (512 KiB) | larger messages go to the blob store (claim check) |
//! | `blob_url` | `file:///var/lib/mailstream/blobs` | blob store for claim checks |
//! | `hmac_secret` | (required for HTTP) | shared secret of the HTTP signatures; never logged |
//! | `replay_window_secs` | 300 | how far a signed timestamp may be from now |
//! | `tls_cert_path`, `tls_key_path` | none | PEM certificate chain and key: enables STARTTLS (and HTTPS with `http_tls`) |
//! | `hostname` | `mailstream` | name in the SMTP greeting and EHLO reply |
//! | `max_recipients` | 100 | recipients per email: SMTP RCPT TO per transaction (452 4.5.3), HTTP `X-Mailstream-Rcpt-To` entries (400) |
//! | `smtp_timeout_secs` | 300 | an SMTP session waiting this long for a command or data, or for the client to read a reply, is closed |
//! | `max_inflight_bytes` | 268435456 (256 MiB) | bytes of all messages being received or written at once, SMTP and HTTP together, in memory or spooled; over it SMTP answers 451 4.3.1 and HTTP 503 with `Retry-After` |
//! | `spool_threshold_bytes` | 1048576 (1 MiB) | a message larger than this is spooled to a file in `spool_dir` while it is received |
//! | `spool_dir` | `/tmp` | directory of the spool files (anonymous: unlinked at creation) |
//! | `http_header_timeout_secs` | 10 | time to receive a request's headers, counted from when the connection starts waiting for them (after accept, and after each response: so it is also the keep-alive idle timeout) |
//! | `http_body_timeout_secs` | 120 | time to receive a request's whole body (408) |
//! | `http_max_connections` | 512 | HTTP connections served at once; more are answered 503 and closed |
//! | `http_tls` | false | serve the HTTP intake over TLS with `tls_cert_path` and `tls_key_path` |
//! | `http_client_ca_path` | none | PEM CA bundle: the HTTPS intake requires a client certificate it signed (mutual TLS); needs `http_tls` |
//! | `http_allowed_networks` | (any) | networks (`10.0.0.0/8`, `2001:db8::/32`) and addresses the HTTP intake accepts requests from; others get 403 `forbidden-address`; list or comma-separated string |
//! | `http_trusted_proxy_hops` | 0 | proxies in front of the intake that append to `X-Forwarded-For`: the client address is read that many hops from the right of the chain (0: the connection's peer) |
//! | `shutdown_grace_secs` | 30 | how long in-flight sessions may finish after SIGTERM |
//! | `mailgun_signing_key` | none | Mailgun's HTTP webhook signing key: serves `POST /v1/providers/mailgun` (raw-MIME `forward()` routes); never logged |
//! | `sendgrid_username`, `sendgrid_password` | none | basic auth of SendGrid Inbound Parse's webhook URL: serves `POST /v1/providers/sendgrid`; the password is never logged |
//! | `postmark_username`, `postmark_password` | none | basic auth of Postmark's inbound webhook URL: serves `POST /v1/providers/postmark`; the password is never logged |
//! | `ses_topic_arn` | none | the SNS topic of SES receipt rules: serves `POST /v1/providers/ses` (its deliveries from other topics are refused) |
//! | `ses_certificate_path` | none | PEM file of the SNS signing certificate (the `SigningCertURL`'s, fetched once by the operator): required with `ses_topic_arn` |
//! | `ses_bucket_url` | `s3://{bucketName}` | where the objects of SES's S3 action are read (`s3://bucket/prefix`, `file:///dir`), with the runtime's `blob_store` options (endpoint, region, credentials) |
//!
//! Every key can also be read from a file named by `MAILSTREAM_INGEST_<KEY>_FILE` (a mounted
//! Secret), the secrets above included. The HTTP intake needs `hmac_secret` or a provider.

use std::net::SocketAddr;
use std::path::PathBuf;

use mailstream_runtime::RuntimeConfig;
use mailstream_runtime::config::{Settings, key_label};
use schemars::JsonSchema;
use serde::Deserialize;

/// Settings of `mailstream run ingest` and `mailstream backfill`.
#[derive(Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IngestSettings {
    /// SMTP listener; `""` turns SMTP off.
    #[serde(default = "defaults::smtp_addr", deserialize_with = "lenient::string")]
    pub smtp_addr: String,
    /// HTTP intake listener (not the metrics `http_addr`); `""` turns it off.
    #[serde(default = "defaults::http_addr", deserialize_with = "lenient::string")]
    pub http_addr: String,
    /// Recipient domains accepted (catch-all per domain); list or comma-separated string.
    #[serde(default, deserialize_with = "lenient::list")]
    #[schemars(schema_with = "domain_list_schema")]
    pub accepted_domains: Vec<String>,
    /// Largest message accepted (SMTP 552 5.3.4, HTTP 413).
    #[serde(default = "defaults::max_message_bytes")]
    pub max_message_bytes: u64,
    /// Larger messages go to the blob store (claim check).
    #[serde(default = "defaults::inline_limit_bytes")]
    #[schemars(range(max = MAX_INLINE_LIMIT))]
    pub inline_limit_bytes: u64,
    /// Blob store for claim checks.
    #[serde(default = "defaults::blob_url", deserialize_with = "lenient::string")]
    pub blob_url: String,
    /// Shared secret of the HTTP signatures; never logged.
    #[serde(default, deserialize_with = "lenient::secret")]
    pub hmac_secret: Option<Secret>,
    /// How far a signed timestamp may be from now.
    #[serde(default = "defaults::replay_window_secs")]
    pub replay_window_secs: u64,
    /// PEM certificate chain and key: enables STARTTLS (and HTTPS with `http_tls`).
    #[serde(default, deserialize_with = "lenient::opt_path")]
    pub tls_cert_path: Option<PathBuf>,
    /// PEM certificate chain and key: enables STARTTLS (and HTTPS with `http_tls`).
    #[serde(default, deserialize_with = "lenient::opt_path")]
    pub tls_key_path: Option<PathBuf>,
    /// Name in the SMTP greeting and EHLO reply.
    #[serde(default = "defaults::hostname", deserialize_with = "lenient::string")]
    pub hostname: String,
    /// Recipients per email: SMTP RCPT TO per transaction (452 4.5.3), HTTP `X-Mailstream-Rcpt-To`
    /// entries (400).
    #[serde(default = "defaults::max_recipients")]
    pub max_recipients: u32,
    /// An SMTP session waiting this long for a command or data, or for the client to read a reply,
    /// is closed.
    #[serde(default = "defaults::smtp_timeout_secs")]
    pub smtp_timeout_secs: u64,
    /// How long in-flight sessions may finish after SIGTERM.
    #[serde(default = "defaults::shutdown_grace_secs")]
    pub shutdown_grace_secs: u64,
    /// Bytes of all messages in flight (being received or written), SMTP and HTTP together.
    #[serde(default = "defaults::max_inflight_bytes")]
    pub max_inflight_bytes: u64,
    /// Above this size a message being received goes to a spool file instead of memory.
    #[serde(default = "defaults::spool_threshold_bytes")]
    pub spool_threshold_bytes: u64,
    /// Directory of the (anonymous) spool files.
    #[serde(default = "defaults::spool_dir", deserialize_with = "lenient::path")]
    pub spool_dir: PathBuf,
    /// Time to receive a request's headers; hyper starts it when the connection waits for a
    /// request, so it also closes idle keep-alive connections.
    #[serde(default = "defaults::http_header_timeout_secs")]
    pub http_header_timeout_secs: u64,
    /// Time to receive a request's whole body.
    #[serde(default = "defaults::http_body_timeout_secs")]
    pub http_body_timeout_secs: u64,
    /// HTTP connections served at once.
    #[serde(default = "defaults::http_max_connections")]
    pub http_max_connections: u32,
    /// HTTPS on the intake, with `tls_cert_path` and `tls_key_path`.
    #[serde(default)]
    pub http_tls: bool,
    /// PEM CA bundle: the HTTPS intake requires a client certificate it signed (mutual TLS).
    #[serde(default, deserialize_with = "lenient::opt_path")]
    pub http_client_ca_path: Option<PathBuf>,
    /// Networks and addresses the HTTP intake accepts requests from (empty: any); list or
    /// comma-separated string.
    #[serde(default, deserialize_with = "lenient::list")]
    pub http_allowed_networks: Vec<String>,
    /// Proxies in front of the intake appending to `X-Forwarded-For`: the client address is
    /// read this many hops from the right of the chain (0: the connection's peer).
    #[serde(default)]
    #[schemars(range(max = 10))]
    pub http_trusted_proxy_hops: u32,
    /// Mailgun's HTTP webhook signing key: serves `POST /v1/providers/mailgun` (a route's
    /// raw-MIME `forward()`); never logged.
    #[serde(default, deserialize_with = "lenient::secret")]
    pub mailgun_signing_key: Option<Secret>,
    /// User name of the basic auth in SendGrid Inbound Parse's webhook URL.
    #[serde(default, deserialize_with = "lenient::string")]
    pub sendgrid_username: String,
    /// Password of the basic auth in SendGrid Inbound Parse's webhook URL: with the user name,
    /// serves `POST /v1/providers/sendgrid`; never logged.
    #[serde(default, deserialize_with = "lenient::secret")]
    pub sendgrid_password: Option<Secret>,
    /// User name of the basic auth in Postmark's inbound webhook URL.
    #[serde(default, deserialize_with = "lenient::string")]
    pub postmark_username: String,
    /// Password of the basic auth in Postmark's inbound webhook URL: with the user name,
    /// serves `POST /v1/providers/postmark`; never logged.
    #[serde(default, deserialize_with = "lenient::secret")]
    pub postmark_password: Option<Secret>,
    /// The SNS topic of SES receipt rules: serves `POST /v1/providers/ses`.
    #[serde(default, deserialize_with = "lenient::string")]
    pub ses_topic_arn: String,
    /// PEM file of the SNS signing certificate (from the `SigningCertURL`, fetched once):
    /// required with `ses_topic_arn`.
    #[serde(default, deserialize_with = "lenient::opt_path")]
    pub ses_certificate_path: Option<PathBuf>,
    /// Where the objects of SES's S3 action are read (`s3://bucket/prefix`, `file:///dir`);
    /// empty: `s3://{bucketName}` of the notification.
    #[serde(default, deserialize_with = "lenient::string")]
    pub ses_bucket_url: String,
}

impl std::fmt::Debug for IngestSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngestSettings")
            .field("smtp_addr", &self.smtp_addr)
            .field("http_addr", &self.http_addr)
            .field("accepted_domains", &self.accepted_domains.len())
            .field("max_message_bytes", &self.max_message_bytes)
            .field("inline_limit_bytes", &self.inline_limit_bytes)
            .field("blob_url", &self.blob_url)
            .field("hmac_secret", &self.hmac_secret)
            .field("tls", &self.tls_cert_path.is_some())
            .field("http_tls", &self.http_tls)
            .field("http_client_ca_path", &self.http_client_ca_path)
            .field("http_allowed_networks", &self.http_allowed_networks)
            .field("http_trusted_proxy_hops", &self.http_trusted_proxy_hops)
            .field("max_inflight_bytes", &self.max_inflight_bytes)
            .field("spool_threshold_bytes", &self.spool_threshold_bytes)
            .field("spool_dir", &self.spool_dir)
            .field("mailgun_signing_key", &self.mailgun_signing_key)
            .field("sendgrid_username", &self.sendgrid_username)
            .field("sendgrid_password", &self.sendgrid_password)
            .field("postmark_username", &self.postmark_username)
            .field("postmark_password", &self.postmark_password)
            .field("ses_topic_arn", &self.ses_topic_arn)
            .field("ses_certificate_path", &self.ses_certificate_path)
            .field("ses_bucket_url", &self.ses_bucket_url)
            .finish_non_exhaustive()
    }
}

pub use mailstream_runtime::config::Secret;

/// The largest `spool_threshold_bytes`: what one session may hold in memory.
pub const MAX_SPOOL_THRESHOLD: u64 = 16 * 1024 * 1024;

/// The largest `inline_limit_bytes`: records stay well under the topic's 8 MiB message limit.
pub const MAX_INLINE_LIMIT: u64 = 4 * 1024 * 1024;

mod defaults {
    pub fn smtp_addr() -> String {
        "0.0.0.0:2525".into()
    }
    pub fn http_addr() -> String {
        "0.0.0.0:8025".into()
    }
    pub fn max_message_bytes() -> u64 {
        25 * 1024 * 1024
    }
    pub fn inline_limit_bytes() -> u64 {
        512 * 1024
    }
    pub fn blob_url() -> String {
        "file:///var/lib/mailstream/blobs".into()
    }
    pub fn replay_window_secs() -> u64 {
        300
    }
    pub fn hostname() -> String {
        "mailstream".into()
    }
    pub fn max_recipients() -> u32 {
        100
    }
    pub fn smtp_timeout_secs() -> u64 {
        300
    }
    pub fn shutdown_grace_secs() -> u64 {
        30
    }
    pub fn max_inflight_bytes() -> u64 {
        256 * 1024 * 1024
    }
    pub fn spool_threshold_bytes() -> u64 {
        1024 * 1024
    }
    pub fn spool_dir() -> std::path::PathBuf {
        "/tmp".into()
    }
    pub fn http_header_timeout_secs() -> u64 {
        10
    }
    pub fn http_body_timeout_secs() -> u64 {
        120
    }
    pub fn http_max_connections() -> u32 {
        512
    }
}

/// The runtime's lenient deserializers, plus the secret type.
mod lenient {
    pub use mailstream_runtime::config::lenient::{list, opt_path, string};
    pub use mailstream_runtime::config::opt_secret as secret;
    use serde::Deserializer;

    /// A path (a number-looking value stays text).
    pub fn path<'de, D: Deserializer<'de>>(d: D) -> Result<std::path::PathBuf, D::Error> {
        string(d).map(std::path::PathBuf::from)
    }
}

fn key(name: &str) -> String {
    key_label(crate::NAME, name)
}

/// The JSON Schema of `accepted_domains`: domain names (an `@` before one is allowed), as a
/// list or one comma-separated string.
fn domain_list_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "anyOf": [
            { "type": "array", "items": { "type": "string", "pattern": "^@?[A-Za-z0-9.-]+$" } },
            { "type": "string" }
        ]
    })
}

/// `mailstream backfill` checks what publishing needs ([`IngestSettings::validate_common`]).
impl Settings for IngestSettings {
    fn problems(&self, _runtime: &RuntimeConfig) -> Vec<String> {
        self.validate_common()
    }
}

/// The settings of `mailstream run ingest`: the same keys, checked for serving too
/// (addresses, domains, secrets, limits, TLS files: [`IngestSettings::validate_serve`]).
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct ServeSettings(pub IngestSettings);

impl Settings for ServeSettings {
    fn problems(&self, _runtime: &RuntimeConfig) -> Vec<String> {
        self.0.validate_serve()
    }
}

impl IngestSettings {
    /// Whether SMTP intake is on (`smtp_addr` not empty).
    pub fn smtp_enabled(&self) -> bool {
        !self.smtp_addr.trim().is_empty()
    }

    /// The HTTP intake's allowlist and proxy depth, or each bad network entry.
    pub fn allowlist(&self) -> Result<crate::http::Allowlist, Vec<String>> {
        crate::http::Allowlist::new(&self.http_allowed_networks, self.http_trusted_proxy_hops)
    }

    /// Whether HTTP intake is on (`http_addr` not empty).
    pub fn http_enabled(&self) -> bool {
        !self.http_addr.trim().is_empty()
    }

    /// The accepted recipient domains, lowercased.
    pub fn domains(&self) -> Vec<String> {
        self.accepted_domains
            .iter()
            .map(|d| d.trim_start_matches('@').to_ascii_lowercase())
            .collect()
    }

    /// Problems that stop both the server and the backfill.
    pub fn validate_common(&self) -> Vec<String> {
        let mut errors = Vec::new();
        if self.max_message_bytes == 0 {
            errors.push(format!("{}: must be at least 1", key("max_message_bytes")));
        }
        if self.inline_limit_bytes > MAX_INLINE_LIMIT {
            errors.push(format!(
                "{}: at most {MAX_INLINE_LIMIT} (records must fit the topic's 8 MiB limit), got {}",
                key("inline_limit_bytes"),
                self.inline_limit_bytes
            ));
        }
        if !(self.blob_url.starts_with("file://") || self.blob_url.starts_with("s3://")) {
            errors.push(format!(
                "{}: expected a file:///dir or s3://bucket/prefix URL, got `{}`",
                key("blob_url"),
                self.blob_url
            ));
        }
        errors
    }

    /// Problems that stop `mailstream run ingest` (on top of [`Self::validate_common`]).
    pub fn validate_serve(&self) -> Vec<String> {
        let mut errors = self.validate_common();
        let addr = |name: &str, value: &str, errors: &mut Vec<String>| {
            if !value.trim().is_empty() && value.parse::<SocketAddr>().is_err() {
                errors.push(format!(
                    "{}: expected host:port such as 0.0.0.0:2525, got `{value}`",
                    key(name)
                ));
            }
        };
        addr("smtp_addr", &self.smtp_addr, &mut errors);
        addr("http_addr", &self.http_addr, &mut errors);
        if !self.smtp_enabled() && !self.http_enabled() {
            errors.push(format!(
                "{} and {} are both empty: nothing to serve",
                key("smtp_addr"),
                key("http_addr")
            ));
        }
        if self.smtp_enabled() {
            if self.accepted_domains.is_empty() {
                errors.push(format!(
                    "{} is required for SMTP: the recipient domains to accept, e.g. `in.example.com,example.org`",
                    key("accepted_domains")
                ));
            }
            for domain in self.domains() {
                let ok = !domain.is_empty()
                    && domain
                        .chars()
                        .all(|c| c.is_alphanumeric() || matches!(c, '.' | '-'));
                if !ok {
                    errors.push(format!(
                        "{}: `{domain}` is not a domain name",
                        key("accepted_domains")
                    ));
                }
            }
            if self.hostname.trim().is_empty() || self.hostname.contains(char::is_whitespace) {
                errors.push(format!(
                    "{}: expected a host name, got `{}`",
                    key("hostname"),
                    self.hostname
                ));
            }
            if self.smtp_timeout_secs == 0 {
                errors.push(format!("{}: must be at least 1", key("smtp_timeout_secs")));
            }
        }
        let providers = crate::http::providers::Providers::from_settings(self, &[]);
        if self.http_enabled() && self.hmac_secret.is_none() && providers.channels().is_empty() {
            errors.push(format!(
                "{} (or a provider webhook: {}, {} + {}, {} + {}, {}) is required for HTTP intake (or set {} to \"\" to turn HTTP intake off)",
                key("hmac_secret"),
                key("mailgun_signing_key"),
                key("sendgrid_username"),
                key("sendgrid_password"),
                key("postmark_username"),
                key("postmark_password"),
                key("ses_topic_arn"),
                key("http_addr")
            ));
        }
        errors.extend(crate::http::providers::problems(self));
        if let Some(secret) = &self.hmac_secret
            && secret.expose().len() < 16
        {
            errors.push(format!(
                "{}: must be at least 16 bytes long",
                key("hmac_secret")
            ));
        }
        if self.replay_window_secs == 0 {
            errors.push(format!("{}: must be at least 1", key("replay_window_secs")));
        }
        errors.extend(self.validate_limits());
        match (&self.tls_cert_path, &self.tls_key_path) {
            (Some(_), None) => errors.push(format!(
                "{} is set but {} is not: STARTTLS needs both",
                key("tls_cert_path"),
                key("tls_key_path")
            )),
            (None, Some(_)) => errors.push(format!(
                "{} is set but {} is not: STARTTLS needs both",
                key("tls_key_path"),
                key("tls_cert_path")
            )),
            (Some(cert), Some(k)) => {
                for (name, path) in [("tls_cert_path", cert), ("tls_key_path", k)] {
                    if !path.is_file() {
                        errors.push(format!("{}: no file at {}", key(name), path.display()));
                    }
                }
            }
            (None, None) => {}
        }
        errors
    }

    /// Problems of the resource limits (part of [`Self::validate_serve`]).
    fn validate_limits(&self) -> Vec<String> {
        let mut errors = Vec::new();
        for (name, value) in [
            ("max_recipients", u64::from(self.max_recipients)),
            ("http_header_timeout_secs", self.http_header_timeout_secs),
            ("http_body_timeout_secs", self.http_body_timeout_secs),
            ("http_max_connections", u64::from(self.http_max_connections)),
        ] {
            if value == 0 {
                errors.push(format!("{}: must be at least 1", key(name)));
            }
        }
        if self.max_inflight_bytes < self.max_message_bytes {
            errors.push(format!(
                "{}: must be at least {} (`max_message_bytes`), or no message of the largest size could ever be received; got {}",
                key("max_inflight_bytes"),
                self.max_message_bytes,
                self.max_inflight_bytes
            ));
        }
        if self.spool_threshold_bytes > MAX_SPOOL_THRESHOLD {
            errors.push(format!(
                "{}: at most {MAX_SPOOL_THRESHOLD} (it is held in memory per session), got {}",
                key("spool_threshold_bytes"),
                self.spool_threshold_bytes
            ));
        }
        if !self.spool_dir.is_dir() {
            errors.push(format!(
                "{}: no directory at {}",
                key("spool_dir"),
                self.spool_dir.display()
            ));
        }
        if self.http_client_ca_path.is_some() && !self.http_tls {
            errors.push(format!(
                "{} is set but {} is not: client certificates need HTTPS",
                key("http_client_ca_path"),
                key("http_tls")
            ));
        }
        if let Err(problems) = self.allowlist() {
            let key = key("http_allowed_networks");
            errors.extend(problems.into_iter().map(|p| format!("{key}: {p}")));
        }
        if self.http_trusted_proxy_hops > 10 {
            errors.push(format!(
                "{}: at most 10, got {}",
                key("http_trusted_proxy_hops"),
                self.http_trusted_proxy_hops
            ));
        }
        if self.http_tls && self.http_enabled() && self.tls_cert_path.is_none() {
            errors.push(format!(
                "{} is set but {} and {} are not: HTTPS needs both",
                key("http_tls"),
                key("tls_cert_path"),
                key("tls_key_path")
            ));
        }
        errors
    }
}

#[cfg(test)]
mod tests {
    use mailstream_runtime::config::load;
    use mailstream_runtime::{ConfigSource, RuntimeError};

    use super::*;

    fn base() -> ConfigSource {
        ConfigSource::default()
            .with_env("MAILSTREAM_BOOTSTRAP_SERVERS", "k:9092")
            .with_env("MAILSTREAM_SCHEMA_REGISTRY_URL", "http://r:8081")
    }

    #[test]
    fn env_keys_are_typed_leniently() {
        let (_, ServeSettings(s)) = load::<ServeSettings>(
            "ingest",
            &base()
                .with_env(
                    "MAILSTREAM_INGEST_ACCEPTED_DOMAINS",
                    "In.Example.com, b.org",
                )
                .with_env("MAILSTREAM_INGEST_HMAC_SECRET", "12345678901234567890")
                .with_env("MAILSTREAM_INGEST_MAX_MESSAGE_BYTES", "1000"),
        )
        .expect("valid");
        assert_eq!(s.domains(), vec!["in.example.com", "b.org"]);
        assert_eq!(s.max_message_bytes, 1000);
        assert_eq!(
            s.hmac_secret.as_ref().map(Secret::expose),
            Some("12345678901234567890"),
            "the secret keeps every digit"
        );
        assert!(
            !format!("{s:?}").contains("1234567890"),
            "secret not in Debug"
        );
    }

    /// Every problem `config::load` reports for `source` as settings `S`.
    fn problems<S: Settings>(source: &ConfigSource) -> Vec<String> {
        match load::<S>("ingest", source) {
            Ok(_) => Vec::new(),
            Err(RuntimeError::Config(problems)) => problems,
            Err(other) => panic!("not a configuration error: {other}"),
        }
    }

    #[test]
    fn every_problem_names_its_key() {
        let source = base()
            .with_env("MAILSTREAM_INGEST_SMTP_ADDR", "nowhere")
            .with_env("MAILSTREAM_INGEST_INLINE_LIMIT_BYTES", "99999999")
            .with_env("MAILSTREAM_INGEST_TLS_CERT_PATH", "/nonexistent.pem")
            .with_env("MAILSTREAM_INGEST_MAX_INFLIGHT_BYTES", "1000")
            .with_env("MAILSTREAM_INGEST_SPOOL_DIR", "/nonexistent-dir")
            .with_env("MAILSTREAM_INGEST_HTTP_HEADER_TIMEOUT_SECS", "0")
            .with_env("MAILSTREAM_INGEST_HTTP_MAX_CONNECTIONS", "0");
        // A backfill checks only what publishing needs.
        let backfill = problems::<IngestSettings>(&source);
        assert_eq!(backfill.len(), 1, "{backfill:?}");
        assert!(backfill[0].starts_with("key `ingest.inline_limit_bytes` (env MAILSTREAM_INGEST_INLINE_LIMIT_BYTES): at most"), "{backfill:?}");
        let text = problems::<ServeSettings>(&source).join("\n");
        for needle in [
            "MAILSTREAM_INGEST_SMTP_ADDR",
            "MAILSTREAM_INGEST_INLINE_LIMIT_BYTES",
            "MAILSTREAM_INGEST_ACCEPTED_DOMAINS",
            "MAILSTREAM_INGEST_HMAC_SECRET",
            "MAILSTREAM_INGEST_TLS_KEY_PATH",
            "MAILSTREAM_INGEST_MAX_INFLIGHT_BYTES",
            "MAILSTREAM_INGEST_SPOOL_DIR",
            "MAILSTREAM_INGEST_HTTP_HEADER_TIMEOUT_SECS",
            "MAILSTREAM_INGEST_HTTP_MAX_CONNECTIONS",
        ] {
            assert!(text.contains(needle), "`{needle}` missing from: {text}");
        }
    }
}
