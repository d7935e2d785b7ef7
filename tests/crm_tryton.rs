//! The CRM sink's `tryton` backend against a real Tryton 8.2 server (started by `dev/up`; its
//! address, database and REST key in `MAILSTREAM_TRYTON_URL`, `MAILSTREAM_TRYTON_DATABASE`,
//! `MAILSTREAM_TRYTON_KEY`): scored leads produced to `scored`, the sink run, and what Tryton
//! holds read back through its REST API.
//!
//! One run: a new sender with a deal (a party with an email contact mechanism, an opportunity, a
//! note), a sender without a deal (a note on the party), an email on a deal without a sender (an
//! opportunity without a party), and a record Tryton refuses (a date beyond year 9999: 400),
//! dead-lettered with Tryton's reason. Then updates: a second email of the first sender on its
//! deal (the same party and opportunity, a second note) and a sender on the deal that had none
//! (the opportunity gets the party), and a reply written before its parent was known (a note
//! on its sender's party) followed by its relinked record (the parent's deal): the one note
//! moves to the deal's opportunity. Then the sink's offsets go back to the earliest and it runs
//! again: every result is `unchanged` and no Tryton record is created or modified (their
//! `write_date`s stay as they were; the reply's note is neither copied nor moved back).
//!
//! An outage: the sink reaches Tryton through a proxy the test cuts (connections dropped and
//! refused). The sink blocks (`crm_sink_blocked{cause="unavailable"}`), dead-letters nothing,
//! and writes the email once Tryton is reachable again.
//!
//! Erasure: two people's emails written to Tryton, then `mailstream erase` of one of them. Its
//! dry run changes no record (their `write_date`s stay) and reports what `--execute` then
//! deletes: her party with its contact mechanism, the notes of every email she took part in
//! (one from Frank she was in Cc of included), the opportunity only her emails are on; the
//! opportunity Frank's email is on too stays, without her as party or her subject. Frank's
//! party, mechanism and notes stay as they were; a second erase finds nothing. An opportunity
//! past the lead stage with her as party and Frank's email on it cannot lose her (Tryton changes
//! a lead's party only): the erase stops naming it, before anything in Tryton changes.
//!
//! Retention: old (100 days) and recent emails, nurture and qualified, written to Tryton, their
//! attachments in a real blob store. `mailstream retention run --older-than-days 30` finds the
//! old nurture notes by searching Tryton; its dry run changes no record and reports what
//! `--execute` then deletes: those notes, the lead-stage opportunity only they are on, the blob
//! only they pointed to. The opportunity a recent qualified email is on, the qualified and
//! recent notes, the parties and the shared blob stay; a second run finds nothing.

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE;
use mailstream_runtime::blob::BlobStore;
use mailstream_runtime::records::{Address, ContactDetails, CrmResult, ScoredLead};
use mailstream_tests::crm::{
    Cut, crm_results, erase, erase_output, produce_leads, produce_leads_in_order, produce_parsed,
    relinked, retention, scored_lead, spawn_sink, with_attachment,
};
use mailstream_tests::pipeline::metric;
use mailstream_tests::{Seen, TestEnv, collect, free_port, http_get, now_ms, terminate};
use serde_json::{Value, json};

/// Held by each test while its sink writes to Tryton. The dev server keeps its database in
/// SQLite, where concurrent transactions can read the same sequence number (two parties created
/// at once by two sinks get the same code and Tryton refuses the second: "The code on party
/// must be unique"); one sink at a time is what SQLite supports. (A sink is one writer; Tryton
/// on PostgreSQL takes sequence numbers atomically.)
static ONE_SINK_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The running Tryton's REST API, from the env file `dev/up` writes.
struct Tryton {
    url: String,
    database: String,
    key: String,
    http: reqwest::Client,
}

impl Tryton {
    fn get() -> Self {
        let var = |name: &str| {
            std::env::var(name).unwrap_or_else(|_| {
                panic!("{name} is not set: run dev/up and source ~/.local/state/mailstream/env")
            })
        };
        Self {
            url: var("MAILSTREAM_TRYTON_URL"),
            database: var("MAILSTREAM_TRYTON_DATABASE"),
            key: var("MAILSTREAM_TRYTON_KEY"),
            http: reqwest::Client::new(),
        }
    }

    /// The records of `model` matching `domain`, with `fields`, in id order.
    async fn search(&self, model: &str, domain: Value, fields: &[&str]) -> Vec<Value> {
        let mut url = format!(
            "{}/{}/rest/model/{model}?d={}",
            self.url,
            self.database,
            URL_SAFE.encode(domain.to_string())
        );
        for field in fields {
            url.push_str(&format!("&f={field}"));
        }
        let response = self
            .http
            .get(&url)
            .bearer_auth(&self.key)
            .send()
            .await
            .expect("Tryton answers");
        assert!(response.status().is_success(), "{url}: {response:?}");
        let mut records: Vec<Value> = response.json().await.expect("a JSON list");
        records.sort_by_key(|r| r["id"].as_i64());
        records
    }

    /// `method` on `<model path>` (`sale.opportunity/5`, `sale.opportunity/5/opportunity`) with
    /// `body`; asserts a success.
    async fn call(&self, method: reqwest::Method, path: &str, body: Value) {
        let url = format!("{}/{}/rest/model/{path}", self.url, self.database);
        let response = self
            .http
            .request(method, &url)
            .bearer_auth(&self.key)
            .json(&body)
            .send()
            .await
            .expect("Tryton answers");
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        assert!(status.is_success(), "{url}: {status} {text}");
    }

    /// Everything the test's records made (ids, values, `write_date`s): what a replay must
    /// leave as it was.
    async fn snapshot(&self, tag: &str) -> Vec<Vec<Value>> {
        let like = format!("%{tag}%");
        let stamps = ["write_date", "create_date"];
        let mut out = vec![
            self.search(
                "party.contact_mechanism",
                json!([["value", "ilike", like]]),
                &["value", "party", stamps[0], stamps[1]],
            )
            .await,
            self.search(
                "sale.opportunity",
                json!([["reference", "ilike", like]]),
                &[
                    "reference",
                    "party",
                    "description",
                    "state",
                    stamps[0],
                    stamps[1],
                ],
            )
            .await,
        ];
        let parties: Vec<i64> = out[0].iter().filter_map(|m| m["party"].as_i64()).collect();
        out.push(
            self.search(
                "party.party",
                json!([["id", "in", parties]]),
                &["name", stamps[0], stamps[1]],
            )
            .await,
        );
        out.push(
            self.search(
                "ir.note",
                json!([["message", "ilike", like]]),
                &["resource", "message", stamps[0], stamps[1]],
            )
            .await,
        );
        out
    }
}

fn by_id<'a>(results: &'a [CrmResult], message_id: &str) -> Vec<&'a CrmResult> {
    results
        .iter()
        .filter(|r| r.message_id == message_id)
        .collect()
}

async fn dead_letters(env: &TestEnv, want: usize) -> Vec<Seen> {
    collect(
        &env.consumer(&["scored.dlq"]),
        want,
        Duration::from_secs(90),
        Duration::from_secs(2),
    )
    .await
}

/// The sink's settings for the Tryton at `url`.
fn sink_settings<'a>(tryton: &'a Tryton, url: &'a str) -> [(&'static str, &'a str); 4] {
    [
        ("MAILSTREAM_CRM_SINK_BACKEND", "tryton"),
        ("MAILSTREAM_CRM_SINK_BASE_URL", url),
        (
            "MAILSTREAM_CRM_SINK_TRYTON_DATABASE",
            tryton.database.as_str(),
        ),
        ("MAILSTREAM_CRM_SINK_TOKEN", tryton.key.as_str()),
    ]
}

/// A lead on `deal` without a sender: no party, the opportunity made without one.
/// A reply from `sender` (at `acct-2`) to a message the resolver did not know yet.
fn reply_to_unknown(message_id: &str, sender: &str, t: i64) -> ScoredLead {
    let mut l = scored_lead(message_id, sender, "acct-2", None, t);
    l.resolved.email.in_reply_to = Some(format!("unknown-{message_id}"));
    l
}

fn anonymous(message_id: &str, deal: &str, t: i64) -> ScoredLead {
    let mut l = scored_lead(message_id, "nobody@client.test", "acct-4", Some(deal), t);
    l.sender_email = None;
    l.resolved.sender_email = None;
    l.resolved.new_contact = None;
    l
}

#[tokio::test(flavor = "multi_thread")]
async fn tryton_gets_each_party_opportunity_and_email_once_and_refusals_are_dead_lettered() {
    let _alone = ONE_SINK_AT_A_TIME.lock().await;
    let tryton = Tryton::get();
    let env = TestEnv::new("crmtryton");
    // The Tryton database outlives the test: everything it makes carries this run's tag.
    let tag = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let sender = |name: &str| format!("{name}-{tag}@client.test");
    let (deal, deal2) = (format!("deal-{tag}"), format!("deal2-{tag}"));
    let id = |n: u32| format!("m{n}-{tag}@c");
    let t = now_ms();
    let mut second = scored_lead(&id(2), &sender("sam"), "acct-1", Some(&deal), t + 1);
    second.resolved.email.text = Some("Following up: can we sign this week?".into());
    // kim's signature gave a phone and a website: her new party gets both.
    let mut kim = scored_lead(&id(3), &sender("kim"), "acct-2", None, t);
    kim.resolved.email.contact_details = Some(ContactDetails {
        source: ContactDetails::SIGNATURE.into(),
        phones: vec!["+442079460958".into()],
        website: Some(format!("https://kim-{tag}.example")),
        ..ContactDetails::default()
    });
    let records = [
        scored_lead(&id(1), &sender("sam"), "acct-1", Some(&deal), t),
        kim,
        anonymous(&id(0), &deal2, t),
        // Year 33658: Tryton cannot decode the opportunity's start date and answers 400.
        scored_lead(
            &id(4),
            &sender("bad"),
            "acct-3",
            Some(&format!("deal-bad-{tag}")),
            1_000_000_000_000_000,
        ),
        // Later: the same sender on the same deal, and a sender on the deal that had none.
        second,
        scored_lead(&id(5), &sender("lee"), "acct-4", Some(&deal2), t + 1),
        // kim's reply to m1 written before m1 was known (a note on kim's party), then its
        // relinked record, on m1's deal: the note moves to the opportunity.
        reply_to_unknown(&id(6), &sender("kim"), t + 2),
        relinked(
            reply_to_unknown(&id(6), &sender("kim"), t + 2),
            &id(1),
            Some(&deal),
        ),
    ];
    let settings = sink_settings(&tryton, &tryton.url);
    let mut run = spawn_sink(&env, "a", free_port(), &settings);
    produce_leads(&env, &records[..4]).await;
    let first = crm_results(&env, 3, Duration::from_secs(90)).await;
    let dlq = dead_letters(&env, 1).await;
    produce_leads(&env, &records[4..]).await;
    let results = crm_results(&env, 7, Duration::from_secs(90)).await;
    terminate(&mut run, Duration::from_secs(30));

    assert_eq!((first.len(), results.len()), (3, 7), "{results:?}");
    assert!(
        results
            .iter()
            .all(|r| r.backend == "tryton" && r.outcome == "written"),
        "{results:?}"
    );
    let result = |n: u32| by_id(&results, &id(n))[0];
    let (m0, m1, m2, m3, m5) = (result(0), result(1), result(2), result(3), result(5));
    assert!(m1.contact_created && !m2.contact_created, "{m1:?} {m2:?}");
    assert_eq!(m1.contact_id, m2.contact_id, "one party for one sender");
    assert_eq!(m1.deal_id, m2.deal_id, "one opportunity for one deal");
    assert_ne!(m1.activity_id, m2.activity_id, "a note per email");
    assert!(m3.contact_created && m3.deal_id.is_none(), "{m3:?}");
    assert!(
        m0.contact_id.is_none() && m0.activity_id.is_some(),
        "{m0:?}"
    );
    assert!(m5.contact_created && m5.deal_id == m0.deal_id, "{m5:?}");
    let m6 = by_id(&results, &id(6));
    assert_eq!(m6.len(), 2);
    assert_eq!(m6[0].activity_id, m6[1].activity_id, "one note, moved");
    assert_eq!((&m6[0].deal_id, &m6[1].deal_id), (&None, &m1.deal_id));

    let dead: Vec<&str> = dlq.iter().filter_map(|r| r.key.as_deref()).collect();
    assert_eq!(dead, [id(4).as_str()]);
    assert_eq!(dlq[0].headers["mailstream.error.class"], "crm-rejected");
    let reason = &dlq[0].headers["mailstream.error.message"];
    assert!(
        reason.contains("opportunity-create answered 400: Unable to read JSON request"),
        "{reason}"
    );

    // What Tryton holds, read through its REST API.
    let before = tryton.snapshot(&tag).await;
    let [mechanisms, opportunities, parties, notes] = &before[..] else {
        panic!("four lists: {before:?}");
    };
    let mut values: Vec<&str> = mechanisms
        .iter()
        .filter_map(|m| m["value"].as_str())
        .collect();
    values.sort();
    assert_eq!(
        values,
        [
            sender("bad"),
            format!("https://kim-{tag}.example"),
            sender("kim"),
            sender("lee"),
            sender("sam")
        ]
    );
    let kim_party: i64 = m3
        .contact_id
        .as_deref()
        .and_then(|p| p.parse().ok())
        .expect("kim's party");
    let phones = tryton
        .search(
            "party.contact_mechanism",
            json!([["party", "=", kim_party], ["type", "=", "phone"]]),
            &["value"],
        )
        .await;
    let digits: Vec<String> = phones
        .iter()
        .filter_map(|m| m["value"].as_str())
        .map(|v| v.chars().filter(char::is_ascii_digit).collect())
        .collect();
    assert_eq!(digits, ["442079460958"], "{phones:?}");
    assert_eq!(parties.len(), 4, "one party per sender: {parties:?}");
    assert!(
        parties.iter().all(|p| p["name"] == "Sam Sender"),
        "{parties:?}"
    );
    let opportunity = |reference: &str| {
        let found: Vec<&Value> = opportunities
            .iter()
            .filter(|o| o["reference"] == reference)
            .collect();
        assert_eq!(found.len(), 1, "{opportunities:?}");
        assert_eq!(found[0]["state"], "lead");
        (
            Some(found[0]["id"].to_string()),
            Some(found[0]["party"].to_string()),
        )
    };
    assert_eq!(
        opportunity(&deal),
        (m1.deal_id.clone(), m1.contact_id.clone())
    );
    assert_eq!(
        opportunity(&deal2),
        (m0.deal_id.clone(), m5.contact_id.clone()),
        "the opportunity made without a party got the first sender on it"
    );
    let on =
        |model: &str, id: &Option<String>| format!("{model},{}", id.clone().unwrap_or_default());
    let mut resources: Vec<String> = notes
        .iter()
        .filter_map(|n| n["resource"].as_str())
        .map(str::to_string)
        .collect();
    resources.sort();
    let mut want = vec![
        on("sale.opportunity", &m1.deal_id),
        on("sale.opportunity", &m1.deal_id),
        on("sale.opportunity", &m1.deal_id),
        on("party.party", &m3.contact_id),
        on("sale.opportunity", &m0.deal_id),
        on("sale.opportunity", &m0.deal_id),
    ];
    want.sort();
    assert_eq!(resources, want, "a note per email");
    let second_note = notes
        .iter()
        .filter_map(|n| n["message"].as_str())
        .find(|m| m.starts_with(&format!("mailstream email {}\n", id(2))))
        .unwrap_or_default();
    assert!(
        second_note.contains("\nSubject: Pricing question ")
            && second_note.ends_with("\n\nFollowing up: can we sign this week?"),
        "{notes:?}"
    );

    // A replay of every record changes nothing in Tryton.
    env.reset_to_earliest("crm-sink");
    let mut run = spawn_sink(&env, "b", free_port(), &settings);
    let results = crm_results(&env, 14, Duration::from_secs(90)).await;
    let dlq = dead_letters(&env, 2).await;
    terminate(&mut run, Duration::from_secs(30));
    // Both runs' results (crm-results is read from the start), in no particular order.
    assert_eq!(results.len(), 14, "{results:?}");
    for n in [0, 1, 2, 3, 5] {
        let mut outcomes: Vec<&str> = by_id(&results, &id(n))
            .iter()
            .map(|r| r.outcome.as_str())
            .collect();
        outcomes.sort();
        assert_eq!(outcomes, ["unchanged", "written"], "{results:?}");
    }
    let mut outcomes: Vec<&str> = by_id(&results, &id(6))
        .iter()
        .map(|r| r.outcome.as_str())
        .collect();
    outcomes.sort();
    assert_eq!(outcomes, ["unchanged", "unchanged", "written", "written"]);
    assert!(
        results
            .iter()
            .all(|r| r.outcome == "written" || !r.contact_created),
        "{results:?}"
    );
    assert_eq!(dlq.len(), 2, "the refused record is refused again");
    assert_eq!(tryton.snapshot(&tag).await, before);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tryton_outage_blocks_the_sink_and_dead_letters_nothing() {
    let _alone = ONE_SINK_AT_A_TIME.lock().await;
    let tryton = Tryton::get();
    let env = TestEnv::new("crmtrytonout");
    let tag = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let cut = Cut::start(tryton.url.trim_start_matches("http://").to_string())
        .await
        .expect("proxy");
    let url = format!("http://{}", cut.addr);
    let port = free_port();
    let mut run = spawn_sink(&env, "a", port, &sink_settings(&tryton, &url));
    let t = now_ms();
    let lead = |n: u32| {
        scored_lead(
            &format!("o{n}-{tag}@c"),
            &format!("o{n}-{tag}@client.test"),
            "acct-1",
            None,
            t,
        )
    };
    produce_leads(&env, &[lead(1)]).await;
    assert_eq!(crm_results(&env, 1, Duration::from_secs(60)).await.len(), 1);

    cut.cut();
    produce_leads(&env, &[lead(2)]).await;
    let started = Instant::now();
    let blocked = loop {
        let (_, body) = http_get(&format!("http://127.0.0.1:{port}/metrics")).await;
        let blocked = metric(
            &body,
            "mailstream_crm_sink_blocked",
            &[("cause", "unavailable")],
        );
        if blocked == 1.0 || started.elapsed() > Duration::from_secs(30) {
            break blocked;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(blocked, 1.0, "blocked while Tryton is unreachable");
    assert_eq!(crm_results(&env, 2, Duration::from_secs(3)).await.len(), 1);

    cut.restore();
    let results = crm_results(&env, 2, Duration::from_secs(90)).await;
    let dlq = collect(
        &env.consumer(&["scored.dlq"]),
        1,
        Duration::from_secs(5),
        Duration::ZERO,
    )
    .await;
    terminate(&mut run, Duration::from_secs(30));
    assert_eq!(results.len(), 2, "{results:?}");
    assert!(
        results.iter().all(|r| r.outcome == "written"),
        "{results:?}"
    );
    assert!(
        dlq.is_empty(),
        "an outage is never the record's fault: {dlq:?}"
    );
    let parties = tryton
        .search(
            "party.contact_mechanism",
            json!([["value", "ilike", format!("o2-{tag}%")]]),
            &["party"],
        )
        .await;
    assert_eq!(parties.len(), 1, "written once: {parties:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn erase_deletes_a_persons_party_notes_and_own_opportunities_in_tryton() {
    let _alone = ONE_SINK_AT_A_TIME.lock().await;
    let tryton = Tryton::get();
    let env = TestEnv::new("crmtrytonerase");
    let tag = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let (erin, frank) = (
        format!("erin-{tag}@client.test"),
        format!("frank-{tag}@client.test"),
    );
    let (own_deal, shared_deal) = (format!("deal-e-{tag}"), format!("deal-s-{tag}"));
    let id = |n: &str| format!("{n}-{tag}@c");
    let t = now_ms();
    let mut cc_erin = scored_lead(&id("f3"), &frank, "acct-2", None, t + 5);
    cc_erin.resolved.email.cc = vec![Address {
        email: erin.clone(),
        name: None,
    }];
    // In this order (one partition): Erin's email makes the shared deal's opportunity with her
    // as its party; Frank's on the same deal finds it.
    let leads = [
        scored_lead(&id("e1"), &erin, "acct-1", Some(&own_deal), t),
        scored_lead(&id("e2"), &erin, "acct-1", None, t + 1),
        scored_lead(&id("e3"), &erin, "acct-1", Some(&shared_deal), t + 2),
        scored_lead(&id("f1"), &frank, "acct-2", Some(&shared_deal), t + 3),
        scored_lead(&id("f2"), &frank, "acct-2", None, t + 4),
        cc_erin,
    ];
    let settings = sink_settings(&tryton, &tryton.url);
    let mut run = spawn_sink(&env, "a", free_port(), &settings);
    produce_leads_in_order(&env, &leads).await;
    let results = crm_results(&env, leads.len(), Duration::from_secs(90)).await;
    terminate(&mut run, Duration::from_secs(30));
    assert!(
        results.len() == leads.len() && results.iter().all(|r| r.outcome == "written"),
        "{results:?}"
    );
    produce_parsed(&env, &leads).await;
    let result = |n: &str| by_id(&results, &id(n))[0].clone();
    let (e1, e3, f1) = (result("e1"), result("e3"), result("f1"));
    assert_eq!(
        e3.deal_id, f1.deal_id,
        "one opportunity for the shared deal"
    );

    let before = tryton.snapshot(&tag).await;
    let dry = erase(&env, &erin, false, &settings);
    assert_eq!(
        dry["messages"], 4,
        "hers and the one she was in Cc of: {dry}"
    );
    let want = json!({"backend": "tryton", "notes": 4, "opportunities": 1, "parties": 1,
        "contact_mechanisms": 1, "detached": {"opportunities": 1}});
    assert_eq!(dry["crm"], want, "{dry}");
    assert_eq!(
        tryton.snapshot(&tag).await,
        before,
        "a dry run changes nothing"
    );

    let done = erase(&env, &erin, true, &settings);
    assert_eq!(
        done["crm"], dry["crm"],
        "the dry run said what --execute did"
    );
    let after = tryton.snapshot(&tag).await;
    let [mechanisms, opportunities, parties, notes] = &after[..] else {
        panic!("four lists: {after:?}");
    };
    let values: Vec<&str> = mechanisms
        .iter()
        .filter_map(|m| m["value"].as_str())
        .collect();
    assert_eq!(
        values,
        [frank.as_str()],
        "only Frank's contact mechanism stays"
    );
    let erins_party = e1.contact_id.clone().unwrap_or_default();
    let party = tryton
        .search(
            "party.party",
            json!([["id", "=", erins_party.parse::<i64>().unwrap_or(-1)]]),
            &["id"],
        )
        .await;
    assert!(party.is_empty(), "her party is gone: {party:?}");
    assert_eq!(
        parties,
        &before[2][1..].to_vec(),
        "Frank's party as it was: {before:?}"
    );
    assert_eq!(
        opportunities.len(),
        1,
        "the shared deal's only: {opportunities:?}"
    );
    let shared = &opportunities[0];
    assert_eq!(Some(shared["id"].to_string()), f1.deal_id);
    assert_eq!(shared["reference"], shared_deal.as_str());
    assert!(
        shared["party"].is_null() && shared["description"].is_null(),
        "without her as party or her subject: {shared}"
    );
    let mut kept: Vec<&str> = notes
        .iter()
        .filter_map(|n| n["message"].as_str()?.lines().next())
        .collect();
    kept.sort();
    let want = [
        format!("mailstream email {}", id("f1")),
        format!("mailstream email {}", id("f2")),
    ];
    assert_eq!(kept, want, "Frank's own notes stay");
    assert!(
        notes
            .iter()
            .all(|n| !n["message"].as_str().unwrap_or_default().contains(&erin)),
        "no note names her: {notes:?}"
    );

    let again = erase(&env, &erin, true, &settings);
    let none = json!({"backend": "tryton", "notes": 0, "opportunities": 0, "parties": 0,
        "contact_mechanisms": 0});
    assert_eq!(again["crm"], none, "nothing of hers is left: {again}");
    assert_eq!(
        tryton.snapshot(&tag).await,
        after,
        "the second erase changed nothing"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn erase_stops_before_changing_tryton_when_a_shared_opportunity_is_past_the_lead_stage() {
    let _alone = ONE_SINK_AT_A_TIME.lock().await;
    let tryton = Tryton::get();
    let env = TestEnv::new("crmtrytonerasestop");
    let tag = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let (erin, frank) = (
        format!("erin-{tag}@client.test"),
        format!("frank-{tag}@client.test"),
    );
    let deal = format!("deal-w-{tag}");
    let t = now_ms();
    let leads = [
        scored_lead(&format!("e1-{tag}@c"), &erin, "acct-1", Some(&deal), t),
        scored_lead(&format!("f1-{tag}@c"), &frank, "acct-2", Some(&deal), t + 1),
    ];
    let settings = sink_settings(&tryton, &tryton.url);
    let mut run = spawn_sink(&env, "a", free_port(), &settings);
    produce_leads_in_order(&env, &leads).await;
    let results = crm_results(&env, leads.len(), Duration::from_secs(90)).await;
    terminate(&mut run, Duration::from_secs(30));
    assert_eq!(results.len(), 2, "{results:?}");
    produce_parsed(&env, &leads).await;
    // Someone works the deal: an employee on it, and on to the opportunity stage.
    let opportunity = by_id(&results, &leads[0].message_id)[0]
        .deal_id
        .clone()
        .unwrap_or_default();
    let employees = tryton.search("company.employee", json!([]), &["id"]).await;
    let employee = employees
        .first()
        .map(|e| e["id"].clone())
        .expect("an employee");
    let path = format!("sale.opportunity/{opportunity}");
    let put = reqwest::Method::PUT;
    tryton.call(put, &path, json!({"employee": employee})).await;
    let stage = format!("{path}/opportunity");
    tryton.call(reqwest::Method::POST, &stage, json!({})).await;

    let before = tryton.snapshot(&tag).await;
    assert_eq!(before[1][0]["state"], "opportunity", "{before:?}");
    for execute in [false, true] {
        let out = erase_output(&env, &erin, execute, &settings);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "the erase must stop: {stderr}");
        assert!(
            stderr.contains(&format!("opportunity {opportunity} (opportunity)"))
                && stderr.contains("Party › Erase"),
            "it names the opportunity and the way out: {stderr}"
        );
        assert_eq!(
            tryton.snapshot(&tag).await,
            before,
            "nothing in Tryton changed (execute: {execute})"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_deletes_old_unqualified_notes_and_their_own_lead_opportunities_in_tryton() {
    const DAY_MS: i64 = 86_400_000;
    let _alone = ONE_SINK_AT_A_TIME.lock().await;
    let tryton = Tryton::get();
    let env = TestEnv::new("crmtrytonretain");
    let tag = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let settings = sink_settings(&tryton, &tryton.url);
    let dir = mailstream_tests::mail::temp_dir("tryton-retain-blobs");
    let blob_url = format!("file://{}", dir.display());
    let blobs = BlobStore::open(&blob_url, &[]).expect("blob store");
    let (own_uri, own_sha) = blobs.put(b"old quote".to_vec()).await.expect("put");
    let (shared_uri, shared_sha) = blobs.put(b"brochure".to_vec()).await.expect("put");
    // The Tryton server outlives test runs: what an earlier run left old and unqualified
    // would be counted too, so it goes first.
    retention(&env, 30, true, &settings, &blob_url);

    let (ann, bob) = (
        format!("ann-{tag}@client.test"),
        format!("bob-{tag}@client.test"),
    );
    let (own_deal, shared_deal) = (format!("deal-o-{tag}"), format!("deal-s-{tag}"));
    let id = |n: &str| format!("{n}-{tag}@c");
    let (old, now) = (now_ms() - 100 * DAY_MS, now_ms());
    let lead = |n: &str, sender: &str, deal: Option<&str>, at: i64, status: &str| {
        let mut l = scored_lead(&id(n), sender, "acct-1", deal, at);
        l.status = status.into();
        l
    };
    let attach = |l: ScoredLead, sha: &str, uri: &str| {
        let mut l = with_attachment(l, Some("file.pdf"), sha);
        if let Some(a) = l.resolved.email.attachments.last_mut() {
            a.blob_uri = Some(uri.to_string());
        }
        l
    };
    let leads = [
        attach(
            lead("o1", &ann, Some(&own_deal), old, "nurture"),
            &own_sha,
            &own_uri,
        ),
        lead("o2", &ann, None, old + 1, "nurture"),
        attach(
            lead("o3", &bob, Some(&shared_deal), old + 2, "nurture"),
            &shared_sha,
            &shared_uri,
        ),
        attach(
            lead("q1", &bob, Some(&shared_deal), now, "qualified"),
            &shared_sha,
            &shared_uri,
        ),
        lead("q2", &ann, None, old + 3, "qualified"),
        lead("r1", &ann, None, now + 1, "nurture"),
    ];
    let mut run = spawn_sink(&env, "a", free_port(), &settings);
    produce_leads_in_order(&env, &leads).await;
    let results = crm_results(&env, leads.len(), Duration::from_secs(90)).await;
    terminate(&mut run, Duration::from_secs(30));
    assert!(
        results.len() == leads.len() && results.iter().all(|r| r.outcome == "written"),
        "{results:?}"
    );
    let before = tryton.snapshot(&tag).await;
    assert_eq!(before[1].len(), 2, "two opportunities: {before:?}");

    let dry = retention(&env, 30, false, &settings, &blob_url);
    let want = json!({"messages": 3, "rows": {"backend": "tryton", "notes": 3, "opportunities": 1},
        "unreferenced_blobs": [own_uri]});
    assert_eq!(dry["expired"], want, "{dry}");
    assert_eq!(dry["blobs_deleted"], 1, "{dry}");
    assert_eq!(
        tryton.snapshot(&tag).await,
        before,
        "a dry run changes nothing"
    );
    assert!(blobs.get(&own_uri, None).await.is_ok());

    let done = retention(&env, 30, true, &settings, &blob_url);
    assert_eq!(
        done["expired"], dry["expired"],
        "the dry run said what --execute did"
    );
    assert_eq!(done["blobs_deleted"], 1, "{done}");
    let after = tryton.snapshot(&tag).await;
    let [mechanisms, opportunities, parties, notes] = &after[..] else {
        panic!("four lists: {after:?}");
    };
    assert_eq!(mechanisms, &before[0], "contacts stay");
    assert_eq!(parties, &before[2], "parties stay");
    let references: Vec<&str> = opportunities
        .iter()
        .filter_map(|o| o["reference"].as_str())
        .collect();
    assert_eq!(
        references,
        [shared_deal.as_str()],
        "the opportunity a kept email is on stays"
    );
    let mut kept: Vec<&str> = notes
        .iter()
        .filter_map(|n| n["message"].as_str()?.lines().next())
        .collect();
    kept.sort();
    let want: Vec<String> = ["q1", "q2", "r1"]
        .iter()
        .map(|n| format!("mailstream email {}", id(n)))
        .collect();
    assert_eq!(kept, want, "the qualified and the recent notes stay");
    assert!(
        blobs.get(&own_uri, None).await.is_err(),
        "its own blob is gone"
    );
    assert!(
        blobs.get(&shared_uri, None).await.is_ok(),
        "the blob a kept email points to stays"
    );

    let again = retention(&env, 30, true, &settings, &blob_url);
    let none = json!({"messages": 0, "rows": {"backend": "tryton", "notes": 0, "opportunities": 0},
        "unreferenced_blobs": []});
    assert_eq!(again["expired"], none, "idempotent: {again}");
    assert_eq!(
        tryton.snapshot(&tag).await,
        after,
        "the second run changed nothing"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
