//! Liveness and readiness, served on `/healthz` and `/readyz`, plus `/metrics`.
//!
//! Live: the processing loop has made progress (polled or committed) recently, or is restoring
//! state for newly assigned partitions (a long restore is work, not a hang: killing the
//! process for it would only start the restore over).
//! Ready, all of:
//! - the processor is initialised (transactions, schemas, subscription) and not shutting down,
//!   and not restoring state;
//! - the brokers are reachable (librdkafka has not reported all of them down);
//! - the stream is not stalled: a batch that keeps failing (a dependency down, a record that
//!   cannot be written) has not blocked progress for longer than `stall_timeout_ms`. Progress
//!   is a committed batch, or a poll that found nothing to do.
//!
//! `/readyz` answers 503 with the reason (which partitions, since when, the last failure), so
//! an operator reading it or the pod's events learns why without opening the logs.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;

use crate::error::RuntimeError;
use crate::metrics::Metrics;

/// How long the loop may go without a heartbeat before `/healthz` fails.
const STALL_AFTER: Duration = Duration::from_secs(120);

/// Why the stream has not made progress.
#[derive(Debug, Clone)]
struct Failing {
    partitions: Vec<i32>,
    reason: String,
    since_ms: u64,
}

#[derive(Debug, Default)]
pub struct Health {
    ready: AtomicBool,
    last_beat_ms: AtomicU64,
    /// Not-ready once failing this long without progress; zero: never.
    stall_timeout_ms: u64,
    /// When librdkafka reported every broker down; zero while they are reachable.
    brokers_down_since_ms: AtomicU64,
    /// State of newly assigned partitions is being restored.
    restoring: AtomicBool,
    failing: Mutex<Option<Failing>>,
}

impl Health {
    /// Health without stall detection (services that are not a stream loop).
    pub fn new() -> Arc<Self> {
        Self::with_stall_timeout(Duration::ZERO)
    }

    /// Health of a stream loop: not ready once it has failed for `stall_timeout` without
    /// progress (zero: never).
    pub fn with_stall_timeout(stall_timeout: Duration) -> Arc<Self> {
        let health = Arc::new(Self {
            stall_timeout_ms: stall_timeout.as_millis() as u64,
            ..Self::default()
        });
        health.beat();
        health
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// The loop is alive.
    pub fn beat(&self) {
        self.last_beat_ms.store(now_ms(), Ordering::Relaxed);
    }

    pub fn is_live(&self) -> bool {
        self.restoring.load(Ordering::Relaxed)
            || now_ms().saturating_sub(self.last_beat_ms.load(Ordering::Relaxed))
                < STALL_AFTER.as_millis() as u64
    }

    /// State restoration started (`true`) or ended (`false`): live, not ready, meanwhile.
    pub fn set_restoring(&self, restoring: bool) {
        self.restoring.store(restoring, Ordering::Relaxed);
        if !restoring {
            self.beat();
        }
    }

    /// A batch committed, or a poll found nothing to do: whatever was failing is over.
    pub fn progressed(&self) {
        if let Ok(mut failing) = self.failing.lock() {
            *failing = None;
        }
    }

    /// A batch over `partitions` failed and will be retried; returns how long the stream has
    /// been failing without progress.
    pub fn failed(&self, partitions: Vec<i32>, reason: &str) -> Duration {
        let now = now_ms();
        let Ok(mut failing) = self.failing.lock() else {
            return Duration::ZERO;
        };
        let since_ms = failing.as_ref().map_or(now, |f| f.since_ms);
        *failing = Some(Failing {
            partitions,
            reason: reason.to_string(),
            since_ms,
        });
        Duration::from_millis(now.saturating_sub(since_ms))
    }

    /// librdkafka reported every broker down.
    pub fn brokers_down(&self) {
        let _ = self.brokers_down_since_ms.compare_exchange(
            0,
            now_ms(),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    /// A broker answered again.
    pub fn brokers_up(&self) {
        self.brokers_down_since_ms.store(0, Ordering::Relaxed);
    }

    /// `Ok` when ready, else why not.
    pub fn readiness(&self) -> Result<(), String> {
        if !self.ready.load(Ordering::Relaxed) {
            return Err("not ready: starting or shutting down".into());
        }
        if self.restoring.load(Ordering::Relaxed) {
            return Err("not ready: restoring the state of newly assigned partitions".into());
        }
        let now = now_ms();
        let down_since = self.brokers_down_since_ms.load(Ordering::Relaxed);
        if down_since != 0 {
            return Err(format!(
                "not ready: every Kafka broker unreachable for {} s",
                now.saturating_sub(down_since) / 1000
            ));
        }
        if self.stall_timeout_ms > 0
            && let Ok(failing) = self.failing.lock()
            && let Some(f) = failing.as_ref()
            && now.saturating_sub(f.since_ms) >= self.stall_timeout_ms
        {
            return Err(format!(
                "not ready: no progress on partitions {:?} for {} s; last failure: {}",
                f.partitions,
                now.saturating_sub(f.since_ms) / 1000,
                f.reason
            ));
        }
        Ok(())
    }

    pub fn is_ready(&self) -> bool {
        self.readiness().is_ok()
    }
}

/// Wall-clock milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

#[derive(Clone)]
struct AppState {
    health: Arc<Health>,
    metrics: Metrics,
}

/// Binds `addr` and serves the operational endpoints until the process ends. Returns the bound
/// address (useful with port 0).
pub async fn serve(
    addr: &str,
    health: Arc<Health>,
    metrics: Metrics,
) -> Result<SocketAddr, RuntimeError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| RuntimeError::Io {
            context: format!("binding the HTTP server to {addr} (key http_addr)"),
            source,
        })?;
    let bound = listener.local_addr().map_err(|source| RuntimeError::Io {
        context: "reading the bound address".into(),
        source,
    })?;
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(AppState { health, metrics });
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "HTTP server stopped");
        }
    });
    Ok(bound)
}

async fn healthz(State(s): State<AppState>) -> (StatusCode, &'static str) {
    if s.health.is_live() {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "processing loop stalled\n")
    }
}

async fn readyz(State(s): State<AppState>) -> (StatusCode, String) {
    match s.health.readiness() {
        Ok(()) => (StatusCode::OK, "ready\n".into()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
    }
}

async fn metrics_text(State(s): State<AppState>) -> String {
    s.metrics.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_failing_past_the_timeout_is_not_ready_until_it_progresses() {
        let health = Health::with_stall_timeout(Duration::from_millis(1));
        health.set_ready(true);
        assert!(health.is_ready());
        health.failed(vec![3], "producing to parsed: too large");
        std::thread::sleep(Duration::from_millis(5));
        let why = health.readiness().expect_err("stalled");
        assert!(why.contains("[3]") && why.contains("too large"), "{why}");
        health.progressed();
        assert!(health.is_ready());
    }

    #[test]
    fn restoring_is_live_but_not_ready() {
        let health = Health::new();
        health.set_ready(true);
        health.last_beat_ms.store(0, Ordering::Relaxed);
        assert!(!health.is_live(), "no beat for ages");
        health.set_restoring(true);
        assert!(health.is_live());
        assert!(
            health
                .readiness()
                .expect_err("restoring")
                .contains("restoring")
        );
        health.set_restoring(false);
        assert!(health.is_live() && health.is_ready());
    }

    #[test]
    fn unreachable_brokers_make_it_not_ready() {
        let health = Health::new();
        health.set_ready(true);
        health.brokers_down();
        assert!(health.readiness().expect_err("down").contains("broker"));
        health.brokers_up();
        assert!(health.is_ready());
    }
}
