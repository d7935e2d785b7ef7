//! `mailstream erase --email ADDRESS [--execute]`: the right to be forgotten. A dry run (the
//! default) finds and counts; `--execute` deletes.
//!
//! 1. **Finds** the person's emails: every `parsed` record any participant of which is one of
//!    the addresses (From, Sender, Reply-To, To, Cc, Bcc, envelope), and their `raw-email`
//!    records.
//! 2. **Records the erasure** first, in the compacted `erasures` table keyed by a keyed hash of
//!    each address (never the address; `erasure_key`), so the resolver and the CRM sink drop
//!    the person's earlier emails from then on, a replay included.
//! 3. **Tombstones** their keys in every compacted topic: `contacts` and `opt-outs` (their
//!    addresses), `leads` (their addresses and contact ids), `threads`, `resolver.dedupe` and
//!    `resolver.pending-replies` (their message ids),
//!    each on the partition the key was found in.
//! 4. **Deletes their blobs**: stored attachments, whole bodies and claim-checked raw
//!    messages, except a blob another person's email points to as well (blobs are stored by
//!    content).
//! 5. **Deletes what the CRM sink wrote for them** in the configured backend
//!    (`mailstream_crm_sink::erase`): PostgreSQL's contact, activities with attachments, leads
//!    and follow-ups (in one transaction, rolled back in a dry run); the REST CRM's activities
//!    and contacts (by the ids of `crm-results` and the `contacts` table); HubSpot's email
//!    engagements (archived) and contacts (GDPR delete); Tryton's notes, the opportunities
//!    only they are on, and their parties. A dry run of an HTTP CRM looks up only.
//! 6. **Reports** what was removed and, for each immutable topic still holding a copy (streams,
//!    audits, dead letters), how many and when retention deletes the last one.
//!
//! Limits: emails that never parsed (in `raw-email.dlq`) are found only by their keys in the
//! report, not opened; a running resolver keeps the erased message ids in its in-memory
//! seen-set until it restarts (the changelog holds tombstones); every record of each topic is
//! read, so the command takes as long as reading the stream topics once.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use clap::Args;
use mailstream_crm_sink::{CrmErased, CrmSinkSettings};
use mailstream_parser::ParserSettings;
use mailstream_runtime::avro::{AvroCodec, registry_settings};
use mailstream_runtime::blob::BlobStore;
use mailstream_runtime::erasure::{SubjectKey, TABLE};
use mailstream_runtime::records::{Contact, Erasure, ParsedEmail, RawEmail};
use mailstream_runtime::topology::TopicKind;
use mailstream_runtime::{
    AvroRecord, ConfigSource, Naming, RuntimeConfig, Topology, config, kafka,
};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::Serialize;

use crate::scan::{Reader, Scanned};

#[path = "erase_crm.rs"]
mod crm;

#[derive(Args)]
pub struct EraseArgs {
    /// One of the person's email addresses (repeat for each).
    #[arg(long = "email", required = true)]
    emails: Vec<String>,
    #[command(flatten)]
    apply: crate::Apply,
    #[command(flatten)]
    output: crate::Output,
}

/// What was (or would be) removed, and what remains until retention.
#[derive(Debug, Default, Serialize)]
struct Report {
    executed: bool,
    /// The keyed hashes the person is recorded under in `erasures`.
    subjects: Vec<String>,
    /// Emails the person took part in.
    messages: usize,
    /// Tombstones per compacted topic.
    tombstones: BTreeMap<String, usize>,
    blobs_deleted: usize,
    /// Blobs of the person's emails kept because another email points to them too.
    blobs_shared: usize,
    /// CRM records deleted, by kind, with the backend's name.
    crm: CrmErased,
    /// Immutable topics still holding copies, and when retention deletes the last.
    copies: Vec<Copies>,
}

#[derive(Debug, Serialize)]
struct Copies {
    topic: String,
    records: usize,
    /// The newest copy's timestamp plus the topic's `retention.ms`.
    expires_by: Option<DateTime<Utc>>,
}

/// The person's emails, as found in the stream topics.
#[derive(Default)]
struct Found {
    message_ids: BTreeSet<String>,
    ingest_ids: BTreeSet<String>,
    /// Blobs their records point to.
    blobs: BTreeSet<String>,
    /// Blobs other emails point to.
    shared: HashSet<String>,
}

pub async fn execute(args: EraseArgs, source: ConfigSource) -> anyhow::Result<ExitCode> {
    let (config, sink) = config::load::<CrmSinkSettings>("crm-sink", &source)?;
    let (_, parser) = config::load::<ParserSettings>("parser", &source)?;
    let Some(key) = config.erasure_key.as_ref() else {
        bail!(
            "erasure_key is not set (MAILSTREAM_ERASURE_KEY or MAILSTREAM_ERASURE_KEY_FILE): the erasures table names people by a hash keyed with it, and every processor must have the same key"
        );
    };
    let key = SubjectKey::new(key)?;
    let addresses: Vec<String> = args
        .emails
        .iter()
        .map(|e| e.trim().to_lowercase())
        .collect();
    if let Some(bad) = addresses.iter().position(|a| !a.contains('@')) {
        bail!("--email number {} is not an email address", bad + 1);
    }
    let execute = args.apply.execute;
    let topology = Topology::embedded()?;
    let naming = Naming::new(config.topic_prefix.clone());
    let mut topics = Topics {
        reader: Reader::new(&config)?,
        naming: &naming,
        read: HashMap::new(),
    };
    let decoder = AvroCodec::decoder(registry_settings(&config)?);
    let blobs =
        BlobStore::open(&parser.blob_url, &config.blob_options()).map_err(anyhow::Error::msg)?;

    let found = find(&mut topics, &decoder, &addresses).await?;
    let mut report = Report {
        executed: execute,
        subjects: addresses.iter().map(|a| key.subject(a)).collect(),
        messages: found.message_ids.len(),
        ..Report::default()
    };
    let erased_at = now_ms();
    let writer = if execute {
        let writer = Writer::new(&config, &topology, &naming).await?;
        // First, so the processors drop the person's emails while the rest is removed.
        writer.record(&report, erased_at, false).await?;
        Some(writer)
    } else {
        None
    };

    let tombstones = keys_to_tombstone(&mut topics, &decoder, &addresses, &found).await?;
    for (topic, keys) in &tombstones {
        report.tombstones.insert(topic.clone(), keys.len());
        if let Some(writer) = &writer {
            for (partition, key) in keys {
                writer.tombstone(topic, *partition, key).await?;
            }
        }
    }

    for uri in &found.blobs {
        if found.shared.contains(uri) {
            report.blobs_shared += 1;
            continue;
        }
        // A dry run counts the blobs the records point to; --execute counts those it deleted.
        let deleted = !execute
            || blobs
                .delete(uri)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        if deleted {
            report.blobs_deleted += 1;
        }
    }

    let backend = sink.backend.name();
    let person = crm::person(&mut topics, &decoder, &addresses, &found, backend).await?;
    report.crm = mailstream_crm_sink::erase(&sink, &person, execute)
        .await
        .map_err(anyhow::Error::msg)?;

    report.copies = copies(&mut topics, &topology, &found).await?;
    if let Some(writer) = &writer {
        writer.record(&report, erased_at, true).await?;
    }
    print(&report, args.output.json)?;
    Ok(ExitCode::SUCCESS)
}

/// The deployment's topics, each read once per run: `parsed` and `raw-email` are searched for
/// the person's emails and then counted again for the report.
struct Topics<'a> {
    reader: Reader,
    naming: &'a Naming,
    read: HashMap<String, Vec<Scanned>>,
}

impl Topics<'_> {
    /// Every record of `logical`, from its start to its end when first asked for (none if the
    /// topic does not exist).
    async fn all(&mut self, logical: &str) -> anyhow::Result<&[Scanned]> {
        if !self.read.contains_key(logical) {
            let physical = self.naming.topic(logical);
            let records = match self.reader.ranges(&physical)? {
                Some(ranges) => self.reader.read(&physical, &ranges, None).await?,
                None => Vec::new(),
            };
            self.read.insert(logical.to_string(), records);
        }
        Ok(self.read.get(logical).map_or(&[], Vec::as_slice))
    }
}

async fn decode<T: AvroRecord>(decoder: &AvroCodec, record: &Scanned) -> Option<T> {
    let payload = record.payload.as_deref()?;
    let value = decoder.decode(Some(payload)).await.ok()?;
    T::from_avro(value).ok()
}

fn key_of(record: &Scanned) -> Option<String> {
    record
        .key
        .as_deref()
        .map(|k| String::from_utf8_lossy(k).into_owned())
}

/// The person's emails in `parsed`, and the claim checks of their `raw-email` records.
async fn find(
    topics: &mut Topics<'_>,
    decoder: &AvroCodec,
    addresses: &[String],
) -> anyhow::Result<Found> {
    let mut found = Found::default();
    let mut others = HashSet::new();
    for record in topics.all("parsed").await? {
        let Some(email) = decode::<ParsedEmail>(decoder, record).await else {
            continue;
        };
        let theirs = email
            .participants()
            .any(|p| addresses.contains(&p.trim().to_lowercase()));
        if theirs {
            found.message_ids.insert(email.message_id.clone());
            found.ingest_ids.insert(email.ingest_id.clone());
            found.blobs.extend(email.blob_uris().map(String::from));
        } else {
            others.extend(email.blob_uris().map(String::from));
        }
    }
    for record in topics.all("raw-email").await? {
        if !key_of(record).is_some_and(|k| found.ingest_ids.contains(&k)) {
            continue;
        }
        if let Some(uri) = decode::<RawEmail>(decoder, record)
            .await
            .and_then(|raw| raw.blob_uri)
        {
            found.blobs.insert(uri);
        }
    }
    found.shared = found
        .blobs
        .iter()
        .filter(|uri| others.contains(*uri))
        .cloned()
        .collect();
    Ok(found)
}

/// The keys to tombstone, per compacted topic, with the partition each was found in.
async fn keys_to_tombstone(
    topics: &mut Topics<'_>,
    decoder: &AvroCodec,
    addresses: &[String],
    found: &Found,
) -> anyhow::Result<BTreeMap<String, Vec<(i32, String)>>> {
    let mut keys: BTreeMap<String, Vec<(i32, String)>> = BTreeMap::new();
    // Contacts by address; their ids key their leads too.
    let mut lead_keys: HashSet<String> = addresses.iter().cloned().collect();
    let mut latest: HashMap<String, (i32, bool)> = HashMap::new();
    for record in topics.all("contacts").await? {
        let Some(key) = key_of(record).filter(|k| addresses.contains(k)) else {
            continue;
        };
        if let Some(contact) = decode::<Contact>(decoder, record).await {
            lead_keys.insert(contact.contact_id);
        }
        latest.insert(key, (record.partition, record.payload.is_some()));
    }
    keys.insert("contacts".into(), live(latest));
    let mut tombstone = |topic: &str, records: &[Scanned], wanted: &dyn Fn(&str) -> bool| {
        let mut latest: HashMap<String, (i32, bool)> = HashMap::new();
        for record in records {
            if let Some(key) = key_of(record).filter(|k| wanted(k)) {
                latest.insert(key, (record.partition, record.payload.is_some()));
            }
        }
        keys.insert(topic.to_string(), live(latest));
    };
    let leads = topics.all("leads").await?;
    tombstone("leads", leads, &|k| lead_keys.contains(k));
    let opt_outs = topics.all("opt-outs").await?;
    tombstone("opt-outs", opt_outs, &|k| addresses.iter().any(|a| a == k));
    for topic in ["threads", "resolver.dedupe", "resolver.pending-replies"] {
        let records = topics.all(topic).await?;
        tombstone(topic, records, &|k| found.message_ids.contains(k));
    }
    Ok(keys)
}

/// The keys whose latest record is a value (not a tombstone already), sorted.
fn live(latest: HashMap<String, (i32, bool)>) -> Vec<(i32, String)> {
    let mut keys: Vec<(i32, String)> = latest
        .into_iter()
        .filter(|(_, (_, value))| *value)
        .map(|(key, (partition, _))| (partition, key))
        .collect();
    keys.sort();
    keys
}

/// The copies left in topics that only retention deletes (streams, audits, dead letters).
async fn copies(
    topics: &mut Topics<'_>,
    topology: &Topology,
    found: &Found,
) -> anyhow::Result<Vec<Copies>> {
    let mut copies = Vec::new();
    for topic in topology.resolved_topics() {
        let immutable = matches!(
            topic.kind,
            TopicKind::Stream | TopicKind::Audit | TopicKind::Dlq
        ) && topic.config.get("cleanup.policy").map(String::as_str)
            == Some("delete");
        if !immutable || topic.name.starts_with("bench.") {
            continue;
        }
        let mut records = 0;
        let mut newest: Option<i64> = None;
        for record in topics.all(&topic.name).await? {
            let theirs = key_of(record)
                .is_some_and(|k| found.message_ids.contains(&k) || found.ingest_ids.contains(&k));
            if theirs {
                records += 1;
                newest = newest.max(record.timestamp_ms);
            }
        }
        if records == 0 {
            continue;
        }
        let retention: Option<i64> = topic
            .config
            .get("retention.ms")
            .and_then(|r| r.parse().ok());
        let expires_by = newest
            .zip(retention)
            .and_then(|(at, keep)| DateTime::from_timestamp_millis(at.saturating_add(keep)));
        copies.push(Copies {
            topic: topic.name,
            records,
            expires_by,
        });
    }
    Ok(copies)
}

/// What `--execute` writes to Kafka: tombstones, and the person's `erasures` rows.
struct Writer<'a> {
    producer: FutureProducer,
    codec: AvroCodec,
    naming: &'a Naming,
}

impl<'a> Writer<'a> {
    async fn new(
        config: &RuntimeConfig,
        topology: &Topology,
        naming: &'a Naming,
    ) -> anyhow::Result<Self> {
        let producer = kafka::durable_producer_config(config)
            .create()
            .context("creating the producer")?;
        let codec = AvroCodec::new(
            registry_settings(config)?,
            topology,
            naming,
            &[TABLE.to_string()],
        )?;
        codec.register_outputs().await?;
        Ok(Self {
            producer,
            codec,
            naming,
        })
    }

    /// Writes a tombstone for `key` to `partition` of the logical `topic`.
    async fn tombstone(&self, topic: &str, partition: i32, key: &str) -> anyhow::Result<()> {
        let physical = self.naming.topic(topic);
        self.send(
            FutureRecord::<str, [u8]>::to(&physical)
                .key(key)
                .partition(partition),
        )
        .await
        .with_context(|| format!("writing a tombstone to {physical}"))
    }

    /// Writes the person's `erasures` rows (one per address); the counts once `counted`.
    async fn record(&self, report: &Report, erased_at: i64, counted: bool) -> anyhow::Result<()> {
        let counts = counted.then_some(report);
        let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
        let physical = self.naming.topic(TABLE);
        for subject in &report.subjects {
            let erasure = Erasure {
                subject: subject.clone(),
                erased_at,
                messages: count(report.messages),
                crm_rows: counts.map_or(0, |r| i32::try_from(r.crm.total()).unwrap_or(i32::MAX)),
                blobs: counts.map_or(0, |r| count(r.blobs_deleted)),
                tombstones: counts.map_or(0, |r| count(r.tombstones.values().sum())),
            };
            let payload = self
                .codec
                .encode(TABLE, &erasure)
                .await
                .map_err(|e| anyhow::anyhow!("encoding the erasure: {e}"))?;
            self.send(
                FutureRecord::to(&physical)
                    .key(subject.as_str())
                    .payload(&payload),
            )
            .await
            .with_context(|| format!("writing to {physical}"))?;
        }
        Ok(())
    }

    async fn send(&self, record: FutureRecord<'_, str, [u8]>) -> anyhow::Result<()> {
        self.producer
            .send(record, Duration::from_secs(30))
            .await
            .map(|_| ())
            .map_err(|(e, _)| e.into())
    }
}

fn print(report: &Report, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
        return Ok(());
    }
    let verb = if report.executed { "" } else { "would be " };
    println!(
        "{} email(s) of this person found; recorded in `erasures` as {}",
        report.messages,
        report.subjects.join(", ")
    );
    for (topic, n) in &report.tombstones {
        println!("{topic}: {n} key(s) {verb}tombstoned");
    }
    println!(
        "blobs: {} {verb}deleted, {} kept (other emails point to them too)",
        report.blobs_deleted, report.blobs_shared
    );
    println!("{}", crm::line(&report.crm, verb));
    for copy in &report.copies {
        let until = copy
            .expires_by
            .map_or("never (no retention.ms)".to_string(), |t| t.to_rfc3339());
        println!(
            "{}: {} immutable cop(ies) remain until retention deletes them, the last by {until}",
            copy.topic, copy.records
        );
    }
    if !report.executed {
        println!("dry run: nothing changed; run again with --execute");
    }
    Ok(())
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}
