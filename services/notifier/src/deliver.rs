//! Sending one notification to one channel: the request, its retries and the rate limit.
//!
//! | the channel answers | in place | the record |
//! |---|---|---|
//! | 2xx | done | the send is recorded ([`crate::ledger`]) |
//! | 408, 425, 429, 5xx, a timeout, a refused or reset connection | retried after the runtime's backoff (at least a 429's `Retry-After`, at most `retry_after` cap), while attempts and the batch's time last | what still fails is `Transient`: the batch is aborted and read again after the runtime's backoff; never dead-lettered |
//! | 401, 403, 404, 410 (a revoked or deleted webhook, a wrong secret) | not retried | `Transient`: the notifier stops making progress (`notifier_blocked{channel}` is 1, `/readyz` turns not ready past `stall_timeout_ms`) and an ERROR names the key to fix |
//! | another 4xx (400 `invalid_blocks`, 413, 422: this message is refused) | not retried | `Poison`, class `notify-rejected`: the record is dead-lettered (channels that took it keep their record, so a DLQ replay does not send it there again) |
//!
//! Every attempt first waits for the channel's token bucket (`governor`), so a burst of hot
//! leads is spread out instead of being throttled by the channel.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use mailstream_runtime::config::Secret;
use mailstream_runtime::signing;
use mailstream_runtime::stream::Backoff;
use mailstream_runtime::{ProcessError, Shutdown};

use crate::settings::{NotifierSettings, key};

/// The dead-letter class of a record a channel refused.
pub const REJECTED: &str = "notify-rejected";

/// The longest `Retry-After` waited for in place.
const RETRY_AFTER_MAX: Duration = Duration::from_secs(60);

/// Which channel (`slack`, `webhook`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Slack,
    Webhook,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Slack => "slack",
            Self::Webhook => "webhook",
        }
    }

    /// The setting holding its URL.
    pub fn url_key(self) -> &'static str {
        match self {
            Self::Slack => "slack_webhook_url",
            Self::Webhook => "webhook_url",
        }
    }
}

/// One configured channel.
#[derive(Clone)]
pub struct Channel {
    pub kind: Kind,
    url: Secret,
    secret: Option<Secret>,
    rate: Option<Arc<DefaultDirectRateLimiter>>,
}

/// How a send ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    pub status: u16,
    pub attempts: u32,
}

/// Why a send failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// The channel is down, slow or throttling past the retries: try the batch again later.
    Unavailable(String),
    /// The channel refused our credentials or no longer exists: fix the setting.
    Refused(String),
    /// The channel refused this message: dead-letter it.
    Rejected(String),
}

impl SendError {
    pub fn reason(&self) -> &str {
        match self {
            Self::Unavailable(r) | Self::Refused(r) | Self::Rejected(r) => r,
        }
    }

    pub fn class(&self) -> &'static str {
        match self {
            Self::Unavailable(_) => "unavailable",
            Self::Refused(_) => "refused",
            Self::Rejected(_) => "rejected",
        }
    }

    pub fn into_process_error(self, kind: Kind) -> ProcessError {
        match self {
            Self::Unavailable(r) => ProcessError::transient(r),
            Self::Refused(r) => ProcessError::transient(format!(
                "{r}: the {} channel refused the request; notifications wait until {} is fixed",
                kind.name(),
                key(kind.url_key())
            )),
            Self::Rejected(r) => ProcessError::poison(REJECTED, r),
        }
    }
}

/// What one attempt's status means.
fn classify(status: u16) -> Option<fn(String) -> SendError> {
    match status {
        200..=299 => None,
        408 | 425 | 429 | 500..=599 => Some(SendError::Unavailable),
        401 | 403 | 404 | 410 => Some(SendError::Refused),
        _ => Some(SendError::Rejected),
    }
}

/// Every channel the settings configure.
pub fn channels(settings: &NotifierSettings) -> Vec<Channel> {
    let rate = || {
        let per_sec = settings.rate_limit_per_sec;
        (per_sec > 0.0 && per_sec.is_finite())
            .then(|| Quota::with_period(Duration::from_secs_f64(1.0 / per_sec)))
            .flatten()
            .map(|quota| {
                let burst = NonZeroU32::new(settings.rate_limit_burst).unwrap_or(NonZeroU32::MIN);
                Arc::new(RateLimiter::direct(quota.allow_burst(burst)))
            })
    };
    let mut out = Vec::new();
    if let Some(url) = &settings.slack_webhook_url {
        out.push(Channel {
            kind: Kind::Slack,
            url: url.clone(),
            secret: None,
            rate: rate(),
        });
    }
    if let (Some(url), Some(secret)) = (&settings.webhook_url, &settings.webhook_secret) {
        out.push(Channel {
            kind: Kind::Webhook,
            url: Secret::new(url.clone()),
            secret: Some(secret.clone()),
            rate: rate(),
        });
    }
    out
}

/// Sends notifications with retries in place.
#[derive(Clone)]
pub struct Sender {
    pub http: reqwest::Client,
    pub max_attempts: u32,
    pub backoff_max: Duration,
    pub request_timeout: Duration,
    pub shutdown: Shutdown,
}

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

impl Sender {
    pub fn new(settings: &NotifierSettings, shutdown: Shutdown) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .timeout(settings.request_timeout())
            .connect_timeout(settings.request_timeout())
            .user_agent(concat!("mailstream-notifier/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("building the HTTP client: {e}"))?;
        Ok(Self {
            http,
            max_attempts: settings.max_attempts.max(1),
            backoff_max: Duration::from_millis(settings.backoff_max_ms),
            request_timeout: settings.request_timeout(),
            shutdown,
        })
    }

    /// One request; the webhook's is signed at the moment it is made, so a retry carries a
    /// fresh timestamp.
    async fn attempt(
        &self,
        channel: &Channel,
        event_id: &str,
        body: &[u8],
    ) -> Result<u16, (SendError, Option<Duration>)> {
        let mut request = self
            .http
            .post(channel.url.expose())
            .header("content-type", "application/json")
            .body(body.to_vec());
        if let Some(secret) = &channel.secret {
            let timestamp = unix_secs().to_string();
            request = request
                .header(signing::TIMESTAMP_HEADER, &timestamp)
                .header(
                    signing::SIGNATURE_HEADER,
                    signing::sign_body(secret, &timestamp, body),
                )
                .header("idempotency-key", event_id)
                .header("x-mailstream-event-id", event_id);
        }
        let name = channel.kind.name();
        let response = request.send().await.map_err(|e| {
            // Never the URL: Slack's carries its credential.
            let what = if e.is_timeout() {
                "timed out"
            } else if e.is_connect() {
                "could not connect"
            } else {
                "failed"
            };
            (
                SendError::Unavailable(format!("{name}: the request {what}")),
                None,
            )
        })?;
        let status = response.status().as_u16();
        let Some(error) = classify(status) else {
            return Ok(status);
        };
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|s| Duration::from_secs(s).min(RETRY_AFTER_MAX));
        let text = response.text().await.unwrap_or_default();
        let text: String = text.chars().take(200).collect();
        Err((
            error(format!("{name} answered {status}: {}", text.trim())),
            retry_after,
        ))
    }

    /// Sends `body` to `channel`, retrying in place while attempts and `deadline` allow.
    pub async fn send(
        &self,
        channel: &Channel,
        event_id: &str,
        body: &[u8],
        deadline: Instant,
        mut failed: impl FnMut(&SendError, u32, bool),
    ) -> Result<Sent, SendError> {
        let mut backoff = Backoff::new(self.backoff_max);
        let mut attempts = 0;
        loop {
            attempts += 1;
            if let Some(rate) = &channel.rate {
                let mut shutdown = self.shutdown.clone();
                tokio::select! {
                    _ = rate.until_ready() => {}
                    _ = shutdown.wait() => return Err(SendError::Unavailable("shutting down".into())),
                }
            }
            let (error, retry_after) = match self.attempt(channel, event_id, body).await {
                Ok(status) => return Ok(Sent { status, attempts }),
                Err(e) => e,
            };
            let retrying =
                matches!(error, SendError::Unavailable(_)) && attempts < self.max_attempts;
            failed(&error, attempts, retrying);
            if !retrying {
                return Err(error);
            }
            let delay = backoff.next_delay().max(retry_after.unwrap_or_default());
            if Instant::now() + delay + self.request_timeout > deadline {
                return Err(SendError::Unavailable(format!(
                    "{} (another attempt after {} ms would outlive the batch)",
                    error.reason(),
                    delay.as_millis()
                )));
            }
            let mut shutdown = self.shutdown.clone();
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.wait() => return Err(SendError::Unavailable("shutting down".into())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_message_s_refusal_is_dead_lettered() {
        let kind = |s| classify(s).map(|f| f(String::new()).class());
        assert_eq!(kind(200), None);
        assert_eq!(kind(204), None);
        for s in [408, 425, 429, 500, 502, 503] {
            assert_eq!(kind(s), Some("unavailable"), "{s}");
        }
        for s in [401, 403, 404, 410] {
            assert_eq!(kind(s), Some("refused"), "{s}");
        }
        for s in [400, 413, 422] {
            assert_eq!(kind(s), Some("rejected"), "{s}");
        }
        let refused =
            SendError::Refused("slack answered 404".into()).into_process_error(Kind::Slack);
        assert!(
            refused
                .to_string()
                .contains("MAILSTREAM_NOTIFIER_SLACK_WEBHOOK_URL"),
            "{refused}"
        );
        assert!(matches!(
            SendError::Rejected("400".into()).into_process_error(Kind::Webhook),
            ProcessError::Poison { .. }
        ));
    }
}
