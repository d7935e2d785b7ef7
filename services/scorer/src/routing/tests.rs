use mailstream_runtime::records::{AccountMatch, Address, ParsedEmail, ResolvedEmail};

use super::*;
use crate::rules::{Format, RuleSet};
use crate::score::scored_record;

const RULES: &str = r#"
rules:
  - id: asks-price
    points: 30
    when: {subject: {contains_any: [preis, price, angebot]}}
  - id: support-is-not-sales
    points: -10
    when: {intent: {in: [support]}}
intents:
  - id: support-words
    intent: support
    when: {body: {contains_any: [fehler, error, "not working"]}}
  - id: sales-words
    intent: sales
    when: {subject: {contains_any: [preis, price, angebot, demo]}}
routing:
  teams:
    dach: {owners: [anna@example.com, ben@example.com], inactive: [ben@example.com]}
    world: {owners: [carla@example.com, dan@example.com, eve@example.com]}
    support: {owners: [sam@example.com]}
  routes:
    - id: support-desk
      team: support
      when: {intent: {in: [support]}}
    - id: german
      team: dach
      when: {any: [{language: {in: [de]}}, {country: {in: [de, at, ch]}}]}
  default_team: world
"#;

/// A resolved email from `sender` (also the scorer's other tests').
pub(crate) fn email(id: &str, sender: &str, subject: &str, body: &str) -> ResolvedEmail {
    let domain = sender.rsplit_once('@').map(|(_, d)| d.to_string());
    ResolvedEmail {
        message_id: id.into(),
        received_at: 1_700_000_000_000,
        sender_email: Some(sender.into()),
        sender_domain: domain,
        thread_id: id.into(),
        email: ParsedEmail {
            message_id: id.into(),
            subject: Some(subject.into()),
            from: Some(Address {
                email: sender.into(),
                name: None,
            }),
            text: Some(body.into()),
            ..ParsedEmail::default()
        },
        ..ResolvedEmail::default()
    }
}

#[test]
fn intent_language_country_team_and_owner_are_decided_by_the_rules_file() {
    let rules = RuleSet::from_text(RULES, Format::Yaml).expect("valid rules");
    let german = scored_record(
        email(
            "m1",
            "kai@acme.de",
            "Angebot für 20 Lizenzen",
            "Guten Tag, wir möchten gerne ein Angebot für unser Team von zwanzig Personen erhalten.",
        ),
        &rules,
    );
    let routing = german.routing.expect("routed");
    assert_eq!(routing.language.as_deref(), Some("de"));
    assert_eq!(routing.country.as_deref(), Some("de"));
    assert_eq!(routing.intent, "sales");
    assert_eq!(routing.intent_rule.as_deref(), Some("sales-words"));
    assert_eq!(
        routing.intent_evidence.as_deref(),
        Some("subject mentions \"angebot\"")
    );
    assert_eq!(routing.team.as_deref(), Some("dach"));
    assert_eq!(routing.route.as_deref(), Some("german"));
    assert_eq!(
        routing.owner.as_deref(),
        Some("anna@example.com"),
        "ben is inactive"
    );
    assert_eq!(german.score, 30);

    let broken = scored_record(
        email(
            "m2",
            "li@shop.com",
            "Price question",
            "The export is not working since yesterday, please help us fix it.",
        ),
        &rules,
    );
    let routing = broken.routing.expect("routed");
    assert_eq!(routing.intent, "support", "the first intent rule wins");
    assert_eq!(routing.team.as_deref(), Some("support"));
    assert_eq!(
        broken.score, 20,
        "scoring rules see the intent: 30 for the price, -10 for support"
    );

    let other = scored_record(
        email(
            "m3",
            "jo@startup.io",
            "Hello",
            "Just wanted to say hello and ask how you are doing these days.",
        ),
        &rules,
    );
    let routing = other.routing.expect("routed");
    assert_eq!(routing.intent, OTHER);
    assert_eq!(routing.country, None, ".io says nothing about a country");
    assert_eq!(routing.team.as_deref(), Some("world"));
    assert_eq!(routing.route.as_deref(), Some(DEFAULT_ROUTE));
}

#[test]
fn an_account_keeps_its_owner_and_an_owner_leaving_moves_only_their_accounts() {
    let rules = RuleSet::from_text(RULES, Format::Yaml).expect("valid rules");
    let at_account = |id: &str, sender: &str, account: &str| {
        let mut e = email(id, sender, "Hi", "Just a short note about our order.");
        e.account = Some(AccountMatch {
            account_id: account.into(),
            name: None,
            domain: None,
            target_account: false,
            matched_by: "domain".into(),
        });
        scored_record(e, &rules).routing.and_then(|r| r.owner)
    };
    assert_eq!(
        at_account("a1", "x@one.com", "acct-7"),
        at_account("a2", "y@other.com", "acct-7"),
        "two people of one account get its owner"
    );

    let three: Vec<String> = ["carla", "dan", "eve"].map(String::from).to_vec();
    let two: Vec<String> = ["carla", "eve"].map(String::from).to_vec();
    let mut counts = BTreeMap::new();
    for n in 0..3_000 {
        let key = format!("acct-{n}");
        let before = owner_for(&three, &key).expect("an owner");
        *counts.entry(before.clone()).or_insert(0) += 1;
        let after = owner_for(&two, &key).expect("an owner");
        if before != "dan" {
            assert_eq!(before, after, "{key} moved though its owner stayed");
        }
    }
    for (owner, count) in counts {
        assert!((800..1_200).contains(&count), "{owner} got {count} of 3000");
    }
}

#[test]
fn every_problem_of_intents_and_routing_is_reported_at_once() {
    let text = r#"
rules:
  - id: r
    points: 1
    when: {intent: {in: [sales]}}
intents:
  - id: circular
    intent: Sales!
    when: {intent: {in: [support]}}
  - id: lang
    intent: support
    when: {language: {in: [german]}}
routing:
  teams:
    dach: {owners: [anna@example.com], inactive: [zoe@example.com]}
  routes:
    - id: nowhere
      team: moon
      when: {country: {in: [deu]}}
  default_team: mars
"#;
    let problems = RuleSet::from_text(text, Format::Yaml).expect_err("invalid");
    let all = problems.join("\n");
    for expected in [
        "intents `circular`: key `intent`: `Sales!` must be lower-case",
        "intents `circular`: key `when`: an intent rule cannot test the intent",
        "intents `lang`: key `when.language.in`: `german` is not a valid value",
        "team `dach`: key `inactive`: `zoe@example.com` is not one of the team's owners",
        "routing.routes `nowhere`: key `team`: `moon` is not one of routing.teams",
        "routing.routes `nowhere`: key `when.country.in`: `deu` is not a valid value",
        "key `routing.default_team`: `mars` is not one of routing.teams",
    ] {
        assert!(all.contains(expected), "missing {expected:?} in:\n{all}");
    }
}

#[test]
fn rules_without_intents_or_routing_keep_their_version() {
    let plain = "rules:\n  - id: r\n    points: 1\n    when: {subject: {contains_any: [demo]}}\n";
    let file = crate::rules::RulesFile::parse(plain, Format::Yaml).expect("parses");
    assert_eq!(
        file.canonical(),
        r#"{"qualified_at":40,"nurture_below":15,"rules":[{"id":"r","points":1,"when":{"subject":{"contains_any":["demo"]}}}]}"#,
        "the canonical form (and so the version) of a file without the new keys is as before"
    );
    let rules = RuleSet::from_text(plain, Format::Yaml).expect("valid");
    assert!(!rules.detect_language, "no rule tests the language");
    let scored = scored_record(
        email(
            "m",
            "a@b.com",
            "demo",
            "Hello there, we would like to see a demo of your product for our whole team.",
        ),
        &rules,
    );
    let routing = scored.routing.expect("scored emails carry routing");
    assert_eq!((routing.intent.as_str(), routing.team), (OTHER, None));
    assert_eq!(routing.language, None, "not detected when nothing tests it");
}

#[test]
fn the_default_rules_tell_intents_in_several_languages() {
    let rules = RuleSet::builtin().expect("valid");
    for (subject, body, intent) in [
        (
            "Rechnung 2024-118",
            "Bitte senden Sie uns eine Kopie.",
            "billing",
        ),
        ("Export", "Der Export funktioniert nicht mehr.", "support"),
        (
            "Demande de devis",
            "Bonjour, merci de nous envoyer une offre.",
            "sales",
        ),
        ("Hola", "¿Cuál es el precio para diez usuarios?", "sales"),
        ("Lunch?", "Are you free on Friday?", OTHER),
    ] {
        let scored = scored_record(email("m", "a@b.com", subject, body), &rules);
        assert_eq!(
            scored.routing.expect("routing").intent,
            intent,
            "{subject} / {body}"
        );
    }
}
