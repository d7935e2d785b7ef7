//! The scorer's named events: each thing worth counting or logging happens here, once, so its
//! log line and its metric never disagree (the runtime's pattern, `mailstream_runtime::events`).
//!
//! Metrics are registered on the processor's registry (`BuildContext.metrics.registry`), whose
//! `mailstream_` prefix gives:
//!
//! | metric | meaning |
//! |---|---|
//! | `mailstream_scorer_rules_reloads_total{outcome="ok"\|"invalid"}` | changes of the rules file picked up, or refused |
//! | `mailstream_scorer_rules_valid` | 1 while the rules file on disk is in force, 0 after it was refused (the previous rules are in force) |
//! | `mailstream_scorer_records_total{status}` | emails scored, by status (`qualified`, `review`, `nurture`, `excluded`) |
//! | `mailstream_scorer_routed_total{intent,team}` | scored emails by intent and team (`none`: no routing, or no route and no default team); labels are the rules file's own names |
//! | `mailstream_scorer_leads_by_source_total{source,status}` | scored (not excluded) emails by the address of ours they came in through (`ResolvedEmail::source_alias`: `demo@...`, a campaign's `demo+spring@...`; `none` without one) and status: capture and qualification conversion per source alias. The first 100 addresses a process meets get their own series, later ones count as `other`, so mail to made-up addresses cannot grow the series without bound |
//!
//! No event carries email content: never an address, a subject or a body (logs are PII-free).
//! Problems in a rules file are about the file, which operators write.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};

use mailstream_runtime::RuntimeError;
use mailstream_runtime::metrics::register;
use mailstream_runtime::records::Routing;
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

use crate::rules::RuleSet;
use crate::score::Status;

/// The scorer's own metrics.
#[derive(Clone, Debug)]
pub struct ScorerMetrics {
    reloads: IntCounterVec,
    valid: IntGauge,
    records: IntCounterVec,
    routed: IntCounterVec,
    erased: IntCounter,
    sources: IntCounterVec,
    /// The source aliases with a series of their own (at most [`MAX_SOURCES`]).
    named_sources: Arc<Mutex<BTreeSet<String>>>,
}

/// Source aliases with a series of their own, per process.
pub const MAX_SOURCES: usize = 100;

impl ScorerMetrics {
    /// Creates the metrics and registers them on `registry`.
    pub fn register(registry: &Registry) -> Result<Self, RuntimeError> {
        let reloads = register(
            registry,
            IntCounterVec::new(
                Opts::new(
                    "scorer_rules_reloads_total",
                    "Changes of the rules file, by outcome: ok (now in force) or invalid (refused; the previous rules stay).",
                ),
                &["outcome"],
            ),
        )?;
        let valid = register(
            registry,
            IntGauge::new(
                "scorer_rules_valid",
                "1 while the rules in force are the rules file's content; 0 after the file was refused.",
            ),
        )?;
        let records = register(
            registry,
            IntCounterVec::new(
                Opts::new("scorer_records_total", "Emails scored, by status."),
                &["status"],
            ),
        )?;
        let routed = register(
            registry,
            IntCounterVec::new(
                Opts::new(
                    "scorer_routed_total",
                    "Scored (not excluded) emails by intent and team; team none: no routing or no route matched and no default team.",
                ),
                &["intent", "team"],
            ),
        )?;
        let erased = register(
            registry,
            IntCounter::new(
                "scorer_erased_total",
                "Emails not scored because a participant was erased (mailstream erase) after they were received: a replay of an erased person's mail.",
            ),
        )?;
        let sources = register(
            registry,
            IntCounterVec::new(
                Opts::new(
                    "scorer_leads_by_source_total",
                    "Scored (not excluded) emails by the address of ours they came in through (none: none; other: past the first 100 addresses) and status.",
                ),
                &["source", "status"],
            ),
        )?;
        // Every series exists from the start, so dashboards and alerts see zeros, not gaps.
        for outcome in ["ok", "invalid"] {
            reloads.with_label_values(&[outcome]);
        }
        for status in [
            Status::Qualified,
            Status::Review,
            Status::Nurture,
            Status::Excluded,
        ] {
            records.with_label_values(&[status.as_str()]);
        }
        for status in [Status::Qualified, Status::Review, Status::Nurture] {
            sources.with_label_values(&["none", status.as_str()]);
        }
        Ok(Self {
            reloads,
            valid,
            records,
            routed,
            erased,
            sources,
            named_sources: Arc::default(),
        })
    }

    /// The `source` label of `alias`: itself while fewer than [`MAX_SOURCES`] have a series.
    fn source_label<'a>(&self, alias: Option<&'a str>) -> &'a str {
        let Some(alias) = alias else {
            return "none";
        };
        let Ok(mut named) = self.named_sources.lock() else {
            return "other";
        };
        if named.contains(alias) || (named.len() < MAX_SOURCES && named.insert(alias.to_string())) {
            alias
        } else {
            "other"
        }
    }

    pub fn reloads(&self, outcome: &str) -> u64 {
        self.reloads.with_label_values(&[outcome]).get()
    }

    pub fn valid(&self) -> i64 {
        self.valid.get()
    }
}

/// The rules in force at start: from `file`, or the built-in defaults.
/// An email of an erased person was dropped (no `scored` record, no `leads` row).
pub fn erased_dropped(m: &ScorerMetrics, message_id: &str) {
    m.erased.inc();
    tracing::debug!(message_id, "email of an erased person dropped");
}

pub fn rules_loaded(m: &ScorerMetrics, file: Option<&Path>, rules: &RuleSet) {
    m.valid.set(1);
    let source = file.map_or_else(
        || "built-in defaults".to_string(),
        |f| f.display().to_string(),
    );
    tracing::info!(
        rules = %source,
        version = %rules.version,
        count = rules.rules.len(),
        qualified_at = rules.qualified_at,
        nurture_below = rules.nurture_below,
        "scoring rules loaded"
    );
}

/// A changed rules file was valid and is now in force.
pub fn rules_reloaded(m: &ScorerMetrics, file: &Path, previous: &str, rules: &RuleSet) {
    m.reloads.with_label_values(&["ok"]).inc();
    m.valid.set(1);
    tracing::info!(
        file = %file.display(),
        previous_version = %previous,
        version = %rules.version,
        count = rules.rules.len(),
        "scoring rules reloaded"
    );
}

/// A changed rules file was refused; the rules in force stay.
pub fn rules_refused(m: &ScorerMetrics, file: &Path, in_force: &str, problems: &[String]) {
    m.reloads.with_label_values(&["invalid"]).inc();
    m.valid.set(0);
    tracing::warn!(
        file = %file.display(),
        version_in_force = %in_force,
        problems = %problems.join("; "),
        "rules file refused; the previous rules stay in force"
    );
}

/// One email was scored (debug only: there is one per record); `routing` is its intent and
/// team (none for an excluded email).
pub fn record_scored(
    m: &ScorerMetrics,
    status: &str,
    score: i32,
    rules_version: &str,
    routing: Option<&Routing>,
    source: Option<&str>,
) {
    m.records.with_label_values(&[status]).inc();
    if status != Status::Excluded.as_str() {
        let source = m.source_label(source);
        m.sources.with_label_values(&[source, status]).inc();
    }
    if let Some(routing) = routing {
        let team = routing.team.as_deref().unwrap_or("none");
        m.routed.with_label_values(&[&routing.intent, team]).inc();
    }
    tracing::debug!(status, score, rules_version, "email scored");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leads_count_by_source_alias_up_to_a_bound_then_as_other() {
        let m = ScorerMetrics::register(&Registry::new()).expect("registered");
        let count =
            |source: &str, status: &str| m.sources.with_label_values(&[source, status]).get();
        record_scored(&m, "qualified", 50, "v", None, Some("demo@in.example.com"));
        record_scored(&m, "review", 20, "v", None, Some("demo@in.example.com"));
        record_scored(&m, "excluded", 0, "v", None, Some("demo@in.example.com"));
        record_scored(&m, "nurture", 5, "v", None, None);
        assert_eq!(count("demo@in.example.com", "qualified"), 1);
        assert_eq!(count("demo@in.example.com", "review"), 1);
        assert_eq!(count("demo@in.example.com", "excluded"), 0, "not a lead");
        assert_eq!(count("none", "nurture"), 1);
        for n in 1..=MAX_SOURCES {
            let alias = format!("made-up-{n}@in.example.com");
            record_scored(&m, "review", 20, "v", None, Some(&alias));
        }
        assert_eq!(count("other", "review"), 1, "the 101st address and later");
        assert_eq!(
            count(
                &format!("made-up-{}@in.example.com", MAX_SOURCES - 1),
                "review"
            ),
            1
        );
    }
}
