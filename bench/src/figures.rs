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

pub fn print_report(templates: &Templates, runs: &[Run], chain: Option<&ChainFigures>) {
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
    if let Some(c) = chain {
        println!(
            "\npass-through chain (4 hops, {} records of {:.1} KB mean): {:.0} records/s in {:.1} s; per hop {:?}",
            c.records,
            c.mean_bytes as f64 / 1e3,
            c.rps,
            c.secs,
            c.hop_rps.iter().map(|x| x.round()).collect::<Vec<_>>()
        );
        if let Some(max) = runs.iter().find(|r| r.target_rps.is_none()) {
            println!(
                "topology flat out: {:.0} emails/s = {:.2} of the chain (target >= 0.50)",
                max.end_to_end_rps,
                max.end_to_end_rps / c.rps
            );
        }
    }
}
