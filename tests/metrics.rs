//! `/metrics` of every processor before any traffic: each serves its series at zero from the
//! moment it is ready (so a dashboard reads 0, not "no data", and an absent-series alert means
//! a processor is gone), Prometheus's own `promtool check metrics` accepts each exposition, and
//! together with the optional notifier they serve every metric the Grafana dashboard
//! (`helm/generate.py` → `helm/mailstream/files/dashboard.json`) queries.
//!
//! Needs `promtool` on PATH (Debian package `prometheus`; `dev/install` installs it).

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mailstream_runtime::Topology;
use mailstream_runtime::metrics::{RUNTIME_DEAD_LETTER_CLASSES, TRANSACTION_OUTCOMES};
use mailstream_tests::crm_db::{database_url, schema_of};
use mailstream_tests::pipeline::{
    PROCESSORS, Pipeline, PipelineOptions, STREAM_PROCESSORS, Sample, Sink, metric, samples,
};
use mailstream_tests::{TestEnv, free_port, http_get, terminate};

/// The one gauge that is not zero before traffic: the scorer's rules are in force.
const NOT_ZERO_AT_START: [(&str, f64); 1] = [("mailstream_scorer_rules_valid", 1.0)];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_processor_serves_its_series_at_zero_and_promtool_accepts_them() {
    let promtool = promtool();
    let env = TestEnv::new("metrics");
    let topology = Topology::embedded().expect("the embedded topology");
    let mut pipeline = Pipeline::start(
        &env,
        &PipelineOptions {
            sink: Sink::Postgres {
                url: database_url(),
                schema: schema_of(&env),
            },
            log_level: "info".into(),
            common: Vec::new(),
        },
    );
    pipeline
        .wait_ready(Duration::from_secs(120))
        .await
        .expect("every processor ready");

    let mut served = BTreeSet::new();
    for name in PROCESSORS {
        let text = if STREAM_PROCESSORS.contains(&name) {
            let spec = topology
                .processor(name)
                .expect("a processor of the topology");
            let input = spec
                .input
                .as_deref()
                .expect("a stream processor has an input");
            let partitions = topology
                .topic(input)
                .expect("its input is a topic of the topology")
                .partitions;
            // Lag and stall series follow the assignment, which comes a moment after ready.
            let text = scrape_once_assigned(&pipeline, name, partitions).await;
            assert_stream_series(&text, name, input, &spec.outputs, partitions);
            text
        } else {
            let text = pipeline.scrape(name).await;
            assert_ingest_series(&text);
            text
        };
        assert_all_zero(&text, name);
        promtool_check(&promtool, name, &text);
        served.extend(samples(&text).iter().map(|s| base_name(&s.name)));
    }
    pipeline.stop();
    // The optional notifier (a dry run: no channel is called) serves the dashboard's
    // notification panels.
    let text = notifier_metrics(&env).await;
    assert_all_zero(&text, "notifier");
    promtool_check(&promtool, "notifier", &text);
    served.extend(samples(&text).iter().map(|s| base_name(&s.name)));

    let dashboard =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../helm/mailstream/files/dashboard.json");
    let queried = dashboard_metrics(&dashboard);
    assert!(
        queried.len() > 10,
        "the dashboard's queries were not read: {queried:?}"
    );
    let missing: Vec<&String> = queried.iter().filter(|m| !served.contains(*m)).collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics no processor serves: {missing:?}"
    );
}

/// `/metrics` of a notifier in a dry run once it is ready (then it is stopped).
async fn notifier_metrics(env: &TestEnv) -> String {
    let addr = format!("127.0.0.1:{}", free_port());
    let mut notifier = env.spawn(
        "notifier",
        "a",
        &[
            ("MAILSTREAM_HTTP_ADDR", addr.as_str()),
            (
                "MAILSTREAM_NOTIFIER_WEBHOOK_URL",
                "http://127.0.0.1:9/hooks/lead",
            ),
            (
                "MAILSTREAM_NOTIFIER_WEBHOOK_SECRET",
                "metrics-test-secret-0123456789",
            ),
            ("MAILSTREAM_NOTIFIER_DRY_RUN", "true"),
        ],
    );
    let started = Instant::now();
    while http_get(&format!("http://{addr}/readyz")).await.0 != 200 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the notifier was not ready within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let text = http_get(&format!("http://{addr}/metrics")).await.1;
    terminate(&mut notifier, Duration::from_secs(20));
    text
}

/// `promtool`, from PATH; fails the test saying how to install it.
fn promtool() -> PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join("promtool"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "promtool is not on PATH: this test checks /metrics with Prometheus's own linter. \
                 Run dev/install (it installs the Debian package `prometheus`, which has promtool)"
            )
        })
}

/// Scrapes `name` until its lag series cover all `partitions` of its input (it is the only
/// member of its group).
async fn scrape_once_assigned(pipeline: &Pipeline, name: &str, partitions: i32) -> String {
    let started = Instant::now();
    loop {
        let text = pipeline.scrape(name).await;
        let assigned = samples(&text)
            .iter()
            .filter(|s| s.name == "mailstream_consumer_lag")
            .count();
        if assigned == partitions as usize {
            return text;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{name}: lag series for {assigned} of {partitions} partitions after 60 s:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The runtime's series of a stream processor, each at zero.
fn assert_stream_series(text: &str, name: &str, input: &str, outputs: &[String], partitions: i32) {
    let p = ("processor", name);
    let zero = |metric_name: &str, labels: &[(&str, &str)]| {
        assert_eq!(
            metric(text, metric_name, labels),
            0.0,
            "{name}: {metric_name} {labels:?}"
        );
    };
    zero("mailstream_records_in_total", &[p, ("topic", input)]);
    for output in outputs {
        zero("mailstream_records_out_total", &[p, ("topic", output)]);
    }
    for class in RUNTIME_DEAD_LETTER_CLASSES {
        zero(
            "mailstream_records_dead_lettered_total",
            &[p, ("topic", input), ("class", class)],
        );
    }
    for outcome in TRANSACTION_OUTCOMES {
        zero("mailstream_transactions_total", &[p, ("outcome", outcome)]);
    }
    zero("mailstream_transient_retries_total", &[p]);
    zero("mailstream_consumers_renewed_total", &[p]);
    zero("mailstream_processing_seconds_count", &[p]);
    zero("mailstream_transaction_commit_seconds_count", &[p]);
    for partition in 0..partitions {
        let partition = partition.to_string();
        let labels = [p, ("topic", input), ("partition", partition.as_str())];
        zero("mailstream_consumer_lag", &labels);
        zero("mailstream_consumer_lag_seconds", &labels);
        zero("mailstream_partition_stalled_seconds", &labels);
    }
}

/// Ingest's series of both channels, each at zero.
fn assert_ingest_series(text: &str) {
    for channel in ["smtp", "http"] {
        let c = [("channel", channel)];
        for name in [
            "mailstream_ingest_accepted_total",
            "mailstream_ingest_bytes_total",
            "mailstream_ingest_blobs_total",
            "mailstream_ingest_durable_write_seconds_count",
            "mailstream_ingest_refused_total",
        ] {
            assert_eq!(metric(text, name, &c), 0.0, "ingest: {name} {c:?}");
        }
        let too_large = [("channel", channel), ("reason", "too-large")];
        assert_eq!(
            metric(text, "mailstream_ingest_refused_total", &too_large),
            0.0
        );
    }
    assert_eq!(metric(text, "mailstream_ingest_inflight_bytes", &[]), 0.0);
}

/// Before any traffic every sample is zero (a histogram's `+Inf` bucket too), but the gauges
/// of [`NOT_ZERO_AT_START`].
fn assert_all_zero(text: &str, name: &str) {
    let all = samples(text);
    let moved: Vec<&Sample> = all
        .iter()
        .filter(|s| {
            let expected = NOT_ZERO_AT_START
                .iter()
                .find(|(n, _)| *n == s.name)
                .map_or(0.0, |(_, v)| *v);
            s.value != expected
        })
        .collect();
    assert!(
        moved.is_empty(),
        "{name}: samples that moved before any traffic: {moved:?}"
    );
}

/// Pipes `text` into `promtool check metrics`, which parses it and lints it (help texts,
/// counter names ending in `_total`, units, ...): any finding fails.
fn promtool_check(promtool: &Path, name: &str, text: &str) {
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .expect("promtool's stdin")
        .write_all(text.as_bytes())
        .expect("write /metrics to promtool");
    let out = child.wait_with_output().expect("promtool finishes");
    assert!(
        out.status.success(),
        "{name}: promtool check metrics failed ({}):\n{}{}\n--- /metrics ---\n{text}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every metric the dashboard queries: names in its panels' PromQL (`expr`) and in its
/// variables' `label_values(metric, label)` queries.
fn dashboard_metrics(path: &Path) -> BTreeSet<String> {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let json: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    let mut variables = Vec::new();
    collect_queries(&json, &mut exprs, &mut variables);
    let mut metrics: BTreeSet<String> = exprs.iter().flat_map(|e| promql_metrics(e)).collect();
    for query in variables {
        if let Some(args) = query
            .trim()
            .strip_prefix("label_values(")
            .and_then(|a| a.strip_suffix(')'))
        {
            // label_values(label) names no metric; label_values(metric, label) does.
            if let Some((selector, _)) = args.rsplit_once(',') {
                metrics.extend(promql_metrics(selector));
            }
        }
    }
    metrics.iter().map(|m| base_name(m)).collect()
}

/// A histogram's series (`_bucket`, `_sum`, `_count`) by the histogram's name.
fn base_name(name: &str) -> String {
    ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|suffix| name.strip_suffix(suffix))
        .unwrap_or(name)
        .to_string()
}

fn collect_queries(node: &serde_json::Value, exprs: &mut Vec<String>, vars: &mut Vec<String>) {
    match node {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr", serde_json::Value::String(s)) => exprs.push(s.clone()),
                    ("definition", serde_json::Value::String(s)) => vars.push(s.clone()),
                    _ => collect_queries(value, exprs, vars),
                }
            }
        }
        serde_json::Value::Array(items) => {
            for item in items {
                collect_queries(item, exprs, vars);
            }
        }
        _ => {}
    }
}

/// Keywords that may be followed by a parenthesised list of label names.
const LABEL_LISTS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// Other PromQL keywords that are not metric names (aggregations are followed by `(` or `by`).
const KEYWORDS: &[&str] = &[
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "sum",
    "min",
    "max",
    "avg",
    "count",
    "group",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "quantile",
    "count_values",
    "inf",
    "nan",
];

/// The metric names in a PromQL expression: identifiers that are not functions (followed by
/// `(`), keywords, label names (inside `{}` or the `(...)` of [`LABEL_LISTS`]), strings,
/// numbers or ranges (`[...]`).
fn promql_metrics(expr: &str) -> Vec<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' | '`' => i = skip_string(&chars, i),
            '{' => i = skip_to(&chars, i, '}'),
            '[' => i = skip_to(&chars, i, ']'),
            c if c.is_ascii_digit() || c == '.' => {
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let lower = word.to_ascii_lowercase();
                let next = (i..chars.len()).find(|&j| !chars[j].is_whitespace());
                let call = next.is_some_and(|j| chars[j] == '(');
                if LABEL_LISTS.contains(&lower.as_str()) {
                    // by (le, processor): label names, not metrics.
                    if let Some(j) = next.filter(|_| call) {
                        i = skip_to(&chars, j, ')');
                    }
                } else if !call && !KEYWORDS.contains(&lower.as_str()) {
                    names.push(word);
                }
            }
            _ => i += 1,
        }
    }
    names
}

/// The index after the string literal starting at `start`.
fn skip_string(chars: &[char], start: usize) -> usize {
    let quote = chars[start];
    let mut i = start + 1;
    while i < chars.len() && chars[i] != quote {
        if chars[i] == '\\' {
            i += 1;
        }
        i += 1;
    }
    i + 1
}

/// The index after the `close` matching the bracket at `start` (strings inside skipped).
fn skip_to(chars: &[char], start: usize, close: char) -> usize {
    let open = chars[start];
    let mut depth = 0;
    let mut i = start;
    while i < chars.len() {
        match chars[i] {
            '"' | '\'' | '`' => {
                i = skip_string(chars, i);
                continue;
            }
            c if c == open => depth += 1,
            c if c == close => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    i
}

#[test]
fn promql_metric_names_leave_out_functions_labels_and_keywords() {
    let expr = r#"histogram_quantile(0.95, sum by (le, processor) (rate(mailstream_processing_seconds_bucket{namespace=~"$namespace",x="a}b"}[$__rate_interval]))) / on (processor) group_left sum(increase(other_total[5m] offset 1h)) > bool 1e3"#;
    assert_eq!(
        promql_metrics(expr),
        ["mailstream_processing_seconds_bucket", "other_total"]
    );
    assert_eq!(
        promql_metrics("max by (processor, topic, partition) (mailstream_consumer_lag)"),
        ["mailstream_consumer_lag"]
    );
}
