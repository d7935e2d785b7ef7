//! `mailstream replay PROCESSOR`: moves a processor's committed input offsets, so it re-reads
//! (or skips) records when it next starts.
//!
//! The target is one of `--to-earliest`, `--to-latest`, `--to-datetime` (the first record at or
//! after an RFC 3339 time, per partition), `--shift-by N` (from the committed offset; negative
//! goes back) or `--to-offset PARTITION:OFFSET[,...]` (only the partitions named). It applies to
//! the processor's input topic from the topology (`--topic` names it explicitly), optionally
//! only to `--partitions`. New offsets are clamped to the log's bounds, and the output says so.
//!
//! A dry run is the default: it prints current → new per partition and changes nothing.
//! `--execute` commits the new offsets for the processor's group (see `groups.rs`: without
//! joining it) and refuses, naming them, while the group has live members, because a running
//! member would overwrite the offsets with its next commit. The broker enforces the same rule.
//!
//! A replay moves input offsets only: state stores and tables stay. Re-read records meet their
//! own earlier copies downstream, where the resolver collapses them as duplicates and the CRM
//! sink leaves unchanged rows untouched, so replaying does not duplicate anything in the CRM.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{ArgGroup, Args};
use mailstream_runtime::{ConfigSource, NoSettings, Topology, config};
use serde::Serialize;

use crate::groups::{self, GroupClient, Member, PartitionOffsets};

#[derive(Args)]
#[command(group(ArgGroup::new("target").required(true)
    .args(["to_earliest", "to_latest", "to_datetime", "shift_by", "to_offset"])))]
pub struct ReplayArgs {
    /// The processor whose input to replay (as in topology/topology.yaml).
    processor: String,
    /// Back to the oldest record still in the log.
    #[arg(long)]
    to_earliest: bool,
    /// To the end of the log (skips everything not yet read).
    #[arg(long)]
    to_latest: bool,
    /// To the first record at or after this RFC 3339 time (e.g. 2026-05-01T12:00:00Z).
    #[arg(long, value_name = "TIME", value_parser = groups::parse_datetime)]
    to_datetime: Option<i64>,
    /// Move by N records from the committed offset (negative: back).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    shift_by: Option<i64>,
    /// Set these partitions' offsets (others are left alone).
    #[arg(long, value_name = "PARTITION:OFFSET", value_delimiter = ',',
        value_parser = groups::parse_position, conflicts_with = "partitions")]
    to_offset: Vec<(i32, i64)>,
    /// The input topic (logical name); by default the processor's input from the topology.
    #[arg(long)]
    topic: Option<String>,
    /// Only these partitions (comma-separated); by default all.
    #[arg(long, value_delimiter = ',')]
    partitions: Vec<i32>,
    /// `--execute` applies the new offsets (the processor must be stopped); a dry run prints
    /// current → new offsets per partition.
    #[command(flatten)]
    apply: crate::Apply,
    #[command(flatten)]
    output: crate::Output,
}

/// Where to move each partition.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    Earliest,
    Latest,
    /// First offset at or after a time, per partition (`None`: every record is older).
    Time(BTreeMap<i32, Option<i64>>),
    Shift(i64),
    Offsets(BTreeMap<i32, i64>),
}

/// One partition's move.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Move {
    pub topic: String,
    pub partition: i32,
    pub low: i64,
    pub high: i64,
    pub current: Option<i64>,
    pub new: i64,
    pub note: Option<String>,
}

/// The new offset of each partition; pure, so the arithmetic is unit-tested.
pub fn plan(offsets: &[PartitionOffsets], target: &Target) -> Vec<Move> {
    let mut moves = Vec::new();
    for p in offsets {
        let mut notes = Vec::new();
        let wanted = match target {
            Target::Earliest => p.low,
            Target::Latest => p.high,
            Target::Time(found) => match found.get(&p.partition).copied().flatten() {
                Some(o) => o,
                None => {
                    notes.push("no record at or after the time: the end".to_string());
                    p.high
                }
            },
            Target::Shift(n) => {
                let base = p.committed.unwrap_or_else(|| {
                    notes.push("nothing committed: shifted from the log start".into());
                    p.low
                });
                base.saturating_add(*n)
            }
            Target::Offsets(wanted) => match wanted.get(&p.partition) {
                Some(o) => *o,
                None => continue,
            },
        };
        let new = wanted.clamp(p.low, p.high.max(p.low));
        if new > wanted {
            notes.push(format!(
                "{wanted} is before the log start: clamped to {new}"
            ));
        } else if new < wanted {
            notes.push(format!("{wanted} is past the log end: clamped to {new}"));
        }
        if p.committed == Some(new) {
            notes.push("unchanged".into());
        }
        moves.push(Move {
            topic: p.topic.clone(),
            partition: p.partition,
            low: p.low,
            high: p.high,
            current: p.committed,
            new,
            note: (!notes.is_empty()).then(|| notes.join("; ")),
        });
    }
    moves
}

pub fn execute(args: ReplayArgs, source: ConfigSource) -> anyhow::Result<ExitCode> {
    let (config, _) = config::load::<NoSettings>("ctl", &source)?;
    let topology = Topology::embedded()?;
    let spec = topology.processor(&args.processor)?;
    let Some(input) = spec.input.clone() else {
        bail!(
            "`{}` reads no topic (it only writes), so it has no offsets to replay; to re-send its records, replay their source",
            args.processor
        );
    };
    let topic = input_topic(&args.processor, input, args.topic.as_deref())?;
    let client = GroupClient::for_processor(&config, &args.processor)?;
    let all = client.partitions(&topic)?;
    let chosen = chosen_partitions(&all, &args.partitions, &args.to_offset).map_err(|p| {
        anyhow::anyhow!(
            "{} has no partition {p} (it has {})",
            client.physical(&topic),
            all.len()
        )
    })?;
    let offsets = client.offsets(&topic, &chosen)?;
    let (target, how) = if args.to_earliest {
        (Target::Earliest, "--to-earliest".to_string())
    } else if args.to_latest {
        (Target::Latest, "--to-latest".to_string())
    } else if let Some(ms) = args.to_datetime {
        let found = client.offsets_for_time(&topic, &chosen, ms)?;
        (
            Target::Time(found),
            format!("--to-datetime {}", groups::format_millis(ms)),
        )
    } else if let Some(n) = args.shift_by {
        (Target::Shift(n), format!("--shift-by {n}"))
    } else {
        let map: BTreeMap<i32, i64> = args.to_offset.iter().copied().collect();
        (Target::Offsets(map), "--to-offset".to_string())
    };
    let moves = plan(&offsets, &target);
    let members = client.members()?;

    if args.apply.execute && !members.is_empty() {
        bail!("{}", refusal(&args.processor, &client.group, &members));
    }
    let mut executed = false;
    if args.apply.execute {
        let new: BTreeMap<i32, i64> = moves.iter().map(|m| (m.partition, m.new)).collect();
        if !new.is_empty() {
            client.commit(&topic, &new)?;
            let check = client.offsets(&topic, &new.keys().copied().collect::<Vec<_>>())?;
            for c in check {
                if c.committed != new.get(&c.partition).copied() {
                    bail!(
                        "committed {} [{}] but the group now reads {:?}: did a member join meanwhile? Run `mailstream replay` again once it is stopped",
                        topic,
                        c.partition,
                        c.committed
                    );
                }
            }
        }
        executed = true;
    }
    report(&args, &client.group, &how, &moves, &members, executed)?;
    Ok(ExitCode::SUCCESS)
}

/// The topic to replay: the processor's `input`, which `--topic` may only name again.
fn input_topic(processor: &str, input: String, requested: Option<&str>) -> anyhow::Result<String> {
    match requested {
        Some(t) if t != input => bail!(
            "`{processor}` consumes only `{input}` (per the topology); --topic {t} is not one of its inputs"
        ),
        _ => Ok(input),
    }
}

/// The partitions to read offsets of: `--partitions`, else all of them. Fails with the first
/// partition, of those or of `--to-offset`, that the topic does not have.
fn chosen_partitions(
    all: &[i32],
    requested: &[i32],
    to_offset: &[(i32, i64)],
) -> Result<Vec<i32>, i32> {
    let named = to_offset.iter().map(|(p, _)| p);
    if let Some(missing) = requested.iter().chain(named).find(|p| !all.contains(p)) {
        return Err(*missing);
    }
    Ok(if requested.is_empty() {
        all.to_vec()
    } else {
        requested.to_vec()
    })
}

fn refusal(processor: &str, group: &str, members: &[Member]) -> String {
    let list: Vec<String> = members.iter().map(|m| format!("  - {m}")).collect();
    format!(
        "refusing to move the offsets of group {group}: it has {} live member(s):\n{}\n\
         A running member would overwrite the new offsets with its next commit. Stop every instance of `{processor}` first \
         (Kubernetes: `kubectl scale deployment/<release>-{processor} --replicas=0`, pausing its autoscaler; by hand: SIGTERM to `mailstream run {processor}`), \
         wait until `mailstream lag {processor}` shows 0 members (a crashed member leaves after session.timeout.ms), then run this again.",
        members.len(),
        list.join("\n")
    )
}

fn report(
    args: &ReplayArgs,
    group: &str,
    how: &str,
    moves: &[Move],
    members: &[Member],
    executed: bool,
) -> anyhow::Result<()> {
    if args.output.json {
        let out = serde_json::json!({
            "processor": args.processor,
            "group": group,
            "target": how,
            "executed": executed,
            "live_members": members,
            "partitions": moves,
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&out).context("writing JSON")?
        );
        return Ok(());
    }
    print!(
        "{}",
        render(&args.processor, group, how, moves, members, executed)
    );
    Ok(())
}

/// The plan (and outcome) as people read it: a line per partition, then what happened.
fn render(
    processor: &str,
    group: &str,
    how: &str,
    moves: &[Move],
    members: &[Member],
    executed: bool,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "replay {processor} (group {group}) {how}");
    let _ = writeln!(
        out,
        "{:<16} {:>9} {:>10} {:>10}  {:<17} NOTE",
        "TOPIC", "PARTITION", "CURRENT", "NEW", "LOG"
    );
    for m in moves {
        let current = m.current.map_or("-".to_string(), |c| c.to_string());
        let _ = writeln!(
            out,
            "{:<16} {:>9} {:>10} → {:>8}  {:<17} {}",
            m.topic,
            m.partition,
            current,
            m.new,
            format!("{}..{}", m.low, m.high),
            m.note.as_deref().unwrap_or("")
        );
    }
    if executed {
        let _ = writeln!(
            out,
            "moved {} partition offset(s) of {group}; start `{processor}` again and it reads from there",
            moves.len()
        );
        return out;
    }
    if !members.is_empty() {
        let names: Vec<String> = members.iter().map(ToString::to_string).collect();
        let _ = writeln!(
            out,
            "note: {group} has {} live member(s) ({}); --execute refuses until every instance is stopped",
            members.len(),
            names.join(", ")
        );
    }
    let _ = writeln!(
        out,
        "dry run: nothing changed; add --execute to apply (with `{processor}` stopped)"
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partition(p: i32, low: i64, high: i64, committed: Option<i64>) -> PartitionOffsets {
        PartitionOffsets {
            topic: "raw-email".into(),
            partition: p,
            low,
            high,
            committed,
        }
    }

    #[test]
    fn shifts_clamp_to_the_log_and_say_so() {
        let offsets = [partition(0, 2, 10, Some(5)), partition(1, 0, 4, None)];
        let back = plan(&offsets, &Target::Shift(-4));
        assert_eq!(back[0].new, 2);
        assert!(
            back[0]
                .note
                .as_deref()
                .is_some_and(|n| n.contains("clamped to 2"))
        );
        assert_eq!(back[1].new, 0);
        assert!(
            back[1]
                .note
                .as_deref()
                .is_some_and(|n| n.contains("nothing committed"))
        );
        let ahead = plan(&offsets, &Target::Shift(100));
        assert_eq!((ahead[0].new, ahead[1].new), (10, 4));
        assert!(
            ahead[0]
                .note
                .as_deref()
                .is_some_and(|n| n.contains("past the log end"))
        );
    }

    #[test]
    fn explicit_offsets_touch_only_the_partitions_named_and_times_past_the_end_go_to_it() {
        let offsets = [partition(0, 0, 10, Some(10)), partition(1, 0, 10, Some(3))];
        let moves = plan(&offsets, &Target::Offsets(BTreeMap::from([(1, 7)])));
        assert_eq!(moves.len(), 1);
        assert_eq!((moves[0].partition, moves[0].new), (1, 7));
        let moves = plan(
            &offsets,
            &Target::Time(BTreeMap::from([(0, None), (1, Some(4))])),
        );
        assert_eq!((moves[0].new, moves[1].new), (10, 4));
        assert!(
            moves[0]
                .note
                .as_deref()
                .is_some_and(|n| n.contains("the end"))
        );
        assert!(
            moves[0]
                .note
                .as_deref()
                .is_some_and(|n| n.contains("unchanged"))
        );
        let earliest = plan(&offsets, &Target::Earliest);
        assert_eq!((earliest[0].current, earliest[0].new), (Some(10), 0));
    }

    #[test]
    fn latest_goes_to_the_end_and_an_unmoved_partition_says_unchanged() {
        let offsets = [partition(0, 0, 10, Some(10)), partition(1, 3, 8, None)];
        let moves = plan(&offsets, &Target::Latest);
        assert_eq!((moves[0].new, moves[1].new), (10, 8));
        assert_eq!(moves[0].note.as_deref(), Some("unchanged"));
        assert_eq!(moves[1].note, None);
        assert_eq!(
            (moves[1].low, moves[1].high, moves[1].current),
            (3, 8, None)
        );
    }

    #[test]
    fn shifts_saturate_instead_of_overflowing() {
        let offsets = [partition(0, 0, 10, Some(5))];
        assert_eq!(plan(&offsets, &Target::Shift(i64::MAX))[0].new, 10);
        assert_eq!(plan(&offsets, &Target::Shift(i64::MIN))[0].new, 0);
    }

    #[test]
    fn an_empty_log_clamps_everything_to_its_start() {
        // low > high happens briefly while retention deletes the last segment.
        let offsets = [partition(0, 7, 5, Some(2))];
        let moves = plan(&offsets, &Target::Offsets(BTreeMap::from([(0, 0)])));
        assert_eq!(moves[0].new, 7);
        assert_eq!(
            moves[0].note.as_deref(),
            Some("0 is before the log start: clamped to 7")
        );
    }

    #[test]
    fn only_the_processor_input_can_be_replayed() {
        assert_eq!(
            input_topic("parser", "raw-email".into(), None).expect("input"),
            "raw-email"
        );
        assert_eq!(
            input_topic("parser", "raw-email".into(), Some("raw-email")).expect("input"),
            "raw-email"
        );
        let wrong = input_topic("parser", "raw-email".into(), Some("parsed"))
            .expect_err("not its input")
            .to_string();
        assert!(
            wrong.contains("consumes only `raw-email`") && wrong.contains("--topic parsed"),
            "{wrong}"
        );
    }

    #[test]
    fn partitions_default_to_all_and_unknown_ones_are_named() {
        let all = [0, 1, 2];
        assert_eq!(chosen_partitions(&all, &[], &[]), Ok(vec![0, 1, 2]));
        assert_eq!(chosen_partitions(&all, &[2, 0], &[]), Ok(vec![2, 0]));
        assert_eq!(chosen_partitions(&all, &[1, 5], &[]), Err(5));
        assert_eq!(chosen_partitions(&all, &[], &[(1, 4), (9, 0)]), Err(9));
        assert_eq!(chosen_partitions(&all, &[], &[(1, 4)]), Ok(vec![0, 1, 2]));
    }

    fn member() -> Member {
        Member {
            member_id: "m-1".into(),
            client_id: "parser-a".into(),
            host: "/10.0.0.7".into(),
        }
    }

    #[test]
    fn the_text_plan_shows_each_move_and_what_happens_next() {
        let moves = plan(
            &[partition(0, 2, 10, Some(5)), partition(1, 0, 4, None)],
            &Target::Shift(-4),
        );
        let dry = render(
            "parser",
            "mailstream-parser",
            "--shift-by -4",
            &moves,
            &[],
            false,
        );
        let lines: Vec<&str> = dry.lines().collect();
        assert_eq!(
            lines[0],
            "replay parser (group mailstream-parser) --shift-by -4"
        );
        assert!(lines[1].starts_with("TOPIC"));
        assert_eq!(
            lines[2].split_whitespace().collect::<Vec<_>>()[..6],
            ["raw-email", "0", "5", "→", "2", "2..10"]
        );
        assert!(lines[2].ends_with("1 is before the log start: clamped to 2"));
        assert_eq!(
            lines[3].split_whitespace().collect::<Vec<_>>()[..6],
            ["raw-email", "1", "-", "→", "0", "0..4"]
        );
        assert!(lines[4].starts_with("dry run: nothing changed"));
        assert_eq!(lines.len(), 5);

        let busy = render("parser", "g", "--to-latest", &moves, &[member()], false);
        assert!(busy.contains(
            "note: g has 1 live member(s) (parser-a on /10.0.0.7 (m-1)); --execute refuses"
        ));
        let done = render("parser", "g", "--to-latest", &moves, &[], true);
        assert!(done.contains("moved 2 partition offset(s) of g; start `parser` again"));
        assert!(!done.contains("dry run"));
    }

    #[test]
    fn the_refusal_names_every_member_and_how_to_stop_them() {
        let text = refusal("parser", "mailstream-parser", &[member(), member()]);
        assert!(text.starts_with(
            "refusing to move the offsets of group mailstream-parser: it has 2 live member(s):"
        ));
        assert_eq!(text.matches("  - parser-a on /10.0.0.7 (m-1)").count(), 2);
        assert!(text.contains("deployment/<release>-parser --replicas=0"));
        assert!(text.contains("`mailstream lag parser` shows 0 members"));
    }

    /// `mailstream replay`'s arguments alone.
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: ReplayArgs,
    }

    fn parse(args: &[&str]) -> Result<ReplayArgs, clap::Error> {
        use clap::Parser as _;
        Cli::try_parse_from(std::iter::once("replay").chain(args.iter().copied())).map(|c| c.args)
    }

    #[test]
    fn exactly_one_target_is_required() {
        use clap::error::ErrorKind;
        let none = parse(&["parser"]).err().map(|e| e.kind());
        assert_eq!(none, Some(ErrorKind::MissingRequiredArgument));
        let two = parse(&["parser", "--to-earliest", "--to-latest"])
            .err()
            .map(|e| e.kind());
        assert_eq!(two, Some(ErrorKind::ArgumentConflict));
        let args = parse(&["parser", "--shift-by", "-5"]).expect("a negative shift");
        assert_eq!(args.shift_by, Some(-5));
    }

    #[test]
    fn offsets_and_times_are_validated_while_parsing() {
        let args = parse(&["parser", "--to-offset", "0:5,2:7"]).expect("positions");
        assert_eq!(args.to_offset, [(0, 5), (2, 7)]);
        assert!(parse(&["parser", "--to-offset", "0:5,x:7"]).is_err());
        assert!(parse(&["parser", "--to-offset", "0:-1"]).is_err());
        let args = parse(&["parser", "--to-datetime", "1970-01-01T00:00:01Z"]).expect("a time");
        assert_eq!(args.to_datetime, Some(1000));
        assert!(parse(&["parser", "--to-datetime", "yesterday"]).is_err());
    }

    #[test]
    fn conflicting_flags_are_refused() {
        use clap::error::ErrorKind;
        let kind = |args: &[&str]| parse(args).err().map(|e| e.kind());
        assert_eq!(
            kind(&["parser", "--to-offset", "0:1", "--partitions", "0"]),
            Some(ErrorKind::ArgumentConflict)
        );
        assert_eq!(
            kind(&["parser", "--to-latest", "--execute", "--dry-run"]),
            Some(ErrorKind::ArgumentConflict)
        );
        let args =
            parse(&["parser", "--to-latest", "--partitions", "0,2", "--execute"]).expect("valid");
        assert_eq!(args.partitions, [0, 2]);
        assert!(args.apply.execute && args.to_latest);
    }
}
