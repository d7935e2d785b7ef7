//! Who works a lead, end to end on the real stack (issue 19): a rules file with intents and
//! routing, emails over SMTP through ingest, parser, resolver, scorer and crm-sink into
//! PostgreSQL. A German email about a quote reaches the DACH team's active owner (by its
//! language: the sender's domain is a .com), an English support request the default team; the
//! `scored` records explain both (intent rule and evidence, language, route). A visibility rule
//! keeps a law firm's email to metadata in the CRM: no subject, no text. Our answer to the
//! German email, copied to a journal address, is not a lead and times the first response.

use std::time::Duration;

use mailstream_runtime::records::ScoredLead;
use mailstream_tests::crm_db::{SAMPLE_DOMAIN, SmtpToCrm, psql_rows};
use mailstream_tests::mail::temp_dir;
use mailstream_tests::{TestEnv, collect, decode_as};

const RULES: &str = r#"
rules:
  - id: asks-for-an-offer
    points: 30
    when: {subject: {contains_any: [angebot, quote, pricing]}}
intents:
  - id: support-request
    intent: support
    when: {any: [{subject: {contains_any: [error, "not working"]}}, {body: {contains_any: [error, "not working"]}}]}
  - id: buying-signal
    intent: sales
    when: {subject: {contains_any: [angebot, quote, pricing]}}
routing:
  teams:
    dach: {owners: [anna@in.mailstream.test, ben@in.mailstream.test], inactive: [ben@in.mailstream.test]}
    world: {owners: [carla@in.mailstream.test]}
  routes:
    - id: german
      team: dach
      when: {any: [{language: {in: [de]}}, {country: {in: [de, at, ch]}}]}
  default_team: world
visibility:
  - id: counsel
    level: metadata
    when: {sender_domain: {in: [lawfirm.example]}}
"#;

fn message(from: &str, id: &str, subject: &str, body: &str) -> String {
    format!(
        "From: {from}\r\nTo: sales@{SAMPLE_DOMAIN}\r\nSubject: {subject}\r\nMessage-ID: <{id}>\r\n\
         Date: Mon, 07 Dec 2026 09:00:00 +0100\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n{body}\r\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_german_quote_request_reaches_the_dach_owner_and_support_the_default_team() {
    let env = TestEnv::new("routing");
    let dir = temp_dir("routing");
    let rules = dir.join("rules.yaml");
    std::fs::write(&rules, RULES).expect("write rules");
    let rules_path = rules.to_str().expect("utf-8 path").to_string();
    let mut crm = SmtpToCrm::start(
        &env,
        &[],
        &[("MAILSTREAM_SCORER_RULES_FILE", rules_path.as_str())],
    )
    .await;
    let schema = crm.schema.clone();
    let emails = [
        (
            "kai@kunde-gmbh.com",
            message(
                "Kai Berger <kai@kunde-gmbh.com>",
                "route-de@kunde-gmbh.com",
                "Angebot für 25 Lizenzen",
                "Guten Tag, wir möchten Ihre Software in unserem Vertriebsteam einsetzen und \
                 bitten um ein Angebot für fünfundzwanzig Lizenzen mit jährlicher Abrechnung.",
            ),
        ),
        (
            "li@shop.example",
            message(
                "Li Wong <li@shop.example>",
                "route-en@shop.example",
                "Export not working",
                "Hello, since yesterday the export is not working and shows an error for every \
                 order we try to download. Could you please have a look at it for us?",
            ),
        ),
        (
            "rae@lawfirm.example",
            message(
                "Rae Counsel <rae@lawfirm.example>",
                "counsel-1@lawfirm.example",
                "Quote for the settlement terms",
                "Privileged and confidential: this letter sets out our client's position on the \
                 proposed settlement terms and the schedule for the remaining payments to you.",
            ),
        ),
    ];
    let rcpt = format!("sales@{SAMPLE_DOMAIN}");
    for (sender, text) in &emails {
        crm.send(text, sender, &[&rcpt]);
    }
    let results = collect(
        &env.consumer(&["crm-results"]),
        emails.len(),
        Duration::from_secs(120),
        Duration::ZERO,
    )
    .await;
    assert_eq!(results.len(), emails.len(), "both emails reached the CRM");
    // Anna answers the German email; the journal address gets a copy.
    let answer = format!(
        "From: Anna <anna@{SAMPLE_DOMAIN}>\r\nTo: kai@kunde-gmbh.com\r\nSubject: Re: Angebot\r\n\
         Message-ID: <answer-1@{SAMPLE_DOMAIN}>\r\nIn-Reply-To: <route-de@kunde-gmbh.com>\r\n\
         References: <route-de@kunde-gmbh.com>\r\nDate: Mon, 07 Dec 2026 09:30:00 +0100\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\
         Guten Tag, anbei unser Angebot.\r\n"
    );
    let journal = format!("journal@{SAMPLE_DOMAIN}");
    crm.send(&answer, &format!("anna@{SAMPLE_DOMAIN}"), &[&journal]);
    let all = emails.len() + 1;
    let results = collect(
        &env.consumer(&["crm-results"]),
        all,
        Duration::from_secs(60),
        Duration::ZERO,
    )
    .await;
    assert_eq!(results.len(), all, "the answer has its crm-result");
    let scored = collect(
        &env.consumer(&["scored"]),
        all,
        Duration::from_secs(10),
        Duration::ZERO,
    )
    .await;
    let scored: Vec<ScoredLead> = decode_as(env.registry(), &scored, |s: &ScoredLead| {
        s.message_id.as_str()
    })
    .await;
    crm.stop();

    let german = scored
        .iter()
        .find(|s| s.message_id == "route-de@kunde-gmbh.com")
        .and_then(|s| s.routing.clone())
        .expect("the German email was routed");
    assert_eq!(
        (german.language.as_deref(), german.country.as_deref()),
        (Some("de"), None),
        "told by its language: a .com says nothing of a country"
    );
    assert_eq!(german.intent_rule.as_deref(), Some("buying-signal"));
    assert_eq!(german.route.as_deref(), Some("german"));
    let leads = psql_rows(&format!(
        "SELECT message_id, intent, language, team, owner, source_alias FROM {schema}.leads \
         ORDER BY message_id"
    ));
    assert_eq!(
        leads,
        [
            [
                "counsel-1@lawfirm.example",
                "sales",
                "en",
                "world",
                "carla@in.mailstream.test",
                "sales@in.mailstream.test",
            ],
            [
                "route-de@kunde-gmbh.com",
                "sales",
                "de",
                "dach",
                "anna@in.mailstream.test",
                "sales@in.mailstream.test",
            ],
            [
                "route-en@shop.example",
                "support",
                "en",
                "world",
                "carla@in.mailstream.test",
                "sales@in.mailstream.test",
            ],
        ],
        "ben is inactive: anna works every DACH account; each came in through sales@"
    );
    // The counsel's email reaches the CRM as metadata only: who, when, the score; no subject
    // and no text, in the activity or the lead (the `scored` topic keeps them).
    let counsel = psql_rows(&format!(
        "SELECT a.subject IS NULL, a.body_text IS NULL, l.subject IS NULL, l.score::text \
         FROM {schema}.email_activities a JOIN {schema}.leads l USING (message_id) \
         WHERE a.message_id = 'counsel-1@lawfirm.example'"
    ));
    assert_eq!(counsel, [["t", "t", "t", "30"]]);
    let kept = scored
        .iter()
        .find(|s| s.message_id == "counsel-1@lawfirm.example")
        .expect("scored");
    assert_eq!(kept.visibility, "metadata");
    assert!(kept.subject.is_some(), "the scored topic keeps the subject");

    // Our answer: not a lead, in the German email's thread; no contact for Anna; the German
    // email is answered, the others are not.
    let answer = scored
        .iter()
        .find(|s| s.message_id == format!("answer-1@{SAMPLE_DOMAIN}"))
        .expect("the answer was scored");
    assert!(answer.resolved.outbound, "from our domain");
    assert_eq!(
        (answer.status.as_str(), answer.tags.as_slice()),
        ("excluded", &["outbound".to_string()][..])
    );
    assert_eq!(answer.thread_id, "route-de@kunde-gmbh.com");
    let answered = psql_rows(&format!(
        "SELECT message_id, (first_response_at IS NOT NULL)::text FROM {schema}.email_activities \
         ORDER BY message_id"
    ));
    assert_eq!(
        answered,
        [
            ["counsel-1@lawfirm.example", "false"],
            ["route-de@kunde-gmbh.com", "true"],
            ["route-en@shop.example", "false"],
        ],
        "the answer is no activity of its own (excluded) and answers its thread only"
    );
    let anna = psql_rows(&format!(
        "SELECT count(*)::text FROM {schema}.contacts WHERE email LIKE 'anna@%'"
    ));
    assert_eq!(anna, [["0"]], "we are not our own contacts");
}
