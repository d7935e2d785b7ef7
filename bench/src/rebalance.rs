//! `bench-rebalance`: the pause a scale step causes, eager against cooperative assignment, in
//! one command. The pass-through group under steady load goes 2 → 3 → 2 instances and survives
//! a `kill -9` (see `mailstream_tests::scale`), once with librdkafka's eager default
//! (`range,roundrobin`, the baseline) and once with `cooperative-sticky` (the runtime's
//! default), `--runs` times each, interleaved. Reported: the longest output pause after each
//! step (median and range over the runs) and the cooperative/eager ratio; exactly-once is
//! checked on every run.

use std::time::Duration;

use clap::Parser;
use mailstream_tests::scale::{ScaleOptions, ScaleReport, run};

#[derive(Parser)]
struct Args {
    /// Runs per strategy.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Records per run.
    #[arg(long, default_value_t = 6_000)]
    records: usize,
    /// Records per second.
    #[arg(long, default_value_t = 300)]
    rate: u32,
}

const STRATEGIES: [(&str, &str); 2] = [
    ("eager (range,roundrobin)", "range,roundrobin"),
    ("cooperative-sticky", "cooperative-sticky"),
];

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values.get(values.len() / 2).copied().unwrap_or_default()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut reports: Vec<Vec<ScaleReport>> = vec![Vec::new(), Vec::new()];
    for run_no in 0..args.runs {
        for (i, (name, strategy)) in STRATEGIES.iter().enumerate() {
            let report = run(ScaleOptions {
                records: args.records,
                rate: args.rate,
                strategy: Some((*strategy).to_string()),
                kill_one: true,
            })
            .await;
            println!("run {} {name}:\n{report}", run_no + 1);
            let failures = report.failures();
            anyhow::ensure!(failures.is_empty(), "{name}: {failures:?}");
            reports[i].push(report);
        }
    }
    println!("| step | eager: median (range) | cooperative: median (range) | ratio |");
    println!("|---|---|---|---|");
    let steps = reports[0].first().map_or(0, |r| r.steps.len());
    for step in 0..steps {
        let per: Vec<Vec<Duration>> = reports
            .iter()
            .map(|rs| rs.iter().map(|r| r.steps[step].pause).collect())
            .collect();
        let cell = |v: &Vec<Duration>| {
            let lo = v.iter().min().copied().unwrap_or_default();
            let hi = v.iter().max().copied().unwrap_or_default();
            format!(
                "{:.2} s ({:.2}–{:.2})",
                median(v.clone()).as_secs_f64(),
                lo.as_secs_f64(),
                hi.as_secs_f64()
            )
        };
        let ratio = median(per[1].clone()).as_secs_f64() / median(per[0].clone()).as_secs_f64();
        println!(
            "| {} | {} | {} | {ratio:.2} |",
            reports[0][0].steps[step].name,
            cell(&per[0]),
            cell(&per[1])
        );
    }
    Ok(())
}
