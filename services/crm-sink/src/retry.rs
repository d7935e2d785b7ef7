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
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 6,
            base: Duration::from_millis(100),
            cap: Duration::from_millis(2_000),
            retry_after_max: Duration::from_millis(3_000),
        }
    }

    #[test]
    fn retry_after_takes_seconds_and_every_http_date_form() {
        let now = DateTime::parse_from_rfc3339("1994-11-06T08:49:30Z")
            .map(|d| d.with_timezone(&Utc))
            .expect("time");
        let secs = |v| parse_retry_after(v, now).map(|d| d.as_secs());
        assert_eq!(secs("120"), Some(120));
        assert_eq!(secs(" 0 "), Some(0));
        assert_eq!(secs("Sun, 06 Nov 1994 08:49:37 GMT"), Some(7));
        assert_eq!(secs("Sunday, 06-Nov-94 08:49:37 GMT"), Some(7));
        assert_eq!(secs("Sun Nov  6 08:49:37 1994"), Some(7));
        assert_eq!(secs("Sun, 06 Nov 1994 08:00:00 GMT"), Some(0), "past: now");
        assert_eq!(secs("soon"), None);
        assert_eq!(secs("-5"), None);
        assert_eq!(secs(""), None);
    }

    #[test]
    fn backoff_doubles_to_the_cap_with_full_jitter() {
        let p = policy();
        assert_eq!(p.ceiling(1), Duration::from_millis(100));
        assert_eq!(p.ceiling(2), Duration::from_millis(200));
        assert_eq!(p.ceiling(5), Duration::from_millis(1_600));
        assert_eq!(p.ceiling(6), Duration::from_millis(2_000));
        assert_eq!(p.ceiling(60), Duration::from_millis(2_000), "no overflow");
        let mut low = false;
        for _ in 0..500 {
            let d = p.delay(3, None);
            assert!(d <= Duration::from_millis(400));
            low |= d < Duration::from_millis(100);
        }
        assert!(low, "full jitter reaches down towards zero");
        for _ in 0..100 {
            let d = p.delay(1, Some(Duration::from_secs(1)));
            assert!(d >= Duration::from_secs(1), "Retry-After is honoured");
            let d = p.delay(1, Some(Duration::from_secs(3_600)));
            assert_eq!(d, Duration::from_millis(3_000), "capped by retry_after_max");
        }
        assert_eq!(
            p.worst_case(Duration::from_millis(2_000)),
            Duration::from_millis(6 * 2_000 + 5 * 3_000)
        );
    }

    #[test]
    fn token_bucket_spends_the_burst_then_paces() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(10.0, 3, t0);
        for _ in 0..3 {
            assert_eq!(bucket.take(t0), Duration::ZERO);
        }
        let wait = bucket.take(t0);
        assert!(
            wait > Duration::from_millis(90) && wait <= Duration::from_millis(100),
            "{wait:?}"
        );
        assert_eq!(bucket.take(t0 + Duration::from_millis(100)), Duration::ZERO);
        // Idle time refills only up to the burst.
        let later = t0 + Duration::from_secs(60);
        for _ in 0..3 {
            assert_eq!(bucket.take(later), Duration::ZERO);
        }
        assert!(bucket.take(later) > Duration::ZERO);
        let mut unlimited = TokenBucket::new(0.0, 1, t0);
        for _ in 0..1_000 {
            assert_eq!(unlimited.take(t0), Duration::ZERO);
        }
    }

    #[tokio::test]
    async fn the_loop_retries_then_gives_up_or_stops_at_rejection() {
        let (_trigger, shutdown) = Shutdown::new();
        let retrier = Retrier {
            policy: RetryPolicy {
                max_attempts: 3,
                base: Duration::from_millis(1),
                cap: Duration::from_millis(2),
                retry_after_max: Duration::from_millis(5),
            },
            limiter: Limiter::new(0.0, 1, 2),
            request_timeout: Duration::from_millis(10),
            metrics: SinkMetrics::new(&prometheus::Registry::new()).expect("metrics"),
            shutdown,
        };
        let far = Instant::now() + Duration::from_secs(60);
        let retriable = || Failure::Retriable {
            class: FailureClass::Server,
            reason: "503".into(),
            retry_after: Some(Duration::from_millis(1)),
        };
        let mut n = 0;
        let ok = retrier
            .run("op", far, || {
                n += 1;
                let r = if n < 3 { Err(retriable()) } else { Ok(n) };
                async move { r }
            })
            .await;
        assert_eq!(ok, Ok((3, 3)));
        let exhausted = retrier
            .run("op", far, || async { Err::<(), _>(retriable()) })
            .await;
        assert!(matches!(
            exhausted,
            Err(CallError::Exhausted { attempts: 3, .. })
        ));
        let mut calls = 0;
        let rejected = retrier
            .run("op", far, || {
                calls += 1;
                async {
                    Err::<(), _>(Failure::Rejected {
                        class: FailureClass::Client,
                        reason: "400".into(),
                    })
                }
            })
            .await;
        assert!(matches!(rejected, Err(CallError::Rejected { .. })));
        assert_eq!(calls, 1, "a rejection is not retried");
        let soon = Instant::now();
        let interrupted = retrier
            .run("op", soon, || async { Err::<(), _>(retriable()) })
            .await;
        assert!(matches!(interrupted, Err(CallError::Interrupted { .. })));
    }
}
