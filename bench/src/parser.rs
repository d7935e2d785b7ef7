//! Parser throughput, in one run, on the same messages (a generated corpus, the parser's
//! fixtures, or the `.eml`/mbox files given), reported as emails/s, MB/s and ratios:
//!
//! The corpus is, by default, a realistic generated mix of business mail (`--corpus realistic`);
//! `--corpus fixtures` runs the parser's small edge-case fixtures instead.
//!
//! 1. **full**: `parse_message` (MIME, normalization, reply stripping, signals, attachment
//!    hashing and sniffing) plus Avro encoding of the record against `parsed.avsc` the way the
//!    runtime encodes it — what the processor spends per record besides Kafka;
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
use clap::Parser;
use mail_parser::MessageParser;
use mailstream_parser::{ParseContext, parse_message};
use mailstream_runtime::AvroRecord;
use mailstream_runtime::mbox;
use mailstream_tests::corpus::{CorpusOptions, Generator, Templates};
use serde::Serialize;

#[derive(Parser)]
struct Args {
    /// Files to parse (.eml or mbox); default: the corpus chosen with `--corpus`.
    files: Vec<PathBuf>,
    /// `realistic`: a generated mix of business mail (inquiries, HTML mail, threaded replies,
    /// attachments up to 2 MB, auto-replies, bounces, newsletters, spam; the generator the
    /// pipeline and chaos benchmarks send); `fixtures`: the parser's test fixtures (small edge
    /// cases: encodings, DSNs, malformed input).
    #[arg(long, default_value = "realistic")]
    corpus: CorpusChoice,
    /// Messages in the realistic corpus.
    #[arg(long, default_value_t = 400)]
    messages: usize,
    /// Seconds to run each contender.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Write the results as JSON here too.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Run only the normalization step (no Avro, no other contender): for profiling.
    #[arg(long)]
    profile: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum CorpusChoice {
    Realistic,
    Fixtures,
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

/// A contender: a name and what it does with one message.
type Contender<'a> = (&'a str, &'a mut dyn FnMut(&[u8]));

/// Runs the contenders in turns, one pass over the corpus each per turn, until each has run
/// about `seconds`: interleaving keeps a drift of the machine's speed (frequency, another
/// process) from favouring whichever contender ran first.
fn measure(corpus: &[Vec<u8>], seconds: f64, contenders: &mut [Contender<'_>]) -> Vec<Rate> {
    let corpus_bytes: u64 = corpus.iter().map(|m| m.len() as u64).sum();
    let mut spent = vec![Duration::ZERO; contenders.len()];
    let mut passes = vec![0u64; contenders.len()];
    let budget = Duration::from_secs_f64(seconds);
    while spent.iter().any(|s| *s < budget) {
        for (i, (_, f)) in contenders.iter_mut().enumerate() {
            let started = Instant::now();
            for message in corpus {
                f(message);
            }
            spent[i] += started.elapsed();
            passes[i] += 1;
        }
    }
    contenders
        .iter()
        .zip(spent.iter().zip(&passes))
        .map(|((name, _), (spent, passes))| {
            rate(
                name,
                passes * corpus.len() as u64,
                passes * corpus_bytes,
                *spent,
            )
        })
        .collect()
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

fn read_files(files: &[PathBuf]) -> anyhow::Result<Vec<Vec<u8>>> {
    let mut corpus = Vec::new();
    for file in files {
        let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        if mbox::looks_like_mbox(&bytes) {
            let messages =
                mbox::split(&bytes).with_context(|| format!("splitting {}", file.display()))?;
            corpus.extend(messages.into_iter().map(|m| m.bytes));
        } else {
            corpus.push(bytes);
        }
    }
    Ok(corpus)
}

/// `messages` deliveries from the benchmark corpus generator (fixed seed: the same bytes on
/// every run), without its poison and re-deliveries.
fn realistic(messages: usize) -> Vec<Vec<u8>> {
    let templates = Templates::generate(CorpusOptions {
        templates: messages,
        duplicate_rate: 0.0,
        ..CorpusOptions::default()
    });
    let mut generator = Generator::new(templates, "bench-parser", 0);
    (0..messages)
        .map(|_| generator.next_email().data.as_ref().clone())
        .collect()
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let corpus = if !args.files.is_empty() {
        read_files(&args.files)?
    } else if args.corpus == CorpusChoice::Fixtures {
        let dir =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../services/parser/tests/fixtures");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "eml" || e == "mbox"))
            .collect();
        files.sort();
        read_files(&files)?
    } else {
        realistic(args.messages)
    };
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

    let writer = mailstream_runtime::catalog::writer("parsed.avsc").map_err(anyhow::Error::msg)?;
    let ctx = ParseContext {
        ingest_id: "bench".into(),
        received_at: 0,
        ..ParseContext::default()
    };
    if args.profile {
        let mut only = |raw: &[u8]| {
            std::hint::black_box(parse_message(raw, &ctx).ok());
        };
        let rates = measure(&corpus, args.seconds, &mut [("parse_message", &mut only)]);
        println!("{:.0} emails/s", rates[0].emails_per_s);
        return Ok(());
    }
    let mut encoded = 0usize;
    let mut buffer = Vec::new();
    let mut full = |raw: &[u8]| {
        buffer.clear();
        if let Ok(record) = parse_message(raw, &ctx)
            && record.write_avro(writer, &mut buffer).is_ok()
        {
            encoded += buffer.len();
        }
    };
    let mut kept = 0usize;
    let mut normalize_only = |raw: &[u8]| {
        if let Ok(record) = parse_message(raw, &ctx) {
            kept += record.headers.len();
        }
    };
    let parser = MessageParser::default();
    let mut seen = 0usize;
    let mut alone = |raw: &[u8]| {
        if let Some(message) = parser.parse(raw) {
            seen += message.body_text(0).map_or(0, |t| t.len());
            seen += message.body_html(0).map_or(0, |t| t.len());
            seen += message.attachments().map(|a| a.len()).sum::<usize>();
        }
    };
    let mut rates = measure(
        &corpus,
        args.seconds,
        &mut [
            ("full (parse + normalize + Avro)", &mut full),
            ("parse_message (no Avro)", &mut normalize_only),
            ("mail-parser alone", &mut alone),
        ],
    );
    rates.push(python(&corpus, args.seconds)?);
    std::hint::black_box((encoded, seen, kept));

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
