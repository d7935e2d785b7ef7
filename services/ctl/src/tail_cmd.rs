//! `mailstream tail TOPIC`: decodes a topic's Avro records through the registry and prints
//! them as JSON lines, for analysts and for debugging. Reads `read_committed` in a throwaway
//! consumer group, so it never moves anyone's offsets. `--from-datetime` starts each partition
//! at its first record at or after an RFC 3339 time (it assigns the partitions that exist then).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use mailstream_runtime::avro::{AvroCodec, registry_settings};
use mailstream_runtime::{ConfigSource, Naming, NoSettings, config, kafka};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{Value as Json, json};

const TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Args)]
pub struct TailArgs {
    /// Logical topic name (as in the topology), e.g. `parsed`.
    topic: String,
    /// Start at the oldest record instead of the newest.
    #[arg(long, conflicts_with = "from_datetime")]
    from_beginning: bool,
    /// Start at the first record at or after this RFC 3339 time (e.g. 2026-05-01T12:00:00Z).
    #[arg(long, value_name = "TIME", value_parser = crate::groups::parse_datetime)]
    from_datetime: Option<i64>,
    /// Stop after this many records.
    #[arg(long)]
    limit: Option<usize>,
    /// Only records with this key.
    #[arg(long)]
    key: Option<String>,
    /// Stop when no record arrived for this many seconds (default: follow forever).
    #[arg(long)]
    idle_timeout: Option<u64>,
}

pub async fn execute(args: TailArgs, source: ConfigSource) -> anyhow::Result<ExitCode> {
    let (config, _) = config::load::<NoSettings>("ctl", &source)?;
    let naming = Naming::new(config.topic_prefix.clone());
    let topic = naming.topic(&args.topic);
    let mut client = kafka::reader_config(&config, &format!("mailstream-tail-{}", uuid_like()));
    client.set(
        "auto.offset.reset",
        if args.from_beginning {
            "earliest"
        } else {
            "latest"
        },
    );
    let consumer: StreamConsumer = client.create().context("creating the consumer")?;
    match args.from_datetime {
        None => consumer
            .subscribe(&[&topic])
            .with_context(|| format!("subscribing to {topic}"))?,
        Some(millis) => tokio::task::block_in_place(|| assign_at(&consumer, &topic, millis))?,
    }
    let codec = AvroCodec::decoder(registry_settings(&config)?);

    let mut printed = 0usize;
    let mut last = Instant::now();
    loop {
        if args.limit.is_some_and(|l| printed >= l) {
            break;
        }
        let wait = match args.idle_timeout {
            Some(secs) => {
                let left = Duration::from_secs(secs).saturating_sub(last.elapsed());
                if left.is_zero() {
                    break;
                }
                left
            }
            None => Duration::from_secs(3600),
        };
        let message = match tokio::time::timeout(wait, consumer.recv()).await {
            Err(_) => continue,
            Ok(Err(error)) => {
                eprintln!("warning: {error}");
                continue;
            }
            Ok(Ok(m)) => m,
        };
        last = Instant::now();
        let key = message
            .key()
            .map(|k| String::from_utf8_lossy(k).into_owned());
        if args.key.is_some() && args.key != key {
            continue;
        }
        let value = match message.payload() {
            None => Json::Null,
            Some(bytes) => match codec.decode(Some(bytes)).await {
                Ok(v) => {
                    Json::try_from(v).unwrap_or_else(|e| json!({"undecodable": e.to_string()}))
                }
                Err(e) => json!({"undecodable": e.to_string()}),
            },
        };
        let headers: serde_json::Map<String, Json> = message
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| {
                        let v = h.value.map(|v| String::from_utf8_lossy(v).into_owned());
                        (h.key.to_string(), v.map_or(Json::Null, Json::String))
                    })
                    .collect()
            })
            .unwrap_or_default();
        println!(
            "{}",
            json!({
                "topic": args.topic,
                "partition": message.partition(),
                "offset": message.offset(),
                "timestamp": message.timestamp().to_millis(),
                "key": key,
                "headers": headers,
                "value": value,
            })
        );
        printed += 1;
    }
    Ok(ExitCode::SUCCESS)
}

/// Assigns every partition of `topic` at its first offset at or after `millis` (its end when
/// every record is older).
fn assign_at(consumer: &StreamConsumer, topic: &str, millis: i64) -> anyhow::Result<()> {
    let metadata = consumer
        .fetch_metadata(Some(topic), TIMEOUT)
        .with_context(|| format!("reading the metadata of {topic}"))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .first()
        .filter(|t| t.error().is_none())
        .map(|t| t.partitions().iter().map(|p| p.id()).collect())
        .unwrap_or_default();
    if partitions.is_empty() {
        anyhow::bail!(
            "topic {topic} does not exist: create it with `mailstream topology apply` (and check MAILSTREAM_TOPIC_PREFIX)"
        );
    }
    let mut wanted = TopicPartitionList::new();
    for p in &partitions {
        wanted.add_partition_offset(topic, *p, Offset::Offset(millis))?;
    }
    let found = consumer
        .offsets_for_times(wanted, TIMEOUT)
        .with_context(|| format!("looking up offsets by time in {topic}"))?;
    let mut assignment = TopicPartitionList::new();
    for e in found.elements() {
        let offset = match e.offset() {
            Offset::Offset(o) if o >= 0 => Offset::Offset(o),
            _ => Offset::End,
        };
        assignment.add_partition_offset(topic, e.partition(), offset)?;
    }
    consumer
        .assign(&assignment)
        .with_context(|| format!("assigning {topic}"))
}

fn uuid_like() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    )
}
