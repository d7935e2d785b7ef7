//! The whole topology as child processes (`mailstream run` ingest, parser, resolver, scorer,
//! crm-sink) on ports chosen once, so any of them can be `kill -9`ed and started again as the
//! same instance (same transactional id, same SMTP port) the way a supervisor would, and a
//! process that exits on its own is noticed, restarted with a backoff and reported (separately
//! when it exited while the broker or registry was being restarted). A stream processor can be
//! scaled out and in the way an autoscaler does ([`Pipeline::scale`]: instances `a`, `b`, ...
//! join, and leave on SIGTERM), and one of its instances frozen (SIGSTOP) and thawed, a zombie.
//! Also: reading a processor's Prometheus `/metrics`.

use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

use crate::corpus::OUR_DOMAIN;
use crate::{TestEnv, free_port, http_get, log_dir, mail, terminate};

/// The processors, in topology order.
pub const PROCESSORS: [&str; 5] = ["ingest", "parser", "resolver", "scorer", "crm-sink"];
/// The stream processors (those with an input topic and a consumer group).
pub const STREAM_PROCESSORS: [&str; 4] = ["parser", "resolver", "scorer", "crm-sink"];
/// Each processor's input topic.
pub fn input_of(processor: &str) -> &'static str {
    match processor {
        "parser" => "raw-email",
        "resolver" => "parsed",
        "scorer" => "resolved",
        "crm-sink" => "scored",
        _ => "",
    }
}

/// Where the CRM sink writes.
#[derive(Debug, Clone)]
pub enum Sink {
    Postgres {
        url: String,
        schema: String,
    },
    /// The `rest` backend; `settings` are more `MAILSTREAM_CRM_SINK_*` (retries, rate limit).
    Rest {
        base_url: String,
        token: String,
        settings: Vec<(String, String)>,
    },
}

#[derive(Debug, Clone)]
pub struct PipelineOptions {
    pub sink: Sink,
    pub log_level: String,
    /// More environment for every processor (`MAILSTREAM_BATCH_MAX_RECORDS`, ...).
    pub common: Vec<(String, String)>,
}

/// One instance of a processor and what happened to it.
pub struct Proc {
    pub name: &'static str,
    /// `a`, `b`, ...: its instance id (transactional id) and log file.
    pub instance: String,
    child: Option<Child>,
    pub metrics_port: u16,
    vars: Vec<(String, String)>,
    pub starts: u32,
    pub kills: u32,
    /// Exits nobody asked for: what the process said last.
    pub unexpected_exits: Vec<String>,
    /// Of those, the exits while the broker or registry was being restarted (or within
    /// [`OUTAGE_GRACE`] of it): a dependency was down.
    pub exits_in_outage: u32,
    /// Exits since it was last ready (for the restart backoff).
    failures: u32,
    /// Exits outside outages since it was last ready, and the most of those ever seen: three
    /// in a row is a crash loop.
    consecutive: u32,
    pub max_consecutive: u32,
    restart_at: Option<Instant>,
    /// Scaled in (stopped on purpose): not supervised until it is scaled out again.
    retired: bool,
    /// Stopped with SIGSTOP and not yet continued.
    pub frozen: bool,
}

/// How long an instance scaled in may take to finish its batch after SIGTERM.
pub const LEAVE_GRACE: Duration = Duration::from_secs(60);

/// How long after a broker or registry restart ends an exit still counts as the outage's.
pub const OUTAGE_GRACE: Duration = Duration::from_secs(15);

impl Proc {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn metrics_url(&self) -> String {
        format!("http://127.0.0.1:{}/metrics", self.metrics_port)
    }
}

pub struct Pipeline {
    pub env: TestEnv,
    pub procs: Vec<Proc>,
    pub smtp_addr: String,
    pub blobs: PathBuf,
    /// Instances scaled in, finishing their batch after SIGTERM, and since when.
    leaving: Vec<(Child, Instant)>,
    /// A dependency is down (or came back less than [`OUTAGE_GRACE`] ago).
    outage: bool,
    outage_ended: Option<Instant>,
}

/// Why the process in `log` stopped: its final `error:` line or panic, else the last ERROR
/// line, else its last line.
fn last_words(log: &str) -> String {
    let lines: Vec<&str> = log.lines().rev().take(400).collect();
    let starts = |l: &&&str| {
        let l = l.trim_start();
        l.starts_with("error:") || l.starts_with("Error:") || l.contains("panicked at")
    };
    lines
        .iter()
        .find(starts)
        .or_else(|| lines.iter().find(|l| l.contains("ERROR")))
        .or(lines.first())
        .map(|l| l.chars().take(300).collect())
        .unwrap_or_default()
}

impl Pipeline {
    /// Starts every processor (without waiting: see [`Pipeline::wait_ready`]).
    pub fn start(env: &TestEnv, options: &PipelineOptions) -> Self {
        let blobs = mail::temp_dir("pipeline-blobs");
        let blob_url = format!("file://{}", blobs.display());
        let smtp_addr = format!("127.0.0.1:{}", free_port());
        let http_addr = format!("127.0.0.1:{}", free_port());
        let mut procs = Vec::new();
        for name in PROCESSORS {
            let port = free_port();
            let mut vars: Vec<(String, String)> = vec![
                ("MAILSTREAM_HTTP_ADDR".into(), format!("127.0.0.1:{port}")),
                ("MAILSTREAM_LOG_LEVEL".into(), options.log_level.clone()),
            ];
            vars.extend(options.common.iter().cloned());
            let own: Vec<(&str, String)> = match name {
                "ingest" => vec![
                    ("MAILSTREAM_INGEST_SMTP_ADDR", smtp_addr.clone()),
                    ("MAILSTREAM_INGEST_HTTP_ADDR", http_addr.clone()),
                    ("MAILSTREAM_INGEST_ACCEPTED_DOMAINS", OUR_DOMAIN.into()),
                    ("MAILSTREAM_INGEST_HMAC_SECRET", mail::SECRET.into()),
                    ("MAILSTREAM_INGEST_BLOB_URL", blob_url.clone()),
                    ("MAILSTREAM_INGEST_HOSTNAME", "mx.test".into()),
                ],
                "parser" => vec![("MAILSTREAM_PARSER_BLOB_URL", blob_url.clone())],
                "resolver" => vec![("MAILSTREAM_RESOLVER_OUR_DOMAINS", OUR_DOMAIN.into())],
                "crm-sink" => match &options.sink {
                    Sink::Postgres { url, schema } => vec![
                        ("MAILSTREAM_CRM_SINK_DATABASE_URL", url.clone()),
                        ("MAILSTREAM_CRM_SINK_SCHEMA", schema.clone()),
                    ],
                    Sink::Rest {
                        base_url, token, ..
                    } => vec![
                        ("MAILSTREAM_CRM_SINK_BACKEND", "rest".into()),
                        ("MAILSTREAM_CRM_SINK_BASE_URL", base_url.clone()),
                        ("MAILSTREAM_CRM_SINK_TOKEN", token.clone()),
                    ],
                },
                _ => vec![],
            };
            vars.extend(own.into_iter().map(|(k, v)| (k.to_string(), v)));
            if let (Sink::Rest { settings, .. }, "crm-sink") = (&options.sink, name) {
                vars.extend(settings.iter().cloned());
            }
            procs.push(Proc::new(name, "a", port, vars));
        }
        let mut pipeline = Self {
            env: env.clone(),
            procs,
            smtp_addr,
            blobs,
            leaving: Vec::new(),
            outage: false,
            outage_ended: None,
        };
        for i in 0..pipeline.procs.len() {
            pipeline.spawn(i);
        }
        pipeline
    }

    /// The first instance of `name` (`a`).
    fn index(&self, name: &str) -> usize {
        self.procs
            .iter()
            .position(|p| p.name == name)
            .unwrap_or_else(|| panic!("no processor {name}"))
    }

    /// The instances of `name` in service (not scaled in), first to last.
    pub fn instances(&self, name: &str) -> Vec<usize> {
        (0..self.procs.len())
            .filter(|&i| self.procs[i].name == name && !self.procs[i].retired)
            .collect()
    }

    pub fn proc(&self, name: &str) -> &Proc {
        &self.procs[self.index(name)]
    }

    fn spawn(&mut self, i: usize) {
        let p = &mut self.procs[i];
        let vars: Vec<(&str, &str)> = p
            .vars
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        p.child = Some(self.env.spawn(p.name, &p.instance, &vars));
        p.starts += 1;
        p.restart_at = None;
        p.retired = false;
        p.frozen = false;
    }

    /// Scales stream processor `name` to `n` instances, as an autoscaler does: new instances
    /// (`b`, `c`, ... on ports of their own) join the group; the last ones leave on SIGTERM
    /// (finishing their open batch, reaped by [`Pipeline::supervise`], `kill -9`ed after
    /// [`LEAVE_GRACE`] as a pod's termination grace period would). Instances scaled in before
    /// are reused.
    pub fn scale(&mut self, name: &'static str, n: usize) {
        assert!(
            STREAM_PROCESSORS.contains(&name),
            "only a stream processor scales ({name})"
        );
        let mut live = self.instances(name);
        while live.len() > n.max(1) {
            let i = live.pop().expect("more than one");
            self.procs[i].retired = true;
            self.procs[i].restart_at = None;
            if let Some(child) = self.procs[i].child.take() {
                if self.procs[i].frozen {
                    signal(&child, "CONT");
                }
                signal(&child, "TERM");
                self.leaving.push((child, Instant::now()));
            }
        }
        for k in live.len()..n {
            let instance = ((b'a' + k as u8) as char).to_string();
            let i = match self
                .procs
                .iter()
                .position(|p| p.name == name && p.instance == instance)
            {
                Some(i) => i,
                None => {
                    let first = &self.procs[self.index(name)];
                    let port = free_port();
                    let mut vars = first.vars.clone();
                    for (key, value) in &mut vars {
                        if key == "MAILSTREAM_HTTP_ADDR" {
                            *value = format!("127.0.0.1:{port}");
                        }
                    }
                    self.procs.push(Proc::new(name, &instance, port, vars));
                    self.procs.len() - 1
                }
            };
            self.spawn(i);
        }
    }

    /// Freezes instance `i` with SIGSTOP: it holds its partitions and its open transaction,
    /// answers nothing, until [`Pipeline::thaw`].
    pub fn freeze(&mut self, i: usize) {
        if let Some(child) = &self.procs[i].child {
            signal(child, "STOP");
            self.procs[i].frozen = true;
        }
    }

    /// Continues a frozen instance (SIGCONT).
    pub fn thaw(&mut self, i: usize) {
        if let Some(child) = &self.procs[i].child
            && self.procs[i].frozen
        {
            signal(child, "CONT");
        }
        self.procs[i].frozen = false;
    }

    /// Waits until every running processor answers `/readyz` with 200.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let started = Instant::now();
        loop {
            self.supervise().await;
            let mut waiting = Vec::new();
            for p in self.procs.iter().filter(|p| !p.retired) {
                let url = format!("http://127.0.0.1:{}/readyz", p.metrics_port);
                if http_get(&url).await.0 != 200 {
                    waiting.push(format!("{}-{}", p.name, p.instance));
                }
            }
            if waiting.is_empty() {
                return Ok(());
            }
            if started.elapsed() > timeout {
                return Err(format!("not ready after {timeout:?}: {waiting:?}"));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `kill -9` of the first instance of `name`, reaped, and started again at once as the
    /// same instance.
    pub fn kill9(&mut self, name: &str) {
        self.kill9_instance(self.index(name));
    }

    /// `kill -9` of instance `i`, reaped, and started again at once as the same instance.
    pub fn kill9_instance(&mut self, i: usize) {
        if let Some(mut child) = self.procs[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
            self.procs[i].kills += 1;
        }
        self.spawn(i);
    }

    /// Says whether a dependency (broker, registry) is being restarted.
    pub fn set_outage(&mut self, on: bool) {
        if self.outage && !on {
            self.outage_ended = Some(Instant::now());
        }
        self.outage = on;
    }

    fn in_outage(&self) -> bool {
        self.outage
            || self
                .outage_ended
                .is_some_and(|t| t.elapsed() < OUTAGE_GRACE)
    }

    /// Notices processes that exited on their own: records why, and starts them again after a
    /// backoff (1, 2, 4, 8 s, capped) as a supervisor would. Resets a processor's count of
    /// consecutive exits once it is ready again.
    pub async fn supervise(&mut self) {
        self.leaving.retain_mut(|(child, since)| {
            if since.elapsed() > LEAVE_GRACE {
                let _ = child.kill();
            }
            !matches!(child.try_wait(), Ok(Some(_)))
        });
        let outage = self.in_outage();
        for i in 0..self.procs.len() {
            if self.procs[i].retired {
                continue;
            }
            let log = log_dir().join(format!(
                "{}{}-{}.log",
                self.env.prefix, self.procs[i].name, self.procs[i].instance
            ));
            let p = &mut self.procs[i];
            if let Some(child) = p.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                p.child = None;
                let said = last_words(&std::fs::read_to_string(&log).unwrap_or_default());
                let during = if outage { " (during an outage)" } else { "" };
                p.unexpected_exits.push(format!("{status}{during}: {said}"));
                p.failures += 1;
                if outage {
                    p.exits_in_outage += 1;
                } else {
                    p.consecutive += 1;
                    p.max_consecutive = p.max_consecutive.max(p.consecutive);
                }
                let backoff = 1u64 << (p.failures - 1).min(3);
                p.restart_at = Some(Instant::now() + Duration::from_secs(backoff));
            }
            if p.restart_at.is_some_and(|at| Instant::now() >= at) {
                self.spawn(i);
            } else if self.procs[i].failures > 0 && self.procs[i].child.is_some() {
                let url = format!("http://127.0.0.1:{}/readyz", self.procs[i].metrics_port);
                if http_get(&url).await.0 == 200 {
                    self.procs[i].failures = 0;
                    self.procs[i].consecutive = 0;
                }
            }
        }
    }

    /// Stops every instance of one processor with SIGTERM (not counted as a kill), after the
    /// instances still leaving from a scale-in are gone.
    pub fn stop_one(&mut self, name: &str) {
        for (mut child, _) in self.leaving.drain(..) {
            terminate(&mut child, LEAVE_GRACE);
        }
        for i in 0..self.procs.len() {
            if self.procs[i].name != name {
                continue;
            }
            self.procs[i].restart_at = None;
            if let Some(mut child) = self.procs[i].child.take() {
                if self.procs[i].frozen {
                    signal(&child, "CONT");
                }
                terminate(&mut child, Duration::from_secs(60));
            }
        }
    }

    /// Starts the first instance of one processor (the others stay scaled in).
    pub fn start_one(&mut self, name: &str) {
        for i in 0..self.procs.len() {
            if self.procs[i].name == name && self.procs[i].child.is_none() {
                self.procs[i].retired = true;
            }
        }
        let i = self.index(name);
        self.spawn(i);
    }

    /// Stops every processor with SIGTERM.
    pub fn stop(&mut self) {
        for name in PROCESSORS {
            self.stop_one(name);
        }
    }

    /// `/metrics` of the first instance of `name` (empty while it is down).
    pub async fn scrape(&self, name: &str) -> String {
        http_get(&self.proc(name).metrics_url()).await.1
    }

    /// `/metrics` of every instance of `name` in service (an empty text for one that is down).
    pub async fn scrape_all(&self, name: &str) -> Vec<String> {
        let mut texts = Vec::new();
        for i in self.instances(name) {
            texts.push(http_get(&self.procs[i].metrics_url()).await.1);
        }
        texts
    }
}

impl Proc {
    fn new(
        name: &'static str,
        instance: &str,
        metrics_port: u16,
        vars: Vec<(String, String)>,
    ) -> Self {
        Self {
            name,
            instance: instance.to_string(),
            child: None,
            metrics_port,
            vars,
            starts: 0,
            kills: 0,
            unexpected_exits: Vec::new(),
            exits_in_outage: 0,
            failures: 0,
            consecutive: 0,
            max_consecutive: 0,
            restart_at: None,
            retired: false,
            frozen: false,
        }
    }
}

/// Sends `SIG<name>` to `child` (`kill -s NAME`).
fn signal(child: &Child, name: &str) {
    let status = std::process::Command::new("kill")
        .args(["-s", name, &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -s {name} {}", child.id());
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        for (child, _) in &mut self.leaving {
            let _ = child.kill();
            let _ = child.wait();
        }
        for p in &mut self.procs {
            if let Some(mut child) = p.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// One sample of a Prometheus text exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// As exposed: a histogram's samples carry their `_bucket`, `_sum` or `_count` suffix.
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// Every sample of `text` (the Prometheus text format). Panics on a line that is not one:
/// `/metrics` must be readable.
pub fn samples(text: &str) -> Vec<Sample> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| parse_sample(l).unwrap_or_else(|| panic!("not a Prometheus sample: {l:?}")))
        .collect()
}

fn parse_sample(line: &str) -> Option<Sample> {
    let name_end = line.find(['{', ' ']).unwrap_or(line.len());
    let name = line[..name_end].to_string();
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        rest = after;
        loop {
            rest = rest.trim_start_matches([',', ' ']);
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            let (label, after) = rest.split_once("=\"")?;
            let mut value = String::new();
            let mut chars = after.char_indices();
            let end = loop {
                match chars.next()? {
                    (i, '"') => break i,
                    (_, '\\') => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        c => value.push(c),
                    },
                    (_, c) => value.push(c),
                }
            };
            labels.push((label.trim().to_string(), value));
            rest = &after[end + 1..];
        }
    }
    // The value, then an optional timestamp.
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// The sum of the samples of metric `name` (a histogram's with their suffix, e.g.
/// `mailstream_processing_seconds_count`) whose labels include every pair of `labels`.
/// Panics, naming the metric and the labels, when `/metrics` has no such sample: a renamed
/// metric or label fails the test instead of reading as 0.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    metric_if_served(text, name, labels).unwrap_or_else(|| {
        let served: Vec<String> = samples(text)
            .into_iter()
            .filter(|s| s.name == name)
            .map(|s| format!("{:?} {}", s.labels, s.value))
            .collect();
        panic!(
            "no sample of metric `{name}` with labels {labels:?} on /metrics; its samples: {served:?}"
        )
    })
}

/// As [`metric`], but `None` when no sample matches: only for scrapes of a process that may be
/// down or not started yet (it serves nothing then).
pub fn metric_if_served(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let matching: Vec<f64> = samples(text)
        .into_iter()
        .filter(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .map(|s| s.value)
        .collect();
    (!matching.is_empty()).then(|| matching.iter().sum())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP mailstream_records_out_total Records produced (committed or not).
# TYPE mailstream_records_out_total counter
mailstream_records_out_total{processor="parser",topic="parsed"} 3
mailstream_records_out_total{processor="resolver",topic="resolved"} 0
mailstream_processing_seconds_count{processor="parser"} 7
mailstream_odd{reason="a \"quoted\", comma",x="y"} 1.5 1700000000000
mailstream_ingest_inflight_bytes 0
"#;

    #[test]
    fn reads_sums_and_filters_by_label() {
        assert_eq!(metric(TEXT, "mailstream_records_out_total", &[]), 3.0);
        assert_eq!(
            metric(
                TEXT,
                "mailstream_records_out_total",
                &[("topic", "resolved")]
            ),
            0.0
        );
        assert_eq!(
            metric(TEXT, "mailstream_processing_seconds_count", &[]),
            7.0
        );
        assert_eq!(
            metric(TEXT, "mailstream_odd", &[("reason", "a \"quoted\", comma")]),
            1.5
        );
        assert_eq!(metric(TEXT, "mailstream_ingest_inflight_bytes", &[]), 0.0);
    }

    #[test]
    #[should_panic(expected = "mailstream_records_in_total")]
    fn a_missing_metric_panics_naming_it() {
        metric(TEXT, "mailstream_records_in_total", &[]);
    }

    #[test]
    #[should_panic(expected = "topic")]
    fn a_missing_label_value_panics() {
        metric(TEXT, "mailstream_records_out_total", &[("topic", "scored")]);
    }

    #[test]
    fn may_be_absent_only_when_asked() {
        assert_eq!(
            metric_if_served("", "mailstream_records_in_total", &[]),
            None
        );
    }
}
