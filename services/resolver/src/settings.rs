//! The resolver's own settings: file table `[resolver]`, environment `MAILSTREAM_RESOLVER_<KEY>`.
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `our_domains` | (none) | comma-separated domains that are ours (ingest's accepted domains): To/Cc/Bcc addresses on them count as recipients, next to the envelope's |
//! | `deal_pattern` | `deal-{id}@` | recipient pattern that routes an email to a deal: `{id}` is the deal id; text before `@` matches the local part, a domain after `@` (optional) must match too |
//! | `free_mail_domains` | (none) | more free-mail or disposable domains, added to the built-in list; they never map to an account |
//! | `dedupe_max_entries` | 1000000 | message ids remembered per input partition |
//! | `dedupe_max_age_hours` | 168 | how long a message id is remembered (record time) |
//! | `audit_duplicates` | `true` | write each collapsed copy to the `duplicates` topic |

use serde::Deserialize;

use mailstream_runtime::config::lenient;

use crate::deal::DealPattern;

/// The resolver's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolverSettings {
    #[serde(default, deserialize_with = "lenient::list")]
    pub our_domains: Vec<String>,
    #[serde(default = "default_deal_pattern", deserialize_with = "lenient::string")]
    pub deal_pattern: String,
    #[serde(default, deserialize_with = "lenient::list")]
    pub free_mail_domains: Vec<String>,
    #[serde(default = "default_max_entries")]
    pub dedupe_max_entries: usize,
    #[serde(default = "default_max_age_hours")]
    pub dedupe_max_age_hours: u64,
    #[serde(default = "default_true")]
    pub audit_duplicates: bool,
}

impl Default for ResolverSettings {
    fn default() -> Self {
        Self {
            our_domains: Vec::new(),
            deal_pattern: default_deal_pattern(),
            free_mail_domains: Vec::new(),
            dedupe_max_entries: default_max_entries(),
            dedupe_max_age_hours: default_max_age_hours(),
            audit_duplicates: true,
        }
    }
}

impl ResolverSettings {
    /// Every problem with the settings, each naming its key.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Err(e) = DealPattern::parse(&self.deal_pattern) {
            problems.push(format!(
                "key `resolver.deal_pattern` (env MAILSTREAM_RESOLVER_DEAL_PATTERN): {e}"
            ));
        }
        if self.dedupe_max_entries == 0 {
            problems.push(
                "key `resolver.dedupe_max_entries` (env MAILSTREAM_RESOLVER_DEDUPE_MAX_ENTRIES): must be at least 1"
                    .into(),
            );
        }
        if self.dedupe_max_age_hours == 0 {
            problems.push(
                "key `resolver.dedupe_max_age_hours` (env MAILSTREAM_RESOLVER_DEDUPE_MAX_AGE_HOURS): must be at least 1"
                    .into(),
            );
        }
        for domain in self.our_domains.iter().chain(&self.free_mail_domains) {
            if domain.contains('@') || domain.contains(char::is_whitespace) {
                problems.push(format!(
                    "key `resolver.our_domains` / `resolver.free_mail_domains`: `{domain}` is not a domain"
                ));
            }
        }
        problems
    }
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

fn default_true() -> bool {
    true
}
