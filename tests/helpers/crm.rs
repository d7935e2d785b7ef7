//! A REST CRM stand-in for the CRM sink's `rest` backend, which fails on demand: bursts of 429
//! with `Retry-After` and of 503 for a while from the next call on ([`FakeCrm::burst`]), 400 for
//! every activity whose message id carries [`crate::corpus::REJECT_MARKER`] (poison: the sink
//! dead-letters it as `crm-rejected`), and whatever a test's own script answers each call
//! ([`FakeCrm::script`]: a fault by the call's idempotency key, operation and attempt, e.g. by
//! markers in the message id). A 400 names the sender's address, as CRMs echo the value they
//! refuse: what the sink makes of it must not carry the address.
//!
//! It honours `Idempotency-Key` like a real API: the first successful answer per key is stored
//! and replayed (`Idempotent-Replayed: true`) to any later call with that key, so a write is
//! applied once. What it holds (contacts, deals, activities, attachments, and how often each
//! key was applied) is its "rows" ([`FakeCrm::rows`]), for a test to compare before and after
//! a replay. Paths: `POST /contacts` (upsert by email: `{"id", "created"}`), `/deals`,
//! `/activities`, `/activities/{id}/attachments`, `PATCH /activities/{id}` (a relink: the
//! activity's thread, parent and deal; [`Rows::links`]), and a helpdesk's `POST /tickets`
//! ([`Rows::tickets`]), with a bearer token. An erase's calls:
//! `GET` and `DELETE` of `/contacts/{id}` and `/activities/{id}` (the latter with its
//! attachments), 404 when there is no such resource ([`FakeCrm::erase_calls`] counts them).
//!
//! Outages on demand: [`FakeCrm::refuse_credentials`] answers 401 to every call (a revoked
//! token), and [`Cut`] is a TCP proxy that drops every connection and refuses new ones (put it
//! in front of the stand-in or of PostgreSQL). [`FakeCrm::calls`] has when each call per
//! idempotency key was made. The rest of the file drives the sink itself: scored leads, a sink
//! instance, its results, its metrics and its log.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::process::Child;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use mailstream_runtime::AvroRecord;
use mailstream_runtime::records::{
    AccountMatch, Address, Attachment, AuthResults, ContactMatch, CrmResult, Disposition,
    NewContactProposal, ParsedEmail, ResolvedEmail, RuleHit, ScoredLead,
};
use rdkafka::producer::FutureRecord;
use serde_json::{Value, json};

use crate::corpus::REJECT_MARKER;
use crate::pipeline::metric;
use crate::{TestEnv, collect, decode, http_get, log_dir};

/// A burst of failures answered to every call for a while.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Burst {
    /// 429 with `Retry-After: <seconds>`.
    TooMany { retry_after_secs: u64 },
    /// 503.
    Unavailable,
}

/// A fault a test's script answers a call with ([`FakeCrm::script`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// 429 with `Retry-After: <seconds>`.
    TooMany { retry_after_secs: u64 },
    /// 429 with `Retry-After` as an HTTP date this far ahead (to the second).
    TooManyUntil(Duration),
    /// 503.
    Unavailable,
    /// 400 naming the sender: the record's fault.
    Reject,
    /// Written and answered after this long.
    Slow(Duration),
    /// Written at once, answered only after this long (past the client's timeout: the write
    /// is done, the client does not know).
    AnswerLate(Duration),
}

/// A call as a script sees it.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    /// The idempotency key: `<message_id>:<operation>` (`:<part>` for an attachment).
    pub key: &'a str,
    /// `contact`, `deal`, `activity`, `activity-link`, `attachment` or `ticket`.
    pub op: &'a str,
    /// Calls made with this key so far, this one included (from 1).
    pub attempt: usize,
}

/// A script: the fault to answer a call with, and the name it is counted under in
/// [`FakeCrm::faults`]; `None` leaves the call to the stand-in's own behaviour.
type Script = Arc<dyn Fn(&Call<'_>) -> Option<(&'static str, Fault)> + Send + Sync>;

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
    /// The `url` each attachment was written with, by idempotency key.
    pub attachment_urls: BTreeMap<String, String>,
    /// Helpdesk tickets opened per message id (`POST /tickets`, `external_id`).
    pub tickets: BTreeMap<String, u32>,
    /// Each activity's link by message id: thread id, parent, deal (as created, then as a
    /// relink's `PATCH` moved it).
    pub links: BTreeMap<String, Link>,
}

/// Where an activity hangs: `(thread_id, thread_parent, deal_id)`.
pub type Link = (String, Option<String>, Option<String>);

/// The link fields of an activity create's or a relink's body.
fn link_of(body: &Value) -> Link {
    let text = |field: &str| body[field].as_str().map(str::to_string);
    (
        text("thread_id").unwrap_or_default(),
        text("thread_parent"),
        text("deal_id"),
    )
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
    /// Answer 401 to every call.
    refuse_credentials: bool,
    /// When each call per idempotency key was made, faults included.
    calls: BTreeMap<String, Vec<Instant>>,
    script: Option<Script>,
    /// Activity id → its message id and attachments written to it.
    activity_index: BTreeMap<String, (String, u64)>,
    /// Erase calls (`GET`/`DELETE` of a contact or an activity) by method, kind and answer.
    erase_calls: BTreeMap<String, u64>,
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
/// `activity` is the activity a call's path names (an attachment's, a relink's).
fn apply(crm: &mut Crm, op: &str, key: &str, body: &Value, activity: &str) -> (u16, Value, bool) {
    if let Some((status, stored)) = crm.stored.get(key) {
        return (*status, stored.clone(), true);
    }
    if op == "activity-link" && !crm.activity_index.contains_key(activity) {
        return (404, json!({"error": "no such activity"}), false);
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
            let id = format!("act-{n}");
            let entry = (text("message_id"), 0);
            crm.activity_index.insert(id.clone(), entry);
            crm.rows.links.insert(text("message_id"), link_of(body));
            (201, json!({"id": id}))
        }
        "ticket" => {
            *crm.rows.tickets.entry(text("external_id")).or_default() += 1;
            (201, json!({"id": format!("tk-{n}")}))
        }
        "activity-link" => {
            if let Some((message_id, _)) = crm.activity_index.get(activity) {
                crm.rows.links.insert(message_id.clone(), link_of(body));
            }
            (200, json!({"id": activity}))
        }
        _ => {
            crm.rows.attachments += 1;
            let url = text("url");
            crm.rows.attachment_urls.insert(key.to_string(), url);
            (201, json!({"id": format!("att-{n}")}))
        }
    };
    crm.stored.insert(key.to_string(), (status, answer.clone()));
    (status, answer, false)
}

/// How a call that reached the write is paced: a wait before it, and one before the answer.
#[derive(Default)]
struct Pace {
    before: Duration,
    after: Duration,
}

/// What becomes of a call: answered at once (a fault), or written at a pace.
enum Verdict {
    Answer(Response),
    Write(Pace),
}

/// A 400 naming the sender's address (or the contact's), as CRMs echo the value they refuse.
fn reject(op: &str, body: &Value) -> Response {
    let value = body["sender_email"]
        .as_str()
        .or_else(|| body["email"].as_str())
        .unwrap_or("the value");
    let error = format!("{op} rejected by a validation rule: {value}");
    answer(400, json!({ "error": error }), &[])
}

/// The answer to a call `fault` hits, or how to pace its write.
fn inject(fault: Fault, op: &str, body: &Value) -> Verdict {
    let too_many = |retry_after: String| {
        let headers = [("retry-after", retry_after)];
        Verdict::Answer(answer(429, json!({"error": "rate limited"}), &headers))
    };
    match fault {
        Fault::TooMany { retry_after_secs } => too_many(retry_after_secs.to_string()),
        Fault::TooManyUntil(ahead) => {
            let at = chrono::Utc::now() + chrono::Duration::from_std(ahead).expect("a short wait");
            too_many(at.format("%a, %d %b %Y %H:%M:%S GMT").to_string())
        }
        Fault::Unavailable => Verdict::Answer(answer(503, json!({"error": "maintenance"}), &[])),
        Fault::Reject => Verdict::Answer(reject(op, body)),
        Fault::Slow(before) => Verdict::Write(Pace {
            before,
            after: Duration::ZERO,
        }),
        Fault::AnswerLate(after) => Verdict::Write(Pace {
            before: Duration::ZERO,
            after,
        }),
    }
}

/// Checks a call and answers it with a fault, or says how to pace its write.
fn admit(crm: &mut Crm, op: &str, key: &str, authorization: &str, body: &Value) -> Verdict {
    if crm.refuse_credentials || authorization != format!("Bearer {}", crm.token) {
        *crm.faults.entry("401").or_default() += 1;
        return Verdict::Answer(answer(401, json!({"error": "unauthorized"}), &[]));
    }
    if key.is_empty() {
        return Verdict::Answer(answer(
            400,
            json!({"error": "Idempotency-Key required"}),
            &[],
        ));
    }
    crm.requests += 1;
    let calls = crm.calls.entry(key.to_string()).or_default();
    calls.push(Instant::now());
    let call = Call {
        key,
        op,
        attempt: calls.len(),
    };
    // The script's faults come first: a burst does not take the attempts it scripts.
    if let Some((name, fault)) = crm.script.clone().and_then(|script| script(&call)) {
        *crm.faults.entry(name).or_default() += 1;
        return inject(fault, op, body);
    }
    if crm.burst.is_none() {
        crm.burst = crm.armed.pop_front().map(|(b, l)| (b, l, None));
    }
    if let Some((burst, length, began)) = crm.burst {
        let began = began.unwrap_or_else(Instant::now);
        crm.burst = Some((burst, length, Some(began)));
        if began.elapsed() < length {
            let (name, fault) = match burst {
                Burst::TooMany { retry_after_secs } => ("429", Fault::TooMany { retry_after_secs }),
                Burst::Unavailable => ("503", Fault::Unavailable),
            };
            *crm.faults.entry(name).or_default() += 1;
            return inject(fault, op, body);
        }
        crm.burst = None;
    }
    if op == "activity" && key.contains(REJECT_MARKER) {
        *crm.faults.entry("400").or_default() += 1;
        return Verdict::Answer(reject(op, body));
    }
    Verdict::Write(Pace::default())
}

/// An erase's `GET` or `DELETE` of `/contacts/{id}` or `/activities/{id}`: 200 or 204 when
/// the resource is there (a delete takes an activity's attachments with it), 404 when not.
fn erase_call(
    crm: &mut Crm,
    method: &Method,
    kind: &str,
    id: &str,
    authorization: &str,
) -> Response {
    if crm.refuse_credentials || authorization != format!("Bearer {}", crm.token) {
        return answer(401, json!({"error": "unauthorized"}), &[]);
    }
    let found = match kind {
        "contacts" => crm
            .rows
            .contacts
            .iter()
            .find(|(_, v)| *v == id)
            .map(|(k, _)| k.clone()),
        _ => crm.activity_index.contains_key(id).then(|| id.to_string()),
    };
    let status = match (&found, method) {
        (None, _) => 404,
        (Some(_), &Method::GET) => 200,
        (Some(key), _) => {
            if kind == "contacts" {
                crm.rows.contacts.remove(key);
            } else if let Some((message_id, attachments)) = crm.activity_index.remove(key) {
                crm.rows.attachments -= attachments;
                if let Some(n) = crm.rows.activities.get_mut(&message_id) {
                    *n -= 1;
                    if *n == 0 {
                        crm.rows.activities.remove(&message_id);
                        crm.rows.links.remove(&message_id);
                    }
                }
            }
            204
        }
    };
    *crm.erase_calls
        .entry(format!("{method} {kind} {status}"))
        .or_default() += 1;
    match status {
        404 => answer(404, json!({"error": "not found"}), &[]),
        204 => StatusCode::NO_CONTENT.into_response(),
        _ => answer(200, json!({"id": id}), &[]),
    }
}

async fn handle(
    State(state): State<Arc<Mutex<Crm>>>,
    method: Method,
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
    if method == Method::GET || method == Method::DELETE {
        let resource = path.trim_start_matches('/').split_once('/');
        return match resource {
            Some((kind @ ("contacts" | "activities"), id)) if !id.contains('/') => {
                let auth = header("authorization");
                erase_call(&mut lock(&state), &method, kind, id, &auth)
            }
            _ => answer(404, json!({"error": "no such endpoint"}), &[]),
        };
    }
    let activity = path.trim_start_matches("/activities/");
    let activity = activity.trim_end_matches("/attachments");
    let op = match (&method, path) {
        (&Method::POST, "/contacts") => "contact",
        (&Method::POST, "/deals") => "deal",
        (&Method::POST, "/activities") => "activity",
        (&Method::POST, "/tickets") => "ticket",
        (&Method::POST, p) if p.starts_with("/activities/") && p.ends_with("/attachments") => {
            "attachment"
        }
        (&Method::PATCH, p) if p.starts_with("/activities/") && !activity.contains('/') => {
            "activity-link"
        }
        _ => return answer(404, json!({"error": "no such endpoint"}), &[]),
    };
    let key = header("idempotency-key");
    let body: Value = serde_json::from_slice(&body).unwrap_or_default();
    let admitted = admit(&mut lock(&state), op, &key, &header("authorization"), &body);
    let pace = match admitted {
        Verdict::Write(pace) => pace,
        Verdict::Answer(fault) => return fault,
    };
    if !pace.before.is_zero() {
        tokio::time::sleep(pace.before).await;
    }
    let (status, body, replayed) = apply(&mut lock(&state), op, &key, &body, activity);
    if op == "attachment"
        && !replayed
        && let Some((_, n)) = lock(&state).activity_index.get_mut(activity)
    {
        *n += 1;
    }
    if !pace.after.is_zero() {
        tokio::time::sleep(pace.after).await;
    }
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

    /// Whether a burst is under way or armed (waiting for its first call): the calls it
    /// fails will come again.
    pub fn bursting(&self) -> bool {
        let crm = lock(&self.state);
        let active = crm
            .burst
            .is_some_and(|(_, length, began)| began.is_none_or(|b| b.elapsed() < length));
        active || !crm.armed.is_empty()
    }

    /// Faults answered so far, by kind (`429`, `503`, `400`, `401`; a script's by its names).
    pub fn faults(&self) -> BTreeMap<&'static str, u64> {
        lock(&self.state).faults.clone()
    }

    /// An erase's calls so far, as `<METHOD> <contacts|activities> <status>` → how many.
    pub fn erase_calls(&self) -> BTreeMap<String, u64> {
        lock(&self.state).erase_calls.clone()
    }

    pub fn requests(&self) -> u64 {
        lock(&self.state).requests
    }

    /// While `refuse` holds, every call is answered 401 (the token was revoked).
    pub fn refuse_credentials(&self, refuse: bool) {
        lock(&self.state).refuse_credentials = refuse;
    }

    /// When each call that passed authentication was made, per idempotency key (faults
    /// included).
    pub fn calls(&self) -> BTreeMap<String, Vec<Instant>> {
        lock(&self.state).calls.clone()
    }

    /// Answers each call `script` names a fault for with that fault, counted in
    /// [`FakeCrm::faults`] under the name it gives, before any burst or poison marker: e.g. a
    /// fault by markers in the message id, the operation and the attempt.
    pub fn script(
        &self,
        script: impl Fn(&Call<'_>) -> Option<(&'static str, Fault)> + Send + Sync + 'static,
    ) {
        lock(&self.state).script = Some(Arc::new(script));
    }
}

/// A TCP proxy the test can cut (every connection dropped, new ones refused) and restore: an
/// outage of whatever is behind it, on demand.
pub struct Cut {
    pub addr: std::net::SocketAddr,
    up: Arc<std::sync::atomic::AtomicBool>,
    cuts: tokio::sync::watch::Sender<u64>,
}

impl Cut {
    /// Proxies a free port of 127.0.0.1 to `upstream` (`host:port`).
    pub async fn start(upstream: String) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let up = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (cuts, _) = tokio::sync::watch::channel(0u64);
        let (flag, signal) = (up.clone(), cuts.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !flag.load(std::sync::atomic::Ordering::SeqCst) {
                    continue; // dropped: the connection is refused
                }
                let upstream = upstream.clone();
                let mut cut = signal.subscribe();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Ok(Self { addr, up, cuts })
    }

    /// Drops every connection and refuses new ones.
    pub fn cut(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        self.cuts.send_modify(|n| *n += 1);
    }

    pub fn restore(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A scored lead from `sender` (an unknown one: the resolver proposed a new contact) at
/// `account`, with a deal when `deal` is given.
pub fn scored_lead(
    message_id: &str,
    sender: &str,
    account: &str,
    deal: Option<&str>,
    received_at: i64,
) -> ScoredLead {
    let domain = sender.rsplit_once('@').map(|(_, d)| d.to_string());
    let subject = Some(format!("Pricing question {message_id}"));
    ScoredLead {
        message_id: message_id.into(),
        received_at,
        lead_key: sender.into(),
        sender_email: Some(sender.into()),
        sender_domain: domain.clone(),
        subject: subject.clone(),
        account_id: Some(account.into()),
        deal_id: deal.map(Into::into),
        thread_id: message_id.into(),
        score: 25,
        status: "review".into(),
        breakdown: vec![RuleHit {
            rule_id: "subject-intent".into(),
            points: 25,
            evidence: "subject mentions pricing".into(),
        }],
        rules_version: "0123456789ab".into(),
        resolved: ResolvedEmail {
            message_id: message_id.into(),
            received_at,
            email: ParsedEmail {
                message_id: message_id.into(),
                ingest_id: format!("i-{message_id}"),
                received_at,
                subject,
                from: Some(Address {
                    email: sender.into(),
                    name: Some("Sam Sender".into()),
                }),
                text: Some("Hello, what does it cost?".into()),
                ..ParsedEmail::default()
            },
            recipients: vec!["sales@in.example.com".into()],
            sender_email: Some(sender.into()),
            sender_domain: domain.clone(),
            account: Some(AccountMatch {
                account_id: account.into(),
                name: Some(format!("Company {account}")),
                domain: domain.clone(),
                target_account: true,
                matched_by: "domain".into(),
            }),
            new_contact: Some(NewContactProposal {
                email: sender.into(),
                name: Some("Sam Sender".into()),
                domain,
                account_id: Some(account.into()),
            }),
            thread_id: message_id.into(),
            ..ResolvedEmail::default()
        },
        ..ScoredLead::default()
    }
}

/// A [`scored_lead`] at `acct-1` whose text carries quoted history (the sink writes the
/// stripped text: "Hello, what does it cost?"), passing SPF and DKIM.
pub fn reply_lead(message_id: &str, sender: &str, received_at: i64) -> ScoredLead {
    let mut l = scored_lead(message_id, sender, "acct-1", None, received_at);
    let email = &mut l.resolved.email;
    email.text = Some("Hello, what does it cost?\n\n> earlier".into());
    email.stripped_text = Some("Hello, what does it cost?".into());
    email.auth = AuthResults {
        spf: Some("pass".into()),
        dkim: Some("pass".into()),
        dmarc: None,
    };
    l
}

/// The resolver's second record of `l` (`thread_relinked`): its parent, the thread's first
/// message, arrived after it, and gave it its thread and `deal`.
pub fn relinked(mut l: ScoredLead, parent: &str, deal: Option<&str>) -> ScoredLead {
    l.thread_id = parent.into();
    l.deal_id = deal.map(Into::into);
    let r = &mut l.resolved;
    r.thread_id = parent.into();
    r.thread_parent = Some(parent.into());
    r.deal_id = deal.map(Into::into);
    r.deal_source = deal.map(|_| "thread".into());
    r.thread_relinked = true;
    l
}

/// `l` from a known contact, `contact_id` (of `l`'s account), instead of a proposed one.
pub fn known_sender(mut l: ScoredLead, contact_id: &str) -> ScoredLead {
    l.contact_id = Some(contact_id.into());
    l.lead_key = contact_id.into();
    l.resolved.new_contact = None;
    l.resolved.contact = Some(ContactMatch {
        contact_id: contact_id.into(),
        name: Some("Kim Known".into()),
        account_id: l.account_id.clone(),
    });
    l
}

/// `l` with one more PDF attachment, `name`, of content hash `sha256` (stored as a blob).
pub fn with_attachment(mut l: ScoredLead, name: Option<&str>, sha256: &str) -> ScoredLead {
    l.resolved.email.attachments.push(Attachment {
        filename: name.map(Into::into),
        content_type: "application/pdf".into(),
        sniffed_type: Some("application/pdf".into()),
        size: 1234,
        sha256: sha256.into(),
        disposition: Disposition::Attachment,
        content_id: None,
        blob_uri: Some(format!("file:///blobs/{sha256}")),
        executable: false,
        malware: None,
    });
    l
}

/// Produces `leads` to `scored`, keyed by message id.
pub async fn produce_leads(env: &TestEnv, leads: &[ScoredLead]) {
    let mut records = Vec::new();
    for l in leads {
        let value = l.clone().into_avro().expect("to avro");
        records.push((l.message_id.clone(), env.encode("scored", value).await));
    }
    env.produce("scored", records).await;
}

/// Produces `leads` to partition 0 of `scored`, each delivered before the next: the sink reads
/// them in this order.
pub async fn produce_leads_in_order<'a>(
    env: &TestEnv,
    leads: impl IntoIterator<Item = &'a ScoredLead>,
) {
    let producer = env.producer();
    let topic = env.topic("scored");
    for l in leads {
        let payload = env
            .encode("scored", l.clone().into_avro().expect("to avro"))
            .await;
        producer
            .send(
                FutureRecord::to(&topic)
                    .key(&l.message_id)
                    .payload(&payload)
                    .partition(0),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("delivered");
    }
}

/// The committed `crm-results` once `want` arrived (or `timeout` passed), then 3 s more.
pub async fn crm_results(env: &TestEnv, want: usize, timeout: Duration) -> Vec<CrmResult> {
    let seen = collect(
        &env.consumer(&["crm-results"]),
        want,
        timeout,
        Duration::from_secs(3),
    )
    .await;
    let mut out = Vec::new();
    for record in seen {
        let value = decode(env.registry(), record.payload.as_deref().expect("payload")).await;
        let result = CrmResult::from_avro(value).expect("a CrmResult");
        assert_eq!(record.key.as_deref(), Some(result.message_id.as_str()));
        out.push(result);
    }
    out
}

/// Starts `mailstream run crm-sink` as `instance`, serving `/readyz` and `/metrics` on `port`.
pub fn spawn_sink(env: &TestEnv, instance: &str, port: u16, settings: &[(&str, &str)]) -> Child {
    let addr = format!("127.0.0.1:{port}");
    let mut extra = vec![("MAILSTREAM_HTTP_ADDR", addr.as_str())];
    extra.extend_from_slice(settings);
    env.spawn("crm-sink", instance, &extra)
}

/// The log of the sink instance `instance` (in `target/debug/test-logs`).
pub fn sink_log(env: &TestEnv, instance: &str) -> String {
    std::fs::read_to_string(log_dir().join(format!("{}crm-sink-{instance}.log", env.prefix)))
        .unwrap_or_default()
}

/// Metric `name` with `labels` on the `/metrics` of the sink serving on `port` (panics when it
/// has no such sample).
pub async fn sink_metric(port: u16, name: &str, labels: &[(&str, &str)]) -> f64 {
    let (_, body) = http_get(&format!("http://127.0.0.1:{port}/metrics")).await;
    metric(&body, name, labels)
}

/// Polls [`sink_metric`] until it is `want` (results commit a moment before the sink counts
/// them) or 10 s passed; returns the last value.
pub async fn sink_metric_until(port: u16, name: &str, labels: &[(&str, &str)], want: f64) -> f64 {
    sink_metric_within(port, name, labels, want, Duration::from_secs(10)).await
}

/// Polls [`sink_metric`] until it is `want` or `timeout` passed; returns the last value.
pub async fn sink_metric_within(
    port: u16,
    name: &str,
    labels: &[(&str, &str)],
    want: f64,
    timeout: Duration,
) -> f64 {
    let started = Instant::now();
    loop {
        let value = sink_metric(port, name, labels).await;
        if value == want || started.elapsed() > timeout {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `/readyz` of the sink serving on `port`: status and body.
pub async fn sink_readyz(port: u16) -> (u16, String) {
    http_get(&format!("http://127.0.0.1:{port}/readyz")).await
}

/// Polls [`sink_readyz`] until it answers `status` or `timeout` passed; returns the last
/// answer.
pub async fn sink_readyz_until(port: u16, status: u16, timeout: Duration) -> (u16, String) {
    let started = Instant::now();
    loop {
        let answer = sink_readyz(port).await;
        if answer.0 == status || started.elapsed() > timeout {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The erasure key the erase helpers run `mailstream erase` with.
pub const ERASURE_KEY: &str = "crm-erase-test-key-0123456789";

/// Produces the `parsed` record of each of `leads`: where `mailstream erase` finds the emails a
/// person took part in (a test that writes to the sink through `scored` only has none). Their
/// attachments name no blob: these tests have no blob store, only a CRM.
pub async fn produce_parsed(env: &TestEnv, leads: &[ScoredLead]) {
    let mut records = Vec::new();
    for l in leads {
        let mut email = l.resolved.email.clone();
        for attachment in &mut email.attachments {
            attachment.blob_uri = None;
        }
        let value = email.into_avro().expect("to avro");
        records.push((l.message_id.clone(), env.encode("parsed", value).await));
    }
    env.produce("parsed", records).await;
}

/// Runs `mailstream erase --email ADDRESS --json` (with `--execute` when `execute`) against the
/// sink's `settings` (`MAILSTREAM_CRM_SINK_*`), whatever its outcome.
pub fn erase_output(
    env: &TestEnv,
    address: &str,
    execute: bool,
    settings: &[(&str, &str)],
) -> std::process::Output {
    let blobs = crate::mail::temp_dir("crm-erase-blobs");
    let mut args = vec!["erase", "--email", address, "--json"];
    if execute {
        args.push("--execute");
    }
    let mut cmd = env.mailstream(&args);
    cmd.env("MAILSTREAM_ERASURE_KEY", ERASURE_KEY).env(
        "MAILSTREAM_PARSER_BLOB_URL",
        format!("file://{}", blobs.display()),
    );
    for (name, value) in settings {
        cmd.env(name, value);
    }
    let out = crate::output(cmd);
    let _ = std::fs::remove_dir_all(&blobs);
    out
}

/// [`erase_output`], asserting that the command succeeded and that its report names nobody;
/// the report.
pub fn erase(env: &TestEnv, address: &str, execute: bool, settings: &[(&str, &str)]) -> Value {
    let out = erase_output(env, address, execute, settings);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "erase failed: {stderr}");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let local = address.split('@').next().unwrap_or(address);
    assert!(
        !text.to_lowercase().contains(&local.to_lowercase()),
        "the report names nobody: {text}"
    );
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("a JSON report ({e}): {text}"))
}

/// Runs `mailstream retention run --older-than-days DAYS --json` (with `--execute` when
/// `execute`) against the sink's `settings` (`MAILSTREAM_CRM_SINK_*`) and the blob store at
/// `blob_url`, asserting that it succeeded; the report.
pub fn retention(
    env: &TestEnv,
    days: u32,
    execute: bool,
    settings: &[(&str, &str)],
    blob_url: &str,
) -> Value {
    let days = days.to_string();
    let mut args = vec!["retention", "run", "--older-than-days", &days, "--json"];
    if execute {
        args.push("--execute");
    }
    let mut cmd = env.mailstream(&args);
    cmd.env("MAILSTREAM_PARSER_BLOB_URL", blob_url);
    for (name, value) in settings {
        cmd.env(name, value);
    }
    let out = crate::output(cmd);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "retention failed: {stderr}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("a JSON report ({e}): {stderr}"))
}
