//! The resolver on the real stack: copies of one email collapse into one `resolved` record
//! whichever way they came in; its seen-set survives `kill -9` through the changelog; contacts
//! loaded with `mailstream tables load` resolve; replies join the deal of their thread.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use mailstream_runtime::AvroRecord;
use mailstream_runtime::records::{Address, Duplicate, ParsedEmail, ResolvedEmail, ThreadLink};
use mailstream_tests::mail::{DOMAINS, curl, now_secs, sign, smtplib, start, swaks, temp_dir};
use mailstream_tests::pipeline::metric;
use mailstream_tests::{
    Seen, TestEnv, collect, decode, decode_as, free_port, http_get, now_ms, output, terminate,
};

/// The resolver's settings for these tests: our domains are the test ingest's.
const RESOLVER_ENV: &[(&str, &str)] = &[("MAILSTREAM_RESOLVER_OUR_DOMAINS", DOMAINS)];

async fn resolved_of(env: &TestEnv, seen: &[Seen]) -> Vec<ResolvedEmail> {
    decode_as(env.registry(), seen, |r: &ResolvedEmail| {
        r.message_id.as_str()
    })
    .await
}

fn parsed(id: &str, from: &str, to: &[&str]) -> ParsedEmail {
    ParsedEmail {
        message_id: id.into(),
        ingest_id: format!("ingest-{id}-{}", uuid_suffix()),
        received_at: now_ms(),
        envelope_rcpt_to: to.iter().map(|s| s.to_string()).collect(),
        from: Some(Address {
            email: from.into(),
            name: Some("Sender Name".into()),
        }),
        to: to
            .iter()
            .map(|t| Address {
                email: t.to_string(),
                name: None,
            })
            .collect(),
        subject: Some(format!("subject of {id}")),
        ..ParsedEmail::default()
    }
}

fn uuid_suffix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!("{nanos:08x}")
}

async fn produce_parsed(env: &TestEnv, emails: Vec<ParsedEmail>) {
    let mut records = Vec::new();
    for email in emails {
        let key = email.message_id.clone();
        let value = email.into_avro().expect("to avro");
        records.push((key, env.encode("parsed", value).await));
    }
    env.produce("parsed", records).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_deliveries_of_one_email_through_smtp_and_http_resolve_once() {
    let env = TestEnv::new("res-dup");
    let blobs = temp_dir("res-dup-blobs");
    let blob_url = format!("file://{}", blobs.display());
    let mut ingest = start(&env, &blobs, &[]).await;
    let mut parser = env.spawn("parser", "a", &[("MAILSTREAM_PARSER_BLOB_URL", &blob_url)]);
    let mut resolver = env.spawn("resolver", "a", RESOLVER_ENV);

    // One email to three of our addresses; the sender's MTA delivers it three times.
    let eml = blobs.join("three-recipients.eml");
    std::fs::write(
        &eml,
        "From: Dana Reyes <dana.reyes@prospect.test>\r\n\
         To: sales@in.example.com, deal-7@in.example.com\r\n\
         Cc: deals+acme@in.example.com\r\n\
         Subject: Enterprise pricing for 40 seats\r\n\
         Date: Mon, 23 Nov 2026 10:00:00 +0000\r\n\
         Message-ID: <three.copies.1@prospect.test>\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\r\n\
         Could you send enterprise pricing?\r\n",
    )
    .expect("write fixture");
    let sent = smtplib(
        ingest.smtp,
        &eml,
        "dana.reyes@prospect.test",
        "mx.prospect.test",
        &["sales@in.example.com"],
    );
    assert!(sent.contains("SENT"), "{sent}");
    let (code, out) = swaks(ingest.smtp, &eml, "deal-7@in.example.com");
    assert_eq!(code, 0, "{out}");
    let body = std::fs::read(&eml).expect("fixture");
    let ts = now_secs().to_string();
    let (status, answer) = curl(ingest.http, &eml, "message/rfc822", &ts, &sign(&ts, &body));
    assert_eq!(status, 202, "{answer}");

    let resolved = collect(
        &env.consumer(&["resolved"]),
        1,
        Duration::from_secs(90),
        Duration::from_secs(5),
    )
    .await;
    let duplicates = collect(
        &env.consumer(&["duplicates"]),
        2,
        Duration::from_secs(30),
        Duration::from_secs(1),
    )
    .await;
    terminate(&mut resolver, Duration::from_secs(30));
    terminate(&mut parser, Duration::from_secs(30));
    terminate(&mut ingest.child, Duration::from_secs(30));

    assert_eq!(resolved.len(), 1, "three deliveries, one resolved record");
    let r = resolved_of(&env, &resolved).await.remove(0);
    assert_eq!(r.message_id, "three.copies.1@prospect.test");
    for ours in [
        "deal-7@in.example.com",
        "deals+acme@in.example.com",
        "sales@in.example.com",
    ] {
        assert!(
            r.recipients.contains(&ours.to_string()),
            "{ours} in {:?}",
            r.recipients
        );
    }
    assert_eq!(r.deal_id.as_deref(), Some("7"), "deal-7@ routes");
    assert_eq!(r.sender_email.as_deref(), Some("dana.reyes@prospect.test"));
    assert!(
        r.new_contact.is_some(),
        "an unknown sender is proposed as a contact"
    );

    assert_eq!(duplicates.len(), 2, "the two later copies are audited");
    let mut copies = Vec::new();
    for d in &duplicates {
        let value = decode(env.registry(), d.payload.as_deref().expect("payload")).await;
        let dup = Duplicate::from_avro(value).expect("a Duplicate");
        assert_eq!(dup.kept_ingest_id, r.email.ingest_id);
        assert_ne!(dup.ingest_id, r.email.ingest_id);
        copies.push(dup.copies);
    }
    copies.sort();
    assert_eq!(copies, vec![2, 3]);

    // Logs at info carry no email address (PII).
    for processor in ["ingest", "parser", "resolver"] {
        let log = mailstream_tests::log_dir().join(format!("{}{processor}-a.log", env.prefix));
        let text = std::fs::read_to_string(&log).expect("processor log");
        for address in [
            "dana.reyes@prospect.test",
            "sales@in.example.com",
            "deal-7@in.example.com",
        ] {
            assert!(
                !text.contains(address),
                "{processor} logged {address}: {}",
                log.display()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seen_set_survives_kill_9_and_no_duplicate_gets_through() {
    let env = TestEnv::new("res-kill");
    const N: usize = 120;
    let ids: Vec<String> = (0..N).map(|i| format!("orig-{i}@kill.test")).collect();
    let firsts = ids
        .iter()
        .map(|id| parsed(id, "someone@kill.test", &["sales@in.example.com"]))
        .collect();
    let mut resolver = env.spawn("resolver", "a", RESOLVER_ENV);
    produce_parsed(&env, firsts).await;
    let consumer = env.consumer(&["resolved"]);
    let first_pass = collect(
        &consumer,
        N,
        Duration::from_secs(90),
        Duration::from_secs(1),
    )
    .await;
    assert_eq!(first_pass.len(), N, "every original resolved");

    // Kill -9 (no chance to flush anything), restart: the seen-set must come from the changelog.
    resolver.kill().expect("kill -9");
    resolver.wait().expect("reaped");
    let mut resolver = env.spawn("resolver", "a", RESOLVER_ENV);
    let copies: Vec<ParsedEmail> = ids
        .iter()
        .map(|id| parsed(id, "someone@kill.test", &["deal-1@in.example.com"]))
        .collect();
    let fresh: Vec<ParsedEmail> = (0..30)
        .map(|i| {
            parsed(
                &format!("fresh-{i}@kill.test"),
                "x@kill.test",
                &["sales@in.example.com"],
            )
        })
        .collect();
    produce_parsed(&env, copies[..N / 2].to_vec()).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    // And once more mid-stream.
    resolver.kill().expect("kill -9");
    resolver.wait().expect("reaped");
    let mut resolver = env.spawn("resolver", "a", RESOLVER_ENV);
    produce_parsed(&env, copies[N / 2..].to_vec()).await;
    produce_parsed(&env, fresh).await;

    let second_pass = collect(
        &consumer,
        30,
        Duration::from_secs(120),
        Duration::from_secs(8),
    )
    .await;
    let duplicates = collect(
        &env.consumer(&["duplicates"]),
        N,
        Duration::from_secs(60),
        Duration::from_secs(2),
    )
    .await;
    terminate(&mut resolver, Duration::from_secs(30));

    let keys: Vec<String> = second_pass.iter().filter_map(|s| s.key.clone()).collect();
    assert_eq!(
        keys.len(),
        30,
        "only the 30 fresh emails came through: {keys:?}"
    );
    assert!(keys.iter().all(|k| k.starts_with("fresh-")), "{keys:?}");
    let distinct: BTreeSet<&String> = keys.iter().collect();
    assert_eq!(distinct.len(), 30, "no duplicate among them");
    assert_eq!(duplicates.len(), N, "every copy audited exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loaded_contacts_resolve_and_replies_join_their_deal() {
    let env = TestEnv::new("res-thread");
    let dir = temp_dir("res-thread-csv");
    let contacts = dir.join("contacts.csv");
    std::fs::write(
        &contacts,
        "Email,Contact_ID,Name,Account_ID,Phone\nAli@Acme.io,c-ali,Ali Gupta,a-acme,555\n",
    )
    .expect("csv");
    let accounts = dir.join("accounts.csv");
    std::fs::write(
        &accounts,
        "domain,account_id,name,target_account\nacme.io,a-acme,Acme Inc,yes\ngmail.com,a-g,Google,no\n",
    )
    .expect("csv");
    for file in [&contacts, &accounts] {
        let out = output(env.mailstream(&["tables", "load", file.to_str().expect("path")]));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("loaded"));
    }

    let mut resolver = env.spawn("resolver", "a", RESOLVER_ENV);
    let consumer = env.consumer(&["resolved"]);
    let first = parsed("first@acme.io", "ali@acme.io", &["deal-42@in.example.com"]);
    produce_parsed(&env, vec![first]).await;
    let a = collect(
        &consumer,
        1,
        Duration::from_secs(90),
        Duration::from_millis(10),
    )
    .await;
    assert_eq!(a.len(), 1);

    let mut reply = parsed("reply@acme.io", "ali@acme.io", &["sales@in.example.com"]);
    reply.in_reply_to = Some("first@acme.io".into());
    reply.references = vec!["first@acme.io".into()];
    let stranger = parsed(
        "cold@gmail.com",
        "someone@gmail.com",
        &["sales@in.example.com"],
    );
    produce_parsed(&env, vec![reply, stranger]).await;
    let b = collect(
        &consumer,
        2,
        Duration::from_secs(60),
        Duration::from_millis(10),
    )
    .await;
    let mut reply2 = parsed(
        "reply2@acme.io",
        "new.person@acme.io",
        &["sales@in.example.com"],
    );
    reply2.in_reply_to = Some("reply@acme.io".into());
    reply2.references = vec!["first@acme.io".into(), "reply@acme.io".into()];
    produce_parsed(&env, vec![reply2]).await;
    let c = collect(
        &consumer,
        1,
        Duration::from_secs(60),
        Duration::from_secs(2),
    )
    .await;
    terminate(&mut resolver, Duration::from_secs(30));

    let all: Vec<Seen> = a.into_iter().chain(b).chain(c).collect();
    let by_id: BTreeMap<String, ResolvedEmail> = resolved_of(&env, &all)
        .await
        .into_iter()
        .map(|r| (r.message_id.clone(), r))
        .collect();
    assert_eq!(by_id.len(), 4, "{:?}", by_id.keys());

    let first = &by_id["first@acme.io"];
    assert_eq!(
        first.contact.as_ref().map(|c| c.contact_id.as_str()),
        Some("c-ali")
    );
    let account = first.account.as_ref().expect("account");
    assert!(account.target_account && account.account_id == "a-acme");
    assert_eq!(
        (first.deal_id.as_deref(), first.deal_source.as_deref()),
        (Some("42"), Some("recipient"))
    );

    for id in ["reply@acme.io", "reply2@acme.io"] {
        let r = &by_id[id];
        assert_eq!(
            r.deal_id.as_deref(),
            Some("42"),
            "{id} joins the deal of its thread"
        );
        assert_eq!(r.deal_source.as_deref(), Some("thread"));
        assert_eq!(r.thread_id, "first@acme.io");
    }
    let newcomer = &by_id["reply2@acme.io"];
    assert!(newcomer.contact.is_none());
    assert_eq!(
        newcomer.account.as_ref().map(|a| a.matched_by.as_str()),
        Some("domain")
    );
    assert_eq!(
        newcomer
            .new_contact
            .as_ref()
            .and_then(|p| p.account_id.as_deref()),
        Some("a-acme")
    );
    let stranger = &by_id["cold@gmail.com"];
    assert!(
        stranger.free_mail && stranger.account.is_none(),
        "free mail never maps to an account"
    );
}

/// Thread links older than `threads_max_age_days` (record time) are tombstoned in `threads`, on
/// their email's partition, once a newer email of that partition is resolved, also across a
/// restart (a restored link is aged by its `linked_at`, not by when it was written); a reply to
/// an expired link starts its own thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thread_links_past_their_age_are_tombstoned_on_their_partition() {
    const DAY: i64 = 86_400_000;
    let env = TestEnv::new("res-age");
    let settings = [
        ("MAILSTREAM_RESOLVER_OUR_DOMAINS", DOMAINS),
        ("MAILSTREAM_RESOLVER_THREADS_MAX_AGE_DAYS", "1"),
    ];
    let to = ["sales@in.example.com"];
    let now = now_ms();
    let old: Vec<ParsedEmail> = (0..6)
        .map(|i| ParsedEmail {
            received_at: now - 3 * DAY,
            ..parsed(&format!("old-{i}@age.test"), "a@age.test", &to)
        })
        .collect();
    let mut resolver = env.spawn("resolver", "a", &settings);
    produce_parsed(&env, old).await;
    let resolved = env.consumer(&["resolved"]);
    let first = collect(
        &resolved,
        6,
        Duration::from_secs(90),
        Duration::from_millis(10),
    )
    .await;
    assert_eq!(first.len(), 6);
    terminate(&mut resolver, Duration::from_secs(30));

    let mut resolver = env.spawn("resolver", "a", &settings);
    let mut new: Vec<ParsedEmail> = (0..48)
        .map(|i| parsed(&format!("new-{i}@age.test"), "b@age.test", &to))
        .collect();
    let mut reply = parsed("reply@age.test", "a@age.test", &to);
    reply.in_reply_to = Some("old-0@age.test".into());
    new.push(reply);
    produce_parsed(&env, new).await;
    let second = collect(
        &resolved,
        49,
        Duration::from_secs(90),
        Duration::from_millis(10),
    )
    .await;
    assert_eq!(second.len(), 49);
    terminate(&mut resolver, Duration::from_secs(30));

    let reply = resolved_of(&env, &second)
        .await
        .into_iter()
        .find(|r| r.message_id == "reply@age.test")
        .expect("the reply resolved");
    assert!(
        reply.thread_parent.is_none(),
        "an expired parent does not count"
    );

    let input: BTreeMap<String, i32> = collect(
        &env.consumer(&["parsed"]),
        55,
        Duration::from_secs(30),
        Duration::from_secs(1),
    )
    .await
    .into_iter()
    .filter_map(|s| Some((s.key?, s.partition)))
    .collect();
    let threads = collect(
        &env.consumer(&["threads"]),
        55,
        Duration::from_secs(30),
        Duration::from_secs(3),
    )
    .await;
    let mut links = BTreeMap::new();
    let mut tombstones = BTreeSet::new();
    for record in &threads {
        let key = record.key.clone().expect("keyed");
        assert_eq!(
            input.get(&key),
            Some(&record.partition),
            "{key}: its email's partition"
        );
        match record.payload {
            Some(_) => {
                links.insert(key, record.partition);
            }
            None => {
                tombstones.insert(key);
            }
        }
    }
    assert_eq!(links.len(), 55, "one link per email");
    let renewed: BTreeSet<i32> = links
        .iter()
        .filter(|(k, _)| !k.starts_with("old-"))
        .map(|(_, p)| *p)
        .collect();
    let expected: BTreeSet<String> = links
        .iter()
        .filter(|(k, p)| k.starts_with("old-") && renewed.contains(p))
        .map(|(k, _)| k.clone())
        .collect();
    assert!(!expected.is_empty());
    assert_eq!(
        tombstones, expected,
        "every old link on a partition that saw a newer email, and nothing else"
    );
}

/// The latest record per key of a compacted topic's records (`None`: a tombstone).
fn latest(records: &[Seen]) -> BTreeMap<String, Option<Vec<u8>>> {
    records
        .iter()
        .filter_map(|r| Some((r.key.clone()?, r.payload.clone())))
        .collect()
}

/// A reply resolved before any message it replies to is linked once one arrives, whichever way
/// it arrives: resolved by the same resolver (at once, in that record's transaction), linked
/// by another resolver (seen in the `threads` table while the input is idle), or while the
/// resolver was down (its waiting replies restored from `resolver.pending-replies`). Each
/// linked reply gets a second `resolved` record (`thread_relinked`) with the parent, thread and
/// deal it would have had in the other order, and stops waiting (a tombstone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_resolved_before_its_parent_is_linked_when_the_parent_arrives() {
    let env = TestEnv::new("res-relink");
    let to = ["sales@in.example.com"];
    let reply_to = |id: &str, parent: &str, root: &str| {
        let mut reply = parsed(id, "ali@relink.test", &to);
        reply.in_reply_to = Some(parent.into());
        reply.references = vec![root.into(), parent.into()];
        reply
    };
    let link_of = |id: &str, deal: &str| ThreadLink {
        message_id: id.into(),
        thread_id: format!("root-of-{id}"),
        deal_id: Some(deal.into()),
        contact_id: None,
        linked_at: now_ms(),
        waiting: false,
    };
    let resolved = env.consumer(&["resolved"]);
    let mut resolver = env.spawn("resolver", "a", RESOLVER_ENV);

    // 1. The parent comes through the same resolver after the reply, and after a reply to the
    //    reply (linked to it at once, but waiting with it: its deal comes from the parent).
    produce_parsed(
        &env,
        vec![reply_to(
            "r1@relink.test",
            "p1@relink.test",
            "p1@relink.test",
        )],
    )
    .await;
    let mut seen = collect(&resolved, 1, Duration::from_secs(90), Duration::ZERO).await;
    produce_parsed(
        &env,
        vec![reply_to(
            "r1b@relink.test",
            "r1@relink.test",
            "p1@relink.test",
        )],
    )
    .await;
    seen.extend(collect(&resolved, 1, Duration::from_secs(60), Duration::ZERO).await);
    produce_parsed(
        &env,
        vec![parsed(
            "p1@relink.test",
            "ali@relink.test",
            &["deal-7@in.example.com"],
        )],
    )
    .await;
    seen.extend(collect(&resolved, 3, Duration::from_secs(60), Duration::ZERO).await);

    // 2. Another resolver links the parent: its link appears in `threads` while this one idles.
    produce_parsed(
        &env,
        vec![reply_to(
            "r2@relink.test",
            "p2@relink.test",
            "p2@relink.test",
        )],
    )
    .await;
    seen.extend(collect(&resolved, 1, Duration::from_secs(60), Duration::ZERO).await);
    let link = link_of("p2@relink.test", "8").into_avro().expect("to avro");
    env.produce(
        "threads",
        vec![("p2@relink.test".into(), env.encode("threads", link).await)],
    )
    .await;
    seen.extend(collect(&resolved, 1, Duration::from_secs(60), Duration::ZERO).await);

    // 3. The parent is linked while the resolver is down.
    produce_parsed(
        &env,
        vec![reply_to(
            "r3@relink.test",
            "p3@relink.test",
            "p3@relink.test",
        )],
    )
    .await;
    seen.extend(collect(&resolved, 1, Duration::from_secs(60), Duration::ZERO).await);
    terminate(&mut resolver, Duration::from_secs(30));
    let link = link_of("p3@relink.test", "9").into_avro().expect("to avro");
    env.produce(
        "threads",
        vec![("p3@relink.test".into(), env.encode("threads", link).await)],
    )
    .await;
    let http = format!("127.0.0.1:{}", free_port());
    let mut settings = RESOLVER_ENV.to_vec();
    settings.push(("MAILSTREAM_HTTP_ADDR", http.as_str()));
    let mut resolver = env.spawn("resolver", "a", &settings);
    seen.extend(
        collect(
            &resolved,
            1,
            Duration::from_secs(90),
            Duration::from_secs(3),
        )
        .await,
    );
    let metrics = http_get(&format!("http://{http}/metrics")).await.1;
    terminate(&mut resolver, Duration::from_secs(30));

    let records = resolved_of(&env, &seen).await;
    let mut by_id: BTreeMap<String, Vec<ResolvedEmail>> = BTreeMap::new();
    for record in records {
        by_id
            .entry(record.message_id.clone())
            .or_default()
            .push(record);
    }
    let summary = |r: &ResolvedEmail| {
        (
            r.thread_relinked,
            r.thread_parent.clone(),
            r.thread_id.clone(),
            r.deal_id.clone(),
            r.deal_source.clone(),
        )
    };
    let some = |s: &str| Some(s.to_string());
    let expected = [
        (
            "p1@relink.test",
            vec![(false, None, "p1@relink.test", some("7"), some("recipient"))],
        ),
        (
            "r1@relink.test",
            vec![
                (false, None, "p1@relink.test", None, None),
                (
                    true,
                    some("p1@relink.test"),
                    "p1@relink.test",
                    some("7"),
                    some("thread"),
                ),
            ],
        ),
        (
            "r1b@relink.test",
            vec![
                (false, some("r1@relink.test"), "p1@relink.test", None, None),
                (
                    true,
                    some("r1@relink.test"),
                    "p1@relink.test",
                    some("7"),
                    some("thread"),
                ),
            ],
        ),
        (
            "r2@relink.test",
            vec![
                (false, None, "p2@relink.test", None, None),
                (
                    true,
                    some("p2@relink.test"),
                    "root-of-p2@relink.test",
                    some("8"),
                    some("thread"),
                ),
            ],
        ),
        (
            "r3@relink.test",
            vec![
                (false, None, "p3@relink.test", None, None),
                (
                    true,
                    some("p3@relink.test"),
                    "root-of-p3@relink.test",
                    some("9"),
                    some("thread"),
                ),
            ],
        ),
    ];
    assert_eq!(by_id.len(), expected.len(), "{:?}", by_id.keys());
    for (id, want) in expected {
        let got: Vec<_> = by_id[id].iter().map(summary).collect();
        let want: Vec<_> = want
            .into_iter()
            .map(|(relinked, parent, thread, deal, source)| {
                (relinked, parent, thread.to_string(), deal, source)
            })
            .collect();
        assert_eq!(got, want, "{id}");
    }
    assert_eq!(
        metric(&metrics, "mailstream_resolver_replies_relinked_total", &[]),
        1.0,
        "the restarted resolver linked r3"
    );

    // Every wait ended in a tombstone.
    let pending = collect(
        &env.consumer(&["resolver.pending-replies"]),
        8,
        Duration::from_secs(20),
        Duration::from_secs(2),
    )
    .await;
    let waits = latest(&pending);
    assert_eq!(
        waits.keys().cloned().collect::<Vec<_>>(),
        [
            "r1@relink.test",
            "r1b@relink.test",
            "r2@relink.test",
            "r3@relink.test"
        ]
    );
    assert!(waits.values().all(Option::is_none), "no reply still waits");
}
