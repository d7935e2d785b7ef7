//! Parser throughput, in one run, on the same messages (the parser's fixture corpus, or the
//! `.eml`/mbox files given), reported as emails/s, MB/s and ratios:
//!
//! 1. **full**: `parse_message` (MIME, normalization, reply stripping, signals, attachment
//!    hashing and sniffing) plus Avro encoding of the record against `parsed.avsc` — what the
//!    processor spends per record besides Kafka;
//!    (also measured without the Avro encoding, to show its share);
//! 2. **mail-parser**: `MessageParser::parse` alone, plus reading the bodies and attachments
//!    (the floor this crate builds on);
//! 3. **python email**: Python's standard `email` package (`policy.default`) parsing the same
//!    bytes, reading the plain/HTML body and walking the attachments (`python3`, same machine).
//!
//! Build it in release: `cargo run --release -p mailstream-bench --bin bench-parser`.

use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use apache_avro::Schema;
use clap::Parser;
use mail_parser::MessageParser;
use mailstream_parser::{ParseContext, mbox, parse_message};
use mailstream_runtime::AvroRecord;
use serde::Serialize;

#[derive(Parser)]
struct Args {
    /// Files to parse (.eml or mbox); default: the parser's fixture corpus.
    files: Vec<PathBuf>,
    /// Seconds to run each contender.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Write the results as JSON here too.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
struct Rate {
    name: String,
    emails: u64,
    seconds: f64,
    emails_per_s: f64,
    mb_per_s: f64,
}

fn rate(name: &str, emails: u64, bytes: u64, elapsed: Duration) -> Rate {
    let seconds = elapsed.as_secs_f64();
    Rate {
        name: name.into(),
        emails,
        seconds,
        emails_per_s: emails as f64 / seconds,
        mb_per_s: bytes as f64 / seconds / 1e6,
    }
}

/// Runs `f` over the corpus round-robin until `seconds` have passed.
fn measure(name: &str, corpus: &[Vec<u8>], seconds: f64, mut f: impl FnMut(&[u8])) -> Rate {
    let budget = Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let (mut emails, mut bytes) = (0u64, 0u64);
    while started.elapsed() < budget {
        for message in corpus {
            f(message);
            emails += 1;
            bytes += message.len() as u64;
        }
    }
    rate(name, emails, bytes, started.elapsed())
}

const PYTHON: &str = r#"
import email, email.policy, sys, time, json, os
paths = sys.argv[2:]
corpus = [open(p, 'rb').read() for p in paths]
budget = float(sys.argv[1])
emails = 0; size = 0
start = time.perf_counter()
while time.perf_counter() - start < budget:
    for data in corpus:
        msg = email.message_from_bytes(data, policy=email.policy.default)
        body = msg.get_body(preferencelist=('plain', 'html'))
        if body is not None:
            try: body.get_content()
            except Exception: pass
        for part in msg.iter_attachments():
            try: part.get_content()
            except Exception: pass
        for k, v in msg.items(): str(v)
        emails += 1; size += len(data)
elapsed = time.perf_counter() - start
print(json.dumps({"emails": emails, "seconds": elapsed, "bytes": size}))
"#;

fn python(corpus: &[Vec<u8>], seconds: f64) -> anyhow::Result<Rate> {
    let dir = std::env::temp_dir().join(format!("bench-parser-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut paths = Vec::new();
    for (i, message) in corpus.iter().enumerate() {
        let path = dir.join(format!("{i}.eml"));
        std::fs::File::create(&path)?.write_all(message)?;
        paths.push(path);
    }
    let out = Command::new("python3")
        .arg("-c")
        .arg(PYTHON)
        .arg(seconds.to_string())
        .args(&paths)
        .output()
        .context("running python3")?;
    let _ = std::fs::remove_dir_all(&dir);
    if !out.status.success() {
        bail!("python3 failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let emails = v["emails"].as_u64().unwrap_or_default();
    let bytes = v["bytes"].as_u64().unwrap_or_default();
    let secs = v["seconds"].as_f64().unwrap_or(1.0);
    Ok(rate(
        "python email",
        emails,
        bytes,
        Duration::from_secs_f64(secs),
    ))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let files = if args.files.is_empty() {
        let dir =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../services/parser/tests/fixtures");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "eml" || e == "mbox"))
            .collect();
        files.sort();
        files
    } else {
        args.files.clone()
    };
    let mut corpus = Vec::new();
    for file in &files {
        let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        if mbox::looks_like_mbox(&bytes) {
            corpus.extend(mbox::split(&bytes));
        } else {
            corpus.push(bytes);
        }
    }
    if corpus.is_empty() {
        bail!("no messages to parse");
    }
    let total: usize = corpus.iter().map(Vec::len).sum();
    println!(
        "corpus: {} messages, {} bytes (mean {} bytes)",
        corpus.len(),
        total,
        total / corpus.len()
    );

    let schema = Schema::parse_str(
        mailstream_runtime::catalog::schema("parsed.avsc").context("parsed.avsc in the build")?,
    )?;
    let ctx = ParseContext {
        ingest_id: "bench".into(),
        received_at: 0,
        ..ParseContext::default()
    };
    let writer = apache_avro::writer::datum::GenericDatumWriter::builder(&schema)
        .build()
        .context("Avro writer")?;
    let mut encoded = 0usize;
    let full = measure(
        "full (parse + normalize + Avro)",
        &corpus,
        args.seconds,
        |raw| {
            if let Ok(record) = parse_message(raw, &ctx)
                && let Ok(value) = record.into_avro()
                && let Ok(value) = value.resolve(&schema)
                && let Ok(bytes) = writer.write_value_to_vec(value)
            {
                encoded += bytes.len();
            }
        },
    );
    let mut kept = 0usize;
    let normalize_only = measure("parse_message (no Avro)", &corpus, args.seconds, |raw| {
        if let Ok(record) = parse_message(raw, &ctx) {
            kept += record.headers.len();
        }
    });
    let parser = MessageParser::default();
    let mut seen = 0usize;
    let alone = measure("mail-parser alone", &corpus, args.seconds, |raw| {
        if let Some(message) = parser.parse(raw) {
            seen += message.body_text(0).map_or(0, |t| t.len());
            seen += message.body_html(0).map_or(0, |t| t.len());
            seen += message.attachments().map(|a| a.len()).sum::<usize>();
        }
    });
    let py = python(&corpus, args.seconds)?;
    std::hint::black_box((encoded, seen, kept));

    let rates = [full, normalize_only, alone, py];
    println!(
        "{:<34} {:>12} {:>10} {:>10}",
        "contender", "emails/s", "MB/s", "emails"
    );
    for r in &rates {
        println!(
            "{:<34} {:>12.0} {:>10.2} {:>10}",
            r.name, r.emails_per_s, r.mb_per_s, r.emails
        );
    }
    let ratio_mp = rates[0].emails_per_s / rates[2].emails_per_s;
    let ratio_py = rates[0].emails_per_s / rates[3].emails_per_s;
    let avro_share = 1.0 - rates[0].emails_per_s / rates[1].emails_per_s;
    println!("full / mail-parser alone: {ratio_mp:.2}x");
    println!("full / python email:      {ratio_py:.2}x");
    println!(
        "Avro encoding share of the full step: {:.0}%",
        avro_share * 100.0
    );
    if let Some(path) = args.json {
        let report = serde_json::json!({
            "corpus_messages": corpus.len(),
            "corpus_bytes": total,
            "rates": rates,
            "ratio_full_to_mail_parser": ratio_mp,
            "ratio_full_to_python": ratio_py,
        });
        std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
    }
    Ok(())
}
