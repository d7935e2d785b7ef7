//! `mailstream parse FILE...`: the parser offline. Each message becomes one line of JSON with
//! the fields of the `parsed` Avro record, made by the same `parse_message` the processor runs.
//!
//! Inputs: `.eml` files, mbox files (detected by a leading `From ` postmark line and split by
//! [`mailstream_runtime::mbox`], the splitter of `mailstream backfill`), and standard input when
//! no file or `-` is given. `--mbox` insists that every input is an mbox: one that is not is
//! reported as failed (`not-mbox`) instead of being parsed as one message. `ingest_id` is
//! `file:<path>` (`file:<path>#<n>` for the n-th message of an mbox of several, `stdin` for
//! standard input) and
//! `received_at` is the time of the run; the envelope is empty. With `--blob-url` attachments are
//! stored as the processor stores them, so the records match the processor's field for field.
//!
//! A message that cannot be read as email is reported on stderr (`<input>: <class>: <reason>`)
//! and the command goes on with the next one; it exits 1 when any input failed.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use mailstream_parser::{ParseContext, parse_with_attachments, trusted_authserv_ids};
use mailstream_runtime::blob::BlobStore;
use mailstream_runtime::mbox::{self, MboxError};

/// Options of `mailstream parse`.
#[derive(Debug, clap::Args)]
pub struct ParseArgs {
    /// .eml or mbox files; none or `-` reads standard input.
    pub files: Vec<PathBuf>,
    /// Every input must be an mbox file: one that does not start with a `From ` line fails
    /// (otherwise such an input is one message).
    #[arg(long)]
    pub mbox: bool,
    /// Store attachments in this blob store (`file:///dir`) and record their URIs, as
    /// `mailstream run parser` does.
    #[arg(long)]
    pub blob_url: Option<String>,
    /// Authserv-ids of our receiving MTAs (comma-separated): SPF, DKIM and DMARC are read from
    /// the topmost `Authentication-Results` header one of them added, as `parser.trusted_authserv_ids`.
    #[arg(long, value_delimiter = ',')]
    pub trusted_authserv_ids: Vec<String>,
}

/// Parses every input and prints one JSON record per message.
pub async fn execute(args: ParseArgs) -> anyhow::Result<ExitCode> {
    let trusted = trusted_authserv_ids(&args.trusted_authserv_ids);
    let blobs = match &args.blob_url {
        Some(url) => Some(BlobStore::open(url, &[]).map_err(anyhow::Error::msg)?),
        None => None,
    };
    let inputs = if args.files.is_empty() {
        vec![PathBuf::from("-")]
    } else {
        args.files.clone()
    };
    let received_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or_default();
    let mut failed = false;
    let stdout = std::io::stdout();
    for input in inputs {
        let (label, bytes) = match read_input(&input) {
            Ok(read) => read,
            Err(e) => {
                eprintln!("{}: {e:#}", input.display());
                failed = true;
                continue;
            }
        };
        let messages = match messages_of(&label, bytes, args.mbox) {
            Ok(messages) => messages,
            Err(e) => {
                eprintln!("{label}: not-mbox: {e}");
                failed = true;
                continue;
            }
        };
        for (id, raw) in messages {
            let ctx = ParseContext {
                ingest_id: id.clone(),
                received_at,
                trusted_authserv_ids: trusted.clone(),
                ..ParseContext::default()
            };
            match parse_with_attachments(&raw, &ctx) {
                Ok(parsed) => {
                    let mut record = parsed.record;
                    if let Some(blobs) = &blobs {
                        for (attachment, bytes) in
                            record.attachments.iter_mut().zip(parsed.attachment_bytes)
                        {
                            let (uri, _) = blobs
                                .put(bytes)
                                .await
                                .map_err(|e| anyhow::anyhow!("{id}: {e}"))?;
                            attachment.blob_uri = Some(uri);
                        }
                    }
                    let line = serde_json::to_string(&record).context("encoding JSON")?;
                    let mut out = stdout.lock();
                    writeln!(out, "{line}").context("writing to stdout")?;
                }
                Err(failure) => {
                    eprintln!("{id}: {}: {}", failure.class, failure.reason);
                    failed = true;
                }
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The (ingest id, bytes) messages of the input `label`: the messages of an mbox (one that
/// looks like one, or any with `force_mbox`), `<label>#<n>` when there are several, else the
/// input as one message.
fn messages_of(
    label: &str,
    bytes: Vec<u8>,
    force_mbox: bool,
) -> Result<Vec<(String, Vec<u8>)>, MboxError> {
    if !force_mbox && !mbox::looks_like_mbox(&bytes) {
        return Ok(vec![(label.to_string(), bytes)]);
    }
    let messages = mbox::split(&bytes)?;
    let several = messages.len() > 1;
    Ok(messages
        .into_iter()
        .map(|m| {
            let id = if several {
                format!("{label}#{}", m.number)
            } else {
                label.to_string()
            };
            (id, m.bytes)
        })
        .collect())
}

/// The bytes of one input and its label (`file:<path>` or `stdin`).
pub(crate) fn read_input(path: &PathBuf) -> anyhow::Result<(String, Vec<u8>)> {
    if path.as_os_str() == "-" {
        let mut bytes = Vec::new();
        std::io::stdin()
            .read_to_end(&mut bytes)
            .context("reading standard input")?;
        return Ok(("stdin".into(), bytes));
    }
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok((format!("file:{}", path.display()), bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(messages: &[(String, Vec<u8>)]) -> Vec<&str> {
        messages.iter().map(|(id, _)| id.as_str()).collect()
    }

    #[test]
    fn an_mbox_of_several_numbers_its_messages() {
        let messages =
            messages_of("file:a", b"From x\nS: 1\n\nFrom y\nS: 2\n".to_vec(), false).expect("mbox");
        assert_eq!(ids(&messages), ["file:a#1", "file:a#2"]);
        assert_eq!(messages[1].1, b"S: 2\n");
    }

    #[test]
    fn an_mbox_of_one_keeps_the_input_label() {
        let messages = messages_of("stdin", b"From x\nS: 1\n\n".to_vec(), false).expect("mbox");
        assert_eq!(messages, [("stdin".to_string(), b"S: 1\n".to_vec())]);
    }

    #[test]
    fn other_input_is_one_message_unless_mbox_is_forced() {
        let eml = b"Subject: x\n\nFrom here\n".to_vec();
        let messages = messages_of("file:a.eml", eml.clone(), false).expect("one message");
        assert_eq!(messages, [("file:a.eml".to_string(), eml.clone())]);
        assert!(matches!(
            messages_of("file:a.eml", eml, true),
            Err(MboxError::NotMbox)
        ));
    }
}
