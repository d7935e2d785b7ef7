//! `mailstream tables load FILE.csv`: seeds the `contacts` or `accounts` table topic from a CRM
//! export, so the resolver knows the CRM's contacts and companies from its first email.
//! Rows are written with an idempotent producer, keyed like the table (email, domain); loading
//! the same file again only writes the same latest values, which compaction folds away.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use apache_avro::types::Value;
use clap::{Args, Subcommand};
use mailstream_resolver::csv;
use mailstream_runtime::avro::{AvroCodec, registry_settings};
use mailstream_runtime::{
    AvroRecord, ConfigSource, GenericRecord, Naming, NoSettings, Topology, config, kafka,
};
use rdkafka::producer::{FutureProducer, FutureRecord};

#[derive(Subcommand)]
pub enum TablesCommand {
    /// Load a contacts or accounts CSV export into its table topic.
    Load(LoadArgs),
}

#[derive(Args)]
pub struct LoadArgs {
    /// The CSV file (header row; see `mailstream tables load --help`).
    file: PathBuf,
    /// Which table; by default from the file name (`contacts*.csv`, `accounts*.csv`).
    #[arg(long, value_parser = ["contacts", "accounts"])]
    table: Option<String>,
}

pub async fn execute(command: TablesCommand, source: ConfigSource) -> anyhow::Result<ExitCode> {
    let TablesCommand::Load(args) = command;
    let table = match args.table {
        Some(t) => t,
        None => table_of(&args.file)?,
    };
    let now = now_ms();
    let rows: Vec<(String, Value)> = match table.as_str() {
        "contacts" => to_values(
            csv::read_contacts(&args.file, now).map_err(anyhow::Error::msg)?,
            |c| c.email.clone(),
        )?,
        _ => to_values(
            csv::read_accounts(&args.file, now).map_err(anyhow::Error::msg)?,
            |a| a.domain.clone(),
        )?,
    };

    let (config, _) = config::load::<NoSettings>("ctl", &source)?;
    let naming = Naming::new(config.topic_prefix.clone());
    let topology = Topology::embedded()?;
    let codec = AvroCodec::new(
        registry_settings(&config)?,
        &topology,
        &naming,
        std::slice::from_ref(&table),
    )?;
    codec.register_outputs().await?;
    let producer: FutureProducer = kafka::durable_producer_config(&config)
        .set("linger.ms", "20")
        .create()
        .context("creating the producer")?;
    let topic = naming.topic(&table);
    let mut encoded = Vec::with_capacity(rows.len());
    for (key, value) in rows {
        let payload = codec
            .encode(&table, &GenericRecord(value))
            .await
            .map_err(|e| anyhow::anyhow!("encoding a {table} row: {e}"))?;
        encoded.push((key, payload));
    }
    let mut pending = Vec::with_capacity(encoded.len());
    for (key, payload) in &encoded {
        let delivery = producer
            .send_result(FutureRecord::to(&topic).key(key).payload(payload))
            .map_err(|(e, _)| e)
            .with_context(|| format!("queueing a row for {topic}"))?;
        pending.push(delivery);
    }
    let count = pending.len();
    for delivery in pending {
        delivery
            .await
            .context("the producer went away")?
            .map_err(|(e, _)| e)
            .with_context(|| format!("writing to {topic}"))?;
    }
    println!("loaded {count} {table} rows into {topic}");
    Ok(ExitCode::SUCCESS)
}

fn table_of(file: &Path) -> anyhow::Result<String> {
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    for table in ["contacts", "accounts"] {
        if name.starts_with(table) {
            return Ok(table.to_string());
        }
    }
    bail!(
        "cannot tell the table from the file name `{}`: pass --table contacts or --table accounts",
        file.display()
    )
}

fn to_values<T: AvroRecord>(
    rows: Vec<T>,
    key: impl Fn(&T) -> String,
) -> anyhow::Result<Vec<(String, Value)>> {
    rows.into_iter()
        .map(|row| {
            let k = key(&row);
            row.into_avro().map(|v| (k, v)).map_err(anyhow::Error::msg)
        })
        .collect()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}
