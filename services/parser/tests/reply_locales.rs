//! Reply stripping in every locale of `reply::locales`: each file of `fixtures/replies/` (one
//! per locale, written for these tests) holds the layouts that matter — an Outlook header
//! block (desktop, and web with a rule and bold labels), Gmail's attribution wrapped over two
//! lines above unquoted history, Apple Mail's or Thunderbird's attribution above a `>` quote,
//! and a mobile footer — with the stripped text and the status each must give.

use std::path::Path;

use mailstream_parser::reply::{ReplyStripping, split};

struct Case {
    file: String,
    name: String,
    status: String,
    body: String,
    expected: String,
}

fn cases(path: &Path) -> Vec<Case> {
    let text = std::fs::read_to_string(path).expect("fixture readable");
    let file = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut out = Vec::new();
    for chunk in text.split("\n## ").skip(1) {
        let (header, rest) = chunk.split_once('\n').expect("a case has a header line");
        let (name, status) = header.split_once(" | ").expect("`<case> | <status>`");
        let (body, expected) = rest.split_once("\n=>\n").expect("a case has `=>`");
        out.push(Case {
            file: file.clone(),
            name: name.to_string(),
            status: status.trim().to_string(),
            body: body.to_string(),
            expected: expected.trim().to_string(),
        });
    }
    out
}

#[test]
fn every_locale_strips_every_client_layout() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/replies");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("fixtures/replies exists")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 22,
        "one file per locale, found {}",
        files.len()
    );
    let mut failures = Vec::new();
    let mut count = 0;
    for path in &files {
        for case in cases(path) {
            count += 1;
            let split = split(&case.body);
            let status = match split.status {
                ReplyStripping::Stripped => "stripped",
                ReplyStripping::NothingQuoted => "nothing_quoted",
                ReplyStripping::Unsure => "unsure",
            };
            if split.stripped != case.expected || status != case.status {
                failures.push(format!(
                    "{} / {}: got {:?} ({status}), want {:?} ({})",
                    case.file, case.name, split.stripped, case.expected, case.status
                ));
            }
        }
    }
    assert!(count >= 22 * 5, "{count} cases");
    assert!(
        failures.is_empty(),
        "{} of {count} cases fail:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
