//! Liveness and readiness, served on `/healthz` and `/readyz`, plus `/metrics`.
//!
//! Live: the processing loop has made progress (polled or committed) recently.
//! Ready: the processor is initialised (transactions, schemas, subscription) and not shutting down.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;

use crate::error::RuntimeError;
use crate::metrics::Metrics;

/// How long the loop may go without a heartbeat before `/healthz` fails.
const STALL_AFTER: Duration = Duration::from_secs(120);

#[derive(Debug, Default)]
pub struct Health {
    ready: AtomicBool,
    last_beat_ms: AtomicU64,
}

impl Health {
    pub fn new() -> Arc<Self> {
        let health = Arc::new(Self::default());
        health.beat();
        health
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// The loop is alive.
    pub fn beat(&self) {
        self.last_beat_ms.store(now_ms(), Ordering::Relaxed);
    }

    pub fn is_live(&self) -> bool {
        now_ms().saturating_sub(self.last_beat_ms.load(Ordering::Relaxed))
            < STALL_AFTER.as_millis() as u64
    }
}

fn now_ms() -> u64 {
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

async fn readyz(State(s): State<AppState>) -> (StatusCode, &'static str) {
    if s.health.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

async fn metrics_text(State(s): State<AppState>) -> String {
    s.metrics.render()
}
