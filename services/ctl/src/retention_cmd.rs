//! `mailstream retention run --older-than-days N [--statuses nurture,excluded] [--execute]`:
//! deletes what the CRM sink wrote for unqualified leads received more than N days ago
//! (`mailstream_crm_sink::expire`), then the blobs of their attachments nothing still points
//! to. Contacts stay. A dry run (the default) counts exactly what `--execute` deletes; a second
//! run deletes nothing new. The chart's CronJob runs it on a schedule.
//!
//! How the old unqualified messages are found, per backend:
//!
//! | backend | found by | deleted | blobs |
//! |---|---|---|---|
//! | `postgres` | its `leads` rows (status, `received_at`) | activities with attachments, leads, follow-ups; `responses` (our answers) older than N days | those no remaining attachment row points to |
//! | `tryton` | its notes (the sink's marker line, `Lead:` status, `Received:` time) | the notes; an opportunity only they are on while it is a lead | those no other `scored` record points to (Tryton stores no attachments) |
//! | `hubspot` | `crm-results` (its results, `written_at` = received) joined with `scored` (status) | the email engagements (archived), by the message-id property | as Tryton (HubSpot stores no attachment bytes) |
//! | `rest` | the same join; the activity ids of `crm-results` | the activities (`DELETE`; the CRM deletes their attachments) | none: the CRM's attachments point to blobs by URL and the older ones cannot be listed |
//!
//! The topics keep records for their retention only (30 days): for `rest` and `hubspot` a
//! message is found while both its `crm-results` and `scored` records are there, so N must be
//! under that (the command warns otherwise, and names the old results whose `scored` record is
//! gone). A replay of the CRM sink re-creates what retention deleted while `scored` still holds
//! the records: for `postgres` and `tryton` keep N at least the `scored` topic's retention (the
//! command warns when it is less).

use std::collections::{BTreeSet, HashMap};
use std::process::ExitCode;

use anyhow::bail;
use chrono::{DateTime, Duration as Days, Utc};
use clap::{Args, Subcommand};
use mailstream_crm_sink::{Backend, CrmSinkSettings, Expired, Person};
use mailstream_parser::ParserSettings;
use mailstream_runtime::avro::{AvroCodec, registry_settings};
use mailstream_runtime::blob::BlobStore;
use mailstream_runtime::records::{CrmResult, ScoredLead};
use mailstream_runtime::{AvroRecord, ConfigSource, Naming, RuntimeConfig, Topology, config};
use serde::Serialize;

use crate::scan::{Reader, Scanned};

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
    expired: Expired,
    blobs_deleted: usize,
    /// Old results of the backend (`rest`, `hubspot`) whose `scored` record is gone: their
    /// status is unknown, so they were kept.
    unknown_status: usize,
}

/// What the topics say about old messages, for the backends that cannot search themselves.
#[derive(Default)]
struct Listed {
    /// One per old unqualified message the backend wrote.
    messages: Vec<Person>,
    unknown_status: usize,
    /// Each `scored` message's attachment blobs.
    blobs: HashMap<String, Vec<String>>,
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
    let (runtime, sink) = config::load::<CrmSinkSettings>("crm-sink", &source)?;
    let (_, parser) = config::load::<ParserSettings>("parser", &source)?;
    let execute = args.apply.execute;
    let days = i64::from(args.older_than_days);
    let before = Utc::now() - Days::days(days);
    let topology = Topology::embedded()?;
    let retention_days = |topic: &str| {
        topology
            .topic(topic)
            .and_then(|t| t.config.get("retention.ms")?.parse::<i64>().ok())
            .map(|ms| ms / 86_400_000)
    };
    let from_topics = matches!(sink.backend, Backend::Rest | Backend::Hubspot);
    if let Some(kept) = retention_days("scored").filter(|d| days < *d) {
        eprintln!(
            "warning: `scored` keeps records for {kept} days: a replay of the CRM sink would write back what this deletes; use --older-than-days {kept} or more"
        );
    }
    let shortest = ["crm-results", "scored"]
        .into_iter()
        .filter_map(retention_days)
        .min();
    if let Some(kept) = shortest.filter(|d| from_topics && days >= *d) {
        eprintln!(
            "warning: the {} CRM's old messages are found in `crm-results` and `scored`, which keep records for {kept} days: those received more than {kept} days ago are not found; use --older-than-days under {kept} or raise both topics' retention.ms",
            sink.backend.name()
        );
    }
    let listed = if sink.backend == Backend::Postgres {
        Listed::default()
    } else {
        list(&runtime, &sink, &args.statuses, before, from_topics).await?
    };
    if listed.unknown_status > 0 {
        eprintln!(
            "warning: {} message(s) written before the cut-off have no record in `scored` any more: their status is unknown and they were kept",
            listed.unknown_status
        );
    }
    let mut expired =
        mailstream_crm_sink::expire(&sink, &args.statuses, before, &listed.messages, execute)
            .await
            .map_err(anyhow::Error::msg)?;
    if matches!(sink.backend, Backend::Tryton | Backend::Hubspot) {
        expired.unreferenced_blobs = unshared_blobs(&listed.blobs, &expired.message_ids);
    }
    let blobs =
        BlobStore::open(&parser.blob_url, &runtime.blob_options()).map_err(anyhow::Error::msg)?;
    let mut blobs_deleted = 0;
    for uri in &expired.unreferenced_blobs {
        // A dry run counts the blobs that would go; --execute those it deleted.
        let deleted = !execute
            || blobs
                .delete(uri)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        blobs_deleted += usize::from(deleted);
    }
    let report = Report {
        executed: execute,
        before,
        statuses: args.statuses,
        expired,
        blobs_deleted,
        unknown_status: listed.unknown_status,
    };
    print(&report, args.output.json)?;
    Ok(ExitCode::SUCCESS)
}

/// Reads `scored` (each message's status and blobs) and, when `from_topics`, the backend's
/// `crm-results`: the messages it wrote before `before` whose lead has one of `statuses`.
async fn list(
    runtime: &RuntimeConfig,
    sink: &CrmSinkSettings,
    statuses: &[String],
    before: DateTime<Utc>,
    from_topics: bool,
) -> anyhow::Result<Listed> {
    let reader = Reader::new(runtime)?;
    let naming = Naming::new(runtime.topic_prefix.clone());
    let decoder = AvroCodec::decoder(registry_settings(runtime)?);
    let mut listed = Listed::default();
    let mut status = HashMap::new();
    for lead in read::<ScoredLead>(&reader, &naming, &decoder, "scored").await? {
        let uris = lead.resolved.email.attachments.iter();
        let uris = uris.filter_map(|a| a.blob_uri.clone()).collect();
        listed.blobs.insert(lead.message_id.clone(), uris);
        status.insert(lead.message_id, lead.status);
    }
    if !from_topics {
        return Ok(listed);
    }
    let results = read::<CrmResult>(&reader, &naming, &decoder, "crm-results").await?;
    let (messages, unknown_status) = select(&sink.backend, results, &status, statuses, before);
    listed.messages = messages;
    listed.unknown_status = unknown_status;
    Ok(listed)
}

/// The old unqualified messages `backend` wrote, by joining its latest result of each message
/// (`written_at` is the email's `received_at`) with the message's `status` in `scored`: one
/// [`Person`] each (message id, activity id), and how many old ones have no status any more.
fn select(
    backend: &Backend,
    results: Vec<CrmResult>,
    status: &HashMap<String, String>,
    statuses: &[String],
    before: DateTime<Utc>,
) -> (Vec<Person>, usize) {
    // The latest result of each message (a replay writes it again).
    let mut latest = HashMap::new();
    for result in results.into_iter().filter(|r| r.backend == backend.name()) {
        latest.insert(result.message_id.clone(), result);
    }
    let cut_off = before.timestamp_millis();
    let mut old: Vec<CrmResult> = latest
        .into_values()
        .filter(|r| matches!(r.outcome.as_str(), "written" | "unchanged"))
        .filter(|r| r.written_at < cut_off)
        .filter(|r| *backend != Backend::Rest || r.activity_id.is_some())
        .collect();
    old.sort_by(|a, b| a.message_id.cmp(&b.message_id));
    let mut messages = Vec::new();
    let mut unknown_status = 0;
    for result in old {
        match status.get(&result.message_id) {
            None => unknown_status += 1,
            Some(s) if statuses.contains(s) => messages.push(Person {
                message_ids: vec![result.message_id],
                activity_ids: result.activity_id.into_iter().collect(),
                ..Person::default()
            }),
            Some(_) => {}
        }
    }
    (messages, unknown_status)
}

/// Every decodable record of the topic `logical`, in partition and offset order.
async fn read<T: AvroRecord>(
    reader: &Reader,
    naming: &Naming,
    decoder: &AvroCodec,
    logical: &str,
) -> anyhow::Result<Vec<T>> {
    let physical = naming.topic(logical);
    let records: Vec<Scanned> = match reader.ranges(&physical)? {
        Some(ranges) => reader.read(&physical, &ranges, None).await?,
        None => Vec::new(),
    };
    let mut out = Vec::new();
    for payload in records.iter().filter_map(|r| r.payload.as_deref()) {
        let value = decoder.decode(Some(payload)).await;
        if let Some(record) = value.ok().and_then(|v| T::from_avro(v).ok()) {
            out.push(record);
        }
    }
    Ok(out)
}

/// The blobs of the `expired` messages that no other message in `blobs` points to.
fn unshared_blobs(blobs: &HashMap<String, Vec<String>>, expired: &[String]) -> Vec<String> {
    let expired: BTreeSet<&String> = expired.iter().collect();
    let (theirs, others): (Vec<_>, Vec<_>) = blobs.iter().partition(|(m, _)| expired.contains(m));
    let kept: BTreeSet<&String> = others.into_iter().flat_map(|(_, uris)| uris).collect();
    let gone: BTreeSet<&String> = theirs.into_iter().flat_map(|(_, uris)| uris).collect();
    gone.difference(&kept).map(|uri| (*uri).clone()).collect()
}

fn print(report: &Report, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
        return Ok(());
    }
    let verb = if report.executed { "" } else { "would be " };
    let expired = &report.expired;
    println!(
        "{} message(s) with a lead in {} received before {}: {} CRM record(s) ({}) {verb}deleted ({}), {} blob(s) {verb}deleted",
        expired.messages,
        report.statuses.join(", "),
        report.before.to_rfc3339(),
        expired.rows.total(),
        expired.rows.backend,
        expired.rows.deleted_kinds(),
        report.blobs_deleted
    );
    if !report.executed {
        println!("dry run: nothing changed; run again with --execute");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blob_another_message_points_to_stays() {
        let uris = |u: &[&str]| u.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let blobs = HashMap::from([
            ("old".to_string(), uris(&["own", "shared"])),
            ("new".to_string(), uris(&["shared"])),
        ]);
        assert_eq!(unshared_blobs(&blobs, &["old".into()]), ["own"]);
        assert!(unshared_blobs(&blobs, &[]).is_empty());
    }

    #[test]
    fn old_unqualified_results_of_the_backend_are_selected_and_unknown_statuses_counted() {
        let before = Utc::now();
        let old = before.timestamp_millis() - 1;
        let result = |id: &str, backend: &str, outcome: &str, at: i64| CrmResult {
            message_id: id.into(),
            backend: backend.into(),
            outcome: outcome.into(),
            activity_id: Some(format!("a-{id}")),
            written_at: at,
            ..CrmResult::default()
        };
        let results = vec![
            result("m1", "rest", "written", old),
            result("m1", "rest", "unchanged", old),
            result("m2", "rest", "written", old),
            result("m3", "rest", "skipped", old),
            result("m4", "rest", "written", before.timestamp_millis()),
            result("m5", "hubspot", "written", old),
            result("m6", "rest", "written", old),
        ];
        let status = HashMap::from([
            ("m1".to_string(), "nurture".to_string()),
            ("m2".to_string(), "qualified".to_string()),
            ("m3".to_string(), "nurture".to_string()),
            ("m4".to_string(), "nurture".to_string()),
            ("m5".to_string(), "nurture".to_string()),
        ]);
        let statuses = ["nurture".to_string(), "excluded".to_string()];
        let (messages, unknown) = select(&Backend::Rest, results, &status, &statuses, before);
        let want = Person {
            message_ids: vec!["m1".into()],
            activity_ids: vec!["a-m1".into()],
            ..Person::default()
        };
        assert_eq!(
            messages,
            [want],
            "old, unqualified, written by this backend"
        );
        assert_eq!(unknown, 1, "m6 has no scored record");
    }
}
