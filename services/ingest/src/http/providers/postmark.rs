//! `POST /v1/providers/postmark`: Postmark's inbound webhook, a JSON document
//! (`application/json`). Postmark signs nothing, so the webhook URL carries HTTP basic auth
//! (`https://USER:PASSWORD@host/v1/providers/postmark`), checked before the body is read.
//!
//! The message: `RawEmail`, byte for byte, when the inbound stream has "Include raw email
//! content in JSON payload" on (recommended: the only faithful form). Otherwise it is rebuilt
//! with `mail-builder` ([`rebuild`], [`super::rebuilt`]) from the parsed fields: `FromFull`, `ToFull`, `CcFull`,
//! `ReplyTo`, `Subject`, `Date`, `Headers[]` (all but the ones above and the MIME structure,
//! in order), `TextBody`, `HtmlBody`, `Attachments[]` (base64 `Content`, `ContentType`,
//! `Name`, inline when `ContentID` is set). A rebuilt message has new MIME boundaries and
//! encodings; its Message-ID is the `Message-ID` header Postmark reports, else one made from
//! Postmark's `MessageID` (`<postmark-{MessageID}@mailstream.invalid>`), the same on every
//! retry, so the resolver still dedupes.
//!
//! The envelope: recipients `OriginalRecipient` (the address Postmark received the mail for),
//! else every `ToFull`, `CcFull` and `BccFull` address; the sender the `Return-Path` header
//! (`<>`: the null sender), else `FromFull.Email` (Postmark does not report MAIL FROM).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::HeaderMap;
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use mail_builder::headers::address::Address;
use serde::Deserialize;

use super::rebuilt::{Part, Rebuilt, one_line};
use super::{
    Delivered, bad_payload, challenge, publish, receive_body, refused_auth, request_limit,
};
use crate::http::HttpContext;
use crate::http::intake::{Refusal, respond};

const CHANNEL: &str = "postmark";

/// Headers the rebuilt message sets from the structured fields, not copied from `Headers[]`
/// (Bcc is envelope only).
const STRUCTURED: [&str; 7] = ["from", "to", "cc", "bcc", "reply-to", "subject", "date"];

/// Postmark's inbound JSON (the fields used; others are ignored).
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct Inbound {
    from: String,
    from_full: Option<Contact>,
    to_full: Vec<Contact>,
    cc_full: Vec<Contact>,
    bcc_full: Vec<Contact>,
    original_recipient: String,
    reply_to: String,
    subject: String,
    #[serde(rename = "MessageID")]
    message_id: String,
    date: String,
    text_body: String,
    html_body: String,
    headers: Vec<Header>,
    attachments: Vec<Attachment>,
    raw_email: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct Contact {
    email: String,
    name: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct Header {
    name: String,
    value: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct Attachment {
    name: String,
    content: String,
    content_type: String,
    #[serde(rename = "ContentID")]
    content_id: String,
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
    let Some(auth) = &ctx.providers.postmark else {
        return Err(refused_auth("bad-auth", "Postmark intake is off"));
    };
    crate::http::intake::client(ctx, peer, headers)?;
    auth.check(headers)?;
    let received = receive_body(
        ctx,
        peer,
        headers,
        body,
        &["application/json"],
        request_limit(ctx),
    )
    .await?;
    let inbound: Inbound = serde_json::from_slice(&received.body)
        .map_err(|e| bad_payload(format!("not Postmark's inbound JSON: {e}")))?;
    drop(received.body);
    if inbound.message_id.trim().is_empty() {
        return Err(bad_payload(
            "not Postmark's inbound JSON: `MessageID` is missing",
        ));
    }
    let (mail_from, rcpt_to) = envelope(&inbound);
    let raw = match &inbound.raw_email {
        Some(raw) if !raw.is_empty() => raw.as_bytes().to_vec(),
        _ => rebuild(&inbound)?,
    };
    let delivered = Delivered {
        provider: CHANNEL,
        raw,
        mail_from,
        rcpt_to,
        remote_addr: received.remote_addr,
    };
    publish(ctx, delivered, received.held).await
}

/// The envelope's sender and recipients (see the module's documentation).
fn envelope(inbound: &Inbound) -> (Option<String>, Vec<String>) {
    let return_path = inbound
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("return-path"))
        .map(|h| {
            h.value
                .trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .trim()
        });
    let from = inbound
        .from_full
        .as_ref()
        .map(|c| c.email.as_str())
        .unwrap_or(inbound.from.as_str())
        .trim();
    let mail_from = match return_path {
        Some(path) => (!path.is_empty()).then(|| path.to_string()),
        None => (!from.is_empty()).then(|| from.to_string()),
    };
    let rcpt_to = if inbound.original_recipient.trim().is_empty() {
        inbound
            .to_full
            .iter()
            .chain(&inbound.cc_full)
            .chain(&inbound.bcc_full)
            .map(|c| c.email.trim().to_string())
            .filter(|e| !e.is_empty())
            .collect()
    } else {
        vec![inbound.original_recipient.trim().to_string()]
    };
    (mail_from, rcpt_to)
}

fn address(contact: &Contact) -> Address<'static> {
    let name = Some(contact.name.trim())
        .filter(|n| !n.is_empty())
        .map(str::to_string);
    Address::new_address(name, contact.email.trim().to_string())
}

fn addresses(contacts: &[Contact]) -> Option<Address<'static>> {
    let list: Vec<Address<'static>> = contacts
        .iter()
        .filter(|c| !c.email.trim().is_empty())
        .map(address)
        .collect();
    (!list.is_empty()).then(|| Address::new_list(list))
}

/// The message rebuilt from Postmark's parsed fields ([`super::rebuilt`]).
fn rebuild(inbound: &Inbound) -> Result<Vec<u8>, Refusal> {
    let mut message = Rebuilt::new();
    match &inbound.from_full {
        Some(from) if !from.email.trim().is_empty() => {
            let from = address(from);
            message.with(|m| m.from(from));
        }
        _ => message.header("From", &inbound.from, &[]),
    }
    if let Some(to) = addresses(&inbound.to_full) {
        message.with(|m| m.to(to));
    }
    if let Some(cc) = addresses(&inbound.cc_full) {
        message.with(|m| m.cc(cc));
    }
    if !inbound.reply_to.trim().is_empty() {
        message.header("Reply-To", &inbound.reply_to, &[]);
    }
    let subject = inbound.subject.clone();
    message.with(|m| m.subject(subject));
    if !inbound.date.trim().is_empty() {
        message.header("Date", &inbound.date, &[]);
    }
    for header in &inbound.headers {
        message.header(&header.name, &header.value, &STRUCTURED);
    }
    if !message.has_message_id && !inbound.message_id.trim().is_empty() {
        let id = format!(
            "postmark-{}@mailstream.invalid",
            one_line(&inbound.message_id)
        );
        message.with(|m| m.message_id(id));
    }
    let mut parts = Vec::with_capacity(inbound.attachments.len());
    for attachment in &inbound.attachments {
        let bytes = STANDARD.decode(attachment.content.trim()).map_err(|e| {
            bad_payload(format!(
                "attachment `{}`: Content is not base64: {e}",
                attachment.name
            ))
        })?;
        parts.push(Part {
            file_name: attachment.name.clone(),
            content_type: attachment.content_type.clone(),
            content_id: attachment.content_id.clone(),
            bytes,
        });
    }
    message.finish(inbound.text_body.clone(), inbound.html_body.clone(), parts)
}

#[cfg(test)]
#[path = "postmark_tests.rs"]
mod tests;
