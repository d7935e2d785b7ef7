//! `mailstream retention run --older-than-days N [--statuses nurture,excluded] [--execute]`:
//! deletes the CRM rows of unqualified leads received more than N days ago (PostgreSQL
//! backend: each such message's activity with its attachments, its leads and follow-ups; the
//! contact stays), then the blobs of those attachments no remaining attachment points to. A dry
//! run (the default) counts exactly what `--execute` deletes; a second run deletes nothing new.
//! The chart's CronJob runs it on a schedule.
//!
//! A replay of the CRM sink re-creates what retention deleted while `scored` still holds the
//! records: keep N at least the `scored` topic's retention (30 days), and the command warns when
//! it is less.

use std::process::ExitCode;

use anyhow::bail;
use chrono::{DateTime, Duration as Days, Utc};
use clap::{Args, Subcommand};
use mailstream_crm_sink::{CrmSinkSettings, Expired};
use mailstream_parser::ParserSettings;
use mailstream_runtime::blob::BlobStore;
use mailstream_runtime::{ConfigSource, Topology, config};
use serde::Serialize;

#[derive(Subcommand)]
pub enum RetentionCommand {
    /// Delete old unqualified leads from the CRM (dry run unless --execute).
    Run(RunArgs),
}

#[derive(Args)]
pub struct RunArgs {
    /// Leads received more than this many days ago are deleted.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    older_than_days: u32,
    /// The lead statuses that count as unqualified.
    #[arg(long, value_delimiter = ',', default_value = "nurture,excluded")]
    statuses: Vec<String>,
    #[command(flatten)]
    apply: crate::Apply,
    #[command(flatten)]
    output: crate::Output,
}

#[derive(Debug, Serialize)]
struct Report {
    executed: bool,
    /// Leads received before this were deleted.
    before: DateTime<Utc>,
    statuses: Vec<String>,
    /// `None` when the backend keeps its own records (`note` says so).
    expired: Option<Expired>,
    blobs_deleted: usize,
    note: Option<String>,
}

pub async fn execute(command: RetentionCommand, source: ConfigSource) -> anyhow::Result<ExitCode> {
    let RetentionCommand::Run(args) = command;
    const STATUSES: [&str; 4] = ["qualified", "review", "nurture", "excluded"];
    if let Some(bad) = args
        .statuses
        .iter()
        .find(|s| !STATUSES.contains(&s.as_str()))
    {
        bail!("--statuses: `{bad}` is not a lead status (one of {STATUSES:?})");
    }
    let (_, sink) = config::load::<CrmSinkSettings>("crm-sink", &source)?;
    let (_, parser) = config::load::<ParserSettings>("parser", &source)?;
    let execute = args.apply.execute;
    let before = Utc::now() - Days::days(i64::from(args.older_than_days));
    let scored_days = Topology::embedded()?
        .topic("scored")
        .and_then(|t| t.config.get("retention.ms")?.parse::<i64>().ok())
        .map(|ms| ms / 86_400_000);
    if let Some(days) = scored_days.filter(|d| i64::from(args.older_than_days) < *d) {
        eprintln!(
            "warning: `scored` keeps records for {days} days: a replay of the CRM sink would write back what this deletes; use --older-than-days {days} or more"
        );
    }
    let expired = mailstream_crm_sink::expire(&sink, &args.statuses, before, execute)
        .await
        .map_err(anyhow::Error::msg)?;
    let mut blobs_deleted = 0;
    if let Some(expired) = &expired {
        let blobs = BlobStore::open(&parser.blob_url, &[]).map_err(anyhow::Error::msg)?;
        for uri in &expired.unreferenced_blobs {
            // A dry run counts the blobs that would go; --execute those it deleted.
            let deleted = !execute
                || blobs
                    .delete(uri)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
            blobs_deleted += usize::from(deleted);
        }
    }
    let report = Report {
        executed: execute,
        before,
        statuses: args.statuses,
        note: expired.is_none().then(|| {
            format!(
                "the {} backend keeps its own records: set retention in the CRM",
                sink.backend.name()
            )
        }),
        expired,
        blobs_deleted,
    };
    print(&report, args.output.json)?;
    Ok(ExitCode::SUCCESS)
}

fn print(report: &Report, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
        return Ok(());
    }
    let verb = if report.executed { "" } else { "would be " };
    match (&report.expired, &report.note) {
        (Some(expired), _) => {
            let rows = &expired.rows;
            println!(
                "{} message(s) with a lead in {} received before {}: {} CRM row(s) {verb}deleted (activities {}, attachments {}, leads {}, follow-ups {}), {} blob(s) {verb}deleted",
                expired.messages,
                report.statuses.join(", "),
                report.before.to_rfc3339(),
                rows.total(),
                rows.activities,
                rows.attachments,
                rows.leads,
                rows.follow_ups,
                report.blobs_deleted
            );
        }
        (None, Some(note)) => println!("{note}"),
        (None, None) => {}
    }
    if !report.executed {
        println!("dry run: nothing changed; run again with --execute");
    }
    Ok(())
}
