//! Erasure (the right to be forgotten): how an erased person is named without their address,
//! and the check that keeps them out of a replay.
//!
//! `mailstream erase` deletes what can be deleted (CRM rows, blobs, compacted-table keys) and
//! records the person in the compacted `erasures` table, keyed by their **subject**: the hex
//! HMAC-SHA256 of their trimmed, lower-cased address under the deployment's `erasure_key`, so
//! the table names nobody to whoever lacks the key. The immutable stream topics keep their
//! copies until retention deletes them; a replay of those topics would bring the person back,
//! so the resolver and the CRM sink ([`Erasures::erased`]) drop every email any participant of
//! which is erased, if it was received at or before the erasure. Mail the person sends later is
//! processed as usual: they wrote again.

use std::sync::Arc;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::{RuntimeConfig, Secret};
use crate::error::RuntimeError;
use crate::records::{Erasure, ParsedEmail};
use crate::shutdown::Shutdown;
use crate::table::GlobalTable;
use crate::topology::Naming;

/// The logical topic of the erasures table.
pub const TABLE: &str = "erasures";

/// The key that names people in the erasures table (from `erasure_key`).
#[derive(Clone)]
pub struct SubjectKey(Hmac<Sha256>);

impl SubjectKey {
    pub fn new(key: &Secret) -> Result<Self, RuntimeError> {
        Hmac::<Sha256>::new_from_slice(key.expose().as_bytes())
            .map(Self)
            .map_err(|e| RuntimeError::Config(vec![format!("erasure_key: {e}")]))
    }

    /// The subject naming `address`: hex HMAC-SHA256 of it trimmed and lower-cased.
    pub fn subject(&self, address: &str) -> String {
        let mac = self
            .0
            .clone()
            .chain_update(address.trim().to_lowercase().as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }
}

/// The erasures table as a processor sees it.
pub struct Erasures {
    key: SubjectKey,
    table: Arc<GlobalTable<Erasure>>,
}

/// Shows how many people are erased, never the key.
impl std::fmt::Debug for Erasures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Erasures")
            .field("erased", &self.table.len())
            .finish()
    }
}

impl Erasures {
    /// Loads the erasures table to its end and follows it; `None` without an `erasure_key`
    /// (nobody can have been erased under a key this deployment does not have).
    pub async fn start(
        config: &RuntimeConfig,
        naming: &Naming,
        shutdown: Shutdown,
    ) -> Result<Option<Self>, RuntimeError> {
        let Some(key) = config.erasure_key.as_ref() else {
            return Ok(None);
        };
        let key = SubjectKey::new(key)?;
        let table = GlobalTable::start(config, naming, TABLE, shutdown).await?;
        Ok(Some(Self { key, table }))
    }

    /// Whether `email` must be dropped: a participant was erased at or after it was received.
    pub fn erased(&self, email: &ParsedEmail) -> bool {
        !self.table.is_empty()
            && email.participants().any(|address| {
                self.table
                    .get(&self.key.subject(address))
                    .is_some_and(|e| e.erased_at >= email.received_at)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subject_is_a_keyed_hash_of_the_normalized_address() {
        let key = |k: &str| SubjectKey::new(&Secret::new(k)).expect("any key");
        let a = key("k1").subject("Ann@Buyer.example ");
        assert_eq!(
            a,
            key("k1").subject("ann@buyer.example"),
            "case and spaces do not matter"
        );
        assert_eq!(a.len(), 64);
        assert!(!a.contains("ann"));
        assert_ne!(a, key("k2").subject("ann@buyer.example"), "keyed");
        assert_ne!(a, key("k1").subject("bob@buyer.example"));
    }
}
