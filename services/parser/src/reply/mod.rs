//! Reply stripping: the new content of a message, without the quoted conversation, forwarded
//! headers or the signature, and how sure that split is.
//!
//! The text body is read line by line for quoted history ([`quotes`]: banners, Outlook header
//! blocks, `On ... wrote:` attributions and `>` quotes, in the 22 locales of [`locales`]), then
//! the signature is split off what is left ([`signature`]). When the message has HTML with a
//! quote marker of a known client ([`html`]: Gmail's `gmail_quote`, Apple Mail's and
//! Thunderbird's `blockquote type="cite"`, Outlook's reply separators, Yahoo's
//! `yahoo_quoted`), the HTML's new content confirms the text's cut, or finds it when the text
//! alone did not.
//!
//! Every split carries a [`ReplyStripping`] status, so a failed strip is visible:
//! - `stripped`: quoted history was found and removed (and, with HTML, both agree);
//! - `nothing_quoted`: no quote and nothing that looks like one;
//! - `unsure`: quote-like lines were left in place (a lone `From:` label, a `... wrote:` that
//!   did not qualify), or the text and the HTML disagree on where the new content ends.

mod html;
pub mod locales;
pub(crate) mod patterns;
mod quotes;
mod signature;

pub use mailstream_runtime::records::ReplyStripping;

/// The new content of a message, its signature, and how sure the split is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    pub stripped: String,
    pub signature: Option<String>,
    pub status: ReplyStripping,
}

/// Splits a plain-text body into its new content and its signature.
pub fn split(text: &str) -> Split {
    split_with_html(text, None)
}

/// Splits `text` into its new content and its signature, with the message's HTML (when it has
/// any) to confirm or find the cut.
pub fn split_with_html(text: &str, html: Option<&str>) -> Split {
    let lines: Vec<&str> = text.lines().collect();
    let found = quotes::scan(&lines);
    let text_cut = found.cut.is_some() || found.dropped_quotes;
    let html_content = html.and_then(html::new_content);
    let (kept, status) = match html_content {
        None if text_cut => (found.kept, ReplyStripping::Stripped),
        None if found.doubtful > 0 => (found.kept, ReplyStripping::Unsure),
        None => (found.kept, ReplyStripping::NothingQuoted),
        Some(content) => {
            let content = comparable(&content);
            let head = comparable_lines(&lines, &found.kept);
            if text_cut {
                let status = if agree(&head, &content) {
                    ReplyStripping::Stripped
                } else {
                    ReplyStripping::Unsure
                };
                (found.kept, status)
            } else {
                match locate(&lines, &content) {
                    Some(end) => (
                        found.kept.into_iter().filter(|&k| k < end).collect(),
                        ReplyStripping::Stripped,
                    ),
                    None => (found.kept, ReplyStripping::Unsure),
                }
            }
        }
    };
    let kept: Vec<&str> = kept.iter().map(|&k| lines[k]).collect();
    let (body, signature) = signature::split(&kept);
    Split {
        stripped: join_trimmed(&body),
        signature: signature
            .map(|s| join_trimmed(&s))
            .filter(|s| !s.is_empty()),
        status,
    }
}

/// Letters and digits only, lower case: what the text and the HTML of one message share
/// whatever their layout, spacing and punctuation.
fn comparable(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

fn comparable_lines(lines: &[&str], kept: &[usize]) -> String {
    kept.iter().map(|&k| comparable(lines[k])).collect()
}

/// Whether the text's new content and the HTML's are the same, give or take a tenth (a
/// signature or a footer one of them carries).
fn agree(a: &str, b: &str) -> bool {
    let (short, long) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    !long.is_empty() && long.starts_with(short) && short.len() * 10 >= long.len() * 9
}

/// The line after which the text has said everything the HTML's new content says: the cut
/// the HTML found, in the text. `None` when the text does not start with that content.
fn locate(lines: &[&str], content: &str) -> Option<usize> {
    if content.is_empty() {
        return None;
    }
    let mut seen = String::new();
    for (k, line) in lines.iter().enumerate() {
        seen.push_str(&comparable(line));
        if seen.len() >= content.len() {
            return (seen.starts_with(content) && k + 1 < lines.len()).then_some(k + 1);
        }
        if !content.starts_with(&seen) {
            return None;
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
mod tests;
