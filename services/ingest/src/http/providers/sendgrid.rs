//! `POST /v1/providers/sendgrid`: SendGrid Inbound Parse with "POST the raw, full MIME
//! message" checked (the raw mode). SendGrid signs no inbound-parse post, so the webhook URL
//! carries HTTP basic auth (`https://USER:PASSWORD@host/v1/providers/sendgrid`), checked
//! before the body is read.
//!
//! Fields used (`multipart/form-data`): `email` (the message, kept byte for byte),
//! `envelope` (JSON `{"to": [..], "from": ".."}`: the SMTP envelope) and `sender_ip` (the
//! SMTP client's address, recorded as the envelope's remote address). `to` and `from` are the
//! message's headers, not the envelope, and are not used.
//!
//! The default parsed mode (no `email`) is taken too, rebuilt with `mail-builder`
//! ([`super::rebuilt`]): `headers` (the message's header block, kept as received), `text` and
//! `html` (decoded with the charsets `charsets` names), `attachments` files `attachment1`..`N`
//! with `attachment-info` (file name, type, `content-id`). The raw mode is the faithful one:
//! prefer it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Deserialize;

use super::form::{ATTACHMENTS, Form};
use super::rebuilt::{Part, Rebuilt};
use super::{
    Delivered, bad_payload, challenge, publish, receive_body, refused_auth, request_limit,
};
use crate::http::HttpContext;
use crate::http::intake::{Refusal, respond};

const CHANNEL: &str = "sendgrid";

/// The `envelope` field.
#[derive(Deserialize)]
struct SmtpEnvelope {
    #[serde(default)]
    to: Vec<String>,
    #[serde(default)]
    from: Option<String>,
}

pub(super) async fn receive(
    State(ctx): State<Arc<HttpContext>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let result = handle(&ctx, peer, &headers, body).await;
    challenge(respond(&ctx, CHANNEL, result))
}

async fn handle(
    ctx: &HttpContext,
    peer: SocketAddr,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, Refusal> {
    let Some(auth) = &ctx.providers.sendgrid else {
        return Err(refused_auth("bad-auth", "SendGrid intake is off"));
    };
    // The network check comes first (403), then the credentials, then the body.
    crate::http::intake::client(ctx, peer, headers)?;
    auth.check(headers)?;
    let received = receive_body(
        ctx,
        peer,
        headers,
        body,
        &["multipart/form-data"],
        request_limit(ctx),
    )
    .await?;
    let form = Form::read(
        headers,
        received.body,
        &[
            "email",
            "envelope",
            "sender_ip",
            "headers",
            "text",
            "html",
            "charsets",
            "attachments",
            "attachment-info",
            ATTACHMENTS,
        ],
    )
    .await?;
    let raw = match form.bytes("email") {
        Some(raw) => raw.to_vec(),
        None if form.has("headers") => rebuild(&form)?,
        None => {
            return Err(bad_payload(
                "neither `email` (the raw mode) nor `headers` (the parsed mode) was posted",
            ));
        }
    };
    let envelope: SmtpEnvelope = serde_json::from_str(form.required("envelope")?).map_err(|e| {
        bad_payload(format!(
            "form field `envelope` is not SendGrid's JSON envelope: {e}"
        ))
    })?;
    // SendGrid's SMTP client, when it is an address; else the webhook's caller.
    let remote_addr = form
        .text("sender_ip")?
        .and_then(|ip| ip.parse::<std::net::IpAddr>().ok())
        .map_or(received.remote_addr, |ip| ip.to_string());
    let delivered = Delivered {
        provider: CHANNEL,
        raw,
        mail_from: envelope.from.filter(|f| !f.trim().is_empty()),
        rcpt_to: envelope.to,
        remote_addr,
    };
    publish(ctx, delivered, received.held).await
}

/// What `attachment-info` says of one file.
#[derive(Deserialize, Default)]
#[serde(default)]
struct AttachmentInfo {
    filename: String,
    #[serde(rename = "type")]
    content_type: String,
    #[serde(rename = "content-id")]
    content_id: String,
}

/// `bytes` decoded from `charset` (a WHATWG label; UTF-8 when absent or unknown).
fn decode(bytes: &[u8], charset: Option<&str>) -> String {
    let encoding = charset
        .and_then(|c| encoding_rs::Encoding::for_label(c.trim().as_bytes()))
        .unwrap_or(encoding_rs::UTF_8);
    encoding.decode(bytes).0.into_owned()
}

/// The header block as (name, value) pairs, folded lines joined.
fn header_fields(block: &str) -> Vec<(String, String)> {
    let mut fields: Vec<(String, String)> = Vec::new();
    for line in block.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = fields.last_mut() {
                value.push(' ');
                value.push_str(line.trim());
            }
        } else if let Some((name, value)) = line.split_once(':') {
            fields.push((name.trim().to_string(), value.trim().to_string()));
        }
    }
    fields
}

/// The message of a parsed-mode post (see the module's documentation).
fn rebuild(form: &Form) -> Result<Vec<u8>, Refusal> {
    let charsets: BTreeMap<String, String> = match form.text("charsets")? {
        Some(json) if !json.is_empty() => serde_json::from_str(json)
            .map_err(|e| bad_payload(format!("form field `charsets` is not JSON: {e}")))?,
        _ => BTreeMap::new(),
    };
    let field = |name: &str| {
        form.bytes(name)
            .map(|b| decode(b, charsets.get(name).map(String::as_str)))
            .unwrap_or_default()
    };
    let mut message = Rebuilt::new();
    for (name, value) in header_fields(&field("headers")) {
        message.header(&name, &value, &[]);
    }
    let info: BTreeMap<String, AttachmentInfo> = match form.text("attachment-info")? {
        Some(json) if !json.is_empty() => serde_json::from_str(json).map_err(|e| {
            bad_payload(format!(
                "form field `attachment-info` is not SendGrid's JSON: {e}"
            ))
        })?,
        _ => BTreeMap::new(),
    };
    let count: usize = match form.text("attachments")? {
        Some(n) if !n.is_empty() => n
            .parse()
            .map_err(|_| bad_payload("form field `attachments` is not a count"))?,
        _ => 0,
    };
    let mut parts = Vec::new();
    for n in 1..=count {
        let name = format!("attachment{n}");
        let file = form
            .file(&name)
            .ok_or_else(|| bad_payload(format!("`{name}` is announced but not posted")))?;
        let about = info.get(&name);
        let pick = |from_info: Option<&String>, from_part: &Option<String>| {
            from_info
                .filter(|s| !s.is_empty())
                .cloned()
                .or_else(|| from_part.clone())
                .unwrap_or_default()
        };
        parts.push(Part {
            file_name: pick(about.map(|a| &a.filename), &file.file_name),
            content_type: pick(about.map(|a| &a.content_type), &file.content_type),
            content_id: about.map(|a| a.content_id.clone()).unwrap_or_default(),
            bytes: file.bytes.to_vec(),
        });
    }
    message.finish(field("text"), field("html"), parts)
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderValue, header};
    use mail_parser::{MessageParser, MimeHeaders};

    use super::*;

    /// A parsed-mode form: a Latin-1 text body, a folded header and one inline file.
    fn parsed_form() -> Vec<u8> {
        let mut body = Vec::new();
        let mut field = |name: &str, extra: &str, value: &[u8]| {
            body.extend_from_slice(
                format!("--B\r\nContent-Disposition: form-data; name=\"{name}\"{extra}\r\n\r\n")
                    .as_bytes(),
            );
            body.extend_from_slice(value);
            body.extend_from_slice(b"\r\n");
        };
        field(
            "headers",
            "",
            b"From: Eve <eve@sender.test>\nSubject: =?UTF-8?Q?caf=C3=A9?=\nX-Long: one\n two\nContent-Type: text/plain\n",
        );
        field("text", "", b"caf\xe9 au lait");
        field(
            "charsets",
            "",
            br#"{"text":"iso-8859-1","headers":"UTF-8"}"#,
        );
        field("attachments", "", b"1");
        field(
            "attachment-info",
            "",
            br#"{"attachment1":{"filename":"logo.png","type":"image/png","content-id":"ii_logo"}}"#,
        );
        field(
            "attachment1",
            "; filename=\"logo.png\"\r\nContent-Type: image/png",
            b"\x89PNG\r\n\x1a\n\x00",
        );
        body.extend_from_slice(b"--B--\r\n");
        body
    }

    #[tokio::test]
    async fn the_parsed_mode_is_rebuilt_with_its_charsets_headers_and_files() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("multipart/form-data; boundary=B"),
        );
        let wanted = [
            "headers",
            "text",
            "html",
            "charsets",
            "attachments",
            "attachment-info",
            ATTACHMENTS,
        ];
        let form = Form::read(&headers, parsed_form(), &wanted)
            .await
            .expect("form");
        let raw = rebuild(&form).expect("rebuilt");
        let message = MessageParser::default().parse(&raw).expect("parses");
        assert_eq!(message.subject(), Some("café"));
        assert_eq!(
            message
                .from()
                .and_then(|a| a.first())
                .and_then(|a| a.address()),
            Some("eve@sender.test")
        );
        assert_eq!(message.header_raw("X-Long").map(str::trim), Some("one two"));
        assert_eq!(message.body_text(0).as_deref(), Some("café au lait"));
        let logo = message.attachment(0).expect("the file");
        assert_eq!(logo.contents(), b"\x89PNG\r\n\x1a\n\x00");
        assert_eq!(logo.content_id(), Some("ii_logo"));

        let announced = Form::read(&headers, parsed_form(), &wanted[..6])
            .await
            .expect("form");
        assert!(
            rebuild(&announced).is_err(),
            "announced but not kept: refused"
        );
    }
}
