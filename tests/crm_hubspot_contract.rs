//! The CRM sink's `hubspot` backend against HubSpot's published contract, not shapes written
//! here: `dev/hubspot-contract/run` serves a HubSpot stand-in that reads every request body with
//! the model classes of HubSpot's official Python client (`hubspot-api-client`, generated from
//! HubSpot's OpenAPI specs) with client-side validation on, walks the models' type maps (unknown
//! keys and wrong JSON types refused), checks properties against the portal's (enumeration
//! options, timestamps, the 65,536-character limit) and associations against HubSpot's type ids
//! and objects. A request HubSpot would refuse is answered 400 and recorded as a violation.
//!
//! - Contacts upserted by email, companies by domain, email engagements (`hs_timestamp`, the
//!   reply-stripped text) associated to the contact (198), the company (186) and a deal of the
//!   portal (210); a second email from
//!   the same sender updates the contact; a replay meets the unique message-id property and
//!   changes nothing; a body over HubSpot's value limit and a deal id HubSpot cannot hold are
//!   still written; a reply's relinked record (its parent came later) associates the reply's
//!   one email with the parent's deal (a v4 default association).
//! - 429 with the `TEN_SECONDLY_ROLLING` policy body (no `Retry-After`) is retried, never
//!   dead-lettered; 409 to a batch upsert (HubSpot's answer to duplicate inputs in one batch)
//!   is the record's fault: dead-lettered as `crm-rejected`, not retried.
//! - No request of the backend violates HubSpot's contract.
//! - Erasure: `mailstream erase` archives the email engagements of one person's messages (one
//!   from another sender she was in Cc of included), found by the message-id property, and
//!   GDPR-deletes her contact by email (`PublicGdprDeleteInput`); its dry run looks up only and
//!   reports the same counts; the other person's contact and email stay; no address is
//!   blocklisted (a GDPR delete of an address HubSpot does not know would block it).
//! - Retention: `mailstream retention run` finds the old unqualified messages in `crm-results`
//!   joined with `scored` and archives their email engagements (found by the message-id
//!   property) and the blob only they pointed to; its dry run looks up only and reports what
//!   `--execute` then does; contacts, the old qualified and the recent email and the shared
//!   blob stay; a second run finds nothing.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mailstream_runtime::blob::BlobStore;
use mailstream_runtime::records::{Address, ContactMatch, CrmResult, ScoredLead};
use mailstream_tests::crm::{
    crm_results, erase, produce_leads, produce_parsed, relinked, reply_lead, retention,
    scored_lead, spawn_sink, with_attachment,
};
use mailstream_tests::{TestEnv, collect, free_port, http_get, log_dir, now_ms, terminate};
use serde_json::{Value, json};

const TOKEN: &str = "pat-na1-contract-test";
const PROPERTY: &str = "mailstream_message_id";

/// The stand-in, a child process on a free port; killed when dropped.
struct HubspotContract {
    base_url: String,
    child: Child,
}

impl HubspotContract {
    /// Starts `dev/hubspot-contract/run` (its first run creates the venv: up to a few minutes).
    async fn start() -> Self {
        let port = free_port();
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let log = std::fs::File::create(log_dir().join(format!("hubspot-contract-{port}.log")))
            .expect("stand-in log");
        let child = Command::new(root.join("dev/hubspot-contract/run"))
            .arg(port.to_string())
            .args(["--token", TOKEN])
            .args(["--unique-property", &format!("emails:{PROPERTY}")])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start dev/hubspot-contract/run");
        let stand_in = Self {
            base_url: format!("http://127.0.0.1:{port}"),
            child,
        };
        let started = Instant::now();
        while http_get(&format!("{}/_contract/state", stand_in.base_url))
            .await
            .0
            != 200
        {
            assert!(
                started.elapsed() < Duration::from_secs(300),
                "the HubSpot stand-in did not start (see its log in test-logs)"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        stand_in
    }

    async fn state(&self) -> Value {
        let (status, body) = http_get(&format!("{}/_contract/state", self.base_url)).await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).expect("state JSON")
    }

    async fn control(&self, what: &str, body: Value) {
        let response = reqwest::Client::new()
            .post(format!("{}/_contract/{what}", self.base_url))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .expect("control call");
        assert_eq!(response.status().as_u16(), 200, "{what}");
    }
}

impl Drop for HubspotContract {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Objects of `kind` in the stand-in, by the value of `property`.
fn objects<'a>(state: &'a Value, kind: &str, property: &str) -> Vec<(&'a str, &'a Value)> {
    state["objects"][kind]
        .as_array()
        .expect("objects")
        .iter()
        .map(|o| (o["properties"][property].as_str().unwrap_or_default(), o))
        .collect()
}

fn associated(state: &Value, email_id: &str, to_type: &str, to_id: &str, type_id: u64) -> bool {
    state["associations"]
        .as_array()
        .expect("associations")
        .iter()
        .any(|a| {
            a["from_type"] == "emails"
                && a["from_id"] == email_id
                && a["to_type"] == to_type
                && a["to_id"] == to_id
                && a["type_id"] == type_id
        })
}

fn known(mut l: ScoredLead, contact_id: &str) -> ScoredLead {
    l.contact_id = Some(contact_id.into());
    l.resolved.new_contact = None;
    l.resolved.contact = Some(ContactMatch {
        contact_id: contact_id.into(),
        name: Some("Kim Known".into()),
        account_id: Some("acct-2".into()),
    });
    l
}

fn by_id(results: &[CrmResult], message_id: &str) -> Vec<CrmResult> {
    results
        .iter()
        .filter(|r| r.message_id == message_id)
        .cloned()
        .collect()
}

/// The stand-in itself, checked with HubSpot's own client: its API classes' calls (contacts and
/// companies upserted, an email created and read back, v4 associations) succeed and their
/// answers deserialize, an email archived and a contact GDPR-deleted included; sixteen kinds of
/// request HubSpot refuses are refused and recorded.
#[test]
fn the_stand_in_answers_hubspots_own_client() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new(root.join("dev/hubspot-contract/run"))
        .arg("--selftest")
        .output()
        .expect("run the stand-in's self-test");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hubspot_backend_requests_meet_hubspots_published_contract() {
    let env = TestEnv::new("crmhsc");
    let hs = HubspotContract::start().await;
    hs.control(
        "seed",
        json!({"deals": [{"id": "901", "properties": {"dealname": "Acme renewal"}}]}),
    )
    .await;
    // HubSpot's rolling ten-second limit, hit for 2 s from the first call on.
    hs.control("faults", json!({"rate_limit_ms": 2000})).await;
    let t = now_ms() - 60_000;
    // Quoted history in its text: the engagement gets the reply-stripped text.
    let mut first = reply_lead("hsc-1@client.test", "sam@client.test", t);
    first.deal_id = Some("901".into());
    let again = scored_lead(
        "hsc-2@client.test",
        "sam@client.test",
        "acct-1",
        None,
        t + 1,
    );
    let kim = scored_lead(
        "hsc-3@partner.test",
        "kim@partner.test",
        "acct-2",
        None,
        t + 2,
    );
    let kim = known(kim, "ct-kim");
    let mut long = scored_lead(
        "hsc-4@client.test",
        "lee@client.test",
        "acct-1",
        None,
        t + 3,
    );
    long.resolved.email.text = Some("pricing ".repeat(10_000));
    let odd_deal = scored_lead(
        "hsc-5@client.test",
        "ola@client.test",
        "acct-1",
        Some("Q3_acme"),
        t + 4,
    );
    // hsc-2 again, once the resolver met its parent hsc-1: now on hsc-1's deal.
    let again_linked = relinked(again.clone(), "hsc-1@client.test", Some("901"));
    let leads = vec![
        first.clone(),
        again,
        kim,
        long,
        odd_deal,
        again_linked,
        first,
    ];
    let port = free_port();
    let mut run = spawn_sink(
        &env,
        "a",
        port,
        &[
            ("MAILSTREAM_CRM_SINK_BACKEND", "hubspot"),
            ("MAILSTREAM_CRM_SINK_BASE_URL", hs.base_url.as_str()),
            ("MAILSTREAM_CRM_SINK_TOKEN", TOKEN),
        ],
    );
    produce_leads(&env, &leads).await;
    let seen = crm_results(&env, leads.len(), Duration::from_secs(180)).await;

    // A 409 to a batch upsert: HubSpot's answer to duplicate inputs in one batch.
    hs.control("faults", json!({"conflict": 1})).await;
    let dup = scored_lead(
        "hsc-6@client.test",
        "dup@client.test",
        "acct-1",
        None,
        t + 5,
    );
    produce_leads(&env, &[dup]).await;
    let dlq = collect(
        &env.consumer(&["scored.dlq"]),
        1,
        Duration::from_secs(60),
        Duration::from_secs(3),
    )
    .await;
    terminate(&mut run, Duration::from_secs(30));
    let state = hs.state().await;

    assert_eq!(
        state["violations"],
        json!([]),
        "requests HubSpot would refuse: {:#}",
        state["violations"]
    );
    assert_eq!(seen.len(), leads.len(), "{seen:?}");
    let mut endpoints: Vec<&str> = state["requests"]
        .as_object()
        .expect("requests")
        .keys()
        .map(String::as_str)
        .collect();
    endpoints.sort();
    assert_eq!(
        endpoints,
        [
            "GET /crm/v3/objects/emails/{id}",
            "POST /crm/v3/objects/companies/batch/upsert",
            "POST /crm/v3/objects/contacts/batch/upsert",
            "POST /crm/v3/objects/emails",
            "PUT /crm/v4/objects/emails/{id}/associations/default/deals/{id}"
        ],
        "the endpoints the backend calls"
    );
    let throttled = state["faults"]["429"].as_u64().unwrap_or_default();
    assert!(throttled > 0, "the 429s were answered");
    println!("429 TEN_SECONDLY_ROLLING answered {throttled} times in 2 s");
    let first = by_id(&seen, "hsc-1@client.test");
    // A batch the 429s aborted is retried: what it had written is then met as existing, so a
    // first write may say `unchanged` too; the replay of hsc-1 always does.
    let outcomes: Vec<&str> = first.iter().map(|r| r.outcome.as_str()).collect();
    assert_eq!(outcomes.len(), 2, "{seen:?}");
    assert_eq!(outcomes[1], "unchanged", "the replay changed nothing");
    assert_eq!(first[0].activity_id, first[1].activity_id);
    assert!(
        seen.iter()
            .all(|r| ["written", "unchanged"].contains(&r.outcome.as_str())),
        "{seen:?}"
    );

    let contacts = objects(&state, "contacts", "email");
    let mut emails: Vec<&str> = contacts.iter().map(|(e, _)| *e).collect();
    emails.sort();
    assert_eq!(
        emails,
        [
            "kim@partner.test",
            "lee@client.test",
            "ola@client.test",
            "sam@client.test"
        ]
    );
    let sam = contacts
        .iter()
        .find(|(e, _)| *e == "sam@client.test")
        .expect("sam")
        .1;
    assert_eq!(sam["properties"]["firstname"], "Sam");
    assert_eq!(sam["properties"]["lastname"], "Sender");
    let sam_id = sam["id"].as_str().expect("id");
    assert_eq!(first[0].contact_id.as_deref(), Some(sam_id));
    let sams: Vec<(&str, bool)> = seen
        .iter()
        .filter(|r| r.contact_id.as_deref() == Some(sam_id))
        .map(|r| (r.message_id.as_str(), r.contact_created))
        .collect();
    // HubSpot's `new` says whether this call created sam: once at most (a batch the 429s
    // aborted after the upsert meets sam as existing when it is retried).
    let created = sams.iter().filter(|(_, created)| *created).count();
    assert!(created <= 1, "sam was created once: {sams:?}");
    assert_eq!(sams.len(), 4, "sam's four results name his HubSpot id");

    let engagements = objects(&state, "emails", PROPERTY);
    let mut messages: Vec<&str> = engagements.iter().map(|(m, _)| *m).collect();
    messages.sort();
    assert_eq!(
        messages,
        [
            "hsc-1@client.test",
            "hsc-2@client.test",
            "hsc-3@partner.test",
            "hsc-4@client.test",
            "hsc-5@client.test"
        ],
        "one email engagement per message"
    );
    let email = engagements
        .iter()
        .find(|(m, _)| *m == "hsc-1@client.test")
        .expect("hsc-1 engagement")
        .1;
    let props = &email["properties"];
    assert_eq!(props["hs_timestamp"], t.to_string());
    assert_eq!(props["hs_email_direction"], "INCOMING_EMAIL");
    assert_eq!(
        props["hs_email_subject"],
        "Pricing question hsc-1@client.test"
    );
    assert_eq!(props["hs_email_text"], "Hello, what does it cost?");
    let email_id = email["id"].as_str().expect("id");
    assert_eq!(first[0].activity_id.as_deref(), Some(email_id));
    assert!(associated(&state, email_id, "contacts", sam_id, 198));
    assert!(associated(&state, email_id, "deals", "901", 210));
    // The accounts' companies, by domain, each once; the email on its sender's.
    let companies = objects(&state, "companies", "domain");
    let mut domains: Vec<&str> = companies.iter().map(|(d, _)| *d).collect();
    domains.sort();
    assert_eq!(domains, ["client.test", "partner.test"]);
    let client = companies
        .iter()
        .find(|(d, _)| *d == "client.test")
        .expect("client.test")
        .1;
    assert_eq!(client["properties"]["name"], "Company acct-1");
    let client_id = client["id"].as_str().expect("id");
    assert!(associated(&state, email_id, "companies", client_id, 186));
    assert_eq!(first[0].account_id.as_deref(), Some(client_id));
    let linked = engagements
        .iter()
        .find(|(m, _)| *m == "hsc-2@client.test")
        .expect("hsc-2 engagement")
        .1["id"]
        .as_str()
        .expect("id");
    assert!(
        associated(&state, linked, "deals", "901", 210),
        "the relinked record associated the reply's one email with its parent's deal"
    );
    let again = by_id(&seen, "hsc-2@client.test");
    assert_eq!(again.len(), 2);
    assert_eq!(again[1].activity_id.as_deref(), Some(linked));
    assert_eq!(again[1].deal_id.as_deref(), Some("901"));
    let long = engagements
        .iter()
        .find(|(m, _)| *m == "hsc-4@client.test")
        .expect("hsc-4 engagement")
        .1;
    let odd = by_id(&seen, "hsc-5@client.test");
    assert_eq!(
        odd[0].deal_id, None,
        "Q3_acme is not a HubSpot deal: not associated"
    );
    assert_eq!(first[0].deal_id.as_deref(), Some("901"));
    let text = long["properties"]["hs_email_text"]
        .as_str()
        .unwrap_or_default();
    assert!(text.starts_with("pricing pricing") && text.chars().count() <= 65_536);

    let dead: Vec<&str> = dlq.iter().filter_map(|r| r.key.as_deref()).collect();
    assert_eq!(
        dead,
        ["hsc-6@client.test"],
        "only the 409 was dead-lettered"
    );
    assert_eq!(dlq[0].headers["mailstream.error.class"], "crm-rejected");
    assert_eq!(
        state["faults"]["409-batch-duplicate"], 1,
        "the 409 was not retried, and no batch the backend sent held duplicates"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erase_archives_a_persons_emails_and_gdpr_deletes_her_contact_in_hubspot() {
    let env = TestEnv::new("crmhscerase");
    let hs = HubspotContract::start().await;
    let (erin, frank) = ("erin.hs@erase.test", "frank.hs@keep.test");
    let t = now_ms() - 60_000;
    let mut cc_erin = scored_lead("hse-f2@keep.test", frank, "acct-2", None, t + 3);
    cc_erin.resolved.email.cc = vec![Address {
        email: erin.into(),
        name: None,
    }];
    let leads = vec![
        scored_lead("hse-e1@erase.test", erin, "acct-1", None, t),
        reply_lead("hse-e2@erase.test", erin, t + 1),
        scored_lead("hse-f1@keep.test", frank, "acct-2", None, t + 2),
        cc_erin,
    ];
    let settings = [
        ("MAILSTREAM_CRM_SINK_BACKEND", "hubspot"),
        ("MAILSTREAM_CRM_SINK_BASE_URL", hs.base_url.as_str()),
        ("MAILSTREAM_CRM_SINK_TOKEN", TOKEN),
    ];
    let mut run = spawn_sink(&env, "a", free_port(), &settings);
    produce_leads(&env, &leads).await;
    let seen = crm_results(&env, leads.len(), Duration::from_secs(120)).await;
    terminate(&mut run, Duration::from_secs(30));
    assert!(
        seen.len() == leads.len() && seen.iter().all(|r| r.outcome == "written"),
        "{seen:?}"
    );
    produce_parsed(&env, &leads).await;
    let before = hs.state().await;
    assert_eq!(objects(&before, "emails", PROPERTY).len(), 4, "{before}");
    let erins = objects(&before, "contacts", "email")
        .into_iter()
        .find(|(email, _)| *email == erin)
        .map(|(_, c)| c["id"].as_str().unwrap_or_default().to_string())
        .expect("her contact");

    let dry = erase(&env, erin, false, &settings);
    assert_eq!(dry["messages"], 3, "{dry}");
    let want = json!({"backend": "hubspot", "emails": 3, "contacts": 1});
    assert_eq!(dry["crm"], want, "{dry}");
    let unchanged = hs.state().await;
    assert_eq!(
        unchanged["objects"], before["objects"],
        "a dry run changes nothing"
    );
    assert_eq!(unchanged["associations"], before["associations"]);

    let done = erase(&env, erin, true, &settings);
    assert_eq!(
        done["crm"], dry["crm"],
        "the dry run said what --execute did"
    );
    let after = hs.state().await;
    assert_eq!(after["violations"], json!([]), "within HubSpot's contract");
    let contacts: Vec<&str> = objects(&after, "contacts", "email")
        .into_iter()
        .map(|(email, _)| email)
        .collect();
    assert_eq!(contacts, [frank], "only Frank's contact stays");
    assert_eq!(after["gdpr_deleted"], json!([erins]));
    let emails: Vec<&str> = objects(&after, "emails", PROPERTY)
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(emails, ["hse-f1@keep.test"], "only Frank's own email stays");
    let archived = after["archived"]["emails"].as_array().expect("archived");
    assert_eq!(archived.len(), 3, "{archived:?}");
    let associations = after["associations"].as_array().expect("associations");
    assert!(
        associations.iter().all(|a| a["to_id"] != erins.as_str()),
        "nothing is associated with her: {associations:?}"
    );
    assert_eq!(
        after["requests"]["POST /crm/v3/objects/contacts/gdpr-delete"],
        1
    );
    assert_eq!(after["requests"]["DELETE /crm/v3/objects/emails/{id}"], 3);

    let again = erase(&env, erin, true, &settings);
    let none = json!({"backend": "hubspot", "emails": 0, "contacts": 0});
    assert_eq!(again["crm"], none, "nothing of hers is left: {again}");
    let last = hs.state().await;
    assert_eq!(last["blocklist"], json!([]), "no address was blocklisted");
    assert_eq!(last["objects"], after["objects"]);
    assert_eq!(
        last["requests"]["POST /crm/v3/objects/contacts/gdpr-delete"],
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_archives_old_unqualified_emails_in_hubspot_once() {
    const DAY_MS: i64 = 86_400_000;
    let env = TestEnv::new("crmhscretain");
    let hs = HubspotContract::start().await;
    let dir = mailstream_tests::mail::temp_dir("hubspot-retain-blobs");
    let blob_url = format!("file://{}", dir.display());
    let blobs = BlobStore::open(&blob_url, &[]).expect("blob store");
    let (own_uri, own_sha) = blobs.put(b"old quote".to_vec()).await.expect("put");
    let (shared_uri, shared_sha) = blobs.put(b"brochure".to_vec()).await.expect("put");
    let old = now_ms() - 25 * DAY_MS;
    let lead = |id: &str, sender: &str, at: i64, status: &str, blob: Option<(&str, &str)>| {
        let mut l = reply_lead(id, sender, at);
        l.status = status.into();
        if let Some((sha, uri)) = blob {
            l = with_attachment(l, Some("file.pdf"), sha);
            if let Some(a) = l.resolved.email.attachments.last_mut() {
                a.blob_uri = Some(uri.to_string());
            }
        }
        l
    };
    let leads = vec![
        lead(
            "hsr-1@old.test",
            "ann.hs@old.test",
            old,
            "nurture",
            Some((&own_sha, &own_uri)),
        ),
        lead(
            "hsr-2@old.test",
            "bob.hs@old.test",
            old + 1,
            "nurture",
            Some((&shared_sha, &shared_uri)),
        ),
        lead(
            "hsr-3@old.test",
            "cat.hs@old.test",
            old + 2,
            "qualified",
            Some((&shared_sha, &shared_uri)),
        ),
        lead(
            "hsr-4@new.test",
            "ann.hs@old.test",
            now_ms(),
            "nurture",
            None,
        ),
    ];
    let settings = [
        ("MAILSTREAM_CRM_SINK_BACKEND", "hubspot"),
        ("MAILSTREAM_CRM_SINK_BASE_URL", hs.base_url.as_str()),
        ("MAILSTREAM_CRM_SINK_TOKEN", TOKEN),
    ];
    let mut run = spawn_sink(&env, "a", free_port(), &settings);
    produce_leads(&env, &leads).await;
    let seen = crm_results(&env, leads.len(), Duration::from_secs(120)).await;
    terminate(&mut run, Duration::from_secs(30));
    assert!(
        seen.len() == leads.len() && seen.iter().all(|r| r.outcome == "written"),
        "{seen:?}"
    );
    let before = hs.state().await;
    assert_eq!(objects(&before, "emails", PROPERTY).len(), 4, "{before}");

    let dry = retention(&env, 20, false, &settings, &blob_url);
    let want = json!({"messages": 2, "rows": {"backend": "hubspot", "emails": 2},
        "unreferenced_blobs": [own_uri]});
    assert_eq!(dry["expired"], want, "{dry}");
    assert_eq!(dry["blobs_deleted"], 1, "{dry}");
    let unchanged = hs.state().await;
    assert_eq!(
        unchanged["objects"], before["objects"],
        "a dry run changes nothing"
    );
    assert!(blobs.get(&own_uri, None).await.is_ok());

    let done = retention(&env, 20, true, &settings, &blob_url);
    assert_eq!(
        done["expired"], dry["expired"],
        "the dry run said what --execute did"
    );
    assert_eq!(done["blobs_deleted"], 1, "{done}");
    let after = hs.state().await;
    assert_eq!(after["violations"], json!([]), "within HubSpot's contract");
    let mut emails: Vec<&str> = objects(&after, "emails", PROPERTY)
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    emails.sort();
    assert_eq!(
        emails,
        ["hsr-3@old.test", "hsr-4@new.test"],
        "the old qualified and the recent email stay"
    );
    assert_eq!(
        after["objects"]["contacts"], before["objects"]["contacts"],
        "contacts stay"
    );
    assert_eq!(after["requests"]["DELETE /crm/v3/objects/emails/{id}"], 2);
    assert!(
        blobs.get(&own_uri, None).await.is_err(),
        "its own blob is gone"
    );
    assert!(
        blobs.get(&shared_uri, None).await.is_ok(),
        "the blob the qualified email points to stays"
    );

    let again = retention(&env, 20, true, &settings, &blob_url);
    let none = json!({"messages": 0, "rows": {"backend": "hubspot", "emails": 0},
        "unreferenced_blobs": []});
    assert_eq!(again["expired"], none, "idempotent: {again}");
    let last = hs.state().await;
    assert_eq!(
        last["objects"], after["objects"],
        "the second run changed nothing"
    );
    assert_eq!(last["requests"]["DELETE /crm/v3/objects/emails/{id}"], 2);
    let _ = std::fs::remove_dir_all(&dir);
}
