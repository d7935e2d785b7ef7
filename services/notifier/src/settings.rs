//! The notifier's settings: file table `[notifier]`, environment `MAILSTREAM_NOTIFIER_<KEY>`.
//! Unknown keys are refused; every problem is reported at once with its key
//! ([`Settings::problems`]), and start-up stops on any.
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `slack_webhook_url` | none | a Slack (or Slack-compatible: Mattermost, Rocket.Chat) incoming webhook; a secret (its path is the credential), never logged |
//! | `webhook_url` | none | a generic HTTP webhook: a JSON POST signed like the HTTP intake's requests (`X-Mailstream-Timestamp`, `X-Mailstream-Signature: sha256=<hex HMAC-SHA256>`) |
//! | `webhook_secret` | (required with `webhook_url`) | the HMAC key of `webhook_url` (at least 16 bytes); never logged |
//! | `statuses` | `qualified` | the lead statuses that notify (the scorer sets `qualified` at the rules file's `thresholds.qualified`) |
//! | `max_age_secs` | 86400 | a lead received longer ago than this (by the notifier's clock) is not notified (`stale`): a backfill of old mail, or a replay reaching events that never notified, does not page anyone; 0: no limit |
//! | `top_reasons` | 3 | how many rules of the breakdown the notification names, highest points first |
//! | `contact_url`, `account_url`, `deal_url`, `email_url` | none | links to the CRM records: templates with `{contact_id}`, `{account_id}`, `{deal_id}`, `{message_id}`, `{email}` (each percent-encoded); a link whose placeholders are not all known is left out |
//! | `max_attempts` | 4 | requests per notification in place, the first included; then the batch is retried by the runtime |
//! | `backoff_max_ms` | 2000 | ceiling of the backoff between attempts (the runtime's `Backoff`: full jitter, doubling from 100 ms); at least a 429's `Retry-After` |
//! | `request_timeout_ms` | 2000 | per request |
//! | `rate_limit_per_sec` | 1 | requests per second per channel (Slack allows about one per second per webhook); 0: no limit |
//! | `rate_limit_burst` | 5 | token-bucket size |
//! | `dry_run` | false | log what would be sent (ids only), send nothing, record nothing |
//!
//! At least one of `slack_webhook_url` and `webhook_url` is required. One request must fit in
//! the time a record has inside its Kafka transaction (as the CRM sink's `request_timeout_ms`).

use std::time::Duration;

use mailstream_runtime::RuntimeConfig;
use mailstream_runtime::config::{Secret, Settings, key_label, lenient, opt_secret};
use schemars::JsonSchema;
use serde::Deserialize;

/// The processor's name and config section.
pub const SECTION: &str = "notifier";

/// Settings of `mailstream run notifier` and `mailstream notify test`.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NotifierSettings {
    /// A Slack (or Slack-compatible) incoming webhook URL; a secret, never logged.
    #[serde(default, deserialize_with = "opt_secret")]
    pub slack_webhook_url: Option<Secret>,
    /// A generic HTTP webhook: a JSON POST signed like the HTTP intake's requests.
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub webhook_url: Option<String>,
    /// The HMAC key of `webhook_url` (at least 16 bytes); never logged.
    #[serde(default, deserialize_with = "opt_secret")]
    pub webhook_secret: Option<Secret>,
    /// The lead statuses that notify.
    #[serde(default = "defaults::statuses", deserialize_with = "lenient::list")]
    #[schemars(schema_with = "lenient::list_schema")]
    pub statuses: Vec<String>,
    /// A lead received longer ago than this is not notified (`stale`); 0: no limit.
    #[serde(default = "defaults::max_age_secs")]
    pub max_age_secs: u64,
    /// How many rules of the breakdown the notification names, highest points first.
    #[serde(default = "defaults::top_reasons")]
    pub top_reasons: u32,
    /// Link to the CRM's contact (`{contact_id}`, `{email}`, ...).
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub contact_url: Option<String>,
    /// Link to the CRM's account (`{account_id}`).
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub account_url: Option<String>,
    /// Link to the CRM's deal (`{deal_id}`).
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub deal_url: Option<String>,
    /// Link to the CRM's email activity (`{message_id}`).
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub email_url: Option<String>,
    /// Requests per notification in place, the first included.
    #[serde(default = "defaults::max_attempts")]
    pub max_attempts: u32,
    /// Ceiling of the backoff between attempts in place.
    #[serde(default = "defaults::backoff_max_ms")]
    pub backoff_max_ms: u64,
    /// Per request.
    #[serde(default = "defaults::request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Requests per second per channel; 0: no limit.
    #[serde(default = "defaults::rate_limit_per_sec")]
    pub rate_limit_per_sec: f64,
    /// Token-bucket size.
    #[serde(default = "defaults::rate_limit_burst")]
    pub rate_limit_burst: u32,
    /// Log what would be sent, send nothing, record nothing.
    #[serde(default)]
    pub dry_run: bool,
}

mod defaults {
    pub fn statuses() -> Vec<String> {
        vec!["qualified".into()]
    }
    pub fn max_age_secs() -> u64 {
        86_400
    }
    pub fn top_reasons() -> u32 {
        3
    }
    pub fn max_attempts() -> u32 {
        4
    }
    pub fn backoff_max_ms() -> u64 {
        2_000
    }
    pub fn request_timeout_ms() -> u64 {
        2_000
    }
    pub fn rate_limit_per_sec() -> f64 {
        1.0
    }
    pub fn rate_limit_burst() -> u32 {
        5
    }
}

/// `key `notifier.<name>` (env MAILSTREAM_NOTIFIER_<NAME>)`.
pub fn key(name: &str) -> String {
    key_label(SECTION, name)
}

/// The placeholders a link template may use.
pub const PLACEHOLDERS: [&str; 5] = [
    "{contact_id}",
    "{account_id}",
    "{deal_id}",
    "{message_id}",
    "{email}",
];

impl NotifierSettings {
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    pub fn max_age(&self) -> Option<Duration> {
        (self.max_age_secs > 0).then(|| Duration::from_secs(self.max_age_secs))
    }

    /// Every problem with the settings themselves, each naming its key.
    fn own_problems(&self) -> Vec<String> {
        let mut errors = Vec::new();
        let mut bad = |name: &str, what: String| errors.push(format!("{}: {what}", key(name)));
        if self.slack_webhook_url.is_none() && self.webhook_url.is_none() {
            bad(
                "slack_webhook_url",
                format!(
                    "no channel: set it or {} (or do not run the notifier)",
                    key("webhook_url")
                ),
            );
        }
        if let Some(url) = &self.slack_webhook_url
            && !is_http_url(url.expose())
        {
            bad(
                "slack_webhook_url",
                "expected an http:// or https:// URL".into(),
            );
        }
        if let Some(url) = &self.webhook_url {
            if !is_http_url(url) {
                bad(
                    "webhook_url",
                    format!("expected an http:// or https:// URL, got `{url}`"),
                );
            }
            match &self.webhook_secret {
                None => bad(
                    "webhook_secret",
                    "is required with webhook_url: the receiver checks the signature".into(),
                ),
                Some(s) if s.expose().len() < 16 => {
                    bad("webhook_secret", "must be at least 16 bytes".into())
                }
                Some(_) => {}
            }
        }
        if self.statuses.is_empty() {
            bad("statuses", "name at least one status (qualified)".into());
        }
        for (name, template) in [
            ("contact_url", &self.contact_url),
            ("account_url", &self.account_url),
            ("deal_url", &self.deal_url),
            ("email_url", &self.email_url),
        ] {
            let Some(template) = template else { continue };
            if !is_http_url(template) {
                bad(
                    name,
                    format!("expected an http:// or https:// URL template, got `{template}`"),
                );
            }
            let mut rest = template.as_str();
            while let Some(start) = rest.find('{') {
                let end = rest[start..]
                    .find('}')
                    .map_or(rest.len(), |e| start + e + 1);
                let placeholder = &rest[start..end];
                if !PLACEHOLDERS.contains(&placeholder) {
                    bad(
                        name,
                        format!(
                            "unknown placeholder `{placeholder}` (known: {})",
                            PLACEHOLDERS.join(", ")
                        ),
                    );
                }
                rest = &rest[end..];
            }
        }
        if self.max_attempts == 0 {
            bad("max_attempts", "must be at least 1".into());
        }
        if self.request_timeout_ms == 0 {
            bad("request_timeout_ms", "must be at least 1".into());
        }
        if !self.rate_limit_per_sec.is_finite() || self.rate_limit_per_sec < 0.0 {
            bad("rate_limit_per_sec", "must be 0 (no limit) or more".into());
        }
        if self.rate_limit_burst == 0 {
            bad("rate_limit_burst", "must be at least 1".into());
        }
        if self.top_reasons > 10 {
            bad("top_reasons", "at most 10 fit a notification".into());
        }
        errors
    }
}

fn is_http_url(url: &str) -> bool {
    let url = url.trim();
    (url.starts_with("http://") || url.starts_with("https://"))
        && !url.contains(char::is_whitespace)
}

impl Settings for NotifierSettings {
    fn problems(&self, runtime: &RuntimeConfig) -> Vec<String> {
        let mut errors = self.own_problems();
        let budget = runtime.least_record_time().as_millis();
        if u128::from(self.request_timeout_ms) > budget {
            errors.push(format!(
                "{}: one request may take {} ms, more than the {budget} ms a record has inside \
                 a Kafka transaction (transaction_timeout_ms less batch_max_ms and the commit \
                 margin): lower it or raise transaction_timeout_ms",
                key("request_timeout_ms"),
                self.request_timeout_ms
            ));
        }
        errors
    }
}

#[cfg(test)]
mod tests {
    use mailstream_runtime::ConfigSource;
    use mailstream_runtime::config::load;

    use super::*;

    fn source(vars: &[(&str, &str)]) -> ConfigSource {
        vars.iter().fold(
            ConfigSource::default()
                .with_env("MAILSTREAM_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
                .with_env("MAILSTREAM_SCHEMA_REGISTRY_URL", "http://127.0.0.1:8081"),
            |s, (k, v)| s.with_env(k, *v),
        )
    }

    fn problems(vars: &[(&str, &str)]) -> String {
        match load::<NotifierSettings>(SECTION, &source(vars)) {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_channel_is_required_and_each_bad_key_is_named() {
        let e = problems(&[]);
        assert!(e.contains("MAILSTREAM_NOTIFIER_SLACK_WEBHOOK_URL"), "{e}");
        let e = problems(&[
            ("MAILSTREAM_NOTIFIER_WEBHOOK_URL", "ftp://x"),
            ("MAILSTREAM_NOTIFIER_CONTACT_URL", "https://crm/c/{contact}"),
            ("MAILSTREAM_NOTIFIER_MAX_ATTEMPTS", "0"),
        ]);
        for key in [
            "MAILSTREAM_NOTIFIER_WEBHOOK_URL",
            "MAILSTREAM_NOTIFIER_WEBHOOK_SECRET",
            "MAILSTREAM_NOTIFIER_CONTACT_URL",
            "MAILSTREAM_NOTIFIER_MAX_ATTEMPTS",
        ] {
            assert!(e.contains(key), "{key} missing from: {e}");
        }
        assert!(e.contains("{contact}"), "{e}");
    }

    #[test]
    fn unknown_keys_are_refused_and_a_good_config_loads() {
        let dir = std::env::temp_dir().join(format!("notifier-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("c.toml");
        std::fs::write(
            &file,
            "[notifier]\nslack_webhook_url = \"http://x/y\"\nchanel = 1\n",
        )
        .expect("write");
        let mut s = source(&[]);
        s.file = Some(file);
        let e = load::<NotifierSettings>(SECTION, &s)
            .map(|_| ())
            .expect_err("an unknown key");
        assert!(e.to_string().contains("chanel"), "{e}");
        let (_, ok) = load::<NotifierSettings>(
            SECTION,
            &source(&[
                (
                    "MAILSTREAM_NOTIFIER_SLACK_WEBHOOK_URL",
                    "https://hooks.slack.test/T/B/x",
                ),
                (
                    "MAILSTREAM_NOTIFIER_WEBHOOK_URL",
                    "https://hooks.example/lead",
                ),
                ("MAILSTREAM_NOTIFIER_WEBHOOK_SECRET", "0123456789abcdef"),
                ("MAILSTREAM_NOTIFIER_STATUSES", "qualified,review"),
                (
                    "MAILSTREAM_NOTIFIER_CONTACT_URL",
                    "https://crm/c/{contact_id}",
                ),
            ]),
        )
        .expect("loads");
        assert_eq!(ok.statuses, ["qualified", "review"]);
        assert!(
            !format!("{ok:?}").contains("hooks.slack.test"),
            "secret shown"
        );
    }
}
