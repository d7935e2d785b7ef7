//! The blob store for claim checks: large raw messages and attachment bytes live outside Kafka,
//! and records carry their URI and SHA-256 instead.
//!
//! A blob is content-addressed (`<prefix>/<sha256>`), so writing the same bytes twice is
//! harmless and a record replayed later still finds its blob. `file:///path` (the default, a local
//! directory) and `s3://bucket/prefix` (S3-compatible, configured through the usual `AWS_*`
//! settings passed in `options`) are supported through `object_store`.

use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::signer::{Method, Signer};
use object_store::{ObjectStore, ObjectStoreExt, ObjectStoreScheme, PutPayload};
use sha2::{Digest, Sha256};
use url::Url;

use crate::error::ProcessError;

/// A content-addressed blob store rooted at a URL.
#[derive(Clone)]
pub struct BlobStore {
    store: Arc<dyn ObjectStore>,
    /// Signs GET URLs of an S3 store's blobs (none for a local directory).
    signer: Option<Arc<dyn Signer>>,
    base: Url,
    root: Path,
}

impl std::fmt::Debug for BlobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BlobStore({})", self.base)
    }
}

/// Hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut hex = String::with_capacity(64);
    for b in Sha256::digest(bytes) {
        hex.push(char::from(HEX[usize::from(b >> 4)]));
        hex.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    hex
}

/// `value` cut to a stable stand-in when it is over `max_bytes`: its first `kept_bytes` (less,
/// at a character boundary) and `~sha256:<hex of the whole>`. The same long value always
/// gives the same stand-in, so whatever it keys still matches. `None` when it fits.
pub fn shortened(value: &str, max_bytes: usize, kept_bytes: usize) -> Option<String> {
    if value.len() <= max_bytes {
        return None;
    }
    let mut cut = kept_bytes.min(value.len());
    while !value.is_char_boundary(cut) {
        cut -= 1;
    }
    Some(format!(
        "{}~sha256:{}",
        &value[..cut],
        sha256_hex(value.as_bytes())
    ))
}

impl BlobStore {
    /// Opens the store at `url` (`file:///var/lib/mailstream/blobs`, `s3://bucket/prefix`).
    /// A local directory is created if missing.
    pub fn open(url: &str, options: &[(String, String)]) -> Result<Self, String> {
        let base = Url::parse(url).map_err(|e| format!("blob store URL `{url}`: {e}"))?;
        if base.scheme() == "file" {
            let dir = base
                .to_file_path()
                .map_err(|_| format!("blob store URL `{url}` is not a local path"))?;
            std::fs::create_dir_all(&dir)
                .map_err(|e| format!("creating blob directory {}: {e}", dir.display()))?;
        }
        let problem = |e: &dyn std::fmt::Display| format!("blob store `{url}`: {e}");
        let (scheme, root) = ObjectStoreScheme::parse(&base).map_err(|e| problem(&e))?;
        let (store, signer): (Arc<dyn ObjectStore>, Option<Arc<dyn Signer>>) =
            if scheme == ObjectStoreScheme::AmazonS3 {
                // Built here rather than by `parse_url_opts` (which does the same) to keep it
                // as the signer too.
                let builder = options.iter().fold(
                    AmazonS3Builder::new().with_url(base.as_str()),
                    |b, (key, value)| match key.to_ascii_lowercase().parse() {
                        Ok(key) => b.with_config(key, value),
                        Err(_) => b,
                    },
                );
                let s3 = Arc::new(builder.build().map_err(|e| problem(&e))?);
                (s3.clone(), Some(s3))
            } else {
                let (store, _) = object_store::parse_url_opts(&base, options.iter().cloned())
                    .map_err(|e| problem(&e))?;
                (Arc::from(store), None)
            };
        Ok(Self {
            store,
            signer,
            base,
            root,
        })
    }

    /// A URL that lets its holder GET the blob at `uri` (one this store wrote) without
    /// credentials until `expires_in` passes (S3's presigned URL, SigV4); `None` for a store
    /// that cannot sign (a local directory).
    pub async fn presigned_get(
        &self,
        uri: &str,
        expires_in: Duration,
    ) -> Result<Option<Url>, ProcessError> {
        let Some(signer) = &self.signer else {
            return Ok(None);
        };
        let path = self.path_of(uri)?;
        signer
            .signed_url(Method::GET, &path, expires_in)
            .await
            .map(Some)
            .map_err(|e| ProcessError::transient(format!("signing a URL of blob {uri}: {e}")))
    }

    /// Stores `bytes` and returns their URI and hex SHA-256.
    pub async fn put(&self, bytes: Vec<u8>) -> Result<(String, String), ProcessError> {
        let sha = sha256_hex(&bytes);
        let path = self.root.clone().join(sha.as_str());
        self.store
            .put(&path, PutPayload::from(bytes))
            .await
            .map_err(|e| ProcessError::transient(format!("writing blob {sha}: {e}")))?;
        Ok((self.uri(&sha), sha))
    }

    /// The path in the store of `uri` (one this store wrote).
    fn path_of(&self, uri: &str) -> Result<object_store::path::Path, ProcessError> {
        let name = uri
            .strip_prefix(self.base.as_str().trim_end_matches('/'))
            .map(|rest| rest.trim_start_matches('/'))
            .filter(|rest| !rest.is_empty() && !rest.contains('/'))
            .ok_or_else(|| {
                ProcessError::poison(
                    "blob-uri",
                    format!("blob {uri} is not in this store ({})", self.base),
                )
            })?;
        Ok(self.root.clone().join(name))
    }

    /// Deletes the blob at `uri`; `false` when there was none.
    pub async fn delete(&self, uri: &str) -> Result<bool, ProcessError> {
        let path = self.path_of(uri)?;
        match self.store.head(&path).await {
            Err(object_store::Error::NotFound { .. }) => return Ok(false),
            Err(e) => return Err(ProcessError::transient(format!("finding blob {uri}: {e}"))),
            Ok(_) => {}
        }
        self.store
            .delete(&path)
            .await
            .map_err(|e| ProcessError::transient(format!("deleting blob {uri}: {e}")))?;
        Ok(true)
    }

    /// Reads the blob at `uri` (one this store wrote) and checks its SHA-256 when given.
    pub async fn get(&self, uri: &str, sha256: Option<&str>) -> Result<Vec<u8>, ProcessError> {
        let path = self.path_of(uri)?;
        let bytes = match self.store.get(&path).await {
            Ok(result) => result
                .bytes()
                .await
                .map_err(|e| ProcessError::transient(format!("reading blob {uri}: {e}")))?,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(ProcessError::poison(
                    "blob-missing",
                    format!("blob {uri} does not exist"),
                ));
            }
            Err(e) => return Err(ProcessError::transient(format!("reading blob {uri}: {e}"))),
        };
        if let Some(expected) = sha256
            && sha256_hex(&bytes) != expected
        {
            return Err(ProcessError::poison(
                "blob-checksum",
                format!("blob {uri} does not match its sha256 {expected}"),
            ));
        }
        Ok(bytes.to_vec())
    }

    fn uri(&self, sha: &str) -> String {
        format!("{}/{sha}", self.base.as_str().trim_end_matches('/'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stores_by_content_and_verifies_on_read() {
        let dir = std::env::temp_dir().join(format!("blobs-{}", uuid::Uuid::new_v4()));
        let url = format!("file://{}", dir.display());
        let store = BlobStore::open(&url, &[]).expect("open");
        let (uri, sha) = store.put(b"hello".to_vec()).await.expect("put");
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(sha, sha256_hex(b"hello"));
        assert!(uri.starts_with(&url) && uri.ends_with(&sha));
        assert_eq!(store.get(&uri, Some(&sha)).await.expect("get"), b"hello");
        let wrong = store.get(&uri, Some(&sha256_hex(b"other"))).await;
        assert!(
            matches!(wrong, Err(ProcessError::Poison { ref class, .. }) if class == "blob-checksum")
        );
        let missing = store
            .get(&format!("{url}/{}", sha256_hex(b"nope")), None)
            .await;
        assert!(
            matches!(missing, Err(ProcessError::Poison { ref class, .. }) if class == "blob-missing")
        );
        assert!(store.delete(&uri).await.expect("delete"), "it was there");
        assert!(!store.delete(&uri).await.expect("delete again"), "gone");
        assert!(store.get(&uri, None).await.is_err());
    }
}
