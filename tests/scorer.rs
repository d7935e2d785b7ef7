//! The scorer on the real stack: resolved emails in, the analysts' `scored` records and the
//! `leads` table out. Rewinding the scorer's consumer group to the beginning and running it again
//! writes byte-identical `scored` records; a change of the rules file is applied while it runs,
//! and a bad one is refused (the previous rules keep scoring, the metric says so); its info log
//! carries no email address, subject or body.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use mailstream_runtime::AvroRecord;
use mailstream_runtime::records::{
    AccountMatch, Attachment, AuthResults, AutoReply, Bounce, ContactMatch, Disposition, Lead,
    ListInfo, NewContactProposal, ParsedEmail, ResolvedEmail, ScoredLead,
};
use mailstream_tests::mail::temp_dir;
use mailstream_tests::{
    Seen, TestEnv, collect, decode, decode_as, free_port, http_get, log_dir, terminate,
};

/// The shipped default rules (the tests run them on the real stack).
fn default_rules() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../services/scorer/rules/default.yaml");
    std::fs::read_to_string(&path).expect("the default rules file")
}

/// What each test email should become: (message id, status, score).
const EXPECTED: &[(&str, &str, i32)] = &[
    ("qualified", "qualified", 55),
    ("review", "review", 30),
    ("plain", "nurture", 0),
    ("spam", "nurture", -30),
    ("ooo", "excluded", 0),
    ("bounce", "excluded", 0),
    ("list", "excluded", 0),
];

/// Distinct text in every body, so the log check can look for it.
const BODY_MARKER: &str = "confidential body text";

fn sender(id: &str) -> String {
    format!("person.{id}@sender-{id}.example")
}

fn pdf(name: &str, size: i64) -> Attachment {
    Attachment {
        filename: Some(name.into()),
        content_type: "application/pdf".into(),
        sniffed_type: Some("application/pdf".into()),
        size,
        sha256: "ab".repeat(32),
        disposition: Disposition::Attachment,
        content_id: None,
        blob_uri: None,
        executable: false,
        malware: None,
    }
}

/// A resolved email from a new contact, with nothing a default rule looks at.
fn email(id: &str, subject: &str) -> ResolvedEmail {
    let message_id = format!("{id}@mail.sender-{id}.example");
    let from = sender(id);
    let domain = format!("sender-{id}.example");
    ResolvedEmail {
        message_id: message_id.clone(),
        received_at: 1_760_000_000_000,
        email: ParsedEmail {
            message_id: message_id.clone(),
            ingest_id: format!("ingest-{id}"),
            received_at: 1_760_000_000_000,
            envelope_rcpt_to: vec!["demo@in.example.com".into()],
            subject: Some(subject.into()),
            text: Some(format!("Hello, {BODY_MARKER} number {id}.")),
            stripped_text: Some(format!("Hello, {BODY_MARKER} number {id}.")),
            ..ParsedEmail::default()
        },
        recipients: vec!["demo@in.example.com".into()],
        sender_email: Some(from.clone()),
        sender_domain: Some(domain.clone()),
        new_contact: Some(NewContactProposal {
            email: from,
            name: None,
            domain: Some(domain),
            account_id: None,
        }),
        thread_id: message_id,
        ..ResolvedEmail::default()
    }
}

fn passing_auth() -> AuthResults {
    AuthResults {
        spf: Some("pass".into()),
        dkim: Some("pass".into()),
        dmarc: None,
    }
}

/// One email per outcome of the default rules ([`EXPECTED`]).
fn emails() -> Vec<ResolvedEmail> {
    let mut qualified = email("qualified", "Requesting a product demo");
    qualified.email.auth = passing_auth();
    qualified.email.attachments = vec![pdf("requirements.pdf", 48_321)];
    qualified.new_contact = None;
    qualified.contact = Some(ContactMatch {
        contact_id: "contact-7".into(),
        name: None,
        account_id: Some("acct-acme".into()),
    });
    qualified.account = Some(AccountMatch {
        account_id: "acct-acme".into(),
        name: Some("Acme".into()),
        domain: Some("sender-qualified.example".into()),
        target_account: true,
        matched_by: "contact".into(),
    });
    let mut review = email("review", "Enterprise pricing");
    review.email.auth = passing_auth();
    review.free_mail = true;
    let plain = email("plain", "Quick question about your product");
    let mut spam = email("spam", "A great opportunity");
    spam.email.stripped_text = Some(format!(
        "Act now, {BODY_MARKER}: https://bit.ly/3xYz and it is risk-free"
    ));
    let mut ooo = email("ooo", "Out of office: demo");
    ooo.email.auto_reply = Some(AutoReply {
        kind: "out-of-office".into(),
        evidence: "Auto-Submitted: auto-replied".into(),
        ..AutoReply::default()
    });
    let mut bounce = email("bounce", "Undelivered Mail Returned to Sender");
    bounce.email.bounce = Some(Bounce {
        failed_recipients: vec![sender("bounce")],
        status: Some("5.1.1".into()),
        evidence: "multipart/report".into(),
        class: Bounce::HARD.into(),
        ..Bounce::default()
    });
    let mut list = email("list", "[dev] pricing thread");
    list.email.list = Some(ListInfo {
        list_id: Some("dev.lists.example".into()),
        precedence: Some("list".into()),
    });
    vec![qualified, review, plain, spam, ooo, bounce, list]
}

async fn produce(env: &TestEnv, emails: &[ResolvedEmail]) {
    let mut records = Vec::new();
    for email in emails {
        let value = email.clone().into_avro().expect("to avro");
        records.push((
            email.message_id.clone(),
            env.encode("resolved", value).await,
        ));
    }
    env.produce("resolved", records).await;
}

async fn scored_of(env: &TestEnv, seen: &[Seen]) -> Vec<ScoredLead> {
    decode_as(env.registry(), seen, |s: &ScoredLead| s.message_id.as_str()).await
}

/// The rules file of one test, in its own directory.
fn rules_file(name: &str, text: &str) -> PathBuf {
    let path = temp_dir(name).join("rules.yaml");
    std::fs::write(&path, text).expect("write rules");
    path
}

/// Starts the scorer with `rules` (checked every 200 ms) and its metrics on `http`.
fn spawn_scorer(env: &TestEnv, rules: &Path, http: &str) -> Child {
    let rules = rules.to_str().expect("utf-8 path");
    env.spawn(
        "scorer",
        "a",
        &[
            ("MAILSTREAM_SCORER_RULES_FILE", rules),
            ("MAILSTREAM_SCORER_RELOAD_INTERVAL_MS", "200"),
            ("MAILSTREAM_HTTP_ADDR", http),
        ],
    )
}

/// Waits until `/metrics` on `http` has a line equal to `line`, or panics with the metrics.
async fn wait_for_metric(http: &str, line: &str, timeout: Duration) {
    let started = Instant::now();
    loop {
        let (_, metrics) = http_get(&format!("http://{http}/metrics")).await;
        if metrics.lines().any(|l| l.trim() == line) {
            return;
        }
        assert!(
            started.elapsed() < timeout,
            "no `{line}` on /metrics within {timeout:?}:\n{}",
            metrics
                .lines()
                .filter(|l| l.starts_with("mailstream_scorer"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn log_of(env: &TestEnv) -> String {
    let path = log_dir().join(format!("{}scorer-a.log", env.prefix));
    std::fs::read_to_string(&path).expect("the scorer's log")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_resolved_from_the_beginning_writes_identical_scored_records() {
    let env = TestEnv::new("score-replay");
    let rules = rules_file("score-replay", &default_rules());
    let inputs = emails();
    produce(&env, &inputs).await;
    let http = format!("127.0.0.1:{}", free_port());

    let mut scorer = spawn_scorer(&env, &rules, &http);
    let first = collect(
        &env.consumer(&["scored"]),
        inputs.len(),
        Duration::from_secs(90),
        Duration::from_secs(3),
    )
    .await;
    let leads = collect(
        &env.consumer(&["leads"]),
        4,
        Duration::from_secs(30),
        Duration::from_secs(1),
    )
    .await;
    wait_for_metric(
        &http,
        "mailstream_scorer_records_total{status=\"excluded\"} 3",
        Duration::from_secs(10),
    )
    .await;
    let status = terminate(&mut scorer, Duration::from_secs(30));
    assert!(status.success(), "graceful shutdown exits 0, got {status}");
    assert_eq!(first.len(), inputs.len(), "one scored record per email");

    // What the analysts see.
    let scored = scored_of(&env, &first).await;
    let by_id: BTreeMap<String, &ScoredLead> = scored
        .iter()
        .map(|s| {
            (
                s.message_id
                    .split('@')
                    .next()
                    .unwrap_or_default()
                    .to_string(),
                s,
            )
        })
        .collect();
    for (id, status, score) in EXPECTED {
        let s = by_id
            .get(*id)
            .unwrap_or_else(|| panic!("{id} was not scored"));
        assert_eq!(
            (s.status.as_str(), s.score),
            (*status, *score),
            "{id}: {s:#?}"
        );
        let sum: i32 = s.breakdown.iter().map(|h| h.points).sum();
        assert_eq!(sum, s.score, "{id}: the breakdown adds up to the score");
        assert_eq!(s.rules_version.len(), 12);
        let input = inputs
            .iter()
            .find(|e| e.message_id == s.message_id)
            .expect("an input");
        assert_eq!(
            &s.resolved, input,
            "{id}: the resolved email is carried whole"
        );
    }
    let qualified = by_id["qualified"];
    let hits: Vec<(&str, i32, &str)> = qualified
        .breakdown
        .iter()
        .map(|h| (h.rule_id.as_str(), h.points, h.evidence.as_str()))
        .collect();
    assert_eq!(
        hits,
        [
            ("subject-intent", 20, "subject mentions \"demo\""),
            ("sender-authenticated", 10, "spf=pass dkim=pass"),
            ("target-account", 15, "target account Acme"),
            (
                "document-attachment",
                10,
                "attachment requirements.pdf (48321 bytes)"
            ),
        ]
    );
    assert_eq!(qualified.lead_key, "contact-7");
    assert_eq!(qualified.tags, ["target-account"]);
    assert_eq!(by_id["review"].tags, ["free-mail", "new-contact"]);
    assert_eq!(
        by_id["spam"].breakdown[0].evidence,
        "body mentions \"act now\", \"risk-free\"; suspicious link bit.ly (URL shortener)"
    );
    assert_eq!(by_id["ooo"].tags, ["auto-reply", "new-contact"]);
    assert!(by_id["ooo"].breakdown.is_empty());
    assert_eq!(by_id["bounce"].tags, ["bounce", "new-contact"]);
    assert_eq!(by_id["list"].tags, ["list", "new-contact"]);

    // The leads table: the four scored emails, none of the excluded ones.
    assert_eq!(
        leads.len(),
        4,
        "one lead state per scored, non-excluded email"
    );
    let mut lead_keys = Vec::new();
    for record in &leads {
        let value = decode(env.registry(), record.payload.as_deref().expect("payload")).await;
        let lead = Lead::from_avro(value).expect("a Lead");
        assert_eq!(record.key.as_deref(), Some(lead.lead_key.as_str()));
        let s = scored
            .iter()
            .find(|s| s.message_id == lead.last_message_id)
            .expect("the lead's email was scored");
        assert_eq!(
            (lead.score, &lead.status, &lead.breakdown, lead.updated_at),
            (s.score, &s.status, &s.breakdown, s.received_at)
        );
        lead_keys.push(lead.lead_key);
    }
    lead_keys.sort();
    let mut expected_keys = vec![
        "contact-7".to_string(),
        sender("review"),
        sender("plain"),
        sender("spam"),
    ];
    expected_keys.sort();
    assert_eq!(lead_keys, expected_keys);

    // Rewind the group and run again: the same records, byte for byte.
    env.reset_to_earliest("scorer");
    let mut scorer = spawn_scorer(&env, &rules, &http);
    let both = collect(
        &env.consumer(&["scored"]),
        2 * inputs.len(),
        Duration::from_secs(90),
        Duration::from_secs(3),
    )
    .await;
    let status = terminate(&mut scorer, Duration::from_secs(30));
    assert!(status.success(), "graceful shutdown exits 0, got {status}");
    assert_eq!(both.len(), 2 * inputs.len(), "every email scored again");
    let mut payloads: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
    for record in &both {
        payloads
            .entry(record.key.clone().expect("a key"))
            .or_default()
            .push(record.payload.clone().expect("a payload"));
    }
    assert_eq!(payloads.len(), inputs.len());
    for (key, versions) in &payloads {
        assert_eq!(versions.len(), 2, "{key}: once per run");
        assert!(
            versions[0] == versions[1],
            "{key}: the replay wrote a different scored record"
        );
    }
    for record in &first {
        let key = record.key.clone().expect("a key");
        assert_eq!(
            payloads[&key][0],
            record.payload.clone().expect("a payload"),
            "{key}: the first pass as read before"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rules_file_change_applies_live_and_a_bad_file_keeps_the_rules() {
    let env = TestEnv::new("score-reload");
    let v1_text = default_rules();
    let rules = rules_file("score-reload", &v1_text);
    let http = format!("127.0.0.1:{}", free_port());
    let mut scorer = spawn_scorer(&env, &rules, &http);
    let consumer = env.consumer(&["scored"]);
    let batch = |n: usize| {
        let mut e = email(&format!("intent{n}"), "Pricing for 20 seats");
        e.email.auth = passing_auth();
        vec![e]
    };
    let intent = |s: &ScoredLead| {
        s.breakdown
            .iter()
            .find(|h| h.rule_id == "subject-intent")
            .map(|h| h.points)
    };

    produce(&env, &batch(1)).await;
    let seen = collect(
        &consumer,
        1,
        Duration::from_secs(90),
        Duration::from_millis(500),
    )
    .await;
    let first = scored_of(&env, &seen).await;
    assert_eq!(first.len(), 1);
    assert_eq!((intent(&first[0]), first[0].score), (Some(20), 30));
    let v1 = first[0].rules_version.clone();
    wait_for_metric(
        &http,
        "mailstream_scorer_rules_valid 1",
        Duration::from_secs(5),
    )
    .await;

    // A new weight, written while the scorer runs.
    let v2_text = v1_text.replacen("points: 20", "points: 25", 1);
    assert_ne!(v2_text, v1_text);
    std::fs::write(&rules, &v2_text).expect("rewrite rules");
    wait_for_metric(
        &http,
        "mailstream_scorer_rules_reloads_total{outcome=\"ok\"} 1",
        Duration::from_secs(30),
    )
    .await;
    produce(&env, &batch(2)).await;
    let seen = collect(
        &consumer,
        1,
        Duration::from_secs(60),
        Duration::from_millis(500),
    )
    .await;
    let second = scored_of(&env, &seen).await;
    assert_eq!(second.len(), 1);
    assert_eq!((intent(&second[0]), second[0].score), (Some(25), 35));
    let v2 = second[0].rules_version.clone();
    assert_ne!(v2, v1, "the record names the new rules");

    // A broken file: refused, visible on the metric, and the rules in force keep scoring.
    std::fs::write(
        &rules,
        v2_text.replacen("points: 25", "points: twenty-five", 1),
    )
    .expect("break rules");
    wait_for_metric(
        &http,
        "mailstream_scorer_rules_valid 0",
        Duration::from_secs(30),
    )
    .await;
    wait_for_metric(
        &http,
        "mailstream_scorer_rules_reloads_total{outcome=\"invalid\"} 1",
        Duration::from_secs(5),
    )
    .await;
    produce(&env, &batch(3)).await;
    let seen = collect(
        &consumer,
        1,
        Duration::from_secs(60),
        Duration::from_millis(500),
    )
    .await;
    let third = scored_of(&env, &seen).await;
    assert_eq!(third.len(), 1);
    assert_eq!((intent(&third[0]), third[0].score), (Some(25), 35));
    assert_eq!(
        third[0].rules_version, v2,
        "still the previous (valid) rules"
    );

    // Fixed again: in force again.
    std::fs::write(&rules, &v1_text).expect("fix rules");
    wait_for_metric(
        &http,
        "mailstream_scorer_rules_valid 1",
        Duration::from_secs(30),
    )
    .await;
    let status = terminate(&mut scorer, Duration::from_secs(30));
    assert!(status.success(), "graceful shutdown exits 0, got {status}");

    let log = log_of(&env);
    let refused = log
        .lines()
        .find(|l| l.contains("rules file refused"))
        .unwrap_or_else(|| panic!("no refusal in the log:\n{log}"));
    assert!(refused.contains("WARN"), "{refused}");
    assert!(
        refused.contains("rule `subject-intent`: key `points`"),
        "the problem names the rule and key: {refused}"
    );
    assert!(refused.contains(rules.to_str().expect("path")), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_logs_carry_no_email_address_subject_or_body() {
    let env = TestEnv::new("score-pii");
    let rules = rules_file("score-pii", &default_rules());
    let inputs = emails();
    produce(&env, &inputs).await;
    let http = format!("127.0.0.1:{}", free_port());
    let mut scorer = spawn_scorer(&env, &rules, &http);
    let seen = collect(
        &env.consumer(&["scored"]),
        inputs.len(),
        Duration::from_secs(90),
        Duration::from_secs(2),
    )
    .await;
    assert_eq!(seen.len(), inputs.len());
    // A refused reload logs problems too.
    std::fs::write(&rules, "rules: [").expect("break rules");
    wait_for_metric(
        &http,
        "mailstream_scorer_rules_valid 0",
        Duration::from_secs(30),
    )
    .await;
    terminate(&mut scorer, Duration::from_secs(30));

    let log = log_of(&env);
    assert!(
        log.contains("scoring rules loaded"),
        "the right log:\n{log}"
    );
    assert!(log.contains("rules file refused"), "the right log:\n{log}");
    let mut needles: Vec<String> = vec![BODY_MARKER.into(), "in.example.com".into()];
    for e in &inputs {
        needles.extend(e.sender_email.clone());
        needles.extend(e.email.subject.clone());
        needles.push(e.message_id.clone());
        needles.extend(e.recipients.iter().cloned());
    }
    for needle in &needles {
        assert!(
            !log.contains(needle.as_str()),
            "the log carries {needle:?}:\n{log}"
        );
    }
    let address = regex_lite_address(&log);
    assert!(
        address.is_none(),
        "an address in the log: {address:?}\n{log}"
    );
}

/// The first thing in `text` that looks like an email address (`x@y.z`), if any.
fn regex_lite_address(text: &str) -> Option<String> {
    let is_local = |c: char| c.is_ascii_alphanumeric() || "._%+-".contains(c);
    let is_domain = |c: char| c.is_ascii_alphanumeric() || ".-".contains(c);
    for (at, _) in text.match_indices('@') {
        let local: String = text[..at]
            .chars()
            .rev()
            .take_while(|c| is_local(*c))
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        let domain: String = text[at + 1..]
            .chars()
            .take_while(|c| is_domain(*c))
            .collect();
        if !local.is_empty() && domain.contains('.') {
            return Some(format!("{local}@{domain}"));
        }
    }
    None
}
