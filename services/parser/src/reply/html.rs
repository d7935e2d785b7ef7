//! Quoted history in the HTML body, found by the markup mail clients put around it:
//!
//! | client | marker | what goes |
//! |---|---|---|
//! | Gmail | `div.gmail_quote` (`gmail_quote_container`, `blockquote.gmail_quote`) | the element |
//! | Apple Mail, Thunderbird | `blockquote type="cite"` (and Thunderbird's `div.moz-cite-prefix` attribution) | the element |
//! | Yahoo | `div.yahoo_quoted` | the element |
//! | Outlook web / new Outlook | `div#divRplyFwdMsg` (`x_divRplyFwdMsg` when re-quoted) | it and everything after it |
//! | Outlook desktop | a `div` styled `border-top:solid #E1E1E1` (`#B5C4DF` in older versions) around the header block, `div.OutlookMessageHeader` | it and everything after it |
//!
//! The HTML is rewritten with `lol_html` (a streaming HTML rewriter, so no DOM is built) only
//! when a cheap test finds one of the markers; the rest is made text by
//! [`crate::bodies::html_to_text`], the same conversion the text body of HTML-only mail gets.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::LazyLock;

use lol_html::{RewriteStrSettings, doc_text, element, rewrite_str};
use regex::Regex;

use crate::bodies::{html_to_text, re};

/// Any of the markers, as the clients write them: plain literals, so the search is one SIMD
/// scan of the HTML that spares the rewriter almost every message.
static MARKER: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r#"gmail_quote|type="cite"|type=cite|divRplyFwdMsg|solid #E1E1E1|solid #e1e1e1|solid #B5C4DF|solid #b5c4df|OutlookMessageHeader|yahoo_quoted|moz-cite-prefix"#,
    )
});

/// Elements that hold quoted history (removed with their content).
const QUOTE_SELECTORS: &[&str] = &[
    "div.gmail_quote",
    "div.gmail_quote_container",
    "blockquote.gmail_quote",
    "blockquote[type=cite]",
    "div.yahoo_quoted",
    "div.moz-cite-prefix",
];

/// Elements that open quoted history: they and everything after them go.
const SEPARATOR_SELECTORS: &[&str] = &[
    "div#divRplyFwdMsg",
    "div#x_divRplyFwdMsg",
    "div.OutlookMessageHeader",
    r#"div[style*="border-top:solid #E1E1E1"]"#,
    r#"div[style*="border-top:solid #e1e1e1"]"#,
    r#"div[style*="border-top: solid #E1E1E1"]"#,
    r#"div[style*="border-top:solid #B5C4DF"]"#,
    r#"div[style*="border-top: solid #B5C4DF"]"#,
];

/// Whether `html` carries one of the markers at all.
pub fn has_marker(html: &str) -> bool {
    MARKER.is_match(html)
}

/// The text of `html` without its quoted history, when a quote marker was found in it; `None`
/// when there is none (or the HTML cannot be rewritten).
pub fn new_content(html: &str) -> Option<String> {
    if !has_marker(html) {
        return None;
    }
    let found = Rc::new(Cell::new(false));
    let cut = Rc::new(Cell::new(false));
    // Constant selectors, checked by the tests (the macro parses them).
    let (quote_found, separator_found, separator_cut) = (found.clone(), found.clone(), cut.clone());
    let mut settings = RewriteStrSettings::new()
        .with_strict(false)
        .append_element_content_handler(element!(QUOTE_SELECTORS.join(", "), move |el| {
            quote_found.set(true);
            el.remove();
            Ok(())
        }))
        .append_element_content_handler(element!(SEPARATOR_SELECTORS.join(", "), move |el| {
            separator_found.set(true);
            separator_cut.set(true);
            el.remove();
            Ok(())
        }));
    let after_cut = cut.clone();
    settings = settings.append_element_content_handler(element!("*", move |el| {
        if after_cut.get() {
            el.remove();
        }
        Ok(())
    }));
    let text_cut = cut.clone();
    settings = settings.append_document_content_handler(doc_text!(move |chunk| {
        if text_cut.get() {
            chunk.remove();
        }
        Ok(())
    }));
    let rewritten = rewrite_str(html, settings).ok()?;
    found.get().then(|| html_to_text(&rewritten))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gmail_quote_is_removed() {
        let html = r#"<div dir="ltr">Works for me.</div><br><div class="gmail_quote"><div class="gmail_attr">On Mon, Ann wrote:<br></div><blockquote class="gmail_quote">Tuesday?</blockquote></div>"#;
        assert_eq!(new_content(html).as_deref(), Some("Works for me."));
    }

    #[test]
    fn outlook_separator_cuts_the_rest() {
        let html = r#"<div>Approved.</div><div style="border:none;border-top:solid #E1E1E1 1.0pt;padding:3.0pt 0in 0in 0in"><p><b>From:</b> Bob</p></div><p>Can you approve?</p>"#;
        assert_eq!(new_content(html).as_deref(), Some("Approved."));
        let web = r#"<div>Yes.</div><hr><div id="divRplyFwdMsg"><b>From:</b> Bob</div><div>Old text</div>"#;
        assert_eq!(new_content(web).as_deref(), Some("Yes."));
    }

    #[test]
    fn apple_cite_and_no_marker() {
        let html = r#"<div>See you.</div><div><br><blockquote type="cite"><div>Tuesday?</div></blockquote></div>"#;
        assert_eq!(new_content(html).as_deref(), Some("See you."));
        assert_eq!(new_content("<p>Hello</p>"), None);
    }
}
