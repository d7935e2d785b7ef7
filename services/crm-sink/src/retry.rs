//! How the sink calls a CRM that throttles, stalls and fails. Blips are retried in place;
//! anything longer is the runtime's to wait out (it aborts the batch and re-reads it after its
//! own capped, jittered backoff), so a CRM outage stalls the stream instead of emptying it into
//! the dead-letter topic (ARCHITECTURE invariant 4).
//!
//! [`Retrier::run`] drives one logical call (an upsert, a create): the closure makes one
//! attempt and classifies its failure ([`Failure`], see [`crate::error`]); the loop decides:
//!
//! | the attempt | then |
//! |---|---|
//! | succeeded | the value, and the attempts made |
//! | `Retry`, attempts left, the wait fits before the batch's deadline | wait (the runtime's [`Backoff`], at least `Retry-After`), try again |
//! | `Retry`, attempts spent or the wait would outlive the batch | `Outage`: the batch is retried by the runtime |
//! | anything else | returned as it is |
//!
//! Every attempt first passes the [`Limiter`]: a hold the CRM asked for (`Retry-After`, either
//! form, at most `retry_after_max_ms`: no call is made before it, by any record, and when it
//! ends past the batch's deadline the batch is handed back at once), a concurrency cap, and a
//! rate limit (`governor`).

use std::future::Future;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use mailstream_runtime::Shutdown;
use mailstream_runtime::stream::Backoff;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{Failure, FailureClass};
use crate::events::{self, SinkMetrics};

/// Bounds of the retries of one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per call, the first included (at least 1).
    pub max_attempts: u32,
    /// Ceiling of the runtime's backoff between attempts.
    pub cap: Duration,
    /// The longest `Retry-After` honoured; longer ones are cut to this.
    pub retry_after_max: Duration,
}

/// Parses a `Retry-After` value: delta-seconds, or an HTTP-date (IMF-fixdate, and the obsolete
/// RFC 850 and asctime forms recipients must accept). A date in the past means now.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return Some(Duration::from_secs(
            value.parse::<u64>().unwrap_or(u64::MAX),
        ));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The rate limit, the concurrency cap and the CRM's hold of one backend, shared by its calls.
#[derive(Clone)]
pub struct Limiter {
    rate: Option<Arc<DefaultDirectRateLimiter>>,
    permits: Arc<Semaphore>,
    /// No call before this instant (the CRM's `Retry-After`).
    hold: Arc<Mutex<Option<Instant>>>,
}

impl Limiter {
    /// `rate_per_sec` calls per second (0: no limit) in bursts of up to `burst`, at most
    /// `max_concurrency` at once.
    pub fn new(rate_per_sec: f64, burst: u32, max_concurrency: u32) -> Self {
        let rate = (rate_per_sec > 0.0 && rate_per_sec.is_finite())
            .then(|| Quota::with_period(Duration::from_secs_f64(1.0 / rate_per_sec)))
            .flatten()
            .map(|quota| {
                let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
                Arc::new(RateLimiter::direct(quota.allow_burst(burst)))
            });
        Self {
            rate,
            permits: Arc::new(Semaphore::new(max_concurrency.max(1) as usize)),
            hold: Arc::new(Mutex::new(None)),
        }
    }

    /// No call until `until` (a later hold wins).
    pub fn hold_until(&self, until: Instant) {
        if let Ok(mut hold) = self.hold.lock() {
            *hold = Some(hold.map_or(until, |h| h.max(until)));
        }
    }

    /// When the CRM's hold ends, if one is on.
    pub fn held_until(&self) -> Option<Instant> {
        let hold = self.hold.lock().ok().and_then(|h| *h)?;
        (hold > Instant::now()).then_some(hold)
    }

    /// Waits for a concurrency slot, then for the rate limit. The slot is held until the permit
    /// drops.
    pub async fn acquire(&self) -> Option<OwnedSemaphorePermit> {
        let permit = self.permits.clone().acquire_owned().await.ok()?;
        if let Some(rate) = &self.rate {
            rate.until_ready().await;
        }
        Some(permit)
    }
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
    /// Sleeps `delay` unless shutdown comes first (then an outage: the batch is handed back).
    async fn sleep(&self, op: &str, delay: Duration) -> Result<(), Failure> {
        let mut shutdown = self.shutdown.clone();
        tokio::select! {
            _ = tokio::time::sleep(delay) => Ok(()),
            _ = shutdown.wait() => Err(Failure::outage(
                FailureClass::Connection,
                format!("{op}: shutdown requested while waiting to call the CRM"),
            )),
        }
    }

    /// Waits out the CRM's hold, or hands the batch back when it ends past `deadline`.
    async fn wait_for_hold(&self, op: &str, deadline: Instant) -> Result<(), Failure> {
        let Some(until) = self.limiter.held_until() else {
            return Ok(());
        };
        let wait = until.saturating_duration_since(Instant::now());
        if until + self.request_timeout > deadline {
            return Err(Failure::outage(
                FailureClass::Client,
                format!(
                    "{op}: the CRM asked us to wait {} ms more (Retry-After), past this batch's time",
                    wait.as_millis()
                ),
            ));
        }
        self.sleep(op, wait).await
    }

    /// Makes attempts of `call` (named `op` in logs) until one succeeds, one fails for a reason
    /// a retry in place cannot change, the attempts run out or the next wait would pass
    /// `deadline`. Returns the value and the number of attempts made.
    pub async fn run<T, F, Fut>(
        &self,
        op: &str,
        deadline: Instant,
        mut call: F,
    ) -> Result<(T, u32), Failure>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let mut backoff = Backoff::new(self.policy.cap);
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            self.wait_for_hold(op, deadline).await?;
            let permit = self.limiter.acquire().await;
            let result = call().await;
            drop(permit);
            let (class, reason, retry_after) = match result {
                Ok(value) => return Ok((value, attempt)),
                Err(Failure::Retry {
                    class,
                    reason,
                    retry_after,
                }) => (class, reason, retry_after),
                Err(other) => {
                    events::write_failed(
                        &self.metrics,
                        op,
                        other.class(),
                        attempt,
                        other.reason(),
                        false,
                    );
                    return Err(other);
                }
            };
            let asked = retry_after.map(|d| d.min(self.policy.retry_after_max));
            if let Some(asked) = asked {
                self.limiter.hold_until(Instant::now() + asked);
            }
            let retrying = attempt < self.policy.max_attempts;
            events::write_failed(&self.metrics, op, class, attempt, &reason, retrying);
            if !retrying {
                return Err(Failure::outage(
                    class,
                    format!("{op}: failing after {attempt} attempts: {reason}"),
                ));
            }
            let delay = backoff.next_delay().max(asked.unwrap_or_default());
            if Instant::now() + delay + self.request_timeout > deadline {
                return Err(Failure::outage(
                    class,
                    format!(
                        "{op}: another attempt after {} ms would outlive the batch ({reason})",
                        delay.as_millis()
                    ),
                ));
            }
            self.sleep(op, delay).await?;
        }
    }
}

#[cfg(test)]
#[path = "retry_tests.rs"]
mod tests;
