//! `mailstream dlq list|show|replay`: the dead letters of `<input>.dlq` topics, decoded, and
//! their re-injection into the topic they came from.
//!
//! A dead letter keeps its original key, value and headers and carries `mailstream.error.*`
//! headers (see the runtime's `dlq.rs`). `replay` writes the original key, value and headers
//! (without the error headers) back to the source topic named by `mailstream.error.source.topic`
//! (the deployment's prefix applied), on its original partition, with a
//! `mailstream.replay.of: <dlq topic>/<partition>/<offset>` header. A dry run is the default.
//!
//! Exactly once: every re-injected record and a marker for it (topic `dlq-replays`, keyed
//! `<dlq topic>/<partition>/<offset>`, with the dead letter's timestamp) are written in one Kafka
//! transaction, and a dead letter whose marker exists is skipped. The transactional id is stable
//! (`<prefix>mailstream-dlq-replay-ctl`), and the markers are read only after the producer is
//! initialised, which fences any earlier run: a run that overlaps another either sees its
//! committed markers or cannot commit. A marker topic was chosen over scanning the source topic
//! for replay headers because source topics expire after days while dead letters are kept for
//! 30; the compacted marker topic never reuses a key, so it keeps every marker.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{ArgGroup, Args, Subcommand};
use mailstream_runtime::avro::{AvroCodec, registry_settings};
use mailstream_runtime::topology::TopicKind;
use mailstream_runtime::{ConfigSource, Naming, NoSettings, Topology, config, headers, kafka};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use serde::Serialize;
use serde_json::json;

use crate::dlq_view::{self, DlqReplay, marker_key, replayed};
use crate::groups::{format_millis, parse_position};
use crate::scan::Scanned;

/// The compacted topic of replay markers (declared in the topology).
pub const REPLAYS_TOPIC: &str = "dlq-replays";
/// The header a re-injected record carries: `<dlq topic>/<partition>/<offset>`.
pub const REPLAY_OF: &str = "mailstream.replay.of";
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Subcommand)]
pub enum DlqCommand {
    /// One line per dead letter: partition:offset, class, processor, time, reason.
    List {
        /// A dead-letter topic (`raw-email.dlq`, or its source `raw-email`); by default all.
        topic: Option<String>,
        #[command(flatten)]
        output: crate::Output,
    },
    /// One dead letter: its headers and its value (decoded through the registry when Avro).
    Show {
        /// The dead-letter topic (`raw-email.dlq`, or its source `raw-email`).
        topic: String,
        /// Where the dead letter is (see `dlq list`).
        #[arg(value_name = "PARTITION:OFFSET", value_parser = parse_position)]
        position: (i32, i64),
        #[command(flatten)]
        output: crate::Output,
    },
    /// Re-inject dead letters into their source topic, exactly once (dry run unless --execute).
    Replay(ReplayArgs),
}

#[derive(Args)]
#[command(group(ArgGroup::new("which").required(true).args(["select", "class", "all"])))]
pub struct ReplayArgs {
    /// The dead-letter topic (`raw-email.dlq`, or its source `raw-email`).
    topic: String,
    /// These dead letters (comma-separated PARTITION:OFFSET).
    #[arg(long, value_name = "P:O", value_delimiter = ',', value_parser = parse_position)]
    select: Vec<(i32, i64)>,
    /// Every dead letter of this error class (`mailstream.error.class`).
    #[arg(long)]
    class: Option<String>,
    /// Every dead letter of the topic.
    #[arg(long)]
    all: bool,
    /// `--execute` writes them.
    #[command(flatten)]
    apply: crate::Apply,
    #[command(flatten)]
    output: crate::Output,
}

pub async fn execute(command: DlqCommand, source: ConfigSource) -> anyhow::Result<ExitCode> {
    let (config, _) = config::load::<NoSettings>("ctl", &source)?;
    let topology = Topology::embedded()?;
    let ctx = dlq_view::Context::new(config, topology)?;
    match command {
        DlqCommand::List { topic, output } => {
            let topics = match topic {
                Some(t) => vec![dlq_view::dlq_topic(&ctx.topology, &t)?],
                None => dlq_view::dlq_topics(&ctx.topology),
            };
            dlq_view::list(&ctx, &topics, output.json).await
        }
        DlqCommand::Show {
            topic,
            position,
            output,
        } => {
            let dlq = dlq_view::dlq_topic(&ctx.topology, &topic)?;
            dlq_view::show(&ctx, &dlq, position, output.json).await
        }
        DlqCommand::Replay(args) => replay(&ctx, args).await,
    }
}

/// What a replay did (or would do) with one dead letter.
#[derive(Debug, Serialize)]
struct Outcome {
    dlq_partition: i32,
    dlq_offset: i64,
    class: Option<String>,
    /// `replayed`, `would-replay`, `already-replayed` or `skipped`.
    action: &'static str,
    /// `<source topic>/<partition>/<offset>` of the re-injected record.
    to: Option<String>,
    detail: Option<String>,
}

async fn replay(ctx: &dlq_view::Context, args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let dlq = dlq_view::dlq_topic(&ctx.topology, &args.topic)?;
    let naming = Naming::new(ctx.config.topic_prefix.clone());
    // Fence earlier runs before reading their markers (see the module doc).
    let producer = if args.apply.execute {
        let producer: FutureProducer = kafka::durable_producer_config(&ctx.config)
            .set(
                "transactional.id",
                naming.transactional_id("dlq-replay", "ctl"),
            )
            .set("message.max.bytes", "8388608")
            .set("compression.type", "zstd")
            .create()
            .context("creating the transactional producer")?;
        tokio::task::block_in_place(|| producer.init_transactions(SEND_TIMEOUT))
            .context("initialising the producer's transactions (is Kafka reachable?)")?;
        Some(producer)
    } else {
        None
    };
    let markers = ctx.markers(args.apply.execute).await?;
    let letters = ctx.letters(&dlq).await?;
    let chosen = choose(&letters, &dlq, &args)?;
    let mut outcomes = Vec::new();
    let mut to_write = Vec::new();
    for letter in chosen {
        let (outcome, source) = decide(letter, &dlq, &markers, &ctx.topology, args.apply.execute);
        if let Some(topic) = source {
            to_write.push((letter, topic));
        }
        outcomes.push(outcome);
    }
    if let Some(producer) = &producer
        && !to_write.is_empty()
    {
        let written = write(ctx, producer, &naming, &dlq, &to_write).await;
        match written {
            Ok(done) => {
                for o in outcomes.iter_mut().filter(|o| o.action == "replayed") {
                    o.to = done.get(&(o.dlq_partition, o.dlq_offset)).cloned();
                }
            }
            Err(e) => {
                let aborted =
                    tokio::task::block_in_place(|| producer.abort_transaction(SEND_TIMEOUT));
                let note = if aborted.is_ok() {
                    "the transaction was aborted: nothing was re-injected"
                } else {
                    "aborting failed too: its records stay invisible to read_committed readers"
                };
                return Err(e.context(format!("replaying from {dlq} ({note}); run it again")));
            }
        }
    }
    print_outcomes(&dlq, &outcomes, args.apply.execute, args.output.json)?;
    Ok(ExitCode::SUCCESS)
}

/// The dead letters `args` choose: each of `--select` (which must exist), those of `--class`,
/// or `--all`.
fn choose<'a>(
    letters: &'a [Scanned],
    dlq: &str,
    args: &ReplayArgs,
) -> anyhow::Result<Vec<&'a Scanned>> {
    for (p, o) in &args.select {
        if !letters.iter().any(|l| l.partition == *p && l.offset == *o) {
            bail!("no dead letter at {dlq} {p}:{o}: see `mailstream dlq list {dlq}`");
        }
    }
    let of_class = |l: &Scanned| {
        args.class
            .as_deref()
            .is_some_and(|c| l.header_str(headers::ERROR_CLASS).as_deref() == Some(c))
    };
    Ok(letters
        .iter()
        .filter(|l| args.all || args.select.contains(&(l.partition, l.offset)) || of_class(l))
        .collect())
}

/// What happens to one chosen dead letter, and the source topic to re-inject it into (none
/// when it was replayed before or names no topic of the topology that is not a DLQ).
fn decide(
    letter: &Scanned,
    dlq: &str,
    markers: &dlq_view::Markers,
    topology: &Topology,
    execute: bool,
) -> (Outcome, Option<String>) {
    let mut outcome = Outcome {
        dlq_partition: letter.partition,
        dlq_offset: letter.offset,
        class: letter.header_str(headers::ERROR_CLASS),
        action: if execute { "replayed" } else { "would-replay" },
        to: None,
        detail: None,
    };
    if let Some(m) = replayed(markers, dlq, letter) {
        outcome.action = "already-replayed";
        outcome.to = Some(format!(
            "{}/{}/{}",
            m.source_topic, m.source_partition, m.source_offset
        ));
        outcome.detail = Some(format!("at {}", format_millis(m.replayed_at)));
        return (outcome, None);
    }
    let source = letter
        .header_str(headers::ERROR_SOURCE_TOPIC)
        .filter(|t| topology.topic(t).is_some_and(|t| t.kind != TopicKind::Dlq));
    match source {
        Some(topic) => {
            outcome.to = Some(topic.clone());
            (outcome, Some(topic))
        }
        None => {
            outcome.action = "skipped";
            outcome.detail = Some(format!(
                "no {} header naming a topic of the topology",
                headers::ERROR_SOURCE_TOPIC
            ));
            (outcome, None)
        }
    }
}

/// Re-injects `letters` and their markers in one transaction; returns where each went.
async fn write(
    ctx: &dlq_view::Context,
    producer: &FutureProducer,
    naming: &Naming,
    dlq: &str,
    letters: &[(&Scanned, String)],
) -> anyhow::Result<BTreeMap<(i32, i64), String>> {
    let codec = AvroCodec::new(
        registry_settings(&ctx.config)?,
        &ctx.topology,
        naming,
        &[REPLAYS_TOPIC.to_string()],
    )?;
    codec.register_outputs().await?;
    producer
        .begin_transaction()
        .context("beginning the transaction")?;
    let mut done = BTreeMap::new();
    for (letter, source) in letters {
        let replay_of = marker_key(dlq, letter.partition, letter.offset);
        let mut out = OwnedHeaders::new_with_capacity(letter.headers.len() + 1);
        for (k, v) in letter
            .headers
            .iter()
            .filter(|(k, _)| !k.starts_with("mailstream.error."))
        {
            out = out.insert(Header {
                key: k,
                value: v.as_deref(),
            });
        }
        out = out.insert(Header {
            key: REPLAY_OF,
            value: Some(replay_of.as_bytes()),
        });
        let physical = naming.topic(source);
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&physical).headers(out);
        if let Some(k) = &letter.key {
            record = record.key(k.as_slice());
        }
        if let Some(v) = &letter.payload {
            record = record.payload(v.as_slice());
        }
        if let Some(p) = letter
            .header_str(headers::ERROR_SOURCE_PARTITION)
            .and_then(|p| p.parse::<i32>().ok())
        {
            record = record.partition(p);
        }
        let delivery = producer
            .send(record, SEND_TIMEOUT)
            .await
            .map_err(|(e, _)| e)
            .with_context(|| format!("writing to {physical}"))?;
        let marker = DlqReplay {
            dlq_topic: dlq.to_string(),
            dlq_partition: letter.partition,
            dlq_offset: letter.offset,
            dlq_timestamp: letter.timestamp_ms.unwrap_or_default(),
            error_class: letter.header_str(headers::ERROR_CLASS),
            source_topic: source.clone(),
            source_partition: delivery.partition,
            source_offset: delivery.offset,
            replayed_at: chrono::Utc::now().timestamp_millis(),
            replayed_by: Some(ctx.config.instance_id()),
        };
        let payload = codec
            .encode(REPLAYS_TOPIC, &marker)
            .await
            .map_err(|e| anyhow::anyhow!("encoding a replay marker: {e}"))?;
        let markers_topic = naming.topic(REPLAYS_TOPIC);
        producer
            .send(
                FutureRecord::to(&markers_topic)
                    .key(replay_of.as_str())
                    .payload(&payload),
                SEND_TIMEOUT,
            )
            .await
            .map_err(|(e, _)| e)
            .with_context(|| format!("writing the replay marker to {markers_topic}"))?;
        done.insert(
            (letter.partition, letter.offset),
            format!("{source}/{}/{}", delivery.partition, delivery.offset),
        );
    }
    tokio::task::block_in_place(|| producer.commit_transaction(SEND_TIMEOUT)).context(
        "committing the transaction (if another `mailstream dlq replay` started meanwhile, it fenced this one)",
    )?;
    Ok(done)
}

fn print_outcomes(
    dlq: &str,
    outcomes: &[Outcome],
    executed: bool,
    json: bool,
) -> anyhow::Result<()> {
    if json {
        let out = json!({"topic": dlq, "executed": executed, "records": outcomes});
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    print!("{}", render(dlq, outcomes, executed));
    Ok(())
}

/// The outcomes as people read them: a line per dead letter, then the counts.
fn render(dlq: &str, outcomes: &[Outcome], executed: bool) -> String {
    let mut out = String::new();
    for o in outcomes {
        let _ = writeln!(
            out,
            "{:<16} {dlq} {}:{}  {:<18} → {}{}",
            o.action,
            o.dlq_partition,
            o.dlq_offset,
            o.class.as_deref().unwrap_or("-"),
            o.to.as_deref().unwrap_or("-"),
            o.detail
                .as_deref()
                .map(|d| format!("  ({d})"))
                .unwrap_or_default()
        );
    }
    let count = |a: &str| outcomes.iter().filter(|o| o.action == a).count();
    if executed {
        let _ = writeln!(
            out,
            "{} re-injected, {} already replayed before, {} skipped",
            count("replayed"),
            count("already-replayed"),
            count("skipped")
        );
    } else {
        let _ = writeln!(
            out,
            "dry run: {} would be re-injected ({} already replayed, {} skipped); add --execute to write them",
            count("would-replay"),
            count("already-replayed"),
            count("skipped")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(partition: i32, offset: i64, class: &str, source: &str) -> Scanned {
        Scanned {
            partition,
            offset,
            timestamp_ms: Some(1_000),
            key: None,
            payload: None,
            headers: vec![
                (headers::ERROR_CLASS.into(), Some(class.as_bytes().to_vec())),
                (
                    headers::ERROR_SOURCE_TOPIC.into(),
                    Some(source.as_bytes().to_vec()),
                ),
            ],
        }
    }

    /// `mailstream dlq replay`'s arguments alone.
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: ReplayArgs,
    }

    fn parse(args: &[&str]) -> Result<ReplayArgs, clap::Error> {
        use clap::Parser as _;
        Cli::try_parse_from(std::iter::once("replay").chain(args.iter().copied())).map(|c| c.args)
    }

    fn positions(chosen: &[&Scanned]) -> Vec<(i32, i64)> {
        chosen.iter().map(|l| (l.partition, l.offset)).collect()
    }

    #[test]
    fn a_selection_is_required_and_positions_are_checked() {
        use clap::error::ErrorKind;
        let none = parse(&["raw-email"]).err().map(|e| e.kind());
        assert_eq!(none, Some(ErrorKind::MissingRequiredArgument));
        assert!(parse(&["raw-email", "--select", "0:x"]).is_err());
        let both = parse(&["raw-email", "--all", "--execute", "--dry-run"]).err();
        assert_eq!(both.map(|e| e.kind()), Some(ErrorKind::ArgumentConflict));
        let args = parse(&["raw-email", "--select", "0:1,1:2"]).expect("valid");
        assert_eq!(args.select, [(0, 1), (1, 2)]);
    }

    #[test]
    fn letters_are_chosen_by_position_class_or_all() {
        let letters = [
            letter(0, 1, "mime-unparseable", "raw-email"),
            letter(0, 2, "avro-decode", "raw-email"),
            letter(1, 1, "mime-unparseable", "raw-email"),
        ];
        let choose_with = |args: &[&str]| {
            let args = parse(args).expect("valid");
            choose(&letters, "raw-email.dlq", &args).map(|c| positions(&c))
        };
        assert_eq!(
            choose_with(&["raw-email", "--select", "0:2"]).expect("chosen"),
            [(0, 2)]
        );
        assert_eq!(
            choose_with(&["raw-email", "--class", "mime-unparseable"]).expect("chosen"),
            [(0, 1), (1, 1)]
        );
        assert_eq!(
            choose_with(&["raw-email", "--all"]).expect("chosen").len(),
            3
        );
        assert_eq!(
            choose_with(&["raw-email", "--class", "panic"]).expect("chosen"),
            []
        );
        let missing = choose_with(&["raw-email", "--select", "0:1,5:5"]).expect_err("no 5:5");
        assert!(
            missing
                .to_string()
                .contains("no dead letter at raw-email.dlq 5:5"),
            "{missing}"
        );
    }

    #[test]
    fn a_letter_goes_back_to_its_source_once() {
        let topology = Topology::embedded().expect("embedded topology");
        let fresh = letter(0, 1, "mime-unparseable", "raw-email");
        let none = dlq_view::Markers::new();
        let (outcome, source) = decide(&fresh, "raw-email.dlq", &none, &topology, false);
        assert_eq!(
            (outcome.action, source.as_deref()),
            ("would-replay", Some("raw-email"))
        );
        let (outcome, _) = decide(&fresh, "raw-email.dlq", &none, &topology, true);
        assert_eq!(outcome.action, "replayed");

        let markers = dlq_view::Markers::from([(
            marker_key("raw-email.dlq", 0, 1),
            DlqReplay {
                dlq_topic: "raw-email.dlq".into(),
                dlq_partition: 0,
                dlq_offset: 1,
                dlq_timestamp: 1_000,
                error_class: None,
                source_topic: "raw-email".into(),
                source_partition: 2,
                source_offset: 30,
                replayed_at: 0,
                replayed_by: None,
            },
        )]);
        let (outcome, source) = decide(&fresh, "raw-email.dlq", &markers, &topology, true);
        assert_eq!(outcome.action, "already-replayed");
        assert_eq!(outcome.to.as_deref(), Some("raw-email/2/30"));
        assert_eq!(source, None);

        for bad in ["not-a-topic", "raw-email.dlq"] {
            let (outcome, source) = decide(
                &letter(0, 2, "x", bad),
                "raw-email.dlq",
                &none,
                &topology,
                true,
            );
            assert_eq!((outcome.action, source), ("skipped", None), "{bad}");
        }
    }

    #[test]
    fn the_text_outcome_counts_each_action() {
        let outcome = |action, to: Option<&str>, detail: Option<&str>| Outcome {
            dlq_partition: 0,
            dlq_offset: 7,
            class: Some("panic".into()),
            action,
            to: to.map(String::from),
            detail: detail.map(String::from),
        };
        let outcomes = [
            outcome("would-replay", Some("raw-email"), None),
            outcome("already-replayed", Some("raw-email/0/3"), Some("at then")),
            outcome("skipped", None, Some("no header")),
        ];
        let dry = render("raw-email.dlq", &outcomes, false);
        let lines: Vec<&str> = dry.lines().collect();
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            [
                "would-replay",
                "raw-email.dlq",
                "0:7",
                "panic",
                "→",
                "raw-email"
            ]
        );
        assert!(
            lines[1].ends_with("→ raw-email/0/3  (at then)"),
            "{}",
            lines[1]
        );
        assert!(lines[2].ends_with("→ -  (no header)"), "{}", lines[2]);
        assert_eq!(
            lines[3],
            "dry run: 1 would be re-injected (1 already replayed, 1 skipped); add --execute to write them"
        );
        let done = render("raw-email.dlq", &[outcome("replayed", None, None)], true);
        assert!(done.ends_with("1 re-injected, 0 already replayed before, 0 skipped\n"));
    }
}
