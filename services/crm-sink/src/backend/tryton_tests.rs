use base64::Engine;
use base64::engine::general_purpose::URL_SAFE;
use serde_json::{Value, json};

use super::http::{classify, encode_domain, like_literal};
use super::{Failure, NOTE_MAX_TEXT_BYTES, note_message};
use crate::backend::{ActivityPlan, WritePlan};

/// What Tryton 8.2 answers a create with an unknown field (captured from the server).
const PAGE_500: &str = "<!doctype html>\n<html lang=en>\n<title>500 Internal Server Error</title>\n\
    <h1>Internal Server Error</h1>\n<p>&#39;bogus_field&#39;</p>\n";

fn verdict(status: u16, body: &str) -> (&'static str, String) {
    match classify("party-create", status, body, None) {
        Failure::Poison { reason, .. } => ("rejected", reason),
        Failure::Retry { reason, .. } => ("retried", reason),
        Failure::Auth { setting, .. } => ("auth", setting.to_string()),
        other => ("other", other.reason().to_string()),
    }
}

#[test]
fn a_500_page_is_the_record_s_fault_with_its_text_and_outages_are_retried() {
    let (kind, reason) = verdict(500, PAGE_500);
    assert_eq!(kind, "rejected");
    assert_eq!(reason, "party-create answered 500: 'bogus_field'");
    let locked = "<html><title>503 Service Unavailable</title><p>database is locked</p></html>";
    assert_eq!(verdict(503, locked).0, "retried");
    let user_error = r#"{"status": 400, "message": "A value is required for field \"Resource\"."}"#;
    let (kind, reason) = verdict(400, user_error);
    assert_eq!(kind, "rejected");
    assert!(
        reason.ends_with("A value is required for field \"Resource\"."),
        "{reason}"
    );
    for status in [429, 502, 503, 504] {
        assert_eq!(verdict(status, "busy").0, "retried", "{status}");
    }
    assert_eq!(verdict(401, ""), ("auth", "token".into()));
}

#[test]
fn searches_match_literally_and_domains_decode() {
    assert_eq!(like_literal(r"a_b%c\d@x.io"), r"a\_b\%c\\d@x.io");
    let domain = json!([["value", "ilike", "ali@acme.io"]]);
    let decoded = URL_SAFE.decode(encode_domain(&domain)).expect("base64");
    assert_eq!(
        serde_json::from_slice::<Value>(&decoded).expect("json"),
        domain
    );
}

#[test]
fn a_note_starts_with_its_message_id_and_keeps_a_bounded_text() {
    let long = "é".repeat(NOTE_MAX_TEXT_BYTES);
    let plan = WritePlan {
        message_id: "m-1@client.test".into(),
        received_at: chrono::DateTime::from_timestamp(1_765_000_000, 0).unwrap_or_default(),
        source_offset: 0,
        status: "review".into(),
        known_contact: false,
        account: None,
        contact: None,
        deal: None,
        activity: ActivityPlan {
            subject: Some("Pricing".into()),
            sender_email: Some("ali@acme.io".into()),
            sender_name: Some("Ali".into()),
            recipients: vec![],
            text: Some(long),
            thread_id: "t".into(),
            thread_parent: None,
            auth: Value::Null,
            tags: vec![],
            meeting: None,
        },
        attachments: vec![],
        lead: None,
        relinked: false,
        parent_unknown: false,
    };
    let message = note_message(&plan);
    let mut lines = message.lines();
    assert_eq!(lines.next(), Some("mailstream email m-1@client.test"));
    assert_eq!(lines.next(), Some("From: Ali <ali@acme.io>"));
    assert_eq!(lines.next(), Some("Subject: Pricing"));
    assert_eq!(lines.next(), Some("Received: 2025-12-06T05:46:40Z"));
    let text = message.rsplit('\n').next().unwrap_or_default();
    assert_eq!(
        text.len(),
        NOTE_MAX_TEXT_BYTES,
        "cut on a character boundary"
    );
}

#[test]
fn the_tryton_backend_needs_its_url_database_and_key() {
    use crate::settings::{CrmSinkSettings, SECTION};
    use mailstream_runtime::ConfigSource;
    use mailstream_runtime::config::load;

    let base = ConfigSource::default()
        .with_env("MAILSTREAM_BOOTSTRAP_SERVERS", "k:9092")
        .with_env("MAILSTREAM_SCHEMA_REGISTRY_URL", "http://r:8081")
        .with_env("MAILSTREAM_CRM_SINK_BACKEND", "tryton");
    let problems = crate::settings::tests::problems(&base).join("\n");
    for key in [
        "MAILSTREAM_CRM_SINK_BASE_URL",
        "MAILSTREAM_CRM_SINK_TRYTON_DATABASE",
        "MAILSTREAM_CRM_SINK_TOKEN",
    ] {
        assert!(problems.contains(key), "{key}: {problems}");
    }
    let (_, s) = load::<CrmSinkSettings>(
        SECTION,
        &base
            .with_env("MAILSTREAM_CRM_SINK_BASE_URL", "http://127.0.0.1:8000")
            .with_env("MAILSTREAM_CRM_SINK_TRYTON_DATABASE", "mailstream")
            .with_env("MAILSTREAM_CRM_SINK_TOKEN", "0123abcd"),
    )
    .expect("loads");
    assert_eq!((s.backend.name(), s.rate()), ("tryton", 20.0));
    assert!(!format!("{s:?}").contains("0123abcd"));
}
