//! Messages rebuilt with `mail-builder` from a provider's parsed fields, when it does not post
//! the message as received (Postmark without `RawEmail`, SendGrid's parsed mode): the headers it
//! reports, as they are, then a MIME body of its text and HTML bodies and its attachments. The
//! MIME structure (boundaries, transfer encodings) is new; what the headers say is kept.

use mail_builder::MessageBuilder;
use mail_builder::headers::raw::Raw;

use super::bad_payload;
use crate::http::intake::Refusal;

/// Headers that describe the MIME structure `mail-builder` writes itself.
const MIME_STRUCTURE: [&str; 3] = ["mime-version", "content-type", "content-transfer-encoding"];

/// A header value on one line: a CR or LF from the payload cannot start a header of its own.
pub(super) fn one_line(value: &str) -> String {
    value.replace(['\r', '\n'], " ").trim().to_string()
}

/// The message being rebuilt, and whether it has a Message-ID yet.
pub(super) struct Rebuilt {
    pub message: MessageBuilder<'static>,
    pub has_message_id: bool,
}

/// One attachment.
pub(super) struct Part {
    pub file_name: String,
    pub content_type: String,
    /// Inline (`Content-ID`) when not empty.
    pub content_id: String,
    pub bytes: Vec<u8>,
}

impl Rebuilt {
    pub fn new() -> Self {
        Self {
            message: MessageBuilder::new(),
            has_message_id: false,
        }
    }

    /// Applies `f` to the builder (the structured headers: From, To, ...).
    pub fn with(&mut self, f: impl FnOnce(MessageBuilder<'static>) -> MessageBuilder<'static>) {
        self.message = f(std::mem::take(&mut self.message));
    }

    /// Adds a header as reported (its value on one line), unless its name is not a header
    /// name, it describes the MIME structure, or it is in `skip` (lowercase).
    pub fn header(&mut self, name: &str, value: &str, skip: &[&str]) {
        let name = name.trim();
        let token = !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && b != b':');
        let lower = name.to_ascii_lowercase();
        if !token || MIME_STRUCTURE.contains(&lower.as_str()) || skip.contains(&lower.as_str()) {
            return;
        }
        // mail-builder recognises its own spellings: it then adds no Message-ID or Date.
        let name = match lower.as_str() {
            "message-id" => {
                self.has_message_id = true;
                "Message-ID".to_string()
            }
            "date" => "Date".to_string(),
            _ => name.to_string(),
        };
        self.with(|m| m.header(name, Raw::new(one_line(value))));
    }

    /// The body (text, HTML: at least a text part) and the attachments, then the bytes.
    pub fn finish(self, text: String, html: String, parts: Vec<Part>) -> Result<Vec<u8>, Refusal> {
        let mut message = self.message;
        if !text.is_empty() || html.is_empty() {
            message = message.text_body(text);
        }
        if !html.is_empty() {
            message = message.html_body(html);
        }
        for part in parts {
            let content_type = match part.content_type.trim() {
                "" => "application/octet-stream".to_string(),
                other => one_line(other),
            };
            let cid = part
                .content_id
                .trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_string();
            message = if cid.is_empty() {
                message.attachment(content_type, one_line(&part.file_name), part.bytes)
            } else {
                message.inline(content_type, one_line(&cid), part.bytes)
            };
        }
        message
            .write_to_vec()
            .map_err(|e| bad_payload(format!("the message cannot be rebuilt: {e}")))
    }
}
