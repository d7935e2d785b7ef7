//! Long-lived state under a steady rate (`bench/soak`, issue 14).
//!
//! Under a fresh prefix it fills the resolver's state first ([`resolver_state`]): `--prefill`
//! seen-set entries per partition of `resolver.dedupe` (at the default, `dedupe_max_entries`:
//! every new email evicts the oldest, as in a saturated deployment) and `--links` thread links
//! per partition of `threads`, all within the age bounds. Then it starts the whole topology
//! (SMTP ingest to PostgreSQL), times the resolver from start to ready (tables loaded:
//! `/healthz`; every partition restored: the runtime's log line; then `/readyz`), and offers the mixed corpus
//! at `--rate` emails/s for `--minutes`. Every `--sample-secs`, per stage: records read,
//! processing time per record (the runtime's histogram), VmRSS, CPU, consumer lag, and the
//! interval's received → CRM-write latency. At the end: the samples, and per stage the
//! least-squares slope of each figure with a verdict (flat or not).
//!
//! Exits 0 when the run completed (a slope is reported, not failed on); non-zero when a
//! processor died (named, with what it said last) or emails were lost (fewer CRM activities
//! than unique emails accepted, after draining).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use mailstream_bench::load::{self, Counters, Offer};
use mailstream_bench::procstat::{Pids, Watch, stack_and_self};
use mailstream_bench::stages::{counts, died, restores, rss_mib};
use mailstream_bench::trend::{Fit, fit};
use mailstream_bench::{prefill, resolver_state};
use mailstream_tests::corpus::{CorpusOptions, Templates, load_tables};
use mailstream_tests::pipeline::{
    Pipeline, PipelineOptions, STREAM_PROCESSORS, Sink, metric_if_served,
};
use mailstream_tests::{Stack, TestEnv, http_get, log_dir, now_ms};
use serde::Serialize;

#[derive(Parser)]
struct Args {
    /// Dedupe entries written to each partition of `resolver.dedupe` before the start.
    #[arg(long, default_value_t = 1_000_000)]
    prefill: usize,
    /// Thread links written to each partition of `threads` before the start.
    #[arg(long, default_value_t = 100_000)]
    links: usize,
    /// Emails offered per second over SMTP.
    #[arg(long, default_value_t = 50.0)]
    rate: f64,
    #[arg(long, default_value_t = 60)]
    minutes: u64,
    /// Seconds between samples.
    #[arg(long, default_value_t = 60)]
    sample_secs: u64,
    /// Concurrent SMTP sessions.
    #[arg(long, default_value_t = 8)]
    sessions: usize,
    #[arg(long, default_value_t = 2_000)]
    templates: usize,
    /// How long the pre-filled resolver may take to become ready.
    #[arg(long, default_value_t = 900)]
    ready_timeout_secs: u64,
    /// Write the samples and slopes as JSON here too.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Only delete the topics under this prefix (a failed run keeps them), then exit.
    #[arg(long)]
    clean: Option<String>,
}

/// One interval between samples, as printed.
#[derive(Debug, Serialize)]
struct Interval {
    end_min: f64,
    accepted_rps: f64,
    crm_writes: i64,
    latency_ms: [f64; 2],
    machine_cpu_percent: f64,
    ingest_rss_mib: f64,
    stages: Vec<StageInterval>,
}

#[derive(Debug, Serialize)]
struct StageInterval {
    in_rps: f64,
    us_per_record: Option<f64>,
    rss_mib: f64,
    cpu_percent: f64,
    /// At the end of the interval.
    lag: f64,
}

/// The resolver's start on its pre-filled state.
#[derive(Debug, Serialize)]
struct Startup {
    dedupe_entries: usize,
    links: usize,
    written_secs: f64,
    healthz_secs: Option<f64>,
    restored_secs: f64,
    /// The restore itself (the runtime's `state restored` time, summed over assignments).
    restore_secs: f64,
    ready_secs: f64,
    rss_mib: f64,
}

/// Waits for the resolver: `/healthz` (tables loaded), every partition restored (its log),
/// then `/readyz`; seconds since `started` of each.
async fn startup(
    p: &mut Pipeline,
    started: Instant,
    partitions: usize,
    timeout: Duration,
) -> anyhow::Result<(Option<f64>, (f64, f64), f64)> {
    let port = p.proc("resolver").metrics_port;
    let log = log_dir().join(format!("{}resolver-a.log", p.env.prefix));
    let (mut healthz, mut restored) = (None, None);
    loop {
        if let Some(death) = died(p).await {
            bail!("{death} while the resolver started");
        }
        let t = started.elapsed().as_secs_f64();
        let url = |path: &str| format!("http://127.0.0.1:{port}/{path}");
        if healthz.is_none() && http_get(&url("healthz")).await.0 == 200 {
            healthz = Some(t);
        }
        if restored.is_none() {
            let (done, ms) = restores(&std::fs::read_to_string(&log).unwrap_or_default());
            if done >= partitions {
                restored = Some((t, ms as f64 / 1e3));
            }
        }
        if let Some(r) = restored
            && http_get(&url("readyz")).await.0 == 200
        {
            return Ok((healthz, r, t));
        }
        if started.elapsed() > timeout {
            bail!(
                "the resolver was not ready after {timeout:?} (tables loaded: {}, restored: {}; log {})",
                healthz.is_some(),
                restored.is_some(),
                log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Count and p50/p95 of received → CRM write of the activities written in (from, to] (epoch s).
async fn latency(
    db: &tokio_postgres::Client,
    schema: &str,
    from: f64,
    to: f64,
) -> anyhow::Result<(i64, [f64; 2])> {
    let row = db
        .query_one(
            &format!(
                "SELECT count(*), percentile_cont(ARRAY[0.5, 0.95]::float8[]) WITHIN GROUP \
                 (ORDER BY extract(epoch FROM written_at - received_at)::float8 * 1000) \
                 FROM {schema}.email_activities \
                 WHERE written_at > to_timestamp($1) AND written_at <= to_timestamp($2)"
            ),
            &[&from, &to],
        )
        .await
        .context("latency of the interval")?;
    let q: Option<Vec<f64>> = row.get(1);
    let q = q.unwrap_or_default();
    Ok((row.get(0), [0, 1].map(|i| q.get(i).copied().unwrap_or(0.0))))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(prefix) = &args.clean {
        if !prefix.starts_with("t-soak-") {
            bail!("--clean takes a soak run's prefix (t-soak-...), not {prefix}");
        }
        let env = TestEnv::with_prefix(Stack::get(), prefix);
        eprintln!("deleted {} topics", prefill::delete_topics(&env).await?);
        return Ok(());
    }
    if args.rate <= 0.0 || args.sample_secs == 0 {
        bail!("--rate and --sample-secs must be positive");
    }
    let templates = Templates::generate(CorpusOptions {
        templates: args.templates,
        ..CorpusOptions::default()
    });
    let env = TestEnv::new("soak");
    load_tables(&env).map_err(anyhow::Error::msg)?;
    eprintln!("== prefix {}", env.prefix);
    let partitions = prefill::partitions(&env, &env.topic("parsed"))?;
    let n = partitions.len();
    let (seen_secs, links_secs) =
        resolver_state::write(&env, args.prefill, args.links, &partitions).await?;
    eprintln!(
        "== filled: {} dedupe entries in {seen_secs:.1} s, {} thread links in {links_secs:.1} s",
        args.prefill * n,
        args.links * n
    );

    let schema = format!("bench_{}", &env.prefix[7..15]);
    let url = std::env::var("MAILSTREAM_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://mailstream@127.0.0.1:5433/mailstream".into());
    let tuning = std::env::vars()
        .filter(|(k, _)| k.starts_with("MAILSTREAM_BATCH_") || k.starts_with("MAILSTREAM_RDKAFKA_"))
        .collect();
    let options = PipelineOptions {
        sink: Sink::Postgres {
            url: url.clone(),
            schema: schema.clone(),
        },
        // `state restored` (at debug; the stream module logs nothing else there but rare aborts).
        log_level: "warn,mailstream_runtime::stream=debug".into(),
        common: tuning,
    };
    let started = Instant::now();
    let mut p = Pipeline::start(&env, &options);
    let timeout = Duration::from_secs(args.ready_timeout_secs);
    let (healthz_secs, (restored_secs, restore_secs), ready_secs) =
        startup(&mut p, started, n, timeout).await?;
    let startup = Startup {
        dedupe_entries: args.prefill * n,
        links: args.links * n,
        written_secs: seen_secs + links_secs,
        healthz_secs,
        restored_secs,
        restore_secs,
        ready_secs,
        rss_mib: rss_mib(&p, "resolver"),
    };
    eprintln!("== {startup:?}");
    p.wait_ready(Duration::from_secs(120))
        .await
        .map_err(anyhow::Error::msg)?;
    let (db, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .context("connecting to PostgreSQL")?;
    tokio::spawn(conn);

    let mut names: Vec<(String, Pids)> = p
        .procs
        .iter()
        .filter_map(|x| Some((x.name.to_string(), Pids::Tree(x.pid()?))))
        .collect();
    names.extend(stack_and_self());
    let mut watch = Watch::new(names);
    let stop = Arc::new(AtomicBool::new(false));
    let counters = Arc::new(Counters::default());
    let limit = (args.rate * args.minutes as f64 * 60.0) as usize;
    let t0 = Instant::now();
    let o = Offer {
        templates: templates.clone(),
        smtp: p.smtp_addr.clone(),
        tag: env.prefix[7..15].to_string(),
        sessions: args.sessions.max(1),
        rate: Some(args.rate),
        limit,
        t0,
        stop: stop.clone(),
        counters: counters.clone(),
    };
    let workers: Vec<_> = (0..o.sessions)
        .map(|w| tokio::spawn(load::session(o.clone(), w)))
        .collect();
    let every = Duration::from_secs(args.sample_secs);
    let (mut prev, mut mark, mut wall) = (counts(&p).await?, watch.mark(), now_ms() as f64 / 1e3);
    let mut prev_accepted = 0.0;
    let mut intervals = Vec::new();
    let mut next = t0 + every;
    while !workers.iter().all(|w| w.is_finished()) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if let Some(death) = died(&mut p).await {
            stop.store(true, Ordering::Relaxed);
            bail!("{death}, {:.0} s into the run", t0.elapsed().as_secs_f64());
        }
        if Instant::now() < next {
            continue;
        }
        next += every;
        let now = counts(&p).await.context("sampling the stages' metrics")?;
        let (now_mark, now_wall) = (watch.mark(), now_ms() as f64 / 1e3);
        let usage = watch.usage(&mark, &now_mark);
        let cpu = |name: &str| {
            usage
                .iter()
                .find(|u| u.name == name)
                .map_or(0.0, |u| u.cpu_percent)
        };
        let (crm_writes, latency_ms) = latency(&db, &schema, wall, now_wall).await?;
        let secs = now_wall - wall;
        let accepted = counters.accepted.load(Ordering::Relaxed) as f64;
        let stages = STREAM_PROCESSORS
            .iter()
            .enumerate()
            .map(|(k, name)| {
                let records = now.read[k] - prev.read[k];
                StageInterval {
                    in_rps: records / secs,
                    us_per_record: (records > 0.0).then(|| {
                        1e6 * (now.processing_secs[k] - prev.processing_secs[k]) / records
                    }),
                    rss_mib: rss_mib(&p, name),
                    cpu_percent: cpu(name),
                    lag: now.lag[k],
                }
            })
            .collect();
        let interval = Interval {
            end_min: t0.elapsed().as_secs_f64() / 60.0,
            accepted_rps: (accepted - prev_accepted) / secs,
            crm_writes,
            latency_ms,
            machine_cpu_percent: cpu("machine"),
            ingest_rss_mib: rss_mib(&p, "ingest"),
            stages,
        };
        eprintln!("{interval:?}");
        intervals.push(interval);
        (prev, mark, wall, prev_accepted) = (now, now_mark, now_wall, accepted);
    }
    let offer_secs = t0.elapsed().as_secs_f64();

    // Drain: until the sink has committed a result for every unique email.
    let unique = counters.unique.load(Ordering::Relaxed);
    let drain = Instant::now();
    let results = |text: &str, outcome: &str| {
        let labels: &[(&str, &str)] = if outcome.is_empty() {
            &[]
        } else {
            &[("outcome", outcome)]
        };
        metric_if_served(text, "mailstream_crm_writes_total", labels).unwrap_or(0.0) as i64
    };
    let sink = loop {
        if let Some(death) = died(&mut p).await {
            bail!("{death} while the pipeline drained");
        }
        let text = p.scrape("crm-sink").await;
        if results(&text, "") >= unique as i64 {
            break text;
        }
        if drain.elapsed() > Duration::from_secs(600) {
            bail!(
                "the sink had no result for all {unique} unique emails 10 minutes after the offer"
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let (skipped, dead) = (results(&sink, "skipped"), results(&sink, "dead-lettered"));
    let activities: i64 = db
        .query_one(
            &format!("SELECT count(*) FROM {schema}.email_activities"),
            &[],
        )
        .await
        .context("counting CRM activities")?
        .get(0);
    p.stop();

    let fits = report(&args, &startup, &intervals, offer_secs);
    let accepted = counters.accepted.load(Ordering::Relaxed);
    println!(
        "\n{accepted} emails accepted in {:.0} s ({unique} unique, {} SMTP errors), drained in {:.0} s; CRM activities {activities}, skipped by the sink {skipped}, dead-lettered {dead}",
        offer_secs,
        counters.errors.load(Ordering::Relaxed),
        drain.elapsed().as_secs_f64()
    );
    if let Some(path) = &args.json {
        let json = serde_json::json!({"startup": startup, "intervals": intervals, "fits": fits});
        std::fs::write(path, serde_json::to_string_pretty(&json)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let lost = unique as i64 - activities - skipped;
    if lost > 0 {
        bail!(
            "{lost} emails lost: {activities} CRM activities and {skipped} skipped for {unique} unique emails accepted (topics kept under {}; `--clean` deletes them)",
            env.prefix
        );
    }
    let deleted = prefill::delete_topics(&env).await?;
    db.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .await
        .context("dropping the run's CRM schema")?;
    std::fs::remove_dir_all(&p.blobs).with_context(|| format!("removing {}", p.blobs.display()))?;
    eprintln!(
        "== cleaned up: {deleted} topics, schema {schema}, {}",
        p.blobs.display()
    );
    Ok(())
}

/// Prints the start-up, the samples and the fits; returns the fits per stage.
fn report(
    args: &Args,
    s: &Startup,
    intervals: &[Interval],
    offer_secs: f64,
) -> Vec<serde_json::Value> {
    // Per million only where the entries dwarf the process's own baseline (~50 MiB).
    let million = s.dedupe_entries as f64 / 1e6;
    let per_million = (million >= 1.0).then(|| {
        let mib = s.rss_mib / million;
        format!(" ({mib:.0} MiB per million dedupe entries, links and baseline included)")
    });
    println!(
        "\nresolver start on {} dedupe entries and {} thread links (written in {:.0} s): tables loaded (/healthz) after {}, every partition restored after {:.1} s (the restore itself {:.1} s), ready after {:.1} s; RSS at ready {:.0} MiB{}",
        s.dedupe_entries,
        s.links,
        s.written_secs,
        s.healthz_secs
            .map_or("(not seen)".into(), |h| format!("{h:.1} s")),
        s.restored_secs,
        s.restore_secs,
        s.ready_secs,
        s.rss_mib,
        per_million.unwrap_or_default(),
    );
    println!(
        "\nevery {} s at {}/s; per stage: records in/s · processing µs per record · RSS MiB · CPU % · lag at the sample",
        args.sample_secs, args.rate
    );
    println!(
        "\n| min | accepted/s | CRM writes | p50 / p95 ms | machine CPU % | parser | resolver | scorer | crm-sink | ingest MiB |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for i in intervals {
        let cells: Vec<String> = i
            .stages
            .iter()
            .map(|s| {
                format!(
                    "{:.0} · {} · {:.0} · {:.0} · {:.0}",
                    s.in_rps,
                    s.us_per_record.map_or("-".into(), |u| format!("{u:.0}")),
                    s.rss_mib,
                    s.cpu_percent,
                    s.lag
                )
            })
            .collect();
        println!(
            "| {:.1} | {:.1} | {} | {:.0} / {:.0} | {:.0} | {} | {:.0} |",
            i.end_min,
            i.accepted_rps,
            i.crm_writes,
            i.latency_ms[0],
            i.latency_ms[1],
            i.machine_cpu_percent,
            cells.join(" | "),
            i.ingest_rss_mib
        );
    }
    // The first interval (warm-up) is left out of the fits once there are four or more.
    let fitted = if intervals.len() >= 4 {
        &intervals[1..]
    } else {
        intervals
    };
    let hours = offer_secs / 3600.0;
    let lag_floor = 2.0 * args.rate;
    println!(
        "\nslopes (least squares over {} of {} intervals; flat: the fitted change over the {:.0} min run is under 10 % of the mean or under 20 µs, 8 MiB, {lag_floor:.0} records, or the slope is within two standard errors of none):",
        fitted.len(),
        intervals.len(),
        offer_secs / 60.0
    );
    println!(
        "\n| stage | µs per record: mean, per hour | RSS MiB: mean, per hour | lag: mean, per hour |"
    );
    println!("|---|---|---|---|");
    let show = |f: &Option<Fit>| {
        f.as_ref().map_or("(too few samples)".into(), |f| {
            let (m, d, e) = (f.mean, f.per_hour, f.stderr_per_hour);
            format!("{m:.0}, {d:+.1} ± {e:.1}/h: **{}**", f.verdict)
        })
    };
    let at = |i: &Interval| i.end_min / 60.0;
    let mut out = Vec::new();
    for (k, name) in STREAM_PROCESSORS.iter().enumerate() {
        let series = |f: &dyn Fn(&StageInterval) -> Option<f64>| -> Vec<(f64, f64)> {
            fitted
                .iter()
                .filter_map(|i| Some((at(i), f(&i.stages[k])?)))
                .collect()
        };
        let cost = fit(&series(&|s| s.us_per_record), hours, 20.0);
        let rss = fit(&series(&|s| Some(s.rss_mib)), hours, 8.0);
        let lag = fit(&series(&|s| Some(s.lag)), hours, lag_floor);
        println!(
            "| {name} | {} | {} | {} |",
            show(&cost),
            show(&rss),
            show(&lag)
        );
        out.push(
            serde_json::json!({"stage": name, "us_per_record": cost, "rss_mib": rss, "lag": lag}),
        );
    }
    let ingest: Vec<(f64, f64)> = fitted.iter().map(|i| (at(i), i.ingest_rss_mib)).collect();
    let rss = fit(&ingest, hours, 8.0);
    println!("| ingest | | {} | |", show(&rss));
    out.push(serde_json::json!({"stage": "ingest", "rss_mib": rss}));
    out
}
