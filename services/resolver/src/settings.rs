//! The resolver's own settings: file table `[resolver]`, environment `MAILSTREAM_RESOLVER_<KEY>`.
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `our_domains` | (none) | comma-separated domains that are ours (ingest's accepted domains): To/Cc/Bcc addresses on them count as recipients, next to the envelope's |
//! | `deal_pattern` | `deal-{id}@` | recipient pattern that routes an email to a deal: `{id}` is the deal id; text before `@` matches the local part, a domain after `@` (optional) must match too |
//! | `free_mail_domains` | (none) | more free-mail or disposable domains, added to the built-in list; they never map to an account |
//! | `contact_policy` | `senders` | who becomes a contact: `senders` (an unknown sender is proposed as a new contact, unless a rule below refuses it) or `never` (no proposal at all; known contacts still resolve). Recipients are never proposed: the pipeline does not model them |
//! | `contacts_from_free_mail` | `true` | propose senders on free-mail or disposable domains (`free_mail_domains`) as contacts; `false` refuses them (reason `free-mail`) |
//! | `role_local_parts` | (none) | more role or robot local parts (`info`, `sales@`, ...), added to the built-in list (`policy.rs`): a sender with one of them is never proposed (reason `role`) |
//! | `dedupe_max_entries` | 1000000 | message ids remembered per input partition |
//! | `dedupe_max_age_hours` | 168 | how long a message id is remembered (record time) |
//! | `threads_max_age_days` | 180 | how long a thread link is kept (record time): a reply whose parent was received longer ago than this starts a new thread, and older links are tombstoned in the `threads` table |
//! | `threads_max_entries` | 100000 | thread links kept per input partition; beyond it the oldest are tombstoned (a safety bound: the age should bound the table first) |
//! | `reply_wait_max_hours` | 24 | how long a reply none of whose parents is known waits for one (record time): a parent arriving within it links the reply (a second `resolved` record); `parsed` must keep records longer (its retention), the reply is read back from it |
//! | `reply_wait_max_entries` | 50000 | replies waiting per input partition; beyond it the oldest stop waiting |
//! | `audit_duplicates` | `true` | write each collapsed copy to the `duplicates` topic |

use schemars::JsonSchema;
use serde::Deserialize;

use mailstream_runtime::RuntimeConfig;
use mailstream_runtime::config::{Settings, key_label, lenient};
use mailstream_runtime::topology::Topology;

use crate::deal::DealPattern;
use crate::threads;

/// The settings' section: file table `[resolver]`, environment `MAILSTREAM_RESOLVER_*`.
pub const SECTION: &str = "resolver";

/// The longest `threads_max_age_days` accepted (ten years): keeps the age in milliseconds far
/// from overflowing.
const MAX_THREADS_AGE_DAYS: u64 = 3_650;

/// Who becomes a contact (`contact_policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ContactPolicy {
    /// An unknown sender is proposed as a new contact, unless a rule refuses it.
    #[default]
    Senders,
    /// Nobody is proposed.
    Never,
}

/// The resolver's settings.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResolverSettings {
    /// Comma-separated domains that are ours (ingest's accepted domains): To/Cc/Bcc addresses on
    /// them count as recipients, next to the envelope's.
    #[serde(default, deserialize_with = "lenient::list")]
    #[schemars(schema_with = "lenient::list_schema")]
    pub our_domains: Vec<String>,
    /// Recipient pattern that routes an email to a deal: `{id}` is the deal id; text before `@`
    /// matches the local part, a domain after `@` (optional) must match too.
    #[serde(default = "default_deal_pattern", deserialize_with = "lenient::string")]
    pub deal_pattern: String,
    /// More free-mail or disposable domains, added to the built-in list; they never map to an
    /// account.
    #[serde(default, deserialize_with = "lenient::list")]
    #[schemars(schema_with = "lenient::list_schema")]
    pub free_mail_domains: Vec<String>,
    /// Who becomes a contact: `senders` (an unknown sender is proposed as a new contact, unless a
    /// rule below refuses it) or `never` (no proposal at all; known contacts still resolve).
    /// Recipients are never proposed: the pipeline does not model them.
    #[serde(default)]
    pub contact_policy: ContactPolicy,
    /// Propose senders on free-mail or disposable domains (`free_mail_domains`) as contacts;
    /// `false` refuses them (reason `free-mail`).
    #[serde(default = "default_true")]
    pub contacts_from_free_mail: bool,
    /// More role or robot local parts (`info`, `sales@`, ...), added to the built-in list
    /// (`policy.rs`): a sender with one of them is never proposed (reason `role`).
    #[serde(default, deserialize_with = "lenient::list")]
    #[schemars(schema_with = "lenient::list_schema")]
    pub role_local_parts: Vec<String>,
    /// Message ids remembered per input partition.
    #[serde(default = "default_max_entries")]
    pub dedupe_max_entries: usize,
    /// How long a message id is remembered (record time).
    #[serde(default = "default_max_age_hours")]
    pub dedupe_max_age_hours: u64,
    /// How long a thread link is kept (record time): a reply whose parent was received longer ago
    /// than this starts a new thread, and older links are tombstoned in the `threads` table.
    #[serde(default = "default_threads_max_age_days")]
    pub threads_max_age_days: u64,
    /// Thread links kept per input partition; beyond it the oldest are tombstoned (a safety bound:
    /// the age should bound the table first).
    #[serde(default = "default_threads_max_entries")]
    pub threads_max_entries: usize,
    /// How long a reply none of whose parents is known waits for one (record time): a parent
    /// arriving within it links the reply (a second `resolved` record). `parsed` must keep
    /// records longer (its retention): the reply is read back from it.
    #[serde(default = "default_reply_wait_max_hours")]
    pub reply_wait_max_hours: u64,
    /// Replies waiting per input partition; beyond it the oldest stop waiting.
    #[serde(default = "default_reply_wait_max_entries")]
    pub reply_wait_max_entries: usize,
    /// Write each collapsed copy to the `duplicates` topic.
    #[serde(default = "default_true")]
    pub audit_duplicates: bool,
}

impl Default for ResolverSettings {
    fn default() -> Self {
        Self {
            our_domains: Vec::new(),
            deal_pattern: default_deal_pattern(),
            free_mail_domains: Vec::new(),
            contact_policy: ContactPolicy::default(),
            contacts_from_free_mail: true,
            role_local_parts: Vec::new(),
            dedupe_max_entries: default_max_entries(),
            dedupe_max_age_hours: default_max_age_hours(),
            threads_max_age_days: default_threads_max_age_days(),
            threads_max_entries: default_threads_max_entries(),
            reply_wait_max_hours: default_reply_wait_max_hours(),
            reply_wait_max_entries: default_reply_wait_max_entries(),
            audit_duplicates: true,
        }
    }
}

impl ResolverSettings {
    /// How long a thread link is kept, in milliseconds of record time.
    pub fn threads_max_age_ms(&self) -> i64 {
        days_to_ms(self.threads_max_age_days)
    }

    /// How long a reply waits for a parent, in milliseconds of record time.
    pub fn reply_wait_max_ms(&self) -> i64 {
        i64::try_from(self.reply_wait_max_hours.saturating_mul(3_600_000)).unwrap_or(i64::MAX)
    }
}

impl Settings for ResolverSettings {
    fn problems(&self, _runtime: &RuntimeConfig) -> Vec<String> {
        let key = |name: &str| key_label(SECTION, name);
        let mut problems = Vec::new();
        if let Err(e) = DealPattern::parse(&self.deal_pattern) {
            problems.push(format!("{}: {e}", key("deal_pattern")));
        }
        for (name, value) in [
            ("dedupe_max_entries", self.dedupe_max_entries as u64),
            ("dedupe_max_age_hours", self.dedupe_max_age_hours),
            ("threads_max_entries", self.threads_max_entries as u64),
            ("reply_wait_max_hours", self.reply_wait_max_hours),
            ("reply_wait_max_entries", self.reply_wait_max_entries as u64),
        ] {
            if value == 0 {
                problems.push(format!("{}: must be at least 1", key(name)));
            }
        }
        if self.threads_max_age_days == 0 || self.threads_max_age_days > MAX_THREADS_AGE_DAYS {
            problems.push(format!(
                "{}: must be from 1 to {MAX_THREADS_AGE_DAYS}",
                key("threads_max_age_days")
            ));
        }
        for (name, domains) in [
            ("our_domains", &self.our_domains),
            ("free_mail_domains", &self.free_mail_domains),
        ] {
            for domain in domains {
                if domain.contains('@') || domain.contains(char::is_whitespace) {
                    problems.push(format!("{}: `{domain}` is not a domain", key(name)));
                }
            }
        }
        for part in &self.role_local_parts {
            let part = part.trim_end_matches('@');
            if part.is_empty() || part.contains('@') || part.contains(char::is_whitespace) {
                problems.push(format!(
                    "{}: `{part}` is not a local part (expected e.g. `info` or `info@`)",
                    key("role_local_parts")
                ));
            }
        }
        match Topology::embedded() {
            Ok(topology) => {
                problems.extend(threads::copartition_problems(&topology));
                if let Some(problem) =
                    threads::reply_wait_problem(&topology, self.reply_wait_max_ms())
                {
                    problems.push(format!("{}: {problem}", key("reply_wait_max_hours")));
                }
            }
            Err(e) => problems.push(e.to_string()),
        }
        problems
    }
}

fn days_to_ms(days: u64) -> i64 {
    i64::try_from(days.saturating_mul(86_400_000)).unwrap_or(i64::MAX)
}

fn default_deal_pattern() -> String {
    "deal-{id}@".into()
}

fn default_max_entries() -> usize {
    1_000_000
}

fn default_max_age_hours() -> u64 {
    24 * 7
}

fn default_threads_max_age_days() -> u64 {
    180
}

fn default_threads_max_entries() -> usize {
    100_000
}

fn default_reply_wait_max_hours() -> u64 {
    24
}

fn default_reply_wait_max_entries() -> usize {
    50_000
}

fn default_true() -> bool {
    true
}
