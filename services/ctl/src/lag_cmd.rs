//! `mailstream lag [PROCESSOR]`: how far each processor's consumer group is behind its input,
//! per partition: the committed offset, the end of the log and the difference, plus the group's
//! live members. Read from outside the group (see `groups.rs`), so it moves nothing.
//!
//! Without a processor it covers every processor of the topology that reads a topic (the
//! optional pass-through baseline only when named). A partition the group never committed
//! counts from the oldest record, where a processor starts. Topics written in transactions end
//! each transaction with a commit marker that takes an offset, so a caught-up partition of such
//! a topic shows a lag of 1.

use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;
use mailstream_runtime::{ConfigSource, NoSettings, Topology, config};
use serde::Serialize;

use crate::groups::{self, GroupClient, Member, PartitionOffsets};

#[derive(Args)]
pub struct LagArgs {
    /// One processor (as in the topology); by default every processor with an input.
    processor: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// One processor's lag.
#[derive(Debug, Serialize)]
struct ProcessorLag {
    processor: String,
    group: String,
    topic: String,
    members: Vec<Member>,
    total_lag: i64,
    partitions: Vec<PartitionLag>,
}

#[derive(Debug, Serialize)]
struct PartitionLag {
    partition: i32,
    committed: Option<i64>,
    start: i64,
    end: i64,
    lag: i64,
}

impl From<&PartitionOffsets> for PartitionLag {
    fn from(p: &PartitionOffsets) -> Self {
        Self {
            partition: p.partition,
            committed: p.committed,
            start: p.low,
            end: p.high,
            lag: p.lag(),
        }
    }
}

pub fn execute(args: LagArgs, source: ConfigSource) -> anyhow::Result<ExitCode> {
    let (config, _) = config::load::<NoSettings>("ctl", &source)?;
    let topology = Topology::embedded()?;
    let names: Vec<String> = match &args.processor {
        Some(name) => {
            let spec = topology.processor(name)?;
            if spec.input.is_none() {
                bail!("`{name}` reads no topic (it only writes), so it has no lag");
            }
            vec![name.clone()]
        }
        None => groups::processors_in_order(&topology, false),
    };
    let mut report = Vec::new();
    for name in names {
        let spec = topology.processor(&name)?;
        let Some(topic) = spec.input.clone() else {
            continue;
        };
        let client = GroupClient::for_processor(&config, &name)?;
        let partitions = client.partitions(&topic)?;
        let offsets = client.offsets(&topic, &partitions)?;
        let partitions: Vec<PartitionLag> = offsets.iter().map(PartitionLag::from).collect();
        report.push(ProcessorLag {
            total_lag: partitions.iter().map(|p| p.lag).sum(),
            members: client.members()?,
            processor: name,
            group: client.group.clone(),
            topic,
            partitions,
        });
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).context("writing JSON")?
        );
    } else {
        print_table(&report);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_table(report: &[ProcessorLag]) {
    println!(
        "{:<12} {:<16} {:>9} {:>10} {:>10} {:>8}",
        "PROCESSOR", "TOPIC", "PARTITION", "COMMITTED", "END", "LAG"
    );
    for p in report {
        for part in &p.partitions {
            println!(
                "{:<12} {:<16} {:>9} {:>10} {:>10} {:>8}",
                p.processor,
                p.topic,
                part.partition,
                part.committed.map_or("-".into(), |c| c.to_string()),
                part.end,
                part.lag
            );
        }
        let members = if p.members.is_empty() {
            "no live members".to_string()
        } else {
            let names: Vec<String> = p.members.iter().map(|m| m.client_id.clone()).collect();
            format!("{} live member(s): {}", p.members.len(), names.join(", "))
        };
        println!(
            "{:<12} total lag {} (group {}, {members})",
            p.processor, p.total_lag, p.group
        );
    }
    if report
        .iter()
        .flat_map(|p| &p.partitions)
        .any(|p| p.committed.is_none() && p.end > p.start)
    {
        println!("(-: nothing committed yet; the processor starts at the oldest record)");
    }
    if report
        .iter()
        .flat_map(|p| &p.partitions)
        .any(|p| p.committed.is_some() && p.lag == 1)
    {
        println!(
            "(a lag of 1 on a topic written in transactions is its last commit marker: caught up)"
        );
    }
}
