//! The label/value pairs of a form notification, from its text or its HTML tables.
//!
//! Text: `Label: value` lines (the value may go on below an empty one), and a known label
//! alone on its line (`What's your email?`, Gravity Forms' and Typeform's layout) with the
//! value on the next. A message field takes the lines after it up to the next label. The
//! reading stops at a footer (`--`, `This e-mail was sent from a contact form on ...`).
//! HTML: each table row's cells, label and value, as `Label: value` lines (a row with one
//! cell stays a line of its own), then read as text.

use std::sync::LazyLock;

use regex::Regex;

use super::MAX_FIELDS;
use super::words::{FIELDS, Role};
use crate::bodies::{html_to_text, re};

/// A field's role (when its label is known), its label as written, its value.
pub type Pair = (Option<Role>, String, String);

/// The most lines read.
const MAX_LINES: usize = 600;
/// The longest label kept.
pub const MAX_LABEL_BYTES: usize = 128;
/// The longest value kept (a message's included).
pub const MAX_VALUE_BYTES: usize = 4 * 1024;
/// Marks the end of a table cell in the HTML made text (a private-use character).
const CELL: char = '\u{E000}';

static COLON_PAIR: LazyLock<Regex> =
    LazyLock::new(|| re(r"^[*_\s]*(\p{L}[^:：]{0,59}?)[*_\s]*[:：]\s*[*_]*\s*(.*?)\s*$"));
static CELL_END: LazyLock<Regex> = LazyLock::new(|| re(r"(?i)</t[dh]\s*>"));

/// The pairs of a text body.
pub fn from_text(text: &str) -> Vec<Pair> {
    let lines: Vec<&str> = text.lines().take(MAX_LINES).map(str::trim).collect();
    let mut pairs: Vec<Pair> = Vec::new();
    let mut i = 0;
    while i < lines.len() && pairs.len() < MAX_FIELDS {
        let line = lines[i];
        if is_footer(line) {
            break;
        }
        i += 1;
        if line.is_empty() {
            continue;
        }
        let (label, first, role) = match colon_pair(line) {
            Some((label, value)) => (label, value, role_of(label)),
            None => match role_of(line) {
                Some(role) => (line, "", Some(role)),
                None => continue,
            },
        };
        let mut value = first.to_string();
        // A value below its label.
        if value.is_empty() {
            while i < lines.len() && lines[i].is_empty() {
                i += 1;
            }
            if i < lines.len() && !is_footer(lines[i]) && !is_label(lines[i]) {
                value = lines[i].to_string();
                i += 1;
            }
        }
        // A message goes on up to the next label.
        if role == Some(Role::Message) {
            while i < lines.len() && !is_footer(lines[i]) && !is_label(lines[i]) {
                value.push('\n');
                value.push_str(lines[i]);
                i += 1;
            }
        }
        let label = bounded(
            label.trim_end_matches(['?', ':', '*']).trim(),
            MAX_LABEL_BYTES,
        );
        pairs.push((role, label, bounded(value.trim(), MAX_VALUE_BYTES)));
    }
    pairs
}

/// The pairs of an HTML body's tables (and of its other lines).
pub fn from_html(html: &str) -> Vec<Pair> {
    let marked = CELL_END.replace_all(html, |c: &regex::Captures<'_>| format!("{CELL}{}", &c[0]));
    let text: Vec<String> = html_to_text(&marked)
        .lines()
        .take(MAX_LINES)
        .map(|line| {
            let cells: Vec<&str> = line
                .split(CELL)
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect();
            match cells.as_slice() {
                [label, rest @ ..] if !rest.is_empty() => {
                    format!(
                        "{}: {}",
                        label.trim_end_matches([':', '：']),
                        rest.join(" ")
                    )
                }
                _ => cells.join(" "),
            }
        })
        .collect();
    from_text(&text.join("\n"))
}

/// `Label: value` with a plausible label: a few words, not a link or a time.
fn colon_pair(line: &str) -> Option<(&str, &str)> {
    let caps = COLON_PAIR.captures(line)?;
    let label = caps.get(1)?.as_str().trim();
    let value = caps.get(2).map_or("", |m| m.as_str());
    let plausible = label.split_whitespace().count() <= 6
        && !label.to_ascii_lowercase().contains("http")
        && !value.starts_with("//");
    plausible.then_some((label, value))
}

/// Whether a line opens another field: a known label alone, or `Label: ...` with a known one.
fn is_label(line: &str) -> bool {
    role_of(line).is_some() || colon_pair(line).is_some_and(|(label, _)| role_of(label).is_some())
}

/// The role of a label: compared lower-cased, `-`, `_`, `*` as spaces, without a trailing
/// `:`/`?`, a `(required)` and the like.
pub fn role_of(label: &str) -> Option<Role> {
    // No known label is longer: prose lines are turned away before any allocation.
    if label.len() > 48 {
        return None;
    }
    let lower = label.to_lowercase();
    let without_note = lower.split('(').next().unwrap_or_default();
    let cleaned: String = without_note
        .chars()
        .map(|c| match c {
            '-' | '_' | '*' => ' ',
            '’' => '\'',
            c => c,
        })
        .collect();
    let cleaned = cleaned
        .trim()
        .trim_end_matches([':', '：', '?', '.'])
        .trim();
    let cleaned = cleaned.split_whitespace().collect::<Vec<_>>().join(" ");
    FIELDS
        .iter()
        .find(|(_, labels)| labels.contains(&cleaned.as_str()))
        .map(|(role, _)| *role)
}

/// A notification's footer: a signature delimiter or a plugin's closing line.
fn is_footer(line: &str) -> bool {
    let lower = line.to_lowercase();
    line.starts_with("--")
        || line.starts_with("__")
        || lower.contains("sent from a contact form on")
        || lower.contains("wurde von einem kontaktformular")
}

pub fn bounded(value: &str, max: usize) -> String {
    let mut end = value.len().min(max);
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    value[..end].to_string()
}
