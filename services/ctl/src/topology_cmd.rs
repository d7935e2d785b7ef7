//! `mailstream topology check|apply|docs`: validate the topology, make the cluster match it,
//! and write its docs (`topology_docs.rs`).
//!
//! `apply` creates missing topics (with the deployment's prefix), registers every schema under
//! its TopicNameStrategy subject, and reports drift between the file and the cluster. It never
//! changes the partition count of an existing topic: that would move keys between partitions
//! and break per-key ordering and dedupe. Running it twice changes nothing the second time.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use mailstream_runtime::catalog;
use mailstream_runtime::topology::ResolvedTopic;
use mailstream_runtime::{ConfigSource, Naming, NoSettings, Topology, config, kafka};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use serde::Serialize;

use crate::registry::{Registration, RegistryClient};

const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Subcommand)]
pub enum TopologyCommand {
    /// Validate topology/topology.yaml and every schema it names.
    Check {
        #[command(flatten)]
        output: crate::Output,
    },
    /// Create missing topics, register schemas, and report drift.
    Apply {
        #[command(flatten)]
        output: crate::Output,
    },
    /// Write topology/TOPOLOGY.md (Mermaid diagram, topic and processor tables) from
    /// topology/topology.yaml; with --check, fail if the committed file is stale.
    Docs {
        /// Write nothing; exit non-zero when the file differs from what would be written.
        #[arg(long)]
        check: bool,
        /// The topology file (default: topology/topology.yaml of the repository).
        #[arg(long)]
        file: Option<std::path::PathBuf>,
        /// The output (default: topology/TOPOLOGY.md of the repository).
        #[arg(long)]
        out: Option<std::path::PathBuf>,
    },
}

pub async fn execute(command: TopologyCommand, source: ConfigSource) -> anyhow::Result<ExitCode> {
    match command {
        TopologyCommand::Check { output } => check(output.json),
        TopologyCommand::Apply { output } => apply(source, output.json).await,
        TopologyCommand::Docs { check, file, out } => {
            crate::topology_docs::execute(check, file, out)
        }
    }
}

fn check(json: bool) -> anyhow::Result<ExitCode> {
    let topology = Topology::embedded()?;
    let topics = topology.resolved_topics();
    if json {
        println!(
            "{}",
            serde_json::json!({"ok": true, "topics": topics, "processors": topology.processors})
        );
    } else {
        println!(
            "topology ok: {} topics ({} derived dead-letter topics), {} processors, {} schemas",
            topics.len(),
            topics.iter().filter(|t| t.name.ends_with(".dlq")).count(),
            topology.processors.len(),
            catalog::SCHEMAS.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// One line of the apply report.
#[derive(Debug, Serialize)]
struct Action {
    object: String,
    action: &'static str,
    detail: String,
}

async fn apply(source: ConfigSource, json: bool) -> anyhow::Result<ExitCode> {
    let (config, _) = config::load::<NoSettings>("ctl", &source)?;
    let topology = Topology::embedded()?;
    let naming = Naming::new(config.topic_prefix.clone());
    let admin: AdminClient<DefaultClientContext> = kafka::base_config(&config)
        .create()
        .context("creating the Kafka admin client")?;

    let metadata = admin
        .inner()
        .fetch_metadata(None, ADMIN_TIMEOUT)
        .context("reading cluster metadata (is Kafka up at bootstrap_servers?)")?;
    let brokers = metadata.brokers().len() as i32;
    let existing: BTreeMap<String, (i32, i32)> = metadata
        .topics()
        .iter()
        .map(|t| {
            let rf = t
                .partitions()
                .first()
                .map_or(0, |p| p.replicas().len() as i32);
            (t.name().to_string(), (t.partitions().len() as i32, rf))
        })
        .collect();

    let mut actions = Vec::new();
    let mut to_create = Vec::new();
    for topic in topology.resolved_topics() {
        let physical = naming.topic(&topic.name);
        let replication = topic.replication_factor.min(brokers.max(1));
        let topic = with_replication_defaults(topic, replication);
        match existing.get(&physical) {
            None => to_create.push((physical, replication, topic)),
            Some((partitions, rf)) => {
                actions
                    .extend(drift(&admin, &physical, &topic, *partitions, *rf, replication).await?);
            }
        }
    }
    if !to_create.is_empty() {
        let configs: Vec<Vec<(String, String)>> = to_create
            .iter()
            .map(|(_, _, t)| {
                t.config
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .collect();
        let new_topics: Vec<NewTopic<'_>> = to_create
            .iter()
            .zip(&configs)
            .map(|((name, replication, topic), config)| {
                config.iter().fold(
                    NewTopic::new(
                        name,
                        topic.partitions,
                        TopicReplication::Fixed(*replication),
                    ),
                    |t, (k, v)| t.set(k, v),
                )
            })
            .collect();
        let results = admin
            .create_topics(
                &new_topics,
                &AdminOptions::new().operation_timeout(Some(ADMIN_TIMEOUT)),
            )
            .await
            .context("creating topics")?;
        for (result, (name, replication, topic)) in results.into_iter().zip(&to_create) {
            match result {
                Ok(_) => actions.push(Action {
                    object: name.clone(),
                    action: "created",
                    detail: format!(
                        "{} partitions, replication {replication}{}",
                        topic.partitions,
                        clamp_note(topic.replication_factor, *replication)
                    ),
                }),
                Err((_, code)) => anyhow::bail!("creating topic {name}: {code}"),
            }
        }
    }

    let registry = RegistryClient::from_config(&config);
    for topic in topology.resolved_topics() {
        let Some(file) = &topic.schema else { continue };
        let text = catalog::schema(file).context("schema missing from build")?;
        let subject = naming.value_subject(&topic.name);
        let (action, detail) = match registry.register(&subject, text).await? {
            Registration::Unchanged { id, version } => {
                ("unchanged", format!("{file}: id {id}, version {version}"))
            }
            Registration::Registered { id } => ("registered", format!("{file}: id {id}")),
        };
        actions.push(Action {
            object: subject,
            action,
            detail,
        });
    }

    if json {
        println!("{}", serde_json::to_string_pretty(&actions)?);
    } else {
        for a in &actions {
            println!("{:<11} {:<40} {}", a.action, a.object, a.detail);
        }
        let changed = actions
            .iter()
            .filter(|a| matches!(a.action, "created" | "registered"))
            .count();
        let drifted = actions.iter().filter(|a| a.action == "drift").count();
        println!("{changed} change(s), {drifted} drift warning(s)");
    }
    Ok(ExitCode::SUCCESS)
}

/// `min.insync.replicas` with three or more replicas, unless the topology sets it.
const DEFAULT_MIN_INSYNC_REPLICAS: &str = "2";

/// `topic` as it is applied at `replication`: with three or more replicas an acknowledged write
/// is on at least two of them (`min.insync.replicas=2`, unless the topology sets it), so one
/// broker lost loses nothing and stops no writer. Drift is checked against the same config.
fn with_replication_defaults(mut topic: ResolvedTopic, replication: i32) -> ResolvedTopic {
    if replication >= 3 {
        topic
            .config
            .entry("min.insync.replicas".to_string())
            .or_insert_with(|| DEFAULT_MIN_INSYNC_REPLICAS.to_string());
    }
    topic
}

fn clamp_note(declared: i32, actual: i32) -> String {
    if declared == actual {
        String::new()
    } else {
        format!(" (declared {declared}; clamped to the cluster's broker count)")
    }
}

/// Compares an existing topic with its declaration.
async fn drift(
    admin: &AdminClient<DefaultClientContext>,
    physical: &str,
    topic: &ResolvedTopic,
    partitions: i32,
    rf: i32,
    replication: i32,
) -> anyhow::Result<Vec<Action>> {
    let mut found = Vec::new();
    if partitions != topic.partitions {
        found.push(format!(
            "partitions {partitions} in the cluster, {} declared (not changed: it would move keys)",
            topic.partitions
        ));
    }
    if rf != replication {
        found.push(format!(
            "replication {rf} in the cluster, {replication} declared"
        ));
    }
    let described = admin
        .describe_configs([&ResourceSpecifier::Topic(physical)], &AdminOptions::new())
        .await
        .with_context(|| format!("describing the configs of {physical}"))?;
    if let Some(Ok(resource)) = described.into_iter().next() {
        for (key, declared) in &topic.config {
            let actual = resource.get(key).and_then(|e| e.value.clone());
            if actual.as_deref() != Some(declared.as_str()) {
                found.push(format!(
                    "{key} = {} in the cluster, {declared} declared",
                    actual.as_deref().unwrap_or("(unset)")
                ));
            }
        }
    }
    Ok(if found.is_empty() {
        vec![Action {
            object: physical.to_string(),
            action: "ok",
            detail: format!("{partitions} partitions, replication {rf}"),
        }]
    } else {
        found
            .into_iter()
            .map(|detail| Action {
                object: physical.to_string(),
                action: "drift",
                detail,
            })
            .collect()
    })
}

#[cfg(test)]
mod replication_defaults_tests {
    use super::*;

    fn topic(config: &[(&str, &str)]) -> ResolvedTopic {
        let topology = Topology::embedded().expect("embedded topology");
        let mut topic = topology
            .resolved_topics()
            .into_iter()
            .next()
            .expect("a topic");
        topic.config = config
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        topic
    }

    #[test]
    fn three_replicas_need_two_in_sync_unless_the_topology_says_otherwise() {
        let applied = with_replication_defaults(topic(&[("cleanup.policy", "delete")]), 3);
        assert_eq!(applied.config["min.insync.replicas"], "2");
        assert_eq!(applied.config["cleanup.policy"], "delete");
        let declared = with_replication_defaults(topic(&[("min.insync.replicas", "3")]), 3);
        assert_eq!(declared.config["min.insync.replicas"], "3");
    }

    #[test]
    fn fewer_replicas_keep_the_broker_default() {
        for replication in [1, 2] {
            let applied = with_replication_defaults(topic(&[]), replication);
            assert!(!applied.config.contains_key("min.insync.replicas"));
        }
    }
}
