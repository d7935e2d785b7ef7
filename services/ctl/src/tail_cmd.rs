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
        let Some(wait) = wait(args.idle_timeout, last.elapsed()) else {
            break;
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
        if !key_matches(args.key.as_deref(), key.as_deref()) {
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
        let headers = message
            .headers()
            .map(|h| headers_json(h.iter().map(|h| (h.key, h.value))))
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
        assignment.add_partition_offset(topic, e.partition(), start_at(e.offset()))?;
    }
    consumer
        .assign(&assignment)
        .with_context(|| format!("assigning {topic}"))
}

/// How long to wait for the next record: `None` once `idle_timeout` seconds passed without
/// one; without a timeout, an hour at a time, for ever.
fn wait(idle_timeout: Option<u64>, idle: Duration) -> Option<Duration> {
    let Some(secs) = idle_timeout else {
        return Some(Duration::from_secs(3600));
    };
    Some(Duration::from_secs(secs).saturating_sub(idle)).filter(|left| !left.is_zero())
}

/// Whether a record with `key` passes `--key` (a record without a key never does).
fn key_matches(wanted: Option<&str>, key: Option<&str>) -> bool {
    wanted.is_none_or(|w| key == Some(w))
}

/// Headers as a JSON object: values as (lossy) UTF-8 text, `null` without a value. A key that
/// appears twice keeps its last value.
fn headers_json<'a>(
    headers: impl Iterator<Item = (&'a str, Option<&'a [u8]>)>,
) -> serde_json::Map<String, Json> {
    headers
        .map(|(k, v)| {
            let v = v.map(|v| Json::String(String::from_utf8_lossy(v).into_owned()));
            (k.to_string(), v.unwrap_or(Json::Null))
        })
        .collect()
}

/// Where a partition starts for `--from-datetime`: the offset the time lookup found, or the
/// end when it found none (every record is older).
fn start_at(found: Offset) -> Offset {
    match found {
        Offset::Offset(o) if o >= 0 => Offset::Offset(o),
        _ => Offset::End,
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_idle_timeout_counts_from_the_last_record() {
        let secs = Duration::from_secs;
        assert_eq!(wait(Some(10), secs(3)), Some(secs(7)));
        assert_eq!(wait(Some(10), secs(10)), None);
        assert_eq!(wait(Some(10), secs(60)), None);
        assert_eq!(wait(Some(0), secs(0)), None);
        assert_eq!(wait(None, secs(1_000_000)), Some(secs(3600)));
    }

    #[test]
    fn the_key_filter_passes_only_that_key() {
        assert!(key_matches(None, None));
        assert!(key_matches(None, Some("a")));
        assert!(key_matches(Some("a"), Some("a")));
        assert!(!key_matches(Some("a"), Some("b")));
        assert!(!key_matches(Some("a"), None));
    }

    #[test]
    fn headers_become_text_or_null() {
        let headers = [
            ("mailstream.error.class", Some(&b"avro-decode"[..])),
            ("empty", None),
            ("binary", Some(&[0xff, b'x'][..])),
            ("twice", Some(&b"first"[..])),
            ("twice", Some(&b"second"[..])),
        ];
        let json = Json::Object(headers_json(headers.into_iter()));
        assert_eq!(
            json,
            json!({
                "mailstream.error.class": "avro-decode",
                "empty": null,
                "binary": "\u{fffd}x",
                "twice": "second",
            })
        );
    }

    #[test]
    fn a_time_past_every_record_starts_at_the_end() {
        assert_eq!(start_at(Offset::Offset(42)), Offset::Offset(42));
        assert_eq!(start_at(Offset::Offset(0)), Offset::Offset(0));
        assert_eq!(start_at(Offset::Offset(-1)), Offset::End);
        assert_eq!(start_at(Offset::End), Offset::End);
        assert_eq!(start_at(Offset::Invalid), Offset::End);
    }

    /// `mailstream tail`'s arguments alone.
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: TailArgs,
    }

    #[test]
    fn a_start_is_either_the_beginning_or_a_time() {
        use clap::Parser as _;
        let parse = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("tail").chain(args.iter().copied()))
        };
        assert!(
            parse(&[
                "parsed",
                "--from-beginning",
                "--from-datetime",
                "2026-05-01T12:00:00Z"
            ])
            .is_err()
        );
        assert!(parse(&["parsed", "--from-datetime", "May 1st"]).is_err());
        let args = parse(&[
            "parsed",
            "--from-datetime",
            "1970-01-01T00:00:02Z",
            "--limit",
            "3",
        ])
        .expect("valid")
        .args;
        assert_eq!((args.from_datetime, args.limit), (Some(2000), Some(3)));
    }
}
