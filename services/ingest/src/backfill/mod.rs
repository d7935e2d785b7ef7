//! `mailstream backfill PATH... [--format auto|eml|mbox|maildir]`: loads archived mail into
//! `raw-email` through the same durable write as SMTP and HTTP, with a progress bar on stderr
//! and a summary (read, sent, skipped and failed, with reasons).
//!
//! **Idempotence.** Each message's `ingest_id` is deterministic: a UUIDv5 (namespace
//! [`BACKFILL_NAMESPACE`]) of `"{sha256 of the bytes}\n{origin}"` (origins: see [`sources`]).
//! Running the backfill twice over the same files writes records with the same ingest ids (the
//! record key), so the second run's records are recognisable copies; downstream, the parser
//! derives the message id from the Message-ID header and the resolver drops repeats. The same
//! bytes at two origins (two copies of one email in different files) get two ingest ids and
//! are collapsed by the resolver on Message-ID.
//!
//! Messages are written up to [`IN_FLIGHT`] at a time. An mbox file is split as it is read
//! ([`mailstream_runtime::mbox`], the splitter `mailstream parse` uses too), so only the messages
//! in flight are in memory, whatever the size of the archive. A read error part way through an
//! mbox fails the rest of that file; the messages before it are sent.

pub mod sources;

use std::io::BufReader;
use std::path::PathBuf;
use std::sync::LazyLock;
use std::time::Duration;

use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use mailstream_runtime::blob::sha256_hex;
use mailstream_runtime::mbox;
use mailstream_runtime::records::{Envelope, IngestSource};
use mailstream_runtime::{ConfigSource, telemetry};

use crate::error::IngestError;
use crate::events::IngestMetrics;
use crate::publisher::{Intake, Publisher};
use crate::{IngestSettings, NAME};
pub use sources::Format;
use sources::Item;

const CHANNEL: &str = "backfill";
/// Writes awaited at once.
pub const IN_FLIGHT: usize = 32;

/// The UUIDv5 namespace of backfill ingest ids.
pub static BACKFILL_NAMESPACE: LazyLock<uuid::Uuid> =
    LazyLock::new(|| uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, b"urn:mailstream:backfill"));

/// The deterministic ingest id of a backfilled message.
pub fn ingest_id(sha256: &str, origin: &str) -> String {
    uuid::Uuid::new_v5(
        &BACKFILL_NAMESPACE,
        format!("{sha256}\n{origin}").as_bytes(),
    )
    .to_string()
}

/// What a backfill did.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    /// Messages read.
    pub read: usize,
    /// Messages durably written.
    pub sent: usize,
    /// (origin, reason) of what was not sent on purpose (empty, too large, not mail).
    pub skipped: Vec<(String, String)>,
    /// (origin, reason) of what failed (unreadable, write errors).
    pub failed: Vec<(String, String)>,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "backfill: read {}, sent {}, skipped {}, failed {}",
            self.read,
            self.sent,
            self.skipped.len(),
            self.failed.len()
        )?;
        for (origin, reason) in &self.skipped {
            writeln!(f, "  skipped {origin}: {reason}")?;
        }
        for (origin, reason) in &self.failed {
            writeln!(f, "  failed {origin}: {reason}")?;
        }
        Ok(())
    }
}

enum Outcome {
    Sent,
    Skipped(String, String),
    Failed(String, String),
    /// The rest of a file could not be read (no message was read).
    Unreadable(String, String),
}

/// (origin, bytes) of one message, or why the rest of its file cannot be read.
type Loaded = Result<(String, Vec<u8>), String>;

/// Runs a backfill of `paths` with the `[ingest]` settings of `source`.
pub async fn run(
    source: ConfigSource,
    paths: Vec<PathBuf>,
    format: Format,
) -> Result<Summary, IngestError> {
    let (config, settings) = mailstream_runtime::config::load::<IngestSettings>(NAME, &source)?;
    let _telemetry = telemetry::init(&config, "backfill")?;
    let publisher = Publisher::connect(&config, &settings, IngestMetrics::detached()?).await?;
    let max = usize::try_from(settings.max_message_bytes).unwrap_or(usize::MAX);

    let (items, skipped) = sources::discover(&paths, format);
    let mut summary = Summary {
        skipped,
        ..Summary::default()
    };
    let total: u64 = items
        .iter()
        .map(|i| std::fs::metadata(i.path()).map(|m| m.len()).unwrap_or(0))
        .sum();
    let progress = ProgressBar::new(total);
    progress.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    progress.enable_steady_tick(Duration::from_millis(200));

    for item in items {
        let label = item.path().display().to_string();
        let messages = match load(&item) {
            Ok(messages) => messages,
            Err(reason) => {
                summary.failed.push((label, reason));
                continue;
            }
        };
        let mut outcomes = futures::stream::iter(messages)
            .map(|message| {
                let publisher = &publisher;
                let label = &label;
                async move {
                    match message {
                        Ok((origin, bytes)) => send(publisher, origin, bytes, max).await,
                        Err(reason) => (Outcome::Unreadable(label.clone(), reason), 0),
                    }
                }
            })
            .buffer_unordered(IN_FLIGHT);
        while let Some((outcome, len)) = outcomes.next().await {
            if !matches!(outcome, Outcome::Unreadable(..)) {
                summary.read += 1;
            }
            match outcome {
                Outcome::Sent => summary.sent += 1,
                Outcome::Skipped(o, r) => summary.skipped.push((o, r)),
                Outcome::Failed(o, r) | Outcome::Unreadable(o, r) => summary.failed.push((o, r)),
            }
            progress.inc(len as u64);
            progress.set_message(format!(
                "sent {}, skipped {}, failed {}",
                summary.sent,
                summary.skipped.len(),
                summary.failed.len()
            ));
        }
    }
    progress.finish_and_clear();
    publisher.flush().await;
    Ok(summary)
}

/// The messages of one item, read as they are asked for; an error ends them.
fn load(item: &Item) -> Result<Box<dyn Iterator<Item = Loaded> + Send>, String> {
    match item {
        Item::File { origin, path } => {
            let data = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
            Ok(Box::new(std::iter::once(Ok((origin.clone(), data)))))
        }
        Item::Mbox { path } => {
            let file = std::fs::File::open(path).map_err(|e| format!("cannot read: {e}"))?;
            let base = path.display().to_string();
            Ok(Box::new(mbox::messages(BufReader::new(file)).map(
                move |message| {
                    message
                        .map(|m| (mbox_origin(&base, m.number), m.bytes))
                        .map_err(|e| e.to_string())
                },
            )))
        }
    }
}

/// The origin of the `number`-th message of the mbox at `path` (see [`sources`]).
fn mbox_origin(path: &str, number: usize) -> String {
    format!("{path}#{number}")
}

/// Writes one message; returns its outcome and its size (for the progress bar).
async fn send(
    publisher: &Publisher,
    origin: String,
    bytes: Vec<u8>,
    max: usize,
) -> (Outcome, usize) {
    let len = bytes.len();
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return (Outcome::Skipped(origin, "empty message".into()), len);
    }
    if len > max {
        return (
            Outcome::Skipped(
                origin,
                format!("{len} bytes is over max_message_bytes ({max})"),
            ),
            len,
        );
    }
    let id = ingest_id(&sha256_hex(&bytes), &origin);
    let intake = Intake {
        source: IngestSource::Backfill,
        envelope: Envelope::default(),
        raw: bytes,
        origin: Some(origin.clone()),
        ingest_id: Some(id),
    };
    match publisher.publish(intake, CHANNEL).await {
        Ok(_) => (Outcome::Sent, len),
        Err(e) => (Outcome::Failed(origin, e.to_string()), len),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ingest_ids_are_deterministic_and_depend_on_bytes_and_origin() {
        let a = ingest_id("abc", "/m/box#1");
        assert_eq!(a, ingest_id("abc", "/m/box#1"));
        assert_ne!(a, ingest_id("abd", "/m/box#1"));
        assert_ne!(a, ingest_id("abc", "/m/box#2"));
        assert!(uuid::Uuid::parse_str(&a).is_ok());
    }

    /// The ids of backfilled mbox messages must not move between releases: a changed splitter
    /// (other bytes) or origin (another numbering) would make a second run look new. These were
    /// computed independently (Python's `uuid5` over `hashlib.sha256`) from what the splitter
    /// of earlier releases produced.
    #[test]
    fn mbox_ingest_ids_are_pinned() {
        let mbox = b"From a@x Mon Jan  1 00:00:00 2024\nSubject: one\n\n>From here\n\n\
From b@x Tue\r\nSubject: two\r\n\r\nbye\r\n\r\n";
        let ids: Vec<String> = mbox::split(mbox)
            .expect("an mbox")
            .iter()
            .map(|m| {
                ingest_id(
                    &sha256_hex(&m.bytes),
                    &mbox_origin("/archive/old.mbox", m.number),
                )
            })
            .collect();
        assert_eq!(
            ids,
            [
                "13f372f7-2b0a-561c-adaf-bb34944c9e81",
                "026d5395-88f1-59ad-b624-7e9166be9d9a"
            ]
        );
    }

    fn loaded(item: &Item) -> Vec<Loaded> {
        load(item).expect("opened").collect()
    }

    #[test]
    fn an_mbox_loads_message_by_message_with_numbered_origins() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("a.mbox");
        std::fs::write(&path, b"From a\nS: 1\n\nFrom b\nS: 2\n").expect("written");
        let base = path.display().to_string();
        let messages = loaded(&Item::Mbox { path });
        assert_eq!(
            messages,
            [
                Ok((format!("{base}#1"), b"S: 1\n".to_vec())),
                Ok((format!("{base}#2"), b"S: 2\n".to_vec())),
            ]
        );
    }

    #[test]
    fn a_file_that_is_not_an_mbox_loads_as_one_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("a.eml");
        std::fs::write(&path, b"Subject: x\n\nFrom here\n").expect("written");
        assert_eq!(
            loaded(&Item::Mbox { path: path.clone() }),
            [Err(
                "not an mbox (does not start with a `From ` line)".to_string()
            )]
        );
        let origin = "file-origin".to_string();
        assert_eq!(
            loaded(&Item::File { origin, path }),
            [Ok((
                "file-origin".to_string(),
                b"Subject: x\n\nFrom here\n".to_vec()
            ))]
        );
        let missing = dir.path().join("missing.mbox");
        assert!(load(&Item::Mbox { path: missing }).is_err());
    }
}
