//! Layered configuration: defaults, then an optional TOML file, then `MAILSTREAM_*` environment
//! variables. Everything is checked before anything starts, and every problem is reported at
//! once with the key (file key and environment variable) it concerns.
//!
//! The environment is captured once, at the binary's edge ([`ConfigSource::from_process`]); the
//! library never reads environment variables on its own.
//!
//! Key mapping:
//! - runtime keys: file `batch_max_records = 500`, env `MAILSTREAM_BATCH_MAX_RECORDS=500`;
//! - librdkafka properties (SASL, TLS, tuning): file `[kafka]` table with the property names
//!   (`"security.protocol" = "SASL_SSL"`), env `MAILSTREAM_RDKAFKA_SECURITY_PROTOCOL=SASL_SSL`;
//! - processor keys: file `[parser]` table, env `MAILSTREAM_PARSER_INLINE_LIMIT_BYTES=...`.
//!
//! Unknown keys in a file are refused. Environment variables are read only for declared keys.
//! Every key (and every librdkafka property) can also be read from a file: `<VARIABLE>_FILE`
//! names it, as Kubernetes mounts Secrets; secret settings are [`Secret`]s, which no `Debug`
//! output or log line shows.

mod introspect;
mod secret;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;

pub use introspect::struct_fields;
pub use secret::{Secret, opt_secret};

use crate::error::RuntimeError;

/// librdkafka properties the runtime sets itself; a user value would break exactly-once.
const MANAGED_KAFKA_KEYS: &[&str] = &[
    "bootstrap.servers",
    "group.id",
    "transactional.id",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "isolation.level",
    "enable.idempotence",
    "acks",
    "max.in.flight.requests.per.connection",
    "group.instance.id",
];

/// Settings every processor shares. Its `Debug` shows no secret: the registry password is a
/// [`Secret`], and librdkafka properties that hold one (passwords, keys, client secrets) are
/// redacted.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Kafka bootstrap servers, `host:port[,host:port]`. Required.
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub bootstrap_servers: Option<String>,
    /// Confluent-compatible schema registry base URL. Required.
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub schema_registry_url: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub schema_registry_username: Option<String>,
    #[serde(default, deserialize_with = "opt_secret")]
    pub schema_registry_password: Option<Secret>,
    /// A PEM file of the CA certificate(s) an `https://` registry's certificate is signed by,
    /// trusted besides the system roots (a registry behind a private CA).
    #[serde(default, deserialize_with = "lenient::opt_path")]
    pub schema_registry_ca_file: Option<PathBuf>,
    /// Prepended to every topic, consumer group and transactional id, so two deployments can
    /// share a cluster.
    #[serde(default, deserialize_with = "lenient::string")]
    pub topic_prefix: String,
    /// The key of the keyed hash that names an erased person in the `erasures` table
    /// (`mailstream erase`, [`crate::erasure`]): one secret shared by every processor and the
    /// CLI. Unset: nobody can be erased, and no processor drops anyone.
    #[serde(default, deserialize_with = "opt_secret")]
    pub erasure_key: Option<Secret>,
    /// Stable identity of this instance (pod name). It names the transactional id, so a
    /// restarted instance fences its predecessor and aborts its open transaction at once.
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub instance_id: Option<String>,
    /// Join the consumer group as a static member (`group.instance.id` from the instance id):
    /// a restarted instance with the same id gets its partitions back at once, without a
    /// rebalance. Off by default because a static member does not leave the group on shutdown:
    /// its partitions wait `session.timeout.ms` before moving. Turn it on where instance ids are
    /// stable (a StatefulSet).
    #[serde(default = "defaults::static_membership")]
    pub static_membership: bool,
    /// A transaction commits after this many records ...
    #[serde(default = "defaults::batch_max_records")]
    pub batch_max_records: u32,
    /// ... or once its input records add up to this many bytes (so a batch of large records
    /// stays quick to flush and commit) ...
    #[serde(default = "defaults::batch_max_bytes")]
    pub batch_max_bytes: u64,
    /// ... or this many milliseconds after its first record, whichever comes first.
    #[serde(default = "defaults::batch_max_ms")]
    pub batch_max_ms: u64,
    /// An open batch also commits once no record has arrived for this many milliseconds: the
    /// input is drained for now, so a quiet pipeline commits what it has instead of lingering
    /// `batch_max_ms` at every hop; under a backlog records never pause and batches fill as
    /// before. 0 (or a value not under `batch_max_ms`) turns it off.
    #[serde(default = "defaults::batch_idle_ms")]
    pub batch_idle_ms: u64,
    /// Broker-side timeout of an open transaction (`transaction.timeout.ms`), and the longest a
    /// transactional call waits. 10 s, Kafka Streams' exactly-once default: a transaction left
    /// open by a stuck or dead instance holds back every `read_committed` reader of the
    /// partitions it wrote to until it ends, so it must end soon; a batch needs milliseconds.
    #[serde(default = "defaults::transaction_timeout_ms")]
    pub transaction_timeout_ms: u64,
    /// Upper bound of the backoff between retries of a transient failure.
    #[serde(default = "defaults::retry_backoff_max_ms")]
    pub retry_backoff_max_ms: u64,
    /// `/readyz` turns not-ready once batches have failed this long without progress (a
    /// dependency down, a partition that cannot move); 0 turns the check off.
    #[serde(default = "defaults::stall_timeout_ms")]
    pub stall_timeout_ms: u64,
    /// Address of the HTTP server for `/metrics`, `/healthz` and `/readyz`.
    #[serde(default = "defaults::http_addr")]
    pub http_addr: String,
    /// `text` or `json`.
    #[serde(default = "defaults::log_format")]
    pub log_format: String,
    /// A `tracing` filter such as `info` or `info,mailstream_runtime=debug`.
    #[serde(default = "defaults::log_level")]
    pub log_level: String,
    /// OTLP/HTTP endpoint for traces; tracing export is off when unset.
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub otlp_endpoint: Option<String>,
    /// Extra librdkafka properties passed through to every client.
    #[serde(default)]
    pub kafka: BTreeMap<String, String>,
    /// Options of an `s3://` blob store, by object_store's names (`aws_endpoint`,
    /// `aws_region`, `aws_access_key_id`, `aws_secret_access_key`, `aws_allow_http`, ...): the
    /// `[blob_store]` table, or `MAILSTREAM_BLOB_STORE_<OPTION>` (`_FILE` for a value in a
    /// file). Unknown options stop start-up; secret ones are never printed.
    #[serde(default)]
    pub blob_store: BTreeMap<String, String>,
}

mod defaults {
    pub fn static_membership() -> bool {
        false
    }
    pub fn batch_max_records() -> u32 {
        1000
    }
    pub fn batch_max_bytes() -> u64 {
        4 * 1024 * 1024
    }
    pub fn batch_max_ms() -> u64 {
        100
    }
    pub fn batch_idle_ms() -> u64 {
        10
    }
    pub fn transaction_timeout_ms() -> u64 {
        10_000
    }
    pub fn retry_backoff_max_ms() -> u64 {
        30_000
    }
    pub fn stall_timeout_ms() -> u64 {
        60_000
    }
    pub fn http_addr() -> String {
        "0.0.0.0:8080".into()
    }
    pub fn log_format() -> String {
        "text".into()
    }
    pub fn log_level() -> String {
        "info".into()
    }
}

/// Deserializers for settings that may come from a file or the environment: string fields also
/// accept a number or boolean written in a file (`instance_id = 7`), lists accept one
/// comma-separated string (as environment values are). Processors use them in their own
/// settings structs.
pub mod lenient {
    use std::path::PathBuf;

    use serde::{Deserialize, Deserializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        S(String),
        I(i64),
        F(f64),
        B(bool),
    }

    impl Scalar {
        fn into_string(self) -> String {
            match self {
                Scalar::S(s) => s,
                Scalar::I(i) => i.to_string(),
                Scalar::F(f) => f.to_string(),
                Scalar::B(b) => b.to_string(),
            }
        }
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ListOrString {
        List(Vec<String>),
        One(String),
    }

    pub fn string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        Scalar::deserialize(d).map(Scalar::into_string)
    }

    pub fn opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        Ok(Option::<Scalar>::deserialize(d)?.map(Scalar::into_string))
    }

    /// A path; an empty value is none.
    pub fn opt_path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
        Ok(opt_string(d)?
            .filter(|s| !s.trim().is_empty())
            .map(PathBuf::from))
    }

    /// The JSON Schema of a [`list`] or [`lines`] field
    /// (`#[schemars(schema_with = "lenient::list_schema")]`): a list of strings, or one string.
    pub fn list_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "anyOf": [{ "type": "array", "items": { "type": "string" } }, { "type": "string" }]
        })
    }

    /// A list, or one comma-separated string; items are trimmed and empty ones dropped.
    pub fn list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
        split_list(d, ',')
    }

    /// A list, or one string of lines (for items that may hold commas, such as regular
    /// expressions); items are trimmed and empty ones dropped. Its schema is [`list_schema`].
    pub fn lines<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
        split_list(d, '\n')
    }

    fn split_list<'de, D: Deserializer<'de>>(
        d: D,
        separator: char,
    ) -> Result<Vec<String>, D::Error> {
        let items = match ListOrString::deserialize(d)? {
            ListOrString::List(items) => items,
            ListOrString::One(s) => s.split(separator).map(str::to_string).collect(),
        };
        Ok(items
            .into_iter()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect())
    }
}

/// Where configuration comes from: an optional file and a snapshot of the environment.
#[derive(Debug, Clone, Default)]
pub struct ConfigSource {
    pub file: Option<PathBuf>,
    pub env: BTreeMap<String, String>,
}

impl ConfigSource {
    /// Captures the process environment (only `MAILSTREAM_*` and `HOSTNAME`).
    pub fn from_process(file: Option<PathBuf>) -> Self {
        let env = std::env::vars()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX) || k == "HOSTNAME")
            .collect();
        Self { file, env }
    }

    pub fn with_env(mut self, key: &str, value: impl Into<String>) -> Self {
        self.env.insert(key.to_string(), value.into());
        self
    }
}

const ENV_PREFIX: &str = "MAILSTREAM_";
const RDKAFKA_ENV_PREFIX: &str = "MAILSTREAM_RDKAFKA_";
const BLOB_STORE_ENV_PREFIX: &str = "MAILSTREAM_BLOB_STORE_";

/// The environment variable that sets `key` of `section` (`None` for runtime keys).
pub fn env_name(section: Option<&str>, key: &str) -> String {
    let key = key.to_ascii_uppercase();
    match section {
        None => format!("{ENV_PREFIX}{key}"),
        Some(section) => format!(
            "{ENV_PREFIX}{}_{key}",
            section.to_ascii_uppercase().replace('-', "_")
        ),
    }
}

/// A processor's own settings: the file table `[section]` and the `MAILSTREAM_<SECTION>_<KEY>`
/// variables, deserialized and then checked beside the runtime's in the one [`load`], so a
/// bad configuration is reported whole, every problem naming its key.
pub trait Settings: DeserializeOwned {
    /// What types cannot say: ranges, combinations, files that must parse, agreement with the
    /// runtime's settings or the topology. One line per problem, naming its key (see
    /// [`key_label`]). Checks that need a connection belong to the processor's build.
    fn problems(&self, _runtime: &RuntimeConfig) -> Vec<String> {
        Vec::new()
    }
}

/// How a problem names a processor key: ``key `section.key` (env MAILSTREAM_SECTION_KEY)``.
pub fn key_label(section: &str, key: &str) -> String {
    format!(
        "key `{section}.{key}` (env {})",
        env_name(Some(section), key)
    )
}

/// Loads and validates the runtime settings and the settings of processor `section`.
///
/// `P` is the processor's own config struct ([`crate::NoSettings`] for none); its keys live in
/// the file table `[section]` and in `MAILSTREAM_<SECTION>_<KEY>` variables. Its
/// [`Settings::problems`] are reported with every other problem.
pub fn load<P: Settings>(
    section: &str,
    source: &ConfigSource,
) -> Result<(RuntimeConfig, P), RuntimeError> {
    let mut errors = Vec::new();
    let mut root = match &source.file {
        Some(path) => read_file(path, &mut errors),
        None => toml::Table::new(),
    };
    let file_label = source
        .file
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();

    let runtime_keys = struct_fields::<RuntimeConfig>();
    let processor_keys = struct_fields::<P>();

    for key in root.keys() {
        if !runtime_keys.contains(&key.as_str()) && key != section {
            errors.push(format!(
                "unknown key `{key}` in {file_label} (runtime keys: {}; processor table: [{section}])",
                runtime_keys.join(", ")
            ));
        }
    }
    let mut processor_table = match root.remove(section) {
        Some(toml::Value::Table(t)) => t,
        Some(_) => {
            errors.push(format!("`{section}` in {file_label} must be a table"));
            toml::Table::new()
        }
        None => toml::Table::new(),
    };
    for key in processor_table.keys() {
        if !processor_keys.contains(&key.as_str()) {
            errors.push(format!(
                "unknown key `{section}.{key}` in {file_label} (known: {})",
                processor_keys.join(", ")
            ));
        }
    }

    let runtime_env = overlay_env(&mut root, None, runtime_keys, &source.env, &mut errors);
    let processor_env = overlay_env(
        &mut processor_table,
        Some(section),
        processor_keys,
        &source.env,
        &mut errors,
    );
    // librdkafka properties: MAILSTREAM_RDKAFKA_SASL_PASSWORD is `sasl.password`.
    env_table(
        &mut root,
        "kafka",
        RDKAFKA_ENV_PREFIX,
        source,
        &mut errors,
        |p| p.to_ascii_lowercase().replace('_', "."),
    );
    // object_store options: MAILSTREAM_BLOB_STORE_AWS_REGION is `aws_region`.
    env_table(
        &mut root,
        "blob_store",
        BLOB_STORE_ENV_PREFIX,
        source,
        &mut errors,
        str::to_ascii_lowercase,
    );

    let runtime =
        deserialize_all::<RuntimeConfig>(root, None, runtime_env, &mut errors).map(|mut config| {
            if config.instance_id.is_none() {
                config.instance_id = source.env.get("HOSTNAME").cloned();
            }
            config.validate(&mut errors);
            config
        });
    let processor =
        deserialize_all::<P>(processor_table, Some(section), processor_env, &mut errors);
    if let (Some(runtime), Some(processor)) = (&runtime, &processor) {
        errors.extend(processor.problems(runtime));
    }
    match (runtime, processor) {
        (Some(r), Some(p)) if errors.is_empty() => Ok((r, p)),
        _ => Err(RuntimeError::Config(errors)),
    }
}

/// Puts every `<prefix><NAME>` variable into the file's table `table` under `key_of(NAME)`,
/// over the file's value; `<prefix><NAME>_FILE` names a file holding the value (a mounted
/// Secret). For the pass-through maps (`kafka`, `blob_store`), whose keys are not known here.
fn env_table(
    root: &mut toml::Table,
    table: &str,
    prefix: &str,
    source: &ConfigSource,
    errors: &mut Vec<String>,
    key_of: impl Fn(&str) -> String,
) {
    let entry = root
        .entry(table)
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    let toml::Value::Table(entries) = entry else {
        return;
    };
    for (name, value) in &source.env {
        let Some(key) = name.strip_prefix(prefix) else {
            continue;
        };
        let (key, value) = match key.strip_suffix("_FILE") {
            Some(key) => match read_secret_file(value) {
                Ok(text) => (key, text),
                Err(e) => {
                    errors.push(format!("{name}: cannot read `{value}`: {e}"));
                    continue;
                }
            },
            None => (key, value.clone()),
        };
        entries.insert(key_of(key), toml::Value::String(value));
    }
}

fn read_file(path: &PathBuf, errors: &mut Vec<String>) -> toml::Table {
    match std::fs::read_to_string(path) {
        Ok(text) => match text.parse::<toml::Table>() {
            Ok(table) => table,
            Err(e) => {
                errors.push(format!("{}: {e}", path.display()));
                toml::Table::new()
            }
        },
        Err(e) => {
            errors.push(format!("cannot read config file {}: {e}", path.display()));
            toml::Table::new()
        }
    }
}

/// Puts `MAILSTREAM_[SECTION_]KEY` values over the file's, as the strings they are, and returns
/// the keys it set. A value keeps its text exactly (`007` stays `007`, a 20-digit secret keeps
/// every digit); [`deserialize_all`] reads one as a number or boolean only for a key whose
/// type is not a string.
///
/// `MAILSTREAM_[SECTION_]KEY_FILE` names a file whose content is the value (one trailing line
/// break dropped), as Kubernetes mounts Secrets; it is refused beside the plain variable, and
/// it does not apply to a key whose own name ends in `_file` (that key is the file path).
fn overlay_env(
    table: &mut toml::Table,
    section: Option<&str>,
    keys: &[&str],
    env: &BTreeMap<String, String>,
    errors: &mut Vec<String>,
) -> BTreeSet<String> {
    let mut set = BTreeSet::new();
    for key in keys {
        let name = env_name(section, key);
        let file_name = format!("{name}_FILE");
        let from_file = if keys.contains(&format!("{key}_file").as_str()) {
            None
        } else {
            env.get(&file_name)
        };
        let value = match (env.get(&name), from_file) {
            (Some(_), Some(_)) => {
                errors.push(format!(
                    "{name} and {file_name} are both set; keep one (the file is for secrets mounted from a Secret)"
                ));
                continue;
            }
            (Some(raw), None) => raw.clone(),
            (None, Some(path)) => match read_secret_file(path) {
                Ok(text) => text,
                Err(e) => {
                    errors.push(format!("{file_name}: cannot read `{path}`: {e}"));
                    continue;
                }
            },
            (None, None) => continue,
        };
        table.insert((*key).to_string(), toml::Value::String(value));
        set.insert((*key).to_string());
    }
    set
}

/// A value kept in a file (a Kubernetes Secret mount): its text, one trailing line break dropped.
fn read_secret_file(path: &str) -> std::io::Result<String> {
    let text = std::fs::read_to_string(path)?;
    let value = text.strip_suffix('\n').unwrap_or(&text);
    Ok(value.strip_suffix('\r').unwrap_or(value).to_string())
}

/// The TOML scalar an environment value spells (`42`, `true`, `0.5`), if any.
fn scalar_of(raw: &str) -> Option<toml::Value> {
    let raw = raw.trim();
    if let Ok(i) = raw.parse::<i64>() {
        Some(toml::Value::Integer(i))
    } else if let Ok(b) = raw.parse::<bool>() {
        Some(toml::Value::Boolean(b))
    } else {
        raw.parse::<f64>().ok().map(toml::Value::Float)
    }
}

/// Deserializes `table`, reporting every badly typed key: each failing key is recorded with
/// its environment variable, removed, and deserialization tried again. A key the environment
/// set (`from_env`) that fails as a string is first tried once as the scalar its text spells,
/// so numeric and boolean settings parse from their text while string settings keep it whole.
fn deserialize_all<T: DeserializeOwned>(
    mut table: toml::Table,
    section: Option<&str>,
    mut from_env: BTreeSet<String>,
    errors: &mut Vec<String>,
) -> Option<T> {
    for _ in 0..128 {
        let value = toml::Value::Table(table.clone());
        match serde_path_to_error::deserialize::<_, T>(value) {
            // With the bad keys removed the rest is still validated; `errors` fails the load.
            Ok(v) => return Some(v),
            Err(e) => {
                let path = e.path().to_string();
                let top = path.split('.').next().unwrap_or_default().to_string();
                if from_env.remove(&top)
                    && let Some(scalar) = table
                        .get(&top)
                        .and_then(toml::Value::as_str)
                        .and_then(scalar_of)
                {
                    table.insert(top, scalar);
                    continue;
                }
                let label = match section {
                    Some(s) => format!("key `{s}.{path}` (env {})", env_name(Some(s), &top)),
                    None => format!("key `{path}` (env {})", env_name(None, &top)),
                };
                errors.push(format!("{label}: {}", e.inner().message().trim()));
                table.remove(&top)?;
            }
        }
    }
    None
}

/// librdkafka properties whose values are secrets (`sasl.password`, `ssl.key.password`,
/// `ssl.key.pem`, `sasl.oauthbearer.client.secret`, ...).
fn is_secret_property(name: &str) -> bool {
    ["password", "secret", ".key.pem", "sasl.jaas"]
        .iter()
        .any(|part| name.contains(part))
}

impl std::fmt::Debug for RuntimeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Destructured, so a new field cannot be left out of (or leak through) this impl.
        let Self {
            bootstrap_servers,
            schema_registry_url,
            schema_registry_username,
            schema_registry_password,
            schema_registry_ca_file,
            topic_prefix,
            erasure_key,
            instance_id,
            static_membership,
            batch_max_records,
            batch_max_bytes,
            batch_max_ms,
            batch_idle_ms,
            transaction_timeout_ms,
            retry_backoff_max_ms,
            stall_timeout_ms,
            http_addr,
            log_format,
            log_level,
            otlp_endpoint,
            kafka,
            blob_store,
        } = self;
        let shown = |map: &BTreeMap<String, String>| -> BTreeMap<String, String> {
            map.iter()
                .map(|(k, v)| {
                    let shown = if is_secret_property(k) || k.contains("token") {
                        "<redacted>"
                    } else {
                        v.as_str()
                    };
                    (k.clone(), shown.to_string())
                })
                .collect()
        };
        let kafka = shown(kafka);
        let blob_store = shown(blob_store);
        f.debug_struct("RuntimeConfig")
            .field("bootstrap_servers", bootstrap_servers)
            .field("schema_registry_url", schema_registry_url)
            .field("schema_registry_username", schema_registry_username)
            .field("schema_registry_password", schema_registry_password)
            .field("schema_registry_ca_file", schema_registry_ca_file)
            .field("topic_prefix", topic_prefix)
            .field("erasure_key", erasure_key)
            .field("instance_id", instance_id)
            .field("static_membership", static_membership)
            .field("batch_max_records", batch_max_records)
            .field("batch_max_bytes", batch_max_bytes)
            .field("batch_max_ms", batch_max_ms)
            .field("batch_idle_ms", batch_idle_ms)
            .field("transaction_timeout_ms", transaction_timeout_ms)
            .field("retry_backoff_max_ms", retry_backoff_max_ms)
            .field("stall_timeout_ms", stall_timeout_ms)
            .field("http_addr", http_addr)
            .field("log_format", log_format)
            .field("log_level", log_level)
            .field("otlp_endpoint", otlp_endpoint)
            .field("kafka", &kafka)
            .field("blob_store", &blob_store)
            .finish()
    }
}

/// Time kept free at the end of every transaction for sending its offsets and committing.
pub const COMMIT_MARGIN: Duration = Duration::from_secs(2);

impl RuntimeConfig {
    /// How long after its transaction began a batch's work must be done (each record's
    /// processing and the processor's `before_commit`), so the transaction commits before the
    /// coordinator aborts it: the transaction timeout less [`COMMIT_MARGIN`].
    pub fn transaction_work_time(&self) -> Duration {
        Duration::from_millis(self.transaction_timeout_ms).saturating_sub(COMMIT_MARGIN)
    }

    /// The least time one record's processing is sure to have: [`Self::transaction_work_time`]
    /// less `batch_max_ms`, as its batch may have been open that long when it is read.
    pub fn least_record_time(&self) -> Duration {
        self.transaction_work_time()
            .saturating_sub(Duration::from_millis(self.batch_max_ms))
    }

    fn validate(&self, errors: &mut Vec<String>) {
        for option in self.blob_store.keys() {
            if option
                .parse::<object_store::aws::AmazonS3ConfigKey>()
                .is_err()
            {
                errors.push(format!(
                    "key `blob_store.{option}` (env {BLOB_STORE_ENV_PREFIX}{}): not an S3 option \
                     of the blob store (e.g. aws_endpoint, aws_region, aws_access_key_id, \
                     aws_secret_access_key, aws_allow_http)",
                    option.to_ascii_uppercase()
                ));
            }
        }
        let mut missing = |key: &str, value: &Option<String>, what: &str| {
            if value.as_deref().is_none_or(|v| v.trim().is_empty()) {
                errors.push(format!(
                    "key `{key}` (env {}) is required: {what}",
                    env_name(None, key)
                ));
            }
        };
        missing(
            "bootstrap_servers",
            &self.bootstrap_servers,
            "the Kafka brokers, e.g. 127.0.0.1:9092",
        );
        missing(
            "schema_registry_url",
            &self.schema_registry_url,
            "the schema registry, e.g. http://127.0.0.1:8081",
        );
        let mut bad = |key: &str, what: String| {
            errors.push(format!("key `{key}` (env {}): {what}", env_name(None, key)));
        };
        if let Some(url) = &self.schema_registry_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            bad(
                "schema_registry_url",
                format!("expected an http:// or https:// URL, got `{url}`"),
            );
        }
        if let Some(file) = &self.schema_registry_ca_file {
            match std::fs::read(file).map(|pem| reqwest::Certificate::from_pem_bundle(&pem)) {
                Err(e) => bad(
                    "schema_registry_ca_file",
                    format!("cannot read {}: {e}", file.display()),
                ),
                Ok(Err(e)) => bad(
                    "schema_registry_ca_file",
                    format!("{} holds no PEM certificate: {e}", file.display()),
                ),
                Ok(Ok(certificates)) if certificates.is_empty() => bad(
                    "schema_registry_ca_file",
                    format!("{} holds no PEM certificate", file.display()),
                ),
                Ok(Ok(_)) => {}
            }
        }
        if self.batch_max_records == 0 {
            bad("batch_max_records", "must be at least 1".into());
        }
        if self.batch_max_ms == 0 {
            bad("batch_max_ms", "must be at least 1".into());
        }
        if self.batch_max_bytes == 0 {
            bad("batch_max_bytes", "must be at least 1".into());
        }
        if self.transaction_timeout_ms <= self.batch_max_ms * 2 {
            bad(
                "transaction_timeout_ms",
                format!(
                    "must exceed twice batch_max_ms ({}), got {}",
                    self.batch_max_ms, self.transaction_timeout_ms
                ),
            );
        }
        if self.http_addr.parse::<SocketAddr>().is_err() {
            bad(
                "http_addr",
                format!(
                    "expected host:port such as 0.0.0.0:8080, got `{}`",
                    self.http_addr
                ),
            );
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            bad(
                "log_format",
                format!("expected `text` or `json`, got `{}`", self.log_format),
            );
        }
        if !self
            .topic_prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            bad(
                "topic_prefix",
                format!(
                    "may hold only letters, digits, '.', '_' and '-', got `{}`",
                    self.topic_prefix
                ),
            );
        }
        for key in self.kafka.keys() {
            if MANAGED_KAFKA_KEYS.contains(&key.as_str()) {
                errors.push(format!(
                    "key `kafka.{key}` is set by mailstream itself (exactly-once depends on it); remove it"
                ));
            }
        }
    }

    pub fn bootstrap_servers(&self) -> &str {
        self.bootstrap_servers.as_deref().unwrap_or_default()
    }

    pub fn schema_registry_url(&self) -> &str {
        self.schema_registry_url.as_deref().unwrap_or_default()
    }

    /// The blob store's options (`blob_store`), as [`crate::blob::BlobStore::open`] takes them.
    pub fn blob_options(&self) -> Vec<(String, String)> {
        self.blob_store
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// The instance id, or a random one when neither config nor `HOSTNAME` gives it.
    pub fn instance_id(&self) -> String {
        self.instance_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    struct Demo {
        #[serde(default)]
        inline_limit_bytes: u64,
        #[serde(default, deserialize_with = "lenient::opt_string")]
        secret: Option<String>,
        #[serde(default)]
        enabled: bool,
    }

    impl Settings for Demo {
        fn problems(&self, _runtime: &RuntimeConfig) -> Vec<String> {
            if self.inline_limit_bytes > 4096 {
                return vec![format!(
                    "{}: at most 4096",
                    key_label("demo", "inline_limit_bytes")
                )];
            }
            Vec::new()
        }
    }

    fn source(vars: &[(&str, &str)]) -> ConfigSource {
        vars.iter()
            .fold(ConfigSource::default(), |s, (k, v)| s.with_env(k, *v))
    }

    #[test]
    fn env_sets_runtime_processor_and_kafka_keys() {
        let (rt, demo) = load::<Demo>(
            "demo",
            &source(&[
                ("MAILSTREAM_BOOTSTRAP_SERVERS", "k:9092"),
                ("MAILSTREAM_SCHEMA_REGISTRY_URL", "http://r:8081"),
                ("MAILSTREAM_BATCH_MAX_RECORDS", "42"),
                ("MAILSTREAM_INSTANCE_ID", "7"),
                ("MAILSTREAM_DEMO_INLINE_LIMIT_BYTES", "1024"),
                ("MAILSTREAM_RDKAFKA_SECURITY_PROTOCOL", "SASL_SSL"),
                ("MAILSTREAM_UNRELATED", "ignored"),
            ]),
        )
        .expect("valid config");
        assert_eq!(rt.batch_max_records, 42);
        assert_eq!(rt.instance_id.as_deref(), Some("7"));
        assert_eq!(demo.inline_limit_bytes, 1024);
        assert_eq!(rt.kafka["security.protocol"], "SASL_SSL");
    }

    #[test]
    fn env_values_keep_their_text_and_typed_keys_parse_it() {
        let (rt, demo) = load::<Demo>(
            "demo",
            &source(&[
                ("MAILSTREAM_BOOTSTRAP_SERVERS", "k:9092"),
                ("MAILSTREAM_SCHEMA_REGISTRY_URL", "http://r:8081"),
                ("MAILSTREAM_SCHEMA_REGISTRY_PASSWORD", "007"),
                ("MAILSTREAM_TOPIC_PREFIX", "1e3"),
                ("MAILSTREAM_DEMO_SECRET", "12345678901234567890"),
                ("MAILSTREAM_DEMO_ENABLED", "true"),
                ("MAILSTREAM_BATCH_MAX_MS", " 250"),
                ("MAILSTREAM_BATCH_IDLE_MS", "0"),
            ]),
        )
        .expect("valid config");
        assert_eq!(demo.secret.as_deref(), Some("12345678901234567890"));
        assert_eq!(
            rt.schema_registry_password.as_ref().map(Secret::expose),
            Some("007")
        );
        assert!(
            !format!("{rt:?}").contains("007"),
            "Debug shows the password"
        );
        assert_eq!(rt.topic_prefix, "1e3");
        assert!(demo.enabled);
        assert_eq!(rt.batch_max_ms, 250);
        assert_eq!(rt.batch_idle_ms, 0, "idle commits turned off");
    }

    #[test]
    fn a_secret_can_come_from_a_file() {
        let dir = std::env::temp_dir().join(format!("mailstream-sec-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("password");
        std::fs::write(&path, "s3cret 007\n").expect("write");
        let path = path.to_string_lossy().into_owned();
        let (rt, demo) = load::<Demo>(
            "demo",
            &source(&[
                ("MAILSTREAM_BOOTSTRAP_SERVERS", "k:9092"),
                ("MAILSTREAM_SCHEMA_REGISTRY_URL", "http://r:8081"),
                ("MAILSTREAM_SCHEMA_REGISTRY_PASSWORD_FILE", &path),
                ("MAILSTREAM_DEMO_SECRET_FILE", &path),
            ]),
        )
        .expect("valid config");
        assert_eq!(
            rt.schema_registry_password.as_ref().map(Secret::expose),
            Some("s3cret 007")
        );
        assert_eq!(demo.secret.as_deref(), Some("s3cret 007"));
        let (rt, _) = load::<Demo>(
            "demo",
            &source(&[
                ("MAILSTREAM_BOOTSTRAP_SERVERS", "k:9092"),
                ("MAILSTREAM_SCHEMA_REGISTRY_URL", "http://r:8081"),
                ("MAILSTREAM_RDKAFKA_SASL_PASSWORD_FILE", &path),
            ]),
        )
        .expect("valid config");
        assert_eq!(rt.kafka["sasl.password"], "s3cret 007");
        assert!(
            !format!("{rt:?}").contains("s3cret"),
            "Debug shows a secret"
        );

        let err = load::<Demo>(
            "demo",
            &source(&[
                ("MAILSTREAM_BOOTSTRAP_SERVERS", "k:9092"),
                ("MAILSTREAM_SCHEMA_REGISTRY_URL", "http://r:8081"),
                ("MAILSTREAM_DEMO_SECRET", "inline"),
                ("MAILSTREAM_DEMO_SECRET_FILE", &path),
                (
                    "MAILSTREAM_SCHEMA_REGISTRY_PASSWORD_FILE",
                    "/nonexistent/pw",
                ),
            ]),
        )
        .expect_err("both set, and an unreadable file");
        let text = err.to_string();
        assert!(
            text.contains("MAILSTREAM_DEMO_SECRET_FILE are both set"),
            "{text}"
        );
        assert!(text.contains("/nonexistent/pw"), "{text}");
    }

    #[test]
    fn every_error_is_reported_with_its_key() {
        let err = load::<Demo>(
            "demo",
            &source(&[
                ("MAILSTREAM_BATCH_MAX_RECORDS", "0"),
                ("MAILSTREAM_HTTP_ADDR", "nowhere"),
                ("MAILSTREAM_RDKAFKA_ISOLATION_LEVEL", "read_uncommitted"),
                ("MAILSTREAM_DEMO_INLINE_LIMIT_BYTES", "5000"),
            ]),
        )
        .expect_err("invalid config");
        let text = err.to_string();
        // The processor's own checks are reported with the runtime's, not in a second round.
        for needle in [
            "key `demo.inline_limit_bytes` (env MAILSTREAM_DEMO_INLINE_LIMIT_BYTES): at most 4096",
            "MAILSTREAM_BOOTSTRAP_SERVERS",
            "MAILSTREAM_SCHEMA_REGISTRY_URL",
            "MAILSTREAM_BATCH_MAX_RECORDS",
            "MAILSTREAM_HTTP_ADDR",
            "kafka.isolation.level",
        ] {
            assert!(text.contains(needle), "`{needle}` missing from: {text}");
        }
    }

    #[test]
    fn a_wrongly_typed_value_names_its_env_var() {
        let err = load::<Demo>(
            "demo",
            &source(&[
                ("MAILSTREAM_BOOTSTRAP_SERVERS", "k:9092"),
                ("MAILSTREAM_SCHEMA_REGISTRY_URL", "http://r:8081"),
                ("MAILSTREAM_DEMO_INLINE_LIMIT_BYTES", "lots"),
            ]),
        )
        .expect_err("invalid config");
        assert!(
            err.to_string()
                .contains("MAILSTREAM_DEMO_INLINE_LIMIT_BYTES"),
            "{err}"
        );
    }

    #[test]
    fn unknown_file_keys_are_refused() {
        let dir = std::env::temp_dir().join(format!("mailstream-cfg-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("c.toml");
        std::fs::write(
            &path,
            "bootstrap_servers='k:9092'\nschema_registry_url='http://r'\nbatch_max_recods=5\n[demo]\ninline_limit=3\n",
        )
        .expect("write");
        let err = load::<Demo>(
            "demo",
            &ConfigSource {
                file: Some(path),
                env: BTreeMap::new(),
            },
        )
        .expect_err("unknown keys");
        let text = err.to_string();
        assert!(text.contains("batch_max_recods"), "{text}");
        assert!(text.contains("demo.inline_limit"), "{text}");
    }

    #[test]
    fn blob_store_options_come_from_env_and_files_and_unknown_ones_are_refused() {
        let dir = std::env::temp_dir().join(format!("mailstream-cfg-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let secret = dir.join("secret");
        std::fs::write(&secret, "s3cr3t-value\n").expect("write");
        let secret = secret.to_str().expect("utf-8 path").to_string();
        let base = [
            ("MAILSTREAM_BOOTSTRAP_SERVERS", "k:9092"),
            ("MAILSTREAM_SCHEMA_REGISTRY_URL", "http://r:8081"),
            (
                "MAILSTREAM_BLOB_STORE_AWS_ENDPOINT",
                "http://127.0.0.1:9000",
            ),
            ("MAILSTREAM_BLOB_STORE_AWS_ALLOW_HTTP", "true"),
            (
                "MAILSTREAM_BLOB_STORE_AWS_SECRET_ACCESS_KEY_FILE",
                secret.as_str(),
            ),
        ];
        let (config, _) = load::<Demo>("demo", &source(&base)).expect("valid");
        assert_eq!(
            config.blob_options(),
            [
                ("aws_allow_http".to_string(), "true".to_string()),
                ("aws_endpoint".into(), "http://127.0.0.1:9000".into()),
                ("aws_secret_access_key".into(), "s3cr3t-value".into()),
            ]
        );
        assert!(
            !format!("{config:?}").contains("s3cr3t-value"),
            "the secret is never printed"
        );
        let mut wrong = base.to_vec();
        wrong.push(("MAILSTREAM_BLOB_STORE_AWS_ENDPOINTT", "http://x"));
        let err = load::<Demo>("demo", &source(&wrong)).expect_err("unknown option");
        assert!(
            err.to_string()
                .contains("MAILSTREAM_BLOB_STORE_AWS_ENDPOINTT"),
            "{err}"
        );
    }
}
