//! The chaos suite: the whole topology on the local stack (ingest over SMTP, parser, resolver,
//! scorer, crm-sink to a fault-injecting REST CRM) takes a mixed corpus with duplicates and a
//! known number of poison messages while, at random moments, every processor is `kill -9`ed
//! (and started again at once, as a supervisor would), the broker is restarted once, the schema
//! registry once, and the CRM answers bursts of 429 (`Retry-After`) and of 503.
//!
//! Replicated and clustered (`instances`, `cluster`, `zombie`, `crm_outage`): every stream
//! processor is scaled out to several instances and back while the faults go on, a zombie of
//! each stateful processor is frozen and continued, the brokers are the three-node cluster (its
//! partition leader killed instead of the broker restart), and the CRM goes away for a long
//! outage ([`faults`]).
//!
//! Long outages of the dependencies (`registry_outage`, `kafka_outage`): the schema registry
//! stopped for as long as asked and started again; every broker stopped that long (the single
//! broker cleanly, the cluster's three nodes by `kill -9`) and started again. Each is reported
//! with how long every stream processor took to commit again afterwards, and with the exits
//! during it (until [`OUTAGE_GRACE`] after it), each with what the processor said: those are
//! kept apart from the crash-loop count of the rest of the run (as during the short restarts),
//! yet three exits of one instance during one outage are a crash loop and fail the run.
//!
//! Then it checks what a user trusts: one CRM activity per unique message sent (none lost, none
//! twice), one `resolved` record per message id, dead letters == poison sent, each with its
//! reason, no processor crash-looped (three exits in a row without becoming ready, while the
//! broker and registry were up; exits during their restarts are reported apart), and a replay of
//! every processor from the earliest offset changes no CRM row. [`run`] returns a
//! [`ChaosReport`]; `tests/chaos.rs` (CI, small) and `bench-chaos` (full) assert its
//! [`ChaosReport::failures`].
//!
//! Ingest is at-least-once by protocol: when it dies after writing an email but before its
//! `250`, the client (like any MTA) sends it again. Emails are collapsed on their Message-ID by
//! the resolver; a not-an-email poison sent again that way is dead-lettered twice, so those
//! ambiguous re-sends are counted and allowed for (each poison is still found exactly once).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::{Mutex, oneshot};

use crate::cluster::Cluster;
use crate::corpus::{CorpusOptions, Templates, load_tables};
use crate::crm::{Burst, Cut, FakeCrm, Link, Rows};
use crate::http_get;
use crate::pipeline::{
    OUTAGE_GRACE, Pipeline, PipelineOptions, STREAM_PROCESSORS, Sink, input_of, metric_if_served,
};
use crate::{Stack, TestEnv, collect, decode_as};
use mailstream_runtime::records::ResolvedEmail;

mod faults;
mod push;
mod report;

use faults::{Event, schedule};

pub use push::Sent;
pub use report::{ChaosReport, Outage};

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
    /// Each stream processor is scaled out to this many instances and back to one during the
    /// push (1: one instance throughout).
    pub instances: usize,
    /// On the three-broker cluster of `dev/up --cluster` (the broker restart becomes a
    /// `kill -9` of the leader of `parsed` partition 0 and its restart).
    pub cluster: bool,
    /// One instance of each stateful processor frozen this long (zero: none).
    pub zombie: Duration,
    /// The CRM refuses connections, then answers 503, then 429, a third of this each (zero:
    /// none).
    pub crm_outage: Duration,
    /// The schema registry stopped this long, then started again (zero: none).
    pub registry_outage: Duration,
    /// Every broker unavailable this long, then started again (zero: none): the single broker
    /// stopped cleanly, or the cluster's three nodes `kill -9`ed at once.
    pub kafka_outage: Duration,
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
            instances: 1,
            cluster: false,
            zombie: Duration::ZERO,
            crm_outage: Duration::ZERO,
            registry_outage: Duration::ZERO,
            kafka_outage: Duration::ZERO,
        }
    }

    /// The CI size of the replicated run: three instances of every stream processor at the
    /// peak, three brokers, a zombie per stateful processor (past the 10 s session timeout),
    /// a CRM outage of 30 s, the whole cluster down for 15 s and the registry for 20 s (it is
    /// the registry every other test uses too: they see the outage); no short registry
    /// restart besides.
    pub fn small_replicated() -> Self {
        Self {
            instances: 3,
            cluster: true,
            zombie: Duration::from_secs(15),
            crm_outage: Duration::from_secs(30),
            restart_registry: false,
            registry_outage: Duration::from_secs(20),
            kafka_outage: Duration::from_secs(15),
            ..Self::small()
        }
    }
}

/// Stops `component` of the local stack and starts it again (`dev/down NAME`, `dev/up`).
fn restart_component(component: &str) -> Result<f64, String> {
    let started = Instant::now();
    dev("down", &[component])?;
    dev("up", &[])?;
    Ok(started.elapsed().as_secs_f64())
}

/// Runs `dev/SCRIPT ARGS` (no output unless it fails).
fn dev(script: &str, args: &[&str]) -> Result<(), String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../dev")
        .join(script);
    let out = std::process::Command::new(path)
        .args(args)
        .output()
        .map_err(|e| format!("dev/{script}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "dev/{script} {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

/// How a long outage went: how long the stop took, and the start until the dependency served
/// again, when it did.
#[derive(Debug, Clone, Copy)]
struct OutageTimes {
    stop_secs: f64,
    start_secs: f64,
    back: Instant,
}

/// A long outage: `component` (`registry`, or `kafka` on the single-broker stack) stopped
/// (`dev/down NAME`), or every node of `cluster` `kill -9`ed; `length` later started again
/// (`dev/up`, `dev/up --cluster`), waiting until it serves.
fn long_outage(
    component: &str,
    cluster: Option<&Cluster>,
    length: Duration,
) -> Result<OutageTimes, String> {
    let began = Instant::now();
    match cluster {
        Some(cluster) => {
            let running = crate::cluster::NODES
                .iter()
                .all(|&id| cluster.node_pid(id).is_some());
            if !running {
                return Err("a cluster node was not running before the outage".into());
            }
            eprintln!("chaos: kill -9 of every cluster node");
            cluster.kill_all();
        }
        None => dev("down", &[component])?,
    }
    let stop_secs = began.elapsed().as_secs_f64();
    std::thread::sleep(length);
    let starting = Instant::now();
    match cluster {
        Some(cluster) => {
            cluster.up();
        }
        None => dev("up", &[])?,
    }
    Ok(OutageTimes {
        stop_secs,
        start_secs: starting.elapsed().as_secs_f64(),
        back: Instant::now(),
    })
}

/// Which of `ids` a `raw-email` record names (`<id>` in its raw bytes), read as it streams by
/// (the topic holds every delivery: keeping the payloads would hold gigabytes at full size),
/// until `records` were read or none came for 10 s.
async fn in_raw_email(env: &TestEnv, ids: &[String], records: usize) -> Vec<String> {
    use rdkafka::Message;
    let consumer = env.consumer(&["raw-email"]);
    let needles: Vec<(String, String)> = ids
        .iter()
        .map(|id| (format!("<{id}>"), id.clone()))
        .collect();
    let mut found = BTreeSet::new();
    for _ in 0..records {
        let Ok(Ok(record)) = tokio::time::timeout(Duration::from_secs(10), consumer.recv()).await
        else {
            break;
        };
        let payload = record.payload().unwrap_or_default();
        for (needle, id) in &needles {
            if payload
                .windows(needle.len())
                .any(|w| w == needle.as_bytes())
            {
                found.insert(id.clone());
            }
        }
    }
    found.into_iter().collect()
}

/// Committed transactions of every stream processor instance in service that answers now
/// (a frozen one is skipped, never waited for): `(name, index, starts) -> count`.
async fn committed(pipeline: &Arc<Mutex<Pipeline>>) -> BTreeMap<(&'static str, usize, u32), f64> {
    let targets: Vec<_> = {
        let p = pipeline.lock().await;
        STREAM_PROCESSORS
            .iter()
            .flat_map(|name| p.instances(name))
            .filter(|&i| !p.procs[i].frozen && p.procs[i].pid().is_some())
            .map(|i| {
                let proc = &p.procs[i];
                ((proc.name, i, proc.starts), proc.metrics_url())
            })
            .collect()
    };
    let mut out = BTreeMap::new();
    for (key, url) in targets {
        let Ok((200, text)) = tokio::time::timeout(Duration::from_secs(2), http_get(&url)).await
        else {
            continue;
        };
        let labels = [("outcome", "committed")];
        if let Some(n) = metric_if_served(&text, "mailstream_transactions_total", &labels) {
            out.insert(key, n);
        }
    }
    out
}

/// A long outage under way or over, and the task following it ([`watch_outage`]).
struct Watch {
    outage: Arc<std::sync::Mutex<Outage>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

/// Follows one long outage from its start: the exits of every instance until
/// [`OUTAGE_GRACE`] after it ended, and how long after the dependency served again each
/// stream processor committed a transaction; until `stop`.
async fn watch_outage(
    pipeline: Arc<Mutex<Pipeline>>,
    outage: Arc<std::sync::Mutex<Outage>>,
    back: oneshot::Receiver<OutageTimes>,
    stop: Arc<AtomicBool>,
) {
    let exits_before: Vec<usize> = {
        let p = pipeline.lock().await;
        p.procs.iter().map(|x| x.unexpected_exits.len()).collect()
    };
    // No word: the outage failed, and the run with it.
    let Ok(times) = back.await else { return };
    {
        let mut x = outage.lock().expect("outage");
        x.stop_secs = Some(times.stop_secs);
        x.start_secs = Some(times.start_secs);
        for name in STREAM_PROCESSORS {
            x.progress_after.insert(name.to_string(), None);
        }
    }
    let baseline = committed(&pipeline).await;
    let mut pending: BTreeSet<&str> = STREAM_PROCESSORS.into_iter().collect();
    let mut exits_counted = false;
    loop {
        let done = stop.load(Ordering::SeqCst);
        if !exits_counted && (done || times.back.elapsed() >= OUTAGE_GRACE) {
            let p = pipeline.lock().await;
            let mut x = outage.lock().expect("outage");
            for (i, proc) in p.procs.iter().enumerate() {
                let since = exits_before.get(i).copied().unwrap_or(0);
                let new = &proc.unexpected_exits[since.min(proc.unexpected_exits.len())..];
                let n = new.len() as u32;
                *x.exits.entry(proc.name.to_string()).or_default() += n;
                let most = x
                    .most_exits_of_one
                    .entry(proc.name.to_string())
                    .or_default();
                *most = (*most).max(n);
                let words = new
                    .iter()
                    .map(|w| format!("{}-{}: {w}", proc.name, proc.instance));
                x.exit_words.extend(words);
            }
            exits_counted = true;
        }
        if done || (exits_counted && pending.is_empty()) {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        if pending.is_empty() {
            continue;
        }
        let now = committed(&pipeline).await;
        let after = times.back.elapsed().as_secs_f64();
        for ((name, i, starts), n) in now {
            // An instance started since is measured from nothing.
            if pending.contains(name)
                && n > baseline.get(&(name, i, starts)).copied().unwrap_or(0.0)
            {
                pending.remove(name);
                let mut x = outage.lock().expect("outage");
                x.progress_after.insert(name.to_string(), Some(after));
            }
        }
    }
}

/// Waits until every stream processor's input counter has not moved for `quiet`, the CRM's
/// rows stopped changing and no CRM burst is under way or armed (a sink retrying through one
/// moves nothing, yet is not done); returns false on timeout.
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
            // An instance that is down (restarting) serves nothing: not settled yet.
            for text in p.scrape_all(name).await {
                counts.push(metric_if_served(&text, "mailstream_records_in_total", &[]));
            }
        }
        drop(p);
        let now = (counts, crm.rows());
        if now != last || crm.bursting() {
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
    let cluster = o.cluster.then(Cluster::get);
    let stack = cluster
        .as_ref()
        .map_or_else(Stack::get, |c| c.stack.clone());
    let env = TestEnv::new_on(stack, "chaos");
    let run_tag = env.prefix[8..16].to_string();
    load_tables(&env).map_err(anyhow::Error::msg)?;
    let templates = Templates::generate(CorpusOptions {
        seed: o.seed,
        templates: 500,
        max_attachment: o.max_attachment,
        duplicate_rate: 0.03,
    });
    let crm = FakeCrm::start(TOKEN).await?;
    // The sink reaches the CRM through a link the outage cuts.
    let crm_link = Cut::start(crm.base_url.trim_start_matches("http://").to_string()).await?;
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
            base_url: format!("http://{}", crm_link.addr),
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
            tokio::spawn(push::sender(
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
    // The frozen instance of each processor.
    let mut zombies: std::collections::BTreeMap<&str, usize> = Default::default();
    // The long outages, followed until the pipeline settled.
    let mut watches: Vec<Watch> = Vec::new();
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
                && !(busy
                    && matches!(
                        e,
                        Event::RestartBroker
                            | Event::RestartRegistry
                            | Event::RegistryOutage(_)
                            | Event::KafkaOutage(_)
                    ))
        });
        let Some(i) = due else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let (_, event) = pending.remove(i);
        let when = t0.elapsed().as_secs_f64();
        match event {
            Event::Kill(name) => {
                let mut p = pipeline.lock().await;
                // A live instance; a frozen one when none is (a liveness probe kills it too).
                let all = p.instances(name);
                let live: Vec<usize> = all
                    .iter()
                    .copied()
                    .filter(|&i| !p.procs[i].frozen)
                    .collect();
                let pool = if live.is_empty() { all } else { live };
                if !pool.is_empty() {
                    p.kill9_instance(pool[rng.random_range(0..pool.len())]);
                }
            }
            Event::Scale(name, n) => {
                pipeline.lock().await.scale(name, n);
                report
                    .scale_steps
                    .push(format!("{name} to {n} at {when:.0} s"));
            }
            Event::Freeze(name) => {
                let mut p = pipeline.lock().await;
                // The first instance: never scaled in, so it is still a member when it wakes.
                if let Some(&i) = p.instances(name).first() {
                    p.freeze(i);
                    zombies.insert(name, i);
                    let instance = p.procs[i].instance.clone();
                    report.zombies.push(format!(
                        "{name}-{instance} frozen at {when:.0} s for {:?}",
                        o.zombie
                    ));
                }
            }
            Event::Thaw(name) => {
                if let Some(i) = zombies.remove(name) {
                    pipeline.lock().await.thaw(i);
                }
            }
            Event::CrmCut => {
                crm_link.cut();
                report
                    .bursts
                    .push(format!("connections refused at {when:.1} s"));
            }
            Event::CrmRestore {
                unavailable,
                too_many,
            } => {
                crm_link.restore();
                crm.burst(Burst::Unavailable, unavailable);
                crm.burst(
                    Burst::TooMany {
                        retry_after_secs: 5,
                    },
                    too_many,
                );
                report.bursts.push(format!(
                    "connections accepted at {when:.1} s, then 503 for {unavailable:?}, then 429 for {too_many:?}"
                ));
            }
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
                let on_cluster = cluster.clone().filter(|_| component == "kafka");
                let parsed = env.topic("parsed");
                infra.push(tokio::task::spawn_blocking(move || {
                    let result = match on_cluster {
                        Some(cluster) => kill_leader(&cluster, &parsed),
                        None => restart_component(component),
                    };
                    busy.store(false, Ordering::SeqCst);
                    (component.to_string(), result)
                }));
            }
            Event::RegistryOutage(length) | Event::KafkaOutage(length) => {
                let component = if matches!(event, Event::KafkaOutage(_)) {
                    "kafka"
                } else {
                    "registry"
                };
                let on_cluster = cluster.clone().filter(|_| component == "kafka");
                let how = match (component, &on_cluster) {
                    ("kafka", Some(_)) => "kill -9 of the three cluster nodes, dev/up --cluster",
                    ("kafka", None) => "dev/down kafka, dev/up",
                    _ => "dev/down registry, dev/up",
                };
                eprintln!("chaos: {component} down for {length:?} at {when:.1} s ({how})");
                let outage = Arc::new(std::sync::Mutex::new(Outage {
                    component: component.to_string(),
                    how: how.to_string(),
                    at_secs: when,
                    asked_secs: length.as_secs_f64(),
                    ..Outage::default()
                }));
                let (tell, back) = oneshot::channel();
                let stop = Arc::new(AtomicBool::new(false));
                let watch = tokio::spawn(watch_outage(
                    pipeline.clone(),
                    outage.clone(),
                    back,
                    stop.clone(),
                ));
                watches.push(Watch {
                    outage,
                    stop,
                    task: watch,
                });
                infra_busy.store(true, Ordering::SeqCst);
                pipeline.lock().await.set_outage(true);
                let busy = infra_busy.clone();
                infra.push(tokio::task::spawn_blocking(move || {
                    // A panic (a node that would not die) is an error, and the next restart
                    // still goes ahead.
                    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        long_outage(component, on_cluster.as_ref(), length)
                    }))
                    .unwrap_or_else(|panic| {
                        let said = panic
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_default();
                        Err(format!("the {component} outage panicked: {said}"))
                    });
                    busy.store(false, Ordering::SeqCst);
                    let result = result.map(|times| {
                        let _ = tell.send(times);
                        times.stop_secs + length.as_secs_f64() + times.start_secs
                    });
                    (format!("{component} outage"), result)
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
        match component.as_str() {
            "kafka" => report.broker_restart_secs = Some(secs),
            "registry" => report.registry_restart_secs = Some(secs),
            // The long outages: reported by their watch.
            _ => {}
        }
    }
    for handle in senders {
        push::merge(&mut report.sent, handle.await?);
    }
    report.push_secs = t0.elapsed().as_secs_f64();
    eprintln!(
        "chaos: pushed {} deliveries in {:.1} s; settling",
        report.sent.deliveries, report.push_secs
    );

    // Settle, then count. After a long outage (the CRM's, the registry's, the brokers') batch
    // retries back off up to the runtime's 30 s: quiet for less than that is not done.
    let after_long_outage = [o.crm_outage, o.registry_outage, o.kafka_outage]
        .iter()
        .any(|d| !d.is_zero());
    let quiet = if after_long_outage {
        Duration::from_secs(40)
    } else {
        Duration::from_secs(15)
    };
    let settle_started = Instant::now();
    let settled = settle(&pipeline, &crm, quiet, o.settle_timeout).await;
    report.settle_secs = settle_started.elapsed().as_secs_f64();
    for w in watches {
        w.stop.store(true, Ordering::SeqCst);
        w.task.await?;
        report
            .outages
            .push(w.outage.lock().expect("outage").clone());
    }
    anyhow::ensure!(
        settled,
        "the pipeline did not settle within {:?}",
        o.settle_timeout
    );
    {
        let p = pipeline.lock().await;
        for proc in &p.procs {
            let name = proc.name.to_string();
            *report.kills.entry(name.clone()).or_default() += proc.kills;
            let said = proc
                .unexpected_exits
                .iter()
                .map(|e| format!("{}: {e}", proc.instance));
            report
                .unexpected_exits
                .entry(name.clone())
                .or_default()
                .extend(said);
            let most = report
                .max_consecutive_exits
                .entry(name.clone())
                .or_default();
            *most = (*most).max(proc.max_consecutive);
            *report.exits_in_outage.entry(name).or_default() += proc.exits_in_outage;
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
    // Where a missing email was lost: after ingest wrote it (it is in `raw-email`, the raw
    // bytes name its Message-ID), or before (ingest answered 250 for a write that never was).
    if !report.missing.is_empty() {
        report.missing_in_raw_email =
            in_raw_email(&env, &report.missing, report.sent.deliveries).await;
    }
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
    // One resolved record per message id, whoever owned its partition when.
    let resolvable: BTreeSet<&String> = report
        .sent
        .unique
        .iter()
        .chain(&report.sent.rejected)
        .collect();
    let resolved = collect(
        &env.consumer(&["resolved"]),
        resolvable.len(),
        Duration::from_secs(60),
        Duration::from_secs(3),
    )
    .await;
    // A reply resolved before its parent has a second record once the parent arrives
    // (`thread_relinked`): at most one of those.
    let values: Vec<ResolvedEmail> = decode_as(env.registry(), &resolved, |r: &ResolvedEmail| {
        r.message_id.as_str()
    })
    .await;
    let mut per_id: BTreeMap<(bool, String), Vec<String>> = BTreeMap::new();
    for (record, value) in resolved.iter().zip(&values) {
        per_id
            .entry((value.thread_relinked, value.message_id.clone()))
            .or_default()
            .push(format!("{}/{}", record.partition, record.offset));
    }
    report.relinked = per_id.keys().filter(|(relinked, _)| *relinked).count();
    // Each activity hangs where the resolver's last word on its email put it (a relinked
    // record's thread, parent and deal over the first one's).
    let mut last: BTreeMap<&str, Link> = BTreeMap::new();
    for value in &values {
        if value.thread_relinked || !last.contains_key(value.message_id.as_str()) {
            let link = (
                value.thread_id.clone(),
                value.thread_parent.clone(),
                value.deal_id.clone(),
            );
            last.insert(value.message_id.as_str(), link);
        }
    }
    report.links_wrong = rows
        .links
        .iter()
        .filter(|(id, link)| last.get(id.as_str()).is_some_and(|want| want != *link))
        .map(|(id, link)| format!("{id}: {link:?}, resolved as {:?}", last[id.as_str()]))
        .collect();
    // Every reply whose parent was sent as an email ends linked to it, whatever order they
    // were resolved in: the check above trusts the resolver's last record, this one the
    // corpus (a reply left waiting for good has an unlinked last record, and only a replay
    // would link it).
    report.replies_unlinked = values
        .iter()
        .filter(|v| !v.thread_relinked)
        .filter_map(|v| {
            let parent = v.email.in_reply_to.as_ref()?;
            if !resolvable.contains(parent) {
                return None;
            }
            let (_, linked, _) = last.get(v.message_id.as_str())?;
            (linked.as_ref() != Some(parent))
                .then(|| format!("{}: parent {parent}, linked to {linked:?}", v.message_id))
        })
        .collect();
    report.resolved_twice = per_id
        .iter()
        .filter(|(_, at)| at.len() > 1)
        .map(|((relinked, k), at)| {
            let which = if *relinked { " (relinked)" } else { "" };
            format!("{k}{which} at {}", at.join(" and "))
        })
        .collect();
    report.resolved_missing = resolvable
        .iter()
        .filter(|m| !per_id.contains_key(&(false, m.to_string())))
        .map(|m| m.to_string())
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
        // A rejected reply relinked after its parent is dead-lettered again (a second
        // record of one message id): count messages, not records, there.
        let dead = if topic == "scored.dlq" {
            let ids: BTreeSet<&Option<String>> = letters.iter().map(|l| &l.key).collect();
            ids.len()
        } else {
            letters.len()
        };
        report.dlq.insert(topic, dead);
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
    let settled = settle(&pipeline, &crm, quiet, o.settle_timeout).await;
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
            .push(replay_writes(&before, &after, &values));
    }
    if after.activities != before.activities {
        report.replay_changed.push("activities".into());
    }
    if after.contacts != before.contacts {
        report.replay_changed.push("contacts".into());
    }
    if after.deals != before.deals {
        let changed: Vec<_> = after
            .deals
            .iter()
            .filter(|(id, n)| before.deals.get(*id) != Some(n))
            .take(3)
            .collect();
        report
            .replay_changed
            .push(format!("deals (e.g. id and writes after: {changed:?})"));
    }
    if after.attachments != before.attachments {
        report.replay_changed.push(format!(
            "attachments ({} before, {} after)",
            before.attachments, after.attachments
        ));
    }
    pipeline.lock().await.stop();
    if let Some(cluster) = &cluster
        && report.failures().is_empty()
    {
        // A node's restart time grows with the partitions it holds; a failed run's topics
        // stay for inspection (`dev/test` drops them at its next start).
        cluster.delete_topics(&env.prefix).await;
    }
    Ok(report)
}

/// `kill -9` of the cluster node leading `topic` partition 0, and its restart (`dev/up
/// --cluster`); how long until it served again.
fn kill_leader(cluster: &Cluster, topic: &str) -> Result<f64, String> {
    let started = Instant::now();
    let leader = cluster
        .partitions(&[topic.to_string()])
        .into_iter()
        .find(|p| p.partition == 0)
        .map(|p| p.leader)
        .filter(|&l| l > 0)
        .ok_or_else(|| format!("{topic} partition 0 has no leader"))?;
    eprintln!("chaos: kill -9 of cluster node {leader}, the leader of {topic}/0");
    cluster.kill_node(leader);
    cluster.up();
    Ok(started.elapsed().as_secs_f64())
}

/// The writes the replay applied (none should be): how many of each operation, and for the
/// first one how the run resolved its email (relinked, parent, deal of each `resolved`
/// record), which tells a reply the replay linked otherwise from one whose write failed.
fn replay_writes(before: &Rows, after: &Rows, resolved: &[ResolvedEmail]) -> String {
    let new: Vec<&String> = after
        .applied
        .iter()
        .filter(|(key, n)| before.applied.get(*key) != Some(n))
        .map(|(key, _)| key)
        .collect();
    let mut by_op: BTreeMap<&str, usize> = BTreeMap::new();
    for key in &new {
        let op = if key.contains(":attachment:") {
            "attachment"
        } else {
            key.rsplit(':').next().unwrap_or_default()
        };
        *by_op.entry(op).or_default() += 1;
    }
    let example = new.first().map(|key| {
        // The key starts with the message id, percent-encoded where a header needs it: the
        // part before its `@` is enough to find it.
        let records: Vec<_> = resolved
            .iter()
            .filter(|r| {
                let local = r.message_id.split('@').next().unwrap_or_default();
                !local.is_empty() && key.starts_with(local)
            })
            .map(|r| {
                (
                    r.thread_relinked,
                    r.thread_parent.clone(),
                    r.deal_id.clone(),
                )
            })
            .collect();
        format!("{key}: resolved as {records:?}")
    });
    format!(
        "{} writes applied during the replay, by operation {by_op:?} (e.g. {example:?})",
        new.len()
    )
}
