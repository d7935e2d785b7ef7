//! Forwards and form notifications change who the lead is (issue 16), end to end on the real
//! stack: emails over SMTP through ingest, parser, resolver, scorer and crm-sink into
//! PostgreSQL. A colleague's inline (Gmail) forward and an Outlook forward as attachment
//! (message/rfc822) make the original sender the CRM contact and the lead, not the colleague;
//! the `parsed` records name the forwarder. A WordPress Contact Form 7 notification from
//! `wordpress@` makes the person in its fields the contact and the lead, with the form's
//! phone, company and message in `parsed.form`. A prospect's own email fills their contact's
//! title, company, phone and website from its signature, and a later one overwrites none; a
//! forwarded prospect's come from the original's signature, never the colleague's.

use std::time::Duration;

use mailstream_runtime::records::{Forwarded, ParsedEmail};
use mailstream_tests::crm_db::{SAMPLE_DOMAIN, SmtpToCrm, psql_rows};
use mailstream_tests::{TestEnv, collect, decode_as};

/// Bob, a colleague, forwards Dana's demo request inline (Gmail), each with a signature: Dana's
/// is hers (the lead's details), Bob's above the banner is not.
fn gmail_forward() -> String {
    format!(
        "From: Bob Seller <bob@{SAMPLE_DOMAIN}>\r\nTo: crm@{SAMPLE_DOMAIN}\r\nSubject: Fwd: Demo request\r\n\
         Message-ID: <fwd-inline@{SAMPLE_DOMAIN}>\r\nDate: Tue, 08 Dec 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n\
         FYI, a hot one.\r\n\r\nBest,\r\nBob Seller\r\nAccount Executive\r\n+49 30 1234567\r\n\r\n\
         ---------- Forwarded message ---------\r\n\
         From: Dana Prospect <dana@prospect-forward.example>\r\nDate: Mon, Dec 7, 2026 at 9:00 AM\r\n\
         Subject: Demo request\r\nTo: Bob Seller <bob@{SAMPLE_DOMAIN}>\r\n\r\n\
         Hello, we would like a demo of your product for 40 seats.\r\n\r\nThanks,\r\nDana Prospect\r\n\
         CTO | Prospect Labs Inc.\r\n+1 415 555 0132\r\n"
    )
}

/// Carla forwards Kai's quote request as an attachment (Outlook).
fn attached_forward() -> String {
    format!(
        "From: Carla Seller <carla@{SAMPLE_DOMAIN}>\r\nTo: crm@{SAMPLE_DOMAIN}\r\nSubject: FW: Angebot\r\n\
         Message-ID: <fwd-attached@{SAMPLE_DOMAIN}>\r\nDate: Tue, 08 Dec 2026 10:05:00 +0000\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"fwd\"\r\n\r\n--fwd\r\nContent-Type: text/plain\r\n\r\nBitte übernehmen.\r\n\
         --fwd\r\nContent-Type: message/rfc822\r\nContent-Disposition: attachment; filename=\"Angebot.eml\"\r\n\r\n\
         From: Kai Berger <kai@kunde-forward.example>\r\nTo: carla@{SAMPLE_DOMAIN}\r\nSubject: Angebot\r\n\
         Date: Mon, 07 Dec 2026 09:30:00 +0100\r\nMessage-ID: <angebot@kunde-forward.example>\r\n\r\n\
         Wir bitten um ein Angebot für 25 Lizenzen.\r\n--fwd--\r\n"
    )
}

/// A WordPress site's Contact Form 7 notification: Li filled the form in.
fn form_notification() -> String {
    format!(
        "From: WordPress <wordpress@acme-site.example>\r\nReply-To: Li Wong <li@shop-form.example>\r\n\
         To: sales@{SAMPLE_DOMAIN}\r\nSubject: Acme \"Contact us\"\r\nMessage-ID: <form-cf7@acme-site.example>\r\n\
         Date: Tue, 08 Dec 2026 10:10:00 +0000\r\nMIME-Version: 1.0\r\nX-Mailer: PHPMailer 6.9.1\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\r\n\
         Your Name: Li Wong\r\nYour Email: li@shop-form.example\r\nPhone: +44 20 7946 0958\r\nCompany: Shop Ltd\r\n\
         Your Message:\r\nWhat does the team plan cost for 30 seats?\r\n\r\n--\r\n\
         This e-mail was sent from a contact form on Acme (https://acme-site.example)\r\n"
    )
}

/// Jürgen writes himself; his signature gives his title, company, phone and website.
fn signed_email(id: &str, title: &str, phone: &str) -> String {
    format!(
        "From: Jürgen Weiß <juergen@mueller-sig.de>\r\nTo: sales@{SAMPLE_DOMAIN}\r\nSubject: Anfrage Wartung\r\n\
         Message-ID: <{id}@mueller-sig.de>\r\nDate: Tue, 08 Dec 2026 10:15:00 +0100\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n\
         Guten Tag,\r\n\r\nwir bitten um ein Angebot für 40 Lizenzen.\r\n\r\nMit freundlichen Grüßen\r\n\r\n\
         Jürgen Weiß\r\n{title}\r\nMüller Maschinenbau GmbH\r\nTel.: {phone} | Fax: 0711 1234569\r\n\
         www.mueller-sig.de\r\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_and_form_notifications_make_the_right_person_the_contact() {
    let env = TestEnv::new("forwards");
    let mut crm = SmtpToCrm::start(&env, &[], &[]).await;
    let schema = crm.schema.clone();
    let emails = [
        (format!("bob@{SAMPLE_DOMAIN}"), gmail_forward()),
        (format!("carla@{SAMPLE_DOMAIN}"), attached_forward()),
        (
            "wordpress@acme-site.example".to_string(),
            form_notification(),
        ),
        (
            "juergen@mueller-sig.de".to_string(),
            signed_email("sig-1", "Leiter Einkauf", "0711 1234560"),
        ),
    ];
    let rcpt = format!("crm@{SAMPLE_DOMAIN}");
    for (sender, text) in &emails {
        crm.send(text, sender, &[&rcpt]);
    }
    let results = collect(
        &env.consumer(&["crm-results"]),
        emails.len(),
        Duration::from_secs(120),
        Duration::ZERO,
    )
    .await;
    assert_eq!(results.len(), emails.len(), "every email reached the CRM");
    let parsed = collect(
        &env.consumer(&["parsed"]),
        emails.len(),
        Duration::from_secs(10),
        Duration::ZERO,
    )
    .await;
    let mut parsed: Vec<ParsedEmail> = decode_as(env.registry(), &parsed, |p: &ParsedEmail| {
        p.message_id.as_str()
    })
    .await;
    parsed.sort_by(|a, b| a.message_id.cmp(&b.message_id));

    let form = parsed[0]
        .form
        .clone()
        .expect("the notification is a form lead");
    let person = form.person.clone().expect("a person");
    assert_eq!(
        (
            form.provider.as_str(),
            person.email.as_str(),
            person.name.as_deref(),
            form.phone.as_deref(),
            form.company.as_deref(),
            form.message.as_deref(),
        ),
        (
            "contact-form-7",
            "li@shop-form.example",
            Some("Li Wong"),
            Some("+44 20 7946 0958"),
            Some("Shop Ltd"),
            Some("What does the team plan cost for 30 seats?"),
        )
    );
    let forwards: Vec<(String, String, String, i32)> = parsed
        .iter()
        .filter(|p| p.form.is_none() && p.forwarded.is_some())
        .map(|p| {
            let f = p.forwarded.clone().expect("a forward");
            let email = |a: Option<mailstream_runtime::records::Address>| {
                a.map(|a| a.email).unwrap_or_default()
            };
            (email(f.from), email(f.forwarder), f.format, f.depth)
        })
        .collect();
    assert_eq!(
        forwards,
        [
            (
                "kai@kunde-forward.example".to_string(),
                format!("carla@{SAMPLE_DOMAIN}"),
                Forwarded::ATTACHED.to_string(),
                1
            ),
            (
                "dana@prospect-forward.example".to_string(),
                format!("bob@{SAMPLE_DOMAIN}"),
                Forwarded::INLINE.to_string(),
                1
            ),
        ],
        "sorted by message id: form-cf7, fwd-attached, fwd-inline"
    );
    // The contact details: the form's fields and Jürgen's signature (his national number read
    // in Germany, the fax left out); none from the colleagues' forwards.
    let signed = parsed
        .iter()
        .find(|p| p.message_id == "sig-1@mueller-sig.de")
        .and_then(|p| p.contact_details.clone())
        .expect("the signature's details");
    assert_eq!(
        (
            signed.title.as_deref(),
            signed.company.as_deref(),
            signed.phones.as_slice(),
            signed.website.as_deref()
        ),
        (
            Some("Leiter Einkauf"),
            Some("Müller Maschinenbau GmbH"),
            ["+497111234560".to_string()].as_slice(),
            Some("https://www.mueller-sig.de")
        )
    );
    let contacts_query = format!(
        "SELECT email, coalesce(name, ''), coalesce(title, ''), coalesce(company, ''), \
         coalesce(phone, ''), coalesce(website, '') FROM {schema}.contacts ORDER BY email"
    );
    let contacts = psql_rows(&contacts_query);
    let expected = [
        [
            "dana@prospect-forward.example",
            "Dana Prospect",
            "CTO",
            "Prospect Labs Inc.",
            "+14155550132",
            "",
        ],
        [
            "juergen@mueller-sig.de",
            "Jürgen Weiß",
            "Leiter Einkauf",
            "Müller Maschinenbau GmbH",
            "+497111234560",
            "https://www.mueller-sig.de",
        ],
        ["kai@kunde-forward.example", "Kai Berger", "", "", "", ""],
        [
            "li@shop-form.example",
            "Li Wong",
            "",
            "Shop Ltd",
            "+442079460958",
            "",
        ],
    ];
    assert_eq!(
        contacts, expected,
        "the original senders, the form's person and Jürgen are the contacts, with what they \
         said of themselves; the colleagues and the site are not"
    );
    let activities = psql_rows(&format!(
        "SELECT a.message_id, a.sender_email, c.email FROM {schema}.email_activities a \
         JOIN {schema}.contacts c USING (contact_id) ORDER BY a.message_id"
    ));
    assert_eq!(
        activities,
        [
            [
                "form-cf7@acme-site.example".to_string(),
                "li@shop-form.example".to_string(),
                "li@shop-form.example".to_string(),
            ],
            [
                format!("fwd-attached@{SAMPLE_DOMAIN}"),
                "kai@kunde-forward.example".to_string(),
                "kai@kunde-forward.example".to_string(),
            ],
            [
                format!("fwd-inline@{SAMPLE_DOMAIN}"),
                "dana@prospect-forward.example".to_string(),
                "dana@prospect-forward.example".to_string(),
            ],
            [
                "sig-1@mueller-sig.de".to_string(),
                "juergen@mueller-sig.de".to_string(),
                "juergen@mueller-sig.de".to_string(),
            ],
        ]
    );
    // The activity keeps the whole forward: the colleague's note and the original's words.
    let text = |id: &str| {
        psql_rows(&format!(
            "SELECT coalesce(body_text, '') FROM {schema}.email_activities WHERE message_id = '{id}'"
        ))
        .concat()
        .concat()
    };
    let inline = text(&format!("fwd-inline@{SAMPLE_DOMAIN}"));
    assert!(
        inline.contains("FYI, a hot one.")
            && inline.contains("a demo of your product for 40 seats"),
        "{inline}"
    );
    let form = text("form-cf7@acme-site.example");
    assert!(
        form.contains("Phone: +44 20 7946 0958") && form.contains("30 seats"),
        "{form}"
    );
    let leads = psql_rows(&format!(
        "SELECT sender_email, coalesce(sender_name, '') FROM {schema}.leads ORDER BY sender_email"
    ));
    assert_eq!(
        leads,
        [
            ["dana@prospect-forward.example", "Dana Prospect"],
            ["juergen@mueller-sig.de", "Jürgen Weiß"],
            ["kai@kunde-forward.example", "Kai Berger"],
            ["li@shop-form.example", "Li Wong"],
        ]
    );
    // A later email of his with another title and number fills nothing the row has.
    crm.send(
        &signed_email("sig-2", "Geschäftsführer", "0711 7654321"),
        "juergen@mueller-sig.de",
        &[&rcpt],
    );
    let later = collect(
        &env.consumer(&["crm-results"]),
        emails.len() + 1,
        Duration::from_secs(120),
        Duration::ZERO,
    )
    .await;
    assert_eq!(
        later.len(),
        emails.len() + 1,
        "the later email reached the CRM"
    );
    assert_eq!(
        psql_rows(&contacts_query),
        expected,
        "CRM values are filled once, never overwritten"
    );
    crm.stop();
}
