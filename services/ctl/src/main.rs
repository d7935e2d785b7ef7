//! `mailstream`: one binary that runs each processor (`mailstream run parser`) and carries the
//! operator commands (`mailstream topology apply`, `replay`, `dlq`, `lag`, ...). A thin shell over the service crates.

mod dlq_cmd;
mod dlq_view;
mod erase_cmd;
mod groups;
mod lag_cmd;
mod notify_cmd;
mod parse_cmd;
mod registry;
mod replay_cmd;
mod retention_cmd;
mod run;
mod scan;
mod schemas_cmd;
mod score_cmd;
#[cfg(test)]
mod settings_schema;
mod tables_cmd;
mod tail_cmd;
mod topology_cmd;
mod topology_docs;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "mailstream",
    version,
    about = "Inbound email to CRM data, on Kafka."
)]
struct Cli {
    /// Optional TOML config file; `MAILSTREAM_*` environment variables override it.
    #[arg(long, global = true, env = "MAILSTREAM_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

/// The `--json` flag of every command that prints a report.
#[derive(clap::Args, Clone, Copy, Debug)]
struct Output {
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// `--execute` and `--dry-run` of the commands that change something: a dry run (printing what
/// would change) unless `--execute`.
#[derive(clap::Args, Clone, Copy, Debug)]
struct Apply {
    /// Make the change.
    #[arg(long)]
    execute: bool,
    /// Only print what would change (the default).
    #[arg(long, conflicts_with = "execute")]
    dry_run: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Run one processor until SIGTERM/SIGINT.
    Run {
        /// Processor name, as in topology/topology.yaml.
        processor: String,
    },
    /// Validate and apply the topology (topics and schemas).
    Topology {
        #[command(subcommand)]
        command: topology_cmd::TopologyCommand,
    },
    /// Seed the contacts and accounts table topics from CRM exports.
    Tables {
        #[command(subcommand)]
        command: tables_cmd::TablesCommand,
    },
    /// Print a topic's records decoded from Avro as JSON lines.
    Tail(tail_cmd::TailArgs),
    /// Parse .eml/mbox files (or stdin) offline; print each message's parsed record as one JSON
    /// line. Exits 1 when an input cannot be read as email.
    Parse(parse_cmd::ParseArgs),
    /// Parse, resolve and score .eml files offline and explain the score (try a rules change
    /// before it ships).
    Score(score_cmd::ScoreArgs),
    /// Move a processor's committed input offsets (dry run unless --execute; the processor
    /// must be stopped).
    Replay(replay_cmd::ReplayArgs),
    /// Dead letters: list them, show one decoded, re-inject chosen ones exactly once.
    Dlq {
        #[command(subcommand)]
        command: dlq_cmd::DlqCommand,
    },
    /// Erase a person (right to be forgotten): tombstones, blobs, CRM rows, and a record that
    /// keeps them out of replays (dry run unless --execute).
    Erase(erase_cmd::EraseArgs),
    /// Retention: delete old unqualified leads from the CRM (dry run unless --execute).
    Retention {
        #[command(subcommand)]
        command: retention_cmd::RetentionCommand,
    },
    /// Lag of each processor's consumer group per partition (committed, end, lag).
    Lag(lag_cmd::LagArgs),
    /// Hot-lead notifications: `notify test` sends a sample to each configured channel.
    Notify {
        #[command(subcommand)]
        command: notify_cmd::NotifyCommand,
    },
    /// The build's schemas against the registry (compatibility check, registration).
    Schemas {
        #[command(subcommand)]
        command: schemas_cmd::SchemasCommand,
    },
    /// Load .eml files, mbox files and maildirs into raw-email (deterministic ingest ids, so a
    /// second run writes the same ids).
    Backfill {
        /// Files and directories to read.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// How to read the paths.
        #[arg(long, default_value = "auto", value_parser = ["auto", "eml", "mbox", "maildir"])]
        format: String,
    },
}

/// `mailstream backfill`: prints the summary; fails when any message failed.
async fn backfill(
    paths: Vec<PathBuf>,
    format: &str,
    source: mailstream_runtime::ConfigSource,
) -> anyhow::Result<ExitCode> {
    let format = format.parse().map_err(anyhow::Error::msg)?;
    let summary = mailstream_ingest::backfill::run(source, paths, format).await?;
    print!("{summary}");
    Ok(if summary.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let source = mailstream_runtime::ConfigSource::from_process(cli.config);
    let result = match cli.command {
        Command::Run { processor } => run::run(&processor, source).await,
        Command::Topology { command } => topology_cmd::execute(command, source).await,
        Command::Backfill { paths, format } => backfill(paths, &format, source).await,
        Command::Parse(args) => parse_cmd::execute(args).await,
        Command::Score(args) => score_cmd::execute(args).await,
        Command::Tail(args) => tail_cmd::execute(args, source).await,
        Command::Tables { command } => tables_cmd::execute(command, source).await,
        Command::Replay(args) => tokio::task::block_in_place(|| replay_cmd::execute(args, source)),
        Command::Dlq { command } => dlq_cmd::execute(command, source).await,
        Command::Erase(args) => erase_cmd::execute(args, source).await,
        Command::Retention { command } => retention_cmd::execute(command, source).await,
        Command::Lag(args) => tokio::task::block_in_place(|| lag_cmd::execute(args, source)),
        Command::Schemas { command } => schemas_cmd::execute(command, source).await,
        Command::Notify { command } => notify_cmd::execute(command, source).await,
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
