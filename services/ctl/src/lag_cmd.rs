//! `mailstream lag [PROCESSOR]`: how far each processor's consumer group is behind its input,
//! per partition: the committed offset, the end of the log and the difference, plus the group's
//! live members. Read from outside the group (see `groups.rs`), so it moves nothing.
//!
//! Without a processor it covers every processor of the topology that reads a topic (the
//! optional pass-through baseline only when named). A partition the group never committed
//! counts from the oldest record, where a processor starts. Topics written in transactions end
//! each transaction with a commit marker that takes an offset, so a caught-up partition of such
//! a topic shows a lag of 1, or 2 when the last two transactions to end there were different
//! writers' (two instances upstream, or a restarted one whose aborted transaction left a marker).

use std::fmt::Write as _;
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
    #[command(flatten)]
    output: crate::Output,
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
    let names = processors(&topology, args.processor.as_deref())?;
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
    if args.output.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).context("writing JSON")?
        );
    } else {
        print!("{}", table(&report));
    }
    Ok(ExitCode::SUCCESS)
}

/// The processors to report: the one named (which must read a topic), else every processor
/// with an input, in pipeline order.
fn processors(topology: &Topology, named: Option<&str>) -> anyhow::Result<Vec<String>> {
    let Some(name) = named else {
        return Ok(groups::processors_in_order(topology, false));
    };
    if topology.processor(name)?.input.is_none() {
        bail!("`{name}` reads no topic (it only writes), so it has no lag");
    }
    Ok(vec![name.to_string()])
}

/// The report as a table: a line per partition, a total per processor, then footnotes for
/// what needs explaining.
fn table(report: &[ProcessorLag]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<12} {:<16} {:>9} {:>10} {:>10} {:>8}",
        "PROCESSOR", "TOPIC", "PARTITION", "COMMITTED", "END", "LAG"
    );
    for p in report {
        for part in &p.partitions {
            let _ = writeln!(
                out,
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
        let _ = writeln!(
            out,
            "{:<12} total lag {} (group {}, {members})",
            p.processor, p.total_lag, p.group
        );
    }
    if report
        .iter()
        .flat_map(|p| &p.partitions)
        .any(|p| p.committed.is_none() && p.end > p.start)
    {
        let _ = writeln!(
            out,
            "(-: nothing committed yet; the processor starts at the oldest record)"
        );
    }
    if report
        .iter()
        .flat_map(|p| &p.partitions)
        .any(|p| p.committed.is_some() && (p.lag == 1 || p.lag == 2))
    {
        let _ = writeln!(
            out,
            "(a lag of 1 or 2 on a topic written in transactions is its last transaction markers, one per writer whose transaction ended last: caught up)"
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partition(partition: i32, committed: Option<i64>, low: i64, high: i64) -> PartitionLag {
        PartitionLag::from(&PartitionOffsets {
            topic: "raw-email".into(),
            partition,
            low,
            high,
            committed,
        })
    }

    fn parser_lag(partitions: Vec<PartitionLag>, members: Vec<Member>) -> ProcessorLag {
        ProcessorLag {
            processor: "parser".into(),
            group: "mailstream-parser".into(),
            topic: "raw-email".into(),
            members,
            total_lag: partitions.iter().map(|p| p.lag).sum(),
            partitions,
        }
    }

    fn words(line: &str) -> Vec<&str> {
        line.split_whitespace().collect()
    }

    #[test]
    fn a_partition_reports_its_bounds_and_lag() {
        let p = partition(3, Some(7), 2, 10);
        assert_eq!(
            (p.partition, p.committed, p.start, p.end, p.lag),
            (3, Some(7), 2, 10, 3)
        );
    }

    #[test]
    fn the_table_has_a_line_per_partition_and_a_total_per_processor() {
        let member = Member {
            member_id: "m-1".into(),
            client_id: "parser-a".into(),
            host: "/10.0.0.7".into(),
        };
        let report = [parser_lag(
            vec![partition(0, Some(7), 0, 10), partition(1, Some(4), 0, 4)],
            vec![member],
        )];
        let text = table(&report);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            words(lines[0]),
            ["PROCESSOR", "TOPIC", "PARTITION", "COMMITTED", "END", "LAG"]
        );
        assert_eq!(
            words(lines[1]),
            ["parser", "raw-email", "0", "7", "10", "3"]
        );
        assert_eq!(words(lines[2]), ["parser", "raw-email", "1", "4", "4", "0"]);
        assert_eq!(
            lines[3].trim_start_matches("parser").trim(),
            "total lag 3 (group mailstream-parser, 1 live member(s): parser-a)"
        );
        assert_eq!(lines.len(), 4, "no footnote applies: {text}");
    }

    #[test]
    fn footnotes_explain_a_dash_and_a_lag_of_one() {
        let text = table(&[parser_lag(
            vec![partition(0, None, 0, 5), partition(1, Some(9), 0, 10)],
            vec![],
        )]);
        assert!(text.contains("total lag 6 (group mailstream-parser, no live members)"));
        assert_eq!(words(text.lines().nth(1).unwrap_or_default())[3], "-");
        assert!(text.contains("(-: nothing committed yet"));
        assert!(text.contains("(a lag of 1 or 2 on a topic written in transactions"));
        // An empty partition never committed needs no explanation.
        let quiet = table(&[parser_lag(vec![partition(0, None, 4, 4)], vec![])]);
        assert!(!quiet.contains("(-:"), "{quiet}");
        // Two writers' markers: still caught up.
        let two = table(&[parser_lag(vec![partition(0, Some(8), 0, 10)], vec![])]);
        assert!(two.contains("(a lag of 1 or 2"), "{two}");
    }

    #[test]
    fn a_named_processor_must_read_a_topic() {
        let topology = Topology::embedded().expect("embedded topology");
        assert_eq!(
            processors(&topology, Some("resolver")).expect("reads parsed"),
            ["resolver"]
        );
        assert_eq!(
            processors(&topology, None).expect("all"),
            ["parser", "resolver", "scorer", "crm-sink"]
        );
        let ingest = processors(&topology, Some("ingest")).expect_err("writes only");
        assert!(ingest.to_string().contains("reads no topic"), "{ingest}");
        assert!(processors(&topology, Some("nope")).is_err());
    }
}
