//! Reply stripping: the new content of a message, without the quoted conversation, forwarded
//! headers or the signature.
//!
//! The text is read line by line:
//! 1. a **separator** cuts everything after it: `-----Original Message-----`, a forwarded-message
//!    banner (`---------- Forwarded message ---------`, `Begin forwarded message:`), an Outlook
//!    header block (`From:` followed within a few lines by `Sent:`/`Date:` and `To:`/`Subject:`,
//!    also in German and French), or a long `____` rule followed by such a block;
//! 2. an **attribution** (`On <date>, <who> wrote:`, possibly wrapped over three lines, and its
//!    French, German, Spanish, Italian, Dutch, Portuguese, Swedish/Danish/Norwegian and Polish
//!    forms) is dropped when `>`-quoted lines follow it (bottom-posting and interleaved replies
//!    keep the unquoted lines after the quote), and cuts everything when the quote that follows is
//!    not `>`-prefixed (HTML mail converted to text); any line ending in `wrote:` right above a
//!    `>` quote is an attribution too;
//! 3. `>`-quoted lines are dropped.
//!
//! The **signature** is then split off the remaining text, at the first of: the `-- ` delimiter
//! (RFC 3676; the delimiter itself belongs to neither part), a mobile or client footer
//! (`Sent from my iPhone`, `Get Outlook for iOS`, ...), or a sign-off line (`Best regards,`,
//! `Thanks,`, `Cheers`, ...) followed by at most six short lines (name, title, phone). A sign-off
//! is part of the signature; a sign-off that is the first line of the message is not.

use std::sync::LazyLock;

use regex::Regex;

use crate::bodies::re;

/// The new content of a message and its signature.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Split {
    pub stripped: String,
    pub signature: Option<String>,
}

static ATTRIBUTION_START: LazyLock<Regex> =
    LazyLock::new(|| re(r"(?i)^\s*(on|le|am|el|il|op|em|den|w dniu|dne|on \w+day)(?-u:\b)"));
static ATTRIBUTION_END: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?i)((wrote|writes|a écrit|a ecrit|schrieb|escribió|escribio|ha scritto|schreef|escreveu|skrev|napisał|napisal|napsal)\s*:?|(?-u:\b)(schrieb|schreef|skrev)(?-u:\b).*:)\s*$",
    )
});
static SEPARATOR: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?i)^\s*(-{2,}\s*(original message|original|forwarded message|ursprüngliche nachricht|message d'origine|message transféré|weitergeleitete nachricht|mensaje original)\s*-{2,}|begin forwarded message\s*:|anfang der weitergeleiteten nachricht\s*:|début du message réexpédié\s*:)",
    )
});
static RULE: LazyLock<Regex> = LazyLock::new(|| re(r"^\s*_{10,}\s*$"));
static HEADER_FROM: LazyLock<Regex> = LazyLock::new(|| re(r"(?i)^\s*\*?(from|von|de)\s?:\*?\s*\S"));
static HEADER_DATE: LazyLock<Regex> =
    LazyLock::new(|| re(r"(?i)^\s*\*?(sent|date|gesendet|datum|envoyé|envoye|enviado)\s?:"));
static HEADER_TO: LazyLock<Regex> =
    LazyLock::new(|| re(r"(?i)^\s*\*?(to|subject|an|betreff|à|a|objet|para|asunto)\s?:"));
static CLIENT_FOOTER: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?i)^\s*(sent from my \S.*|sent from (outlook|mail|yahoo mail|gmail)(?-u:\b).*|get outlook for \S.*|sent via \S.*|sent with \S.*|envoyé de mon \S.*|von meinem \S.* gesendet)\s*$",
    )
});
static SIGN_OFF: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?i)^\s*(thanks|thank you|thanks again|many thanks|thanks so much|thx|ta|best|best wishes|best regards|kind regards|warm regards|warmest regards|regards|cheers|sincerely|yours sincerely|yours truly|yours|all the best|talk soon|br|mit freundlichen grüßen|viele grüße|beste grüße|lg|cordialement|bien à vous|à bientôt|a bientot|saludos|un saludo|atentamente|groeten|met vriendelijke groet)\s*[,.!]?\s*$",
    )
});

/// Splits `text` into its new content and its signature.
pub fn split(text: &str) -> Split {
    let lines: Vec<&str> = text.lines().collect();
    let kept = strip_quotes(&lines);
    let (body, signature) = split_signature(&kept);
    Split {
        stripped: join_trimmed(&body),
        signature: signature
            .map(|s| join_trimmed(&s))
            .filter(|s| !s.is_empty()),
    }
}

/// Whether `line` may match a pattern anchored at its start (`^\s*\*?(...)`) whose
/// alternatives begin with one of `initials` (ASCII, any case). A cheap test that spares the
/// regex most body lines; a non-ASCII first character always goes to the regex (case folding
/// can map it to an ASCII letter).
fn may_start_with(line: &str, initials: &[u8]) -> bool {
    let rest = line.trim_start().trim_start_matches('*');
    match rest.bytes().next() {
        None => false,
        Some(b) if !b.is_ascii() => true,
        Some(b) => initials.contains(&b.to_ascii_lowercase()),
    }
}

fn is_quoted(line: &str) -> bool {
    line.trim_start().starts_with('>')
}

fn is_blank(line: &str) -> bool {
    line.trim().is_empty()
}

/// The last line of an attribution starting at `i`, if one does.
fn attribution_end(lines: &[&str], i: usize) -> Option<usize> {
    if is_quoted(lines[i]) {
        return None;
    }
    // `Name wrote:` directly above a `>` quote, whatever it starts with.
    if (i + 1..lines.len())
        .find(|&k| !is_blank(lines[k]))
        .is_some_and(|k| is_quoted(lines[k]))
        && ATTRIBUTION_END.is_match(lines[i].trim_end())
    {
        return Some(i);
    }
    if !may_start_with(lines[i], b"olaeiwd") || !ATTRIBUTION_START.is_match(lines[i]) {
        return None;
    }
    let mut joined = String::new();
    for (j, line) in lines.iter().enumerate().skip(i).take(3) {
        if j > i && (is_blank(line) || is_quoted(line)) {
            return None;
        }
        joined.push_str(line.trim());
        joined.push(' ');
        if ATTRIBUTION_END.is_match(joined.trim_end()) {
            return Some(j);
        }
    }
    None
}

/// Whether the line at `i` starts a header block of a quoted or forwarded message.
fn is_separator(lines: &[&str], i: usize) -> bool {
    if may_start_with(lines[i], b"-bad") && SEPARATOR.is_match(lines[i]) {
        return true;
    }
    let header_block = |from: usize| {
        let next = || lines.iter().skip(from + 1).take(5);
        lines
            .get(from)
            .is_some_and(|l| may_start_with(l, b"fvd") && HEADER_FROM.is_match(l))
            && next().any(|l| may_start_with(l, b"sdge") && HEADER_DATE.is_match(l))
            && next().any(|l| may_start_with(l, b"tsabop") && HEADER_TO.is_match(l))
    };
    if may_start_with(lines[i], b"_") && RULE.is_match(lines[i]) {
        let next = (i + 1..lines.len()).find(|&j| !is_blank(lines[j]));
        return next.is_some_and(header_block);
    }
    header_block(i)
}

/// The lines that are new content (signature still included).
fn strip_quotes<'a>(lines: &[&'a str]) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if !is_quoted(line) && is_separator(lines, i) {
            break;
        }
        if let Some(end) = attribution_end(lines, i) {
            match (end + 1..lines.len()).find(|&k| !is_blank(lines[k])) {
                Some(k) if is_quoted(lines[k]) => {
                    i = end + 1;
                    continue;
                }
                _ => break,
            }
        }
        if !is_quoted(line) {
            out.push(line);
        }
        i += 1;
    }
    out
}

/// Splits kept lines into body and signature (the `-- ` delimiter line belongs to neither).
fn split_signature<'a>(lines: &[&'a str]) -> (Vec<&'a str>, Option<Vec<&'a str>>) {
    let is_delimiter = |l: &str| l.trim_end() == "--";
    let end = lines
        .iter()
        .position(|l| is_delimiter(l) || (may_start_with(l, b"sgev") && CLIENT_FOOTER.is_match(l)));
    let head = &lines[..end.unwrap_or(lines.len())];
    // A sign-off block that ends the message or reaches the delimiter starts the signature.
    let start = sign_off(head).or(end);
    match start {
        Some(start) => {
            let signature = lines[start..]
                .iter()
                .copied()
                .filter(|l| !is_delimiter(l))
                .collect();
            (lines[..start].to_vec(), Some(signature))
        }
        None => (lines.to_vec(), None),
    }
}

/// Where a closing sign-off block starts: a sign-off line (not the first line of content)
/// followed by one to six short lines.
fn sign_off(lines: &[&str]) -> Option<usize> {
    let first_content = lines.iter().position(|l| !is_blank(l));
    let content: Vec<usize> = (0..lines.len()).filter(|&i| !is_blank(lines[i])).collect();
    for (n, &i) in content.iter().enumerate().rev().take(8) {
        if Some(i) == first_content || !SIGN_OFF.is_match(lines[i]) {
            continue;
        }
        let after = &content[n + 1..];
        if !after.is_empty()
            && after.len() <= 6
            && after.iter().all(|&j| lines[j].trim().chars().count() <= 60)
        {
            return Some(i);
        }
    }
    None
}

/// Joins lines, dropping leading and trailing blank lines and collapsing runs of blank lines.
fn join_trimmed(lines: &[&str]) -> String {
    let mut out: Vec<&str> = Vec::new();
    for line in lines {
        let line = line.trim_end();
        if line.is_empty() && out.last().is_none_or(|l| l.is_empty()) {
            continue;
        }
        out.push(line);
    }
    while out.last().is_some_and(|l| l.is_empty()) {
        out.pop();
    }
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_posted_reply_loses_the_quote() {
        let s = split(
            "Sounds good.\n\nOn Tue, 2 Jan 2024 at 10:00, Ann <a@x.com> wrote:\n> Shall we?\n",
        );
        assert_eq!(s.stripped, "Sounds good.");
        assert_eq!(s.signature, None);
    }

    #[test]
    fn wrapped_attribution_and_signature() {
        let s = split("Yes.\n\nOn Tue, Jan 2, 2024 at 10:00 AM Ann Lee\n<a@x.com> wrote:\n> q\n");
        assert_eq!(s.stripped, "Yes.");
        let s = split("Yes.\n-- \nBob\nAcme\n");
        assert_eq!(
            (s.stripped.as_str(), s.signature.as_deref()),
            ("Yes.", Some("Bob\nAcme"))
        );
    }

    #[test]
    fn leading_sign_off_is_content() {
        let s = split("Thanks!\nBob");
        assert_eq!(s.stripped, "Thanks!\nBob");
    }
}
