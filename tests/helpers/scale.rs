//! Scale steps of a consumer group under steady load, the way an autoscaler moves it: the
//! pass-through processor (`bench.in` → `bench.out`, six partitions) runs as two instances while
//! records arrive at a steady rate; a third instance joins (2 → 3), leaves on SIGTERM (3 → 2), and
//! one of the two is `kill -9`ed and started again as the same instance (a crash under a
//! supervisor). What comes out is read `read_committed` and timed on arrival.
//!
//! [`run`] returns what a user trusts — every record out exactly once — and what an operator
//! feels: the longest pause in the output after each step (the group stops while partitions
//! move). `tests/scaling.rs` asserts the first; `bench-rebalance` compares the second between
//! eager and cooperative assignment in one command.

use std::collections::BTreeMap;
use std::process::Child;
use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::producer::FutureRecord;

use crate::{TestEnv, bench_record, terminate};

/// What to run.
#[derive(Debug, Clone)]
pub struct ScaleOptions {
    /// Records pushed, at `rate` per second.
    pub records: usize,
    pub rate: u32,
    /// `partition.assignment.strategy` for every instance (`None`: the runtime's default).
    pub strategy: Option<String>,
    /// Also `kill -9` one instance and start it again.
    pub kill_one: bool,
}

impl ScaleOptions {
    /// CI size: 20 s of load.
    pub fn small() -> Self {
        Self {
            records: 6_000,
            rate: 300,
            strategy: None,
            kill_one: true,
        }
    }
}

/// One scale step and the longest pause in the output in the 15 s after it.
#[derive(Debug, Clone)]
pub struct Step {
    pub name: &'static str,
    pub pause: Duration,
}

#[derive(Debug, Clone)]
pub struct ScaleReport {
    pub sent: usize,
    /// Distinct ids that came out.
    pub unique_out: usize,
    /// Ids that came out more than once.
    pub duplicates: Vec<String>,
    pub steps: Vec<Step>,
    /// The longest pause while nothing moved (the steady-state reference).
    pub steady_pause: Duration,
}

impl ScaleReport {
    /// What breaks the exactly-once promise, if anything.
    pub fn failures(&self) -> Vec<String> {
        let mut failures = Vec::new();
        if self.unique_out != self.sent {
            failures.push(format!(
                "{} of {} records came out",
                self.unique_out, self.sent
            ));
        }
        if !self.duplicates.is_empty() {
            failures.push(format!(
                "{} records came out twice, e.g. {:?}",
                self.duplicates.len(),
                &self.duplicates[..self.duplicates.len().min(5)]
            ));
        }
        failures
    }
}

/// How long after a step its pause is looked for.
const STEP_WINDOW: Duration = Duration::from_secs(15);

fn spawn(env: &TestEnv, instance: &str, options: &ScaleOptions) -> Child {
    let mut vars = vec![("MAILSTREAM_BATCH_MAX_MS", "50")];
    if let Some(strategy) = &options.strategy {
        vars.push((
            "MAILSTREAM_RDKAFKA_PARTITION_ASSIGNMENT_STRATEGY",
            strategy.as_str(),
        ));
    }
    env.spawn("passthrough", instance, &vars)
}

/// Runs the scale steps on a fresh environment.
pub async fn run(options: ScaleOptions) -> ScaleReport {
    let env = TestEnv::new("scale");
    let mut a = spawn(&env, "a", &options);
    let mut b = spawn(&env, "b", &options);
    let consumer = env.consumer(&["bench.out"]);
    let out_topic = env.topic("bench.out");

    let reader = tokio::spawn(async move {
        let mut arrivals: Vec<(String, Instant)> = Vec::new();
        let mut idle_since = Instant::now();
        loop {
            match tokio::time::timeout(Duration::from_millis(200), consumer.recv()).await {
                Ok(Ok(m)) if m.topic() == out_topic => {
                    let id = m
                        .key()
                        .map(|k| String::from_utf8_lossy(k).into_owned())
                        .unwrap_or_default();
                    arrivals.push((id, Instant::now()));
                    idle_since = Instant::now();
                }
                Ok(_) => {}
                Err(_) if idle_since.elapsed() > Duration::from_secs(20) => return arrivals,
                Err(_) => {}
            }
        }
    });

    let producer = env.producer();
    let topic = env.topic("bench.in");
    let interval = Duration::from_secs_f64(1.0 / f64::from(options.rate.max(1)));
    let started = Instant::now();
    let mut steps: Vec<(&'static str, Instant)> = Vec::new();
    let mut c: Option<Child> = None;
    let mut pending = Vec::with_capacity(options.records);
    for i in 0..options.records {
        let id = format!("rec-{i:07}");
        let payload = env.encode("bench.in", bench_record(&id, 200)).await;
        pending.push(
            producer
                .send_result(FutureRecord::to(&topic).key(&id).payload(&payload))
                .expect("enqueue"),
        );
        let progress = i * 4 / options.records.max(1);
        match (progress, steps.len()) {
            (1, 0) => {
                c = Some(spawn(&env, "c", &options));
                steps.push(("2 -> 3 (join)", Instant::now()));
            }
            (2, 1) => {
                if let Some(mut child) = c.take() {
                    terminate(&mut child, Duration::from_secs(30));
                }
                steps.push(("3 -> 2 (leave)", Instant::now()));
            }
            (3, 2) if options.kill_one => {
                let _ = b.kill();
                let _ = b.wait();
                b = spawn(&env, "b", &options);
                steps.push(("kill -9 and restart", Instant::now()));
            }
            _ => {}
        }
        let due = started + interval * (i as u32 + 1);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            tokio::time::sleep(wait).await;
        }
    }
    for p in pending {
        p.await
            .expect("delivery future")
            .map_err(|(e, _)| e)
            .expect("delivered");
    }
    let arrivals = reader.await.expect("reader");
    terminate(&mut a, Duration::from_secs(30));
    terminate(&mut b, Duration::from_secs(30));

    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for (id, _) in &arrivals {
        *counts.entry(id.as_str()).or_default() += 1;
    }
    let times: Vec<Instant> = arrivals.iter().map(|(_, t)| *t).collect();
    // Windows end at the last arrival: after it the load is over, not paused.
    let end = times.last().copied().unwrap_or(started);
    let first_step = steps.first().map_or(started, |(_, at)| *at);
    ScaleReport {
        sent: options.records,
        unique_out: counts.len(),
        duplicates: counts
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(id, _)| id.to_string())
            .collect(),
        steps: steps
            .iter()
            .map(|(name, at)| Step {
                name,
                pause: longest_pause(&times, *at, (*at + STEP_WINDOW).min(end)),
            })
            .collect(),
        steady_pause: longest_pause(
            &times,
            started + Duration::from_secs(2),
            first_step.min(end),
        ),
    }
}

/// The longest time in `[from, to)` without an arrival (`times` ascending).
fn longest_pause(times: &[Instant], from: Instant, to: Instant) -> Duration {
    let mut last = from;
    let mut longest = Duration::ZERO;
    for &t in times.iter().filter(|t| **t >= from && **t < to) {
        longest = longest.max(t - last);
        last = t;
    }
    longest.max(to.saturating_duration_since(last))
}

impl std::fmt::Display for ScaleReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "sent {}, out {} unique, {} duplicated; steady longest pause {:?}",
            self.sent,
            self.unique_out,
            self.duplicates.len(),
            self.steady_pause
        )?;
        for step in &self.steps {
            writeln!(f, "  {:<22} longest pause {:?}", step.name, step.pause)?;
        }
        Ok(())
    }
}
