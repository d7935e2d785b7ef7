//! What a chaos run found, the checks that make it pass or fail, and its printout.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use super::faults::STATEFUL;
use super::{ChaosOptions, Sent};
use crate::pipeline::STREAM_PROCESSORS;

#[derive(Debug, Default)]
pub struct ChaosReport {
    pub options: Option<ChaosOptions>,
    pub sent: Sent,
    pub push_secs: f64,
    pub settle_secs: f64,
    pub kills: BTreeMap<String, u32>,
    pub unexpected_exits: BTreeMap<String, Vec<String>>,
    pub exits_in_outage: BTreeMap<String, u32>,
    pub max_consecutive_exits: BTreeMap<String, u32>,
    pub broker_restart_secs: Option<f64>,
    pub registry_restart_secs: Option<f64>,
    pub faults: BTreeMap<&'static str, u64>,
    pub bursts: Vec<String>,
    pub activities: usize,
    pub missing: Vec<String>,
    /// Of `missing`, those `raw-email` holds (lost after ingest wrote them; the others were
    /// acknowledged to the sender and never written, or were over ingest's inline limit: a
    /// claim check holds only the blob's URI).
    pub missing_in_raw_email: Vec<String>,
    pub unexpected_activities: Vec<String>,
    pub duplicated: Vec<String>,
    pub applied_twice: Vec<String>,
    pub dlq: BTreeMap<String, usize>,
    pub dlq_classes: BTreeMap<String, usize>,
    pub dlq_without_reason: usize,
    pub rejected_dead_lettered: BTreeSet<String>,
    pub not_an_email_dead_lettered: usize,
    pub replay_requests: u64,
    pub replay_changed: Vec<String>,
    pub replay_secs: f64,
    /// Scale steps taken, with when.
    pub scale_steps: Vec<String>,
    /// Instances frozen (SIGSTOP) and continued.
    pub zombies: Vec<String>,
    /// Message ids with more than one first `resolved` record or more than one relinked one,
    /// and without a first one.
    pub resolved_twice: Vec<String>,
    /// Replies linked once their parent arrived (a second, `thread_relinked` record).
    pub relinked: usize,
    pub resolved_missing: Vec<String>,
    /// CRM activities whose thread, parent or deal is not what the resolver's last record of
    /// their email says.
    pub links_wrong: Vec<String>,
    /// Replies whose parent was sent as an email but whose last `resolved` record does not
    /// link them to it.
    pub replies_unlinked: Vec<String>,
    /// The long outages of the registry and the brokers (`registry_outage`, `kafka_outage`).
    pub outages: Vec<Outage>,
}

/// Exits of one instance during one long outage that make a crash loop.
pub const CRASH_LOOP_EXITS: u32 = 3;

/// A long outage of a dependency, and how the processors lived through it.
#[derive(Debug, Clone, Default)]
pub struct Outage {
    /// `registry` or `kafka`.
    pub component: String,
    /// How it was taken down and brought back.
    pub how: String,
    /// When it began, from the start of the push.
    pub at_secs: f64,
    /// How long it was asked to last (between the stop and the start).
    pub asked_secs: f64,
    /// The stop, and the start until it served again.
    pub stop_secs: Option<f64>,
    pub start_secs: Option<f64>,
    /// Per stream processor: how long after the dependency served again one of its instances
    /// committed a transaction (`None`: not seen before the pipeline settled).
    pub progress_after: BTreeMap<String, Option<f64>>,
    /// Per processor: exits nobody asked for from the outage's start until
    /// [`crate::pipeline::OUTAGE_GRACE`] after it ended, and the most of one instance.
    pub exits: BTreeMap<String, u32>,
    pub most_exits_of_one: BTreeMap<String, u32>,
    /// What the first few of those exits said (`processor-instance: ...`).
    pub exit_words: Vec<String>,
}

impl Outage {
    /// From the stop to serving again.
    pub fn down_secs(&self) -> Option<f64> {
        Some(self.stop_secs? + self.asked_secs + self.start_secs?)
    }

    /// The longest any stream processor took to commit again, if every one did.
    pub fn recovered_secs(&self) -> Option<f64> {
        self.progress_after
            .values()
            .try_fold(0.0f64, |most, t| t.map(|t| most.max(t)))
    }
}

impl fmt::Display for Outage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}) at {:.1} s for {:.0} s",
            self.component, self.how, self.at_secs, self.asked_secs
        )?;
        match self.down_secs() {
            Some(down) => write!(
                f,
                ": down {down:.1} s (stop {:.1} s, start {:.1} s)",
                self.stop_secs.unwrap_or_default(),
                self.start_secs.unwrap_or_default()
            )?,
            None => write!(f, ": did not come back")?,
        }
        let progress: Vec<String> = self
            .progress_after
            .iter()
            .map(|(name, t)| match t {
                Some(t) => format!("{name} {t:.0} s"),
                None => format!("{name} not seen"),
            })
            .collect();
        match self.recovered_secs() {
            Some(t) => write!(
                f,
                "; every stream processor committed again within {t:.0} s"
            )?,
            None => write!(f, "; committed again after")?,
        }
        write!(f, " ({})", progress.join(", "))?;
        let exits: u32 = self.exits.values().sum();
        write!(
            f,
            "; {exits} exits during it {:?}, most of one instance {:?}",
            self.exits, self.most_exits_of_one
        )
    }
}

impl ChaosReport {
    /// Every broken promise, one line each (empty: the suite passed).
    pub fn failures(&self) -> Vec<String> {
        let mut f = Vec::new();
        let s = &self.sent;
        let o = self.options.clone().unwrap_or_else(ChaosOptions::small);
        if !s.refused_for_good.is_empty() {
            f.push(format!(
                "ingest refused {} deliveries for good: {:?}",
                s.refused_for_good.len(),
                s.refused_for_good.first()
            ));
        }
        if self.activities != s.unique.len()
            || !self.missing.is_empty()
            || !self.unexpected_activities.is_empty()
        {
            f.push(format!(
                "CRM activities {} != unique messages sent {} (missing {}: {:?}, of them in \
                 raw-email {}; unexpected {}: {:?})",
                self.activities,
                s.unique.len(),
                self.missing.len(),
                self.missing.first(),
                self.missing_in_raw_email.len(),
                self.unexpected_activities.len(),
                self.unexpected_activities.first()
            ));
        }
        if !self.duplicated.is_empty() || !self.applied_twice.is_empty() {
            f.push(format!(
                "duplicates in the CRM: activities {:?}, writes {:?}",
                self.duplicated.first(),
                self.applied_twice.first()
            ));
        }
        if (o.not_an_email_every > 0 && s.not_an_email.is_empty())
            || (o.rejected_every > 0 && s.rejected.is_empty())
        {
            f.push(
                "no poison of some kind was sent: make the run longer or poison more often".into(),
            );
        }
        let dlq_total: usize = self.dlq.values().sum();
        let poison = s.rejected.len() + s.not_an_email.len();
        if dlq_total < poison || dlq_total > poison + s.ambiguous_not_an_email {
            f.push(format!("DLQ records {dlq_total} != poison sent {poison} (+ up to {} re-sent after an ingest kill): {:?}", s.ambiguous_not_an_email, self.dlq));
        }
        if self.rejected_dead_lettered != s.rejected {
            f.push(format!(
                "scored.dlq holds {} of the {} rejected messages",
                self.rejected_dead_lettered.len(),
                s.rejected.len()
            ));
        }
        if self.not_an_email_dead_lettered != s.not_an_email.len() {
            f.push(format!(
                "raw-email.dlq holds {} of the {} not-an-email poison",
                self.not_an_email_dead_lettered,
                s.not_an_email.len()
            ));
        }
        if self.dlq_without_reason > 0 {
            f.push(format!(
                "{} dead letters without a class and reason",
                self.dlq_without_reason
            ));
        }
        for (name, kills) in &self.kills {
            if *kills < o.kills_per_processor {
                f.push(format!(
                    "{name} was killed {kills} times, fewer than {}",
                    o.kills_per_processor
                ));
            }
        }
        for (name, n) in &self.max_consecutive_exits {
            if *n >= 3 {
                f.push(format!(
                    "{name} crash-looped ({n} exits in a row): {:?}",
                    self.unexpected_exits.get(name)
                ));
            }
        }
        if o.restart_broker && self.broker_restart_secs.is_none() {
            f.push("the broker was not restarted".into());
        }
        if o.restart_registry && self.registry_restart_secs.is_none() {
            f.push("the registry was not restarted".into());
        }
        for (component, asked) in [("registry", o.registry_outage), ("kafka", o.kafka_outage)] {
            let done = self
                .outages
                .iter()
                .any(|x| x.component == component && x.down_secs().is_some());
            if !asked.is_zero() && !done {
                f.push(format!("the {component} outage did not take place"));
            }
        }
        for x in &self.outages {
            for (name, n) in &x.most_exits_of_one {
                if *n >= CRASH_LOOP_EXITS {
                    let words: Vec<&String> = x
                        .exit_words
                        .iter()
                        .filter(|w| w.starts_with(&format!("{name}-")))
                        .collect();
                    f.push(format!(
                        "{name} crash-looped during the {} outage ({n} exits of one instance): {words:?}",
                        x.component
                    ));
                }
            }
        }
        for kind in ["429", "503"] {
            if o.bursts > 0 && self.faults.get(kind).copied().unwrap_or(0) == 0 {
                f.push(format!(
                    "no {kind} was answered (the bursts found no traffic)"
                ));
            }
        }
        if !self.replay_changed.is_empty() {
            f.push(format!(
                "the replay changed CRM rows: {:?}",
                self.replay_changed
            ));
        }
        if !self.resolved_twice.is_empty() || !self.resolved_missing.is_empty() {
            f.push(format!(
                "resolved records: {} message ids twice (e.g. {:?}), {} without one (e.g. {:?})",
                self.resolved_twice.len(),
                self.resolved_twice.first(),
                self.resolved_missing.len(),
                self.resolved_missing.first()
            ));
        }
        if !self.links_wrong.is_empty() {
            f.push(format!(
                "{} CRM activities not linked as resolved (e.g. {:?})",
                self.links_wrong.len(),
                self.links_wrong.first()
            ));
        }
        if !self.replies_unlinked.is_empty() {
            f.push(format!(
                "{} replies not linked to their parent (e.g. {:?})",
                self.replies_unlinked.len(),
                self.replies_unlinked.first()
            ));
        }
        let steps_planned = 2 * (o.instances.max(1) - 1) * STREAM_PROCESSORS.len();
        if self.scale_steps.len() != steps_planned {
            f.push(format!(
                "{} scale steps taken of {steps_planned} planned",
                self.scale_steps.len()
            ));
        }
        if !o.zombie.is_zero() && self.zombies.len() != STATEFUL.len() {
            f.push(format!(
                "{} zombies of {} planned",
                self.zombies.len(),
                STATEFUL.len()
            ));
        }
        f
    }
}

impl fmt::Display for ChaosReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.sent;
        writeln!(f, "chaos report")?;
        writeln!(
            f,
            "  pushed          {} deliveries in {:.0} s: {} unique, {} duplicates, {} rejected by the CRM (poison), {} not an email (poison)",
            s.deliveries,
            self.push_secs,
            s.unique.len(),
            s.duplicates,
            s.rejected.len(),
            s.not_an_email.len()
        )?;
        writeln!(
            f,
            "  re-sent         {} after a connection lost past the final dot ({} of them poison)",
            s.ambiguous, s.ambiguous_not_an_email
        )?;
        writeln!(
            f,
            "  kill -9         {:?} (total {})",
            self.kills,
            self.kills.values().sum::<u32>()
        )?;
        writeln!(
            f,
            "  broker restart  {}",
            self.broker_restart_secs
                .map_or("no".into(), |t| format!("once, back after {t:.1} s"))
        )?;
        writeln!(
            f,
            "  registry restart {}",
            self.registry_restart_secs
                .map_or("no".into(), |t| format!("once, back after {t:.1} s"))
        )?;
        for x in &self.outages {
            writeln!(f, "  outage          {x}")?;
            for w in x.exit_words.iter().take(6) {
                writeln!(f, "    {w}")?;
            }
        }
        if !self.scale_steps.is_empty() {
            writeln!(f, "  scale steps     {}", self.scale_steps.join("; "))?;
        }
        if !self.zombies.is_empty() {
            writeln!(f, "  zombies         {}", self.zombies.join("; "))?;
        }
        writeln!(
            f,
            "  CRM faults      {:?}; bursts: {}",
            self.faults,
            self.bursts.join("; ")
        )?;
        writeln!(
            f,
            "  settled         {:.0} s after the push",
            self.settle_secs
        )?;
        writeln!(
            f,
            "  CRM activities  {} (unique messages sent {}), missing {}, unexpected {}, twice {}, writes applied twice {}",
            self.activities,
            s.unique.len(),
            self.missing.len(),
            self.unexpected_activities.len(),
            self.duplicated.len(),
            self.applied_twice.len()
        )?;
        writeln!(
            f,
            "  DLQ records     {} (poison sent {}): {:?}; every record has a class and reason: {}",
            self.dlq.values().sum::<usize>(),
            s.rejected.len() + s.not_an_email.len(),
            self.dlq_classes,
            self.dlq_without_reason == 0
        )?;
        writeln!(
            f,
            "  resolved        {} message ids twice, {} without a record; {} replies relinked after their parent, {} never linked to it; {} CRM activities linked otherwise",
            self.resolved_twice.len(),
            self.resolved_missing.len(),
            self.relinked,
            self.replies_unlinked.len(),
            self.links_wrong.len()
        )?;
        let exits: usize = self.unexpected_exits.values().map(Vec::len).sum();
        let in_outage: u32 = self.exits_in_outage.values().sum();
        writeln!(
            f,
            "  unexpected exits {exits} ({in_outage} while the broker or registry was restarting or down: {:?}); most in a row otherwise {:?}",
            self.exits_in_outage, self.max_consecutive_exits
        )?;
        for (name, list) in &self.unexpected_exits {
            for e in list.iter().take(3) {
                writeln!(f, "    {name}: {e}")?;
            }
        }
        writeln!(
            f,
            "  replay          {:.0} s, {} CRM calls, rows changed: {}",
            self.replay_secs,
            self.replay_requests,
            if self.replay_changed.is_empty() {
                "none".into()
            } else {
                self.replay_changed.join(", ")
            }
        )?;
        let failures = self.failures();
        if failures.is_empty() {
            writeln!(f, "  RESULT          every check passed")
        } else {
            writeln!(f, "  RESULT          {} checks FAILED:", failures.len())?;
            for x in failures {
                writeln!(f, "    - {x}")?;
            }
            Ok(())
        }
    }
}
