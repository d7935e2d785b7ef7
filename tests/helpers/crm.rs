//! A REST CRM stand-in for the CRM sink's `rest` backend, which fails on demand: bursts of 429
//! with `Retry-After` and of 503 for a while from the next call on ([`FakeCrm::burst`]), and 400 for every activity
//! whose message id carries [`crate::corpus::REJECT_MARKER`] (poison: the sink dead-letters it
//! as `crm-rejected`).
//!
//! It honours `Idempotency-Key` like a real API: the first successful answer per key is stored
//! and replayed (`Idempotent-Replayed: true`) to any later call with that key, so a write is
//! applied once. What it holds (contacts, deals, activities, attachments, and how often each
//! key was applied) is its "rows": [`FakeCrm::snapshot`] compares them before and after a
//! replay. Same conventions as the stand-in inside `tests/crm_sink.rs` (paths, bearer token,
//! `{"id", "created"}` answers).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::corpus::REJECT_MARKER;

/// A burst of failures answered to every call for a while.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Burst {
    /// 429 with `Retry-After: <seconds>`.
    TooMany { retry_after_secs: u64 },
    /// 503.
    Unavailable,
}

/// The CRM's rows: what a replay must leave exactly as it was.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rows {
    /// Writes applied per idempotency key (2 would be a duplicate).
    pub applied: BTreeMap<String, u32>,
    /// Activities created per message id.
    pub activities: BTreeMap<String, u32>,
    /// Contacts by email, with their id.
    pub contacts: BTreeMap<String, String>,
    pub deals: BTreeMap<String, u32>,
    pub attachments: u64,
}

#[derive(Default)]
struct Crm {
    token: String,
    requests: u64,
    rows: Rows,
    stored: HashMap<String, (u16, Value)>,
    faults: BTreeMap<&'static str, u64>,
    /// The burst under way, its length, and when its first failure was answered; then the
    /// bursts armed after it, each starting with the call after the previous one ended.
    burst: Option<(Burst, Duration, Option<Instant>)>,
    armed: VecDeque<(Burst, Duration)>,
    next_id: u64,
}

/// A running stand-in, served on 127.0.0.1 from this process.
#[derive(Clone)]
pub struct FakeCrm {
    pub base_url: String,
    state: Arc<Mutex<Crm>>,
}

fn lock(state: &Mutex<Crm>) -> MutexGuard<'_, Crm> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn answer(status: u16, body: Value, headers: &[(&'static str, String)]) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, body.to_string()).into_response();
    let h = response.headers_mut();
    h.insert("content-type", HeaderValue::from_static("application/json"));
    for (name, value) in headers {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(HeaderName::from_static(name), v);
        }
    }
    response
}

/// Applies a write once per key; later calls with the key get the stored answer (replayed).
fn apply(crm: &mut Crm, op: &str, key: &str, body: &Value) -> (u16, Value, bool) {
    if let Some((status, stored)) = crm.stored.get(key) {
        return (*status, stored.clone(), true);
    }
    *crm.rows.applied.entry(key.to_string()).or_default() += 1;
    crm.next_id += 1;
    let n = crm.next_id;
    let text = |field: &str| body[field].as_str().unwrap_or_default().to_string();
    let (status, answer) = match op {
        "contact" => {
            let email = text("email");
            match crm.rows.contacts.get(&email) {
                Some(id) => (200, json!({"id": id, "created": false})),
                None => {
                    let id = format!("ct-{n}");
                    crm.rows.contacts.insert(email, id.clone());
                    (201, json!({"id": id, "created": true}))
                }
            }
        }
        "deal" => {
            *crm.rows.deals.entry(text("id")).or_default() += 1;
            (200, json!({"id": body["id"]}))
        }
        "activity" => {
            *crm.rows.activities.entry(text("message_id")).or_default() += 1;
            (201, json!({"id": format!("act-{n}")}))
        }
        _ => {
            crm.rows.attachments += 1;
            (201, json!({"id": format!("att-{n}")}))
        }
    };
    crm.stored.insert(key.to_string(), (status, answer.clone()));
    (status, answer, false)
}

async fn handle(
    State(state): State<Arc<Mutex<Crm>>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let path = uri.path();
    let op = match path {
        "/contacts" => "contact",
        "/deals" => "deal",
        "/activities" => "activity",
        p if p.starts_with("/activities/") && p.ends_with("/attachments") => "attachment",
        _ => return answer(404, json!({"error": "no such endpoint"}), &[]),
    };
    let key = header("idempotency-key");
    let body: Value = serde_json::from_slice(&body).unwrap_or_default();
    let mut crm = lock(&state);
    if header("authorization") != format!("Bearer {}", crm.token) {
        return answer(401, json!({"error": "unauthorized"}), &[]);
    }
    if key.is_empty() {
        return answer(400, json!({"error": "Idempotency-Key required"}), &[]);
    }
    crm.requests += 1;
    if crm.burst.is_none() {
        crm.burst = crm.armed.pop_front().map(|(b, l)| (b, l, None));
    }
    if let Some((burst, length, began)) = crm.burst {
        let began = began.unwrap_or_else(Instant::now);
        crm.burst = Some((burst, length, Some(began)));
        if began.elapsed() < length {
            return match burst {
                Burst::TooMany { retry_after_secs } => {
                    *crm.faults.entry("429").or_default() += 1;
                    answer(
                        429,
                        json!({"error": "rate limited"}),
                        &[("retry-after", retry_after_secs.to_string())],
                    )
                }
                Burst::Unavailable => {
                    *crm.faults.entry("503").or_default() += 1;
                    answer(503, json!({"error": "maintenance"}), &[])
                }
            };
        }
        crm.burst = None;
    }
    if op == "activity" && key.contains(REJECT_MARKER) {
        *crm.faults.entry("400").or_default() += 1;
        return answer(
            400,
            json!({"error": "activity rejected by a validation rule"}),
            &[],
        );
    }
    let (status, body, replayed) = apply(&mut crm, op, &key, &body);
    let headers = if replayed {
        vec![("idempotent-replayed", "true".to_string())]
    } else {
        vec![]
    };
    answer(status, body, &headers)
}

impl FakeCrm {
    /// Serves the stand-in on a free port of 127.0.0.1; calls need `Bearer <token>`.
    pub async fn start(token: &str) -> std::io::Result<Self> {
        let state = Arc::new(Mutex::new(Crm {
            token: token.to_string(),
            ..Crm::default()
        }));
        let app = Router::new().fallback(handle).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base_url = format!("http://{}", listener.local_addr()?);
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Self { base_url, state })
    }

    /// Answers every call with `burst` for `length`, from the next call on (so a burst armed
    /// while no call comes in still hits the traffic when it resumes); after the bursts armed
    /// before it, if any.
    pub fn burst(&self, burst: Burst, length: Duration) {
        lock(&self.state).armed.push_back((burst, length));
    }

    pub fn rows(&self) -> Rows {
        lock(&self.state).rows.clone()
    }

    /// Faults answered so far, by kind (`429`, `503`, `400`).
    pub fn faults(&self) -> BTreeMap<&'static str, u64> {
        lock(&self.state).faults.clone()
    }

    pub fn requests(&self) -> u64 {
        lock(&self.state).requests
    }
}
