//! Helpers for tests against the real local stack started by `dev/up` (Kafka, the schema
//! registry, PostgreSQL). Every test gets its own topic prefix, so its topics, consumer groups
//! and transactional ids are its own and tests run side by side without interfering.

pub mod chaos;
pub mod cluster;
pub mod corpus;
pub mod crm;
pub mod crm_db;
pub mod mail;
pub mod pipeline;
pub mod scale;
pub mod smtp;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use apache_avro::types::Value;
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use schema_registry_converter::async_impl::easy_avro::{EasyAvroDecoder, EasyAvroEncoder};
use schema_registry_converter::async_impl::schema_registry::SrSettings;
use schema_registry_converter::schema_registry_common::SubjectNameStrategy;

/// Addresses of the local stack (from the environment `dev/test` exports, else the defaults).
#[derive(Debug, Clone)]
pub struct Stack {
    pub bootstrap: String,
    pub registry: String,
}

impl Stack {
    pub fn get() -> Self {
        Self {
            bootstrap: std::env::var("MAILSTREAM_BOOTSTRAP_SERVERS")
                .unwrap_or_else(|_| "127.0.0.1:9092".into()),
            registry: std::env::var("MAILSTREAM_SCHEMA_REGISTRY_URL")
                .unwrap_or_else(|_| "http://127.0.0.1:8081".into()),
        }
    }
}

/// One test's private namespace on the shared stack.
#[derive(Debug, Clone)]
pub struct TestEnv {
    pub stack: Stack,
    pub prefix: String,
    /// Kills what the test left running when the last clone goes (also when the test panics).
    _reaper: Arc<Reaper>,
}

/// Every process started with this test's environment (its `MAILSTREAM_TOPIC_PREFIX`) is
/// SIGKILLed when the test's `TestEnv` is dropped, so a failing test does not leave processors
/// running against the shared stack.
#[derive(Debug)]
struct Reaper {
    /// `None` for the empty prefix, which would match unrelated processes.
    marker: Option<Vec<u8>>,
}

impl Drop for Reaper {
    fn drop(&mut self) {
        let Some(marker) = &self.marker else {
            return;
        };
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return;
        };
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|p| p.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
                continue;
            };
            if environ
                .split(|b| *b == 0)
                .any(|var| var == marker.as_slice())
            {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
    }
}

impl TestEnv {
    /// A fresh prefix; creates every topic of the topology under it and registers the schemas.
    pub fn new(name: &str) -> Self {
        Self::new_on(Stack::get(), name)
    }

    /// As [`TestEnv::new`], on `stack` (e.g. the three-broker cluster's,
    /// [`cluster::Cluster::get`]): a fresh prefix, the topology applied there.
    pub fn new_on(stack: Stack, name: &str) -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let env = Self::with_prefix(stack, &format!("t-{name}-{}-", &id[..8]));
        let out = env
            .mailstream(&["topology", "apply"])
            .output()
            .expect("run mailstream");
        assert!(
            out.status.success(),
            "topology apply on {} failed (is the stack up? run dev/up):\n{}",
            env.stack.bootstrap,
            String::from_utf8_lossy(&out.stderr)
        );
        env
    }

    /// An environment on `stack` under `prefix`, without creating any topic.
    pub fn with_prefix(stack: Stack, prefix: &str) -> Self {
        Self {
            stack,
            prefix: prefix.to_string(),
            _reaper: Arc::new(Reaper {
                marker: (!prefix.is_empty())
                    .then(|| format!("MAILSTREAM_TOPIC_PREFIX={prefix}").into_bytes()),
            }),
        }
    }

    pub fn topic(&self, logical: &str) -> String {
        format!("{}{logical}", self.prefix)
    }

    /// The `mailstream` binary with this test's environment.
    pub fn mailstream(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(mailstream_bin());
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("MAILSTREAM_BOOTSTRAP_SERVERS", &self.stack.bootstrap)
            .env("MAILSTREAM_SCHEMA_REGISTRY_URL", &self.stack.registry)
            .env("MAILSTREAM_TOPIC_PREFIX", &self.prefix)
            .env("MAILSTREAM_HTTP_ADDR", "127.0.0.1:0")
            .env("MAILSTREAM_LOG_LEVEL", "info")
            // The receiving MTA of the test mail (`corpus`, `dev/samples`): its
            // Authentication-Results count.
            .env(
                "MAILSTREAM_PARSER_TRUSTED_AUTHSERV_IDS",
                TRUSTED_AUTHSERV_IDS,
            );
        cmd
    }

    /// Starts `mailstream run <processor>` as instance `instance`, logging to a file.
    pub fn spawn(&self, processor: &str, instance: &str, extra: &[(&str, &str)]) -> Child {
        let log = log_dir().join(format!("{}{processor}-{instance}.log", self.prefix));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("open log file");
        let mut cmd = self.mailstream(&["run", processor]);
        cmd.env("MAILSTREAM_INSTANCE_ID", instance)
            .stdout(Stdio::null())
            .stderr(file);
        for (k, v) in extra {
            cmd.env(k, v);
        }
        cmd.spawn().expect("spawn processor")
    }

    pub fn producer(&self) -> FutureProducer {
        ClientConfig::new()
            .set("bootstrap.servers", &self.stack.bootstrap)
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .create()
            .expect("producer")
    }

    /// A `read_committed` consumer of `topics` from the beginning, in its own group.
    pub fn consumer(&self, topics: &[&str]) -> StreamConsumer {
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.stack.bootstrap)
            .set(
                "group.id",
                format!("{}checker-{}", self.prefix, uuid::Uuid::new_v4()),
            )
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .create()
            .expect("consumer");
        let physical: Vec<String> = topics.iter().map(|t| self.topic(t)).collect();
        let refs: Vec<&str> = physical.iter().map(String::as_str).collect();
        consumer.subscribe(&refs).expect("subscribe");
        consumer
    }

    pub fn registry(&self) -> SrSettings {
        SrSettings::new(self.stack.registry.clone())
    }

    /// Encodes `value` with the latest schema registered for `logical`'s subject.
    pub async fn encode(&self, logical: &str, value: Value) -> Vec<u8> {
        EasyAvroEncoder::new(self.registry())
            .encode_value(
                value,
                &SubjectNameStrategy::TopicNameStrategy(self.topic(logical), false),
            )
            .await
            .expect("encode")
    }

    /// Produces one record with headers to `logical` and waits for its delivery.
    pub async fn produce_with_headers(
        &self,
        logical: &str,
        key: &str,
        payload: &[u8],
        headers: &[(&str, &str)],
    ) {
        let headers = headers.iter().fold(OwnedHeaders::new(), |h, (k, v)| {
            h.insert(Header {
                key: k,
                value: Some(v.as_bytes()),
            })
        });
        self.producer()
            .send(
                FutureRecord::to(&self.topic(logical))
                    .key(key)
                    .payload(payload)
                    .headers(headers),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("delivered");
    }

    /// Moves `processor`'s committed offsets on every topic back to the earliest, as an operator
    /// replaying it would. Retries while the group still has live members (it must be stopped).
    pub fn reset_to_earliest(&self, processor: &str) {
        let group = format!("{}mailstream-{processor}", self.prefix);
        let tool = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dev/kafka-tool");
        let started = Instant::now();
        loop {
            let out = Command::new(&tool)
                .args([
                    "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
                    "--bootstrap-server",
                    &self.stack.bootstrap,
                    "--group",
                    &group,
                    "--reset-offsets",
                    "--to-earliest",
                    "--all-topics",
                    "--execute",
                ])
                .output()
                .expect("run the Kafka consumer group tool");
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            if out.status.success() && !text.contains("Error") {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "could not reset {group}: {text}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Produces (key, payload) pairs to `logical` and waits for every delivery.
    pub async fn produce(&self, logical: &str, records: Vec<(String, Vec<u8>)>) {
        let producer = self.producer();
        let topic = self.topic(logical);
        let mut pending = Vec::with_capacity(records.len());
        for (key, payload) in &records {
            pending.push(producer.send_result(FutureRecord::to(&topic).key(key).payload(payload)));
        }
        for p in pending {
            let delivery = p.expect("enqueue").await.expect("delivery future");
            delivery.map_err(|(e, _)| e).expect("delivered");
        }
    }
}

/// The id of a bench record (the pass-through's schema).
pub fn bench_id(value: &Value) -> String {
    match value {
        Value::Record(fields) => fields
            .iter()
            .find_map(|(name, v)| match (name.as_str(), v) {
                ("id", Value::String(s)) => Some(s.clone()),
                _ => None,
            })
            .expect("record has an id"),
        other => panic!("not a record: {other:?}"),
    }
}

/// A bench record (the pass-through's schema) with id `id` and `size` random (incompressible)
/// payload bytes.
pub fn bench_record(id: &str, size: usize) -> Value {
    let mut payload = vec![0u8; size];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut payload);
    Value::Record(vec![
        ("id".into(), Value::String(id.into())),
        ("sent_at".into(), Value::TimestampMillis(now_ms())),
        ("payload".into(), Value::Bytes(payload)),
    ])
}

/// Writes `count` bench records to `bench.in`, runs instance `a` of the pass-through with
/// `vars` until every one came out of `bench.out`, and checks each came out exactly once.
/// Returns `/readyz`'s status while it ran and the exit status of its graceful stop.
pub async fn passthrough_exactly_once(
    env: &TestEnv,
    count: usize,
    vars: &[(String, String)],
) -> (u16, std::process::ExitStatus) {
    let mut records = Vec::with_capacity(count);
    for n in 0..count {
        let id = format!("pt-{n:04}");
        records.push((
            id.clone(),
            env.encode("bench.in", bench_record(&id, 256)).await,
        ));
    }
    env.produce("bench.in", records).await;
    let http = format!("127.0.0.1:{}", free_port());
    let mut all: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    all.push(("MAILSTREAM_HTTP_ADDR", http.as_str()));
    let mut child = env.spawn("passthrough", "a", &all);
    let out = collect(
        &env.consumer(&["bench.out"]),
        count,
        Duration::from_secs(90),
        Duration::from_secs(2),
    )
    .await;
    let (ready, _) = http_get(&format!("http://{http}/readyz")).await;
    let status = terminate(&mut child, Duration::from_secs(30));
    let mut seen: HashMap<String, usize> = HashMap::new();
    for record in &out {
        let value = decode(env.registry(), record.payload.as_deref().expect("payload")).await;
        *seen.entry(bench_id(&value)).or_default() += 1;
    }
    assert_eq!(seen.len(), count, "every record came through");
    assert!(seen.values().all(|n| *n == 1), "none twice");
    (ready, status)
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// A consumed record, owned.
#[derive(Debug, Clone)]
pub struct Seen {
    pub key: Option<String>,
    pub payload: Option<Vec<u8>>,
    pub headers: HashMap<String, String>,
    pub partition: i32,
    pub offset: i64,
}

/// Reads until `want` records arrived, then `settle` more time (to catch duplicates), or
/// until `timeout`.
pub async fn collect(
    consumer: &StreamConsumer,
    want: usize,
    timeout: Duration,
    settle: Duration,
) -> Vec<Seen> {
    let started = Instant::now();
    let mut seen = Vec::new();
    let mut settle_until: Option<Instant> = None;
    loop {
        let now = Instant::now();
        let deadline = settle_until.unwrap_or(started + timeout);
        if now >= deadline {
            return seen;
        }
        match tokio::time::timeout(deadline - now, consumer.recv()).await {
            Err(_) => return seen,
            // librdkafka reports transient conditions (a topic not yet in metadata right
            // after creation) as errors and recovers by itself.
            Ok(Err(e)) => eprintln!("consumer error (continuing): {e}"),
            Ok(Ok(m)) => {
                let headers = m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| {
                                (
                                    h.key.to_string(),
                                    String::from_utf8_lossy(h.value.unwrap_or_default())
                                        .into_owned(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                seen.push(Seen {
                    key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                    payload: m.payload().map(<[u8]>::to_vec),
                    headers,
                    partition: m.partition(),
                    offset: m.offset(),
                });
                if seen.len() >= want && settle_until.is_none() {
                    settle_until = Some(Instant::now() + settle);
                }
            }
        }
    }
}

/// Decodes a Confluent-framed Avro payload through the registry.
pub async fn decode(registry: SrSettings, payload: &[u8]) -> Value {
    EasyAvroDecoder::new(registry)
        .decode(Some(payload))
        .await
        .expect("decode")
        .value
}

/// Decodes consumed records into `T` through the registry, asserting each is keyed by
/// `key_of(&T)` (every pipeline topic is keyed by its record's message id).
pub async fn decode_as<T: mailstream_runtime::AvroRecord>(
    registry: SrSettings,
    seen: &[Seen],
    key_of: impl Fn(&T) -> &str,
) -> Vec<T> {
    let mut out = Vec::with_capacity(seen.len());
    for record in seen {
        let value = decode(
            registry.clone(),
            record.payload.as_deref().expect("payload"),
        )
        .await;
        let typed = T::from_avro(value).expect("the record maps to its type");
        assert_eq!(
            record.key.as_deref(),
            Some(key_of(&typed)),
            "keyed by message id"
        );
        out.push(typed);
    }
    out
}

/// The `mailstream` binary built next to the test executable.
pub fn mailstream_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(|d| {
            if d.ends_with("deps") {
                d.parent()
            } else {
                Some(d)
            }
        })
        .expect("target dir");
    let bin = dir.join("mailstream");
    assert!(
        bin.exists(),
        "{} is missing: build it first (cargo build --workspace --bins)",
        bin.display()
    );
    bin
}

/// Where processor logs of tests go (`target/test-logs`).
pub fn log_dir() -> PathBuf {
    let dir = mailstream_bin()
        .parent()
        .expect("target dir")
        .join("test-logs");
    std::fs::create_dir_all(&dir).expect("create log dir");
    dir
}

/// The authserv-ids of the MTA the test mail passed (`mx.<OUR_DOMAIN>` in the generated corpus,
/// `mx.mailstream.test` in `dev/samples`), trusted by every parser the tests start.
pub const TRUSTED_AUTHSERV_IDS: &str = "mx.in.example.com,mx.mailstream.test";

/// `name` from the environment parsed as a `T`, else `default`: how a test's size is
/// changed from the command line (a full-length outage, a bigger chaos run).
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A TCP port that was free a moment ago on 127.0.0.1, below the kernel's ephemeral range
/// (32768 and up here): a port from that range can be taken as the source port of an outgoing
/// connection (a Kafka client's, say) before the test's process binds it, and a processor
/// restarted on it then fails with "address in use" until that connection closes.
pub fn free_port() -> u16 {
    use rand::Rng;
    let mut rng = rand::rng();
    loop {
        let port = rng.random_range(20_000..32_000);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// GETs `url`, returning the status code and body.
pub async fn http_get(url: &str) -> (u16, String) {
    match reqwest::get(url).await {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(_) => (0, String::new()),
    }
}

/// Sends SIGTERM and waits for the process to exit.
pub fn terminate(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            panic!(
                "process {} did not stop within {timeout:?} of SIGTERM",
                child.id()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs a command to completion, returning its output.
pub fn output(mut cmd: Command) -> Output {
    cmd.output().expect("run command")
}

/// A `/proc/<pid>/status` field in bytes (`VmRSS`, resident now; `VmHWM`, the peak).
pub fn proc_memory(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kib| kib * 1024)
}

/// Runs `mailstream ARGS` in `env`: exit code, stdout, stderr.
pub fn ctl(env: &TestEnv, args: &[&str]) -> (i32, String, String) {
    let out = output(env.mailstream(args));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `replay ... --execute` until the group's members have left (they leave on SIGTERM, but
/// the broker may still list them for a moment).
pub fn replay_when_stopped(env: &TestEnv, args: &[&str]) -> String {
    let started = Instant::now();
    loop {
        let (code, out, err) = ctl(env, args);
        if code == 0 {
            return out;
        }
        assert!(
            err.contains("live member") && started.elapsed() < Duration::from_secs(60),
            "{args:?}: {err}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}
