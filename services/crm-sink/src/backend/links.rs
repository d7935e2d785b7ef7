//! The links to attachment blobs the REST backend gives the CRM. A blob URI (`s3://bucket/...`,
//! `file:///...`) means nothing to a CRM; with `attachment_url_expiry_secs` set, an S3 blob's
//! link is a presigned HTTPS `GET` URL (SigV4, valid that long, signed with the runtime's
//! `blob_store` credentials), which the CRM can fetch without credentials. Other URIs, and every
//! URI when the setting is 0, are passed as they are.
//!
//! A link is made when the attachment is written, so it expires: a CRM that keeps only the
//! link must copy the bytes within the expiry (S3 allows at most seven days).

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::time::Duration;

use mailstream_runtime::blob::BlobStore;

use crate::error::{Failure, FailureClass};

/// Makes the links, keeping one signing store per blob directory.
pub struct AttachmentLinks {
    /// `None`: URIs are passed as they are.
    expiry: Option<Duration>,
    /// The runtime's `blob_store` options (credentials, endpoint, region).
    options: Vec<(String, String)>,
    stores: HashMap<String, BlobStore>,
}

impl AttachmentLinks {
    /// Links valid `expiry_secs` (0: the URIs as they are), signed with `options`.
    pub fn new(expiry_secs: u64, options: Vec<(String, String)>) -> Self {
        Self {
            expiry: (expiry_secs > 0).then(|| Duration::from_secs(expiry_secs)),
            options,
            stores: HashMap::new(),
        }
    }

    /// The link of the blob at `uri`. A URI no store can be opened for is the attachment's
    /// fault (`Poison`: a follow-up); a signature that could not be made now (credentials not
    /// fetched) is retried.
    pub async fn link(&mut self, uri: &str) -> Result<String, Failure> {
        let (Some(expiry), true) = (self.expiry, uri.starts_with("s3://")) else {
            return Ok(uri.to_string());
        };
        let Some((dir, _)) = uri.rsplit_once('/') else {
            return Ok(uri.to_string());
        };
        let store = match self.stores.entry(dir.to_string()) {
            Entry::Occupied(known) => known.into_mut(),
            Entry::Vacant(new) => {
                let store =
                    BlobStore::open(dir, &self.options).map_err(|reason| Failure::Poison {
                        class: FailureClass::Client,
                        reason,
                    })?;
                new.insert(store)
            }
        };
        match store.presigned_get(uri, expiry).await {
            Ok(url) => Ok(url.map_or_else(|| uri.to_string(), |u| u.to_string())),
            Err(e) => Err(Failure::Retry {
                class: FailureClass::Connection,
                reason: e.to_string(),
                retry_after: None,
            }),
        }
    }
}
