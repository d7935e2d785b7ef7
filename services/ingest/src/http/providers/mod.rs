//! Inbound-mail webhooks of email providers on the HTTP intake, each turned into one
//! `raw-email` record through the same durable write as `POST /v1/messages`
//! ([`super::intake::publish`]):
//!
//! | route | provider | authentication | enabled by |
//! |---|---|---|---|
//! | `POST /v1/providers/mailgun/mime` (or `/v1/providers/mailgun`) | Mailgun Routes, `forward()` to a URL ending in `mime` (raw MIME, `body-mime`) | HMAC-SHA256 of `timestamp` + `token` with the webhook signing key, a replay window, each token once | `mailgun_signing_key` |
//! | `POST /v1/providers/sendgrid` | SendGrid Inbound Parse: "POST the raw, full MIME message" (`email`), or the parsed mode, rebuilt | HTTP basic auth in the webhook URL | `sendgrid_username` + `sendgrid_password` |
//! | `POST /v1/providers/postmark` | Postmark inbound webhook (JSON; `RawEmail` when "include raw email content" is on, else rebuilt) | HTTP basic auth in the webhook URL | `postmark_username` + `postmark_password` |
//! | `POST /v1/providers/ses` | Amazon SES receipt rules (S3 or SNS action) through an SNS HTTPS subscription | the SNS signature (SHA-256) with the configured certificate, the topic, a replay window, each `MessageId` once | `ses_topic_arn` + `ses_certificate_path` |
//!
//! A route exists only when its provider is enabled (404 otherwise). Every route checks the
//! client against `http_allowed_networks` first (403), then its authentication before anything
//! it is told is believed. Refusals are JSON `{"error", "message"}` like the intake's: 401
//! `bad-auth` / `bad-signature` / `stale-timestamp` / `replayed-token`, 400 `bad-payload` /
//! `too-many-recipients`, 413 `too-large`, 415 `unsupported-media-type`, 503 with `Retry-After`.
//!
//! Bounds: the request body is received like the intake's (the body timeout, the spool, the
//! in-flight budget), at most [`request_limit`] bytes (the message limit plus what base64 and
//! form fields add; an SNS delivery at most 1 MiB: SNS messages are at most 256 KiB); the
//! message it carries must fit `max_message_bytes` (413). The envelope: recipients and sender
//! as the provider reports them (at most `max_recipients`), the remote address the provider's
//! SMTP client when reported (SendGrid's `sender_ip`), else the webhook's caller as for
//! `/v1/messages`; `origin` names the provider (`provider:mailgun`).
//! Metrics and logs use the provider's name as the channel.
//!
//! SendGrid's and Postmark's credentials are checked before the body is read. Mailgun's and
//! SNS's authentication is inside the body: a Mailgun multipart post is streamed, its message
//! spooled until the signature is checked (a URL-encoded one is read whole, within
//! [`request_limit`]); an SNS delivery is at most 1 MiB.

mod basic_auth;
mod form;
mod mailgun;
mod postmark;
mod rebuilt;
mod replay;
mod sendgrid;
mod ses;
mod sns;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use axum::routing::post;
use mailstream_runtime::records::{Envelope, IngestSource};

pub use basic_auth::BasicAuth;
pub use mailgun::Mailgun;
pub use ses::Ses;

use super::HttpContext;
use super::intake::{self, Refusal};
use crate::budget::Reservation;
use crate::config::IngestSettings;
use crate::publisher::Intake;

/// The providers enabled by the settings.
#[derive(Default)]
pub struct Providers {
    pub mailgun: Option<Mailgun>,
    pub sendgrid: Option<BasicAuth>,
    pub postmark: Option<BasicAuth>,
    pub ses: Option<Ses>,
}

/// The channel names (metrics label, logs) of the providers.
pub const CHANNELS: [&str; 4] = ["mailgun", "sendgrid", "postmark", "ses"];

impl Providers {
    /// The providers `settings` enable (check [`problems`] first); SES reads its bucket with
    /// `store_options` (the runtime's `blob_store` options).
    pub fn from_settings(settings: &IngestSettings, store_options: &[(String, String)]) -> Self {
        let basic = |user: &str, password: &Option<crate::config::Secret>| {
            password
                .clone()
                .filter(|_| !user.trim().is_empty())
                .map(|p| BasicAuth::new(user.trim(), p))
        };
        Self {
            mailgun: settings.mailgun_signing_key.clone().map(Mailgun::new),
            sendgrid: basic(&settings.sendgrid_username, &settings.sendgrid_password),
            postmark: basic(&settings.postmark_username, &settings.postmark_password),
            ses: ses(settings, store_options).and_then(Result::ok),
        }
    }

    /// The channels of the enabled providers.
    pub fn channels(&self) -> Vec<&'static str> {
        let on = [
            self.mailgun.is_some(),
            self.sendgrid.is_some(),
            self.postmark.is_some(),
            self.ses.is_some(),
        ];
        CHANNELS
            .into_iter()
            .zip(on)
            .filter_map(|(c, on)| on.then_some(c))
            .collect()
    }
}

/// SES when `ses_topic_arn` is set: its certificate loaded, or why not.
fn ses(
    settings: &IngestSettings,
    store_options: &[(String, String)],
) -> Option<Result<Ses, String>> {
    let topic = settings.ses_topic_arn.trim();
    if topic.is_empty() {
        return None;
    }
    let key = |name: &str| mailstream_runtime::config::key_label(crate::NAME, name);
    Some(match &settings.ses_certificate_path {
        None => Err(format!(
            "{} is set but {} is not: the SNS signing certificate (PEM) is needed to verify deliveries",
            key("ses_topic_arn"),
            key("ses_certificate_path")
        )),
        Some(path) => Ses::new(topic, path, &settings.ses_bucket_url, store_options)
            .map_err(|e| format!("{}: {e}", key("ses_certificate_path"))),
    })
}

/// The problems of the provider settings (part of `validate_serve`): a password without its
/// user name or the reverse, secrets shorter than 16 bytes, SES without a usable certificate.
pub fn problems(settings: &IngestSettings) -> Vec<String> {
    let key = |name: &str| mailstream_runtime::config::key_label(crate::NAME, name);
    let mut errors = Vec::new();
    for (provider, user, password) in [
        (
            "sendgrid",
            &settings.sendgrid_username,
            &settings.sendgrid_password,
        ),
        (
            "postmark",
            &settings.postmark_username,
            &settings.postmark_password,
        ),
    ] {
        let (user_key, password_key) = (
            key(&format!("{provider}_username")),
            key(&format!("{provider}_password")),
        );
        match (user.trim().is_empty(), password) {
            (true, Some(_)) => errors.push(format!(
                "{password_key} is set but {user_key} is not: basic auth needs both"
            )),
            (false, None) => errors.push(format!(
                "{user_key} is set but {password_key} is not: basic auth needs both"
            )),
            _ => {}
        }
        if user.contains(':') {
            errors.push(format!(
                "{user_key}: a basic-auth user name cannot hold `:`"
            ));
        }
        if password.as_ref().is_some_and(|p| p.expose().len() < 16) {
            errors.push(format!("{password_key}: must be at least 16 bytes long"));
        }
    }
    if settings
        .mailgun_signing_key
        .as_ref()
        .is_some_and(|k| k.expose().len() < 16)
    {
        errors.push(format!(
            "{}: must be at least 16 bytes long (Mailgun's HTTP webhook signing key)",
            key("mailgun_signing_key")
        ));
    }
    if let Some(Err(problem)) = ses(settings, &[]) {
        errors.push(problem);
    }
    errors
}

/// The routes of the enabled providers.
pub(super) fn routes(
    router: Router<Arc<HttpContext>>,
    providers: &Providers,
) -> Router<Arc<HttpContext>> {
    let mut router = router;
    if providers.mailgun.is_some() {
        // Mailgun posts raw MIME only to a URL ending in `mime`.
        router = router
            .route("/v1/providers/mailgun", post(mailgun::receive))
            .route("/v1/providers/mailgun/mime", post(mailgun::receive));
    }
    if providers.sendgrid.is_some() {
        router = router.route("/v1/providers/sendgrid", post(sendgrid::receive));
    }
    if providers.postmark.is_some() {
        router = router.route("/v1/providers/postmark", post(postmark::receive));
    }
    if providers.ses.is_some() {
        router = router.route("/v1/providers/ses", post(ses::receive));
    }
    router
}

/// The most bytes a provider's request may have: the message limit, plus a third for base64
/// (Postmark's attachments) and 64 KiB for the other form or JSON fields.
pub(super) fn request_limit(ctx: &HttpContext) -> usize {
    let max = ctx.max_message_bytes;
    max.saturating_add(max / 3).saturating_add(64 * 1024)
}

/// A request that passed the network check: its client and its body, received within the
/// intake's bounds and held against the in-flight budget.
pub(super) struct Received {
    pub remote_addr: String,
    pub body: Vec<u8>,
    pub held: Reservation,
}

/// Checks the client against the allowlist, then receives the body (one of `content_types`
/// required), at most `limit` bytes ([`request_limit`], or less where the provider's own
/// limit is smaller).
pub(super) async fn receive_body(
    ctx: &HttpContext,
    peer: SocketAddr,
    headers: &HeaderMap,
    body: Body,
    content_types: &[&str],
    limit: usize,
) -> Result<Received, Refusal> {
    let client = intake::client(ctx, peer, headers)?;
    require_content_type(headers, content_types)?;
    let spool = intake::receive(ctx, body, limit, |_| {}).await?;
    let (body, held) = spool.into_bytes().await.map_err(intake::spool_refusal)?;
    Ok(Received {
        remote_addr: intake::remote_addr(client, peer),
        body,
        held,
    })
}

/// 415 unless the request's media type is one of `want`.
fn require_content_type(headers: &HeaderMap, want: &[&str]) -> Result<(), Refusal> {
    let content_type = intake::header_str(headers, header::CONTENT_TYPE.as_str()).unwrap_or("");
    let mime = content_type.split(';').next().unwrap_or("").trim();
    if want.iter().any(|w| mime.eq_ignore_ascii_case(w)) {
        Ok(())
    } else {
        Err(Refusal::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            format!(
                "Content-Type must be {}, got `{content_type}`",
                want.join(" or ")
            ),
        ))
    }
}

/// 400 `bad-payload`: the provider's payload is not what its documentation describes.
pub(super) fn bad_payload(message: impl Into<String>) -> Refusal {
    Refusal::new(StatusCode::BAD_REQUEST, "bad-payload", message)
}

/// The email a provider delivered, ready for the durable write.
pub(super) struct Delivered {
    pub provider: &'static str,
    pub raw: Vec<u8>,
    pub mail_from: Option<String>,
    pub rcpt_to: Vec<String>,
    pub remote_addr: String,
}

/// Checks the message and envelope against the intake's limits and writes the email through
/// the intake's durable write; `held` accounts for the message's copy of the request's bytes.
pub(super) async fn publish(
    ctx: &HttpContext,
    delivered: Delivered,
    mut held: Reservation,
) -> Result<Response, Refusal> {
    if delivered.raw.is_empty() {
        return Err(bad_payload("the payload carries no message"));
    }
    if delivered.raw.len() > ctx.max_message_bytes {
        return Err(intake::too_large(ctx.max_message_bytes));
    }
    if delivered.rcpt_to.len() > ctx.max_recipients {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "too-many-recipients",
            format!(
                "{} recipients; at most {} (max_recipients)",
                delivered.rcpt_to.len(),
                ctx.max_recipients
            ),
        ));
    }
    held.grow(delivered.raw.len())
        .map_err(|_| intake::spool_refusal(crate::spool::SpoolError::OverBudget))?;
    let intake = Intake {
        source: IngestSource::Http,
        envelope: Envelope {
            mail_from: delivered.mail_from,
            rcpt_to: delivered.rcpt_to,
            remote_addr: Some(delivered.remote_addr),
            helo: None,
        },
        raw: delivered.raw,
        origin: Some(format!("provider:{}", delivered.provider)),
        ingest_id: None,
    };
    let response = intake::publish(ctx, intake, delivered.provider).await;
    drop(held);
    response
}

/// A 401 for a basic-auth provider carries the challenge, so clients that send credentials
/// only when asked send them.
pub(super) fn challenge(mut response: Response) -> Response {
    if response.status() == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Basic realm=\"mailstream\""),
        );
    }
    response
}

/// Recipients from a comma-separated list, trimmed, empty entries dropped.
pub(super) fn split_addresses(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// 401 with the reason, shared by the routes.
pub(super) fn refused_auth(error: &'static str, message: impl Into<String>) -> Refusal {
    intake::unauthorized(error, message)
}

#[cfg(test)]
mod tests {
    use mailstream_runtime::config::load;
    use mailstream_runtime::{ConfigSource, RuntimeError};

    use super::*;
    use crate::config::ServeSettings;

    fn base() -> ConfigSource {
        ConfigSource::default()
            .with_env("MAILSTREAM_BOOTSTRAP_SERVERS", "k:9092")
            .with_env("MAILSTREAM_SCHEMA_REGISTRY_URL", "http://r:8081")
            .with_env("MAILSTREAM_INGEST_SMTP_ADDR", "")
    }

    #[test]
    fn providers_alone_serve_http_and_their_secrets_come_from_files() {
        let dir = tempfile::tempdir().expect("dir");
        let key_file = dir.path().join("mailgun");
        std::fs::write(&key_file, "key-mailgun-0123456789abcdef\n").expect("write");
        let source = base()
            .with_env(
                "MAILSTREAM_INGEST_MAILGUN_SIGNING_KEY_FILE",
                key_file.to_str().expect("path"),
            )
            .with_env("MAILSTREAM_INGEST_SENDGRID_USERNAME", "sendgrid")
            .with_env(
                "MAILSTREAM_INGEST_SENDGRID_PASSWORD",
                "sg-pass-0123456789abcdef",
            );
        let (_, ServeSettings(s)) = load::<ServeSettings>("ingest", &source).expect("valid");
        assert_eq!(
            s.mailgun_signing_key
                .as_ref()
                .map(crate::config::Secret::expose),
            Some("key-mailgun-0123456789abcdef")
        );
        assert_eq!(
            Providers::from_settings(&s, &[]).channels(),
            ["mailgun", "sendgrid"]
        );
        let debug = format!("{s:?}");
        assert!(
            !debug.contains("0123456789abcdef"),
            "no secret in Debug: {debug}"
        );
    }

    #[test]
    fn half_a_basic_auth_and_short_secrets_are_refused_by_name() {
        let source = base()
            .with_env("MAILSTREAM_INGEST_MAILGUN_SIGNING_KEY", "short")
            .with_env(
                "MAILSTREAM_INGEST_SENDGRID_PASSWORD",
                "sg-pass-0123456789abcdef",
            )
            .with_env("MAILSTREAM_INGEST_POSTMARK_USERNAME", "postmark");
        let Err(RuntimeError::Config(problems)) = load::<ServeSettings>("ingest", &source) else {
            panic!("refused");
        };
        let text = problems.join("\n");
        for needle in [
            "MAILSTREAM_INGEST_MAILGUN_SIGNING_KEY): must be at least 16 bytes",
            "MAILSTREAM_INGEST_SENDGRID_PASSWORD) is set but key `ingest.sendgrid_username`",
            "MAILSTREAM_INGEST_POSTMARK_USERNAME) is set but key `ingest.postmark_password`",
        ] {
            assert!(text.contains(needle), "`{needle}` missing from: {text}");
        }
        assert!(!text.contains("sg-pass"), "no secret in a problem: {text}");
    }
}
