//! Splitting an mbox file into messages.
//!
//! No maintained mbox crate fits (`mbox-reader` is unmaintained and does not unescape), and the
//! format is small, so it is split here, following RFC 4155 and the mboxrd convention:
//!
//! - a message starts at a `From ` line (the "From_" separator) at the start of the file or
//!   right after an empty line; the separator line itself is not part of the message;
//! - the empty line before the next separator belongs to the mbox format, not the message, and
//!   is removed;
//! - body lines that were escaped on writing (`>From `, `>>From `, ...) lose one `>`
//!   (mboxrd). mboxo files escape without this rule, so in those a body line that really began
//!   with `>From ` comes back as `From `: an ambiguity of the mboxo format itself.
//!
//! Line endings are kept as they are in the file (LF or CRLF).

/// One message of an mbox: its 1-based number, byte offset of its separator, and bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MboxMessage {
    pub number: usize,
    pub offset: usize,
    pub bytes: Vec<u8>,
}

/// Whether `data` looks like an mbox (it starts with a `From ` separator line).
pub fn looks_like_mbox(data: &[u8]) -> bool {
    data.starts_with(b"From ")
}

/// Splits `data` into its messages; `None` when it is not an mbox.
pub fn split(data: &[u8]) -> Option<Vec<MboxMessage>> {
    if !looks_like_mbox(data) {
        return None;
    }
    let mut messages = Vec::new();
    let mut current: Option<MboxMessage> = None;
    let mut previous_blank = true;
    let mut offset = 0;
    for line in data.split_inclusive(|b| *b == b'\n') {
        if previous_blank && line.starts_with(b"From ") {
            if let Some(done) = current.take() {
                messages.push(finish(done));
            }
            current = Some(MboxMessage {
                number: messages.len() + 1,
                offset,
                bytes: Vec::new(),
            });
        } else if let Some(message) = current.as_mut() {
            message.bytes.extend_from_slice(unescape(line));
        }
        previous_blank = line == b"\n" || line == b"\r\n";
        offset += line.len();
    }
    if let Some(done) = current.take() {
        messages.push(finish(done));
    }
    Some(messages)
}

/// `>From `, `>>From `, ... lose one `>`.
fn unescape(line: &[u8]) -> &[u8] {
    let quotes = line.iter().take_while(|b| **b == b'>').count();
    if quotes > 0 && line[quotes..].starts_with(b"From ") {
        &line[1..]
    } else {
        line
    }
}

/// Drops the separating empty line at the end of a message.
fn finish(mut message: MboxMessage) -> MboxMessage {
    if message.bytes.ends_with(b"\r\n\r\n") {
        message.bytes.truncate(message.bytes.len() - 2);
    } else if message.bytes.ends_with(b"\n\n") {
        message.bytes.truncate(message.bytes.len() - 1);
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_unescapes_and_drops_separators() {
        let mbox = b"From a@x Mon Jan  1 00:00:00 2024\n\
Subject: one\n\nhello\n>From the start\n>>From deeper\nFrom inside a paragraph stays\n\n\
From b@x Mon Jan  1 00:00:01 2024\nSubject: two\n\nbye\n";
        let messages = split(mbox).expect("an mbox");
        assert_eq!(messages.len(), 2);
        assert_eq!(
            String::from_utf8_lossy(&messages[0].bytes),
            "Subject: one\n\nhello\nFrom the start\n>From deeper\nFrom inside a paragraph stays\n"
        );
        assert_eq!(messages[1].bytes, b"Subject: two\n\nbye\n");
        assert_eq!(messages[1].number, 2);
        assert!(split(b"Subject: not an mbox\n").is_none());
    }

    #[test]
    fn keeps_crlf_line_endings() {
        let mbox =
            b"From a Mon\r\nSubject: x\r\n\r\nbody\r\n\r\nFrom b Tue\r\nSubject: y\r\n\r\nz\r\n";
        let messages = split(mbox).expect("an mbox");
        assert_eq!(messages[0].bytes, b"Subject: x\r\n\r\nbody\r\n");
        assert_eq!(messages[1].bytes, b"Subject: y\r\n\r\nz\r\n");
    }
}
