//! Bounce and auto-reply accuracy on the Sisimai set of emails, against Sisimai itself.
//!
//! Runs `parse_message` over `maildir/bsd/` (629 bounces, feedback reports and auto-replies
//! from many MTAs and providers) and `maildir/not/` (not bounces) of
//! `../shared/corpora/sisimai-set-of-emails` (read in place, never copied), and asks Sisimai
//! (Debian's `libsisimai-perl`, through `bench/sisimai/reference.pl`) for its answers on the same
//! files at bench time. Reports, per capability:
//!
//! - **detection**: files of `bsd/` the parser calls a delivery report (or, for Sisimai's
//!   `vacation` files, an auto-reply), of those Sisimai recognises and of the rest;
//! - **false positives**: files of `not/` called a delivery report;
//! - **recipients**: files whose recipient set equals Sisimai's, and recipient recall/precision;
//! - **class**: per recipient both name, the class against Sisimai's (`hard` = softbounce 0,
//!   `soft` = 1, `delayed` = action delayed, `complaint` = feedback, `delivered`); and the reason
//!   against Sisimai's, mapped to the parser's vocabulary.
//!
//! `cargo run --release -p mailstream-bench --bin bench-bounces [-- --misses]`

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use clap::Parser;
use mailstream_parser::{ParseContext, parse_message};
use mailstream_runtime::records::ParsedEmail;
use serde::Deserialize;

#[derive(Parser)]
struct Args {
    /// The set of emails' `maildir` folder.
    #[arg(long)]
    maildir: Option<PathBuf>,
    /// Sisimai's answers as JSON lines (default: run `bench/sisimai/reference.pl` now).
    #[arg(long)]
    reference: Option<PathBuf>,
    /// List every file where the parser and Sisimai disagree.
    #[arg(long)]
    misses: bool,
}

/// One of Sisimai's records.
#[derive(Debug, Clone, Deserialize)]
struct SisimaiRecord {
    recipient: String,
    reason: String,
    softbounce: i64,
    action: String,
    #[serde(default)]
    feedbacktype: String,
}

#[derive(Debug, Deserialize)]
struct SisimaiFile {
    file: String,
    records: Vec<SisimaiRecord>,
}

/// Sisimai's class of one record, in the parser's terms.
fn sisimai_class(r: &SisimaiRecord) -> &'static str {
    match (r.reason.as_str(), r.action.as_str()) {
        ("vacation", _) => "auto-reply",
        ("feedback", _) => "complaint",
        ("delivered", _) => "delivered",
        (_, "delayed") => "delayed",
        ("undefined", _) => "undetermined",
        _ if r.softbounce == 0 => "hard",
        _ => "soft",
    }
}

/// Sisimai's reasons in the parser's vocabulary (`bounce::classify`).
fn sisimai_reason(reason: &str) -> &str {
    match reason {
        "userunknown" => "user-unknown",
        "hostunknown" => "host-unknown",
        "mailboxfull" => "mailbox-full",
        "notaccept" => "not-accepting",
        "hasmoved" => "moved",
        "suspend" => "suspended",
        "mesgtoobig" | "exceedlimit" => "too-big",
        "norelaying" => "relaying-denied",
        "spamdetected" => "spam",
        "virusdetected" => "virus",
        "securityerror" => "security",
        "policyviolation" => "policy",
        "toomanyconn" => "rate-limited",
        "networkerror" => "network",
        "systemerror" | "systemfull" | "mailererror" => "system",
        "contenterror" | "syntaxerror" => "content",
        other => other,
    }
}

#[derive(Default)]
struct Tally {
    bsd_files: usize,
    sisimai_known: usize,
    detected_known: usize,
    sisimai_unknown: usize,
    detected_unknown: usize,
    vacation_files: usize,
    vacation_detected: usize,
    not_files: usize,
    false_positives: usize,
    compared_files: usize,
    recipients_exact: usize,
    sisimai_recipients: usize,
    found_recipients: usize,
    ours_recipients: usize,
    class_compared: usize,
    class_agree: usize,
    reason_agree: usize,
    confusion: BTreeMap<(String, String), usize>,
    by_family: BTreeMap<String, (usize, usize, usize)>, // files, detected, recipients exact
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let maildir = args
        .maildir
        .unwrap_or_else(|| root.join("../shared/corpora/sisimai-set-of-emails/maildir"));
    let list = |dir: &str| -> anyhow::Result<Vec<PathBuf>> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(maildir.join(dir))
            .with_context(|| format!("reading {}", maildir.join(dir).display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "eml"))
            .collect();
        files.sort();
        Ok(files)
    };
    let bsd = list("bsd")?;
    let not = list("not")?;
    let reference = match &args.reference {
        Some(path) => std::fs::read_to_string(path)?,
        None => run_sisimai(&root.join("bench/sisimai/reference.pl"), &bsd)?,
    };
    let mut sisimai: BTreeMap<String, Vec<SisimaiRecord>> = BTreeMap::new();
    for line in reference.lines().filter(|l| !l.trim().is_empty()) {
        let file: SisimaiFile = serde_json::from_str(line).context("a Sisimai answer")?;
        sisimai.insert(file.file, file.records);
    }

    let ctx = ParseContext::default();
    let mut t = Tally::default();
    let mut misses = Vec::new();
    for path in &bsd {
        let name = file_name(path);
        let family = family(&name);
        let raw = std::fs::read(path)?;
        let parsed = parse_message(&raw, &ctx).ok();
        let theirs = sisimai.get(&name).cloned().unwrap_or_default();
        t.bsd_files += 1;
        let entry = t.by_family.entry(family).or_default();
        entry.0 += 1;
        let vacation = theirs.iter().any(|r| r.reason == "vacation");
        let bounce = parsed.as_ref().and_then(|p| p.bounce.as_ref());
        if vacation {
            t.vacation_files += 1;
            let auto = parsed.as_ref().is_some_and(|p| p.auto_reply.is_some());
            if auto {
                t.vacation_detected += 1;
                entry.1 += 1;
            } else {
                misses.push(format!("{name}: auto-reply not detected"));
            }
            continue;
        }
        if theirs.is_empty() {
            t.sisimai_unknown += 1;
            if bounce.is_some() {
                t.detected_unknown += 1;
                entry.1 += 1;
            }
            if args.misses {
                misses.push(format!(
                    "{name}: Sisimai: nothing; parser: {}",
                    describe(parsed.as_ref())
                ));
            }
            continue;
        }
        t.sisimai_known += 1;
        let Some(bounce) = bounce else {
            misses.push(format!("{name}: not detected ({})", summary(&theirs)));
            continue;
        };
        t.detected_known += 1;
        entry.1 += 1;
        t.compared_files += 1;
        let expected: BTreeSet<String> = theirs
            .iter()
            .map(|r| r.recipient.to_ascii_lowercase())
            .filter(|r| !r.ends_with(".invalid"))
            .collect();
        let ours: BTreeSet<String> = bounce
            .recipients
            .iter()
            .map(|r| r.address.to_ascii_lowercase())
            .collect();
        t.sisimai_recipients += expected.len();
        t.ours_recipients += ours.len();
        t.found_recipients += expected.intersection(&ours).count();
        let exact = expected == ours;
        if exact {
            t.recipients_exact += 1;
            entry.2 += 1;
        }
        let mut disagreements = Vec::new();
        for r in &theirs {
            let Some(mine) = bounce
                .recipients
                .iter()
                .find(|m| m.address.eq_ignore_ascii_case(&r.recipient))
            else {
                continue;
            };
            t.class_compared += 1;
            let theirs_class = sisimai_class(r);
            *t.confusion
                .entry((theirs_class.to_string(), mine.class.clone()))
                .or_default() += 1;
            if theirs_class == mine.class {
                t.class_agree += 1;
            } else {
                disagreements.push(format!("class {} vs Sisimai {theirs_class}", mine.class));
            }
            let their_reason = if r.reason == "feedback" {
                r.feedbacktype.as_str()
            } else {
                sisimai_reason(&r.reason)
            };
            if mine.reason.as_deref() == Some(their_reason) {
                t.reason_agree += 1;
            } else {
                disagreements.push(format!(
                    "reason {} vs Sisimai {their_reason}",
                    mine.reason.as_deref().unwrap_or("-")
                ));
            }
        }
        if !exact {
            misses.push(format!(
                "{name}: recipients {:?} vs Sisimai {:?}",
                ours, expected
            ));
        } else if args.misses && !disagreements.is_empty() {
            misses.push(format!("{name}: {}", disagreements.join("; ")));
        }
    }
    for path in &not {
        t.not_files += 1;
        let raw = std::fs::read(path)?;
        let parsed = parse_message(&raw, &ctx).ok();
        if parsed.as_ref().is_some_and(|p| p.bounce.is_some()) {
            t.false_positives += 1;
            misses.push(format!(
                "not/{}: false positive: {}",
                file_name(path),
                describe(parsed.as_ref())
            ));
        }
    }
    report(&t);
    if args.misses || !misses.is_empty() {
        println!("\n## Disagreements ({})\n", misses.len());
        for miss in &misses {
            println!("- {miss}");
        }
    }
    Ok(())
}

fn run_sisimai(script: &Path, files: &[PathBuf]) -> anyhow::Result<String> {
    let output = Command::new("perl")
        .arg(script)
        .args(files)
        .output()
        .context("running perl (apt-get install -y libsisimai-perl)")?;
    if !output.status.success() {
        bail!(
            "Sisimai failed (apt-get install -y libsisimai-perl): {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8(output.stdout)?)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// `lhost-postfix-12.eml` → `lhost-postfix`.
fn family(name: &str) -> String {
    let stem = name.trim_end_matches(".eml");
    stem.rsplit_once('-')
        .map_or(stem, |(family, _)| family)
        .to_string()
}

fn summary(records: &[SisimaiRecord]) -> String {
    records
        .iter()
        .map(|r| format!("{} {}", r.recipient, r.reason))
        .collect::<Vec<_>>()
        .join(", ")
}

fn describe(parsed: Option<&ParsedEmail>) -> String {
    match parsed.and_then(|p| p.bounce.as_ref()) {
        Some(b) => format!(
            "{} {:?} ({})",
            b.class,
            b.recipients.iter().map(|r| &r.address).collect::<Vec<_>>(),
            b.evidence
        ),
        None => "no bounce".into(),
    }
}

fn pct(n: usize, d: usize) -> String {
    if d == 0 {
        "–".into()
    } else {
        format!("{:.1} %", 100.0 * n as f64 / d as f64)
    }
}

fn report(t: &Tally) {
    println!("# Bounces and auto-replies against Sisimai\n");
    println!("| capability | result |\n|---|---|");
    println!(
        "| detection: delivery reports Sisimai recognises in bsd/ | {} / {} ({}) |",
        t.detected_known,
        t.sisimai_known,
        pct(t.detected_known, t.sisimai_known)
    );
    println!(
        "| detection: bsd/ files Sisimai 4.25 does not recognise | {} / {} |",
        t.detected_unknown, t.sisimai_unknown
    );
    println!(
        "| detection: auto-replies (Sisimai `vacation`) | {} / {} |",
        t.vacation_detected, t.vacation_files
    );
    println!(
        "| false positives in not/ | {} / {} |",
        t.false_positives, t.not_files
    );
    println!(
        "| recipients: files with exactly Sisimai's set | {} / {} ({}) |",
        t.recipients_exact,
        t.compared_files,
        pct(t.recipients_exact, t.compared_files)
    );
    println!(
        "| recipients: recall / precision | {} / {} |",
        pct(t.found_recipients, t.sisimai_recipients),
        pct(t.found_recipients, t.ours_recipients)
    );
    println!(
        "| class agrees with Sisimai (per recipient) | {} / {} ({}) |",
        t.class_agree,
        t.class_compared,
        pct(t.class_agree, t.class_compared)
    );
    println!(
        "| reason agrees with Sisimai (per recipient) | {} / {} ({}) |",
        t.reason_agree,
        t.class_compared,
        pct(t.reason_agree, t.class_compared)
    );
    println!("\n## Class: Sisimai (rows) against the parser (columns)\n");
    let classes = [
        "hard",
        "soft",
        "undetermined",
        "delayed",
        "complaint",
        "delivered",
        "challenge",
    ];
    println!("| Sisimai \\ parser | {} |", classes.join(" | "));
    println!("|---|{}", "---|".repeat(classes.len()));
    for row in classes {
        let cells: Vec<String> = classes
            .iter()
            .map(|col| {
                t.confusion
                    .get(&(row.to_string(), col.to_string()))
                    .copied()
                    .unwrap_or(0)
                    .to_string()
            })
            .collect();
        if cells.iter().any(|c| c != "0") {
            println!("| {row} | {} |", cells.join(" | "));
        }
    }
    println!("\n## Per family (files, detected, recipients exact)\n");
    let line: Vec<String> = t
        .by_family
        .iter()
        .map(|(f, (n, d, e))| format!("{f} {d}/{n} {e}"))
        .collect();
    println!("{}", line.join(" · "));
}
