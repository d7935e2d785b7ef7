//! The declarative topology: every topic and every processor of the pipeline.
//!
//! `topology/topology.yaml` is the single source of truth. Topic creation (`mailstream topology
//! apply`), the generated docs, the Helm chart and each processor's wiring (which topic it reads,
//! which it may write, its consumer group) all come from this model. Dead-letter topics are
//! derived: every processor input `X` gets `X.dlq`.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::catalog;
use crate::error::RuntimeError;

/// Suffix of the dead-letter topic derived for each processor input.
pub const DLQ_SUFFIX: &str = ".dlq";

/// The topic config that caps one record batch on the broker.
pub const MAX_MESSAGE_BYTES: &str = "max.message.bytes";

/// The broker's default `message.max.bytes` (Kafka 4.x), the cap of a topic that sets none.
pub const BROKER_DEFAULT_MAX_MESSAGE_BYTES: usize = 1_048_588;

/// Room kept under a topic's cap for what is not key or value: headers (correlation id, trace
/// context, dead-letter reasons) and the record batch's framing.
pub const RECORD_HEADROOM_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    pub defaults: Defaults,
    pub topics: BTreeMap<String, TopicSpec>,
    pub processors: BTreeMap<String, ProcessorSpec>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    pub partitions: i32,
    pub replication_factor: i32,
    /// Retention of derived dead-letter topics.
    pub dlq_retention_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TopicKind {
    /// An event stream between processors.
    Stream,
    /// A compacted table keyed by entity (latest value per key).
    Table,
    /// A compacted changelog backing a processor's local state store.
    Changelog,
    /// Dead letters: original bytes plus error headers.
    Dlq,
    /// An append-only audit trail.
    Audit,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TopicSpec {
    pub kind: TopicKind,
    pub doc: String,
    #[serde(default)]
    pub partitions: Option<i32>,
    #[serde(default)]
    pub replication_factor: Option<i32>,
    /// Avro schema file under `schemas/`; `None` for topics that carry foreign bytes (DLQs).
    #[serde(default)]
    pub schema: Option<String>,
    /// What the record key is, for the docs (keys are UTF-8 strings).
    pub key: String,
    /// Further topic configs (`cleanup.policy`, `retention.ms`, `min.compaction.lag.ms`, ...).
    #[serde(default)]
    pub config: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessorSpec {
    pub doc: String,
    /// The topic it consumes; `None` for edge services such as ingest that only produce.
    #[serde(default)]
    pub input: Option<String>,
    /// Topics it may write (its DLQ is implied).
    #[serde(default)]
    pub outputs: Vec<String>,
    /// Compacted topics it reads in full as lookup tables.
    #[serde(default)]
    pub tables: Vec<String>,
    /// Not part of the email pipeline (the pass-through baseline); the chart skips it.
    #[serde(default)]
    pub optional: bool,
}

/// A topic after derivation and defaults: everything `topology apply` needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResolvedTopic {
    pub name: String,
    pub kind: TopicKind,
    pub partitions: i32,
    pub replication_factor: i32,
    pub schema: Option<String>,
    pub config: BTreeMap<String, String>,
    pub doc: String,
    pub key: String,
}

impl Topology {
    /// The topology this binary was built with.
    pub fn embedded() -> Result<Self, RuntimeError> {
        Self::parse(catalog::TOPOLOGY_YAML)
    }

    pub fn parse(yaml: &str) -> Result<Self, RuntimeError> {
        let topology: Topology = serde_yaml::from_str(yaml)
            .map_err(|e| RuntimeError::Topology(format!("topology.yaml: {e}")))?;
        let problems = topology.problems();
        if problems.is_empty() {
            Ok(topology)
        } else {
            Err(RuntimeError::Topology(problems.join("\n")))
        }
    }

    /// Every inconsistency in the file, one sentence each.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (name, topic) in &self.topics {
            if !valid_topic_name(name) {
                problems.push(format!("topic `{name}`: name may hold only [a-zA-Z0-9._-]"));
            }
            if name.ends_with(DLQ_SUFFIX) {
                problems.push(format!(
                    "topic `{name}`: `{DLQ_SUFFIX}` topics are derived from processor inputs; remove it"
                ));
            }
            if topic.partitions.is_some_and(|p| p < 1) {
                problems.push(format!("topic `{name}`: partitions must be >= 1"));
            }
            if let Some(max) = topic.config.get(MAX_MESSAGE_BYTES)
                && !max
                    .parse::<usize>()
                    .is_ok_and(|m| m > RECORD_HEADROOM_BYTES)
            {
                problems.push(format!(
                    "topic `{name}`: {MAX_MESSAGE_BYTES} must be a byte count above {RECORD_HEADROOM_BYTES}, got `{max}`"
                ));
            }
            let compacted = topic
                .config
                .get("cleanup.policy")
                .is_some_and(|p| p.contains("compact"));
            if matches!(topic.kind, TopicKind::Table | TopicKind::Changelog) && !compacted {
                problems.push(format!(
                    "topic `{name}`: a {:?} topic needs config cleanup.policy: compact",
                    topic.kind
                ));
            }
            match &topic.schema {
                Some(file) => match catalog::schema(file) {
                    None => problems.push(format!(
                        "topic `{name}`: schema `{file}` is not in schemas/"
                    )),
                    Some(text) => {
                        if let Err(e) = apache_avro::Schema::parse_str(text) {
                            problems.push(format!("schema `{file}`: {e}"));
                        }
                    }
                },
                None => problems.push(format!(
                    "topic `{name}`: every declared topic needs a schema"
                )),
            }
        }
        let known = |t: &String| self.topics.contains_key(t);
        for (name, p) in &self.processors {
            let refs = p
                .input
                .iter()
                .chain(&p.outputs)
                .chain(&p.tables)
                .filter(|t| !known(t));
            for t in refs {
                problems.push(format!("processor `{name}`: topic `{t}` is not declared"));
            }
            for t in &p.tables {
                if let Some(spec) = self.topics.get(t)
                    && !matches!(spec.kind, TopicKind::Table | TopicKind::Changelog)
                {
                    problems.push(format!(
                        "processor `{name}`: `{t}` is read as a table but is a {:?} topic",
                        spec.kind
                    ));
                }
            }
        }
        problems
    }

    pub fn processor(&self, name: &str) -> Result<&ProcessorSpec, RuntimeError> {
        self.processors.get(name).ok_or_else(|| {
            RuntimeError::Topology(format!(
                "no processor `{name}` in the topology (known: {})",
                self.processors
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
    }

    /// Every topic, declared and derived, with defaults filled in (unprefixed names).
    pub fn resolved_topics(&self) -> Vec<ResolvedTopic> {
        let mut topics: Vec<ResolvedTopic> = self
            .topics
            .iter()
            .map(|(name, t)| ResolvedTopic {
                name: name.clone(),
                kind: t.kind,
                partitions: t.partitions.unwrap_or(self.defaults.partitions),
                replication_factor: t
                    .replication_factor
                    .unwrap_or(self.defaults.replication_factor),
                schema: t.schema.clone(),
                config: t.config.clone(),
                doc: t.doc.clone(),
                key: t.key.clone(),
            })
            .collect();
        let inputs: BTreeSet<&String> = self
            .processors
            .values()
            .filter_map(|p| p.input.as_ref())
            .collect();
        for input in inputs {
            let source = &self.topics[input];
            // A dead letter carries its input record unchanged plus error headers: the DLQ
            // takes whatever its input took, and the headers' room on top.
            let max_bytes = self.max_message_bytes(input) + RECORD_HEADROOM_BYTES;
            topics.push(ResolvedTopic {
                name: format!("{input}{DLQ_SUFFIX}"),
                kind: TopicKind::Dlq,
                partitions: 1,
                replication_factor: source
                    .replication_factor
                    .unwrap_or(self.defaults.replication_factor),
                schema: None,
                config: BTreeMap::from([
                    ("cleanup.policy".into(), "delete".into()),
                    (
                        "retention.ms".into(),
                        self.defaults.dlq_retention_ms.to_string(),
                    ),
                    (MAX_MESSAGE_BYTES.into(), max_bytes.to_string()),
                ]),
                doc: format!(
                    "Dead letters of `{input}`: the original key, value and headers, plus error headers."
                ),
                key: source.key.clone(),
            });
        }
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        topics
    }

    /// The broker's cap on one record batch of topic `name` (declared or derived): its
    /// `max.message.bytes`, else the broker default.
    pub fn max_message_bytes(&self, name: &str) -> usize {
        if let Some(input) = name.strip_suffix(DLQ_SUFFIX)
            && !self.topics.contains_key(name)
        {
            return self.max_message_bytes(input) + RECORD_HEADROOM_BYTES;
        }
        self.topics
            .get(name)
            .and_then(|t| t.config.get(MAX_MESSAGE_BYTES))
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(BROKER_DEFAULT_MAX_MESSAGE_BYTES)
    }

    /// The largest key plus value a processor may write to topic `name`: its cap less the
    /// room for headers and framing. An output over it can never be written, so the runtime
    /// dead-letters its input instead of retrying the batch.
    pub fn record_budget(&self, name: &str) -> usize {
        self.max_message_bytes(name)
            .saturating_sub(RECORD_HEADROOM_BYTES)
    }

    /// Topic `name` as resolved, if it exists (declared or derived).
    pub fn topic(&self, name: &str) -> Option<ResolvedTopic> {
        self.resolved_topics().into_iter().find(|t| t.name == name)
    }
}

fn valid_topic_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Physical names for one deployment: the logical names with the configured prefix.
#[derive(Debug, Clone, Default)]
pub struct Naming {
    pub prefix: String,
}

impl Naming {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    pub fn topic(&self, logical: &str) -> String {
        format!("{}{logical}", self.prefix)
    }

    /// The logical name of a physical topic of this deployment.
    pub fn logical<'a>(&self, physical: &'a str) -> Option<&'a str> {
        physical.strip_prefix(self.prefix.as_str())
    }

    pub fn group(&self, processor: &str) -> String {
        format!("{}mailstream-{processor}", self.prefix)
    }

    pub fn transactional_id(&self, processor: &str, instance: &str) -> String {
        format!("{}mailstream-{processor}-{instance}", self.prefix)
    }

    /// The registry subject of a topic's values (TopicNameStrategy).
    pub fn value_subject(&self, logical: &str) -> String {
        format!("{}-value", self.topic(logical))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_topology_is_consistent() {
        let topology = Topology::embedded().expect("embedded topology parses");
        assert!(topology.problems().is_empty(), "{:?}", topology.problems());
        let names: Vec<String> = topology
            .resolved_topics()
            .into_iter()
            .map(|t| t.name)
            .collect();
        for expected in [
            "raw-email",
            "parsed",
            "resolved",
            "scored",
            "raw-email.dlq",
            "parsed.dlq",
        ] {
            assert!(
                names.iter().any(|n| n == expected),
                "{expected} missing: {names:?}"
            );
        }
    }

    #[test]
    fn record_budgets_come_from_the_topic_caps() {
        let topology = Topology::embedded().expect("embedded topology parses");
        assert_eq!(topology.max_message_bytes("parsed"), 8_388_608);
        assert_eq!(
            topology.record_budget("parsed"),
            8_388_608 - RECORD_HEADROOM_BYTES
        );
        // No cap declared: the broker's default applies.
        assert_eq!(
            topology.max_message_bytes("duplicates"),
            BROKER_DEFAULT_MAX_MESSAGE_BYTES
        );
        // A dead-letter topic takes its input's records plus their error headers.
        let dlq = topology.topic("parsed.dlq").expect("derived");
        assert_eq!(
            dlq.config[MAX_MESSAGE_BYTES],
            (8_388_608 + RECORD_HEADROOM_BYTES).to_string()
        );
        assert_eq!(
            topology.max_message_bytes("parsed.dlq"),
            8_388_608 + RECORD_HEADROOM_BYTES
        );
    }

    #[test]
    fn undeclared_references_and_uncompacted_tables_are_reported() {
        let yaml = r#"
defaults: {partitions: 1, replication_factor: 1, dlq_retention_ms: 1000}
topics:
  contacts: {kind: table, doc: d, key: email, schema: contacts.avsc}
processors:
  p: {doc: d, input: nowhere, outputs: [contacts]}
"#;
        let err = Topology::parse(yaml).expect_err("inconsistent").to_string();
        assert!(err.contains("`nowhere` is not declared"), "{err}");
        assert!(err.contains("cleanup.policy: compact"), "{err}");
    }
}
