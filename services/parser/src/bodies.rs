//! Bodies: the plain text and the HTML of a message, with tracking pixels removed.
//!
//! `text` joins the message's text/plain body parts; when there are none it is derived from the
//! (cleaned) HTML. `html` joins the text/html body parts after [`remove_tracking`] took out
//! 1x1 images, images hidden with `display:none` / `visibility:hidden`, and images served from
//! known tracker hosts or open-tracking paths.
//!
//! [`html_to_text`] keeps the block structure (paragraphs, `<br>`, table rows and list items
//! become lines) and writes `<blockquote>` content as `> ` quoted lines, so reply stripping works
//! the same on HTML-only mail as on plain text.

use std::sync::LazyLock;

use mail_parser::{Message, PartType};
use regex::Regex;

/// Hosts (or host suffixes) that only serve open-tracking pixels.
const TRACKER_HOSTS: &[&str] = &[
    "mailtrack.io",
    "mltrk.io",
    "t.yesware.com",
    "app.yesware.com",
    "track.hubspot.com",
    "t.hubspotemail.net",
    "t.sidekickopen",
    "t.signaux",
    "t.senal",
    "mandrillapp.com",
    "list-manage.com",
    "email.mg.",
    "sendgrid.net",
    "ct.sendgrid.net",
    "open.convertkit-mail",
    "pixel.mailchimp",
    "mixmax.com",
    "bananatag.com",
    "getnotify.com",
    "streak.com",
    "mailstat.us",
    "pixel.watch",
    "google-analytics.com",
    "email.mailgun",
    "trk.klclick",
    "links.iterable.com",
    "click.pstmrk.it",
    "open.substack.com",
];

/// Path fragments of open-tracking URLs.
const TRACKER_PATHS: &[&str] = &[
    "/track/open",
    "/tracking/open",
    "/wf/open",
    "/open.gif",
    "/open.php",
    "/o.gif",
    "/pixel.gif",
    "/pixel.png",
    "/beacon",
    "/e/o/",
    "/trk/",
    "/mo/",
    "/openrate",
    "/imp?",
    "utm_medium=email&utm_content=pixel",
];

static IMG: LazyLock<Regex> = LazyLock::new(|| re(r"(?is)<img(?-u:\b)[^>]*>"));
static ATTR: LazyLock<Regex> = LazyLock::new(|| {
    re(r#"(?is)(?-u:\b)(src|width|height|style)\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+))"#)
});
static CSS_SIZE: LazyLock<Regex> =
    LazyLock::new(|| re(r"(?i)(?-u:\b)(width|height)\s*:\s*([0-9.]+)\s*(px)?"));

/// Compiles a literal pattern. Every pattern of the crate is a constant exercised by the unit
/// tests, so this cannot fail at run time (and `parse_message` catches panics regardless).
pub(crate) fn re(pattern: &str) -> Regex {
    Regex::new(pattern).expect("literal regex compiles")
}

/// The text and HTML of `message`: `(text, html)`.
pub fn bodies(message: &Message<'_>) -> (Option<String>, Option<String>) {
    let mut html_parts = Vec::new();
    for id in &message.html_body {
        if let Some(PartType::Html(html)) = message.parts.get(*id as usize).map(|p| &p.body) {
            html_parts.push(remove_tracking(html).trim_end().to_string());
        }
    }
    let html = (!html_parts.is_empty()).then(|| html_parts.join("\n"));

    let mut text_parts = Vec::new();
    for id in &message.text_body {
        if let Some(PartType::Text(text)) = message.parts.get(*id as usize).map(|p| &p.body) {
            text_parts.push(normalize_newlines(text));
        }
    }
    let text = if text_parts.is_empty() {
        html.as_deref()
            .map(|h| normalize_newlines(&html_to_text(h)))
    } else {
        Some(text_parts.join("\n"))
    };
    (text.filter(|t| !t.trim().is_empty()), html)
}

static SKIPPED: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?is)<!--.*?-->|<(head|style|script|title)(?-u:\b)[^>]*>.*?</(head|style|script|title)\s*>",
    )
});
static TAG: LazyLock<Regex> =
    LazyLock::new(|| re(r"(?s)<(/?)([a-zA-Z][a-zA-Z0-9]*)(?-u:\b)[^>]*>"));
static ENTITY: LazyLock<Regex> =
    LazyLock::new(|| re(r"&(#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[a-zA-Z]{2,8});"));

/// Converts HTML to plain text: block elements become lines, `<blockquote>` becomes `> `
/// quoting, entities are decoded and whitespace collapsed.
pub fn html_to_text(html: &str) -> String {
    let html = SKIPPED.replace_all(html, "");
    let mut out = HtmlText::default();
    let mut last = 0;
    for caps in TAG.captures_iter(&html) {
        let (Some(whole), Some(close), Some(name)) = (caps.get(0), caps.get(1), caps.get(2)) else {
            continue;
        };
        out.current
            .push_str(&decode_entities(&html[last..whole.start()]));
        last = whole.end();
        let closing = !close.as_str().is_empty();
        match name.as_str().to_ascii_lowercase().as_str() {
            "br" => out.line_break(),
            "p" if closing => {
                out.flush();
                out.blank();
            }
            "blockquote" => {
                out.flush();
                out.depth = if closing {
                    out.depth.saturating_sub(1)
                } else {
                    out.depth + 1
                };
            }
            "p" | "div" | "tr" | "li" | "ul" | "ol" | "table" | "h1" | "h2" | "h3" | "h4"
            | "h5" | "h6" | "hr" | "pre" | "section" | "article" | "header" | "footer" | "dt"
            | "dd" => {
                out.flush();
            }
            "td" | "th" if closing => out.current.push(' '),
            _ => {}
        }
    }
    out.current.push_str(&decode_entities(&html[last..]));
    out.flush();
    out.lines.join("\n").trim().to_string()
}

/// The lines [`html_to_text`] builds.
#[derive(Default)]
struct HtmlText {
    lines: Vec<String>,
    current: String,
    depth: usize,
}

impl HtmlText {
    /// Ends the current line if it has text, quoted at the current blockquote depth.
    fn flush(&mut self) {
        let text = self
            .current
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        self.current.clear();
        if !text.is_empty() {
            self.lines
                .push(format!("{}{text}", "> ".repeat(self.depth)));
        }
    }

    /// A blank line, unless there is one already.
    fn blank(&mut self) {
        if self.lines.last().is_some_and(|l| !l.is_empty()) {
            self.lines.push(String::new());
        }
    }

    fn line_break(&mut self) {
        if self.current.trim().is_empty() {
            self.blank();
        } else {
            self.flush();
        }
    }
}

fn decode_entities(text: &str) -> String {
    ENTITY
        .replace_all(text, |caps: &regex::Captures<'_>| {
            let name = caps.get(1).map_or("", |m| m.as_str());
            let decoded =
                if let Some(hex) = name.strip_prefix("#x").or_else(|| name.strip_prefix("#X")) {
                    u32::from_str_radix(hex, 16).ok().and_then(char::from_u32)
                } else if let Some(dec) = name.strip_prefix('#') {
                    dec.parse().ok().and_then(char::from_u32)
                } else {
                    match name.to_ascii_lowercase().as_str() {
                        "amp" => Some('&'),
                        "lt" => Some('<'),
                        "gt" => Some('>'),
                        "quot" => Some('"'),
                        "apos" => Some('\''),
                        "nbsp" => Some(' '),
                        "ndash" => Some('–'),
                        "mdash" => Some('—'),
                        "hellip" => Some('…'),
                        "rsquo" => Some('’'),
                        "lsquo" => Some('‘'),
                        "rdquo" => Some('”'),
                        "ldquo" => Some('“'),
                        "euro" => Some('€'),
                        "copy" => Some('©'),
                        _ => None,
                    }
                };
            decoded.map_or_else(
                || caps.get(0).map_or("", |m| m.as_str()).to_string(),
                String::from,
            )
        })
        .into_owned()
}

/// CRLF and CR to LF, trailing whitespace of the whole text trimmed.
pub fn normalize_newlines(text: &str) -> String {
    let mut rest = text.trim_end();
    let mut out = String::with_capacity(rest.len());
    while let Some(cr) = rest.find('\r') {
        out.push_str(&rest[..cr]);
        out.push('\n');
        rest = &rest[cr + 1..];
        rest = rest.strip_prefix('\n').unwrap_or(rest);
    }
    out.push_str(rest);
    out
}

/// Removes tracking pixels from `html`.
pub fn remove_tracking(html: &str) -> String {
    IMG.replace_all(html, |caps: &regex::Captures<'_>| {
        let tag = caps.get(0).map_or("", |m| m.as_str());
        if is_tracking_pixel(tag) {
            String::new()
        } else {
            tag.to_string()
        }
    })
    .into_owned()
}

/// Whether one `<img ...>` tag is a tracking pixel.
pub fn is_tracking_pixel(tag: &str) -> bool {
    let mut src = String::new();
    let mut width = None;
    let mut height = None;
    let mut style = String::new();
    for caps in ATTR.captures_iter(tag) {
        let name = caps.get(1).map_or("", |m| m.as_str()).to_ascii_lowercase();
        let value = caps
            .get(2)
            .or_else(|| caps.get(3))
            .or_else(|| caps.get(4))
            .map_or("", |m| m.as_str());
        match name.as_str() {
            "src" => src = value.to_ascii_lowercase(),
            "width" => width = parse_px(value),
            "height" => height = parse_px(value),
            "style" => style = value.to_ascii_lowercase(),
            _ => {}
        }
    }
    for caps in CSS_SIZE.captures_iter(&style) {
        let value = caps.get(2).and_then(|m| m.as_str().parse::<f64>().ok());
        match caps
            .get(1)
            .map(|m| m.as_str().to_ascii_lowercase())
            .as_deref()
        {
            Some("width") => width = width.or(value),
            Some("height") => height = height.or(value),
            _ => {}
        }
    }
    let compact: String = style.chars().filter(|c| !c.is_whitespace()).collect();
    if compact.contains("display:none") || compact.contains("visibility:hidden") {
        return true;
    }
    if matches!((width, height), (Some(w), Some(h)) if w <= 1.0 && h <= 1.0) {
        return true;
    }
    if src.starts_with("cid:") || src.starts_with("data:") {
        return false;
    }
    let host = src
        .split("://")
        .nth(1)
        .and_then(|rest| rest.split(['/', '?', '#']).next())
        .unwrap_or_default();
    TRACKER_HOSTS
        .iter()
        .any(|t| host == t.trim_end_matches('.') || host.contains(t))
        || TRACKER_PATHS.iter().any(|p| src.contains(p))
}

fn parse_px(value: &str) -> Option<f64> {
    value.trim().trim_end_matches("px").trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_becomes_lines_and_quotes() {
        let html = "<html><head><style>p{}</style></head><body><div>Hi&nbsp;Ann,</div><p>Yes &amp; no.<br>Bob</p><blockquote><div>Old  text</div><blockquote>older</blockquote></blockquote><p>After</p></body></html>";
        assert_eq!(
            html_to_text(html),
            "Hi Ann,\nYes & no.\nBob\n\n> Old text\n> > older\nAfter"
        );
    }

    #[test]
    fn tracking_pixels_are_removed_and_content_images_kept() {
        let html = concat!(
            r#"<p>Hi</p><img src="https://example.com/logo.png" width="120" height="40">"#,
            r#"<img src="https://t.example.net/x.gif" width="1" height="1">"#,
            r#"<IMG SRC='https://example.org/a.png' style="display: none">"#,
            r#"<img src="https://mailtrack.io/trace/mail/abc.png">"#,
            r#"<img src="https://u1.ct.sendgrid.net/wf/open?upn=abc" alt="">"#,
            r#"<img src="https://x.example/p.gif" style="width:1px;height:1px">"#,
            r#"<img src="cid:logo@acme" width="200">"#,
        );
        let cleaned = remove_tracking(html);
        assert_eq!(
            cleaned,
            r#"<p>Hi</p><img src="https://example.com/logo.png" width="120" height="40"><img src="cid:logo@acme" width="200">"#
        );
    }
}
