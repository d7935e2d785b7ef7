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

use mailstream_runtime::RuntimeConfig;
use mailstream_runtime::config::{Settings, key_label, lenient};
use schemars::JsonSchema;
use serde::Deserialize;

use crate::reload;

/// The settings' section: file table `[scorer]`, environment `MAILSTREAM_SCORER_*`.
pub const SECTION: &str = "scorer";

const MIN_RELOAD_INTERVAL_MS: u64 = 100;

/// The scorer's settings.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScorerSettings {
    /// The rules file; `None` (or empty) uses the built-in rules.
    #[serde(default, deserialize_with = "lenient::opt_path")]
    pub rules_file: Option<PathBuf>,
    /// Milliseconds between two checks of the rules file.
    #[serde(default = "default_reload_interval_ms")]
    #[schemars(range(min = MIN_RELOAD_INTERVAL_MS))]
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

impl Settings for ScorerSettings {
    /// The interval, and every problem of the rules file (read here; `build` reads it again).
    fn problems(&self, _runtime: &RuntimeConfig) -> Vec<String> {
        let mut problems = Vec::new();
        if self.reload_interval_ms < MIN_RELOAD_INTERVAL_MS {
            problems.push(format!(
                "{}: {} is below the minimum of {MIN_RELOAD_INTERVAL_MS}",
                key_label(SECTION, "reload_interval_ms"),
                self.reload_interval_ms
            ));
        }
        if let Some(path) = &self.rules_file
            && let Err(more) = reload::read(path).1
        {
            problems.extend(self.rules_file_problems(more));
        }
        problems
    }
}

impl ScorerSettings {
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
            .map(|p| format!("{}: {file}: {p}", key_label(SECTION, "rules_file")))
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
        // The built-in rules as a file: the rules file is read and checked at load.
        let rules = concat!(env!("CARGO_MANIFEST_DIR"), "/rules/default.yaml");
        let s = load(
            ConfigSource::default()
                .with_env("MAILSTREAM_SCORER_RULES_FILE", rules)
                .with_env("MAILSTREAM_SCORER_RELOAD_INTERVAL_MS", "500"),
        )
        .expect("valid");
        assert_eq!(s.rules_file, Some(PathBuf::from(rules)));
        assert_eq!(s.reload_interval_ms, 500);
        let s = load(ConfigSource::default().with_env("MAILSTREAM_SCORER_RULES_FILE", ""))
            .expect("valid");
        assert_eq!((s.rules_file, s.reload_interval_ms), (None, 2000));
    }

    #[test]
    fn a_bad_start_names_the_key_and_every_problem() {
        let dir =
            std::env::temp_dir().join(format!("mailstream-scorer-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let bad = dir.join("bad.yaml");
        std::fs::write(
            &bad,
            "rules:\n  - {id: a, points: x, when: {subject: {contains_any: []}}}\n  - {id: b, points: 1, when: {body: {matches: '('}}}\n",
        )
        .expect("write");
        let Err(mailstream_runtime::RuntimeError::Config(problems)) = load(
            ConfigSource::default()
                .with_env("MAILSTREAM_SCORER_RULES_FILE", bad.display().to_string())
                .with_env("MAILSTREAM_SCORER_RELOAD_INTERVAL_MS", "1"),
        ) else {
            panic!("a configuration error");
        };
        assert_eq!(problems.len(), 4, "{problems:#?}");
        assert_eq!(
            problems[0],
            "key `scorer.reload_interval_ms` (env MAILSTREAM_SCORER_RELOAD_INTERVAL_MS): 1 is below the minimum of 100"
        );
        for p in &problems[1..] {
            assert!(
                p.starts_with(&format!(
                    "key `scorer.rules_file` (env MAILSTREAM_SCORER_RULES_FILE): {}: rule `",
                    bad.display()
                )),
                "{p}"
            );
        }
        let missing = dir.join("missing.toml");
        let Err(mailstream_runtime::RuntimeError::Config(problems)) =
            load(ConfigSource::default().with_env(
                "MAILSTREAM_SCORER_RULES_FILE",
                missing.display().to_string(),
            ))
        else {
            panic!("a configuration error");
        };
        assert!(
            problems[0].contains("missing.toml: cannot read"),
            "{problems:?}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
