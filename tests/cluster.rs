//! The runtime on the three-broker cluster of `dev/up --cluster` while a partition leader dies.
//!
//! What it proves, against three real KRaft nodes on 127.0.0.1:
//! - `mailstream topology apply` on three brokers creates every topic, dead-letter topics
//!   included, with replication factor 3 and `min.insync.replicas=2`;
//! - two instances of the pass-through processor (`bench.in` → `bench.out`, exactly-once
//!   transactions), fed continuously, ride through a `kill -9` of the broker that leads the most
//!   `bench.in`/`bench.out` partitions, through its restart (`dev/up --cluster`) and through the
//!   leadership moving back to it (a preferred leader election): neither instance exits (no
//!   crash loop), and every record comes out of `bench.out` exactly once;
//! - the stream recovers from the kill within [`RECOVERY_BOUND`]: a record written after the kill
//!   comes out, and so does everything written until then;
//! - every email ingest accepted is in `raw-email` after every node was killed at once and a
//!   new ingest's first writes met leaders elected uncleanly
//!   (`an_email_ingest_accepted_survives_every_node_killed_and_a_new_ingest`).
//!
//! Measured on the 2-core dev machine (5 runs, load average 12-24 from concurrent builds): output
//! resumed 6.7-7.7 s after the kill and caught up after 6.9-8.8 s (longest gap in the output
//! 6.1-7.2 s). That is the cluster fencing the dead node after `broker.session.timeout.ms` (6 s,
//! dev/up) plus clients finding the new leaders; the open transactions wait it out (0-1 aborted
//! per run, at most one transient retry). In one run of eight, one instance logged nothing for
//! 30 s after the kill (blocked in a transactional call, whose timeout is 30 s) and the group
//! gave its partitions to the other, whose output then waited behind the silent one's open
//! transaction: not caught up 30 s after the kill, hence the bound of 60 s. The restart took 20-83 s under that load (JVM start, log
//! recovery after the kill), and the whole test 85-118 s; the test deletes its topics when it
//! passes, as a node's restart time grows with the partitions it holds.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use mailstream_tests::cluster::{Cluster, PartitionState};
use mailstream_tests::pipeline::metric_if_served;
use mailstream_tests::smtp::{SmtpClient, SmtpError};
use mailstream_tests::{TestEnv, bench_record, collect, free_port, http_get, log_dir, terminate};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, ConfigSource, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::FutureRecord;

const IN: &str = "bench.in";
const OUT: &str = "bench.out";
/// The producer writes this many records every [`CHUNK_EVERY`] (~250 records/s).
const CHUNK: usize = 25;
const CHUNK_EVERY: Duration = Duration::from_millis(100);
/// From the kill until every record written before it is out of `bench.out`.
/// Typically 7-9 s (module docs); the rest is room for the slow case seen once in eight runs,
/// where an instance sat in a transactional call for its whole 30 s timeout.
const RECOVERY_BOUND: Duration = Duration::from_secs(60);

/// Held by each test for its whole run: both restart the cluster's nodes, and the test harness
/// runs the tests of a binary at the same time.
static CLUSTER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// One pass-through instance.
struct Instance {
    name: &'static str,
    child: Child,
    http: String,
    log: PathBuf,
}

impl Instance {
    fn spawn(env: &TestEnv, name: &'static str) -> Self {
        let http = format!("127.0.0.1:{}", free_port());
        let child = env.spawn(
            "passthrough",
            name,
            &[("MAILSTREAM_HTTP_ADDR", http.as_str())],
        );
        Self {
            name,
            child,
            http,
            log: log_dir().join(format!("{}passthrough-{name}.log", env.prefix)),
        }
    }

    /// The last `n` lines of its log that `keep` selects.
    fn log_tail(&self, n: usize, keep: impl Fn(&str) -> bool) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().filter(|l| keep(l)).take(n).collect();
        format!(
            "the last lines of {}:\n{}",
            self.log.display(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )
    }
}

/// Fails the test, with the end of its log, if an instance has exited.
fn assert_alive(instances: &mut [Instance]) {
    for instance in instances.iter_mut() {
        if let Some(status) = instance.child.try_wait().expect("wait") {
            panic!(
                "pass-through instance {} exited ({status}); {}",
                instance.name,
                instance.log_tail(15, |_| true)
            );
        }
    }
}

/// Each `bench.out` partition's last stable offset (what `read_committed` readers may read up
/// to) and high watermark, for a failure: an LSO stuck below the high watermark is a
/// transaction left open.
fn stable_offsets(env: &TestEnv, checker: &StreamConsumer) -> String {
    let topic = env.topic(OUT);
    let uncommitted: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &env.stack.bootstrap)
        .set("isolation.level", "read_uncommitted")
        .create()
        .expect("watermark consumer");
    (0..6)
        .map(|p| {
            let lso = checker
                .fetch_watermarks(&topic, p, Duration::from_secs(5))
                .map_or_else(|e| e.to_string(), |(_, high)| high.to_string());
            let hw = uncommitted
                .fetch_watermarks(&topic, p, Duration::from_secs(5))
                .map_or_else(|e| e.to_string(), |(_, high)| high.to_string());
            format!("{p}: LSO {lso} HW {hw}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Each instance's lag per input partition (records and seconds), for a failure.
async fn lags(instances: &[Instance]) -> String {
    let mut report = Vec::new();
    for instance in instances {
        let (_, metrics) = http_get(&format!("http://{}/metrics", instance.http)).await;
        let lines: Vec<&str> = metrics
            .lines()
            .filter(|l| l.starts_with("mailstream_consumer_lag"))
            .collect();
        report.push(format!("instance {}:\n{}", instance.name, lines.join("\n")));
    }
    report.join("\n")
}

/// For a failure: every thread's stack of each instance still running (`gdb`, when the machine
/// has it), written beside its log; an instance that stopped logging shows where it waits.
fn stacks(instances: &[Instance]) -> String {
    instances
        .iter()
        .map(|i| {
            let path = i.log.with_extension("stacks.txt");
            let dumped = Command::new("gdb")
                .args([
                    "-p",
                    &i.child.id().to_string(),
                    "-batch",
                    "-ex",
                    "thread apply all bt",
                ])
                .output();
            match dumped {
                Ok(out) if out.status.success() => match std::fs::write(&path, &out.stdout) {
                    Ok(()) => format!("instance {}: thread stacks in {}", i.name, path.display()),
                    Err(e) => format!("instance {}: writing {}: {e}", i.name, path.display()),
                },
                Ok(out) => format!("instance {}: gdb failed: {}", i.name, out.status),
                Err(e) => format!("instance {}: no thread stacks (gdb: {e})", i.name),
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// What each instance logged above INFO (not librdkafka's own connection noise), for a failure.
fn warnings(instances: &[Instance]) -> String {
    instances
        .iter()
        .map(|i| {
            i.log_tail(25, |l| {
                (l.contains("WARN") || l.contains("ERROR")) && !l.contains("librdkafka")
            })
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// What came out of `bench.out`, by key, and when.
#[derive(Default)]
struct Output {
    counts: BTreeMap<String, usize>,
    records: usize,
    last_arrival: Option<Instant>,
    /// The longest time without any output since [`Output::watch_gaps`].
    max_gap: Duration,
    gaps_since: Option<Instant>,
    /// When each `bench.out` partition last delivered, and its offset then.
    partitions: BTreeMap<i32, (Instant, i64)>,
}

impl Output {
    /// Reads what arrives for `wait`, checking that every instance still runs.
    async fn pump(
        &mut self,
        consumer: &StreamConsumer,
        instances: &mut [Instance],
        wait: Duration,
    ) {
        let seen = collect(consumer, usize::MAX, wait, Duration::ZERO).await;
        let now = Instant::now();
        if let Some(since) = self.gaps_since {
            let last = self.last_arrival.map_or(since, |l| l.max(since));
            self.max_gap = self.max_gap.max(now - last);
        }
        if !seen.is_empty() {
            self.last_arrival = Some(now);
        }
        for record in seen {
            self.partitions
                .insert(record.partition, (now, record.offset));
            *self
                .counts
                .entry(record.key.expect("bench records are keyed"))
                .or_default() += 1;
            self.records += 1;
        }
        assert_alive(instances);
    }

    fn watch_gaps(&mut self) {
        self.gaps_since = Some(Instant::now());
    }

    /// What each partition of `bench.out` last delivered, for a failure.
    fn partitions_report(&self) -> String {
        self.partitions
            .iter()
            .map(|(p, (at, offset))| {
                format!(
                    "{p}: offset {offset} {:.1} s ago",
                    at.elapsed().as_secs_f64()
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Every record with an id below `n` has come out.
    fn has_all_below(&self, n: usize) -> bool {
        (0..n).all(|i| self.counts.contains_key(&id(i)))
    }
}

fn id(i: usize) -> String {
    format!("rec-{i:06}")
}

/// The broker leading the most partitions of `layout` (the lowest id among equals).
fn busiest_leader(layout: &[PartitionState]) -> i32 {
    let mut led: BTreeMap<i32, usize> = BTreeMap::new();
    for p in layout {
        *led.entry(p.leader).or_default() += 1;
    }
    led.into_iter()
        .filter(|(leader, _)| *leader >= 0)
        .max_by_key(|(leader, count)| (*count, -leader))
        .map(|(leader, _)| leader)
        .expect("the partitions have leaders")
}

/// Moves the leadership of every partition of `layout` whose leader is not its preferred (first)
/// replica back to it, with Kafka's own tool. Returns how many it moved.
fn elect_preferred_leaders(env: &TestEnv, layout: &[PartitionState]) -> usize {
    let moving: Vec<String> = layout
        .iter()
        .filter(|p| p.replicas.first() != Some(&p.leader))
        .map(|p| format!(r#"{{"topic":"{}","partition":{}}}"#, p.topic, p.partition))
        .collect();
    if moving.is_empty() {
        return 0;
    }
    let file = log_dir().join(format!("{}preferred-election.json", env.prefix));
    std::fs::write(&file, format!(r#"{{"partitions":[{}]}}"#, moving.join(",")))
        .expect("write the election file");
    let tool = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dev/kafka-tool");
    let out = Command::new(tool)
        .args([
            "org.apache.kafka.tools.LeaderElectionCommand",
            "--bootstrap-server",
            &env.stack.bootstrap,
            "--election-type",
            "PREFERRED",
            "--path-to-json-file",
        ])
        .arg(&file)
        .output()
        .expect("run the Kafka leader election tool");
    assert!(
        out.status.success(),
        "preferred leader election failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    moving.len()
}

/// The topic's own `min.insync.replicas` (not the brokers' default, which is 2 on the cluster too).
async fn min_insync(env: &TestEnv, logical: &str) -> Option<String> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &env.stack.bootstrap)
        .create()
        .expect("admin client");
    let topic = env.topic(logical);
    let described = admin
        .describe_configs([&ResourceSpecifier::Topic(&topic)], &AdminOptions::new())
        .await
        .expect("describe configs");
    let resource = described
        .into_iter()
        .next()
        .expect("one resource")
        .expect("described");
    resource
        .get("min.insync.replicas")
        .filter(|e| e.source == ConfigSource::DynamicTopic)
        .and_then(|e| e.value.clone())
}

/// The leader of busy partitions is killed mid-stream and restarted. Two stalls were found
/// here under load and fixed: a transaction outliving its timeout fences its producer (replaced
/// in-process), and librdkafka's `send_offsets_to_transaction` can wait without limit after the
/// group coordinator dies (each transactional call is now bounded and a hung producer
/// replaced, `stream/producer.rs`); the report counts both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_leader_killed_mid_stream_loses_and_duplicates_nothing() {
    let _cluster = CLUSTER.lock().await;
    let test_started = Instant::now();
    let cluster = Cluster::get();
    // a node an earlier run left down comes back first
    let up = cluster.up();
    eprintln!(
        "{:>5.1} s: dev/up --cluster ({:.1} s)",
        test_started.elapsed().as_secs_f64(),
        up.as_secs_f64()
    );
    let brokers = tokio::task::block_in_place(|| cluster.brokers());
    assert_eq!(brokers.len(), 3, "three brokers: {brokers:?}");

    // Replication 3 and two in sync, on every topic the pass-through touches.
    let env = TestEnv::new_on(cluster.stack.clone(), "cluster");
    let topics = vec![env.topic(IN), env.topic(OUT)];
    let mut all = topics.clone();
    all.push(env.topic("bench.in.dlq"));
    for p in tokio::task::block_in_place(|| cluster.partitions(&all)) {
        assert_eq!(p.replicas.len(), 3, "replication 3: {p:?}");
    }
    for logical in [IN, OUT, "bench.in.dlq", "raw-email", "raw-email.dlq"] {
        assert_eq!(
            min_insync(&env, logical).await.as_deref(),
            Some("2"),
            "{logical}: min.insync.replicas"
        );
    }

    let mut instances = vec![Instance::spawn(&env, "a"), Instance::spawn(&env, "b")];
    eprintln!(
        "{:>5.1} s: topology applied, 2 instances started",
        test_started.elapsed().as_secs_f64()
    );

    // The producer writes continuously, from before the kill until after the leadership moved
    // back; `acked` counts the records the cluster acknowledged (ids below it are written).
    let acked = Arc::new(AtomicUsize::new(0));
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let producing = {
        let env = env.clone();
        let acked = acked.clone();
        tokio::spawn(async move {
            let payload = env.encode(IN, bench_record("cluster", 200)).await;
            // one idempotent producer throughout, so it rides through the kill as well
            let producer = env.producer();
            let topic = env.topic(IN);
            let mut sent = 0usize;
            let mut slowest = Duration::ZERO;
            while !*stop_rx.borrow_and_update() {
                let started = Instant::now();
                let keys: Vec<String> = (sent..sent + CHUNK).map(id).collect();
                let pending: Vec<_> = keys
                    .iter()
                    .map(|key| {
                        producer
                            .send_result(FutureRecord::to(&topic).key(key).payload(&payload))
                            .expect("enqueue")
                    })
                    .collect();
                for delivery in pending {
                    delivery
                        .await
                        .expect("delivery future")
                        .map_err(|(e, _)| e)
                        .expect("delivered");
                }
                sent += CHUNK;
                acked.store(sent, Ordering::SeqCst);
                slowest = slowest.max(started.elapsed());
                tokio::time::sleep(CHUNK_EVERY.saturating_sub(started.elapsed())).await;
            }
            (sent, slowest)
        })
    };

    let consumer = env.consumer(&[OUT]);
    let mut out = Output::default();
    let tick = Duration::from_millis(200);

    // 1. Flowing: both instances move records.
    let deadline = Instant::now() + Duration::from_secs(90);
    while out.records < 1_000 {
        assert!(Instant::now() < deadline, "no output within 90 s");
        out.pump(&consumer, &mut instances, tick).await;
    }
    eprintln!(
        "{:>5.1} s: flowing ({} records out)",
        test_started.elapsed().as_secs_f64(),
        out.records
    );

    // 2. Kill -9 the broker leading the most bench.in/bench.out partitions.
    let before = tokio::task::block_in_place(|| cluster.partitions(&topics));
    let victim = busiest_leader(&before);
    let led: Vec<String> = before
        .iter()
        .filter(|p| p.leader == victim)
        .map(|p| {
            format!(
                "{}-{}",
                p.topic.trim_start_matches(&env.prefix),
                p.partition
            )
        })
        .collect();
    let written_before_kill = acked.load(Ordering::SeqCst);
    let killed_at = Instant::now();
    tokio::task::block_in_place(|| cluster.kill_node(victim));
    out.watch_gaps();
    eprintln!(
        "{:>5.1} s: killed broker {victim} (leader of {}) with {} records out, \
         {written_before_kill} written",
        test_started.elapsed().as_secs_f64(),
        led.join(" "),
        out.records
    );

    // 3. Recovery. The writes of the producer and of the instances to the dead leader's
    // partitions stall until the cluster fences it and clients find the new leaders; the stream
    // has resumed once a record whose write began after the kill comes out (ids from one chunk
    // past the one in flight), and recovered once everything written by then is out too.
    let first_after_kill = written_before_kill + CHUNK;
    let mut resumed = None;
    let mut caught_up_to = 0;
    loop {
        if killed_at.elapsed() >= RECOVERY_BOUND {
            let missing: Vec<String> = (0..caught_up_to.max(first_after_kill))
                .map(id)
                .filter(|i| !out.counts.contains_key(i))
                .take(10)
                .collect();
            panic!(
                "not recovered {RECOVERY_BOUND:?} after the kill: {} records out, {} written, \
                 resumed after {resumed:?}; missing {missing:?}; bench.out partitions last \
                 delivered: {}; bench.out stable offsets: {}; lag:\n{}\n{}\n{}",
                out.records,
                acked.load(Ordering::SeqCst),
                out.partitions_report(),
                tokio::task::block_in_place(|| stable_offsets(&env, &consumer)),
                lags(&instances).await,
                warnings(&instances),
                tokio::task::block_in_place(|| stacks(&instances))
            );
        }
        out.pump(&consumer, &mut instances, tick).await;
        if resumed.is_none() && out.counts.range(id(first_after_kill)..).next().is_some() {
            resumed = Some(killed_at.elapsed());
            caught_up_to = acked.load(Ordering::SeqCst);
        }
        if resumed.is_some() && out.has_all_below(caught_up_to) {
            break;
        }
    }
    let resumed = resumed.unwrap_or_default();
    let recovery = killed_at.elapsed();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = tokio::task::block_in_place(|| cluster.partitions(&topics));
        if now.iter().all(|p| p.leader != victim && p.leader >= 0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the killed broker still leads, or a partition has no leader: {now:?}"
        );
        out.pump(&consumer, &mut instances, tick).await;
    }

    eprintln!(
        "{:>5.1} s: recovered (resumed after {:.1} s, caught up after {:.1} s)",
        test_started.elapsed().as_secs_f64(),
        resumed.as_secs_f64(),
        recovery.as_secs_f64()
    );

    // 4. Restart it while the stream goes on.
    let restarting = {
        let cluster = cluster.clone();
        tokio::task::spawn_blocking(move || cluster.up())
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while !restarting.is_finished() {
        assert!(
            Instant::now() < deadline,
            "dev/up --cluster took over 120 s"
        );
        out.pump(&consumer, &mut instances, tick).await;
    }
    let restart = restarting.await.expect("dev/up --cluster");

    // 5. Back in every ISR, then leader of its partitions again.
    let rejoin_started = Instant::now();
    loop {
        let now = tokio::task::block_in_place(|| cluster.partitions(&topics));
        if now.iter().all(|p| p.isr.contains(&victim)) {
            break;
        }
        assert!(
            rejoin_started.elapsed() < Duration::from_secs(60),
            "broker {victim} not back in every ISR within 60 s: {now:?}"
        );
        out.pump(&consumer, &mut instances, Duration::from_millis(500))
            .await;
    }
    let rejoin = rejoin_started.elapsed();
    eprintln!(
        "{:>5.1} s: broker {victim} restarted ({:.1} s) and in every ISR ({:.1} s later)",
        test_started.elapsed().as_secs_f64(),
        restart.as_secs_f64(),
        rejoin.as_secs_f64()
    );
    let layout = tokio::task::block_in_place(|| cluster.partitions(&topics));
    let moved = tokio::task::block_in_place(|| elect_preferred_leaders(&env, &layout));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = tokio::task::block_in_place(|| cluster.partitions(&topics));
        if now.iter().all(|p| p.replicas.first() == Some(&p.leader)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "preferred leaders not back within 30 s: {now:?}"
        );
        out.pump(&consumer, &mut instances, Duration::from_millis(500))
            .await;
    }
    // records written after the leadership moved back go through it too
    let after_election = acked.load(Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(30);
    while out.records < after_election + 10 * CHUNK {
        assert!(Instant::now() < deadline, "no output after the election");
        out.pump(&consumer, &mut instances, tick).await;
    }

    eprintln!(
        "{:>5.1} s: {moved} leaders moved back by a preferred election",
        test_started.elapsed().as_secs_f64()
    );

    // 6. Stop writing, drain, check.
    stop_tx.send(true).expect("stop the producer");
    let (sent, slowest_write) = producing.await.expect("producer task");
    let deadline = Instant::now() + Duration::from_secs(60);
    while out.records < sent {
        assert!(
            Instant::now() < deadline,
            "{} of {sent} records out 60 s after the producer stopped",
            out.records
        );
        out.pump(&consumer, &mut instances, tick).await;
    }
    out.pump(&consumer, &mut instances, Duration::from_secs(3))
        .await; // late duplicates

    let mut aborted = 0.0;
    let mut fenced = 0.0;
    let mut hung = 0.0;
    let mut fatal = 0.0;
    let mut retries = 0.0;
    for instance in &instances {
        let (_, metrics) = http_get(&format!("http://{}/metrics", instance.http)).await;
        let transactions = |outcome| {
            metric_if_served(
                &metrics,
                "mailstream_transactions_total",
                &[("outcome", outcome)],
            )
            .unwrap_or_default()
        };
        aborted += transactions("aborted");
        fenced += transactions("fenced");
        hung += transactions("hung");
        fatal += transactions("fatal");
        retries += metric_if_served(&metrics, "mailstream_transient_retries_total", &[])
            .unwrap_or_default();
    }
    for instance in &mut instances {
        let status = terminate(&mut instance.child, Duration::from_secs(30));
        assert!(
            status.success(),
            "instance {} shuts down cleanly, got {status}",
            instance.name
        );
    }

    let duplicates: Vec<_> = out.counts.iter().filter(|(_, c)| **c > 1).take(5).collect();
    assert!(duplicates.is_empty(), "duplicates: {duplicates:?}");
    let expected: BTreeSet<String> = (0..sent).map(id).collect();
    let arrived: BTreeSet<String> = out.counts.keys().cloned().collect();
    let lost: Vec<_> = expected.difference(&arrived).take(5).collect();
    assert!(
        lost.is_empty(),
        "lost ({} of {sent} arrived): {lost:?}",
        arrived.len()
    );
    assert_eq!(out.records, sent, "exactly one output per input");

    // passed: the cluster keeps no partitions of this test (its nodes restart faster)
    cluster.delete_topics(&env.prefix).await;
    eprintln!(
        "cluster: {sent} records exactly once through 2 instances; broker {victim} killed: \
         output resumed after {:.1} s, recovered in {:.1} s (longest output gap {:.1} s, \
         slowest write {:.1} s), \
         restarted in {:.1} s, back in every ISR {:.1} s later, {moved} leaders moved back; \
         {aborted} aborted transactions, {fenced} fenced, {fatal} failed and {hung} hung producers replaced, {retries} transient retries; test took {:.0} s",
        resumed.as_secs_f64(),
        recovery.as_secs_f64(),
        out.max_gap.as_secs_f64(),
        slowest_write.as_secs_f64(),
        restart.as_secs_f64(),
        rejoin.as_secs_f64(),
        test_started.elapsed().as_secs_f64()
    );
}

/// Every email ingest answered 250 to is in `raw-email`, through the worst start a producer can
/// have: every node of the cluster killed at once (`kill -9`) while 24 SMTP sessions send, ingest
/// itself killed and started again while the cluster is down, and the cluster back only after
/// the delivery timeout (30 s), so the new ingest's first writes meet partition leaders that
/// have just been elected uncleanly and refuse them for a while (NOT_ENOUGH_REPLICAS).
///
/// Found by the chaos suite (2 of 1,417 emails lost), reproduced by this scenario once in seven
/// runs before the fix (2 of 8,008 accepted emails missing; ingest's librdkafka debug log
/// showed the cause): a new idempotent producer's first batch on a partition was refused and
/// queued for retry while the next batch, already in flight, was accepted (the broker takes
/// any sequence number from a producer it has no state for), and librdkafka then reported the
/// refused batch delivered ("implicitly acked by subsequent batch success"). The fix: one
/// request in flight per connection on every producer (`mailstream_runtime::kafka::durable`).
/// The window is milliseconds wide, so a pass here is evidence, not proof; the proof is that
/// with one request in flight no later batch can be answered before an earlier one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_email_ingest_accepted_survives_every_node_killed_and_a_new_ingest() {
    let _cluster = CLUSTER.lock().await;
    let cluster = Cluster::get();
    tokio::task::block_in_place(|| cluster.up());
    let env = TestEnv::new_on(cluster.stack.clone(), "ingest-kill");
    let blobs = mailstream_tests::mail::temp_dir("ingest-kill-blobs");
    let mut ingest = mailstream_tests::mail::start(&env, &blobs, &[]).await;
    let smtp = format!("127.0.0.1:{}", ingest.smtp);
    let t0 = Instant::now();
    let push_for = Duration::from_secs(60);
    let senders: Vec<_> = (0..24)
        .map(|w| {
            let smtp = smtp.clone();
            let run = env.prefix.clone();
            tokio::spawn(async move { send_until(&smtp, &run, w, t0, push_for).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1_600)).await;
    tokio::task::block_in_place(|| cluster.kill_all());
    eprintln!("{:>5.1} s: every node killed", t0.elapsed().as_secs_f64());
    tokio::time::sleep(Duration::from_secs(4)).await;
    ingest.child.kill().expect("kill -9 ingest");
    let _ = ingest.child.wait();
    ingest.child = mailstream_tests::mail::respawn(&env, &blobs, &ingest, &[]);
    eprintln!(
        "{:>5.1} s: ingest killed and started again",
        t0.elapsed().as_secs_f64()
    );
    // Back after the new ingest's first writes timed out (30 s) and were sent again.
    tokio::time::sleep(Duration::from_secs(11)).await;
    let up = tokio::task::block_in_place(|| cluster.up());
    eprintln!(
        "{:>5.1} s: the cluster is up ({:.1} s to start)",
        t0.elapsed().as_secs_f64(),
        up.as_secs_f64()
    );
    let mut accepted = BTreeMap::new();
    for s in senders {
        accepted.extend(s.await.expect("sender"));
    }
    eprintln!(
        "{:>5.1} s: {} emails accepted",
        t0.elapsed().as_secs_f64(),
        accepted.len()
    );
    let checker = env.consumer(&["raw-email"]);
    let seen = collect(
        &checker,
        accepted.len(),
        Duration::from_secs(120),
        Duration::from_secs(5),
    )
    .await;
    let found: BTreeSet<String> = seen
        .iter()
        .filter_map(|r| message_id(r.payload.as_deref().unwrap_or_default()))
        .collect();
    let missing: Vec<_> = accepted
        .iter()
        .filter(|(id, _)| !found.contains(*id))
        .collect();
    terminate(&mut ingest.child, Duration::from_secs(40));
    assert!(
        missing.is_empty(),
        "{} of {} accepted emails are not in raw-email ({} records), e.g. (id, second accepted) \
         {:?}; ingest's log is in {}",
        missing.len(),
        accepted.len(),
        seen.len(),
        missing.iter().take(5).collect::<Vec<_>>(),
        log_dir().display()
    );
    cluster.delete_topics(&env.prefix).await;
}

/// The Message-ID in a `raw-email` record (its raw bytes are stored as they came).
fn message_id(payload: &[u8]) -> Option<String> {
    let needle = b"Message-ID: <";
    let at = payload.windows(needle.len()).position(|w| w == needle)? + needle.len();
    let end = payload[at..].iter().position(|&b| b == b'>')?;
    Some(String::from_utf8_lossy(&payload[at..at + end]).into_owned())
}

/// One SMTP session's push: an email every 120 ms until `push_for` ran out, each sent again
/// until ingest answers 250 (a refusal for good fails the test). Returns the accepted
/// Message-IDs and when each was accepted.
async fn send_until(
    smtp: &str,
    run: &str,
    w: usize,
    t0: Instant,
    push_for: Duration,
) -> BTreeMap<String, String> {
    let mut accepted = BTreeMap::new();
    let mut client: Option<SmtpClient> = None;
    let mut n = 0u32;
    while t0.elapsed() < push_for {
        tokio::time::sleep_until((t0 + Duration::from_millis(120) * n).into()).await;
        n += 1;
        let id = format!("{run}w{w}-{n}@sender.example");
        let data = format!(
            "From: lead@sender.example\r\nTo: sales@in.example.com\r\nMessage-ID: <{id}>\r\n\
             Subject: hello {n}\r\n\r\nHello from session {w}, email {n}.\r\n"
        );
        loop {
            let c = match client.as_mut() {
                Some(c) => c,
                None => match SmtpClient::connect(smtp, "kill.client.test").await {
                    Ok(c) => client.insert(c),
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                },
            };
            match c
                .send(
                    "lead@sender.example",
                    &["sales@in.example.com"],
                    data.as_bytes(),
                )
                .await
            {
                Ok(()) => {
                    accepted.insert(id, format!("{:.1}", t0.elapsed().as_secs_f64()));
                    break;
                }
                Err(SmtpError::Refused { code, text }) if code >= 500 => {
                    panic!("{id} refused for good: {code} {text}")
                }
                Err(_) => {
                    client = None;
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            }
        }
    }
    accepted
}
