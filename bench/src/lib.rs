//! Shared pieces of the benchmarks: process CPU and memory from `/proc` ([`procstat`]), the
//! pass-through chain baseline ([`chain`]), the end-to-end figures and their tables
//! ([`figures`]), changelogs and tables filled with realistic entries ([`prefill`]; the
//! resolver's state: [`resolver_state`]), a steady SMTP load ([`load`]), a running pipeline's
//! stages ([`stages`]), and whether a figure stays flat over a long run ([`trend`]).
//! Corpus generation, the SMTP client and the running pipeline are in `mailstream-tests`
//! (`corpus`, `smtp`, `pipeline`), shared with the chaos suite.

pub mod chain;
pub mod figures;
pub mod procstat;

/// Changelogs and tables filled with realistic entries on the local stack, fast (one producer,
/// no transactions), encoded as the runtime encodes them: `bench-state` measures a store and a
/// table at a million entries with them, `bench-soak` starts a resolver on a pre-filled
/// seen-set and `threads` table.
pub mod prefill {
    use std::time::{Duration, Instant};

    use anyhow::{Context, bail};
    use mailstream_runtime::avro::{AvroCodec, registry_settings};
    use mailstream_runtime::config::{self, ConfigSource};
    use mailstream_runtime::records::{DedupeEntry, ThreadLink};
    use mailstream_runtime::{AvroRecord, Naming, NoSettings, RuntimeConfig, Topology};
    use mailstream_tests::TestEnv;
    use rdkafka::ClientConfig;
    use rdkafka::admin::{AdminClient, AdminOptions};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::error::KafkaError;
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
    use rdkafka::types::RDKafkaErrorCode;

    /// A Gmail-style message id (~50 bytes), distinct per `i`.
    pub fn message_id(i: usize) -> String {
        format!(
            "<CAF{i:012}x{:016x}@mail.gmail.com>",
            i.wrapping_mul(0x9E37_79B9)
        )
    }

    /// A dedupe entry shaped like a real one (a Gmail-style message id, a UUID ingest id), first
    /// seen at `at` (ms).
    pub fn dedupe_entry(i: usize, at: i64) -> DedupeEntry {
        DedupeEntry {
            message_id: message_id(i),
            first_seen_at: at,
            ingest_id: format!("{:08x}-7d1e-4c0b-9a55-{:012x}", i, i * 7919),
            copies: 1,
        }
    }

    /// A thread link shaped like a real one (four messages a thread, a deal on every fifth),
    /// linked at `at` (ms); other fields (none today) their defaults.
    #[allow(clippy::needless_update)]
    pub fn thread_link(i: usize, at: i64) -> ThreadLink {
        ThreadLink {
            message_id: message_id(i),
            thread_id: message_id(i - i % 4),
            deal_id: i.is_multiple_of(5).then(|| format!("{}", 10_000 + i % 997)),
            contact_id: Some(format!("c-{:08x}-4f6a-9b7e-{:012x}", i % 50_000, i)),
            linked_at: at,
            waiting: false,
        }
    }

    /// One record to write: its key and value, and optionally its partition and timestamp
    /// (else the producer's partitioner and the time of the send).
    pub struct Entry<T> {
        pub key: String,
        pub value: T,
        pub partition: Option<i32>,
        pub timestamp_ms: Option<i64>,
    }

    /// The runtime configuration of a processor in `env` (the resolver's).
    pub fn runtime_config(env: &TestEnv) -> anyhow::Result<RuntimeConfig> {
        let source = ConfigSource::from_process(None)
            .with_env("MAILSTREAM_BOOTSTRAP_SERVERS", env.stack.bootstrap.clone())
            .with_env("MAILSTREAM_SCHEMA_REGISTRY_URL", env.stack.registry.clone())
            .with_env("MAILSTREAM_TOPIC_PREFIX", env.prefix.clone());
        let (config, _): (_, NoSettings) = config::load("resolver", &source)?;
        Ok(config)
    }

    pub fn admin(env: &TestEnv) -> anyhow::Result<AdminClient<DefaultClientContext>> {
        Ok(ClientConfig::new()
            .set("bootstrap.servers", &env.stack.bootstrap)
            .create()?)
    }

    /// Writes `count` records made by `record` to the logical `topic`, encoded as the runtime
    /// does; returns the seconds it took.
    pub async fn write<T: AvroRecord + Sync>(
        env: &TestEnv,
        config: &RuntimeConfig,
        topic: &str,
        count: usize,
        record: impl Fn(usize) -> Entry<T>,
    ) -> anyhow::Result<f64> {
        let naming = Naming::new(env.prefix.clone());
        let codec = AvroCodec::new(
            registry_settings(config)?,
            &Topology::embedded()?,
            &naming,
            &[topic.to_string()],
        )?;
        let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
            .set("bootstrap.servers", &env.stack.bootstrap)
            .set("linger.ms", "20")
            .set("compression.type", "lz4")
            .create()?;
        let physical = env.topic(topic);
        let before = end_offsets(env, &physical)?;
        let started = Instant::now();
        for i in 0..count {
            let entry = record(i);
            let payload = codec.encode(topic, &entry.value).await?;
            let mut next = BaseRecord::to(&physical).key(&entry.key).payload(&payload);
            if let Some(p) = entry.partition {
                next = next.partition(p);
            }
            if let Some(t) = entry.timestamp_ms {
                next = next.timestamp(t);
            }
            loop {
                match producer.send(next) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        next = back;
                        producer.poll(Duration::from_millis(5));
                    }
                    Err((e, _)) => bail!("producing to {physical}: {e}"),
                }
            }
        }
        producer.flush(Duration::from_secs(120))?;
        let written = end_offsets(env, &physical)? - before;
        if written < count as i64 {
            bail!("{physical} took {written} records, {count} were sent");
        }
        Ok(started.elapsed().as_secs_f64())
    }

    /// The partitions of the physical `topic`.
    pub fn partitions(env: &TestEnv, topic: &str) -> anyhow::Result<Vec<i32>> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &env.stack.bootstrap)
            .create()?;
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .with_context(|| format!("metadata of {topic}"))?;
        let ids: Vec<i32> = metadata
            .topics()
            .iter()
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        if ids.is_empty() {
            bail!("{topic} has no partitions (does it exist?)");
        }
        Ok(ids)
    }

    /// The sum of the end offsets of the physical `topic`'s partitions.
    pub fn end_offsets(env: &TestEnv, topic: &str) -> anyhow::Result<i64> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &env.stack.bootstrap)
            .create()?;
        let mut total = 0;
        for p in partitions(env, topic)? {
            total += consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .with_context(|| format!("watermarks of {topic}[{p}]"))?
                .1;
        }
        Ok(total)
    }

    /// Deletes every topic of `env` (its prefix's): a benchmark's topics hold millions of
    /// records, and every partition left behind slows the broker's start.
    pub async fn delete_topics(env: &TestEnv) -> anyhow::Result<usize> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &env.stack.bootstrap)
            .create()?;
        let metadata = consumer
            .fetch_metadata(None, Duration::from_secs(10))
            .context("cluster metadata")?;
        let names: Vec<String> = metadata
            .topics()
            .iter()
            .map(|t| t.name().to_string())
            .filter(|n| n.starts_with(&env.prefix))
            .collect();
        if names.is_empty() {
            return Ok(0);
        }
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        for r in admin(env)?.delete_topics(&refs, &options).await? {
            r.map_err(|(t, e)| anyhow::anyhow!("deleting {t}: {e}"))?;
        }
        Ok(names.len())
    }
}

/// The resolver's state as a deployment holds it after a while, written before it starts.
pub mod resolver_state {
    use anyhow::Context;
    use mailstream_tests::{TestEnv, now_ms};

    use crate::prefill::{self, Entry};

    const HOUR_MS: i64 = 3_600_000;
    /// Dedupe entries are first seen within this much before now (the bound is 168 h).
    pub const DEDUPE_SPAN_MS: i64 = 144 * HOUR_MS;
    /// Thread links are linked within this much before now (the bound is 180 days).
    pub const LINK_SPAN_MS: i64 = 30 * 24 * HOUR_MS;

    /// Writes `dedupe` seen-set entries and `links` thread links to each of `partitions` (of
    /// `resolver.dedupe` and `threads`), oldest first, stamped (record time and
    /// `first_seen_at` / `linked_at`) evenly over the spans above: inside the resolver's age
    /// bounds, so none leaves by age at start. Returns the seconds each took.
    pub async fn write(
        env: &TestEnv,
        dedupe: usize,
        links: usize,
        partitions: &[i32],
    ) -> anyhow::Result<(f64, f64)> {
        let config = prefill::runtime_config(env)?;
        let n = partitions.len();
        let now = now_ms();
        // Entry i goes to partition i % n, the k-th of it (k = i / n).
        let at = |i: usize, per: usize, span: i64| {
            now - span + (span as f64 * (i / n) as f64 / per.max(1) as f64) as i64
        };
        let seen = prefill::write(env, &config, "resolver.dedupe", dedupe * n, |i| {
            let t = at(i, dedupe, DEDUPE_SPAN_MS);
            let e = prefill::dedupe_entry(i, t);
            Entry {
                key: e.message_id.clone(),
                value: e,
                partition: Some(partitions[i % n]),
                timestamp_ms: Some(t),
            }
        })
        .await
        .context("filling resolver.dedupe")?;
        // Older mail's links: message ids of their own.
        let first = dedupe * n;
        let linked = prefill::write(env, &config, "threads", links * n, |i| {
            let t = at(i, links, LINK_SPAN_MS);
            let link = prefill::thread_link(first + i, t);
            Entry {
                key: link.message_id.clone(),
                value: link,
                partition: Some(partitions[i % n]),
                timestamp_ms: Some(t),
            }
        })
        .await
        .context("filling threads")?;
        Ok((seen, linked))
    }
}

/// Whether a figure stays flat over a long run: its least-squares line.
pub mod trend {
    use serde::Serialize;

    #[derive(Debug, Serialize)]
    pub struct Fit {
        pub mean: f64,
        pub per_hour: f64,
        /// The standard error of `per_hour` (0 under three points).
        pub stderr_per_hour: f64,
        /// `flat`, `grows` or `falls`.
        pub verdict: &'static str,
    }

    /// Fits `points` (hours, value); flat when the fitted change over `hours` is under 10 % of
    /// the mean or under `floor`, or when the slope is within two standard errors of none
    /// (noise). `None` under two points.
    pub fn fit(points: &[(f64, f64)], hours: f64, floor: f64) -> Option<Fit> {
        if points.len() < 2 {
            return None;
        }
        let n = points.len() as f64;
        let (mx, my) = points
            .iter()
            .fold((0.0, 0.0), |(a, b), (x, y)| (a + x / n, b + y / n));
        let sxx: f64 = points.iter().map(|(x, _)| (x - mx).powi(2)).sum();
        let sxy: f64 = points.iter().map(|(x, y)| (x - mx) * (y - my)).sum();
        let per_hour = if sxx > 0.0 { sxy / sxx } else { 0.0 };
        let residuals: f64 = points
            .iter()
            .map(|(x, y)| (y - my - per_hour * (x - mx)).powi(2))
            .sum();
        let stderr_per_hour = if points.len() > 2 && sxx > 0.0 {
            (residuals / (n - 2.0) / sxx).sqrt()
        } else {
            0.0
        };
        let change = per_hour * hours;
        let small = change.abs() < (0.1 * my.abs()).max(floor);
        let verdict = if small || per_hour.abs() <= 2.0 * stderr_per_hour {
            "flat"
        } else if change > 0.0 {
            "grows"
        } else {
            "falls"
        };
        Some(Fit {
            mean: my,
            per_hour,
            stderr_per_hour,
            verdict,
        })
    }

    #[cfg(test)]
    mod tests {
        use super::fit;

        #[test]
        fn a_line_within_the_tolerance_is_flat_and_a_steep_one_grows() {
            let flat: Vec<(f64, f64)> =
                (0..6).map(|i| (i as f64 / 6.0, 100.0 + i as f64)).collect();
            let f = fit(&flat, 1.0, 0.0).expect("fit");
            assert_eq!(f.verdict, "flat");
            assert!((f.per_hour - 6.0).abs() < 1e-9 && (f.mean - 102.5).abs() < 1e-9);
            let steep: Vec<(f64, f64)> = (0..6)
                .map(|i| (i as f64, 100.0 - 10.0 * i as f64))
                .collect();
            assert_eq!(fit(&steep, 5.0, 0.0).expect("fit").verdict, "falls");
            assert_eq!(fit(&steep, 5.0, 100.0).expect("fit").verdict, "flat");
            assert!(fit(&flat[..1], 1.0, 0.0).is_none());
            let noise: Vec<(f64, f64)> = (0..6)
                .map(|i| (i as f64, [100.0, 160.0, 90.0, 150.0, 100.0, 140.0][i]))
                .collect();
            assert_eq!(fit(&noise, 5.0, 0.0).expect("fit").verdict, "flat");
        }
    }
}

/// A steady SMTP load: sessions offering the mixed corpus on a schedule.
pub mod load {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    use mailstream_tests::corpus::{Class, Generator, Templates};
    use mailstream_tests::smtp::SmtpClient;

    #[derive(Debug, Default)]
    pub struct Counters {
        pub accepted: AtomicUsize,
        /// Accepted first deliveries of a Message-ID (each becomes one CRM activity).
        pub unique: AtomicUsize,
        pub errors: AtomicUsize,
    }

    /// What every session of a load shares.
    #[derive(Clone)]
    pub struct Offer {
        pub templates: Arc<Templates>,
        pub smtp: String,
        /// Distinguishes the run's Message-IDs.
        pub tag: String,
        pub sessions: usize,
        /// Deliveries per second; `None`: flat out.
        pub rate: Option<f64>,
        pub limit: usize,
        pub t0: Instant,
        pub stop: Arc<AtomicBool>,
        pub counters: Arc<Counters>,
    }

    /// Session `w` offers deliveries `w`, `w + sessions`, ... each at `t0 + i / rate` (or flat
    /// out).
    pub async fn session(o: Offer, w: usize) {
        let mut generator = Generator::new(o.templates.clone(), &o.tag, w);
        let mut client: Option<SmtpClient> = None;
        let mut i = w;
        while i < o.limit && !o.stop.load(Ordering::Relaxed) {
            if let Some(rate) = o.rate {
                let due = o.t0 + Duration::from_secs_f64(i as f64 / rate);
                tokio::time::sleep_until(due.into()).await;
            }
            let email = generator.next_email();
            while !o.stop.load(Ordering::Relaxed) {
                if client.is_none() {
                    client = SmtpClient::connect(&o.smtp, "bench.client.test").await.ok();
                }
                let Some(c) = client.as_mut() else {
                    o.counters.errors.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                if c.send(&email.from, &[&email.rcpt], &email.data)
                    .await
                    .is_ok()
                {
                    o.counters.accepted.fetch_add(1, Ordering::Relaxed);
                    if email.class == Class::Unique {
                        o.counters.unique.fetch_add(1, Ordering::Relaxed);
                    }
                    break;
                }
                o.counters.errors.fetch_add(1, Ordering::Relaxed);
                client = None;
            }
            i += o.sessions;
        }
    }
}

/// A running pipeline's stages seen from outside: their counters on `/metrics`, their memory,
/// and a stage that died.
pub mod stages {
    use anyhow::Context;
    use mailstream_tests::pipeline::{Pipeline, STREAM_PROCESSORS, input_of, metric_if_served};
    use mailstream_tests::proc_memory;

    /// Per stream processor at a moment: records read, records written to its input and not yet read,
    /// processing seconds (the sum of its histogram).
    #[derive(Debug, Clone, Default)]
    pub struct Counts {
        pub read: Vec<f64>,
        pub lag: Vec<f64>,
        pub processing_secs: Vec<f64>,
    }

    fn served(text: &str, who: &str, name: &str, labels: &[(&str, &str)]) -> anyhow::Result<f64> {
        metric_if_served(text, name, labels).with_context(|| format!("{who}: no {name} served"))
    }

    pub async fn counts(p: &Pipeline) -> anyhow::Result<Counts> {
        let mut text = p.scrape("ingest").await;
        let mut upstream = served(&text, "ingest", "mailstream_ingest_accepted_total", &[])?;
        let mut c = Counts::default();
        for (k, name) in STREAM_PROCESSORS.iter().enumerate() {
            if k > 0 {
                let (before, out) = (STREAM_PROCESSORS[k - 1], [("topic", input_of(name))]);
                upstream = served(&text, before, "mailstream_records_out_total", &out)?;
            }
            text = p.scrape(name).await;
            let read = served(&text, name, "mailstream_records_in_total", &[])?;
            c.read.push(read);
            c.lag.push((upstream - read).max(0.0));
            let sum = "mailstream_processing_seconds_sum";
            c.processing_secs.push(served(&text, name, sum, &[])?);
        }
        Ok(c)
    }

    /// A processor that exited on its own, with what it said last (the supervisor notices the
    /// exit; a benchmark does not wait for a dead stage).
    pub async fn died(p: &mut Pipeline) -> Option<String> {
        p.supervise().await;
        p.procs.iter().find_map(|x| {
            x.unexpected_exits
                .first()
                .map(|why| format!("{} exited: {why}", x.name))
        })
    }

    /// Resident memory (VmRSS) of the first instance of `name`, 0 while it is down.
    pub fn rss_mib(p: &Pipeline, name: &str) -> f64 {
        p.proc(name)
            .pid()
            .and_then(|pid| proc_memory(pid, "VmRSS"))
            .map_or(0.0, |b| b as f64 / (1024.0 * 1024.0))
    }

    /// The runtime's line (at debug) once an assignment's state is restored, with the partitions
    /// and the time it took.
    pub const RESTORED_LINE: &str = "state restored";

    /// `line` without its terminal colours (ESC [ ... letter).
    fn plain(line: &str) -> String {
        let mut out = String::with_capacity(line.len());
        let mut chars = line.chars();
        while let Some(c) = chars.next() {
            if c == '\x1b' {
                chars.by_ref().find(char::is_ascii_alphabetic);
            } else {
                out.push(c);
            }
        }
        out
    }

    /// Partitions restored so far and the milliseconds their restores took, from a processor's
    /// log.
    pub fn restores(log: &str) -> (usize, u64) {
        let lines = log.lines().map(plain).filter(|l| l.contains(RESTORED_LINE));
        lines.fold((0, 0), |(n, ms), l| {
            let field = |name: &str| l.split_once(name).map(|(_, rest)| rest);
            let list = field("partitions=[").and_then(|r| r.split_once(']'));
            let took = field("elapsed_ms=")
                .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok());
            (
                n + list.map_or(1, |(l, _)| l.split(',').count()),
                ms + took.unwrap_or(0),
            )
        })
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn reads_the_restores_from_a_coloured_log() {
            let log = "\x1b[2mT\x1b[0m \x1b[34mDEBUG\x1b[0m state restored \x1b[3mprocessor\x1b[0m\x1b[2m=\x1b[0m\"resolver\" \x1b[3mpartitions\x1b[0m\x1b[2m=\x1b[0m[0, 1, 2] \x1b[3melapsed_ms\x1b[0m\x1b[2m=\x1b[0m1999\nT INFO other\nT DEBUG state restored partitions=[5] elapsed_ms=1\n";
            assert_eq!(super::restores(log), (4, 2000));
        }
    }
}
