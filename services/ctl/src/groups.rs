//! Consumer groups and offsets, shared by the operator commands (`replay`, `lag`, `dlq`).
//!
//! Everything here goes through one librdkafka consumer whose `group.id` is the processor's
//! group but which never subscribes: it reads the group's committed offsets (`OffsetFetch`) and
//! commits new ones (`OffsetCommit` with generation -1, the "simple" commit that
//! `kafka-consumer-groups --reset-offsets` also uses) without joining the group. The broker
//! accepts such a commit only while the group is empty, so even a member that joins between our
//! membership check and the commit cannot have its offsets moved under it: the commit fails.
//!
//! The calls are blocking (librdkafka's); the commands run them outside async code.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, bail};
use mailstream_runtime::{Naming, RuntimeConfig, Topology, kafka};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaResult;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

/// How long one broker round trip may take.
pub const TIMEOUT: Duration = Duration::from_secs(15);

/// A live member of a consumer group.
#[derive(Debug, Clone, Serialize)]
pub struct Member {
    pub member_id: String,
    pub client_id: String,
    pub host: String,
}

impl std::fmt::Display for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} on {} ({})",
            self.client_id, self.host, self.member_id
        )
    }
}

/// One partition's offsets: the log's bounds and where the group stands.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionOffsets {
    pub topic: String,
    pub partition: i32,
    /// Oldest offset still in the log.
    pub low: i64,
    /// End of the log (the next offset to be written).
    pub high: i64,
    /// The group's committed offset (the next record it will read); `None` when it never
    /// committed, in which case a processor starts at the earliest (`auto.offset.reset`).
    pub committed: Option<i64>,
}

impl PartitionOffsets {
    /// Records between the group's position and the end of the log.
    pub fn lag(&self) -> i64 {
        (self.high - self.committed.unwrap_or(self.low).max(self.low)).max(0)
    }
}

/// A view of one consumer group, from outside it.
pub struct GroupClient {
    consumer: BaseConsumer,
    pub group: String,
    naming: Naming,
}

impl GroupClient {
    /// A client for `processor`'s group (`<prefix>mailstream-<processor>`).
    pub fn for_processor(config: &RuntimeConfig, processor: &str) -> anyhow::Result<Self> {
        let naming = Naming::new(config.topic_prefix.clone());
        let group = naming.group(processor);
        let consumer = kafka::reader_config(config, &group)
            .set("enable.auto.offset.store", "false")
            .create()
            .context("creating a Kafka client (check bootstrap_servers)")?;
        Ok(Self {
            consumer,
            group,
            naming,
        })
    }

    /// The physical name of a logical topic.
    pub fn physical(&self, logical: &str) -> String {
        self.naming.topic(logical)
    }

    /// The group's live members (empty when it has none or does not exist yet).
    pub fn members(&self) -> anyhow::Result<Vec<Member>> {
        let list = retrying(|| self.consumer.fetch_group_list(Some(&self.group), TIMEOUT))
            .with_context(|| {
                format!(
                    "describing consumer group {} (is Kafka reachable?)",
                    self.group
                )
            })?;
        Ok(list
            .groups()
            .iter()
            .filter(|g| g.name() == self.group)
            .flat_map(|g| g.members())
            .map(|m| Member {
                member_id: m.id().to_string(),
                client_id: m.client_id().to_string(),
                host: m.client_host().to_string(),
            })
            .collect())
    }

    /// The partitions of logical topic `logical`.
    pub fn partitions(&self, logical: &str) -> anyhow::Result<Vec<i32>> {
        let physical = self.physical(logical);
        let metadata = self
            .consumer
            .fetch_metadata(Some(&physical), TIMEOUT)
            .with_context(|| format!("reading the metadata of {physical} (is Kafka reachable?)"))?;
        let topic = metadata.topics().first();
        match topic {
            Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
                let mut ids: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
                ids.sort_unstable();
                Ok(ids)
            }
            _ => bail!(
                "topic {physical} does not exist: create the topology's topics with `mailstream topology apply` (and check MAILSTREAM_TOPIC_PREFIX)"
            ),
        }
    }

    /// Low and high watermarks and the committed offset of each of `partitions` of `logical`.
    pub fn offsets(
        &self,
        logical: &str,
        partitions: &[i32],
    ) -> anyhow::Result<Vec<PartitionOffsets>> {
        let physical = self.physical(logical);
        let mut tpl = TopicPartitionList::new();
        for p in partitions {
            tpl.add_partition(&physical, *p);
        }
        let committed = retrying(|| self.consumer.committed_offsets(tpl.clone(), TIMEOUT))
            .with_context(|| format!("reading {}'s committed offsets", self.group))?;
        let mut out = Vec::with_capacity(partitions.len());
        for p in partitions {
            let (low, high) = watermarks(&self.consumer, &physical, *p)?;
            let committed =
                committed
                    .find_partition(&physical, *p)
                    .and_then(|e| match e.offset() {
                        Offset::Offset(o) => Some(o),
                        _ => None,
                    });
            out.push(PartitionOffsets {
                topic: logical.to_string(),
                partition: *p,
                low,
                high,
                committed,
            });
        }
        Ok(out)
    }

    /// For each partition, the first offset whose timestamp is at or after `millis`; `None`
    /// when every record is older (the caller goes to the end).
    pub fn offsets_for_time(
        &self,
        logical: &str,
        partitions: &[i32],
        millis: i64,
    ) -> anyhow::Result<BTreeMap<i32, Option<i64>>> {
        let physical = self.physical(logical);
        let mut tpl = TopicPartitionList::new();
        for p in partitions {
            tpl.add_partition_offset(&physical, *p, Offset::Offset(millis))
                .context("building the time lookup")?;
        }
        let found = self
            .consumer
            .offsets_for_times(tpl, TIMEOUT)
            .with_context(|| format!("looking up offsets by time in {physical}"))?;
        Ok(found
            .elements()
            .iter()
            .map(|e| {
                let offset = match e.offset() {
                    Offset::Offset(o) if o >= 0 => Some(o),
                    _ => None,
                };
                (e.partition(), offset)
            })
            .collect())
    }

    /// Commits `offsets` (partition → next offset to read) of `logical` for the group. The
    /// broker refuses it unless the group is empty.
    pub fn commit(&self, logical: &str, offsets: &BTreeMap<i32, i64>) -> anyhow::Result<()> {
        let physical = self.physical(logical);
        let mut tpl = TopicPartitionList::new();
        for (p, o) in offsets {
            tpl.add_partition_offset(&physical, *p, Offset::Offset(*o))
                .context("building the offsets to commit")?;
        }
        retrying(|| self.consumer.commit(&tpl, CommitMode::Sync))
            .with_context(|| {
                format!(
                    "committing new offsets for {} on {physical} (the broker refuses while the group has members: stop them and retry)",
                    self.group
                )
            })
    }
}

/// Runs `call` again, for up to [`TIMEOUT`], while it fails with an error that passes by itself
/// (a new topic's partition without a leader yet, a group coordinator moving or loading).
pub fn retrying<T>(mut call: impl FnMut() -> KafkaResult<T>) -> KafkaResult<T> {
    let started = std::time::Instant::now();
    loop {
        match call() {
            Err(e)
                if started.elapsed() < TIMEOUT
                    && matches!(
                        e.rdkafka_error_code(),
                        Some(
                            RDKafkaErrorCode::NotLeaderForPartition
                                | RDKafkaErrorCode::LeaderNotAvailable
                                | RDKafkaErrorCode::UnknownTopicOrPartition
                                | RDKafkaErrorCode::NotCoordinator
                                | RDKafkaErrorCode::CoordinatorNotAvailable
                                | RDKafkaErrorCode::CoordinatorLoadInProgress
                        )
                    ) =>
            {
                std::thread::sleep(Duration::from_millis(250));
            }
            other => return other,
        }
    }
}

/// A partition's low and high watermarks.
pub fn watermarks<C: Consumer>(
    consumer: &C,
    physical: &str,
    partition: i32,
) -> anyhow::Result<(i64, i64)> {
    retrying(|| consumer.fetch_watermarks(physical, partition, TIMEOUT)).with_context(|| {
        format!("reading the offsets of {physical} [{partition}] (is Kafka reachable?)")
    })
}

/// Every processor in pipeline order: a processor after those that write its input, then by
/// name; optional ones last.
pub fn pipeline_order(topology: &Topology) -> Vec<String> {
    fn depth(topology: &Topology, name: &str, seen: &mut Vec<String>) -> usize {
        if seen.iter().any(|s| s == name) {
            return 0;
        }
        seen.push(name.to_string());
        let Some(input) = topology.processors.get(name).and_then(|p| p.input.as_ref()) else {
            return 0;
        };
        topology
            .processors
            .iter()
            .filter(|(_, p)| p.outputs.contains(input))
            .map(|(writer, _)| 1 + depth(topology, writer, seen))
            .max()
            .unwrap_or(0)
    }
    let mut names: Vec<(bool, usize, String)> = topology
        .processors
        .iter()
        .map(|(name, p)| {
            (
                p.optional,
                depth(topology, name, &mut Vec::new()),
                name.clone(),
            )
        })
        .collect();
    names.sort();
    names.into_iter().map(|(_, _, n)| n).collect()
}

/// The processors that read a topic, in pipeline order; optional ones only when `optional`.
pub fn processors_in_order(topology: &Topology, optional: bool) -> Vec<String> {
    pipeline_order(topology)
        .into_iter()
        .filter(|name| {
            topology
                .processors
                .get(name)
                .is_some_and(|p| p.input.is_some() && (optional || !p.optional))
        })
        .collect()
}

/// Parses `PARTITION:OFFSET`.
pub fn parse_position(text: &str) -> Result<(i32, i64), String> {
    let (p, o) = text
        .split_once(':')
        .ok_or_else(|| format!("`{text}`: expected PARTITION:OFFSET, e.g. 0:42"))?;
    let partition = p
        .trim()
        .parse::<i32>()
        .map_err(|_| format!("`{text}`: partition `{p}` is not a number"))?;
    let offset = o
        .trim()
        .parse::<i64>()
        .map_err(|_| format!("`{text}`: offset `{o}` is not a number"))?;
    if partition < 0 || offset < 0 {
        return Err(format!("`{text}`: partition and offset must be >= 0"));
    }
    Ok((partition, offset))
}

/// Parses an RFC 3339 date-time (`2026-05-01T12:00:00Z`, `2026-05-01T14:00:00+02:00`) to
/// milliseconds since the epoch.
pub fn parse_datetime(text: &str) -> Result<i64, String> {
    chrono::DateTime::parse_from_rfc3339(text.trim())
        .map(|t| t.timestamp_millis())
        .map_err(|e| {
            format!("`{text}`: not an RFC 3339 date-time such as 2026-05-01T12:00:00Z ({e})")
        })
}

/// An RFC 3339 rendering of epoch milliseconds, for output.
pub fn format_millis(millis: i64) -> String {
    chrono::DateTime::from_timestamp_millis(millis)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| millis.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_and_times_parse_or_say_what_is_wrong() {
        assert_eq!(parse_position("3:42"), Ok((3, 42)));
        assert!(parse_position("3").is_err_and(|e| e.contains("PARTITION:OFFSET")));
        assert!(parse_position("x:1").is_err_and(|e| e.contains("partition `x`")));
        assert_eq!(parse_datetime("1970-01-01T00:00:01Z"), Ok(1000));
        assert_eq!(parse_datetime("1970-01-01T02:00:01+02:00"), Ok(1000));
        assert!(parse_datetime("yesterday").is_err_and(|e| e.contains("RFC 3339")));
        assert_eq!(format_millis(1000), "1970-01-01T00:00:01.000Z");
    }

    #[test]
    fn positions_are_trimmed_and_never_negative() {
        assert_eq!(parse_position(" 0 : 7 "), Ok((0, 7)));
        assert!(parse_position("-1:7").is_err_and(|e| e.contains(">= 0")));
        assert!(parse_position("1:-7").is_err_and(|e| e.contains(">= 0")));
        assert!(parse_position("1:").is_err_and(|e| e.contains("offset ``")));
        assert!(parse_position("99999999999:1").is_err_and(|e| e.contains("partition")));
    }

    #[test]
    fn times_out_of_range_print_as_numbers() {
        assert_eq!(format_millis(i64::MAX), i64::MAX.to_string());
        assert_eq!(format_millis(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(
            parse_datetime(&format_millis(1_714_564_800_123)),
            Ok(1_714_564_800_123)
        );
    }

    #[test]
    fn a_member_reads_as_client_host_and_id() {
        let member = Member {
            member_id: "rdkafka-1".into(),
            client_id: "parser-a".into(),
            host: "/10.0.0.7".into(),
        };
        assert_eq!(member.to_string(), "parser-a on /10.0.0.7 (rdkafka-1)");
    }

    #[test]
    fn processors_come_in_pipeline_order() {
        let topology = Topology::embedded().expect("embedded topology");
        assert_eq!(
            processors_in_order(&topology, false),
            ["parser", "resolver", "scorer", "crm-sink"]
        );
        assert!(processors_in_order(&topology, true).contains(&"passthrough".to_string()));
    }

    #[test]
    fn lag_counts_from_the_committed_offset_or_the_start_of_the_log() {
        let mut p = PartitionOffsets {
            topic: "t".into(),
            partition: 0,
            low: 2,
            high: 10,
            committed: Some(7),
        };
        assert_eq!(p.lag(), 3);
        p.committed = None;
        assert_eq!(p.lag(), 8);
        p.committed = Some(0); // below the log start: retention deleted what it had not read
        assert_eq!(p.lag(), 8);
    }
}
