//! Ids made fit for the CRM's primary keys.
//!
//! Account, contact and deal ids are primary keys (btree indexes hold entries of ~2.7 KB at
//! most) and travel in REST paths. They come from the operator's tables and from recipient
//! addresses (`deal-{id}@`), so a hostile sender can make a deal id of any length. An id up to
//! [`MAX_ID_BYTES`] is written as it is; a longer one as its first [`KEPT_BYTES`] and its SHA-256:
//! `<prefix>~sha256:<hex>`, the same for every email that names it, so the rows it keys still
//! converge and a replay changes nothing.
//!
//! Keys that are values the CRM shows (message ids, addresses, filenames) keep their full text:
//! the PostgreSQL tables index their digest instead (`crm_key`, see `postgres_sql.rs`).

use mailstream_runtime::blob::shortened;

/// The longest id written as it is, in bytes.
pub const MAX_ID_BYTES: usize = 512;

/// Bytes of a longer id kept in front of its digest (less at a character boundary).
pub const KEPT_BYTES: usize = 64;

/// `id` as the CRM keys it: itself when short, else a prefix and its digest.
pub fn fit_id(id: &str) -> String {
    shortened(id, MAX_ID_BYTES, KEPT_BYTES).unwrap_or_else(|| id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mailstream_runtime::blob::sha256_hex;

    #[test]
    fn short_ids_stay_and_long_ones_become_a_prefix_and_a_digest() {
        assert_eq!(fit_id("deal-42"), "deal-42");
        let edge = "x".repeat(MAX_ID_BYTES);
        assert_eq!(fit_id(&edge), edge);
        let long = "é".repeat(MAX_ID_BYTES);
        let fitted = fit_id(&long);
        assert_eq!(fitted, fit_id(&long), "the same id every time");
        assert!(fitted.starts_with(&"é".repeat(KEPT_BYTES / 2)));
        assert!(fitted.ends_with(&sha256_hex(long.as_bytes())));
        assert!(fitted.len() <= KEPT_BYTES + 8 + 64);
        assert_ne!(fit_id(&format!("{long}a")), fitted);
    }
}
