//! `POST /v1/providers/sendgrid`: SendGrid Inbound Parse with "POST the raw, full MIME
//! message" checked (the raw mode). SendGrid signs no inbound-parse post, so the webhook URL
//! carries HTTP basic auth (`https://USER:PASSWORD@host/v1/providers/sendgrid`), checked
//! before the body is read.
//!
//! Fields used (`multipart/form-data`): `email` (the message, kept byte for byte),
//! `envelope` (JSON `{"to": [..], "from": ".."}`: the SMTP envelope) and `sender_ip` (the
//! SMTP client's address, recorded as the envelope's remote address). `to` and `from` are the
//! message's headers, not the envelope, and are not used. A post of the default parsed mode
//! (`headers`, `text`, `html`, no `email`) is refused 400 with the setting to change: the
//! parsed fields do not hold the message as it was sent.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Deserialize;

use super::form::Form;
use super::{Delivered, bad_payload, challenge, publish, receive_body, refused_auth};
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
    let received = receive_body(ctx, peer, headers, body, &["multipart/form-data"]).await?;
    let form = Form::read(
        headers,
        received.body,
        &["email", "envelope", "sender_ip", "headers"],
    )
    .await?;
    let Some(raw) = form.bytes("email") else {
        return Err(bad_payload(if form.has("headers") {
            "a parsed Inbound Parse post: check \"POST the raw, full MIME message\" in SendGrid's Inbound Parse settings"
        } else {
            "form field `email` (the raw MIME message) is missing"
        }));
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
        raw: raw.to_vec(),
        mail_from: envelope.from.filter(|f| !f.trim().is_empty()),
        rcpt_to: envelope.to,
        remote_addr,
    };
    publish(ctx, delivered, received.held).await
}
