//! End-to-end benchmark of the whole topology on the local stack (`bench/pipeline`).
//!
//! For each offered rate (emails/s over SMTP, or `max`: a fixed number flat out) it starts
//! ingest, parser, resolver, scorer and crm-sink (PostgreSQL) under a fresh prefix, offers the
//! mixed corpus of `mailstream_tests::corpus` from many SMTP sessions, and measures:
//! - throughput of every stage (its `mailstream_records_in_total`, ingest's accepted count),
//! - latency from `received_at` (stamped by ingest) to the CRM write (`email_activities.
//!   written_at`, the PostgreSQL transaction's `now()`): exact p50/p95/p99 over every email,
//! - consumer lag of every stage (records its upstream wrote, less those it read: the runtime's
//!   own gauge stays empty under transactions), how busy its loop was (processing + commit
//!   seconds per second, from its histograms), processing time per record and commit time,
//! - CPU and memory (Pss) of every process, the broker, registry and PostgreSQL included.
//!
//! A rate is abandoned once the backlog exceeds `--max-backlog-secs` of it (not sustainable);
//! the stage with the largest lag then is the bottleneck. The pass-through chain
//! (`bench_support::chain`) runs the same number of emails as the flat-out run through four
//! hops on the same broker before the first flat-out run and after each (`--repeat N` of them),
//! and each flat-out throughput is reported as a ratio of the chain runs either side of it,
//! with the median and range over the runs. CPU per record read is reported for every stage
//! and every hop.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use mailstream_bench::chain;
use mailstream_bench::figures::{Run, Stage, print_report};
use mailstream_bench::load::{self, Counters, Offer};
use mailstream_bench::procstat::{Pids, Watch, stack_and_self};
use mailstream_tests::TestEnv;
use mailstream_tests::corpus::{CorpusOptions, Templates, load_tables};
use mailstream_tests::pipeline::{Pipeline, PipelineOptions, STREAM_PROCESSORS, Sink, metric};

#[derive(Parser, Clone)]
struct Args {
    /// Offered rates in emails/s; `max` offers `--flat-out` emails as fast as ingest takes them.
    #[arg(long, value_delimiter = ',', default_value = "100,300,1000,5000,max")]
    rates: Vec<String>,
    /// Seconds each fixed rate is offered ...
    #[arg(long, default_value_t = 60)]
    duration: u64,
    /// ... except this rate, held for `--sustain` seconds (the latency target's 5 minutes).
    #[arg(long, default_value_t = 1000.0)]
    sustain_rate: f64,
    #[arg(long, default_value_t = 300)]
    sustain: u64,
    /// Emails offered flat out, and records through the pass-through chain.
    #[arg(long, default_value_t = 20_000)]
    flat_out: usize,
    /// Concurrent SMTP sessions.
    #[arg(long, default_value_t = 48)]
    sessions: usize,
    #[arg(long, default_value_t = 2_000)]
    templates: usize,
    #[arg(long, default_value_t = 2_000_000)]
    max_attachment: usize,
    /// Give a rate up once the backlog is more than this many seconds of it.
    #[arg(long, default_value_t = 10.0)]
    max_backlog_secs: f64,
    #[arg(long)]
    skip_chain: bool,
    /// Flat-out runs (`max`): each between two runs of the chain, its ratio taken against
    /// their mean; the report gives the median and range (the box is shared and noisy).
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// Write every figure as JSON here too.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

/// A moment's view of every processor's metrics.
#[derive(Debug, Clone, Default)]
struct Sample {
    at: f64,
    ingest: f64,
    stages: Vec<StageSample>,
}

/// A stream processor's counters at a moment.
#[derive(Debug, Clone, Default)]
struct StageSample {
    read: f64,
    /// Written to its input by the stage before and not yet read (the runtime's
    /// `mailstream_consumer_lag` gauge stays empty under transactions, see BENCHMARKS.md).
    lag: f64,
    processing_secs: f64,
    commit_secs: f64,
    commits: f64,
}

async fn sample(p: &Pipeline, t0: Instant) -> Sample {
    let ingest = metric(
        &p.scrape("ingest").await,
        "mailstream_ingest_accepted_total",
        &[],
    );
    let mut stages = Vec::new();
    let mut upstream = ingest;
    for name in STREAM_PROCESSORS {
        let text = p.scrape(name).await;
        let read = metric(&text, "mailstream_records_in_total", &[]);
        stages.push(StageSample {
            read,
            lag: (upstream - read).max(0.0),
            processing_secs: metric(&text, "mailstream_processing_seconds_sum", &[]),
            commit_secs: metric(&text, "mailstream_transaction_commit_seconds_sum", &[]),
            commits: metric(&text, "mailstream_transaction_commit_seconds_count", &[]),
        });
        // What the next stage reads (the sink, the last, feeds none).
        let output = match name {
            "parser" => Some("parsed"),
            "resolver" => Some("resolved"),
            "scorer" => Some("scored"),
            _ => None,
        };
        if let Some(output) = output {
            upstream = metric(&text, "mailstream_records_out_total", &[("topic", output)]);
        }
    }
    Sample {
        at: t0.elapsed().as_secs_f64(),
        ingest,
        stages,
    }
}

/// Records/s of a counter between 1 % and 99 % of its final value.
fn steady_rate(series: &[(f64, f64)]) -> f64 {
    let Some(&(_, last)) = series.last() else {
        return 0.0;
    };
    let at = |frac: f64| {
        series
            .iter()
            .find(|(_, c)| *c >= frac * last)
            .map(|(t, _)| *t)
    };
    match (at(0.01), at(0.99)) {
        (Some(a), Some(b)) if b > a => 0.98 * last / (b - a),
        _ => 0.0,
    }
}

async fn latency(schema: &str) -> anyhow::Result<(i64, [f64; 3])> {
    let url = std::env::var("MAILSTREAM_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://mailstream@127.0.0.1:5433/mailstream".into());
    let (db, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    let row = db
        .query_one(
            &format!(
                "SELECT count(*), percentile_cont(ARRAY[0.5, 0.95, 0.99]::float8[]) WITHIN GROUP \
                 (ORDER BY extract(epoch FROM written_at - received_at)::float8 * 1000) \
                 FROM {schema}.email_activities"
            ),
            &[],
        )
        .await?;
    let q: Option<Vec<f64>> = row.get(1);
    let q = q.unwrap_or_default();
    Ok((
        row.get(0),
        [0, 1, 2].map(|i| q.get(i).copied().unwrap_or(0.0)),
    ))
}

async fn run_rate(
    args: &Args,
    templates: &Arc<Templates>,
    rate: Option<f64>,
) -> anyhow::Result<Run> {
    let label = rate.map_or("max".to_string(), |r| format!("{r:.0}/s"));
    let secs = rate.map(|r| {
        if r == args.sustain_rate {
            args.sustain
        } else {
            args.duration
        }
    });
    let limit = match (rate, secs) {
        (Some(r), Some(s)) => (r * s as f64) as usize,
        _ => args.flat_out,
    };
    eprintln!(
        "== {label}: {limit} emails{}",
        secs.map_or(String::new(), |s| format!(" over {s} s"))
    );
    let env = TestEnv::new("bp");
    load_tables(&env).map_err(anyhow::Error::msg)?;
    let schema = format!("bench_{}", &env.prefix[5..13]);
    let url = std::env::var("MAILSTREAM_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://mailstream@127.0.0.1:5433/mailstream".into());
    // Tuning given to the bench (MAILSTREAM_BATCH_*, MAILSTREAM_RDKAFKA_*, ...) reaches every
    // processor.
    let tuning = std::env::vars()
        .filter(|(k, _)| {
            ["MAILSTREAM_BATCH_", "MAILSTREAM_RDKAFKA_"]
                .iter()
                .any(|p| k.starts_with(p))
        })
        .collect();
    let options = PipelineOptions {
        sink: Sink::Postgres {
            url,
            schema: schema.clone(),
        },
        log_level: "warn".into(),
        common: tuning,
    };
    let mut p = Pipeline::start(&env, &options);
    p.wait_ready(Duration::from_secs(120))
        .await
        .map_err(anyhow::Error::msg)?;
    let mut names: Vec<(String, Pids)> = p
        .procs
        .iter()
        .filter_map(|x| Some((x.name.to_string(), Pids::Tree(x.pid()?))))
        .collect();
    names.extend(stack_and_self());
    let mut watch = Watch::new(names);

    let stop = Arc::new(AtomicBool::new(false));
    let counters = Arc::new(Counters::default());
    let t0 = Instant::now();
    let start_mark = watch.mark();
    let o = Offer {
        templates: templates.clone(),
        smtp: p.smtp_addr.clone(),
        tag: env.prefix[5..13].to_string(),
        sessions: args.sessions.max(1),
        rate,
        limit,
        t0,
        stop: stop.clone(),
        counters: counters.clone(),
    };
    let workers: Vec<_> = (0..o.sessions)
        .map(|w| tokio::spawn(load::session(o.clone(), w)))
        .collect();
    let mut samples: Vec<Sample> = Vec::new();
    let mut gave_up = None;
    let mut last_mark = Instant::now();
    while !workers.iter().all(|w| w.is_finished()) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if let Some(death) = died(&mut p).await {
            stop.store(true, Ordering::Relaxed);
            anyhow::bail!("{death}: the figures of this run would be wrong");
        }
        let s = sample(&p, t0).await;
        let backlog = counters.unique.load(Ordering::Relaxed) as f64 - s.stages[3].read;
        let allowed = args.max_backlog_secs * rate.unwrap_or(f64::INFINITY);
        if backlog > allowed && gave_up.is_none() {
            gave_up = Some(format!(
                "backlog of {backlog:.0} emails after {:.0} s",
                s.at
            ));
            stop.store(true, Ordering::Relaxed);
        }
        samples.push(s);
        if last_mark.elapsed() >= Duration::from_secs(1) {
            watch.mark();
            last_mark = Instant::now();
        }
    }
    let offer_secs = t0.elapsed().as_secs_f64();
    let end_mark = watch.mark();
    let at_end = samples.last().cloned().unwrap_or_default();

    // Drain: until the sink has read every unique email.
    let unique = counters.unique.load(Ordering::Relaxed);
    let drain_started = Instant::now();
    loop {
        if let Some(death) = died(&mut p).await {
            anyhow::bail!("{death} while the pipeline drained");
        }
        let s = sample(&p, t0).await;
        let done = s.stages[3].read >= unique as f64;
        samples.push(s);
        if done || drain_started.elapsed() > Duration::from_secs(1_200) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let drain_secs = drain_started.elapsed().as_secs_f64();
    let finished_at = samples.last().map_or(offer_secs, |s| s.at);
    // Flat out, the work is the offer and the drain: measure over both.
    let (end_mark, at_end) = if rate.is_none() {
        (watch.mark(), samples.last().cloned().unwrap_or_default())
    } else {
        (end_mark, at_end)
    };
    let (latency_count, latency_ms) = latency(&schema).await?;
    p.stop();

    let mut stages = vec![Stage {
        name: "ingest (accepted)".into(),
        rps: steady_rate(&samples.iter().map(|s| (s.at, s.ingest)).collect::<Vec<_>>()),
        ..Stage::default()
    }];
    let first = samples.first().cloned().unwrap_or_default();
    for (k, name) in STREAM_PROCESSORS.iter().enumerate() {
        let series: Vec<(f64, f64)> = samples.iter().map(|s| (s.at, s.stages[k].read)).collect();
        let (a, b) = (first.stages[k].clone(), at_end.stages[k].clone());
        let processing = b.processing_secs - a.processing_secs;
        let commit = b.commit_secs - a.commit_secs;
        stages.push(Stage {
            name: (*name).into(),
            rps: steady_rate(&series),
            busy_percent: 100.0 * (processing + commit) / (at_end.at - first.at).max(1e-3),
            ms_per_record: 1e3 * processing / (b.read - a.read).max(1.0),
            commit_ms: 1e3 * commit / (b.commits - a.commits).max(1.0),
            lag_max: samples.iter().map(|s| s.stages[k].lag).fold(0.0, f64::max),
            lag_at_end_of_offer: b.lag,
            records: b.read - a.read,
        });
    }
    let accepted = counters.accepted.load(Ordering::Relaxed);
    let offered_rps = accepted as f64 / offer_secs;
    // Offered at the rate and drained as it came: at most 2 s of it waiting at the end.
    let reached = rate.is_none_or(|r| offered_rps >= 0.95 * r);
    let backlog: f64 = stages[1..].iter().map(|s| s.lag_at_end_of_offer).sum();
    let drained = rate.is_some_and(|r| backlog <= 2.0 * r);
    let sustained = gave_up.is_none() && reached && drained;
    // Flat out (or falling behind) the bottleneck is the slowest stage; the stage with the
    // largest lag when the offer ended is the one the others wait for.
    let worst = if rate.is_none() {
        stages[1..].iter().min_by(|a, b| a.rps.total_cmp(&b.rps))
    } else {
        stages[1..]
            .iter()
            .max_by(|a, b| a.lag_at_end_of_offer.total_cmp(&b.lag_at_end_of_offer))
    };
    let bottleneck = match worst {
        Some(s) if rate.is_none() || !drained => format!(
            "{}: {:.0} records/s, loop busy {:.0} % ({:.2} ms per record, commits {:.0} ms), lag {:.0} at the end of the offer",
            s.name, s.rps, s.busy_percent, s.ms_per_record, s.commit_ms, s.lag_at_end_of_offer
        ),
        _ if !reached => "ingest: the offered rate was not reached (SMTP sessions / CPU)".into(),
        _ => "none: every stage kept up".into(),
    };
    Ok(Run {
        label,
        target_rps: rate,
        offer_secs,
        accepted,
        unique,
        smtp_errors: counters.errors.load(Ordering::Relaxed),
        offered_rps,
        end_to_end_rps: accepted as f64 / finished_at.max(1e-3),
        latency_count,
        latency_ms,
        sustained,
        gave_up,
        drain_secs,
        bottleneck,
        stages,
        usage: watch.usage(&start_mark, &end_mark),
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let templates = Templates::generate(CorpusOptions {
        templates: args.templates,
        max_attachment: args.max_attachment,
        ..CorpusOptions::default()
    });
    let mut runs = Vec::new();
    let mut flat_out = 0;
    for r in &args.rates {
        if r == "max" {
            flat_out = args.repeat.max(1);
            continue;
        }
        runs.push(run_rate(&args, &templates, Some(r.parse::<f64>()?)).await?);
        if let Some(run) = runs.last() {
            eprintln!("{run:?}");
        }
    }
    // The chain before the first flat-out run and after each: a warm broker, and a baseline
    // measured next to every topology run it is compared with.
    let mut chains = Vec::new();
    for i in 0..flat_out {
        if i == 0 && !args.skip_chain {
            chains.push(run_chain(&templates, args.flat_out, chains.len() + 1).await?);
        }
        runs.push(run_rate(&args, &templates, None).await?);
        if let Some(run) = runs.last() {
            eprintln!("{run:?}");
        }
        if !args.skip_chain {
            chains.push(run_chain(&templates, args.flat_out, chains.len() + 1).await?);
        }
    }
    print_report(&templates, &runs, &chains);
    if let Some(path) = &args.json {
        std::fs::write(
            path,
            serde_json::to_string_pretty(&serde_json::json!({"runs": runs, "chains": chains}))?,
        )?;
    }
    Ok(())
}

async fn run_chain(
    templates: &Arc<Templates>,
    records: usize,
    n: usize,
) -> anyhow::Result<chain::ChainFigures> {
    eprintln!("== pass-through chain {n}: {records} records");
    chain::run(templates.clone(), records).await
}

/// A processor that exited on its own during a measured run, with what it said last (the
/// supervisor notices the exit; a benchmark does not wait for a dead stage).
async fn died(p: &mut Pipeline) -> Option<String> {
    p.supervise().await;
    p.procs.iter().find_map(|x| {
        x.unexpected_exits
            .first()
            .map(|why| format!("{} exited: {why}", x.name))
    })
}
