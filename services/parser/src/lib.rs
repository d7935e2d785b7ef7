//! The parser processor: each `raw-email` record (raw MIME inline, or by claim check in the blob
//! store) becomes one normalized `parsed` record keyed by its message id.
//!
//! The normalization is the pure function [`parse_message`], shared with the offline
//! `mailstream parse` command; this file only adds what needs the outside world: reading
//! claim-checked messages and storing attachment bytes in the blob store. Malformed mail is
//! dead-lettered by the runtime with the class the parser gives it:
//!
//! | class | cause |
//! |---|---|
//! | `mime-unparseable` | empty input, no header, no email header field |
//! | `mime-panic` | mail-parser panicked on the input (caught in [`parse_message`]) |
//! | `mime-missing` | the record has neither raw bytes nor a blob URI |
//! | `blob-missing`, `blob-checksum`, `blob-uri` | the claim check cannot be redeemed |
//!
//! Modules: [`parse`] (the entry point), [`normalize`] (ids, addresses, headers), [`bodies`]
//! (text, HTML, tracking pixels), [`reply`] (quotes and signatures), [`attachments`],
//! [`signals`] (auth, auto-reply, bounce, list), [`bounce`] (delivery reports, classified),
//! [`autoreply`] (automatic replies, classified), [`forward`] (a forwarded message's original
//! sender, date, subject and body), [`form`] (a website form notification's person and
//! fields), [`details`] (the lead's name, title, company, phones and website from their
//! signature or form), [`redact`] (card numbers, IBANs and configured patterns masked before the record is
//! written), [`scan`] (attachments scanned by ClamAV's clamd before they are stored),
//! [`settings`].

pub mod attachments;
pub mod autoreply;
pub mod bodies;
pub mod bounce;
pub mod details;
pub mod form;
pub mod forward;
pub mod invite;
pub mod limits;
pub mod normalize;
pub mod parse;
pub mod redact;
pub mod reply;
pub mod scan;
pub mod settings;
pub mod signals;

use std::sync::Arc;

use mailstream_runtime::blob::BlobStore;
use mailstream_runtime::config::key_label;
use mailstream_runtime::metrics;
use mailstream_runtime::records::{Attachment, RawEmail};
use mailstream_runtime::{Incoming, Outputs, ProcessError, Processor, RuntimeError};
use prometheus::{IntCounterVec, Opts, Registry};
use scan::{Scanner, Verdict};

pub use parse::{
    ParseContext, ParseFailure, Parsed, parse_message, parse_with_attachments, trusted_authserv_ids,
};
pub use redact::Redactor;
pub use settings::{AttachmentPolicy, ParserSettings};

/// The topic the parser writes.
pub const OUTPUT: &str = "parsed";

/// The parser processor.
#[derive(Debug)]
pub struct Parser {
    blobs: BlobStore,
    redactor: Arc<Redactor>,
    scanner: Option<Scanner>,
    /// `parser_attachment_scans_total{verdict}`.
    scans: IntCounterVec,
    /// `parser_reply_stripping_total{status}`.
    reply_stripping: IntCounterVec,
    store_attachments: bool,
    policy: AttachmentPolicy,
    max_body_bytes: usize,
    trusted_authserv_ids: Arc<[String]>,
}

impl Parser {
    /// Builds the processor from its checked settings (opens the blob store, with the runtime's
    /// `blob_store` options) and registers its metric on `registry`.
    pub fn new(
        settings: ParserSettings,
        blob_options: &[(String, String)],
        registry: &Registry,
    ) -> Result<Self, RuntimeError> {
        let redactions = metrics::register(
            registry,
            IntCounterVec::new(
                Opts::new(
                    "parser_redactions_total",
                    "Values masked in parsed records before they are written, by kind: card, iban, pattern.",
                ),
                &["kind"],
            ),
        )?;
        let redactor = settings
            .redactor()
            .map_err(RuntimeError::Config)?
            .counting(redactions);
        let scans = metrics::register(
            registry,
            IntCounterVec::new(
                Opts::new(
                    "parser_attachment_scans_total",
                    "Attachments scanned by clamd, by verdict: clean, infected (not stored), too-large (not stored: over clamd's StreamMaxLength).",
                ),
                &["verdict"],
            ),
        )?;
        let reply_stripping = metrics::register(
            registry,
            IntCounterVec::new(
                Opts::new(
                    "parser_reply_stripping_total",
                    "Emails with a text body by how reply stripping went: stripped (quoted history removed), nothing_quoted, unsure (quote-like lines left in place, or text and HTML disagree).",
                ),
                &["status"],
            ),
        )?;
        let scanner = settings
            .scanner()
            .map_err(|problem| RuntimeError::Config(vec![problem]))?;
        let blobs = BlobStore::open(&settings.blob_url, blob_options).map_err(|e| {
            RuntimeError::Config(vec![format!("{}: {e}", key_label("parser", "blob_url"))])
        })?;
        Ok(Self {
            blobs,
            redactor: Arc::new(redactor),
            scanner,
            scans,
            reply_stripping,
            store_attachments: settings.store_attachments,
            policy: AttachmentPolicy::from_list(&settings.allowed_extensions),
            max_body_bytes: settings.max_body_bytes,
            trusted_authserv_ids: settings.trusted_authserv_ids(),
        })
    }

    /// The raw message: inline, or redeemed from the blob store (checksum verified).
    async fn raw_bytes(&self, email: &mut RawEmail) -> Result<Vec<u8>, ProcessError> {
        match (email.raw.take(), email.blob_uri.as_deref()) {
            (Some(raw), _) if !raw.is_empty() => Ok(raw),
            (_, Some(uri)) => {
                let sha = Some(email.sha256.as_str()).filter(|s| !s.is_empty());
                self.blobs.get(uri, sha).await
            }
            (Some(_), None) => Err(ProcessError::poison(
                "mime-unparseable",
                "the raw message is empty and there is no blob_uri",
            )),
            (None, None) => Err(ProcessError::poison(
                "mime-missing",
                "the record has neither raw bytes nor a blob_uri",
            )),
        }
    }
}

impl Parser {
    /// Whether `attachment` (number `index` of `email`) may be stored: clean, or scanning is
    /// off. An infected one is named (`malware`), one too large to scan in `warnings`.
    async fn scanned_clean(
        &self,
        email: &str,
        index: usize,
        attachment: &mut Attachment,
        warnings: &mut Vec<String>,
        bytes: &[u8],
    ) -> Result<bool, ProcessError> {
        let Some(scanner) = &self.scanner else {
            return Ok(true);
        };
        let verdict = scanner.scan(bytes).await?;
        self.scans.with_label_values(&[verdict.label()]).inc();
        match verdict {
            Verdict::Clean => return Ok(true),
            Verdict::Infected(signature) => {
                tracing::warn!(
                    message_id = email,
                    sha256 = %attachment.sha256,
                    %signature,
                    "malware in an attachment; it is not stored"
                );
                attachment.malware = Some(signature);
            }
            Verdict::TooLarge => warnings.push(format!(
                "attachment {} ({} bytes) not scanned: larger than clamd's StreamMaxLength; not stored",
                index + 1,
                attachment.size
            )),
        }
        Ok(false)
    }
}

impl Processor for Parser {
    type Input = RawEmail;
    const NAME: &'static str = "parser";

    async fn process(
        &mut self,
        record: Incoming<RawEmail>,
        out: &mut Outputs,
    ) -> Result<(), ProcessError> {
        let mut email = record.value;
        let raw = self.raw_bytes(&mut email).await?;
        let ctx = ParseContext {
            ingest_id: email.ingest_id,
            received_at: email.received_at,
            envelope: email.envelope,
            policy: self.policy.clone(),
            max_body_bytes: self.max_body_bytes,
            redactor: self.redactor.clone(),
            trusted_authserv_ids: self.trusted_authserv_ids.clone(),
        };
        let poison = |f: ParseFailure| ProcessError::poison(f.class, f.reason);
        let record = if self.store_attachments || self.scanner.is_some() {
            let Parsed {
                mut record,
                attachment_bytes,
                cut_bodies,
            } = parse_with_attachments(&raw, &ctx).map_err(poison)?;
            drop(raw);
            let attachments = record.attachments.iter_mut().zip(attachment_bytes);
            for (index, (attachment, bytes)) in attachments.enumerate() {
                let (id, warnings) = (&record.message_id, &mut record.warnings);
                if self
                    .scanned_clean(id, index, attachment, warnings, &bytes)
                    .await?
                    && self.store_attachments
                {
                    let (uri, _) = self.blobs.put(bytes).await?;
                    attachment.blob_uri = Some(uri);
                }
            }
            // A body cut to the record's limits is kept whole beside the attachments.
            for cut in cut_bodies.into_iter().filter(|_| self.store_attachments) {
                let (uri, _) = self.blobs.put(cut.whole.into_bytes()).await?;
                if let Some(entry) = record.truncated.get_mut(cut.entry) {
                    entry.blob_uri = Some(uri);
                }
            }
            record
        } else {
            parse_message(&raw, &ctx).map_err(poison)?
        };
        if let Some(status) = record.reply_stripping {
            self.reply_stripping
                .with_label_values(&[status.as_str()])
                .inc();
        }
        out.send(OUTPUT, record.message_id.clone(), record);
        Ok(())
    }
}
