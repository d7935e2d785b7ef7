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
//! Messages are written up to [`IN_FLIGHT`] at a time. An mbox file is read into memory whole
//! to be split (fine for archives of hundreds of MB, not for ones larger than memory).

pub mod mbox;
pub mod sources;

use std::path::PathBuf;
use std::sync::LazyLock;
use std::time::Duration;

use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use mailstream_runtime::blob::sha256_hex;
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
}

/// Runs a backfill of `paths` with the `[ingest]` settings of `source`.
pub async fn run(
    source: ConfigSource,
    paths: Vec<PathBuf>,
    format: Format,
) -> Result<Summary, IngestError> {
    let (config, settings) = mailstream_runtime::config::load::<IngestSettings>(NAME, &source)?;
    let problems = settings.validate_common();
    if !problems.is_empty() {
        return Err(IngestError::Config(problems));
    }
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
        let messages = match load(&item) {
            Ok(messages) => messages,
            Err(reason) => {
                summary
                    .failed
                    .push((item.path().display().to_string(), reason));
                continue;
            }
        };
        summary.read += messages.len();
        let mut outcomes = futures::stream::iter(messages)
            .map(|(origin, bytes)| send(&publisher, origin, bytes, max))
            .buffer_unordered(IN_FLIGHT);
        while let Some((outcome, len)) = outcomes.next().await {
            match outcome {
                Outcome::Sent => summary.sent += 1,
                Outcome::Skipped(o, r) => summary.skipped.push((o, r)),
                Outcome::Failed(o, r) => summary.failed.push((o, r)),
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

/// The (origin, bytes) messages of one item.
fn load(item: &Item) -> Result<Vec<(String, Vec<u8>)>, String> {
    let data = std::fs::read(item.path()).map_err(|e| format!("cannot read: {e}"))?;
    match item {
        Item::File { origin, .. } => Ok(vec![(origin.clone(), data)]),
        Item::Mbox { path } => {
            let messages = mbox::split(&data)
                .ok_or_else(|| "not an mbox (does not start with a `From ` line)".to_string())?;
            let base = path.display().to_string();
            Ok(messages
                .into_iter()
                .map(|m| (format!("{base}#{}", m.number), m.bytes))
                .collect())
        }
    }
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
}
