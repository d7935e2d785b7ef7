//! The scorer processor: each `resolved` email gets a transparent, rule-based lead score.
//!
//! For every record it writes a `scored` record (the analysts' topic, keyed by message id) with
//! the score, the status (`qualified`, `review`, `nurture`) and the breakdown that explains it:
//! every rule that matched, its points and its evidence. Unless the email was excluded, it also
//! writes the lead's latest state to the compacted `leads` table, keyed by the lead key (the
//! contact id, else the sender's email). Auto-replies, delivery reports and list mail are excluded
//! from scoring: tagged (`auto-reply`, `list`, `bounce` for a failed delivery, `delayed`,
//! `challenge`, `complaint`), given status `excluded`, and still written to `scored`, so nothing
//! is lost. Context tags do not exclude: `free-mail`, `malware` (clamd found malware in an
//! attachment, which was not stored), `new-contact`, `target-account`. Every record also
//! carries its `visibility` (the rules file's [`visibility`] rules: how much of the email the
//! CRM and a notification get).
//!
//! An email any participant of which `mailstream erase` removed after it was received (a replay
//! of their mail) is dropped: no `scored` record, no `leads` row
//! ([`mailstream_runtime::erasure`]; `scorer_erased_total`).
//!
//! `leads` is last-write-wins in the order the scorer writes: the emails of one lead are spread
//! over the partitions of `resolved` (keyed by message id), so an older email of a lead can be
//! written after a newer one (several instances, a replay); a consumer that needs the newest
//! state compares `updated_at` (the email's `received_at`).
//!
//! Scoring is a pure function of the email and the rules ([`score()`]): replaying `resolved` from
//! the beginning writes byte-identical `scored` records, as long as the rules are the same (each
//! record names its rules by [`rules::RuleSet::version`]).
//!
//! # Rules file
//!
//! YAML (`.yaml`, `.yml`) or TOML (`.toml`), chosen by the extension; `rules/default.yaml` is the
//! built-in default (used when `scorer.rules_file` is not set) and documents the format in its
//! comments:
//!
//! ```yaml
//! qualified_at: 40          # score >= 40: qualified
//! nurture_below: 15         # score < 15: nurture; in between: review
//! rules:
//!   - id: subject-intent    # unique; names the rule in breakdowns
//!     points: 20            # negative subtracts
//!     description: The subject asks for a demo, pricing or an enterprise plan.
//!     when:                 # exactly one key:
//!       subject: {contains_any: [demo, pricing, enterprise]}
//! ```
//!
//! The same in TOML:
//!
//! ```toml
//! qualified_at = 40
//! nurture_below = 15
//!
//! [[rules]]
//! id = "subject-intent"
//! points = 20
//! when = { subject = { contains_any = ["demo", "pricing", "enterprise"] } }
//! ```
//!
//! | condition | form |
//! |---|---|
//! | `subject`, `body` | `{contains_any: [words]}` (whole words and phrases, any case) or `{matches: REGEX}`; `body` is the reply without quotes and signature, else the whole text |
//! | `header` | `{name: X-Header, contains_any: [..] \| matches: REGEX \| present: true\|false}` |
//! | `sender_domain` | `{in: [domains]}` (the domain or a subdomain) or `{matches: REGEX}` |
//! | `sender_email` | `{contains_any: [..]}` or `{matches: REGEX}` |
//! | `recipient` | our addresses it was sent to (the alias): `{contains_any: [demo]}` or `{matches: "^demo@"}` |
//! | `attachment` | some attachment with all of `types: [pdf, docx]` (extensions or MIME types), `min_bytes`, `max_bytes` (inclusive), `executable: true\|false` |
//! | `auth` | `{spf: pass, dkim: pass, dmarc: pass}`: each listed result is as given |
//! | `target_account`, `free_mail`, `known_contact` | `true` or `false` |
//! | `links` | `{suspicious: true\|false}` ([`links`]: IP, punycode, shortener, user info, text showing another domain) or `{hosts: [domains]}` |
//! | `language`, `country` | `{in: [de, fr]}`: the body's language, the sender domain's ccTLD ([`language`]) |
//! | `intent` | `{in: [support]}`: the intent the file's `intents` decided ([`routing`]) |
//! | `any`, `all` | a list of conditions: one of them / all of them |
//! | `not` | a condition that must not hold |
//!
//! A file is validated as a whole, and every problem is reported with the rule id and key. At
//! start, a missing or invalid file stops the process (a configuration error); later, an invalid
//! change is refused and the rules in force stay ([`reload`]), visible on
//! `mailstream_scorer_rules_valid` ([`events`]).
//!
//! Besides `rules`, a file may hold `intents` (what an email is about: sales, support, billing,
//! ...) and `routing` (teams, routes and owners): [`routing`]. Every scored (not excluded)
//! record carries `routing`: language, country, intent with its rule and evidence, team,
//! route and owner, all functions of the email and the rules.
//!
//! Modules: [`rules`] (the file model, loading, parsing), [`validate`] (what a rule says,
//! checked and compiled), [`condition`] (compiled conditions and their evidence), [`links`]
//! (suspicious links), [`language`] (language and country), [`routing`] (intents, teams,
//! owners), [`score`](mod@score) (the pure scoring), [`reload`] (hot reload), [`events`]
//! (metrics and logs), [`settings`].

pub mod condition;
pub mod events;
pub mod language;
pub mod links;
pub mod reload;
pub mod routing;
pub mod rules;
pub mod score;
pub mod settings;
pub mod validate;
pub mod visibility;

use std::time::Duration;

use mailstream_runtime::erasure::Erasures;
use mailstream_runtime::records::ResolvedEmail;
use mailstream_runtime::{BuildContext, Incoming, Outputs, ProcessError, Processor, RuntimeError};

pub use events::ScorerMetrics;
pub use reload::RulesHandle;
pub use rules::{DEFAULT_RULES, Format, RuleSet, RulesFile};
pub use score::{Scoring, Status, lead_of, score, scored_record};
pub use settings::ScorerSettings;

/// The analysts' topic.
pub const SCORED: &str = "scored";
/// The compacted latest state per lead.
pub const LEADS: &str = "leads";

/// The scorer processor.
#[derive(Debug)]
pub struct Scorer {
    rules: RulesHandle,
    metrics: ScorerMetrics,
    /// People erased (`mailstream erase`); none without an `erasure_key`.
    erasures: Option<Erasures>,
}

/// Builds the scorer for `serve` from its checked settings: loads the rules (the file, else the
/// built-in rules), registers the scorer's metrics and, with a rules file, starts watching it
/// for changes.
pub async fn build(ctx: BuildContext, settings: ScorerSettings) -> Result<Scorer, RuntimeError> {
    let (seen, loaded) = match &settings.rules_file {
        Some(path) => {
            let (seen, loaded) = reload::read(path);
            (Some(seen), loaded)
        }
        None => (None, RuleSet::builtin()),
    };
    // `config::load` checked the file; it may have changed since.
    let rules = loaded.map_err(|more| RuntimeError::Config(settings.rules_file_problems(more)))?;
    let metrics = ScorerMetrics::register(&ctx.metrics.registry)?;
    events::rules_loaded(&metrics, settings.rules_file.as_deref(), &rules);
    let handle = RulesHandle::new(rules);
    if let (Some(path), Some(seen)) = (settings.rules_file, seen) {
        reload::Watcher::new(path, seen, handle.clone(), metrics.clone()).spawn(
            Duration::from_millis(settings.reload_interval_ms),
            ctx.shutdown.clone(),
        );
    }
    let erasures = Erasures::start(&ctx.config, &ctx.naming(), ctx.shutdown.clone()).await?;
    Ok(Scorer {
        rules: handle,
        metrics,
        erasures,
    })
}

impl Processor for Scorer {
    type Input = ResolvedEmail;
    const NAME: &'static str = "scorer";

    async fn process(
        &mut self,
        record: Incoming<ResolvedEmail>,
        out: &mut Outputs,
    ) -> Result<(), ProcessError> {
        // A replay of an erased person's email: their lead must not come back.
        if let Some(erasures) = &self.erasures
            && erasures.erased(&record.value.email)
        {
            events::erased_dropped(&self.metrics, &record.value.message_id);
            return Ok(());
        }
        // One version of the rules for the whole record, even if a reload lands meanwhile.
        let rules = self.rules.current();
        let scored = scored_record(record.value, &rules);
        events::record_scored(
            &self.metrics,
            &scored.status,
            scored.score,
            &rules.version,
            scored.routing.as_ref(),
            scored.resolved.source_alias(),
        );
        let lead = lead_of(&scored);
        out.send(SCORED, scored.message_id.clone(), scored);
        if let Some(lead) = lead {
            out.send(LEADS, lead.lead_key.clone(), lead);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use mailstream_runtime::ConfigSource;
    use mailstream_runtime::metrics::Metrics;

    use super::*;

    fn context() -> BuildContext {
        let source = ConfigSource::default()
            .with_env("MAILSTREAM_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
            .with_env("MAILSTREAM_SCHEMA_REGISTRY_URL", "http://127.0.0.1:8081");
        let (config, _) =
            mailstream_runtime::config::load::<ScorerSettings>("scorer", &source).expect("config");
        BuildContext {
            config,
            shutdown: mailstream_runtime::Shutdown::new().1,
            metrics: Metrics::new(),
        }
    }

    #[tokio::test]
    async fn without_a_rules_file_the_built_in_rules_score() {
        let ctx = context();
        let registry = ctx.metrics.registry.clone();
        let scorer = build(ctx, ScorerSettings::default()).await.expect("builds");
        let builtin = RuleSet::builtin().expect("valid");
        assert_eq!(scorer.rules.current().version, builtin.version);
        let names: Vec<String> = registry
            .gather()
            .iter()
            .map(|f| f.name().to_string())
            .collect();
        for name in [
            "mailstream_scorer_rules_reloads_total",
            "mailstream_scorer_rules_valid",
            "mailstream_scorer_records_total",
        ] {
            assert!(names.iter().any(|n| n == name), "{name} in {names:?}");
        }
    }
}
