//! The chaos suite: the whole topology on the local stack (ingest over SMTP, parser, resolver,
//! scorer, crm-sink to a fault-injecting REST CRM) takes a mixed corpus with duplicates and a
//! known number of poison messages while, at random moments, every processor is `kill -9`ed
//! (and started again at once, as a supervisor would), the broker is restarted once, the schema
//! registry once, and the CRM answers bursts of 429 (`Retry-After`) and of 503.
//!
//! Then it checks what a user trusts: one CRM activity per unique message sent (none lost, none
//! twice), dead letters == poison sent, each with its reason, no processor crash-looped (three
//! exits in a row without becoming ready, while the broker and registry were up; exits during
//! their restarts are reported apart), and a replay of every processor from the earliest offset
//! changes no CRM row. [`run`] returns a
//! [`ChaosReport`]; `tests/chaos.rs` (CI, small) and `bench-chaos` (full) assert its
//! [`ChaosReport::failures`].
//!
//! Ingest is at-least-once by protocol: when it dies after writing an email but before its
//! `250`, the client (like any MTA) sends it again. Emails are collapsed on their Message-ID by
//! the resolver; a not-an-email poison sent again that way is dead-lettered twice, so those
//! ambiguous re-sends are counted and allowed for (each poison is still found exactly once).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::Mutex;

use crate::corpus::{Class, CorpusOptions, Generator, Templates, load_tables};
use crate::crm::{Burst, FakeCrm, Rows};
use crate::pipeline::{
    PROCESSORS, Pipeline, PipelineOptions, STREAM_PROCESSORS, Sink, input_of, metric_sum,
};
use crate::smtp::{SmtpClient, SmtpError};
use crate::{TestEnv, collect};

const TOKEN: &str = "chaos-token-0123456789";

#[derive(Debug, Clone)]
pub struct ChaosOptions {
    /// Deliveries pushed through ingest (duplicates and poison included).
    pub emails: usize,
    /// Offered deliveries per second.
    pub rate: f64,
    pub sessions: usize,
    pub kills_per_processor: u32,
    pub restart_broker: bool,
    pub restart_registry: bool,
    /// Bursts of each kind (429, 503).
    pub bursts: u32,
    pub not_an_email_every: u64,
    pub rejected_every: u64,
    pub max_attachment: usize,
    pub seed: u64,
    /// How long the pipeline may take to settle after the push (and after the replay).
    pub settle_timeout: Duration,
}

impl ChaosOptions {
    /// The CI size: a few thousand emails, a few kills.
    pub fn small() -> Self {
        Self {
            emails: 1_500,
            rate: 100.0,
            sessions: 8,
            kills_per_processor: 2,
            restart_broker: true,
            restart_registry: true,
            bursts: 2,
            not_an_email_every: 60,
            rejected_every: 45,
            max_attachment: 200_000,
            seed: 7,
            settle_timeout: Duration::from_secs(300),
        }
    }
}

/// What was sent, per class, and re-sent after a lost connection.
#[derive(Debug, Default, Clone)]
pub struct Sent {
    pub deliveries: usize,
    pub unique: BTreeSet<String>,
    pub rejected: BTreeSet<String>,
    pub not_an_email: BTreeSet<String>,
    pub duplicates: usize,
    /// Re-sent after the connection died once the whole message was out (maybe accepted).
    pub ambiguous: usize,
    pub ambiguous_not_an_email: usize,
    pub refused_for_good: Vec<String>,
}

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
}

#[derive(Debug, Clone)]
enum Event {
    Kill(&'static str),
    RestartBroker,
    RestartRegistry,
    Burst(Burst, Duration),
}

fn schedule(o: &ChaosOptions, rng: &mut StdRng) -> Vec<(Duration, Event)> {
    let planned = o.emails as f64 / o.rate.max(1.0);
    let at = |rng: &mut StdRng, lo: f64, hi: f64| {
        Duration::from_secs_f64(planned * rng.random_range(lo..hi))
    };
    let mut events = Vec::new();
    for name in PROCESSORS {
        for _ in 0..o.kills_per_processor {
            events.push((at(rng, 0.02, 1.0), Event::Kill(name)));
        }
    }
    if o.restart_broker {
        events.push((at(rng, 0.2, 0.45), Event::RestartBroker));
    }
    if o.restart_registry {
        events.push((at(rng, 0.5, 0.8), Event::RestartRegistry));
    }
    for _ in 0..o.bursts {
        let length = Duration::from_millis(rng.random_range(1_000..3_000));
        let burst = Burst::TooMany {
            retry_after_secs: 1,
        };
        events.push((at(rng, 0.0, 1.0), Event::Burst(burst, length)));
        let length = Duration::from_millis(rng.random_range(500..1_500));
        events.push((at(rng, 0.0, 1.0), Event::Burst(Burst::Unavailable, length)));
    }
    events.sort_by_key(|(t, _)| *t);
    events
}

/// Stops `component` of the local stack and starts it again (`dev/down NAME`, `dev/up`).
fn restart_component(component: &str) -> Result<f64, String> {
    let dev = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dev");
    let started = Instant::now();
    for (script, args) in [("down", vec![component]), ("up", vec![])] {
        let out = std::process::Command::new(dev.join(script))
            .args(&args)
            .output()
            .map_err(|e| format!("dev/{script}: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "dev/{script} {component}: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    Ok(started.elapsed().as_secs_f64())
}

/// One sending task: deliveries `w`, `w + sessions`, ... at the offered rate, each retried until
/// ingest answers 250 (a 5xx is recorded and not retried).
async fn sender(
    templates: Arc<Templates>,
    o: ChaosOptions,
    run: String,
    w: usize,
    smtp: String,
    t0: Instant,
) -> Sent {
    let mut generator = Generator::new(templates, &run, w);
    generator.not_an_email_every = o.not_an_email_every;
    generator.rejected_every = o.rejected_every;
    let mut sent = Sent::default();
    let mut client: Option<SmtpClient> = None;
    let mut i = w;
    while i < o.emails {
        let due = t0 + Duration::from_secs_f64(i as f64 / o.rate.max(1.0));
        tokio::time::sleep_until(due.into()).await;
        let email = generator.next_email();
        loop {
            if client.is_none() {
                match SmtpClient::connect(&smtp, "chaos.client.test").await {
                    Ok(c) => client = Some(c),
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                }
            }
            let Some(c) = client.as_mut() else { continue };
            match c.send(&email.from, &[&email.rcpt], &email.data).await {
                Ok(()) => break,
                Err(SmtpError::Lost { after_dot, .. }) => {
                    client = None;
                    if after_dot {
                        sent.ambiguous += 1;
                        if email.class == Class::NotAnEmail {
                            sent.ambiguous_not_an_email += 1;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(SmtpError::Refused { code, .. }) if code < 500 => {
                    client = None;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => {
                    sent.refused_for_good
                        .push(format!("{}: {e}", email.message_id));
                    break;
                }
            }
        }
        sent.deliveries += 1;
        match email.class {
            Class::Unique => {
                sent.unique.insert(email.message_id);
            }
            Class::Duplicate => sent.duplicates += 1,
            Class::Rejected => {
                sent.rejected.insert(email.message_id);
            }
            Class::NotAnEmail => {
                sent.not_an_email.insert(email.message_id);
            }
        }
        i += o.sessions;
    }
    if let Some(c) = client {
        c.quit().await;
    }
    sent
}

fn merge(into: &mut Sent, s: Sent) {
    into.deliveries += s.deliveries;
    into.unique.extend(s.unique);
    into.rejected.extend(s.rejected);
    into.not_an_email.extend(s.not_an_email);
    into.duplicates += s.duplicates;
    into.ambiguous += s.ambiguous;
    into.ambiguous_not_an_email += s.ambiguous_not_an_email;
    into.refused_for_good.extend(s.refused_for_good);
}

/// Waits until every stream processor's input counter has not moved for `quiet` and the
/// CRM's rows stopped changing; returns false on timeout.
async fn settle(
    pipeline: &Arc<Mutex<Pipeline>>,
    crm: &FakeCrm,
    quiet: Duration,
    timeout: Duration,
) -> bool {
    let started = Instant::now();
    let mut last = (Vec::new(), Rows::default());
    let mut since = Instant::now();
    while started.elapsed() < timeout {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut p = pipeline.lock().await;
        p.supervise().await;
        let mut counts = Vec::new();
        for name in STREAM_PROCESSORS {
            let text = p.scrape(name).await;
            counts.push(metric_sum(&text, "mailstream_records_in_total"));
        }
        drop(p);
        let now = (counts, crm.rows());
        if now != last {
            last = now;
            since = Instant::now();
        } else if since.elapsed() >= quiet {
            return true;
        }
    }
    false
}

/// Runs the suite and reports; the caller asserts [`ChaosReport::failures`].
pub async fn run(o: ChaosOptions) -> anyhow::Result<ChaosReport> {
    let mut report = ChaosReport {
        options: Some(o.clone()),
        ..ChaosReport::default()
    };
    let env = TestEnv::new("chaos");
    let run_tag = env.prefix[8..16].to_string();
    load_tables(&env).map_err(anyhow::Error::msg)?;
    let templates = Templates::generate(CorpusOptions {
        seed: o.seed,
        templates: 500,
        max_attachment: o.max_attachment,
        duplicate_rate: 0.03,
    });
    let crm = FakeCrm::start(TOKEN).await?;
    // Retries outlast the longest burst (full jitter over 12 attempts: ~4.5 s on average, a
    // 3 s burst of 429 costs 3 of them), and the worst case fits the transaction.
    let sink_settings = [
        ("MAILSTREAM_CRM_SINK_WRITE_EXCLUDED", "true"),
        ("MAILSTREAM_CRM_SINK_RATE_LIMIT_PER_SEC", "0"),
        ("MAILSTREAM_CRM_SINK_MAX_ATTEMPTS", "12"),
        ("MAILSTREAM_CRM_SINK_BACKOFF_BASE_MS", "200"),
        ("MAILSTREAM_CRM_SINK_BACKOFF_MAX_MS", "1000"),
        ("MAILSTREAM_CRM_SINK_RETRY_AFTER_MAX_MS", "2000"),
        ("MAILSTREAM_CRM_SINK_REQUEST_TIMEOUT_MS", "1000"),
        ("MAILSTREAM_TRANSACTION_TIMEOUT_MS", "60000"),
    ];
    let options = PipelineOptions {
        sink: Sink::Rest {
            base_url: crm.base_url.clone(),
            token: TOKEN.into(),
            settings: sink_settings
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        },
        log_level: "warn".into(),
        common: vec![],
    };
    let mut started = Pipeline::start(&env, &options);
    started
        .wait_ready(Duration::from_secs(120))
        .await
        .map_err(anyhow::Error::msg)?;
    let smtp = started.smtp_addr.clone();
    let pipeline = Arc::new(Mutex::new(started));

    // The push, and the chaos beside it.
    let mut rng = StdRng::seed_from_u64(o.seed);
    let events = schedule(&o, &mut rng);
    let t0 = Instant::now();
    let senders: Vec<_> = (0..o.sessions)
        .map(|w| {
            tokio::spawn(sender(
                templates.clone(),
                o.clone(),
                run_tag.clone(),
                w,
                smtp.clone(),
                t0,
            ))
        })
        .collect();
    let infra_busy = Arc::new(AtomicBool::new(false));
    let mut infra: Vec<tokio::task::JoinHandle<(String, Result<f64, String>)>> = Vec::new();
    let mut pending = events;
    while !pending.is_empty() {
        {
            let mut p = pipeline.lock().await;
            p.set_outage(infra_busy.load(Ordering::SeqCst));
            p.supervise().await;
        }
        // The first event that is due; a restart waits while another restart is under way
        // (without holding up the events behind it).
        let busy = infra_busy.load(Ordering::SeqCst);
        let due = pending.iter().position(|(at, e)| {
            t0.elapsed() >= *at
                && !(busy && matches!(e, Event::RestartBroker | Event::RestartRegistry))
        });
        let Some(i) = due else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let (_, event) = pending.remove(i);
        let when = t0.elapsed().as_secs_f64();
        match event {
            Event::Kill(name) => pipeline.lock().await.kill9(name),
            Event::Burst(burst, length) => {
                crm.burst(burst, length);
                report
                    .bursts
                    .push(format!("{burst:?} for {length:?} at {when:.1} s"));
            }
            Event::RestartBroker | Event::RestartRegistry => {
                let component = if matches!(event, Event::RestartBroker) {
                    "kafka"
                } else {
                    "registry"
                };
                eprintln!("chaos: restarting {component} at {when:.1} s");
                infra_busy.store(true, Ordering::SeqCst);
                let busy = infra_busy.clone();
                infra.push(tokio::task::spawn_blocking(move || {
                    let result = restart_component(component);
                    busy.store(false, Ordering::SeqCst);
                    (component.to_string(), result)
                }));
            }
        }
    }
    // Keep supervising until the push and the restarts are over.
    while !senders.iter().all(|h| h.is_finished()) || !infra.iter().all(|h| h.is_finished()) {
        let mut p = pipeline.lock().await;
        p.set_outage(infra_busy.load(Ordering::SeqCst));
        p.supervise().await;
        drop(p);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for handle in infra {
        let (component, result) = handle.await?;
        let secs = result.map_err(anyhow::Error::msg)?;
        eprintln!("chaos: {component} was back after {secs:.1} s");
        if component == "kafka" {
            report.broker_restart_secs = Some(secs);
        } else {
            report.registry_restart_secs = Some(secs);
        }
    }
    for handle in senders {
        merge(&mut report.sent, handle.await?);
    }
    report.push_secs = t0.elapsed().as_secs_f64();
    eprintln!(
        "chaos: pushed {} deliveries in {:.1} s; settling",
        report.sent.deliveries, report.push_secs
    );

    // Settle, then count.
    let settle_started = Instant::now();
    let settled = settle(&pipeline, &crm, Duration::from_secs(15), o.settle_timeout).await;
    report.settle_secs = settle_started.elapsed().as_secs_f64();
    anyhow::ensure!(
        settled,
        "the pipeline did not settle within {:?}",
        o.settle_timeout
    );
    {
        let p = pipeline.lock().await;
        for proc in &p.procs {
            report.kills.insert(proc.name.into(), proc.kills);
            report
                .unexpected_exits
                .insert(proc.name.into(), proc.unexpected_exits.clone());
            report
                .max_consecutive_exits
                .insert(proc.name.into(), proc.max_consecutive);
            report
                .exits_in_outage
                .insert(proc.name.into(), proc.exits_in_outage);
        }
    }
    let rows = crm.rows();
    report.faults = crm.faults();
    report.activities = rows.activities.len();
    report.missing = report
        .sent
        .unique
        .iter()
        .filter(|m| !rows.activities.contains_key(*m))
        .cloned()
        .collect();
    report.unexpected_activities = rows
        .activities
        .keys()
        .filter(|m| !report.sent.unique.contains(*m))
        .cloned()
        .collect();
    report.duplicated = rows
        .activities
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(m, _)| m.clone())
        .collect();
    report.applied_twice = rows
        .applied
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(k, _)| k.clone())
        .collect();
    for name in STREAM_PROCESSORS {
        let topic = format!("{}.dlq", input_of(name));
        let want = match name {
            "parser" => report.sent.not_an_email.len(),
            "crm-sink" => report.sent.rejected.len(),
            _ => 0,
        };
        let wait = Duration::from_secs(if want == 0 { 5 } else { 30 });
        let letters = collect(
            &env.consumer(&[topic.as_str()]),
            want.max(1),
            wait,
            Duration::from_secs(3),
        )
        .await;
        for l in &letters {
            let class = l
                .headers
                .get("mailstream.error.class")
                .cloned()
                .unwrap_or_default();
            let reason = l
                .headers
                .get("mailstream.error.message")
                .cloned()
                .unwrap_or_default();
            if class.is_empty() || reason.trim().is_empty() {
                report.dlq_without_reason += 1;
            }
            *report
                .dlq_classes
                .entry(format!("{topic} {class}"))
                .or_default() += 1;
            if topic == "scored.dlq" {
                report.rejected_dead_lettered.extend(l.key.clone());
            }
        }
        if topic == "raw-email.dlq" {
            report.not_an_email_dead_lettered = report
                .sent
                .not_an_email
                .iter()
                .filter(|token| {
                    letters.iter().any(|l| {
                        l.payload
                            .as_deref()
                            .is_some_and(|p| p.windows(token.len()).any(|w| w == token.as_bytes()))
                    })
                })
                .count();
        }
        report.dlq.insert(topic, letters.len());
    }

    // Replay: every processor rewound to the earliest offset changes no CRM row.
    let replay_started = Instant::now();
    let before = crm.rows();
    let requests_before = crm.requests();
    {
        let mut p = pipeline.lock().await;
        for name in STREAM_PROCESSORS {
            p.stop_one(name);
        }
        for name in STREAM_PROCESSORS {
            env.reset_to_earliest(name);
        }
        for name in STREAM_PROCESSORS {
            p.start_one(name);
        }
        p.wait_ready(Duration::from_secs(120))
            .await
            .map_err(anyhow::Error::msg)?;
    }
    let settled = settle(&pipeline, &crm, Duration::from_secs(15), o.settle_timeout).await;
    anyhow::ensure!(
        settled,
        "the replay did not settle within {:?}",
        o.settle_timeout
    );
    report.replay_secs = replay_started.elapsed().as_secs_f64();
    report.replay_requests = crm.requests() - requests_before;
    let after = crm.rows();
    if after.applied != before.applied {
        report
            .replay_changed
            .push("writes applied during the replay".into());
    }
    if after.activities != before.activities {
        report.replay_changed.push("activities".into());
    }
    if after.contacts != before.contacts {
        report.replay_changed.push("contacts".into());
    }
    if after.deals != before.deals || after.attachments != before.attachments {
        report.replay_changed.push("deals or attachments".into());
    }
    pipeline.lock().await.stop();
    Ok(report)
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
                "CRM activities {} != unique messages sent {} (missing {}: {:?}; unexpected {}: {:?})",
                self.activities, s.unique.len(), self.missing.len(), self.missing.first(),
                self.unexpected_activities.len(), self.unexpected_activities.first()
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
        let exits: usize = self.unexpected_exits.values().map(Vec::len).sum();
        let in_outage: u32 = self.exits_in_outage.values().sum();
        writeln!(
            f,
            "  unexpected exits {exits} ({in_outage} while the broker or registry was restarting: {:?}); most in a row otherwise {:?}",
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
