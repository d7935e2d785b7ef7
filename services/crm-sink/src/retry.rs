//! How the sink calls a CRM that throttles, stalls and fails: exponential backoff with full
//! jitter, `Retry-After` honoured (delta-seconds and HTTP-date, capped), a bounded number of
//! attempts, a token bucket and a concurrency cap per backend, and a deadline so retries never
//! outlive the Kafka transaction the record is processed in.
//!
//! [`Retrier::run`] drives one logical call (an upsert, a create): the closure makes one attempt
//! and classifies its failure as [`Failure`]; the loop decides whether to wait and try again.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDateTime, Utc};
use mailstream_runtime::Shutdown;
use rand::Rng;
use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore};

use crate::events::{self, SinkMetrics};

/// Bounds of the retries of one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per call, the first included (at least 1).
    pub max_attempts: u32,
    /// Backoff ceiling after the first failure; doubles per failure ...
    pub base: Duration,
    /// ... up to this cap.
    pub cap: Duration,
    /// The longest `Retry-After` honoured; longer ones are cut to this.
    pub retry_after_max: Duration,
}

impl RetryPolicy {
    /// The ceiling of the jittered wait after `failures` failed attempts (1-based).
    pub fn ceiling(&self, failures: u32) -> Duration {
        let factor = 1u32
            .checked_shl(failures.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The wait before the next attempt: full jitter (uniform in `[0, ceiling]`), and at least
    /// the server's `Retry-After` (capped at `retry_after_max`) when it sent one.
    pub fn delay(&self, failures: u32, retry_after: Option<Duration>) -> Duration {
        let ceiling = self.ceiling(failures).as_millis() as u64;
        let jitter = Duration::from_millis(rand::rng().random_range(0..=ceiling));
        match retry_after {
            Some(asked) => asked.min(self.retry_after_max).max(jitter),
            None => jitter,
        }
    }

    /// The longest one call can take: every attempt timing out and every wait at its maximum.
    pub fn worst_case(&self, request_timeout: Duration) -> Duration {
        let waits = self.max_attempts.saturating_sub(1);
        request_timeout.saturating_mul(self.max_attempts)
            + self.cap.max(self.retry_after_max).saturating_mul(waits)
    }
}

/// Parses a `Retry-After` value: delta-seconds, or an HTTP-date (IMF-fixdate, and the obsolete
/// RFC 850 and asctime forms recipients must accept). A date in the past means now.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return Some(Duration::from_secs(
            value.parse::<u64>().unwrap_or(u64::MAX),
        ));
    }
    let at = DateTime::parse_from_rfc2822(value)
        .map(|d| d.with_timezone(&Utc))
        .or_else(|_| {
            NaiveDateTime::parse_from_str(value, "%A, %d-%b-%y %H:%M:%S GMT").map(|d| d.and_utc())
        })
        .or_else(|_| {
            NaiveDateTime::parse_from_str(value, "%a %b %e %H:%M:%S %Y").map(|d| d.and_utc())
        })
        .ok()?;
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}

/// A token bucket: `rate` tokens per second, at most `burst` saved up. A rate of 0 is no limit.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(rate: f64, burst: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            rate,
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Takes a token if one is there (returns zero), else says how long until one will be.
    pub fn take(&mut self, now: Instant) -> Duration {
        if self.rate <= 0.0 {
            return Duration::ZERO;
        }
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Duration::ZERO
        } else {
            Duration::from_secs_f64((1.0 - self.tokens) / self.rate)
        }
    }
}

/// The rate limit and concurrency cap of one backend.
#[derive(Debug, Clone)]
pub struct Limiter {
    bucket: Arc<Mutex<TokenBucket>>,
    permits: Arc<Semaphore>,
}

impl Limiter {
    pub fn new(rate_per_sec: f64, burst: u32, max_concurrency: u32) -> Self {
        Self {
            bucket: Arc::new(Mutex::new(TokenBucket::new(
                rate_per_sec,
                burst,
                Instant::now(),
            ))),
            permits: Arc::new(Semaphore::new(max_concurrency.max(1) as usize)),
        }
    }

    /// Waits for a concurrency slot, then for a token. The slot is held until the permit drops.
    pub async fn acquire(&self) -> Option<OwnedSemaphorePermit> {
        let permit = self.permits.clone().acquire_owned().await.ok()?;
        loop {
            let wait = self.bucket.lock().await.take(Instant::now());
            if wait.is_zero() {
                return Some(permit);
            }
            tokio::time::sleep(wait).await;
        }
    }
}

/// Which kind of failure an attempt met (the `class` label of `crm_write_failures_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    Client,
    Server,
    Timeout,
    Connection,
}

impl FailureClass {
    pub fn label(self) -> &'static str {
        match self {
            Self::Client => "4xx",
            Self::Server => "5xx",
            Self::Timeout => "timeout",
            Self::Connection => "connection",
        }
    }
}

/// One failed attempt, as the caller classified it.
#[derive(Debug, Clone)]
pub enum Failure {
    /// Worth another attempt (429, 5xx, timeouts, resets); `retry_after` if the server said so.
    Retriable {
        class: FailureClass,
        reason: String,
        retry_after: Option<Duration>,
    },
    /// The CRM refused this record; another attempt gets the same answer.
    Rejected { class: FailureClass, reason: String },
    /// The CRM (or our access to it) is down as a whole: no record is to blame.
    Outage { class: FailureClass, reason: String },
    /// Our own request is wrong whatever the record (a bug, a schema that is not ours): no
    /// retry and no dead letter can help, the process stops.
    Broken { class: FailureClass, reason: String },
}

/// Why a call gave up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// Every attempt failed retriably.
    Exhausted {
        attempts: u32,
        reason: String,
    },
    Rejected {
        reason: String,
    },
    Outage {
        reason: String,
    },
    /// See [`Failure::Broken`].
    Broken {
        reason: String,
    },
    /// Waiting again would outlive the transaction, or shutdown was requested.
    Interrupted {
        reason: String,
    },
}

/// Runs calls under a retry policy and a limiter, counting failures.
#[derive(Clone)]
pub struct Retrier {
    pub policy: RetryPolicy,
    pub limiter: Limiter,
    pub request_timeout: Duration,
    pub metrics: SinkMetrics,
    pub shutdown: Shutdown,
}

impl Retrier {
    /// Makes attempts of `call` (named `op` in logs) until one succeeds, one is rejected, the
    /// attempts run out or the next wait would pass `deadline`. Returns the value and the number
    /// of attempts made.
    pub async fn run<T, F, Fut>(
        &self,
        op: &str,
        deadline: Instant,
        mut call: F,
    ) -> Result<(T, u32), CallError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let permit = self.limiter.acquire().await;
            let result = call().await;
            drop(permit);
            let failure = match result {
                Ok(value) => return Ok((value, attempt)),
                Err(failure) => failure,
            };
            let (class, reason, retry_after) = match failure {
                Failure::Retriable {
                    class,
                    reason,
                    retry_after,
                } => (class, reason, retry_after),
                Failure::Rejected { class, reason } => {
                    events::write_failed(&self.metrics, op, class, attempt, &reason, false);
                    return Err(CallError::Rejected { reason });
                }
                Failure::Outage { class, reason } => {
                    events::write_failed(&self.metrics, op, class, attempt, &reason, false);
                    return Err(CallError::Outage { reason });
                }
                Failure::Broken { class, reason } => {
                    events::write_failed(&self.metrics, op, class, attempt, &reason, false);
                    return Err(CallError::Broken { reason });
                }
            };
            let retrying = attempt < self.policy.max_attempts;
            events::write_failed(&self.metrics, op, class, attempt, &reason, retrying);
            if !retrying {
                // A record cannot make the network fail: transport failures that outlast every
                // attempt are an outage of the CRM, not a bad record.
                if class == FailureClass::Connection {
                    return Err(CallError::Outage {
                        reason: format!("{op}: unreachable after {attempt} attempts: {reason}"),
                    });
                }
                return Err(CallError::Exhausted {
                    attempts: attempt,
                    reason,
                });
            }
            let delay = self.policy.delay(attempt, retry_after);
            if Instant::now() + delay + self.request_timeout > deadline {
                return Err(CallError::Interrupted {
                    reason: format!(
                        "{op}: another attempt after {} ms would outlive the Kafka transaction ({reason})",
                        delay.as_millis()
                    ),
                });
            }
            let mut shutdown = self.shutdown.clone();
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.wait() => {
                    return Err(CallError::Interrupted {
                        reason: format!("{op}: shutdown requested while waiting to retry"),
                    });
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "retry_tests.rs"]
mod tests;
