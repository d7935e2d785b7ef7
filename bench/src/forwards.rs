//! Forward and form-notification detection on the public corpora beside the project, read in
//! place from `../shared/corpora/` (never copied into the repository).
//!
//! No public corpus of forwarded mail or form notifications with expected answers is there, so
//! this measures what the corpora can say, against expectations written here:
//!
//! - **sisimai set-of-emails** (`maildir/bsd`, 629 bounces and feedback reports; `maildir/not`):
//!   every message through the whole parser. A bounce is never a forward nor a form lead; of
//!   the non-bounces, `is-not-bounce-02.eml` attaches the original message it talks about
//!   (message/rfc822) and is a forward of `dummy@example.com`'s message.
//! - **reply-parser fixtures** (Crisp's, GitHub's and Zapier's; plain-text bodies): each body
//!   as a person's email with a neutral subject, and again as a robot's (`noreply@`) notification.
//!   Quoted history is not a forward unless a forward banner says so: only Crisp's
//!   `email_tricky_17_forward_header.txt` is one (of `john@example.com`); no reply, from a
//!   robot or not, is a form lead.
//!
//! With `--cost`, it also says what the detection costs: on the realistic generated corpus of
//! `bench-parser`, the time of `forward::detect` and `form::detect` against that of the whole
//! `parse_message` (which runs them), measured in the same loop, message by message, so a busy
//! machine slows both alike.
//!
//! `cargo run --release -p mailstream-bench --bin bench-forwards [-- --corpora DIR] [--cost]`

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Parser;
use mailstream_parser::{ParseContext, Redactor, form, forward, parse_message};
use mailstream_runtime::records::ParsedEmail;

#[derive(Parser)]
struct Args {
    /// The `corpora` folder (default: `../shared/corpora` beside the repository).
    #[arg(long)]
    corpora: Option<PathBuf>,
    /// Also measure the detection's share of `parse_message` on the realistic corpus.
    #[arg(long)]
    cost: bool,
}

/// Messages that forward one, by corpus and file: the original sender expected.
const FORWARDS: &[(&str, &str)] = &[
    ("sisimai/not/is-not-bounce-02.eml", "dummy@example.com"),
    (
        "crisp/email_tricky_17_forward_header.txt",
        "john@example.com",
    ),
];

/// The reply-parser fixture folders, under `reply-parsers`.
const REPLIES: &[(&str, &str)] = &[
    ("crisp", "crisp/test/fixtures"),
    ("github", "github/test/emails"),
    ("zapier", "zapier/test/emails"),
];

#[derive(Default)]
struct Tally {
    messages: usize,
    forwards_right: usize,
    forwards_expected: usize,
    false_forwards: Vec<String>,
    false_forms: Vec<String>,
    wrong_sender: Vec<String>,
}

impl Tally {
    fn check(&mut self, name: &str, record: &ParsedEmail, forms_allowed: bool) {
        self.messages += 1;
        let expected = FORWARDS.iter().find(|(n, _)| *n == name).map(|(_, e)| *e);
        let found = record
            .forwarded
            .as_ref()
            .map(|f| f.from.as_ref().map(|a| a.email.clone()).unwrap_or_default());
        match (expected, found) {
            (Some(want), Some(got)) if got == want => self.forwards_right += 1,
            (Some(want), got) => self
                .wrong_sender
                .push(format!("{name}: {got:?}, not {want}")),
            (None, Some(got)) => self.false_forwards.push(format!("{name}: {got}")),
            (None, None) => {}
        }
        self.forwards_expected += usize::from(expected.is_some());
        if record.form.is_some() && !forms_allowed {
            self.false_forms.push(name.to_string());
        }
    }
}

fn files(dir: &Path, extension: Option<&str>) -> anyhow::Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .filter(|p| extension.is_none_or(|x| p.extension().is_some_and(|e| e == x)))
        .collect();
    out.sort();
    Ok(out)
}

fn wrapped(from: &str, body: &str) -> Vec<u8> {
    format!(
        "From: {from}\r\nTo: sales@in.example.com\r\nSubject: Message\r\nMessage-ID: <bench@example.com>\r\n\
         Date: Mon, 07 Dec 2026 09:00:00 +0000\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}"
    )
    .into_bytes()
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let corpora = args
        .corpora
        .unwrap_or_else(|| root.join("../shared/corpora"));
    let ctx = ParseContext::default();
    let mut tallies: BTreeMap<&str, Tally> = BTreeMap::new();
    for folder in ["bsd", "not"] {
        let dir = corpora.join("sisimai-set-of-emails/maildir").join(folder);
        let tally = tallies
            .entry(if folder == "bsd" {
                "sisimai bounces"
            } else {
                "sisimai not bounces"
            })
            .or_default();
        for path in files(&dir, Some("eml"))? {
            let raw = std::fs::read(&path)?;
            let name = format!("sisimai/{folder}/{}", file_name(&path));
            if let Ok(record) = parse_message(&raw, &ctx) {
                tally.check(&name, &record, false);
            }
        }
    }
    for (corpus, dir) in REPLIES {
        for path in files(&corpora.join("reply-parsers").join(dir), None)? {
            let body = String::from_utf8_lossy(&std::fs::read(&path)?).into_owned();
            let name = format!("{corpus}/{}", file_name(&path));
            let person = parse_message(&wrapped("Pat Doe <pat@customer.example>", &body), &ctx);
            if let Ok(record) = person {
                tallies
                    .entry("replies from a person")
                    .or_default()
                    .check(&name, &record, false);
            }
            let robot = parse_message(&wrapped("noreply@site.example", &body), &ctx);
            if let Ok(record) = robot {
                let tally = tallies.entry("replies from a robot").or_default();
                // A robot forwards nothing: only forms are counted here.
                tally.messages += 1;
                if record.form.is_some() {
                    tally.false_forms.push(name);
                }
            }
        }
    }
    println!(
        "| corpus | messages | forwards found (expected) | false forwards | false form leads |"
    );
    println!("|---|---|---|---|---|");
    for (corpus, t) in &tallies {
        println!(
            "| {corpus} | {} | {} ({}) | {} | {} |",
            t.messages,
            t.forwards_right,
            t.forwards_expected,
            t.false_forwards.len(),
            t.false_forms.len()
        );
    }
    for (corpus, t) in &tallies {
        for miss in t.wrong_sender.iter().chain(&t.false_forwards) {
            println!("forward miss ({corpus}): {miss}");
        }
        for miss in &t.false_forms {
            println!("form miss ({corpus}): {miss}");
        }
    }
    if args.cost {
        cost();
    }
    Ok(())
}

/// The detection's share of `parse_message` on 400 realistic messages, five rounds.
fn cost() {
    use mailstream_tests::corpus::{CorpusOptions, Generator, Templates};
    use std::time::{Duration, Instant};
    let templates = Templates::generate(CorpusOptions {
        templates: 400,
        duplicate_rate: 0.0,
        ..CorpusOptions::default()
    });
    let mut generator = Generator::new(templates, "bench-parser", 0);
    let corpus: Vec<Vec<u8>> = (0..400)
        .map(|_| generator.next_email().data.as_ref().clone())
        .collect();
    let (ctx, redactor, mime) = (
        ParseContext::default(),
        Redactor::default(),
        mail_parser::MessageParser::default(),
    );
    let (mut whole, mut forwards, mut forms) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let mut found = (0, 0);
    for _ in 0..5 {
        for raw in &corpus {
            let started = Instant::now();
            let Ok(mut record) = parse_message(raw, &ctx) else {
                continue;
            };
            whole += started.elapsed();
            let Some(message) = mime.parse(raw) else {
                continue;
            };
            (record.forwarded, record.form) = (None, None);
            let started = Instant::now();
            forward::detect(&message, &mut record, &redactor);
            let between = Instant::now();
            form::detect(&mut record, &redactor);
            forms += between.elapsed();
            forwards += between - started;
            found.0 += usize::from(record.forwarded.is_some());
            found.1 += usize::from(record.form.is_some());
        }
    }
    let share = |d: Duration| 100.0 * d.as_secs_f64() / whole.as_secs_f64();
    println!(
        "detection: forwards {:.2} %, forms {:.2} % of parse_message ({:.1} + {:.1} µs of {:.1} µs a message; {} forwards, {} forms in 5 × 400 messages)",
        share(forwards),
        share(forms),
        forwards.as_secs_f64() * 1e6 / 2000.0,
        forms.as_secs_f64() * 1e6 / 2000.0,
        whole.as_secs_f64() * 1e6 / 2000.0,
        found.0,
        found.1
    );
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}
