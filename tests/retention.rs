//! Retention on the real stack: the CRM sink writes four leads into PostgreSQL — two old
//! unqualified ones (100 days), an old qualified one and a recent unqualified one, the old
//! ones with attachments in a real blob store, one attachment shared between an old
//! unqualified and the qualified lead. `mailstream retention run --older-than-days 30` first
//! reports exactly what `--execute` then deletes: the two old unqualified messages' rows and
//! the one blob only they pointed to, and our answers (`responses`) past the horizon; the
//! shared blob, the qualified and the recent lead, and a recent answer stay, and a second run
//! finds nothing.

use std::time::Duration;

use mailstream_runtime::blob::BlobStore;
use mailstream_tests::crm::{crm_results, produce_leads, reply_lead, spawn_sink, with_attachment};
use mailstream_tests::crm_db::{database_url, psql, schema_of};
use mailstream_tests::mail::temp_dir;
use mailstream_tests::{TestEnv, free_port, now_ms, output, terminate};
use serde_json::Value;

const DAY_MS: i64 = 86_400_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_old_unqualified_leads_and_their_unshared_blobs_once() {
    let env = TestEnv::new("retain");
    let schema = schema_of(&env);
    let url = database_url();
    let dir = temp_dir("retain-blobs");
    let blob_url = format!("file://{}", dir.display());
    let blobs = BlobStore::open(&blob_url, &[]).expect("blob store");
    let (own_uri, own_sha) = blobs.put(b"old nurture quote".to_vec()).await.expect("put");
    let (shared_uri, shared_sha) = blobs.put(b"shared brochure".to_vec()).await.expect("put");
    let attach = |lead, name, sha: &str, uri: &str| {
        let mut lead = with_attachment(lead, Some(name), sha);
        if let Some(a) = lead.resolved.email.attachments.last_mut() {
            a.blob_uri = Some(uri.to_string());
        }
        lead
    };
    let old = now_ms() - 100 * DAY_MS;
    let mut old_nurture = attach(
        reply_lead("ret-1@client.test", "ann@client.test", old),
        "quote.pdf",
        &own_sha,
        &own_uri,
    );
    (old_nurture.score, old_nurture.status) = (5, "nurture".into());
    let mut old_nurture_shared = attach(
        reply_lead("ret-2@client.test", "bob@client.test", old + 1),
        "brochure.pdf",
        &shared_sha,
        &shared_uri,
    );
    (old_nurture_shared.score, old_nurture_shared.status) = (3, "nurture".into());
    let mut old_qualified = attach(
        reply_lead("ret-3@client.test", "cat@client.test", old + 2),
        "brochure.pdf",
        &shared_sha,
        &shared_uri,
    );
    (old_qualified.score, old_qualified.status) = (60, "qualified".into());
    let mut recent_nurture = reply_lead("ret-4@client.test", "dan@client.test", now_ms() - DAY_MS);
    (recent_nurture.score, recent_nurture.status) = (4, "nurture".into());
    produce_leads(
        &env,
        &[
            old_nurture,
            old_nurture_shared,
            old_qualified,
            recent_nurture,
        ],
    )
    .await;
    let mut sink = spawn_sink(
        &env,
        "a",
        free_port(),
        &[
            ("MAILSTREAM_CRM_SINK_DATABASE_URL", url.as_str()),
            ("MAILSTREAM_CRM_SINK_SCHEMA", schema.as_str()),
        ],
    );
    let written = crm_results(&env, 4, Duration::from_secs(120)).await;
    terminate(&mut sink, Duration::from_secs(30));
    assert_eq!(written.len(), 4);
    let activities = || {
        psql(&format!(
            "SELECT string_agg(message_id, ',' ORDER BY message_id) FROM {schema}.email_activities"
        ))
    };
    let everything = "ret-1@client.test,ret-2@client.test,ret-3@client.test,ret-4@client.test";
    assert_eq!(activities(), everything);
    // Our answers as the sink keeps them (`resolved.outbound`): one past the horizon, one not.
    psql(&format!(
        "INSERT INTO {schema}.responses (message_id, thread_id, received_at) VALUES \
         ('out-old@in.example.com', 'thread-old', now() - interval '100 days'), \
         ('out-new@in.example.com', 'thread-new', now() - interval '1 day')"
    ));
    let responses = || {
        psql(&format!(
            "SELECT string_agg(message_id, ',' ORDER BY message_id) FROM {schema}.responses"
        ))
    };

    let retention = |execute: bool| -> Value {
        let mut args = vec!["retention", "run", "--older-than-days", "30", "--json"];
        if execute {
            args.push("--execute");
        }
        let mut cmd = env.mailstream(&args);
        cmd.env("MAILSTREAM_CRM_SINK_DATABASE_URL", &url)
            .env("MAILSTREAM_CRM_SINK_SCHEMA", &schema)
            .env("MAILSTREAM_PARSER_BLOB_URL", &blob_url);
        let out = output(cmd);
        assert!(
            out.status.success(),
            "retention failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("a JSON report")
    };
    let dry = retention(false);
    assert_eq!(dry["expired"]["messages"], 2, "{dry}");
    assert_eq!(dry["expired"]["rows"]["activities"], 2, "{dry}");
    assert_eq!(dry["expired"]["rows"]["attachments"], 2, "{dry}");
    assert_eq!(dry["expired"]["rows"]["contacts"], 0, "contacts stay");
    assert_eq!(dry["expired"]["rows"]["responses"], 1, "{dry}");
    assert_eq!(
        dry["blobs_deleted"], 1,
        "only the blob no kept lead points to: {dry}"
    );
    assert_eq!(activities(), everything, "a dry run deletes nothing");
    assert!(blobs.get(&own_uri, None).await.is_ok());

    let done = retention(true);
    assert_eq!(
        done["expired"], dry["expired"],
        "the dry run said what --execute did"
    );
    assert_eq!(done["blobs_deleted"], 1);
    assert_eq!(activities(), "ret-3@client.test,ret-4@client.test");
    assert_eq!(
        responses(),
        "out-new@in.example.com",
        "the old answer is gone"
    );
    assert_eq!(
        psql(&format!(
            "SELECT count(*) FROM {schema}.leads WHERE message_id IN ('ret-1@client.test', 'ret-2@client.test')"
        )),
        "0"
    );
    assert!(
        blobs.get(&own_uri, None).await.is_err(),
        "its own blob is gone"
    );
    assert!(
        blobs.get(&shared_uri, None).await.is_ok(),
        "the blob the qualified lead shares stays"
    );

    let again = retention(true);
    assert_eq!(again["expired"]["messages"], 0, "idempotent: {again}");
    assert_eq!(again["blobs_deleted"], 0);
    let _ = std::fs::remove_dir_all(&dir);
}
