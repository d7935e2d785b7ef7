//! The CRM sink's `rest` backend against the real stack (Kafka, the schema registry) and the REST
//! CRM stand-in (`tests/helpers/crm.rs`), scripted to fail by markers in the message id: 429
//! with `Retry-After` in both forms, 503s, a timeout after the write, slow answers, a burst of
//! 429s across keys, and 400 for poison activities and for an attachment. Every non-poison
//! message is accepted exactly once per operation, the DLQ holds exactly the poison records,
//! crm-results one result per message, and neither the token nor an address is logged. A
//! reply's relinked record (its parent came later) moves its one activity to the parent's
//! thread and deal with a `PATCH`. A support request below `qualified` opens one helpdesk
//! ticket (the stand-in serves `POST /tickets` too), a qualified one none.
//!
//! Erasure: `mailstream erase` deletes one person's contact and the activities of their emails
//! (with their attachments) by the ids the CRM gave them; its dry run makes lookups only and
//! reports the same counts; a second erase meets 404s and counts them as already gone; another
//! person's contact and activity stay.
//!
//! Retention: `mailstream retention run` finds the REST CRM's old unqualified messages in
//! `crm-results` joined with `scored` and deletes their activities (with their attachments) by
//! the CRM's ids; its dry run makes lookups only and reports what `--execute` then deletes; an
//! old qualified, a recent unqualified lead and every contact stay; a second run finds nothing.

use std::collections::HashMap;
use std::time::Duration;

use mailstream_runtime::blob::sha256_hex;
use mailstream_runtime::records::{CrmResult, Routing, ScoredLead};
use mailstream_tests::crm::{
    Burst, Call, FakeCrm, Fault, crm_results, erase, known_sender, produce_leads, produce_parsed,
    relinked, reply_lead, retention, sink_log, spawn_sink, with_attachment,
};
use mailstream_tests::{TestEnv, collect, free_port, now_ms, terminate};
use serde_json::json;

const TOKEN: &str = "test-token-s3cret";

/// `l` as the scorer gives a support request its `status`.
fn support(mut l: ScoredLead, status: &str) -> ScoredLead {
    l.status = status.into();
    l.routing = Some(Routing {
        intent: "support".into(),
        ..Routing::default()
    });
    l
}

/// The fault script, by markers in the message id (the key's prefix), the operation and the
/// attempt of the key; poison activities are the stand-in's own (`poison` in the message id).
fn script(call: &Call<'_>) -> Option<(&'static str, Fault)> {
    let has = |marker: &str| call.key.contains(marker);
    if has("attfail") && call.op == "attachment" {
        Some(("400", Fault::Reject))
    } else if has("r429s") && call.attempt <= 2 {
        let fault = Fault::TooMany {
            retry_after_secs: 1,
        };
        Some(("429-seconds", fault))
    } else if has("r429d") && call.attempt == 1 {
        Some(("429-date", Fault::TooManyUntil(Duration::from_secs(2))))
    } else if has("r503") && call.attempt <= 3 {
        Some(("503", Fault::Unavailable))
    } else if has("timeout") && call.op == "activity" && call.attempt == 1 {
        // Written, but answered after the client gave up (500 ms).
        Some(("timeout", Fault::AnswerLate(Duration::from_millis(1_500))))
    } else if has("slow") {
        Some(("slow", Fault::Slow(Duration::from_millis(300))))
    } else {
        None
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_backend_rides_out_faults_without_losing_or_duplicating() {
    let env = TestEnv::new("crmrest");
    let crm = FakeCrm::start(TOKEN).await.expect("stand-in");
    crm.script(script);
    // From the first call the script leaves alone, whatever comes gets 429s for a moment (short
    // enough that no call spends its attempts on it).
    crm.burst(
        Burst::TooMany {
            retry_after_secs: 0,
        },
        Duration::from_millis(50),
    );

    let t = now_ms() - 1_000;
    let mut plain = with_attachment(
        reply_lead("rest-plain-1@client.test", "sam@client.test", t),
        Some("q.pdf"),
        &sha256_hex(b"q"),
    );
    plain.deal_id = Some("d-7".into());
    let records = vec![
        plain,
        known_sender(
            reply_lead("rest-plain-2@client.test", "kim@client.test", t),
            "c-known",
        ),
        reply_lead("rest-r429s@client.test", "ana@client.test", t),
        reply_lead("rest-r429d@client.test", "ben@client.test", t),
        reply_lead("rest-r503@client.test", "cy@client.test", t),
        reply_lead("rest-timeout@client.test", "dee@client.test", t),
        reply_lead("rest-slow@client.test", "eve@client.test", t),
        with_attachment(
            reply_lead("rest-attfail@client.test", "fay@client.test", t),
            Some("x.pdf"),
            &sha256_hex(b"x"),
        ),
        reply_lead("rest-poison-1@client.test", "gus@client.test", t),
        reply_lead("rest-poison-2@client.test", "hal@client.test", t),
        reply_lead("rest-plain-3@client.test", "ivy@client.test", t),
        reply_lead("rest-plain-4@client.test", "jo@client.test", t),
        // Support requests: below `qualified` one opens a helpdesk ticket, a qualified one not.
        support(
            reply_lead("rest-support@client.test", "lou@client.test", t),
            "review",
        ),
        support(
            reply_lead("rest-support-hot@client.test", "max@client.test", t),
            "qualified",
        ),
        // A reply written before its parent was known, then its relinked record.
        reply_lead("rest-reply@client.test", "kai@client.test", t),
        relinked(
            reply_lead("rest-reply@client.test", "kai@client.test", t),
            "rest-plain-1@client.test",
            Some("d-7"),
        ),
    ];
    let poison = ["rest-poison-1@client.test", "rest-poison-2@client.test"];
    let mut run = spawn_sink(
        &env,
        "a",
        free_port(),
        &[
            ("MAILSTREAM_CRM_SINK_BACKEND", "rest"),
            ("MAILSTREAM_CRM_SINK_BASE_URL", crm.base_url.as_str()),
            ("MAILSTREAM_CRM_SINK_TOKEN", TOKEN),
            ("MAILSTREAM_CRM_SINK_MAX_ATTEMPTS", "6"),
            ("MAILSTREAM_CRM_SINK_BACKOFF_MAX_MS", "200"),
            ("MAILSTREAM_CRM_SINK_RETRY_AFTER_MAX_MS", "3000"),
            ("MAILSTREAM_CRM_SINK_REQUEST_TIMEOUT_MS", "500"),
            ("MAILSTREAM_CRM_SINK_RATE_LIMIT_PER_SEC", "50"),
            ("MAILSTREAM_CRM_SINK_MAX_CONCURRENCY", "2"),
            ("MAILSTREAM_CRM_SINK_HELPDESK_URL", crm.base_url.as_str()),
            ("MAILSTREAM_CRM_SINK_HELPDESK_TOKEN", TOKEN),
        ],
    );
    produce_leads(&env, &records).await;
    let seen = crm_results(&env, records.len() - poison.len(), Duration::from_secs(120)).await;
    let dlq = collect(
        &env.consumer(&["scored.dlq"]),
        poison.len(),
        Duration::from_secs(60),
        Duration::from_secs(2),
    )
    .await;
    terminate(&mut run, Duration::from_secs(30));

    let mut keys: Vec<&str> = seen.iter().map(|r| r.message_id.as_str()).collect();
    keys.sort();
    let mut expected: Vec<&str> = records
        .iter()
        .map(|r| r.message_id.as_str())
        .filter(|m| !poison.contains(m))
        .collect();
    expected.sort();
    assert_eq!(
        keys, expected,
        "one result per non-poison message, none for poison"
    );
    assert!(
        seen.iter()
            .all(|r| r.outcome == "written" && r.backend == "rest"),
        "{seen:?}"
    );
    let mut dead: Vec<&str> = dlq.iter().filter_map(|s| s.key.as_deref()).collect();
    dead.sort();
    assert_eq!(dead, poison, "the DLQ holds exactly the poison records");
    let sender_of: HashMap<&str, &str> = records
        .iter()
        .filter_map(|r| Some((r.message_id.as_str(), r.sender_email.as_deref()?)))
        .collect();
    for letter in &dlq {
        assert_eq!(letter.headers["mailstream.error.class"], "crm-rejected");
        let message = &letter.headers["mailstream.error.message"];
        assert!(message.contains("400"), "{message}");
        // The stand-in's 400 names the sender's address.
        let address = sender_of[letter.key.as_deref().expect("keyed")];
        assert!(
            !message.contains(address),
            "no addresses in dead-letter headers: {message}"
        );
    }
    let by_id: HashMap<&str, &CrmResult> =
        seen.iter().map(|r| (r.message_id.as_str(), r)).collect();
    let failed = by_id["rest-attfail@client.test"];
    assert_eq!(
        (
            failed.attachments_written,
            failed.attachments_failed,
            failed.follow_ups.len()
        ),
        (0, 1, 1)
    );
    assert!(failed.activity_id.is_some(), "the activity stays written");
    let plain = by_id["rest-plain-1@client.test"];
    assert_eq!(
        (plain.attachments_written, plain.contact_created),
        (1, true)
    );
    assert!(
        plain
            .contact_id
            .as_deref()
            .is_some_and(|id| id.starts_with("ct-")),
        "the CRM's contact id"
    );
    assert!(by_id["rest-timeout@client.test"].attempts >= 2);

    let rows = crm.rows();
    for message in &expected {
        assert_eq!(
            rows.activities.get(*message),
            Some(&1),
            "{message}: exactly one activity"
        );
    }
    for message in poison {
        assert_eq!(
            rows.activities.get(message),
            None,
            "{message}: rejected, never created"
        );
    }
    let twice: Vec<_> = rows.applied.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "a write applied twice: {twice:?}");
    let parent = "rest-plain-1@client.test".to_string();
    assert_eq!(
        rows.links["rest-reply@client.test"],
        (parent.clone(), Some(parent), Some("d-7".to_string())),
        "the relinked record moved the reply's one activity to its parent's thread and deal"
    );
    assert!(
        rows.applied
            .contains_key("rest-reply@client.test:activity-link")
    );
    let tickets: Vec<(&str, u32)> = rows.tickets.iter().map(|(k, n)| (k.as_str(), *n)).collect();
    assert_eq!(
        tickets,
        [("rest-support@client.test", 1)],
        "one ticket, for the low one"
    );
    let ticket = by_id["rest-support@client.test"].ticket_id.as_deref();
    assert!(ticket.is_some_and(|id| id.starts_with("tk-")), "{ticket:?}");
    assert_eq!(by_id["rest-support-hot@client.test"].ticket_id, None);
    let faults = crm.faults();
    // `429` is the burst's; the others the script's, and the stand-in's 400 for poison.
    for kind in [
        "429-seconds",
        "429-date",
        "429",
        "503",
        "timeout",
        "slow",
        "400",
    ] {
        assert!(
            faults.get(kind).is_some_and(|n| *n > 0),
            "fault {kind} injected: {faults:?}"
        );
    }
    let calls = crm.calls();
    assert_eq!(
        calls["rest-timeout@client.test:activity"].len(),
        2,
        "timed out once, then replayed"
    );
    let spaced = &calls["rest-r429s@client.test:contact"];
    assert!(
        spaced.len() == 3 && spaced[1] - spaced[0] >= Duration::from_millis(950),
        "Retry-After: 1 honoured: {spaced:?}"
    );
    let dated = &calls["rest-r429d@client.test:activity"];
    assert!(
        dated.len() == 2 && dated[1] - dated[0] >= Duration::from_millis(900),
        "Retry-After date honoured: {dated:?}"
    );
    let attachment: Vec<_> = calls
        .iter()
        .filter(|(k, _)| k.starts_with("rest-attfail@client.test:attachment:"))
        .collect();
    assert_eq!(attachment.len(), 1);
    assert_eq!(
        attachment[0].1.len(),
        1,
        "a rejected attachment is not retried: a follow-up"
    );
    let log = sink_log(&env, "a");
    assert!(!log.contains(TOKEN), "the token is never logged");
    for address in sender_of.values() {
        assert!(
            !log.contains(address),
            "no addresses in the logs: {address}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erase_deletes_a_persons_contact_and_activities_in_the_rest_crm_and_nothing_else() {
    let env = TestEnv::new("crmresterase");
    let crm = FakeCrm::start(TOKEN).await.expect("stand-in");
    let (erin, frank) = ("erin.rest@erase.test", "frank.rest@keep.test");
    let t = now_ms() - 1_000;
    let leads = vec![
        with_attachment(
            reply_lead("rest-erase-1@client.test", erin, t),
            Some("cv.pdf"),
            &sha256_hex(b"cv"),
        ),
        reply_lead("rest-erase-2@client.test", erin, t + 1),
        with_attachment(
            reply_lead("rest-keep-1@client.test", frank, t),
            Some("q.pdf"),
            &sha256_hex(b"q"),
        ),
    ];
    let settings = [
        ("MAILSTREAM_CRM_SINK_BACKEND", "rest"),
        ("MAILSTREAM_CRM_SINK_BASE_URL", crm.base_url.as_str()),
        ("MAILSTREAM_CRM_SINK_TOKEN", TOKEN),
    ];
    let mut run = spawn_sink(&env, "a", free_port(), &settings);
    produce_leads(&env, &leads).await;
    let results = crm_results(&env, leads.len(), Duration::from_secs(90)).await;
    terminate(&mut run, Duration::from_secs(30));
    assert_eq!(results.len(), 3, "{results:?}");
    produce_parsed(&env, &leads).await;
    let before = crm.rows();
    assert_eq!(before.contacts.len(), 2, "{before:?}");
    assert_eq!(before.activities.len(), 3, "{before:?}");
    assert_eq!(before.attachments, 2, "{before:?}");

    let dry = erase(&env, erin, false, &settings);
    assert_eq!(dry["messages"], 2, "{dry}");
    let want = json!({"backend": "rest", "activities": 2, "contacts": 1});
    assert_eq!(dry["crm"], want, "{dry}");
    assert_eq!(crm.rows(), before, "a dry run deletes nothing");
    assert!(
        crm.erase_calls()
            .keys()
            .all(|call| call.starts_with("GET ")),
        "{:?}",
        crm.erase_calls()
    );

    let done = erase(&env, erin, true, &settings);
    assert_eq!(
        done["crm"], dry["crm"],
        "the dry run said what --execute did"
    );
    let after = crm.rows();
    let contacts: Vec<&str> = after.contacts.keys().map(String::as_str).collect();
    assert_eq!(contacts, [frank], "only Frank's contact stays");
    assert_eq!(after.contacts[frank], before.contacts[frank]);
    let activities: Vec<&str> = after.activities.keys().map(String::as_str).collect();
    assert_eq!(
        activities,
        ["rest-keep-1@client.test"],
        "only Frank's activity stays"
    );
    assert_eq!(
        after.attachments, 1,
        "her attachment went with her activity"
    );

    let again = erase(&env, erin, true, &settings);
    assert_eq!(
        again["crm"],
        json!({"backend": "rest", "activities": 0, "contacts": 0}),
        "already gone: {again}"
    );
    let calls = crm.erase_calls();
    assert_eq!(calls.get("DELETE activities 204"), Some(&2), "{calls:?}");
    assert_eq!(calls.get("DELETE contacts 204"), Some(&1), "{calls:?}");
    assert_eq!(calls.get("DELETE activities 404"), Some(&2), "{calls:?}");
    assert_eq!(calls.get("DELETE contacts 404"), Some(&1), "{calls:?}");
    assert_eq!(crm.rows(), after, "the second erase changed nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_old_unqualified_activities_from_the_rest_crm_once() {
    const DAY_MS: i64 = 86_400_000;
    let env = TestEnv::new("crmrestretain");
    let crm = FakeCrm::start(TOKEN).await.expect("stand-in");
    let old = now_ms() - 25 * DAY_MS;
    let lead = |id: &str, sender: &str, at: i64, status: &str| {
        let mut l = reply_lead(id, sender, at);
        l.status = status.into();
        l
    };
    let leads = vec![
        with_attachment(
            lead("rest-ret-1@client.test", "ann@old.test", old, "nurture"),
            Some("quote.pdf"),
            &sha256_hex(b"quote"),
        ),
        lead(
            "rest-ret-2@client.test",
            "bob@old.test",
            old + 1,
            "excluded",
        ),
        lead(
            "rest-ret-3@client.test",
            "cat@old.test",
            old + 2,
            "qualified",
        ),
        lead(
            "rest-ret-4@client.test",
            "ann@old.test",
            now_ms(),
            "nurture",
        ),
    ];
    let settings = [
        ("MAILSTREAM_CRM_SINK_BACKEND", "rest"),
        ("MAILSTREAM_CRM_SINK_BASE_URL", crm.base_url.as_str()),
        ("MAILSTREAM_CRM_SINK_TOKEN", TOKEN),
        ("MAILSTREAM_CRM_SINK_WRITE_EXCLUDED", "true"),
    ];
    let mut run = spawn_sink(&env, "a", free_port(), &settings);
    produce_leads(&env, &leads).await;
    let results = crm_results(&env, leads.len(), Duration::from_secs(90)).await;
    terminate(&mut run, Duration::from_secs(30));
    assert!(
        results.len() == 4 && results.iter().all(|r| r.outcome == "written"),
        "{results:?}"
    );
    let before = crm.rows();
    assert_eq!(before.activities.len(), 4, "{before:?}");
    assert_eq!(before.attachments, 1, "{before:?}");
    let blobs = mailstream_tests::mail::temp_dir("crm-rest-retain-blobs");
    let blob_url = format!("file://{}", blobs.display());

    let dry = retention(&env, 20, false, &settings, &blob_url);
    let want = json!({"messages": 2, "rows": {"backend": "rest", "activities": 2},
        "unreferenced_blobs": []});
    assert_eq!(dry["expired"], want, "{dry}");
    assert_eq!(dry["unknown_status"], 0, "{dry}");
    assert_eq!(crm.rows(), before, "a dry run deletes nothing");
    assert!(
        crm.erase_calls()
            .keys()
            .all(|call| call.starts_with("GET activities")),
        "{:?}",
        crm.erase_calls()
    );

    let done = retention(&env, 20, true, &settings, &blob_url);
    assert_eq!(
        done["expired"], dry["expired"],
        "the dry run said what --execute did"
    );
    let after = crm.rows();
    let activities: Vec<&str> = after.activities.keys().map(String::as_str).collect();
    assert_eq!(
        activities,
        ["rest-ret-3@client.test", "rest-ret-4@client.test"],
        "the old qualified and the recent lead stay"
    );
    assert_eq!(
        after.attachments, 0,
        "its attachment went with the activity"
    );
    assert_eq!(after.contacts, before.contacts, "contacts stay");
    assert_eq!(after.deals, before.deals);

    let again = retention(&env, 20, true, &settings, &blob_url);
    let none = json!({"messages": 0, "rows": {"backend": "rest", "activities": 0},
        "unreferenced_blobs": []});
    assert_eq!(again["expired"], none, "idempotent: {again}");
    let calls = crm.erase_calls();
    assert_eq!(calls.get("DELETE activities 204"), Some(&2), "{calls:?}");
    assert_eq!(calls.get("DELETE activities 404"), Some(&2), "{calls:?}");
    assert_eq!(crm.rows(), after, "the second run changed nothing");
    let _ = std::fs::remove_dir_all(&blobs);
}
