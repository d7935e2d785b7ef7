//! Hostile and oversized email through the whole topology on the real stack (SMTP → ingest →
//! parser → resolver → scorer → crm-sink → PostgreSQL): a 24 MiB plain-text email, a 10 MB
//! text+HTML email, a 3,000-character From address, a 10 KB Message-ID and a 5 KB attachment
//! file name, then a canary. Each hostile email reaches the CRM (cut to the record limits and
//! flagged) or a dead-letter topic with its reason, the canary arrives within seconds of being
//! sent, every processor stays ready, and each one's peak resident memory stays under a
//! stated bound (the figures are printed; BENCHMARKS.md quotes them).

use std::time::{Duration, Instant};

use mailstream_tests::crm_db::{SAMPLE_DOMAIN, psql, schema_of, spawn_stream_processors};
use mailstream_tests::mail::{start, temp_dir};
use mailstream_tests::smtp::SmtpClient;
use mailstream_tests::{TestEnv, collect, proc_memory, terminate};

/// Peak resident memory (`VmHWM`) of process `pid`, in MiB.
fn peak_rss_mib(pid: u32) -> u64 {
    proc_memory(pid, "VmHWM").expect("VmHWM") / (1024 * 1024)
}
use rand::Rng;

/// Peak resident memory each processor may reach while it handles these emails.
const PEAK_RSS_BOUND_MIB: u64 = 256;

/// Random lower-case words in 72-character lines: text that neither compresses nor repeats.
fn random_text(bytes: usize) -> String {
    let mut rng = rand::rng();
    let mut text = String::with_capacity(bytes + 80);
    let mut line = 0;
    while text.len() < bytes {
        let len = rng.random_range(2..10);
        for _ in 0..len {
            text.push(char::from(b'a' + rng.random_range(0..26u8)));
        }
        line += len + 1;
        if line > 72 {
            text.push_str("\r\n");
            line = 0;
        } else {
            text.push(' ');
        }
    }
    text
}

fn random_token(len: usize) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| char::from(b'a' + rng.random_range(0..26u8)))
        .collect()
}

fn header(subject: &str, from: &str, message_id: &str) -> String {
    format!(
        "From: {from}\r\nTo: sales@{SAMPLE_DOMAIN}\r\nSubject: {subject}\r\n\
         Message-ID: <{message_id}>\r\nDate: Sun, 06 Dec 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n"
    )
}

/// The hostile emails: (subject, raw message).
fn hostile_emails(tag: &str) -> Vec<(String, Vec<u8>)> {
    let mut emails = Vec::new();
    let subject = format!("{tag} 24 MiB of text");
    emails.push((
        subject.clone(),
        format!(
            "{}Content-Type: text/plain; charset=utf-8\r\n\r\n{}",
            header(
                &subject,
                "Big <big@client.test>",
                &format!("{tag}-big@client.test")
            ),
            random_text(24 * 1024 * 1024)
        ),
    ));
    let subject = format!("{tag} 10 MB text and HTML");
    let text = random_text(5 * 1024 * 1024);
    let html = format!(
        "<html><body><p>{}</p></body></html>",
        random_text(5 * 1024 * 1024)
    );
    emails.push((
        subject.clone(),
        format!(
            "{}Content-Type: multipart/alternative; boundary=\"b1\"\r\n\r\n--b1\r\n\
             Content-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n--b1\r\n\
             Content-Type: text/html; charset=utf-8\r\n\r\n{html}\r\n--b1--\r\n",
            header(
                &subject,
                "Alt <alt@client.test>",
                &format!("{tag}-alt@client.test")
            ),
        ),
    ));
    let subject = format!("{tag} a 3000-character From");
    let long_from = format!("{}@client.test", random_token(2988));
    emails.push((
        subject.clone(),
        format!(
            "{}Content-Type: text/plain\r\n\r\nhello from a long address\r\n",
            header(
                &subject,
                &format!("<{long_from}>"),
                &format!("{tag}-from@client.test")
            ),
        ),
    ));
    let subject = format!("{tag} a 10 KB Message-ID");
    let long_id = format!("{}@client.test", random_token(10 * 1024));
    emails.push((
        subject.clone(),
        format!(
            "{}Content-Type: text/plain\r\n\r\nhello with a long id\r\n",
            header(&subject, "Id <id@client.test>", &long_id),
        ),
    ));
    let subject = format!("{tag} a 5 KB file name");
    emails.push((
        subject.clone(),
        format!(
            "{}Content-Type: multipart/mixed; boundary=\"m1\"\r\n\r\n--m1\r\n\
             Content-Type: text/plain\r\n\r\nsee the file\r\n--m1\r\n\
             Content-Type: application/pdf\r\nContent-Disposition: attachment; filename=\"{}.pdf\"\r\n\
             Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQKJcfsj6IK\r\n--m1--\r\n",
            header(&subject, "File <file@client.test>", &format!("{tag}-file@client.test")),
            random_token(5 * 1024)
        ),
    ));
    emails
        .into_iter()
        .map(|(s, m)| (s, m.into_bytes()))
        .collect()
}

/// How many CRM activities in `schema` have `subject`.
fn activities(schema: &str, subject: &str) -> usize {
    psql(&format!(
        "SELECT count(*) FROM {schema}.email_activities WHERE subject = '{}'",
        subject.replace('\'', "''")
    ))
    .parse()
    .expect("a count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_email_reaches_the_crm_or_a_dlq_and_a_canary_behind_it_flows() {
    let env = TestEnv::new("hostile");
    let schema = schema_of(&env);
    let blobs = temp_dir("hostile-blobs");
    let blob_url = format!("file://{}", blobs.display());
    let mut ingest = start(
        &env,
        &blobs,
        &[("MAILSTREAM_INGEST_ACCEPTED_DOMAINS", SAMPLE_DOMAIN)],
    )
    .await;
    let mut processors = spawn_stream_processors(&env, &blob_url, &schema);
    let tag = format!("hostile-{}", &env.prefix[10..18]);
    let rcpt = format!("sales@{SAMPLE_DOMAIN}");
    let smtp = format!("127.0.0.1:{}", ingest.smtp);

    let emails = hostile_emails(&tag);
    let mut client = SmtpClient::connect(&smtp, "client.test")
        .await
        .expect("connect");
    for (subject, raw) in &emails {
        client
            .send("sender@client.test", &[&rcpt], raw)
            .await
            .unwrap_or_else(|e| panic!("{subject}: {e}"));
    }
    let canary = format!("{tag} canary");
    let canary_mail = format!(
        "{}Content-Type: text/plain\r\n\r\nhello, still flowing?\r\n",
        header(
            &canary,
            "Canary <canary@client.test>",
            &format!("{tag}-canary@client.test")
        )
    );
    client
        .send("sender@client.test", &[&rcpt], canary_mail.as_bytes())
        .await
        .expect("canary accepted");
    let canary_sent = Instant::now();
    client.quit().await;

    // The canary reaches the CRM within seconds (its own partition is not held up).
    loop {
        if psql(&format!(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = '{schema}'"
        )) != "0"
            && activities(&schema, &canary) == 1
        {
            break;
        }
        assert!(
            canary_sent.elapsed() < Duration::from_secs(60),
            "the canary did not reach the CRM within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let canary_latency = canary_sent.elapsed();

    // Every hostile email ends in the CRM or in a dead-letter topic, with its reason.
    let dead = collect(
        &env.consumer(&["raw-email.dlq", "parsed.dlq", "resolved.dlq", "scored.dlq"]),
        0,
        Duration::from_secs(5),
        Duration::ZERO,
    )
    .await;
    let started = Instant::now();
    let mut missing: Vec<&str> = emails.iter().map(|(s, _)| s.as_str()).collect();
    while !missing.is_empty() {
        missing.retain(|subject| activities(&schema, subject) == 0);
        if started.elapsed() > Duration::from_secs(120) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for letter in &dead {
        eprintln!(
            "dead letter: {} {}",
            letter.headers["mailstream.error.class"], letter.headers["mailstream.error.message"]
        );
        assert!(!letter.headers["mailstream.error.message"].is_empty());
    }
    assert!(
        missing.len() <= dead.len(),
        "lost: {missing:?} are neither in the CRM nor dead-lettered ({} dead letters)",
        dead.len()
    );
    assert_eq!(
        missing,
        Vec::<&str>::new(),
        "each hostile email should reach the CRM, cut to the limits"
    );
    // The big bodies were cut, flagged, and kept whole in the blob store.
    let body_len: usize = psql(&format!(
        "SELECT length(body_text) FROM {schema}.email_activities WHERE subject = '{tag} 24 MiB of text'"
    ))
    .parse()
    .expect("a length");
    assert!(
        body_len <= 1024 * 1024,
        "the CRM got the body cut to the limit, not 24 MiB: {body_len}"
    );

    let mut peaks = vec![("ingest", peak_rss_mib(ingest.child.id()))];
    for (name, child) in ["parser", "resolver", "scorer", "crm-sink"]
        .into_iter()
        .zip(&processors)
    {
        peaks.push((name, peak_rss_mib(child.id())));
    }
    eprintln!("canary latency {canary_latency:?}; peak RSS MiB: {peaks:?}");
    for (name, peak) in &peaks {
        assert!(
            *peak < PEAK_RSS_BOUND_MIB,
            "{name} peaked at {peak} MiB (bound {PEAK_RSS_BOUND_MIB})"
        );
    }
    for child in &mut processors {
        terminate(child, Duration::from_secs(30));
    }
    terminate(&mut ingest.child, Duration::from_secs(30));
}
