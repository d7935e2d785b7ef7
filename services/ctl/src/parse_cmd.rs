//! `mailstream parse FILE...`: the parser offline. Each message becomes one line of JSON with
//! the fields of the `parsed` Avro record, made by the same `parse_message` the processor runs.
//!
//! Inputs: `.eml` files, mbox files (detected by a leading `From ` postmark line, or forced with
//! `--mbox`), and standard input when no file or `-` is given. `ingest_id` is `file:<path>`
//! (`file:<path>#<n>` for the n-th message of an mbox, `stdin` for standard input) and
//! `received_at` is the time of the run; the envelope is empty. With `--blob-url` attachments are
//! stored as the processor stores them, so the records match the processor's field for field.
//!
//! A message that cannot be read as email is reported on stderr (`<input>: <class>: <reason>`)
//! and the command goes on with the next one; it exits 1 when any input failed.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use mailstream_parser::{ParseContext, mbox, parse_with_attachments};
use mailstream_runtime::blob::BlobStore;

/// Options of `mailstream parse`.
#[derive(Debug, clap::Args)]
pub struct ParseArgs {
    /// .eml or mbox files; none or `-` reads standard input.
    pub files: Vec<PathBuf>,
    /// Read every input as an mbox file (otherwise only inputs starting with `From `).
    #[arg(long)]
    pub mbox: bool,
    /// Store attachments in this blob store (`file:///dir`) and record their URIs, as
    /// `mailstream run parser` does.
    #[arg(long)]
    pub blob_url: Option<String>,
}

/// Parses every input and prints one JSON record per message.
pub async fn execute(args: ParseArgs) -> anyhow::Result<ExitCode> {
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
        let messages = if args.mbox || mbox::looks_like_mbox(&bytes) {
            mbox::split(&bytes)
        } else {
            vec![bytes]
        };
        if messages.is_empty() {
            eprintln!("{label}: mime-unparseable: no message in the input");
            failed = true;
        }
        let several = messages.len() > 1;
        for (n, raw) in messages.iter().enumerate() {
            let id = if several {
                format!("{label}#{}", n + 1)
            } else {
                label.clone()
            };
            let ctx = ParseContext {
                ingest_id: id.clone(),
                received_at,
                ..ParseContext::default()
            };
            match parse_with_attachments(raw, &ctx) {
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
