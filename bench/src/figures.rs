//! The end-to-end benchmark's figures (`bench-pipeline`) and their printout: Markdown tables
//! ready for BENCHMARKS.md.

use serde::Serialize;

use crate::chain::ChainFigures;
use crate::procstat::Usage;
use mailstream_tests::corpus::{Kind, Templates};
use mailstream_tests::pipeline::STREAM_PROCESSORS;

#[derive(Debug, Default, Serialize)]
pub struct Stage {
    pub name: String,
    /// Records/s between 1 % and 99 % of its final count.
    pub rps: f64,
    /// Processing + commit seconds per second (its own histograms' sums).
    pub busy_percent: f64,
    /// Mean processing time of a record, and of a transaction commit.
    pub ms_per_record: f64,
    pub commit_ms: f64,
    /// Records written to the stage's input topic and not yet consumed by it.
    pub lag_max: f64,
    pub lag_at_end_of_offer: f64,
    /// Records it read over the measured window (its CPU is divided by them).
    pub records: f64,
}

#[derive(Debug, Default, Serialize)]
pub struct Run {
    pub label: String,
    pub target_rps: Option<f64>,
    pub offer_secs: f64,
    pub accepted: usize,
    pub unique: usize,
    pub smtp_errors: usize,
    pub offered_rps: f64,
    /// Accepted emails / (first send .. last record through the sink).
    pub end_to_end_rps: f64,
    pub latency_count: i64,
    pub latency_ms: [f64; 3],
    pub sustained: bool,
    pub gave_up: Option<String>,
    pub drain_secs: f64,
    pub bottleneck: String,
    pub stages: Vec<Stage>,
    pub usage: Vec<Usage>,
}

pub fn print_report(templates: &Templates, runs: &[Run], chains: &[ChainFigures]) {
    let mut kinds = std::collections::BTreeMap::<String, usize>::new();
    for t in &templates.items {
        *kinds.entry(format!("{:?}", t.kind)).or_default() += 1;
    }
    let attach = templates
        .items
        .iter()
        .filter(|t| t.kind == Kind::Attachment)
        .count();
    let max = templates
        .items
        .iter()
        .map(|t| t.rest.len())
        .max()
        .unwrap_or(0);
    println!(
        "\ncorpus: {} bodies, mean {:.1} KB, max {:.2} MB, {attach} with attachments; kinds {kinds:?}; 3 % re-deliveries of a Message-ID",
        templates.items.len(),
        templates.mean_size() as f64 / 1e3,
        max as f64 / 1e6
    );
    println!(
        "\n| rate | offered (accepted/s) | emails | end-to-end/s | p50 ms | p95 ms | p99 ms | sustained | bottleneck |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in runs {
        println!(
            "| {} | {:.0} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {} |",
            r.label,
            r.offered_rps,
            r.accepted,
            r.end_to_end_rps,
            r.latency_ms[0],
            r.latency_ms[1],
            r.latency_ms[2],
            if r.target_rps.is_none() {
                "n/a".to_string()
            } else if r.sustained {
                format!("yes, {:.0} s", r.offer_secs)
            } else {
                format!(
                    "no: {}",
                    r.gave_up
                        .clone()
                        .unwrap_or_else(|| "rate not reached".into())
                )
            },
            r.bottleneck
        );
    }
    println!(
        "\nstage throughput (records/s) / loop busy % / processing ms per record / commit ms / max consumer lag, per run:"
    );
    for k in 0..=STREAM_PROCESSORS.len() {
        let name = runs
            .first()
            .map_or(String::new(), |r| r.stages[k].name.clone());
        let cells: Vec<String> = runs
            .iter()
            .map(|r| {
                let s = &r.stages[k];
                if k == 0 {
                    format!("{:.0}", s.rps)
                } else {
                    format!(
                        "{:.0} / {:.0} % / {:.2} / {:.0} / {:.0}",
                        s.rps, s.busy_percent, s.ms_per_record, s.commit_ms, s.lag_max
                    )
                }
            })
            .collect();
        println!("| {name} | {} |", cells.join(" | "));
    }
    println!("\nCPU (% of one core, over the offer) / peak memory (MiB, Pss), per run:");
    if let Some(first) = runs.first() {
        for (i, u) in first.usage.iter().enumerate() {
            let cells: Vec<String> = runs
                .iter()
                .map(|r| {
                    let x = &r.usage[i];
                    if x.peak_mib > 0.0 {
                        format!("{:.0} % / {:.0}", x.cpu_percent, x.peak_mib)
                    } else {
                        format!("{:.0} %", x.cpu_percent)
                    }
                })
                .collect();
            println!("| {} | {} |", u.name, cells.join(" | "));
        }
    }
    print_cpu_per_record(runs);
    print_chains(runs, chains);
}

/// CPU milliseconds each stage spent per record it read, per run (its process tree's CPU
/// over the run's window, offer and drain flat out): the cost the issue-20 targets compare
/// with `bench-parser` and a pass-through hop.
fn print_cpu_per_record(runs: &[Run]) {
    println!("\nCPU ms per record read (CPU seconds over the window / records), per run:");
    for stage in STREAM_PROCESSORS {
        let cells: Vec<String> = runs
            .iter()
            .map(|r| {
                let records = r
                    .stages
                    .iter()
                    .find(|s| s.name == stage)
                    .map_or(0.0, |s| s.records);
                match r.usage.iter().find(|u| u.name == stage) {
                    Some(u) if records > 0.0 => format!("{:.2}", 1e3 * u.cpu_secs / records),
                    _ => "n/a".into(),
                }
            })
            .collect();
        println!("| {stage} | {} |", cells.join(" | "));
    }
}

/// The chain runs (before and after each flat-out run) and the topology's flat-out throughput
/// as a ratio of the mean of the chain runs either side of it; with several flat-out runs,
/// the median and range of the ratios.
fn print_chains(runs: &[Run], chains: &[ChainFigures]) {
    for (i, c) in chains.iter().enumerate() {
        let cpu: Vec<String> = c
            .usage
            .iter()
            .filter(|u| u.name.starts_with("hop"))
            .map(|u| format!("{:.2}", 1e3 * u.cpu_secs / c.records.max(1) as f64))
            .collect();
        println!(
            "\npass-through chain {} (4 hops, {} records of {:.1} KB mean): {:.0} records/s in {:.1} s; per hop {:?}; CPU ms per record per hop [{}]",
            i + 1,
            c.records,
            c.mean_bytes as f64 / 1e3,
            c.rps,
            c.secs,
            c.hop_rps.iter().map(|x| x.round()).collect::<Vec<_>>(),
            cpu.join(", ")
        );
    }
    let flat_out: Vec<&Run> = runs.iter().filter(|r| r.target_rps.is_none()).collect();
    let mut ratios = Vec::new();
    for (i, run) in flat_out.iter().enumerate() {
        let around: Vec<f64> = [chains.get(i), chains.get(i + 1)]
            .into_iter()
            .flatten()
            .map(|c| c.rps)
            .collect();
        if around.is_empty() {
            continue;
        }
        let chain = around.iter().sum::<f64>() / around.len() as f64;
        let ratio = run.end_to_end_rps / chain;
        println!(
            "topology flat out {}: {:.0} emails/s = {ratio:.2} of the chain around it ({chain:.0} records/s)",
            i + 1,
            run.end_to_end_rps
        );
        ratios.push(ratio);
    }
    if ratios.len() > 1 {
        ratios.sort_by(f64::total_cmp);
        let median = if ratios.len() % 2 == 1 {
            ratios[ratios.len() / 2]
        } else {
            (ratios[ratios.len() / 2 - 1] + ratios[ratios.len() / 2]) / 2.0
        };
        println!(
            "ratio over {} flat-out runs: median {median:.2}, range {:.2}-{:.2} (target >= 0.90)",
            ratios.len(),
            ratios[0],
            ratios[ratios.len() - 1]
        );
    }
}
