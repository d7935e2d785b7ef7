//! The parser's own settings: file table `[parser]`, environment `MAILSTREAM_PARSER_<KEY>`.
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `blob_url` | `file:///var/lib/mailstream/blobs` | blob store of claim-checked raw messages (the one ingest writes to) and of attachments |
//! | `store_attachments` | `true` | write each attachment's bytes to the blob store and put its URI in the record |
//! | `allowed_extensions` | see [`DEFAULT_ALLOWED_EXTENSIONS`] | the attachment allowlist: comma-separated file extensions that are not flagged `executable` |
//! | `max_body_bytes` | `1048576` (1 MiB) | the longest text or HTML body kept in the record; a longer one is cut, flagged in `truncated` and stored whole in the blob store ([`crate::limits`]) |
//! | `clamd_address` | (none: no scanning) | ClamAV's clamd, `tcp://HOST:PORT` or `unix:///PATH`: every attachment is scanned before it is stored; an infected one is not stored and the record names the signature ([`crate::scan`]) |
//! | `clamd_timeout_ms` | `30000` | the longest one attachment's scan may take before it counts as clamd being unavailable (the batch is retried) |
//! | `trusted_authserv_ids` | (none: no header trusted) | the authserv-ids (RFC 8601) of our own receiving MTAs, comma-separated: SPF, DKIM and DMARC are read from the topmost `Authentication-Results` header one of them added, never from one a sender wrote ([`crate::signals`]) |
//! | `redact_patterns` | (none) | regular expressions (national ids, account numbers) whose matches are masked in the record, beside payment card numbers and IBANs, which always are ([`crate::redact`]); a list, or one string with a pattern per line |

use mailstream_runtime::RuntimeConfig;
use mailstream_runtime::config::{Settings, key_label, lenient};
use mailstream_runtime::topology::Topology;
use schemars::JsonSchema;
use serde::Deserialize;

use std::time::Duration;

use crate::limits;
use crate::redact::Redactor;
use crate::scan::Scanner;

/// Extensions of documents, media and archives that the attachment policy lets through. An
/// attachment is flagged `executable` unless its extension is on this list *and* its content is
/// not sniffed as a native executable (a renamed `.exe` is still flagged).
pub const DEFAULT_ALLOWED_EXTENSIONS: &str = "pdf,doc,docx,xls,xlsx,ppt,pptx,odt,ods,odp,rtf,txt,csv,tsv,md,\
html,htm,xml,json,ics,vcf,eml,msg,png,jpg,jpeg,gif,webp,bmp,tif,tiff,heic,svg,mp3,m4a,wav,ogg,\
mp4,mov,avi,webm,zip,gz,tgz,7z,rar,key,numbers,pages,p7s,asc,sig";

/// The parser's settings.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ParserSettings {
    /// Blob store URL (`file:///path` or `s3://bucket/prefix`).
    #[serde(default = "default_blob_url")]
    pub blob_url: String,
    /// Store attachment bytes in the blob store.
    #[serde(default = "default_true")]
    pub store_attachments: bool,
    /// Comma-separated allowlist of attachment extensions.
    #[serde(default = "default_allowed_extensions")]
    pub allowed_extensions: String,
    /// The longest text or HTML body kept in the record (bytes).
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Regular expressions whose matches are masked in the record, beside payment card numbers
    /// and IBANs, which always are; a list, or one string with a pattern per line.
    #[serde(default, deserialize_with = "lenient::lines")]
    #[schemars(schema_with = "lenient::list_schema")]
    pub redact_patterns: Vec<String>,
    /// The authserv-ids (RFC 8601) of our own receiving MTAs: SPF, DKIM and DMARC are read from
    /// the topmost `Authentication-Results` header one of them added. Unset: no header is
    /// trusted (a sender can write one), so the results stay empty.
    #[serde(default, deserialize_with = "lenient::list")]
    #[schemars(schema_with = "lenient::list_schema")]
    pub trusted_authserv_ids: Vec<String>,
    /// ClamAV's clamd (`tcp://HOST:PORT` or `unix:///PATH`): every attachment is scanned before
    /// it is stored. Unset: no scanning.
    #[serde(default)]
    pub clamd_address: Option<String>,
    /// The longest one attachment's scan may take (milliseconds) before clamd counts as
    /// unavailable and the batch is retried.
    #[serde(default = "default_clamd_timeout_ms")]
    #[schemars(range(min = 100, max = 600000))]
    pub clamd_timeout_ms: u64,
}

impl Default for ParserSettings {
    fn default() -> Self {
        Self {
            blob_url: default_blob_url(),
            store_attachments: true,
            allowed_extensions: default_allowed_extensions(),
            max_body_bytes: default_max_body_bytes(),
            redact_patterns: Vec::new(),
            trusted_authserv_ids: Vec::new(),
            clamd_address: None,
            clamd_timeout_ms: default_clamd_timeout_ms(),
        }
    }
}

fn default_max_body_bytes() -> usize {
    crate::limits::DEFAULT_MAX_BODY_BYTES
}

fn default_clamd_timeout_ms() -> u64 {
    30_000
}

fn default_blob_url() -> String {
    "file:///var/lib/mailstream/blobs".into()
}

fn default_true() -> bool {
    true
}

fn default_allowed_extensions() -> String {
    DEFAULT_ALLOWED_EXTENSIONS.into()
}

/// Room kept in a `parsed` record's budget for what the resolver and scorer add when they
/// embed it in `resolved` and `scored` (resolution, breakdown, evidence).
pub const DOWNSTREAM_ROOM_BYTES: usize = 512 * 1024;

impl ParserSettings {
    /// `trusted_authserv_ids`, lower-case, as [`crate::ParseContext`] takes them.
    pub fn trusted_authserv_ids(&self) -> std::sync::Arc<[String]> {
        crate::parse::trusted_authserv_ids(&self.trusted_authserv_ids)
    }

    /// The redactor of `redact_patterns`, or each bad pattern's problem, naming the key.
    pub fn redactor(&self) -> Result<Redactor, Vec<String>> {
        Redactor::new(&self.redact_patterns).map_err(|errors| {
            let key = key_label("parser", "redact_patterns");
            errors.into_iter().map(|e| format!("{key}: {e}")).collect()
        })
    }

    /// The scanner of `clamd_address` (None: scanning is off), or the key's problem.
    pub fn scanner(&self) -> Result<Option<Scanner>, String> {
        let timeout = Duration::from_millis(self.clamd_timeout_ms);
        let Some(address) = self.clamd_address.as_deref().filter(|a| !a.is_empty()) else {
            return Ok(None);
        };
        Scanner::new(address, timeout)
            .map(Some)
            .map_err(|e| format!("{}: {e}", key_label("parser", "clamd_address")))
    }

    /// Refuses a `max_body_bytes` whose largest record would not fit `budget` (the `parsed`
    /// topic's record budget) with room for the stages downstream.
    pub fn limit_problems(&self, budget: usize) -> Vec<String> {
        let bound = limits::max_record_bytes(self.max_body_bytes);
        if self.max_body_bytes < 1024 || bound + DOWNSTREAM_ROOM_BYTES > budget {
            return vec![format!(
                "{}: must be at least 1024 and leave the largest record ({bound} bytes) {DOWNSTREAM_ROOM_BYTES} bytes under the `parsed` budget of {budget}; got {}",
                key_label("parser", "max_body_bytes"),
                self.max_body_bytes
            )];
        }
        Vec::new()
    }
}

impl Settings for ParserSettings {
    fn problems(&self, _runtime: &RuntimeConfig) -> Vec<String> {
        let mut problems = match Topology::embedded() {
            Ok(topology) => self.limit_problems(topology.record_budget(crate::OUTPUT)),
            Err(e) => vec![e.to_string()],
        };
        if let Err(errors) = self.redactor() {
            problems.extend(errors);
        }
        if let Err(problem) = self.scanner() {
            problems.push(problem);
        }
        if !(100..=600_000).contains(&self.clamd_timeout_ms) {
            problems.push(format!(
                "{}: must be between 100 and 600000; got {}",
                key_label("parser", "clamd_timeout_ms"),
                self.clamd_timeout_ms
            ));
        }
        problems
    }
}

/// The attachment allowlist, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachmentPolicy {
    allowed: Vec<String>,
}

impl AttachmentPolicy {
    /// Parses a comma-separated list of extensions (leading dots and case ignored).
    pub fn from_list(list: &str) -> Self {
        let allowed = list
            .split(',')
            .map(|e| e.trim().trim_start_matches('.').to_ascii_lowercase())
            .filter(|e| !e.is_empty())
            .collect();
        Self { allowed }
    }

    /// Whether `extension` (lower-case, without the dot) is on the allowlist.
    pub fn allows(&self, extension: &str) -> bool {
        self.allowed.iter().any(|a| a == extension)
    }
}

impl Default for AttachmentPolicy {
    fn default() -> Self {
        Self::from_list(DEFAULT_ALLOWED_EXTENSIONS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_limits_that_would_pass_the_topic_cap_are_refused() {
        let budget = 8 * 1024 * 1024 - 64 * 1024;
        assert_eq!(
            ParserSettings::default().limit_problems(budget),
            Vec::<String>::new()
        );
        let huge = ParserSettings {
            max_body_bytes: 4 * 1024 * 1024,
            ..ParserSettings::default()
        };
        let problems = huge.limit_problems(budget);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains("key `parser.max_body_bytes`"),
            "{problems:?}"
        );
    }

    #[test]
    fn policy_parses_the_list() {
        let policy = AttachmentPolicy::from_list(" .PDF, docx,,exe ");
        assert!(policy.allows("pdf") && policy.allows("docx") && policy.allows("exe"));
        assert!(!policy.allows("js"));
        assert!(AttachmentPolicy::default().allows("png"));
        assert!(!AttachmentPolicy::default().allows("exe"));
    }
}
