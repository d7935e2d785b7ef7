//! Splitting the signature off the new content.
//!
//! The signature starts at the first of: the `-- ` delimiter (RFC 3676; `--` too; the delimiter
//! belongs to neither part), a mobile or client footer in any locale (`Sent from my iPhone`,
//! `Von meinem iPhone gesendet`, `Get Outlook for Android`: a short line without a comma, so
//! `Sent from my desk, which is easier` stays content), a mailing-list footer (a `__` rule and
//! at most six lines to the end), or a closing in any locale (`Best regards,`,
//! `Mit freundlichen Grüßen`) followed by at most six short lines (name, title, phone). A
//! closing that is the first line of the message is content.

use super::patterns::{FOOTER, SIGN_OFF};

/// Splits kept lines into body and signature.
pub fn split<'a>(lines: &[&'a str]) -> (Vec<&'a str>, Option<Vec<&'a str>>) {
    let is_delimiter = |l: &str| l.trim_end() == "--";
    let end = lines
        .iter()
        .position(|l| is_delimiter(l) || is_footer(l))
        .into_iter()
        .chain(list_footer(lines))
        .min();
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

/// A mobile or client footer: a short line (links aside) without a comma.
fn is_footer(line: &str) -> bool {
    let t = line.trim();
    // Longer than a footer can be (60 characters, links aside): most prose, without a regex.
    let too_long = t.len() > 60 && !t.contains('<') && (t.is_ascii() || t.chars().count() > 60);
    if t.is_empty() || t.len() > 120 || too_long || !FOOTER.is_match(t) {
        return false;
    }
    let without_links: String = {
        let mut out = String::new();
        let mut depth = 0usize;
        for c in t.chars() {
            match c {
                '<' => depth += 1,
                '>' => depth = depth.saturating_sub(1),
                _ if depth == 0 => out.push(c),
                _ => {}
            }
        }
        out
    };
    without_links.chars().count() <= 60
        && !without_links.contains(',')
        && FOOTER.is_match(&without_links)
}

/// Where a mailing-list footer starts: the last `__` rule followed by one to six lines, up
/// to the end.
fn list_footer(lines: &[&str]) -> Option<usize> {
    let rule = lines.iter().rposition(|l| {
        let t = l.trim();
        t.len() >= 2 && t.chars().all(|c| c == '_')
    })?;
    let after = lines[rule + 1..]
        .iter()
        .filter(|l| !l.trim().is_empty())
        .count();
    (1..=6).contains(&after).then_some(rule)
}

/// Where a closing sign-off block starts: a sign-off line (not the first line of content)
/// followed by one to six short lines.
fn sign_off(lines: &[&str]) -> Option<usize> {
    let first_content = lines.iter().position(|l| !l.trim().is_empty());
    let content: Vec<usize> = (0..lines.len())
        .filter(|&i| !lines[i].trim().is_empty())
        .collect();
    for (n, &i) in content.iter().enumerate().rev().take(8) {
        if Some(i) == first_content || lines[i].len() > 60 || !SIGN_OFF.is_match(lines[i]) {
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
