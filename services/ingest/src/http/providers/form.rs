//! Form bodies of the providers that post forms (Mailgun, SendGrid), read from the bytes the
//! intake already received and bounded: `multipart/form-data` (RFC 7578) with `multer` (the
//! parser behind axum's `Multipart`), and `application/x-www-form-urlencoded` (Mailgun posts
//! it when a message has no attachments) with `form_urlencoded`. Only the fields a route asks
//! for are kept; one of them sent twice is refused, so no field can be smuggled past the one
//! that was checked.

use std::collections::BTreeMap;
use std::convert::Infallible;

use axum::body::Bytes;
use axum::http::{HeaderMap, header};

use super::bad_payload;
use crate::http::HttpContext;
use crate::http::intake::{self, Refusal, header_str};
use crate::spool::Spool;

/// The most bytes a streamed form keeps in memory per field ([`Form::stream`]).
const FIELD_LIMIT: u64 = 64 * 1024;

/// The media type of a URL-encoded form.
pub(super) const URLENCODED: &str = "application/x-www-form-urlencoded";

/// In the wanted names: keep the numbered file fields `attachment1`, `attachment2`, ... (with
/// their file name and content type), as SendGrid's parsed mode posts them.
pub(super) const ATTACHMENTS: &str = "attachment<N>";

/// A file field: its bytes and what its part header says.
pub(super) struct FilePart {
    pub bytes: Bytes,
    pub file_name: Option<String>,
    pub content_type: Option<String>,
}

/// The wanted fields of a form, by name, as sent (bytes).
pub(super) struct Form {
    fields: BTreeMap<&'static str, Bytes>,
    files: BTreeMap<String, FilePart>,
}

/// `attachment` followed by digits.
fn is_attachment(name: &str) -> bool {
    name.strip_prefix("attachment")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

impl Form {
    /// Reads the fields named in `wanted` from `body`, a form of the request's `Content-Type`;
    /// other fields (attachments of a parsed post, say) are skipped.
    pub async fn read(
        headers: &HeaderMap,
        body: Vec<u8>,
        wanted: &[&'static str],
    ) -> Result<Self, Refusal> {
        let content_type = header_str(headers, header::CONTENT_TYPE.as_str()).unwrap_or("");
        let mime = content_type.split(';').next().unwrap_or("").trim();
        if mime.eq_ignore_ascii_case(URLENCODED) {
            return Self::urlencoded(&body, wanted);
        }
        let boundary = multer::parse_boundary(content_type)
            .map_err(|e| bad_payload(format!("multipart/form-data without a boundary: {e}")))?;
        let stream = futures::stream::once(async move { Ok::<_, Infallible>(Bytes::from(body)) });
        let mut multipart = multer::Multipart::new(stream, boundary);
        let mut fields = BTreeMap::new();
        let mut files = BTreeMap::new();
        let keep_files = wanted.contains(&ATTACHMENTS);
        while let Some(field) = multipart
            .next_field()
            .await
            .map_err(|e| bad_payload(format!("malformed multipart/form-data: {e}")))?
        {
            if keep_files && let Some(name) = field.name().filter(|n| is_attachment(n)) {
                let name = name.to_string();
                let file_name = field.file_name().map(str::to_string);
                let content_type = field.content_type().map(ToString::to_string);
                let bytes = field
                    .bytes()
                    .await
                    .map_err(|e| bad_payload(format!("malformed form field `{name}`: {e}")))?;
                let part = FilePart {
                    bytes,
                    file_name,
                    content_type,
                };
                if files.insert(name.clone(), part).is_some() {
                    return Err(bad_payload(format!(
                        "form field `{name}` sent more than once"
                    )));
                }
                continue;
            }
            let Some(name) = field
                .name()
                .and_then(|n| wanted.iter().copied().find(|w| *w == n))
            else {
                continue;
            };
            let value = field
                .bytes()
                .await
                .map_err(|e| bad_payload(format!("malformed form field `{name}`: {e}")))?;
            if fields.insert(name, value).is_some() {
                return Err(bad_payload(format!(
                    "form field `{name}` sent more than once"
                )));
            }
        }
        Ok(Self { fields, files })
    }

    fn urlencoded(body: &[u8], wanted: &[&'static str]) -> Result<Self, Refusal> {
        let mut fields = BTreeMap::new();
        for (name, value) in form_urlencoded::parse(body) {
            let Some(name) = wanted.iter().copied().find(|w| *w == name) else {
                continue;
            };
            let value = Bytes::from(value.into_owned().into_bytes());
            if fields.insert(name, value).is_some() {
                return Err(bad_payload(format!(
                    "form field `{name}` sent more than once"
                )));
            }
        }
        Ok(Self {
            fields,
            files: BTreeMap::new(),
        })
    }

    /// Streams a `multipart/form-data` request body, unverified: the field `spooled` goes into a
    /// spool (memory up to `spool_threshold_bytes`, then a file; counted against the in-flight
    /// budget; at most `max_message_bytes`), the other `wanted` fields into memory (at most
    /// 64 KiB each), the rest is read past and dropped; the whole body at most `limit` bytes
    /// (413) and within `http_body_timeout_secs` (408). So a body whose signature is in its
    /// own fields is never held in memory before it is checked.
    pub async fn stream(
        ctx: &HttpContext,
        headers: &HeaderMap,
        body: axum::body::Body,
        wanted: &[&'static str],
        spooled: &'static str,
        limit: usize,
    ) -> Result<(Self, Option<Spool>), Refusal> {
        let content_type = header_str(headers, header::CONTENT_TYPE.as_str()).unwrap_or("");
        let boundary = multer::parse_boundary(content_type)
            .map_err(|e| bad_payload(format!("multipart/form-data without a boundary: {e}")))?;
        let sizes = multer::SizeLimit::new()
            .whole_stream(limit as u64)
            .per_field(FIELD_LIMIT)
            .for_field(spooled, ctx.max_message_bytes as u64);
        let constraints = multer::Constraints::new().size_limit(sizes);
        let mut multipart =
            multer::Multipart::with_constraints(body.into_data_stream(), boundary, constraints);
        let read = async {
            let mut fields = BTreeMap::new();
            let mut spool: Option<Spool> = None;
            while let Some(mut field) = multipart
                .next_field()
                .await
                .map_err(|e| malformed(ctx, limit, e))?
            {
                let name = field
                    .name()
                    .and_then(|n| wanted.iter().copied().find(|w| *w == n));
                let Some(name) = name else {
                    while field
                        .chunk()
                        .await
                        .map_err(|e| malformed(ctx, limit, e))?
                        .is_some()
                    {}
                    continue;
                };
                if fields.contains_key(name) || (name == spooled && spool.is_some()) {
                    return Err(bad_payload(format!(
                        "form field `{name}` sent more than once"
                    )));
                }
                if name == spooled {
                    let mut into = ctx.spooler.spool();
                    while let Some(chunk) =
                        field.chunk().await.map_err(|e| malformed(ctx, limit, e))?
                    {
                        into.push(&chunk).await.map_err(intake::spool_refusal)?;
                    }
                    spool = Some(into);
                } else {
                    let value = field.bytes().await.map_err(|e| malformed(ctx, limit, e))?;
                    fields.insert(name, value);
                }
            }
            Ok((
                Self {
                    fields,
                    files: BTreeMap::new(),
                },
                spool,
            ))
        };
        tokio::time::timeout(ctx.body_timeout, read)
            .await
            .map_err(|_| intake::body_timeout(ctx))?
    }

    /// A file field (`attachment<N>`), if sent and asked for with [`ATTACHMENTS`].
    pub fn file(&self, name: &str) -> Option<&FilePart> {
        self.files.get(name)
    }

    /// A field's bytes, if sent.
    pub fn bytes(&self, name: &str) -> Option<&Bytes> {
        self.fields.get(name)
    }

    /// A field as text (UTF-8, trimmed), if sent; not UTF-8 is a 400.
    pub fn text(&self, name: &str) -> Result<Option<&str>, Refusal> {
        self.fields
            .get(name)
            .map(|b| {
                std::str::from_utf8(b)
                    .map(str::trim)
                    .map_err(|_| bad_payload(format!("form field `{name}` is not UTF-8")))
            })
            .transpose()
    }

    /// A field that must be there.
    pub fn required(&self, name: &str) -> Result<&str, Refusal> {
        self.text(name)?
            .ok_or_else(|| bad_payload(format!("form field `{name}` is missing")))
    }

    /// Whether a field was sent.
    pub fn has(&self, name: &str) -> bool {
        self.fields.contains_key(name)
    }
}

/// A streamed form's error: 413 past a size limit, else 400.
fn malformed(ctx: &HttpContext, limit: usize, e: multer::Error) -> Refusal {
    match e {
        multer::Error::StreamSizeExceeded { .. } => intake::too_large(limit),
        multer::Error::FieldSizeExceeded { .. } => intake::too_large(ctx.max_message_bytes),
        e => bad_payload(format!("malformed multipart/form-data: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("multipart/form-data; boundary=XyZ"),
        );
        h
    }

    fn body(fields: &[(&str, &str)]) -> Vec<u8> {
        let mut b = String::new();
        for (name, value) in fields {
            b.push_str(&format!(
                "--XyZ\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            ));
        }
        b.push_str("--XyZ--\r\n");
        b.into_bytes()
    }

    #[tokio::test]
    async fn keeps_the_wanted_fields_exactly_and_refuses_repeats() {
        let raw = "Subject: hi\r\n\r\nbody\r\n";
        let form = Form::read(
            &headers(),
            body(&[("token", "t1"), ("other", "x"), ("body-mime", raw)]),
            &["token", "body-mime"],
        )
        .await
        .expect("form");
        assert_eq!(form.required("token").expect("token"), "t1");
        assert_eq!(
            form.bytes("body-mime").map(|b| &b[..]),
            Some(raw.as_bytes())
        );
        assert!(!form.has("other"));
        assert!(form.required("signature").is_err());

        let twice = Form::read(
            &headers(),
            body(&[("token", "t1"), ("token", "t2")]),
            &["token"],
        )
        .await;
        assert!(twice.is_err());
        assert!(
            Form::read(&HeaderMap::new(), body(&[]), &["token"])
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn url_encoded_forms_are_read_too() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        let body = b"token=t%2B1&body-mime=Subject%3A+hi%0D%0A%0D%0Ab%C3%A9&x=y".to_vec();
        let form = Form::read(&h, body, &["token", "body-mime"])
            .await
            .expect("form");
        assert_eq!(form.required("token").expect("token"), "t+1");
        assert_eq!(
            form.bytes("body-mime").map(|b| &b[..]),
            Some("Subject: hi\r\n\r\nbé".as_bytes())
        );
        let twice = Form::read(&h, b"token=a&token=b".to_vec(), &["token"]).await;
        assert!(twice.is_err());
    }
}
