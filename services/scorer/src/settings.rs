//! The scorer's own settings: file table `[scorer]`, environment `MAILSTREAM_SCORER_<KEY>`.
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `rules_file` | none: the built-in rules (`rules/default.yaml`) | the rules file (`.yaml`, `.yml` or `.toml`), watched for changes |
//! | `reload_interval_ms` | `2000` | how often the rules file is checked for changes (at least 100) |
//!
//! A rules file that is missing or invalid at start is a configuration error: the process does
//! not start, and every problem of the file is listed with the key that named it. (Later, an
//! invalid change is refused and the rules in force stay: see [`crate::reload`].)

use std::path::PathBuf;

use mailstream_runtime::config::lenient;
use serde::Deserialize;

/// How the rules-file key is named in configuration errors.
pub const RULES_FILE_KEY: &str = "key `scorer.rules_file` (env MAILSTREAM_SCORER_RULES_FILE)";

const MIN_RELOAD_INTERVAL_MS: u64 = 100;

/// The scorer's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScorerSettings {
    /// The rules file; `None` (or empty) uses the built-in rules.
    #[serde(default, deserialize_with = "lenient::opt_path")]
    pub rules_file: Option<PathBuf>,
    /// Milliseconds between two checks of the rules file.
    #[serde(default = "default_reload_interval_ms")]
    pub reload_interval_ms: u64,
}

impl Default for ScorerSettings {
    fn default() -> Self {
        Self {
            rules_file: None,
            reload_interval_ms: default_reload_interval_ms(),
        }
    }
}

fn default_reload_interval_ms() -> u64 {
    2000
}

impl ScorerSettings {
    /// What serde cannot check, one line per problem (empty: fine).
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.reload_interval_ms < MIN_RELOAD_INTERVAL_MS {
            problems.push(format!(
                "key `scorer.reload_interval_ms` (env MAILSTREAM_SCORER_RELOAD_INTERVAL_MS): {} is below the minimum of {MIN_RELOAD_INTERVAL_MS}",
                self.reload_interval_ms
            ));
        }
        problems
    }

    /// The problems of a rules file that cannot be used at start, each naming the key and the
    /// file.
    pub fn rules_file_problems(&self, problems: Vec<String>) -> Vec<String> {
        let file = self
            .rules_file
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "the built-in rules".into());
        problems
            .into_iter()
            .map(|p| format!("{RULES_FILE_KEY}: {file}: {p}"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use mailstream_runtime::ConfigSource;

    use super::*;

    fn load(source: ConfigSource) -> Result<ScorerSettings, mailstream_runtime::RuntimeError> {
        let source = source
            .with_env("MAILSTREAM_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
            .with_env("MAILSTREAM_SCHEMA_REGISTRY_URL", "http://127.0.0.1:8081");
        mailstream_runtime::config::load::<ScorerSettings>("scorer", &source).map(|(_, s)| s)
    }

    #[test]
    fn keys_come_from_the_environment() {
        let s = load(
            ConfigSource::default()
                .with_env("MAILSTREAM_SCORER_RULES_FILE", "/etc/mailstream/rules.yaml")
                .with_env("MAILSTREAM_SCORER_RELOAD_INTERVAL_MS", "500"),
        )
        .expect("valid");
        assert_eq!(
            s.rules_file,
            Some(PathBuf::from("/etc/mailstream/rules.yaml"))
        );
        assert_eq!(s.reload_interval_ms, 500);
        let s = load(ConfigSource::default().with_env("MAILSTREAM_SCORER_RULES_FILE", ""))
            .expect("valid");
        assert_eq!((s.rules_file, s.reload_interval_ms), (None, 2000));
    }

    #[test]
    fn a_too_short_interval_is_refused_with_its_key() {
        let s = ScorerSettings {
            reload_interval_ms: 0,
            ..ScorerSettings::default()
        };
        let problems = s.problems();
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].contains("MAILSTREAM_SCORER_RELOAD_INTERVAL_MS"),
            "{problems:?}"
        );
    }
}
