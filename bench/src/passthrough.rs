//! Pass-through throughput against the broker's own performance tools, in one run.
//!
//! For each record size it preloads `bench.in`, then measures on the same broker:
//! 1. Kafka's `ProducerPerformance` writing the same number and size of records (acks=all),
//! 2. Kafka's `ConsumerPerformance` reading them back,
//! 3. `mailstream run passthrough` (release build) moving the preloaded records from `bench.in`
//!    to `bench.out` with transactions (read_committed, Avro decode/encode, offsets in the txn).
//!
//! It reports records/s and MB/s of each, the pass-through as a ratio of the producer tool, the
//! transaction commit latency p95 (from the processor's own histogram) and its peak resident
//! memory. Targets: ratio >= 0.5, commit p95 < 100 ms, peak RSS < 100 MB.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use mailstream_tests::pipeline::{metric, samples};
use mailstream_tests::{TestEnv, bench_record, terminate};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::Serialize;

#[derive(Parser)]
struct Args {
    /// Record sizes in bytes.
    #[arg(long, value_delimiter = ',', default_values_t = vec![2_000usize, 20_000])]
    sizes: Vec<usize>,
    /// Total bytes per size (records = bytes / size).
    #[arg(long, default_value_t = 200_000_000)]
    bytes: usize,
    /// Directory holding the Kafka jars (dev/up writes it to its env file).
    #[arg(long, env = "MAILSTREAM_KAFKA_LIBS")]
    kafka_libs: String,
    /// Port for the processor's metrics endpoint.
    #[arg(long, default_value_t = 19464)]
    metrics_port: u16,
    /// Write the results as JSON here too.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

#[derive(Debug, Serialize)]
struct Figures {
    size: usize,
    records: usize,
    producer_tool_rps: f64,
    consumer_tool_rps: f64,
    passthrough_rps: f64,
    passthrough_mbps: f64,
    ratio_to_producer_tool: f64,
    commit_p95_ms: f64,
    peak_rss_mb: f64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut all = Vec::new();
    for &size in &args.sizes {
        let records = (args.bytes / size).max(1000);
        eprintln!("== {size} B records x {records}");
        all.push(run_size(&args, size, records).await?);
    }
    println!();
    println!(
        "{:>7} {:>8} {:>12} {:>12} {:>12} {:>9} {:>7} {:>10} {:>8}",
        "size",
        "records",
        "producer r/s",
        "consumer r/s",
        "passthru r/s",
        "MB/s",
        "ratio",
        "commit p95",
        "RSS MB"
    );
    for f in &all {
        println!(
            "{:>7} {:>8} {:>12.0} {:>12.0} {:>12.0} {:>9.1} {:>7.2} {:>8.1}ms {:>8.1}",
            f.size,
            f.records,
            f.producer_tool_rps,
            f.consumer_tool_rps,
            f.passthrough_rps,
            f.passthrough_mbps,
            f.ratio_to_producer_tool,
            f.commit_p95_ms,
            f.peak_rss_mb
        );
    }
    let pass = all.iter().all(|f| {
        f.ratio_to_producer_tool >= 0.5 && f.commit_p95_ms < 100.0 && f.peak_rss_mb < 100.0
    });
    println!(
        "targets (ratio >= 0.50, commit p95 < 100 ms, RSS < 100 MB): {}",
        if pass { "met" } else { "NOT met" }
    );
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&all)?)?;
    }
    Ok(())
}

async fn run_size(args: &Args, size: usize, records: usize) -> anyhow::Result<Figures> {
    let env = TestEnv::new("bench");

    // Preload the pass-through's input: one encoded record, many keys.
    let payload = env.encode("bench.in", bench_record("bench", size)).await;
    preload(&env, &payload, records).await?;

    let perf_topic = env.topic("perf");
    create_topic(&env, &perf_topic).await?;
    let producer_tool_rps = producer_tool(args, &env, &perf_topic, records, size)?;
    let consumer_tool_rps = consumer_tool(args, &env, &perf_topic, records)?;

    let metrics_url = format!("http://127.0.0.1:{}/metrics", args.metrics_port);
    let addr = format!("127.0.0.1:{}", args.metrics_port);
    // Tuning given to the bench (MAILSTREAM_RDKAFKA_*, MAILSTREAM_BATCH_*, MAILSTREAM_LOG_*)
    // reaches the processor.
    let tuning: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| {
            [
                "MAILSTREAM_RDKAFKA_",
                "MAILSTREAM_BATCH_",
                "MAILSTREAM_LOG_",
            ]
            .iter()
            .any(|p| k.starts_with(p))
        })
        .collect();
    let mut vars = vec![
        ("MAILSTREAM_HTTP_ADDR", addr.as_str()),
        ("MAILSTREAM_LOG_LEVEL", "warn"),
    ];
    vars.extend(tuning.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let mut child = env.spawn("passthrough", "bench", &vars);
    let measured = watch(&metrics_url, records).await;
    let peak_rss_mb = peak_rss_mb(child.id());
    terminate(&mut child, Duration::from_secs(30));
    let (elapsed, text) = measured?;

    let passthrough_rps = records as f64 / elapsed.as_secs_f64();
    Ok(Figures {
        size,
        records,
        producer_tool_rps,
        consumer_tool_rps,
        passthrough_rps,
        passthrough_mbps: passthrough_rps * payload.len() as f64 / 1e6,
        ratio_to_producer_tool: passthrough_rps / producer_tool_rps,
        commit_p95_ms: histogram_quantile(&text, "mailstream_transaction_commit_seconds", 0.95)
            * 1000.0,
        peak_rss_mb,
    })
}

/// Polls the processor's metrics until it consumed `records` and committed; returns the time
/// from its first record to its last, and the final metrics text.
async fn watch(metrics_url: &str, records: usize) -> anyhow::Result<(Duration, String)> {
    let http = reqwest::Client::new();
    let ready_url = metrics_url.replace("/metrics", "/readyz");
    let mut first: Option<Instant> = None;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        if Instant::now() > deadline {
            bail!("the pass-through did not finish within 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        // Its series exist once it is ready (at zero); before, it serves none.
        let ready = http.get(&ready_url).send().await;
        if !ready.is_ok_and(|r| r.status().is_success()) {
            continue;
        }
        let Ok(resp) = http.get(metrics_url).send().await else {
            continue;
        };
        let text = resp.text().await.unwrap_or_default();
        let done = metric(&text, "mailstream_records_in_total", &[]);
        if done > 0.0 && first.is_none() {
            first = Some(Instant::now());
        }
        let committed = metric(
            &text,
            "mailstream_transactions_total",
            &[("outcome", "committed")],
        );
        if done >= records as f64 && committed > 0.0 {
            return Ok((first.map(|f| f.elapsed()).unwrap_or_default(), text));
        }
    }
}

async fn preload(env: &TestEnv, payload: &[u8], records: usize) -> anyhow::Result<()> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &env.stack.bootstrap)
        .set("linger.ms", "20")
        .set("queue.buffering.max.kbytes", "1048576")
        .create()?;
    let topic = env.topic("bench.in");
    let mut pending = Vec::new();
    for i in 0..records {
        let key = format!("k{i}");
        let delivery = producer
            .send_result(FutureRecord::to(&topic).key(&key).payload(payload))
            .map_err(|(e, _)| e)?;
        pending.push(delivery);
        if pending.len() >= 10_000 {
            for p in pending.drain(..) {
                p.await?.map_err(|(e, _)| e)?;
            }
        }
    }
    for p in pending {
        p.await?.map_err(|(e, _)| e)?;
    }
    Ok(())
}

async fn create_topic(env: &TestEnv, topic: &str) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &env.stack.bootstrap)
        .create()?;
    let results = admin
        .create_topics(
            &[NewTopic::new(topic, 6, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await?;
    for r in results {
        r.map_err(|(t, e)| anyhow::anyhow!("creating {t}: {e}"))?;
    }
    Ok(())
}

fn kafka_tool(args: &Args, class: &str, tool_args: &[String]) -> anyhow::Result<String> {
    let out = Command::new("java")
        .args(["-Xmx512m", "-cp", &format!("{}/*", args.kafka_libs), class])
        .args(tool_args)
        .output()
        .with_context(|| format!("running {class}"))?;
    if !out.status.success() {
        bail!("{class} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Records/s of `ProducerPerformance` (its final summary line).
fn producer_tool(
    args: &Args,
    env: &TestEnv,
    topic: &str,
    records: usize,
    size: usize,
) -> anyhow::Result<f64> {
    let out = kafka_tool(
        args,
        "org.apache.kafka.tools.ProducerPerformance",
        &[
            "--topic".into(),
            topic.into(),
            "--num-records".into(),
            records.to_string(),
            "--record-size".into(),
            size.to_string(),
            "--throughput".into(),
            "-1".into(),
            "--producer-props".into(),
            format!("bootstrap.servers={}", env.stack.bootstrap),
            "acks=all".into(),
            "linger.ms=5".into(),
        ],
    )?;
    let last = out
        .lines()
        .rev()
        .find(|l| l.contains("records sent"))
        .context("no summary line")?;
    // "N records sent, X records/sec (Y MB/sec), ..."
    last.split(',')
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("cannot read records/sec from: {last}"))
}

/// Records/s of `ConsumerPerformance` while fetching (`fetch.nMsg.sec`: group join excluded).
fn consumer_tool(args: &Args, env: &TestEnv, topic: &str, records: usize) -> anyhow::Result<f64> {
    let out = kafka_tool(
        args,
        "org.apache.kafka.tools.ConsumerPerformance",
        &[
            "--bootstrap-server".into(),
            env.stack.bootstrap.clone(),
            "--topic".into(),
            topic.into(),
            "--num-records".into(),
            records.to_string(),
        ],
    )?;
    let mut lines = out.lines().skip_while(|l| !l.contains("nMsg.sec"));
    let header: Vec<&str> = lines
        .next()
        .context("no header line")?
        .split(',')
        .map(str::trim)
        .collect();
    let values: Vec<&str> = lines
        .next()
        .context("no figures")?
        .split(',')
        .map(str::trim)
        .collect();
    let column = header
        .iter()
        .position(|h| *h == "fetch.nMsg.sec")
        .context("no fetch.nMsg.sec column")?;
    values[column].parse().context("parsing fetch.nMsg.sec")
}

/// Quantile `q` of a Prometheus histogram (summed over labels), interpolated within buckets.
fn histogram_quantile(text: &str, name: &str, q: f64) -> f64 {
    let mut buckets: Vec<(f64, f64)> = Vec::new();
    let bucket = format!("{name}_bucket");
    for sample in samples(text).into_iter().filter(|s| s.name == bucket) {
        let Some((_, le)) = sample.labels.iter().find(|(k, _)| k == "le") else {
            continue;
        };
        let le = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse().unwrap_or(f64::INFINITY)
        };
        let count = sample.value;
        match buckets.iter_mut().find(|(b, _)| *b == le) {
            Some(entry) => entry.1 += count,
            None => buckets.push((le, count)),
        }
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let Some(&(_, total)) = buckets.last() else {
        return 0.0;
    };
    let rank = q * total;
    let mut prev = (0.0, 0.0);
    for &(le, count) in &buckets {
        if count >= rank {
            if le.is_infinite() {
                return prev.0;
            }
            let width = count - prev.1;
            return if width <= 0.0 {
                le
            } else {
                prev.0 + (le - prev.0) * (rank - prev.1) / width
            };
        }
        prev = (le, count);
    }
    prev.0
}

/// Peak resident set size of process `pid` (VmHWM), in MB.
fn peak_rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}
