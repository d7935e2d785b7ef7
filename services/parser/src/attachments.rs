//! Attachments: every MIME part that is not a body (files, inline images, attached messages).
//!
//! For each one the record carries the decoded filename (mail-parser decodes RFC 2047 and
//! RFC 2231 `filename*=`), the declared type, the type sniffed from the bytes (`infer`), the size
//! and SHA-256 of the decoded bytes, the disposition (the `Content-Disposition` type; without
//! one, a part with a Content-ID is inline), the Content-ID without angle brackets, and whether
//! the attachment policy flags it as executable:
//!
//! - content sniffed as a native program (PE/ELF/Mach-O, DEX, Java class, WASM, ...) is always
//!   flagged, whatever its name says;
//! - otherwise a file whose extension is not on the allowlist ([`AttachmentPolicy`]) is flagged;
//! - a part without an extension is flagged when its declared type is a program or a script.
//!
//! The bytes themselves are returned beside the record so the processor can put them in the blob
//! store; [`parse_message`](crate::parse_message) drops them.

use mail_parser::{Message, MessagePart, MimeHeaders, PartType};
use mailstream_runtime::blob::sha256_hex;
use mailstream_runtime::records::{Attachment, Disposition};

use crate::settings::AttachmentPolicy;

/// Declared types that are programs or scripts.
const EXECUTABLE_TYPES: &[&str] = &[
    "application/x-msdownload",
    "application/x-msdos-program",
    "application/x-executable",
    "application/x-dosexec",
    "application/x-sh",
    "application/x-shellscript",
    "application/x-bat",
    "application/x-msi",
    "application/x-ms-installer",
    "application/javascript",
    "text/javascript",
    "application/x-javascript",
    "application/vbscript",
    "text/vbscript",
    "application/hta",
    "application/java-archive",
    "application/x-powershell",
    "application/vnd.microsoft.portable-executable",
];

/// One attachment's record and its decoded bytes.
#[derive(Debug, Clone)]
pub struct Extracted {
    pub record: Attachment,
    pub bytes: Vec<u8>,
}

/// Every attachment of `message`, in MIME order; with their bytes when `keep_bytes` (else
/// `bytes` is empty: hashing and sniffing read them in place).
pub fn extract(
    message: &Message<'_>,
    policy: &AttachmentPolicy,
    keep_bytes: bool,
    warnings: &mut Vec<String>,
) -> Vec<Extracted> {
    message
        .attachments
        .iter()
        .filter_map(|id| message.parts.get(*id as usize))
        .map(|part| describe(part, policy, keep_bytes, warnings))
        .collect()
}

fn describe(
    part: &MessagePart<'_>,
    policy: &AttachmentPolicy,
    keep_bytes: bool,
    warnings: &mut Vec<String>,
) -> Extracted {
    let bytes = part.contents();
    let filename = part
        .attachment_name()
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty());
    let content_type = declared_type(part);
    let sniffed = infer::get(bytes);
    let sniffed_type = sniffed.map(|t| refine_zip(t.mime_type(), bytes).to_string());
    let sniffed_app = sniffed.is_some_and(|t| t.matcher_type() == infer::MatcherType::App);
    let content_id = part
        .content_id()
        .map(|c| {
            c.trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_string()
        })
        .filter(|c| !c.is_empty());
    let disposition = match part
        .content_disposition()
        .map(|d| d.ctype().to_ascii_lowercase())
    {
        Some(d) if d == "inline" => Disposition::Inline,
        Some(_) => Disposition::Attachment,
        None if content_id.is_some() => Disposition::Inline,
        None => Disposition::Attachment,
    };
    let extension = filename.as_deref().and_then(extension);
    let executable = sniffed_app
        || match &extension {
            Some(ext) => !policy.allows(ext),
            None => EXECUTABLE_TYPES.contains(&content_type.as_str()),
        };
    if let Some(sniffed) = &sniffed_type
        && sniffed_app
        && !EXECUTABLE_TYPES.contains(&content_type.as_str())
    {
        warnings.push(format!(
            "attachment {}: declared {content_type} but the content is {sniffed}",
            filename.as_deref().unwrap_or("(unnamed)")
        ));
    }
    Extracted {
        record: Attachment {
            filename,
            content_type,
            sniffed_type,
            size: i64::try_from(bytes.len()).unwrap_or(i64::MAX),
            sha256: sha256_hex(bytes),
            disposition,
            content_id,
            blob_uri: None,
            executable,
            malware: None,
        },
        bytes: if keep_bytes {
            bytes.to_vec()
        } else {
            Vec::new()
        },
    }
}

/// `infer` recognizes Office Open XML only in the entry order Word writes; any other zip that
/// holds a Word, Excel or PowerPoint main part is that document type too.
fn refine_zip<'a>(sniffed: &'a str, bytes: &[u8]) -> &'a str {
    if sniffed != "application/zip" {
        return sniffed;
    }
    let holds = |name: &[u8]| bytes.windows(name.len()).any(|w| w == name);
    if holds(b"word/document.xml") {
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
    } else if holds(b"xl/workbook.xml") {
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    } else if holds(b"ppt/presentation.xml") {
        "application/vnd.openxmlformats-officedocument.presentationml.presentation"
    } else {
        sniffed
    }
}

/// The declared `type/subtype`, lower-case; parts without one get the MIME defaults.
fn declared_type(part: &MessagePart<'_>) -> String {
    match part.content_type() {
        Some(ct) => match ct.subtype() {
            Some(sub) => format!("{}/{}", ct.ctype(), sub).to_ascii_lowercase(),
            None => ct.ctype().to_ascii_lowercase(),
        },
        None => match part.body {
            PartType::Text(_) => "text/plain".into(),
            PartType::Html(_) => "text/html".into(),
            PartType::Message(_) => "message/rfc822".into(),
            _ => "application/octet-stream".into(),
        },
    }
}

/// The lower-case extension of `filename`, if it has one.
fn extension(filename: &str) -> Option<String> {
    let base = filename.rsplit(['/', '\\']).next().unwrap_or(filename);
    let (stem, ext) = base.rsplit_once('.')?;
    let ext = ext.trim();
    (!stem.is_empty() && !ext.is_empty()).then(|| ext.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extensions() {
        assert_eq!(extension("Report.Final.PDF").as_deref(), Some("pdf"));
        assert_eq!(extension(".bashrc"), None);
        assert_eq!(extension("README"), None);
        assert_eq!(extension("C:\\x\\run.exe").as_deref(), Some("exe"));
    }
}
