//! `mailstream score FILE.eml...`: the pipeline's decisions offline — parse, resolve, score —
//! with the breakdown, so a rules change can be tried before it ships. It runs the same
//! `parse_message`, `Resolution::resolve` and `scored_record` as the processors, against the
//! default rules (or `--rules`) and contacts/accounts from CSV exports (or none).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use mailstream_parser::{ParseContext, parse_message, trusted_authserv_ids};
use mailstream_resolver::{MemoryDirectory, Resolution, ResolverSettings};
use mailstream_runtime::records::ScoredLead;
use mailstream_scorer::{RuleSet, scored_record};

use crate::parse_cmd::read_input;

/// Options of `mailstream score`.
#[derive(Debug, clap::Args)]
pub struct ScoreArgs {
    /// .eml files; `-` reads standard input.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Rules file (YAML or TOML); the built-in default rules when absent.
    #[arg(long)]
    pub rules: Option<PathBuf>,
    /// Contacts CSV export (email, contact_id, name, account_id).
    #[arg(long)]
    pub contacts: Option<PathBuf>,
    /// Accounts CSV export (domain, account_id, name, target_account).
    #[arg(long)]
    pub accounts: Option<PathBuf>,
    /// Our domains (comma-separated): their To/Cc addresses count as recipients (deal routing).
    #[arg(long, value_delimiter = ',')]
    pub our_domains: Vec<String>,
    /// Authserv-ids of our receiving MTAs (comma-separated): SPF, DKIM and DMARC are read from
    /// the topmost `Authentication-Results` header one of them added, as `parser.trusted_authserv_ids`.
    #[arg(long, value_delimiter = ',')]
    pub trusted_authserv_ids: Vec<String>,
    /// `--json`: each scored record as one JSON line (the `scored` topic's fields).
    #[command(flatten)]
    pub output: crate::Output,
}

pub async fn execute(args: ScoreArgs) -> anyhow::Result<ExitCode> {
    let rules = match &args.rules {
        Some(path) => RuleSet::load(path),
        None => RuleSet::builtin(),
    }
    .map_err(|problems| {
        anyhow::anyhow!(
            "the rules {} are invalid:\n  {}",
            args.rules
                .as_ref()
                .map_or("(built-in)".into(), |p| p.display().to_string()),
            problems.join("\n  ")
        )
    })?;
    let directory = MemoryDirectory::from_csv(args.contacts.as_deref(), args.accounts.as_deref())
        .map_err(anyhow::Error::msg)?;
    let resolution = Resolution::new(&ResolverSettings {
        our_domains: args.our_domains.clone(),
        ..ResolverSettings::default()
    })
    .map_err(anyhow::Error::msg)?;

    let mut failed = false;
    for input in &args.files {
        let (label, bytes) = match read_input(input) {
            Ok(read) => read,
            Err(e) => {
                eprintln!("{}: {e:#}", input.display());
                failed = true;
                continue;
            }
        };
        let ctx = ParseContext {
            ingest_id: label.clone(),
            trusted_authserv_ids: trusted_authserv_ids(&args.trusted_authserv_ids),
            ..ParseContext::default()
        };
        let parsed = match parse_message(&bytes, &ctx) {
            Ok(parsed) => parsed,
            Err(failure) => {
                eprintln!("{label}: {}: {}", failure.class, failure.reason);
                failed = true;
                continue;
            }
        };
        let scored = scored_record(resolution.resolve(parsed, &directory), &rules);
        if args.output.json {
            println!(
                "{}",
                serde_json::to_string(&scored).context("encoding JSON")?
            );
        } else {
            print!("{}", explain(&label, &scored));
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// A few lines a person reads: who, what was resolved, the score and why.
fn explain(label: &str, s: &ScoredLead) -> String {
    let or_none = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let r = &s.resolved;
    let contact = match (&r.contact, &r.new_contact) {
        (Some(c), _) => format!("contact {}", c.contact_id),
        (None, Some(_)) => "new contact (proposed)".into(),
        _ => "no contact".into(),
    };
    let account = r.account.as_ref().map_or("no account".into(), |a| {
        format!(
            "account {} (by {}{})",
            a.account_id,
            a.matched_by,
            if a.target_account { ", target" } else { "" }
        )
    });
    let mut text = format!(
        "{label}\n  message  {}\n  from     {}  subject {:?}\n  resolved {contact}; {account}; deal {} ({}); thread {}\n  score    {} => {}{}  (rules {})\n",
        s.message_id,
        or_none(&s.sender_email),
        s.subject.clone().unwrap_or_default(),
        or_none(&r.deal_id),
        or_none(&r.deal_source),
        r.thread_id,
        s.score,
        s.status,
        if s.tags.is_empty() {
            String::new()
        } else {
            format!("  tags: {}", s.tags.join(", "))
        },
        s.rules_version,
    );
    for hit in &s.breakdown {
        text.push_str(&format!(
            "    {:+4}  {:<24} {}\n",
            hit.points, hit.rule_id, hit.evidence
        ));
    }
    if let Some(routing) = &s.routing {
        text.push_str(&format!(
            "  routing  intent {}{}; language {}; country {}; team {} (route {}); owner {}\n",
            routing.intent,
            routing
                .intent_rule
                .as_ref()
                .map(|rule| format!(
                    " ({rule}: {})",
                    routing.intent_evidence.as_deref().unwrap_or_default()
                ))
                .unwrap_or_default(),
            or_none(&routing.language),
            or_none(&routing.country),
            or_none(&routing.team),
            or_none(&routing.route),
            or_none(&routing.owner),
        ));
    }
    text
}
