//! The fixture corpus: every `fixtures/*.eml` (and `*.txt`) is parsed and compared with its
//! golden `*.expected.json` (every field of the record except `headers`, `ingest_id` and
//! `received_at`, which the context sets; a failure is `{"error_class": ...}`).
//!
//! `BLESS=1 cargo test -p mailstream-parser --test fixtures` rewrites the golden files; they
//! were generated that way once and then reviewed by hand, so a diff in them is a behaviour
//! change to review, not noise.

use std::path::{Path, PathBuf};

use mailstream_parser::{ParseContext, parse_message};
use serde_json::Value;

fn fixtures() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("fixtures dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("eml" | "txt")))
        .collect();
    files.sort();
    files
}

/// The fixtures' receiving MTA is `mx.example.com`: its Authentication-Results count, a relay's
/// below it (in `list.eml`) do not.
fn ctx() -> ParseContext {
    ParseContext {
        ingest_id: "fixture".into(),
        received_at: 1_705_000_000_000,
        trusted_authserv_ids: mailstream_parser::trusted_authserv_ids(&["mx.example.com".into()]),
        ..ParseContext::default()
    }
}

/// The golden view of a parse result.
fn golden_view(raw: &[u8]) -> Value {
    match parse_message(raw, &ctx()) {
        Ok(record) => {
            let mut value = serde_json::to_value(&record).expect("to json");
            if let Value::Object(map) = &mut value {
                for key in ["headers", "ingest_id", "received_at"] {
                    map.remove(key);
                }
            }
            value
        }
        Err(failure) => serde_json::json!({ "error_class": failure.class }),
    }
}

#[test]
fn fixtures_match_their_golden_files() {
    let bless = std::env::var_os("BLESS").is_some();
    let mut failures = Vec::new();
    let files = fixtures();
    assert!(files.len() >= 15, "the corpus is there");
    for path in &files {
        let raw = std::fs::read(path).expect("read fixture");
        let actual = golden_view(&raw);
        let golden = path.with_extension("expected.json");
        if bless {
            let text = serde_json::to_string_pretty(&actual).expect("json") + "\n";
            std::fs::write(&golden, text).expect("write golden");
            continue;
        }
        let expected: Value =
            serde_json::from_str(&std::fs::read_to_string(&golden).unwrap_or_else(|_| {
                panic!("{} is missing (BLESS=1 creates it)", golden.display())
            }))
            .expect("golden parses");
        if actual != expected {
            failures.push(format!(
                "{}:\n  expected {}\n  actual   {}",
                path.display(),
                expected,
                actual
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn headers_are_listed_in_order_and_decoded() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/qp-latin1.eml");
    let record = parse_message(&std::fs::read(path).expect("read"), &ctx()).expect("parses");
    let names: Vec<&str> = record.headers.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "Return-Path",
            "Received",
            "From",
            "To",
            "Subject",
            "Date",
            "Message-ID",
            "MIME-Version",
            "Content-Type",
            "Content-Transfer-Encoding"
        ]
    );
    assert_eq!(record.headers[4].value, "Devis société Müller");
    assert_eq!(
        record.headers[2].value,
        "François Léger <Francois.Leger@EXEMPLE.FR>"
    );
    assert!(record.headers[1].value.starts_with("from mx.exemple.fr"));
}

#[test]
fn the_generated_message_id_ignores_transit_headers() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/no-message-id.eml");
    let raw = std::fs::read(path).expect("read");
    let mut relayed =
        b"Received: from relay.example by mx.example; Fri, 12 Jan 2024 15:00:01 +0000\r\n".to_vec();
    relayed.extend_from_slice(&raw);
    let a = parse_message(&raw, &ctx()).expect("parses");
    let b = parse_message(&relayed, &ctx()).expect("parses");
    assert!(a.message_id_generated && b.message_id_generated);
    assert_eq!(a.message_id, b.message_id, "same email, same id");
    assert!(a.message_id.starts_with("mailstream-") && a.message_id.ends_with("@generated"));
}
