//! The pass-through chain baseline: four `bench-hop` processes (see `src/hop.rs`) in a row on
//! the same broker, fed flat out with the same bytes the topology's `raw-email` carries (each
//! corpus email inline up to ingest's 512 KiB inline limit, a claim-check-sized stub above it),
//! by a producer set up like ingest's (idempotent, acks=all, zstd). Its throughput is the
//! ceiling the runtime and broker allow four hops on this machine; the topology's flat-out
//! throughput is reported as a ratio of it.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use apache_avro::types::Value;
use mailstream_tests::corpus::{Generator, Templates};
use mailstream_tests::pipeline::metric;
use mailstream_tests::{TestEnv, free_port, http_get, log_dir, now_ms, terminate};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::procstat::{Pids, Usage, Watch, stack_and_self};

/// Ingest's `inline_limit_bytes` default: larger emails travel as a blob reference.
const INLINE_LIMIT: usize = 512 * 1024;

#[derive(Debug, Clone, serde::Serialize)]
pub struct ChainFigures {
    pub records: usize,
    pub mean_bytes: usize,
    /// Records/s from the first produce to the last record through hop 4.
    pub rps: f64,
    pub secs: f64,
    /// Per hop: records/s over its own first-to-last record.
    pub hop_rps: Vec<f64>,
    /// CPU and memory of the hops, the stack and the feeding producer over the run.
    pub usage: Vec<Usage>,
}

fn bin_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    Ok(exe.parent().context("executable dir")?.to_path_buf())
}

fn spawn_hop(env: &TestEnv, hop: usize, port: u16) -> anyhow::Result<Child> {
    let log = log_dir().join(format!("{}bench-hop{hop}.log", env.prefix));
    let file = std::fs::File::create(&log)?;
    Command::new(bin_dir()?.join("bench-hop"))
        .arg(hop.to_string())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("MAILSTREAM_BOOTSTRAP_SERVERS", &env.stack.bootstrap)
        .env("MAILSTREAM_SCHEMA_REGISTRY_URL", &env.stack.registry)
        .env("MAILSTREAM_TOPIC_PREFIX", &env.prefix)
        .env("MAILSTREAM_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("MAILSTREAM_INSTANCE_ID", "a")
        .env("MAILSTREAM_LOG_LEVEL", "warn")
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .context("spawning bench-hop (build it: cargo build --release -p mailstream-bench)")
}

/// Runs the chain over `records` corpus emails.
pub async fn run(
    templates: std::sync::Arc<Templates>,
    records: usize,
) -> anyhow::Result<ChainFigures> {
    let env = TestEnv::new("chain");
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &env.stack.bootstrap)
        .create()?;
    let names: Vec<String> = (1..=3)
        .map(|k| env.topic(&format!("bench.hop{k}")))
        .collect();
    let topics: Vec<NewTopic> = names
        .iter()
        .map(|n| {
            NewTopic::new(n, 6, TopicReplication::Fixed(1)).set("max.message.bytes", "8388608")
        })
        .collect();
    for r in admin.create_topics(&topics, &AdminOptions::new()).await? {
        r.map_err(|(t, e)| anyhow::anyhow!("creating {t}: {e}"))?;
    }

    // The payloads, encoded once: the registry's framing of one record, then Avro datums.
    let sample = env
        .encode("bench.in", mailstream_tests::bench_record("x", 1))
        .await;
    let schema = apache_avro::Schema::parse_str(
        mailstream_runtime::catalog::schema("bench-record.avsc").context("schema")?,
    )?;
    let writer = apache_avro::writer::datum::GenericDatumWriter::builder(&schema).build()?;
    let mut generator = Generator::new(templates, "chain", 0);
    let mut payloads = Vec::with_capacity(records);
    let mut bytes = 0;
    for i in 0..records {
        let email = generator.next_email();
        let body = if email.data.len() <= INLINE_LIMIT {
            email.data.to_vec()
        } else {
            format!("file:///var/lib/mailstream/blobs/{:064x}", i).into_bytes()
        };
        let value = Value::Record(vec![
            ("id".into(), Value::String(format!("r{i}"))),
            ("sent_at".into(), Value::TimestampMillis(now_ms())),
            ("payload".into(), Value::Bytes(body)),
        ]);
        let mut framed = sample[..5].to_vec();
        framed.extend(writer.write_value_to_vec(value)?);
        bytes += framed.len();
        payloads.push(framed);
    }

    let ports: Vec<u16> = (0..4).map(|_| free_port()).collect();
    let mut hops = Vec::new();
    for (k, port) in ports.iter().enumerate() {
        hops.push(spawn_hop(&env, k + 1, *port)?);
    }
    let mut names: Vec<(String, Pids)> = hops
        .iter()
        .enumerate()
        .map(|(k, h)| (format!("hop{}", k + 1), Pids::Tree(h.id())))
        .collect();
    names.extend(stack_and_self());
    let mut watch = Watch::new(names);
    let started = Instant::now();
    for port in &ports {
        while http_get(&format!("http://127.0.0.1:{port}/readyz")).await.0 != 200 {
            if started.elapsed() > Duration::from_secs(60) {
                bail!(
                    "bench-hop not ready in 60 s (logs in {})",
                    log_dir().display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &env.stack.bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "2")
        .set("compression.type", "zstd")
        .set("message.max.bytes", "8388608")
        .set("queue.buffering.max.kbytes", "1048576")
        .create()?;
    let topic = env.topic("bench.in");
    let t0 = Instant::now();
    let start_mark = watch.mark();
    let mut last_mark = Instant::now();
    let feed = tokio::spawn(async move {
        let mut pending = Vec::new();
        for (i, p) in payloads.iter().enumerate() {
            let key = format!("r{i}");
            loop {
                match producer.send_result(FutureRecord::to(&topic).key(&key).payload(p)) {
                    Ok(d) => {
                        pending.push(d);
                        break;
                    }
                    // Queue full: let deliveries drain.
                    Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
                }
            }
        }
        for p in pending {
            let _ = p.await;
        }
    });
    // Per hop: (first moment it had records, last moment it reached `records`).
    let mut first: Vec<Option<Instant>> = vec![None; 4];
    let mut last: Vec<Option<Instant>> = vec![None; 4];
    while last[3].is_none() {
        if t0.elapsed() > Duration::from_secs(1_800) {
            bail!("the chain did not finish in 30 minutes");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        // A hop that died never finishes: say so instead of waiting for it.
        for (k, hop) in hops.iter_mut().enumerate() {
            if let Some(status) = hop.try_wait()? {
                bail!(
                    "hop{} exited ({status}) before the chain finished; its log is in {}",
                    k + 1,
                    log_dir().display()
                );
            }
        }
        if last_mark.elapsed() >= Duration::from_secs(1) {
            watch.mark();
            last_mark = Instant::now();
        }
        for (k, port) in ports.iter().enumerate() {
            let text = http_get(&format!("http://127.0.0.1:{port}/metrics"))
                .await
                .1;
            let n = metric(&text, "mailstream_records_in_total", &[]);
            let committed = metric(
                &text,
                "mailstream_transactions_total",
                &[("outcome", "committed")],
            );
            if n > 0.0 && first[k].is_none() {
                first[k] = Some(Instant::now());
            }
            if n >= records as f64 && committed > 0.0 && last[k].is_none() {
                last[k] = Some(Instant::now());
            }
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let end_mark = watch.mark();
    let usage = watch.usage(&start_mark, &end_mark);
    feed.await?;
    for mut hop in hops {
        terminate(&mut hop, Duration::from_secs(30));
    }
    let hop_rps = first
        .iter()
        .zip(&last)
        .map(|(f, l)| match (f, l) {
            (Some(f), Some(l)) => records as f64 / l.duration_since(*f).as_secs_f64().max(1e-3),
            _ => 0.0,
        })
        .collect();
    Ok(ChainFigures {
        records,
        mean_bytes: bytes / records.max(1),
        rps: records as f64 / secs,
        secs,
        hop_rps,
        usage,
    })
}
