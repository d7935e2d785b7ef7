//! Splitting mbox files (`mailstream parse --mbox`, and auto-detected when a file starts with
//! a `From ` postmark line).
//!
//! A message starts at a `From ` line at the start of the file or after a blank line (mboxo and
//! mboxrd agree on that). The blank line before the next postmark belongs to the separator, and
//! `>From ` escapes are undone one level (mboxrd: `>>From ` becomes `>From `).

/// Whether `bytes` look like an mbox file rather than one message.
pub fn looks_like_mbox(bytes: &[u8]) -> bool {
    bytes.starts_with(b"From ")
}

/// The messages of an mbox file, in order.
pub fn split(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut messages = Vec::new();
    let mut current: Option<Vec<u8>> = None;
    let mut previous_blank = true;
    for line in bytes.split_inclusive(|b| *b == b'\n') {
        let blank = line.iter().all(|b| matches!(b, b'\r' | b'\n'));
        if previous_blank && line.starts_with(b"From ") {
            if let Some(mut done) = current.take() {
                trim_separator(&mut done);
                messages.push(done);
            }
            current = Some(Vec::new());
            previous_blank = false;
            continue;
        }
        let body = current.get_or_insert_with(Vec::new);
        let quoted = line.iter().position(|b| *b != b'>').unwrap_or(line.len());
        if quoted > 0 && line[quoted..].starts_with(b"From ") {
            body.extend_from_slice(&line[1..]);
        } else {
            body.extend_from_slice(line);
        }
        previous_blank = blank;
    }
    if let Some(mut done) = current {
        trim_separator(&mut done);
        if !done.is_empty() {
            messages.push(done);
        }
    }
    messages
}

/// Drops the one blank line that separates a message from the next postmark.
fn trim_separator(message: &mut Vec<u8>) {
    if message.ends_with(b"\r\n\r\n") {
        message.truncate(message.len() - 2);
    } else if message.ends_with(b"\n\n") {
        message.truncate(message.len() - 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_on_postmarks_and_unescapes() {
        let mbox = b"From a@x Mon Jan  1 00:00:00 2024\nSubject: one\n\n>From here\nFrom the text\n\nFrom b@x Mon Jan  1 00:00:01 2024\nSubject: two\n\nbody\n";
        let messages = split(mbox);
        assert_eq!(messages.len(), 2);
        assert_eq!(
            messages[0],
            b"Subject: one\n\nFrom here\nFrom the text\n".to_vec()
        );
        assert_eq!(messages[1], b"Subject: two\n\nbody\n".to_vec());
        assert!(looks_like_mbox(mbox));
    }
}
