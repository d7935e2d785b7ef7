//! `POST /v1/providers/ses`: Amazon SES receiving, through an SNS topic subscribed with this
//! URL (HTTPS). A receipt rule either stores the message in S3 and notifies the topic (action
//! `S3`: the notification names `bucketName` and `objectKey`; the object is read with
//! `object_store` from `s3://{bucketName}` with the runtime's `blob_store` options, or from
//! `ses_bucket_url` when set) or publishes it to the topic itself (action `SNS`, messages up to
//! 150 KB: `content`, `BASE64` or `UTF8`). Either way the record holds the message as SES
//! received it.
//!
//! Every delivery is checked before anything it says is believed ([`super::sns`]): `TopicArn`
//! must be `ses_topic_arn` (401 `wrong-topic`; SNS signs every topic with the same
//! certificate), the signature must verify with the certificate of `ses_certificate_path`
//! (401 `bad-signature`), `Timestamp` must be within `replay_window_secs` (401
//! `stale-timestamp`) and a `MessageId` is accepted once (401 `replayed-token`; a failed write
//! forgets it, so SNS's retry is taken). A `SubscriptionConfirmation` is answered 200 and its
//! `SubscribeURL` logged ([`events::subscription_pending`]): open it once to confirm (ingest
//! makes no outbound call). Notifications other than `Received` (SES's setup test) are
//! answered 200 and written nowhere.
//!
//! The envelope: `mail.source` (MAIL FROM) and `receipt.recipients` (the rule's recipients,
//! else `mail.destination`).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use object_store::ObjectStoreExt;
use serde::Deserialize;
use serde_json::json;

use super::replay::{self, MAX_SEEN, Seen, Tokens};
use super::sns::{SigningCert, SnsMessage};
use super::{Delivered, bad_payload, publish, receive_body, refused_auth};
use crate::events;
use crate::http::HttpContext;
use crate::http::intake::{self, Refusal, respond};

const CHANNEL: &str = "ses";

/// The most bytes an SNS delivery may have: SNS messages are at most 256 KiB, JSON-escaped
/// once more inside the delivery; an unauthenticated body is never larger than this.
const SNS_BODY_LIMIT: usize = 1024 * 1024;

/// The topic, its signing certificate, where S3 objects are read, and the message ids seen.
pub struct Ses {
    topic_arn: String,
    cert: SigningCert,
    bucket_url: Option<String>,
    /// The runtime's `blob_store` options (endpoint, region, credentials) for the bucket.
    store_options: Vec<(String, String)>,
    seen: Mutex<Tokens>,
}

impl Ses {
    /// From the settings; the certificate file must hold an X.509 certificate.
    /// `store_options` are the runtime's `blob_store` options, used to read the bucket.
    pub fn new(
        topic_arn: &str,
        certificate: &std::path::Path,
        bucket_url: &str,
        store_options: &[(String, String)],
    ) -> Result<Self, String> {
        Ok(Self {
            topic_arn: topic_arn.trim().to_string(),
            cert: SigningCert::load(certificate)?,
            bucket_url: Some(bucket_url.trim())
                .filter(|u| !u.is_empty())
                .map(str::to_string),
            store_options: store_options.to_vec(),
            seen: Mutex::new(Tokens::new(MAX_SEEN)),
        })
    }
}

/// SES's receipt notification (the fields used).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Notification {
    notification_type: String,
    #[serde(default)]
    mail: Mail,
    #[serde(default)]
    receipt: Option<Receipt>,
    #[serde(default)]
    content: Option<String>,
}

#[derive(Deserialize, Default)]
struct Mail {
    #[serde(default)]
    source: String,
    #[serde(default)]
    destination: Vec<String>,
}

#[derive(Deserialize)]
struct Receipt {
    #[serde(default)]
    recipients: Vec<String>,
    action: Action,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Action {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    bucket_name: String,
    #[serde(default)]
    object_key: String,
    #[serde(default)]
    encoding: String,
}

pub(super) async fn receive(
    State(ctx): State<Arc<HttpContext>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let result = handle(&ctx, peer, &headers, body).await;
    respond(&ctx, CHANNEL, result)
}

async fn handle(
    ctx: &HttpContext,
    peer: SocketAddr,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, Refusal> {
    let Some(ses) = &ctx.providers.ses else {
        return Err(refused_auth("bad-signature", "SES intake is off"));
    };
    // SNS posts JSON as text/plain.
    let types = ["text/plain", "application/json"];
    let received = receive_body(ctx, peer, headers, body, &types, SNS_BODY_LIMIT).await?;
    let sns: SnsMessage = serde_json::from_slice(&received.body)
        .map_err(|e| bad_payload(format!("not an SNS message: {e}")))?;
    if sns.topic_arn != ses.topic_arn {
        return Err(refused_auth(
            "wrong-topic",
            "TopicArn is not the configured ses_topic_arn",
        ));
    }
    ses.cert
        .verifies(&sns)
        .map_err(|why| refused_auth("bad-signature", why))?;
    let ts = chrono::DateTime::parse_from_rfc3339(&sns.timestamp)
        .map_err(|_| refused_auth("bad-timestamp", "Timestamp is not ISO 8601"))?
        .timestamp();
    let now = intake::fresh(ctx, ts)?;
    match sns.kind.as_str() {
        "SubscriptionConfirmation" => {
            let url = sns.subscribe_url.as_deref().unwrap_or_default();
            events::subscription_pending(CHANNEL, &sns.topic_arn, url);
            return Ok(answer(
                "subscription-pending",
                "open the logged SubscribeURL once",
            ));
        }
        "Notification" => {}
        _ => return Ok(answer("ignored", "not a notification")),
    }
    let notification: Notification = serde_json::from_str(&sns.message)
        .map_err(|e| bad_payload(format!("not an SES receipt notification: {e}")))?;
    let (Some(receipt), "Received") = (
        notification.receipt,
        notification.notification_type.as_str(),
    ) else {
        return Ok(answer("ignored", "not a Received notification"));
    };
    let window = i64::try_from(ctx.replay_window_secs).unwrap_or(i64::MAX);
    match replay::lock(&ses.seen).take(&sns.message_id, now, ts.saturating_add(window)) {
        Ok(()) => {}
        Err(Seen::Replayed) => {
            return Err(refused_auth(
                "replayed-token",
                "this MessageId was already taken",
            ));
        }
        Err(Seen::Full) => {
            return Err(Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "replay-cache-full",
                "too many SNS messages within the replay window; retry later",
            ));
        }
    }
    let result = deliver(
        ctx,
        ses,
        notification.mail,
        notification.content,
        receipt,
        received.remote_addr,
        received.held,
    )
    .await;
    if !result
        .as_ref()
        .is_ok_and(|r| r.status() == StatusCode::ACCEPTED)
    {
        replay::lock(&ses.seen).forget(&sns.message_id);
    }
    result
}

/// Reads the message the notification carries or names and writes it.
async fn deliver(
    ctx: &HttpContext,
    ses: &Ses,
    mail: Mail,
    content: Option<String>,
    receipt: Receipt,
    remote_addr: String,
    held: crate::budget::Reservation,
) -> Result<Response, Refusal> {
    let action = &receipt.action;
    let raw = match action.kind.as_str() {
        "SNS" => {
            let content = content.ok_or_else(|| bad_payload("an SNS action without `content`"))?;
            if action.encoding.eq_ignore_ascii_case("BASE64") {
                STANDARD
                    .decode(content.trim())
                    .map_err(|_| bad_payload("`content` is not base64"))?
            } else {
                content.into_bytes()
            }
        }
        "S3" => fetch(ctx, ses, &action.bucket_name, &action.object_key).await?,
        other => {
            return Err(bad_payload(format!(
                "receipt action `{other}`: only S3 and SNS actions carry the message"
            )));
        }
    };
    let rcpt_to = if receipt.recipients.is_empty() {
        mail.destination
    } else {
        receipt.recipients
    };
    let source = mail
        .source
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>');
    let delivered = Delivered {
        provider: CHANNEL,
        raw,
        mail_from: (!source.is_empty()).then(|| source.to_string()),
        rcpt_to,
        remote_addr,
    };
    publish(ctx, delivered, held).await
}

/// The S3 object the receipt rule stored, within `max_message_bytes` (413).
async fn fetch(ctx: &HttpContext, ses: &Ses, bucket: &str, key: &str) -> Result<Vec<u8>, Refusal> {
    let base = ses
        .bucket_url
        .clone()
        .unwrap_or_else(|| format!("s3://{bucket}"));
    let url =
        url::Url::parse(&base).map_err(|e| unavailable(format!("object store `{base}`: {e}")))?;
    let (store, root) = object_store::parse_url_opts(&url, ses.store_options.iter().cloned())
        .map_err(|e| unavailable(format!("object store `{base}`: {e}")))?;
    let full = if root.as_ref().is_empty() {
        key.to_string()
    } else {
        format!("{root}/{key}")
    };
    let path = object_store::path::Path::parse(&full)
        .map_err(|e| bad_payload(format!("objectKey `{key}`: {e}")))?;
    let meta = store
        .head(&path)
        .await
        .map_err(|e| unavailable(format!("reading {key}: {e}")))?;
    if meta.size > ctx.max_message_bytes as u64 {
        return Err(intake::too_large(ctx.max_message_bytes));
    }
    let bytes = store
        .get(&path)
        .await
        .map_err(|e| unavailable(format!("reading {key}: {e}")))?
        .bytes()
        .await
        .map_err(|e| unavailable(format!("reading {key}: {e}")))?;
    Ok(bytes.to_vec())
}

/// 503: the stored message cannot be read now; SNS retries the delivery.
fn unavailable(message: String) -> Refusal {
    Refusal::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "object-unavailable",
        message,
    )
}

/// 200 for a delivery that writes nothing.
fn answer(status: &str, message: &str) -> Response {
    (
        StatusCode::OK,
        axum::Json(json!({"status": status, "message": message})),
    )
        .into_response()
}
