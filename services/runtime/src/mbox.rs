//! Splitting an mbox file into its messages: the one splitter of `mailstream backfill` and
//! `mailstream parse`.
//!
//! No maintained mbox crate fits (`mbox-reader` is unmaintained and does not unescape), and the
//! format is small, so it is split here, following RFC 4155 and the mboxrd convention:
//!
//! - an mbox starts with a `From ` line (the "From_" separator); input that does not, empty
//!   input included, is refused with [`MboxError::NotMbox`] rather than guessed at;
//! - a message starts at a `From ` line right after an empty line (`\n` or `\r\n`, nothing
//!   else) or at the start of the input; the separator line is not part of the message, and a
//!   `From ` line inside a paragraph is body text;
//! - the one empty line before the next separator, or before the end of the input, belongs to
//!   the format, not the message, and is removed;
//! - body lines escaped on writing (`>From `, `>>From `, ...) lose one `>` (mboxrd). mboxo
//!   files escape without this rule, so in those a body line that really began with `>From `
//!   comes back as `From `: an ambiguity of the mboxo format itself;
//! - line endings are kept as they are (LF or CRLF), and a last message without a final newline
//!   is kept as it is;
//! - every separator yields a message, an empty one too, so the n-th separator is always
//!   message `n`: `mailstream backfill` names a message `<file>#<n>` and that origin is part of
//!   its deterministic ingest id. What to do with an empty message is the caller's choice.
//!
//! [`messages`] reads any [`BufRead`] one line at a time and holds one message in memory, so an
//! archive larger than memory streams; [`split`] does the same over bytes already in memory.

use std::io::BufRead;

/// One message of an mbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MboxMessage {
    /// 1-based position in the file (the n-th separator).
    pub number: usize,
    /// Byte offset of its separator line in the file.
    pub offset: u64,
    /// The message, unescaped, without its separator line and trailing empty line.
    pub bytes: Vec<u8>,
}

/// Why an mbox could not be split.
#[derive(Debug, thiserror::Error)]
pub enum MboxError {
    #[error("not an mbox (does not start with a `From ` line)")]
    NotMbox,
    #[error("reading the mbox at byte {offset}: {source}")]
    Io {
        offset: u64,
        #[source]
        source: std::io::Error,
    },
}

/// Whether `head` (the start of a file) looks like an mbox: it starts with a `From ` line.
pub fn looks_like_mbox(head: &[u8]) -> bool {
    is_separator(head)
}

/// The messages of an mbox held in memory, in order.
pub fn split(data: &[u8]) -> Result<Vec<MboxMessage>, MboxError> {
    let mut splitter = Splitter::default();
    let mut messages = Vec::new();
    for line in data.split_inclusive(|b| *b == b'\n') {
        messages.extend(splitter.line(line)?);
    }
    messages.extend(splitter.end()?);
    Ok(messages)
}

/// The messages of the mbox `reader` reads, in order, read one line at a time.
pub fn messages<R: BufRead>(reader: R) -> Messages<R> {
    Messages {
        reader,
        splitter: Splitter::default(),
        line: Vec::new(),
        done: false,
    }
}

/// The iterator of [`messages`]. It ends after the first error.
#[derive(Debug)]
pub struct Messages<R> {
    reader: R,
    splitter: Splitter,
    line: Vec<u8>,
    done: bool,
}

impl<R: BufRead> Messages<R> {
    /// Reads lines until one completes a message; `None` at the end of the input.
    fn next_message(&mut self) -> Result<Option<MboxMessage>, MboxError> {
        loop {
            self.line.clear();
            let read = self
                .reader
                .read_until(b'\n', &mut self.line)
                .map_err(|source| MboxError::Io {
                    offset: self.splitter.offset,
                    source,
                })?;
            if read == 0 {
                return self.splitter.end();
            }
            if let Some(message) = self.splitter.line(&self.line)? {
                return Ok(Some(message));
            }
        }
    }
}

impl<R: BufRead> Iterator for Messages<R> {
    type Item = Result<MboxMessage, MboxError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let next = self.next_message();
        self.done = !matches!(next, Ok(Some(_)));
        next.transpose()
    }
}

/// The splitting rules, fed one line (with its line ending) at a time.
#[derive(Debug)]
struct Splitter {
    /// Bytes of input seen so far.
    offset: u64,
    /// Separators seen so far.
    separators: usize,
    previous_blank: bool,
    current: Option<MboxMessage>,
}

impl Default for Splitter {
    fn default() -> Self {
        Self {
            offset: 0,
            separators: 0,
            previous_blank: true,
            current: None,
        }
    }
}

impl Splitter {
    /// Takes one line; returns the message that a separator on this line completes.
    fn line(&mut self, line: &[u8]) -> Result<Option<MboxMessage>, MboxError> {
        let start = self.offset;
        self.offset += line.len() as u64;
        let separator = self.previous_blank && is_separator(line);
        self.previous_blank = line == b"\n" || line == b"\r\n";
        if separator {
            self.separators += 1;
            let next = MboxMessage {
                number: self.separators,
                offset: start,
                bytes: Vec::new(),
            };
            return Ok(self.current.replace(next).map(finish));
        }
        let message = self.current.as_mut().ok_or(MboxError::NotMbox)?;
        message.bytes.extend_from_slice(unescape(line));
        Ok(None)
    }

    /// The last message, at the end of the input.
    fn end(&mut self) -> Result<Option<MboxMessage>, MboxError> {
        if self.separators == 0 {
            return Err(MboxError::NotMbox);
        }
        Ok(self.current.take().map(finish))
    }
}

fn is_separator(line: &[u8]) -> bool {
    line.starts_with(b"From ")
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

/// Drops the empty line that separates a message from the next separator (all of an empty
/// message, whose bytes are that line alone).
fn finish(mut message: MboxMessage) -> MboxMessage {
    if message.bytes == b"\n" || message.bytes == b"\r\n" {
        message.bytes.clear();
    } else if message.bytes.ends_with(b"\r\n\r\n") {
        message.bytes.truncate(message.bytes.len() - 2);
    } else if message.bytes.ends_with(b"\n\n") {
        message.bytes.truncate(message.bytes.len() - 1);
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bodies(data: &[u8]) -> Vec<String> {
        split(data)
            .expect("an mbox")
            .into_iter()
            .map(|m| String::from_utf8_lossy(&m.bytes).into_owned())
            .collect()
    }

    #[test]
    fn splits_unescapes_and_drops_separators() {
        let mbox = b"From a@x Mon Jan  1 00:00:00 2024\n\
Subject: one\n\nhello\n>From the start\n>>From deeper\n>Fromage stays\nFrom inside a paragraph stays\n\n\
From b@x Mon Jan  1 00:00:01 2024\nSubject: two\n\nbye\n";
        assert_eq!(
            bodies(mbox),
            [
                "Subject: one\n\nhello\nFrom the start\n>From deeper\n>Fromage stays\nFrom inside a paragraph stays\n",
                "Subject: two\n\nbye\n",
            ]
        );
    }

    #[test]
    fn numbers_and_offsets_point_at_the_separators() {
        let mbox = b"From a\nA: 1\n\nFrom b\nB: 2\n";
        let messages = split(mbox).expect("an mbox");
        let places: Vec<(usize, u64)> = messages.iter().map(|m| (m.number, m.offset)).collect();
        assert_eq!(places, [(1, 0), (2, 13)]);
        assert!(mbox[13..].starts_with(b"From b"));
    }

    #[test]
    fn keeps_crlf_line_endings() {
        let mbox =
            b"From a Mon\r\nSubject: x\r\n\r\nbody\r\n\r\nFrom b Tue\r\nSubject: y\r\n\r\nz\r\n\r\n";
        assert_eq!(
            bodies(mbox),
            ["Subject: x\r\n\r\nbody\r\n", "Subject: y\r\n\r\nz\r\n"]
        );
    }

    #[test]
    fn keeps_a_last_message_without_a_final_newline() {
        assert_eq!(
            bodies(b"From a\nS: 1\n\nFrom b\nS: 2\n\nno newline"),
            ["S: 1\n", "S: 2\n\nno newline"]
        );
    }

    #[test]
    fn drops_one_trailing_empty_line_at_the_end_of_the_file() {
        assert_eq!(bodies(b"From a\nS: 1\n\nbody\n\n"), ["S: 1\n\nbody\n"]);
        assert_eq!(bodies(b"From a\nS: 1\n\nbody\n\n\n"), ["S: 1\n\nbody\n\n"]);
    }

    #[test]
    fn only_an_exactly_empty_line_opens_a_separator() {
        // "\r\r\n" and " \n" are not empty lines: the `From ` after them is body text.
        assert_eq!(
            bodies(b"From a\nS: 1\n\n\r\r\nFrom x\n \nFrom y\n"),
            ["S: 1\n\n\r\r\nFrom x\n \nFrom y\n"]
        );
    }

    #[test]
    fn an_empty_message_keeps_its_number_even_at_the_end() {
        let messages = split(b"From a\n\nFrom b\nS: 2\n\nFrom c\n").expect("an mbox");
        let numbered: Vec<(usize, &[u8])> = messages
            .iter()
            .map(|m| (m.number, m.bytes.as_slice()))
            .collect();
        assert_eq!(
            numbered,
            [(1, &b""[..]), (2, &b"S: 2\n"[..]), (3, &b""[..])]
        );
    }

    #[test]
    fn refuses_what_is_not_an_mbox() {
        for data in [
            &b"Subject: not an mbox\n"[..],
            b"",
            b"\nFrom a\n",
            b"From:x\n",
        ] {
            assert!(
                matches!(split(data), Err(MboxError::NotMbox)),
                "{}",
                String::from_utf8_lossy(data)
            );
            assert!(!looks_like_mbox(data));
        }
        assert!(looks_like_mbox(b"From a@x Mon Jan  1 00:00:00 2024\n"));
    }

    #[test]
    fn streaming_gives_what_splitting_in_memory_gives() {
        let mbox: &[u8] = b"From a\r\nS: 1\r\n\r\n>From q\r\n\r\nFrom b\nS: 2\n\nFrom c\nlast";
        // A tiny buffer so that lines cross buffer boundaries.
        let reader = std::io::BufReader::with_capacity(3, mbox);
        let streamed: Vec<MboxMessage> =
            messages(reader).collect::<Result<_, _>>().expect("an mbox");
        assert_eq!(streamed, split(mbox).expect("an mbox"));
        assert_eq!(streamed.len(), 3);
    }

    #[test]
    fn streaming_stops_after_an_error() {
        let mut iter = messages(&b"not an mbox\nFrom a\nS: 1\n"[..]);
        assert!(matches!(iter.next(), Some(Err(MboxError::NotMbox))));
        assert!(iter.next().is_none());
    }

    #[test]
    fn a_read_error_names_the_offset() {
        struct FailsAfter<'a>(&'a [u8]);
        impl std::io::Read for FailsAfter<'_> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                if self.0.is_empty() {
                    return Err(std::io::Error::other("disk gone"));
                }
                let n = buf.len().min(self.0.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let reader = std::io::BufReader::new(FailsAfter(b"From a\nS: 1\n\nFrom b\nS: 2"));
        let results: Vec<_> = messages(reader).collect();
        assert_eq!(results.len(), 2);
        assert!(matches!(&results[0], Ok(m) if m.bytes == b"S: 1\n"));
        assert!(
            matches!(&results[1], Err(MboxError::Io { offset: 20, .. })),
            "{:?}",
            results[1]
        );
    }
}
