//! Message bytes while they are received: in memory up to `spool_threshold_bytes`, then in an
//! anonymous temporary file in `spool_dir` (unlinked at creation, so nothing is left behind
//! after a crash), so one session or request holds at most the threshold in memory.
//!
//! Rules:
//! - every byte pushed is first reserved in the global [`Budget`]; a push that does not fit
//!   fails with [`SpoolError::OverBudget`] and stores nothing;
//! - [`Spool::into_bytes`] hands the whole message to the durable write together with the
//!   reservation, which the caller keeps until the write is over (the blob store and the Avro
//!   record take the message as one buffer, so it is in memory then, and still counted).

use std::io::SeekFrom;
use std::path::PathBuf;

use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use crate::budget::{Budget, OverBudget, Reservation};

/// Where and when messages spill to disk, and the budget they count against. Cheap to clone.
#[derive(Clone)]
pub struct Spooler {
    pub budget: Budget,
    pub threshold: usize,
    pub dir: PathBuf,
}

/// Why bytes could not be kept.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("the in-flight bytes budget is used up")]
    OverBudget,
    #[error("spool file: {0}")]
    Io(#[from] std::io::Error),
}

impl From<OverBudget> for SpoolError {
    fn from(_: OverBudget) -> Self {
        Self::OverBudget
    }
}

/// One message being received.
pub struct Spool {
    memory: Vec<u8>,
    file: Option<tokio::fs::File>,
    len: usize,
    threshold: usize,
    dir: PathBuf,
    reservation: Reservation,
}

impl Spooler {
    /// An empty spool for one message.
    pub fn spool(&self) -> Spool {
        Spool {
            memory: Vec::new(),
            file: None,
            len: 0,
            threshold: self.threshold,
            dir: self.dir.clone(),
            reservation: self.budget.reservation(),
        }
    }
}

impl Spool {
    /// Bytes pushed so far.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the message is (partly) on disk.
    pub fn spilled(&self) -> bool {
        self.file.is_some()
    }

    /// Appends `bytes`, reserving them first.
    pub async fn push(&mut self, bytes: &[u8]) -> Result<(), SpoolError> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.reservation.grow(bytes.len())?;
        self.len += bytes.len();
        if self.file.is_none() && self.memory.len() + bytes.len() <= self.threshold {
            self.memory.extend_from_slice(bytes);
            return Ok(());
        }
        let file = match &mut self.file {
            Some(file) => file,
            None => {
                let dir = self.dir.clone();
                let std_file = tokio::task::spawn_blocking(move || tempfile::tempfile_in(dir))
                    .await
                    .map_err(std::io::Error::other)??;
                let mut file = tokio::fs::File::from_std(std_file);
                file.write_all(&std::mem::take(&mut self.memory)).await?;
                self.file.insert(file)
            }
        };
        file.write_all(bytes).await?;
        Ok(())
    }

    /// The whole message in one buffer, with the reservation that covers it.
    pub async fn into_bytes(mut self) -> Result<(Vec<u8>, Reservation), SpoolError> {
        let Some(mut file) = self.file.take() else {
            return Ok((std::mem::take(&mut self.memory), self.reservation));
        };
        file.flush().await?;
        file.seek(SeekFrom::Start(0)).await?;
        let mut bytes = Vec::with_capacity(self.len);
        file.read_to_end(&mut bytes).await?;
        if bytes.len() != self.len {
            return Err(SpoolError::Io(std::io::Error::other(format!(
                "spool file holds {} bytes, {} were written",
                bytes.len(),
                self.len
            ))));
        }
        Ok((bytes, self.reservation))
    }
}

#[cfg(test)]
mod tests {
    use prometheus::IntGauge;

    use super::*;

    fn spooler(total: u64, threshold: usize) -> Spooler {
        Spooler {
            budget: Budget::new(total, IntGauge::new("g", "g").expect("gauge")),
            threshold,
            dir: std::env::temp_dir(),
        }
    }

    #[tokio::test]
    async fn small_messages_stay_in_memory_and_large_ones_spill() {
        let s = spooler(1 << 20, 10);
        let mut small = s.spool();
        small.push(b"hello").await.expect("push");
        assert!(!small.spilled());
        let (bytes, held) = small.into_bytes().await.expect("bytes");
        assert_eq!(bytes, b"hello");
        assert_eq!(held.bytes(), 5);
        drop(held);

        let mut large = s.spool();
        for chunk in [&b"0123456"[..], b"789abc", b"def"] {
            large.push(chunk).await.expect("push");
        }
        assert!(large.spilled());
        assert_eq!(large.len(), 16);
        let (bytes, held) = large.into_bytes().await.expect("bytes");
        assert_eq!(bytes, b"0123456789abcdef");
        assert_eq!(held.bytes(), 16);
        drop(held);
        assert_eq!(s.budget.in_use(), 0);
    }

    #[tokio::test]
    async fn a_push_over_the_budget_keeps_nothing() {
        let s = spooler(8, 4);
        let mut one = s.spool();
        one.push(b"123456").await.expect("fits");
        let mut two = s.spool();
        assert!(matches!(
            two.push(b"abc").await,
            Err(SpoolError::OverBudget)
        ));
        assert!(two.is_empty());
        drop(one);
        two.push(b"abc").await.expect("room again");
    }
}
