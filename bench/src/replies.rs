//! Reply-stripping accuracy on the public reply-parser fixtures (Crisp's, GitHub's and
//! Zapier's email-reply-parser projects), read in place from
//! `../shared/corpora/reply-parsers/` (never copied into the repository).
//!
//! Each fixture is a plain-text body; `bench/replies/expected.txt` names, per fixture, the lines
//! that are its visible text (what the sender wrote in this message: no quote, no signature),
//! written for this project from the facts of each project's own tests. A fixture counts as
//! right when the parser's `stripped` text equals that text after both are normalized (line
//! ends trimmed, blank lines dropped). Reports the share per corpus
//! and the `reply_stripping` statuses the parser gave.
//!
//! `cargo run --release -p mailstream-bench --bin bench-replies [-- --misses]`

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Parser;
use mailstream_parser::bodies::normalize_newlines;
use mailstream_parser::reply;

#[derive(Parser)]
struct Args {
    /// The `reply-parsers` folder.
    #[arg(long)]
    corpora: Option<PathBuf>,
    /// The expectations file.
    #[arg(long)]
    expected: Option<PathBuf>,
    /// Print every fixture where the stripped text differs from the expectation.
    #[arg(long)]
    misses: bool,
}

/// Where each corpus keeps its fixtures, under the `reply-parsers` folder.
const CORPORA: &[(&str, &str)] = &[
    ("crisp", "crisp/test/fixtures"),
    ("github", "github/test/emails"),
    ("zapier", "zapier/test/emails"),
];

/// One expectation: a corpus, a fixture file and the line ranges of its visible text.
struct Expectation {
    corpus: String,
    file: String,
    ranges: Vec<(usize, Option<usize>)>,
}

fn parse_expectations(text: &str) -> anyhow::Result<Vec<Expectation>> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace();
        let (Some(name), Some(lines)) = (fields.next(), fields.next()) else {
            bail!("line {}: expected `<corpus>/<file> <lines>`", n + 1);
        };
        let Some((corpus, file)) = name.split_once('/') else {
            bail!("line {}: no corpus in {name}", n + 1);
        };
        let mut ranges = Vec::new();
        for range in lines.split(',') {
            let (a, b) = range.split_once('-').unwrap_or((range, range));
            let start: usize = a.parse().with_context(|| format!("line {}", n + 1))?;
            let end = if b == "$" {
                None
            } else {
                Some(b.parse().with_context(|| format!("line {}", n + 1))?)
            };
            ranges.push((start, end));
        }
        out.push(Expectation {
            corpus: corpus.to_string(),
            file: file.to_string(),
            ranges,
        });
    }
    Ok(out)
}

/// Line ends trimmed, blank lines dropped: a paragraph break more or less (where a quote was
/// taken out of the middle) is no error.
fn normalize(text: &str) -> String {
    text.lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

fn visible(body: &str, ranges: &[(usize, Option<usize>)]) -> String {
    let lines: Vec<&str> = body.lines().collect();
    let mut kept: Vec<&str> = Vec::new();
    for &(start, end) in ranges {
        let end = end.unwrap_or(lines.len()).min(lines.len());
        kept.extend(lines.iter().take(end).skip(start.saturating_sub(1)));
    }
    normalize(&kept.join("\n"))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let corpora = args
        .corpora
        .unwrap_or_else(|| root.join("../shared/corpora/reply-parsers"));
    let expected_path = args
        .expected
        .unwrap_or_else(|| root.join("bench/replies/expected.txt"));
    let expectations = parse_expectations(
        &std::fs::read_to_string(&expected_path)
            .with_context(|| format!("reading {}", expected_path.display()))?,
    )?;
    // corpus -> (fixtures, right, statuses)
    let mut totals: BTreeMap<&str, (usize, usize, BTreeMap<&'static str, usize>)> = BTreeMap::new();
    for e in &expectations {
        let Some(&(corpus, dir)) = CORPORA.iter().find(|(c, _)| *c == e.corpus) else {
            bail!("unknown corpus {}", e.corpus);
        };
        let path = corpora.join(dir).join(&e.file);
        let raw = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let body = normalize_newlines(&String::from_utf8_lossy(&raw));
        let want = visible(&body, &e.ranges);
        let split = reply::split(&body);
        let got = normalize(&split.stripped);
        let entry = totals.entry(corpus).or_default();
        entry.0 += 1;
        *entry.2.entry(split.status.as_str()).or_default() += 1;
        if got == want {
            entry.1 += 1;
        } else if args.misses {
            println!(
                "MISS {corpus}/{} ({})\n--- expected\n{want}\n--- stripped\n{got}\n",
                e.file,
                split.status.as_str()
            );
        }
    }
    println!("| corpus | fixtures | stripped text = expected | share | statuses |");
    println!("|---|---|---|---|---|");
    let (mut all, mut right) = (0, 0);
    for (corpus, (n, ok, statuses)) in &totals {
        all += n;
        right += ok;
        let statuses: Vec<String> = statuses.iter().map(|(s, c)| format!("{s} {c}")).collect();
        println!(
            "| {corpus} | {n} | {ok} | {:.1} % | {} |",
            100.0 * *ok as f64 / (*n).max(1) as f64,
            statuses.join(", ")
        );
    }
    println!(
        "| all | {all} | {right} | {:.1} % | |",
        100.0 * right as f64 / all.max(1) as f64
    );
    Ok(())
}
