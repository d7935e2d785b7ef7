//! Hot-lead notifications against the real stack (Kafka, the schema registry) and a local
//! receiver standing in for Slack and for a generic webhook. The receiver checks what Slack
//! checks of an incoming-webhook message (Block Kit block types, required fields, text
//! lengths, unescaped `mrkdwn`) and answers 400 `invalid_blocks` like Slack when one is wrong,
//! and checks the webhook's HMAC-SHA256 signature the way the HTTP intake does (v2 payload,
//! computed here independently).
//!
//! Exactly once per qualified lead and channel, proven through:
//! - a kill -9 of the notifier while its batch is uncommitted: the receiver takes the first
//!   sends, then answers 503, so the batch holding the accepted sends is retried and never
//!   commits; the notifier is killed then, and its restart reads the same records again and
//!   sends only the ones not yet accepted (`already-sent` on its /metrics);
//! - an operator replay of its input (`mailstream replay notifier --to-earliest`): nothing is
//!   sent again;
//! - rebalances: a second instance joins while leads flow, then the first leaves.
//!
//! Leads below the qualified status never notify; a sender's unsubscribe answer, written by the
//! CRM sink to the `opt-outs` table, stops the notifications of their later leads;
//! `mailstream notify test` reaches a channel and fails, naming the key, on one that refuses it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use hmac::{Hmac, Mac};
use mailstream_runtime::records::{AutoReply, ScoredLead};
use mailstream_tests::crm::{known_sender, produce_leads_in_order, scored_lead, spawn_sink};
use mailstream_tests::crm_db::{database_url, schema_of};
use mailstream_tests::pipeline::metric;
use mailstream_tests::{
    TestEnv, collect, ctl, free_port, http_get, now_ms, replay_when_stopped, terminate,
};
use serde_json::Value;
use sha2::Sha256;

const SECRET: &str = "notify-test-secret-0123456789";

/// What the receiver saw.
#[derive(Default)]
struct Seen {
    /// Accepted Slack messages by message id (from the Email button's URL).
    slack: BTreeMap<String, usize>,
    /// Accepted webhook calls by event id.
    webhook: BTreeMap<String, usize>,
    /// Everything wrong with a request, one line each.
    problems: Vec<String>,
    /// Requests answered with the outage status.
    refused: usize,
}

#[derive(Clone)]
struct Receiver {
    seen: Arc<Mutex<Seen>>,
    /// Accept this many more requests, then answer `outage`.
    budget: Arc<AtomicUsize>,
    outage: Arc<AtomicU16>,
    /// How long each answer takes, in ms.
    delay_ms: Arc<AtomicU64>,
}

impl Receiver {
    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits the answer's delay.
    async fn pause(&self) {
        let delay = self.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
    }

    /// The outage status to answer now, if any (and spends one accepted request otherwise).
    fn gate(&self) -> Option<StatusCode> {
        let outage = self.outage.load(Ordering::SeqCst);
        if outage == 0 {
            return None;
        }
        let took = self
            .budget
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| b.checked_sub(1));
        if took.is_ok() {
            return None;
        }
        self.seen().refused += 1;
        StatusCode::from_u16(outage).ok()
    }
}

/// The length of a text object's text, and whether it is of an allowed type.
fn text_object(v: &Value, types: &[&str], max: usize, at: &str, problems: &mut Vec<String>) {
    let kind = v["type"].as_str().unwrap_or_default();
    if !types.contains(&kind) {
        problems.push(format!("{at}: text type `{kind}` not one of {types:?}"));
    }
    let Some(text) = v["text"].as_str() else {
        problems.push(format!("{at}: text object without text"));
        return;
    };
    let len = text.chars().count();
    if len == 0 || len > max {
        problems.push(format!("{at}: text of {len} characters (1..={max})"));
    }
    if kind == "mrkdwn" && (text.contains('<') || text.contains('>')) {
        problems.push(format!("{at}: unescaped < or > in mrkdwn: {text}"));
    }
    let allowed = ["type", "text", "emoji", "verbatim"];
    if let Some(o) = v.as_object() {
        for k in o.keys().filter(|k| !allowed.contains(&k.as_str())) {
            problems.push(format!("{at}: unknown key `{k}` in a text object"));
        }
    }
}

/// What Slack would refuse in an incoming-webhook message (the Block Kit reference's rules for
/// the blocks the notifier uses).
fn slack_problems(message: &Value) -> Vec<String> {
    let mut p = Vec::new();
    let fallback = message["text"].as_str().unwrap_or_default();
    if fallback.is_empty() {
        p.push("no `text` fallback".into());
    }
    let Some(blocks) = message["blocks"].as_array() else {
        p.push("no `blocks` array".into());
        return p;
    };
    if blocks.is_empty() || blocks.len() > 50 {
        p.push(format!("{} blocks (1..=50)", blocks.len()));
    }
    let mut action_ids = Vec::new();
    for (i, block) in blocks.iter().enumerate() {
        let at = format!("blocks[{i}]");
        let keys: Vec<&str> = block
            .as_object()
            .map(|o| o.keys().map(String::as_str).collect())
            .unwrap_or_default();
        let allow = |p: &mut Vec<String>, allowed: &[&str]| {
            for k in keys.iter().filter(|k| !allowed.contains(k)) {
                p.push(format!("{at}: unknown key `{k}`"));
            }
        };
        match block["type"].as_str().unwrap_or_default() {
            "header" => {
                allow(&mut p, &["type", "text", "block_id"]);
                text_object(&block["text"], &["plain_text"], 150, &at, &mut p);
            }
            "section" => {
                allow(&mut p, &["type", "text", "fields", "block_id", "accessory"]);
                let text = &block["text"];
                let fields = block["fields"].as_array();
                if text.is_null() && fields.is_none() {
                    p.push(format!("{at}: a section needs text or fields"));
                }
                if !text.is_null() {
                    text_object(text, &["mrkdwn", "plain_text"], 3000, &at, &mut p);
                }
                if let Some(fields) = fields {
                    if fields.is_empty() || fields.len() > 10 {
                        p.push(format!("{at}: {} fields (1..=10)", fields.len()));
                    }
                    for (j, f) in fields.iter().enumerate() {
                        let at = format!("{at}.fields[{j}]");
                        text_object(f, &["mrkdwn", "plain_text"], 2000, &at, &mut p);
                    }
                }
            }
            "context" => {
                allow(&mut p, &["type", "elements", "block_id"]);
                let elements = block["elements"].as_array().cloned().unwrap_or_default();
                if elements.is_empty() || elements.len() > 10 {
                    p.push(format!(
                        "{at}: {} context elements (1..=10)",
                        elements.len()
                    ));
                }
                for (j, e) in elements.iter().enumerate() {
                    let at = format!("{at}.elements[{j}]");
                    text_object(e, &["mrkdwn", "plain_text"], 3000, &at, &mut p);
                }
            }
            "actions" => {
                allow(&mut p, &["type", "elements", "block_id"]);
                let elements = block["elements"].as_array().cloned().unwrap_or_default();
                if elements.is_empty() || elements.len() > 25 {
                    p.push(format!("{at}: {} actions (1..=25)", elements.len()));
                }
                for (j, e) in elements.iter().enumerate() {
                    let at = format!("{at}.elements[{j}]");
                    if e["type"] != "button" {
                        p.push(format!("{at}: not a button"));
                        continue;
                    }
                    text_object(&e["text"], &["plain_text"], 75, &at, &mut p);
                    let url = e["url"].as_str().unwrap_or_default();
                    if !(url.starts_with("http://") || url.starts_with("https://"))
                        || url.len() > 3000
                    {
                        p.push(format!("{at}: bad url `{url}`"));
                    }
                    if let Some(id) = e["action_id"].as_str() {
                        if id.is_empty() || id.len() > 255 || action_ids.contains(&id.to_string()) {
                            p.push(format!("{at}: bad or repeated action_id `{id}`"));
                        }
                        action_ids.push(id.to_string());
                    }
                }
            }
            other => p.push(format!("{at}: block type `{other}` not expected")),
        }
    }
    p
}

/// The message id a Slack message is about: the last segment of its Email button's URL.
fn slack_message_id(message: &Value) -> Option<String> {
    let blocks = message["blocks"].as_array()?;
    let actions = blocks.iter().find(|b| b["type"] == "actions")?;
    let button = actions["elements"]
        .as_array()?
        .iter()
        .find(|e| e["text"]["text"] == "Open Email")?;
    let url = button["url"].as_str()?;
    let encoded = url.rsplit('/').next()?;
    Some(percent_decode(encoded))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn slack(State(r): State<Receiver>, body: Bytes) -> (StatusCode, &'static str) {
    r.pause().await;
    let Ok(message) = serde_json::from_slice::<Value>(&body) else {
        r.seen().problems.push("slack: body is not JSON".into());
        return (StatusCode::BAD_REQUEST, "invalid_payload");
    };
    let problems = slack_problems(&message);
    if !problems.is_empty() {
        r.seen().problems.extend(problems);
        return (StatusCode::BAD_REQUEST, "invalid_blocks");
    }
    if let Some(status) = r.gate() {
        return (status, "service_unavailable");
    }
    let id = slack_message_id(&message).unwrap_or_else(|| "?".into());
    *r.seen().slack.entry(id).or_default() += 1;
    (StatusCode::OK, "ok")
}

async fn webhook(
    State(r): State<Receiver>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, &'static str) {
    r.pause().await;
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let timestamp = header("x-mailstream-timestamp");
    let signature = header("x-mailstream-signature");
    let age = timestamp
        .parse::<i64>()
        .map(|t| (now_ms() / 1000 - t).abs())
        .unwrap_or(i64::MAX);
    // The intake's v2 payload without an envelope: "v2\n{timestamp}\n\n\n{body}".
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("key");
    mac.update(format!("v2\n{timestamp}\n\n\n").as_bytes());
    mac.update(&body);
    let valid = hex::decode(signature.strip_prefix("sha256=").unwrap_or("-"))
        .is_ok_and(|s| mac.verify_slice(&s).is_ok());
    if !valid || age > 300 {
        r.seen().problems.push(format!(
            "webhook: bad signature ({valid}) or timestamp age {age} s"
        ));
        return (StatusCode::UNAUTHORIZED, "bad signature");
    }
    let Ok(event) = serde_json::from_slice::<Value>(&body) else {
        r.seen().problems.push("webhook: body is not JSON".into());
        return (StatusCode::BAD_REQUEST, "not json");
    };
    let id = event["event_id"].as_str().unwrap_or("?").to_string();
    if header("idempotency-key") != id || event["event"] != "lead.qualified" {
        r.seen().problems.push(format!(
            "webhook: event {id} without its idempotency key or type"
        ));
    }
    if event["reasons"].as_array().is_none_or(|r| r.is_empty()) || event["score"].as_i64().is_none()
    {
        r.seen()
            .problems
            .push(format!("webhook: event {id} without reasons or score"));
    }
    if let Some(status) = r.gate() {
        return (status, "unavailable");
    }
    *r.seen().webhook.entry(id).or_default() += 1;
    (StatusCode::OK, "ok")
}

async fn start_receiver() -> (Receiver, u16) {
    let receiver = Receiver {
        seen: Arc::default(),
        budget: Arc::new(AtomicUsize::new(0)),
        outage: Arc::new(AtomicU16::new(0)),
        delay_ms: Arc::new(AtomicU64::new(0)),
    };
    let app = Router::new()
        .route("/services/T0/B0/slack", post(slack))
        .route(
            "/gone",
            post(|| async { (StatusCode::NOT_FOUND, "no_service") }),
        )
        .route("/hooks/lead", post(webhook))
        .with_state(receiver.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (receiver, port)
}

fn qualified(i: usize, at: i64) -> ScoredLead {
    let mut l = scored_lead(
        &format!("hot-{i}@mail.example"),
        &format!("buyer{i}@acme{i}.example"),
        &format!("acct-{i}"),
        i.is_multiple_of(2).then_some("deal-7"),
        at,
    );
    l.status = "qualified".into();
    l.score = 55;
    if i.is_multiple_of(3) {
        l = known_sender(l, &format!("contact-{i}"));
    }
    l
}

fn settings(port: u16) -> Vec<(String, String)> {
    let base = format!("http://127.0.0.1:{port}");
    [
        (
            "MAILSTREAM_NOTIFIER_SLACK_WEBHOOK_URL",
            format!("{base}/services/T0/B0/slack"),
        ),
        (
            "MAILSTREAM_NOTIFIER_WEBHOOK_URL",
            format!("{base}/hooks/lead"),
        ),
        ("MAILSTREAM_NOTIFIER_WEBHOOK_SECRET", SECRET.to_string()),
        (
            "MAILSTREAM_NOTIFIER_CONTACT_URL",
            "https://crm.example/contacts/{contact_id}".into(),
        ),
        (
            "MAILSTREAM_NOTIFIER_ACCOUNT_URL",
            "https://crm.example/accounts/{account_id}".into(),
        ),
        (
            "MAILSTREAM_NOTIFIER_DEAL_URL",
            "https://crm.example/deals/{deal_id}".into(),
        ),
        (
            "MAILSTREAM_NOTIFIER_EMAIL_URL",
            "https://crm.example/emails/{message_id}".into(),
        ),
        ("MAILSTREAM_NOTIFIER_RATE_LIMIT_PER_SEC", "50".into()),
        ("MAILSTREAM_NOTIFIER_MAX_ATTEMPTS", "2".into()),
        ("MAILSTREAM_NOTIFIER_BACKOFF_MAX_MS", "200".into()),
        // Every record in one batch, so the accepted sends stay uncommitted while it fails.
        ("MAILSTREAM_BATCH_MAX_MS", "2000".into()),
        ("MAILSTREAM_BATCH_IDLE_MS", "0".into()),
        ("MAILSTREAM_RETRY_BACKOFF_MAX_MS", "500".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

fn spawn_notifier(env: &TestEnv, port: u16, http: u16) -> std::process::Child {
    spawn_instance(env, "n1", port, http)
}

fn spawn_instance(env: &TestEnv, instance: &str, port: u16, http: u16) -> std::process::Child {
    let owned = settings(port);
    let addr = format!("127.0.0.1:{http}");
    let mut vars: Vec<(&str, &str)> = owned
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    vars.push(("MAILSTREAM_HTTP_ADDR", &addr));
    env.spawn("notifier", instance, &vars)
}

/// Waits until `done` holds of what the receiver saw, or panics after `timeout`.
async fn until(receiver: &Receiver, timeout: Duration, what: &str, done: impl Fn(&Seen) -> bool) {
    let started = Instant::now();
    loop {
        if done(&receiver.seen()) {
            return;
        }
        let seen = receiver.seen();
        assert!(
            started.elapsed() < timeout,
            "timed out waiting for {what}: slack {:?}, webhook {:?}, refused {}, problems {:?}",
            seen.slack,
            seen.webhook,
            seen.refused,
            seen.problems
        );
        drop(seen);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `notifications_total{channel,outcome}` of the notifier serving on `http` (waits for it to
/// serve its metrics).
async fn notifier_metric(http: u16, outcome: &str, channel: &str) -> f64 {
    let started = Instant::now();
    let body = loop {
        let (_, body) = http_get(&format!("http://127.0.0.1:{http}/metrics")).await;
        if body.contains("mailstream_notifications_total") {
            break body;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the notifier on port {http} serves no metrics"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    metric(
        &body,
        "mailstream_notifications_total",
        &[("channel", channel), ("outcome", outcome)],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_notification_per_qualified_lead_through_kill_and_replay() {
    let env = TestEnv::new("notify");
    let (receiver, port) = start_receiver().await;
    const HOT: usize = 6;
    let at = now_ms();
    let mut leads: Vec<ScoredLead> = (0..HOT).map(|i| qualified(i, at)).collect();
    for i in 0..2 {
        let mut cold = qualified(100 + i, at);
        cold.status = "review".into();
        cold.score = 20;
        leads.push(cold);
    }
    // Awkward text stays valid Block Kit.
    leads[1].subject = Some("Re: <urgent> pricing & terms for 500 seats".into());
    produce_leads_in_order(&env, &leads).await;

    // The receiver takes 5 requests (two leads on both channels, a third on one), then 503.
    receiver.budget.store(5, Ordering::SeqCst);
    receiver.outage.store(503, Ordering::SeqCst);
    let http = free_port();
    let mut notifier = spawn_notifier(&env, port, http);
    until(
        &receiver,
        Duration::from_secs(60),
        "5 sends then refusals",
        |s| {
            s.slack.values().sum::<usize>() + s.webhook.values().sum::<usize>() == 5
                && s.refused >= 2
        },
    )
    .await;
    notifier.kill().expect("kill -9");
    let _ = notifier.wait();
    assert!(
        receiver.seen().refused >= 2,
        "the batch was retried while the channel was down"
    );

    // Back up; the restart reads the same uncommitted batch and sends only what is missing.
    receiver.outage.store(0, Ordering::SeqCst);
    let http = free_port();
    let mut notifier = spawn_notifier(&env, port, http);
    until(
        &receiver,
        Duration::from_secs(60),
        "every hot lead on both channels",
        |s| s.slack.len() == HOT && s.webhook.len() == HOT,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let skipped = notifier_metric(http, "already-sent", "slack").await
        + notifier_metric(http, "already-sent", "webhook").await;
    assert!(
        skipped >= 5.0,
        "the restarted notifier read the accepted sends again and skipped them ({skipped})"
    );
    let check = |what: &str| {
        let seen = receiver.seen();
        assert!(seen.problems.is_empty(), "{what}: {:?}", seen.problems);
        for (i, lead) in leads.iter().enumerate().take(HOT) {
            let id = format!("hot-{i}@mail.example");
            let event = format!("{id}|{}", lead.lead_key);
            assert_eq!(
                seen.slack.get(&id),
                Some(&1),
                "{what}: slack {:?}",
                seen.slack
            );
            assert_eq!(
                seen.webhook.get(&event),
                Some(&1),
                "{what}: webhook {:?}",
                seen.webhook
            );
        }
        assert_eq!(seen.slack.len(), HOT, "{what}: only qualified leads notify");
        assert_eq!(
            seen.webhook.len(),
            HOT,
            "{what}: only qualified leads notify"
        );
    };
    check("after kill -9");

    // An operator replay of the notifier's input sends nothing again.
    terminate(&mut notifier, Duration::from_secs(20));
    replay_when_stopped(&env, &["replay", "notifier", "--to-earliest", "--execute"]);
    let http = free_port();
    let mut notifier = spawn_notifier(&env, port, http);
    let started = Instant::now();
    loop {
        let again = notifier_metric(http, "already-sent", "slack").await;
        if again >= HOT as f64 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the replay did not reach every lead ({again})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(notifier_metric(http, "sent", "slack").await, 0.0);
    assert_eq!(notifier_metric(http, "sent", "webhook").await, 0.0);
    check("after a replay");
    terminate(&mut notifier, Duration::from_secs(20));
}

/// Two instances share the partitions while leads flow (one joins, then the first leaves):
/// every partition that moves is read again from its committed offsets by its new owner, which
/// finds the sends of the old one recorded and repeats none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_notification_per_lead_through_rebalances() {
    let env = TestEnv::new("notifyscale");
    let (receiver, port) = start_receiver().await;
    receiver.delay_ms.store(60, Ordering::SeqCst);
    const HOT: usize = 40;
    let at = now_ms();
    let leads: Vec<ScoredLead> = (0..HOT).map(|i| qualified(i, at)).collect();
    mailstream_tests::crm::produce_leads(&env, &leads).await;
    let sent = |s: &Seen| s.slack.values().sum::<usize>() + s.webhook.values().sum::<usize>();
    let mut first = spawn_instance(&env, "a", port, free_port());
    until(&receiver, Duration::from_secs(60), "the first sends", |s| {
        sent(s) >= 10
    })
    .await;
    let mut second = spawn_instance(&env, "b", port, free_port());
    until(
        &receiver,
        Duration::from_secs(90),
        "sends after the join",
        |s| sent(s) >= 40,
    )
    .await;
    terminate(&mut first, Duration::from_secs(30));
    until(
        &receiver,
        Duration::from_secs(120),
        "every lead on both channels",
        |s| s.slack.len() == HOT && s.webhook.len() == HOT,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    {
        let seen = receiver.seen();
        assert!(seen.problems.is_empty(), "{:?}", seen.problems);
        let twice: Vec<_> = seen
            .slack
            .iter()
            .chain(&seen.webhook)
            .filter(|(_, n)| **n != 1)
            .collect();
        assert!(twice.is_empty(), "sent more than once: {twice:?}");
    }
    terminate(&mut second, Duration::from_secs(30));
}

/// An unsubscribe answer goes through the CRM sink into the `opt-outs` table; the notifier then
/// sends nothing for that sender's lead received after it, and still notifies their lead
/// received before it and another sender's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opted_out_senders_later_leads_are_not_notified() {
    let env = TestEnv::new("notifyoptout");
    let (receiver, port) = start_receiver().await;
    let at = now_ms();
    let before = qualified(1, at - 60_000);
    let sender = before.sender_email.clone().expect("a sender");
    let mut unsubscribe = scored_lead("unsub-1@mail.example", &sender, "acct-1", None, at);
    unsubscribe.status = "excluded".into();
    unsubscribe.resolved.email.auto_reply = Some(AutoReply {
        class: AutoReply::UNSUBSCRIBE.into(),
        ..AutoReply::default()
    });
    let (schema, database) = (schema_of(&env), database_url());
    let mut sink = spawn_sink(
        &env,
        "a",
        free_port(),
        &[
            ("MAILSTREAM_CRM_SINK_DATABASE_URL", database.as_str()),
            ("MAILSTREAM_CRM_SINK_SCHEMA", schema.as_str()),
        ],
    );
    produce_leads_in_order(&env, &[unsubscribe]).await;
    let opt_outs = collect(
        &env.consumer(&["opt-outs"]),
        1,
        Duration::from_secs(60),
        Duration::ZERO,
    )
    .await;
    terminate(&mut sink, Duration::from_secs(30));
    let keys: Vec<Option<&str>> = opt_outs.iter().map(|r| r.key.as_deref()).collect();
    assert_eq!(keys, [Some(sender.as_str())], "the sink wrote the opt-out");

    let mut after = qualified(1, at + 1_000);
    let id = "hot-1-after@mail.example".to_string();
    after.message_id = id.clone();
    after.resolved.message_id = id.clone();
    after.resolved.email.message_id = id;
    produce_leads_in_order(&env, &[before, after, qualified(2, at + 1_000)]).await;
    let http = free_port();
    let mut notifier = spawn_notifier(&env, port, http);
    until(
        &receiver,
        Duration::from_secs(60),
        "the two leads not opted out",
        |s| s.slack.len() == 2 && s.webhook.len() == 2,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, body) = http_get(&format!("http://127.0.0.1:{http}/metrics")).await;
    terminate(&mut notifier, Duration::from_secs(20));
    let seen = receiver.seen();
    let notified: Vec<&str> = seen.slack.keys().map(String::as_str).collect();
    assert_eq!(notified, ["hot-1@mail.example", "hot-2@mail.example"]);
    assert_eq!(seen.webhook.len(), 2, "{:?}", seen.webhook);
    let skipped = [("reason", "opted-out")];
    assert_eq!(
        metric(&body, "mailstream_notifications_skipped_total", &skipped),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_test_checks_a_channel() {
    let env = TestEnv::with_prefix(mailstream_tests::Stack::get(), "t-notifytest-");
    let (receiver, port) = start_receiver().await;
    let base = format!("http://127.0.0.1:{port}");
    let run = |slack: &str, args: &[&str]| {
        let mut cmd = env.mailstream(&[&["notify", "test"], args].concat());
        cmd.env("MAILSTREAM_NOTIFIER_SLACK_WEBHOOK_URL", slack)
            .env(
                "MAILSTREAM_NOTIFIER_WEBHOOK_URL",
                format!("{base}/hooks/lead"),
            )
            .env("MAILSTREAM_NOTIFIER_WEBHOOK_SECRET", SECRET)
            .env(
                "MAILSTREAM_NOTIFIER_EMAIL_URL",
                "https://crm.example/emails/{message_id}",
            );
        let out = cmd.output().expect("run mailstream");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = run(&format!("{base}/services/T0/B0/slack"), &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("slack: accepted (HTTP 200") && out.contains("webhook: accepted"),
        "{out}"
    );
    {
        let seen = receiver.seen();
        assert!(seen.problems.is_empty(), "{:?}", seen.problems);
        assert_eq!(seen.slack.len(), 1);
        assert_eq!(seen.webhook.len(), 1);
    }
    let (code, out, _) = run(&format!("{base}/gone"), &["--channel", "slack"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("slack: FAILED: refused"), "{out}");
    let (code, out, _) = run(
        &format!("{base}/gone"),
        &["--channel", "slack", "--dry-run"],
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.starts_with("slack: {") && out.contains("\"blocks\""),
        "{out}"
    );
    assert_eq!(receiver.seen().slack.len(), 1, "a dry run sends nothing");
    // A bad configuration names its key.
    let (code, _, err) = ctl(&env, &["notify", "test"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("MAILSTREAM_NOTIFIER_SLACK_WEBHOOK_URL"),
        "{err}"
    );
}
