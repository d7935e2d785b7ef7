//! `mailstream schemas check|register`: the schemas of this build against the registry.
//!
//! `check` asks the registry, for every topic with a schema, whether the schema this binary was
//! built with (composed from `schemas/`, see the runtime's `build.rs`) may be registered under
//! the topic's subject `<prefix><topic>-value`: it POSTs it to
//! `/compatibility/subjects/<subject>/versions?verbose=true`, which checks it against the
//! latest version, or against every version when the subject's level is transitive. The level
//! is the registry's own (the subject's config, else the global one; BACKWARD unless set), so
//! the check agrees with what a processor's registration at start would meet; a subject's level
//! is changed in the registry (`PUT /config/<subject>`), not here. A subject that does not exist
//! yet is "new", and a schema the subject already holds is "registered". Any incompatible schema
//! makes the command fail, printing the registry's messages, which name the field.
//!
//! `register` registers every schema without creating topics (what `topology apply` does for
//! schemas): CI runs it under its own prefix after a green build, so the next run's `check`
//! compares with the last build that passed.

use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Subcommand;
use mailstream_runtime::{ConfigSource, Naming, NoSettings, Topology, catalog, config};
use serde::Serialize;
use serde_json::{Value as Json, json};

use crate::registry::{Registration, RegistryClient};

#[derive(Subcommand)]
pub enum SchemasCommand {
    /// Check every schema of this build against its subject in the registry; fails on a
    /// breaking change, naming the field.
    Check {
        /// Only these topics (logical names, repeatable); by default every topic with a schema.
        #[arg(long)]
        topic: Vec<String>,
        #[command(flatten)]
        output: crate::Output,
    },
    /// Register every schema of this build under its subject (creates no topics).
    Register {
        #[command(flatten)]
        output: crate::Output,
    },
}

/// The outcome for one subject.
#[derive(Debug, Serialize)]
struct Verdict {
    topic: String,
    subject: String,
    schema: String,
    level: String,
    /// Where the level comes from: `subject`, `global` or `default`.
    level_from: &'static str,
    /// `compatible`, `registered`, `new` or `incompatible`.
    status: &'static str,
    latest_version: Option<i64>,
    /// The version that holds this very schema, when the subject has it (possibly not the
    /// latest: a processor registering it then gets that version's id, which the registry
    /// allows whatever the level).
    registered_version: Option<i64>,
    messages: Vec<String>,
}

pub async fn execute(command: SchemasCommand, source: ConfigSource) -> anyhow::Result<ExitCode> {
    let (config, _) = config::load::<NoSettings>("ctl", &source)?;
    let naming = Naming::new(config.topic_prefix.clone());
    let registry = RegistryClient::from_config(&config);
    let topology = Topology::embedded()?;
    match command {
        SchemasCommand::Check { topic, output } => {
            check(&registry, &topology, &naming, &topic, output.json).await
        }
        SchemasCommand::Register { output } => {
            register(&registry, &topology, &naming, output.json).await
        }
    }
}

/// (topic, schema file, schema text) of every topic with a schema, or of `only`.
fn schemas(topology: &Topology, only: &[String]) -> anyhow::Result<Vec<(String, String, String)>> {
    for name in only {
        if topology.topic(name).and_then(|t| t.schema).is_none() {
            bail!(
                "`{name}` is not a topic with a schema in the topology (see `mailstream topology check --json`)"
            );
        }
    }
    let mut out = Vec::new();
    for topic in topology.resolved_topics() {
        let Some(file) = topic.schema else { continue };
        if !only.is_empty() && !only.contains(&topic.name) {
            continue;
        }
        let text = catalog::schema(&file)
            .with_context(|| format!("schema {file} is missing from this build"))?;
        out.push((topic.name, file, text.to_string()));
    }
    Ok(out)
}

async fn level(registry: &RegistryClient, subject: &str) -> anyhow::Result<(String, &'static str)> {
    let read = |body: &Json| {
        body.get("compatibilityLevel")
            .or_else(|| body.get("compatibility"))
            .and_then(Json::as_str)
            .map(str::to_string)
    };
    let (status, body) = registry.get_json(&format!("/config/{subject}")).await?;
    if status == 200
        && let Some(level) = read(&body)
    {
        return Ok((level, "subject"));
    }
    let (status, body) = registry.get_json("/config").await?;
    Ok(match read(&body) {
        Some(level) if status == 200 => (level, "global"),
        _ => ("BACKWARD".into(), "default"),
    })
}

async fn verdict(
    registry: &RegistryClient,
    naming: &Naming,
    (topic, file, text): (String, String, String),
) -> anyhow::Result<Verdict> {
    let subject = naming.value_subject(&topic);
    let (level, level_from) = level(registry, &subject).await?;
    let mut verdict = Verdict {
        topic,
        subject: subject.clone(),
        schema: file,
        level,
        level_from,
        status: "new",
        latest_version: None,
        registered_version: None,
        messages: Vec::new(),
    };
    let (status, latest) = registry
        .get_json(&format!("/subjects/{subject}/versions/latest"))
        .await?;
    if status == 404 {
        return Ok(verdict);
    }
    if status != 200 {
        bail!("the registry answered {status} for the latest version of {subject}: {latest}");
    }
    verdict.latest_version = latest.get("version").and_then(Json::as_i64);
    let body = json!({"schema": text, "schemaType": "AVRO"});
    let (status, found) = registry
        .post_json(&format!("/subjects/{subject}"), &body)
        .await?;
    if status == 200 {
        verdict.status = "registered";
        verdict.registered_version = found.get("version").and_then(Json::as_i64);
        return Ok(verdict);
    }
    let (status, answer) = registry
        .post_json(
            &format!("/compatibility/subjects/{subject}/versions?verbose=true"),
            &body,
        )
        .await?;
    if status == 404 {
        return Ok(verdict);
    }
    let Some(compatible) = answer.get("is_compatible").and_then(Json::as_bool) else {
        bail!("the registry's compatibility check of {subject} answered {status}: {answer}");
    };
    verdict.status = if compatible {
        "compatible"
    } else {
        "incompatible"
    };
    verdict.messages = answer
        .get("messages")
        .and_then(Json::as_array)
        .map(|m| {
            m.iter()
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
                .collect()
        })
        .unwrap_or_default();
    Ok(verdict)
}

async fn check(
    registry: &RegistryClient,
    topology: &Topology,
    naming: &Naming,
    only: &[String],
    json: bool,
) -> anyhow::Result<ExitCode> {
    let mut verdicts = Vec::new();
    for entry in schemas(topology, only)? {
        verdicts.push(verdict(registry, naming, entry).await?);
    }
    let broken: Vec<&Verdict> = verdicts
        .iter()
        .filter(|v| v.status == "incompatible")
        .collect();
    if json {
        let out = json!({"ok": broken.is_empty(), "subjects": verdicts});
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        for v in &verdicts {
            let against = match (v.registered_version, v.latest_version) {
                (Some(r), Some(l)) if r != l => format!(", registered as version {r} of {l}"),
                (_, Some(l)) => format!(", latest version {l}"),
                _ => String::new(),
            };
            println!(
                "{:<12} {:<40} {} ({}{against})",
                v.status, v.subject, v.level, v.level_from
            );
            for m in &v.messages {
                println!("             {m}");
            }
        }
        let count = |s: &str| verdicts.iter().filter(|v| v.status == s).count();
        println!(
            "{} subject(s): {} compatible, {} already registered, {} new, {} incompatible",
            verdicts.len(),
            count("compatible"),
            count("registered"),
            count("new"),
            broken.len()
        );
    }
    if broken.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    let names: Vec<String> = broken
        .iter()
        .map(|v| format!("{} ({})", v.schema, v.subject))
        .collect();
    eprintln!(
        "error: {} schema(s) break their subject's compatibility: {}. Make the change compatible (give a new field a default, keep removed fields' defaults, widen types only as Avro allows) — or, for an intended break, move readers and writers to a new topic.",
        broken.len(),
        names.join(", ")
    );
    Ok(ExitCode::FAILURE)
}

async fn register(
    registry: &RegistryClient,
    topology: &Topology,
    naming: &Naming,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let mut done = Vec::new();
    for (topic, file, text) in schemas(topology, &[])? {
        let subject = naming.value_subject(&topic);
        let (action, id) = match registry.register(&subject, &text).await? {
            Registration::Unchanged { id, .. } => ("unchanged", id),
            Registration::Registered { id } => ("registered", id),
        };
        done.push(json!({"subject": subject, "schema": file, "action": action, "id": id}));
        if !json {
            println!("{action:<11} {subject:<40} {file}: id {id}");
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&done)?);
    }
    Ok(ExitCode::SUCCESS)
}
