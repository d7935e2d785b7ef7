//! `mailstream topology docs [--check]`: writes `topology/TOPOLOGY.md` from
//! `topology/topology.yaml` — a Mermaid flowchart of processors and topics (tables, changelogs,
//! audit and dead-letter topics included), a topic table (kind, partitions, cleanup and
//! retention, key, schema, writers and readers, doc) and a processor table.
//!
//! It reads the topology file of the repository it runs in (found from the working directory
//! upwards), not the copy embedded in the binary, so the docs follow the file even from a binary
//! built before an edit. `--check` writes nothing and fails when the committed file differs from
//! what it would write; CI runs it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use mailstream_runtime::Topology;
use mailstream_runtime::topology::{ProcessorSpec, ResolvedTopic, TopicKind};

use crate::dlq_cmd::REPLAYS_TOPIC;
use crate::groups::pipeline_order;

const TOPOLOGY_FILE: &str = "topology/topology.yaml";
const DOCS_FILE: &str = "topology/TOPOLOGY.md";
/// The operator command that writes the replay markers (not a processor of the topology).
const DLQ_REPLAY: &str = "mailstream dlq replay";

pub fn execute(
    check: bool,
    file: Option<PathBuf>,
    out: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let root = std::env::current_dir()
        .ok()
        .and_then(|d| repository_root(&d));
    let under_root = |rel: &str| root.as_ref().map(|r| r.join(rel));
    let (Some(file), Some(out)) = (
        file.or_else(|| under_root(TOPOLOGY_FILE)),
        out.or_else(|| under_root(DOCS_FILE)),
    ) else {
        bail!(
            "no {TOPOLOGY_FILE} in this directory or above: run it inside the repository, or pass --file and --out"
        );
    };
    let yaml =
        std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    let topology = Topology::parse(&yaml)?;
    let text = render(&topology);
    if check {
        let committed = std::fs::read_to_string(&out).unwrap_or_default();
        if committed != text {
            eprintln!(
                "error: {} is stale (it does not match {}): regenerate it with `mailstream topology docs` (or `cargo run -p mailstream-ctl -- topology docs`) and commit it",
                out.display(),
                file.display()
            );
            return Ok(ExitCode::FAILURE);
        }
        println!("{} is up to date", out.display());
    } else {
        std::fs::write(&out, &text).with_context(|| format!("writing {}", out.display()))?;
        println!("wrote {}", out.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn repository_root(start: &Path) -> Option<PathBuf> {
    start
        .ancestors()
        .find(|d| d.join(TOPOLOGY_FILE).is_file())
        .map(Path::to_path_buf)
}

fn node_id(prefix: &str, name: &str) -> String {
    let safe: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("{prefix}_{safe}")
}

fn topic_node(t: &ResolvedTopic) -> String {
    let id = node_id("t", &t.name);
    let name = &t.name;
    match t.kind {
        TopicKind::Stream => format!("{id}[\"{name}\"]:::stream"),
        TopicKind::Table => format!("{id}[(\"{name}\")]:::table"),
        TopicKind::Changelog => format!("{id}[(\"{name}\")]:::changelog"),
        TopicKind::Audit => format!("{id}[[\"{name}\"]]:::audit"),
        TopicKind::Dlq => format!("{id}{{{{\"{name}\"}}}}:::dlq"),
    }
}

fn kind_name(kind: TopicKind) -> &'static str {
    match kind {
        TopicKind::Stream => "stream",
        TopicKind::Table => "table",
        TopicKind::Changelog => "changelog",
        TopicKind::Audit => "audit",
        TopicKind::Dlq => "dead letters",
    }
}

/// `604800000` → `7 d`; other values as they are.
fn duration(ms: &str) -> String {
    match ms.parse::<i64>() {
        Ok(-1) => "forever".into(),
        Ok(ms) if ms > 0 && ms % 86_400_000 == 0 => format!("{} d", ms / 86_400_000),
        Ok(ms) if ms > 0 && ms % 3_600_000 == 0 => format!("{} h", ms / 3_600_000),
        _ => format!("{ms} ms"),
    }
}

fn retention(t: &ResolvedTopic) -> String {
    let policy = t
        .config
        .get("cleanup.policy")
        .map_or("delete", String::as_str);
    let mut parts = vec![policy.to_string()];
    if policy.contains("delete") {
        parts.push(
            t.config
                .get("retention.ms")
                .map_or("broker default".into(), |ms| duration(ms)),
        );
    }
    parts.join(", ")
}

/// The whole document; deterministic (the topology's maps are ordered).
pub fn render(topology: &Topology) -> String {
    let topics = topology.resolved_topics();
    let mut writers: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut readers: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (name, p) in &topology.processors {
        for o in &p.outputs {
            writers.entry(o).or_default().push(name.clone());
        }
        for t in &p.tables {
            readers
                .entry(t)
                .or_default()
                .push(format!("{name} (table)"));
        }
    }
    let dlqs: Vec<(String, String)> = topology
        .processors
        .iter()
        .filter_map(|(name, p)| p.input.as_ref().map(|i| (name.clone(), format!("{i}.dlq"))))
        .collect();
    for (name, p) in &topology.processors {
        if let Some(input) = &p.input {
            readers.entry(input).or_default().push(name.clone());
        }
    }
    for (name, dlq) in &dlqs {
        writers.entry(dlq.as_str()).or_default().push(name.clone());
    }
    let has_replays = topology.topics.contains_key(REPLAYS_TOPIC);
    if has_replays {
        writers
            .entry(REPLAYS_TOPIC)
            .or_default()
            .push(format!("`{DLQ_REPLAY}`"));
        for (_, dlq) in &dlqs {
            readers
                .entry(dlq.as_str())
                .or_default()
                .push(format!("`{DLQ_REPLAY}`"));
        }
    }

    let mut md = String::new();
    let _ = writeln!(
        md,
        "<!-- Generated by `mailstream topology docs` from topology/topology.yaml: edit that file, then run the command (CI fails when this file is stale). -->"
    );
    let _ = writeln!(md, "# Topology\n");
    let _ = writeln!(
        md,
        "Every processor and topic of the pipeline, from `topology/topology.yaml`. Topic names are logical: a deployment prefixes them (`MAILSTREAM_TOPIC_PREFIX`); consumer groups are `<prefix>mailstream-<processor>`; each processor input `X` has a derived dead-letter topic `X.dlq`.\n"
    );
    let processors: Vec<(String, &ProcessorSpec)> = pipeline_order(topology)
        .into_iter()
        .filter_map(|n| topology.processors.get(&n).map(|p| (n, p)))
        .collect();
    let _ = writeln!(md, "```mermaid\nflowchart LR");
    for (name, p) in &processors {
        let optional = if p.optional { " (optional)" } else { "" };
        let _ = writeln!(
            md,
            "  {}([\"{name}{optional}\"]):::processor",
            node_id("p", name)
        );
    }
    if has_replays {
        let _ = writeln!(
            md,
            "  {}([\"{DLQ_REPLAY}\"]):::operator",
            node_id("op", "dlq_replay")
        );
    }
    for t in &topics {
        let _ = writeln!(md, "  {}", topic_node(t));
    }
    for (name, p) in &processors {
        let pid = node_id("p", name);
        if let Some(input) = &p.input {
            let _ = writeln!(md, "  {} --> {pid}", node_id("t", input));
        }
        for o in &p.outputs {
            let _ = writeln!(md, "  {pid} --> {}", node_id("t", o));
        }
        for t in &p.tables {
            let _ = writeln!(md, "  {} -. table .-> {pid}", node_id("t", t));
        }
        if let Some(input) = &p.input {
            let _ = writeln!(
                md,
                "  {pid} -. dead letters .-> {}",
                node_id("t", &format!("{input}.dlq"))
            );
        }
    }
    if has_replays {
        let _ = writeln!(
            md,
            "  {} --> {}",
            node_id("op", "dlq_replay"),
            node_id("t", REPLAYS_TOPIC)
        );
    }
    for (class, style) in [
        ("processor", "fill:#dbeafe,stroke:#1d4ed8"),
        (
            "operator",
            "fill:#f3f4f6,stroke:#6b7280,stroke-dasharray:3 3",
        ),
        ("stream", "fill:#ecfdf5,stroke:#047857"),
        ("table", "fill:#fef9c3,stroke:#a16207"),
        ("changelog", "fill:#fef3c7,stroke:#b45309"),
        ("audit", "fill:#f5f3ff,stroke:#6d28d9"),
        ("dlq", "fill:#fee2e2,stroke:#b91c1c"),
    ] {
        let _ = writeln!(md, "  classDef {class} {style}");
    }
    let _ = writeln!(md, "```\n");
    if has_replays {
        let _ = writeln!(
            md,
            "`{DLQ_REPLAY}` is an operator command, not a processor: it re-injects chosen dead letters into their source topic and records each in `{REPLAYS_TOPIC}` so none is re-injected twice.\n"
        );
    }

    let _ = writeln!(md, "## Topics\n");
    let _ = writeln!(
        md,
        "| topic | kind | partitions | cleanup, retention | key | schema | written by | read by | doc |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|");
    for t in &topics {
        let list = |m: &BTreeMap<&str, Vec<String>>| {
            m.get(t.name.as_str())
                .map_or("—".to_string(), |v| v.join(", "))
        };
        let _ = writeln!(
            md,
            "| `{}` | {} | {} | {} | `{}` | {} | {} | {} | {} |",
            t.name,
            kind_name(t.kind),
            t.partitions,
            retention(t),
            t.key,
            t.schema
                .as_deref()
                .map_or("— (original bytes)".into(), |s| format!("`schemas/{s}`")),
            list(&writers),
            list(&readers),
            t.doc.replace('|', "\\|")
        );
    }
    let _ = writeln!(md, "\n## Processors\n");
    let _ = writeln!(md, "| processor | reads | writes | tables | doc |");
    let _ = writeln!(md, "|---|---|---|---|---|");
    for (name, p) in &processors {
        let code = |v: &[String]| {
            if v.is_empty() {
                "—".to_string()
            } else {
                v.iter()
                    .map(|t| format!("`{t}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        };
        let mut writes = p.outputs.clone();
        if let Some(input) = &p.input {
            writes.push(format!("{input}.dlq"));
        }
        let optional = if p.optional { " (optional)" } else { "" };
        let _ = writeln!(
            md,
            "| `{name}`{optional} | {} | {} | {} | {} |",
            p.input
                .as_ref()
                .map_or("—".to_string(), |i| format!("`{i}`")),
            code(&writes),
            code(&p.tables),
            p.doc.replace('|', "\\|")
        );
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_topic_and_processor_is_drawn_and_listed() {
        let topology = Topology::embedded().expect("embedded topology");
        let md = render(&topology);
        assert_eq!(md, render(&topology), "deterministic");
        for t in topology.resolved_topics() {
            assert!(
                md.contains(&format!("| `{}` |", t.name)),
                "{} in the table",
                t.name
            );
            assert!(
                md.contains(&format!("\"{}\"", t.name)),
                "{} in the diagram",
                t.name
            );
        }
        for name in topology.processors.keys() {
            assert!(
                md.contains(&format!("{}([\"{name}", node_id("p", name))),
                "{name} drawn"
            );
            assert!(md.contains(&format!("| `{name}`")), "{name} in the table");
        }
        assert!(md.contains("t_raw_email --> p_parser"));
        assert!(md.contains("p_parser -. dead letters .-> t_raw_email_dlq"));
        assert!(md.contains("t_contacts -. table .-> p_resolver"));
        assert!(md.contains("| delete, 7 d |"));
    }

    fn topic(kind: TopicKind, config: &[(&str, &str)]) -> ResolvedTopic {
        ResolvedTopic {
            name: "raw-email.dlq".into(),
            kind,
            partitions: 3,
            replication_factor: 1,
            schema: None,
            config: config
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            doc: String::new(),
            key: "ingest_id".into(),
        }
    }

    #[test]
    fn durations_read_in_the_largest_whole_unit() {
        assert_eq!(duration("604800000"), "7 d");
        assert_eq!(duration("7200000"), "2 h");
        assert_eq!(duration("90000"), "90000 ms");
        assert_eq!(duration("-1"), "forever");
        assert_eq!(duration("0"), "0 ms");
        assert_eq!(duration("soon"), "soon ms");
    }

    #[test]
    fn retention_names_the_policy_and_the_time_only_when_deleting() {
        let kind = TopicKind::Stream;
        assert_eq!(retention(&topic(kind, &[])), "delete, broker default");
        assert_eq!(
            retention(&topic(kind, &[("retention.ms", "86400000")])),
            "delete, 1 d"
        );
        assert_eq!(
            retention(&topic(
                kind,
                &[("cleanup.policy", "compact"), ("retention.ms", "1")]
            )),
            "compact"
        );
        assert_eq!(
            retention(&topic(
                kind,
                &[("cleanup.policy", "compact,delete"), ("retention.ms", "-1")]
            )),
            "compact,delete, forever"
        );
    }

    #[test]
    fn nodes_have_safe_ids_and_a_shape_per_kind() {
        assert_eq!(node_id("t", "raw-email.dlq"), "t_raw_email_dlq");
        assert_eq!(node_id("p", "crm-sink"), "p_crm_sink");
        let shapes = [
            (
                TopicKind::Stream,
                "t_raw_email_dlq[\"raw-email.dlq\"]:::stream",
            ),
            (
                TopicKind::Table,
                "t_raw_email_dlq[(\"raw-email.dlq\")]:::table",
            ),
            (
                TopicKind::Changelog,
                "t_raw_email_dlq[(\"raw-email.dlq\")]:::changelog",
            ),
            (
                TopicKind::Audit,
                "t_raw_email_dlq[[\"raw-email.dlq\"]]:::audit",
            ),
            (TopicKind::Dlq, "t_raw_email_dlq{{\"raw-email.dlq\"}}:::dlq"),
        ];
        for (kind, shape) in shapes {
            assert_eq!(topic_node(&topic(kind, &[])), shape);
        }
    }

    #[test]
    fn the_repository_is_found_from_any_directory_inside_it() {
        let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        let root = repository_root(&crate_dir.join("src")).expect("inside the repository");
        assert!(root.join(TOPOLOGY_FILE).is_file());
        assert!(crate_dir.starts_with(&root));
        assert_eq!(repository_root(Path::new("/")), None);
    }
}
