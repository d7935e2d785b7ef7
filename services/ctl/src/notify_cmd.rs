//! `mailstream notify test [--channel slack|webhook] [--dry-run]`: sends a sample hot-lead
//! notification to each channel the notifier's settings configure (`[notifier]`,
//! `MAILSTREAM_NOTIFIER_*`) with its retries and rate limit, and prints each channel's answer.
//! Nothing is recorded in `notifications`. `--dry-run` prints the bodies instead of sending.
//! Exits 1 when a channel did not accept it.

use std::process::ExitCode;

use clap::Subcommand;
use mailstream_notifier::deliver::{self, Kind};
use mailstream_notifier::message::Facts;
use mailstream_notifier::{NotifierSettings, settings};
use mailstream_runtime::{ConfigSource, config};

#[derive(Subcommand)]
pub enum NotifyCommand {
    /// Send a sample notification to each configured channel (or one) and print its answer.
    Test {
        /// Only this channel.
        #[arg(long, value_parser = ["slack", "webhook"])]
        channel: Option<String>,
        /// Print what would be sent, send nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        output: crate::Output,
    },
}

pub async fn execute(command: NotifyCommand, source: ConfigSource) -> anyhow::Result<ExitCode> {
    let NotifyCommand::Test {
        channel,
        dry_run,
        output,
    } = command;
    let (_, settings) = config::load::<NotifierSettings>(settings::SECTION, &source)?;
    let only = channel.as_deref();
    if dry_run || settings.dry_run {
        let facts = Facts::of(&mailstream_notifier::sample_lead(), &settings);
        for channel in deliver::channels(&settings) {
            let name = channel.kind.name();
            if only.is_some_and(|o| o != name) {
                continue;
            }
            let body = mailstream_notifier::body(channel.kind, &facts);
            println!("{name}: {}", String::from_utf8_lossy(&body));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let results = mailstream_notifier::test_channels(&settings, only).await;
    if results.is_empty() {
        anyhow::bail!(
            "no such channel configured (set {} or {})",
            settings::key(Kind::Slack.url_key()),
            settings::key(Kind::Webhook.url_key())
        );
    }
    let ok = results.iter().all(|(_, r)| r.is_ok());
    if output.json {
        let report: Vec<serde_json::Value> = results
            .iter()
            .map(|(name, r)| match r {
                Ok(answer) => serde_json::json!({"channel": name, "ok": true, "answer": answer}),
                Err(error) => serde_json::json!({"channel": name, "ok": false, "error": error}),
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for (name, result) in &results {
            match result {
                Ok(answer) => println!("{name}: {answer}"),
                Err(error) => println!("{name}: FAILED: {error}"),
            }
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
