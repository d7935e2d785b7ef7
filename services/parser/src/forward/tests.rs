use mailstream_runtime::records::{Forwarded, ParsedEmail};

use super::*;
use crate::{ParseContext, parse_message};

fn parse(subject: &str, body: &str) -> ParsedEmail {
    let raw = format!(
        "From: Bob Seller <bob@acme.example>\r\nTo: crm@in.acme.example\r\nSubject: {subject}\r\n\
         Message-ID: <fwd-1@acme.example>\r\nDate: Tue, 08 Dec 2026 10:00:00 +0000\r\n\
         Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n{body}"
    );
    parse_message(raw.as_bytes(), &ParseContext::default()).expect("parses")
}

fn original(record: &ParsedEmail) -> (&str, Option<&str>, &str) {
    let f = record.forwarded.as_ref().expect("a forward");
    let from = f.from.as_ref().expect("an original sender");
    (
        from.email.as_str(),
        from.name.as_deref(),
        f.body.as_deref().unwrap_or_default(),
    )
}

const DANA: &str = "Hello, we would like a demo of your product for 40 seats.";

#[test]
fn gmail_forward() {
    let r = parse(
        "Fwd: Demo request",
        &format!(
            "FYI, hot lead.\n\n---------- Forwarded message ---------\nFrom: Dana Prospect <dana@prospect.example>\n\
             Date: Mon, Dec 7, 2026 at 9:00 AM\nSubject: Demo request\nTo: <bob@acme.example>\n\n\n{DANA}\n\nThanks,\nDana\n"
        ),
    );
    assert_eq!(
        original(&r),
        ("dana@prospect.example", Some("Dana Prospect"), DANA)
    );
    let f = r.forwarded.as_ref().expect("forward");
    assert_eq!(f.subject.as_deref(), Some("Demo request"));
    assert_eq!(f.date, Some(1_796_634_000_000));
    assert_eq!(f.date_text.as_deref(), Some("Mon, Dec 7, 2026 at 9:00 AM"));
    assert_eq!((f.format.as_str(), f.depth), (Forwarded::INLINE, 1));
    let forwarder = f.forwarder.as_ref().expect("forwarder");
    assert_eq!(forwarder.email, "bob@acme.example");
    assert_eq!(
        r.lead_sender().map(|a| a.email.as_str()),
        Some("dana@prospect.example")
    );
    assert_eq!(
        r.from.as_ref().map(|a| a.email.as_str()),
        Some("bob@acme.example")
    );
}

#[test]
fn outlook_forwards_with_and_without_a_banner() {
    let block = format!(
        "From: Prospect, Dana [mailto:dana@prospect.example]\nSent: Monday, December 7, 2026 9:00 AM\n\
         To: Bob Seller <bob@acme.example>\nCc: Eve <eve@prospect.example>,\n  Sam <sam@prospect.example>\n\
         Subject: Demo request\n\n{DANA}\n"
    );
    let banner = parse(
        "FW: Demo request",
        &format!("See below.\n\n-----Original Message-----\n{block}"),
    );
    assert_eq!(
        original(&banner),
        ("dana@prospect.example", Some("Prospect, Dana"), DANA)
    );
    let rule = parse(
        "FW: Demo request",
        &format!("See below.\n\n________________________________\n{block}"),
    );
    assert_eq!(original(&rule).0, "dana@prospect.example");
    assert_eq!(
        rule.forwarded.as_ref().and_then(|f| f.date),
        Some(1_796_634_000_000)
    );
    // The same block under a reply is quoted history, not a forward.
    let reply = parse(
        "RE: Demo request",
        &format!("Sure.\n\n-----Original Message-----\n{block}"),
    );
    assert_eq!(reply.forwarded, None);
    let no_prefix = parse(
        "Demo request",
        &format!("Sure.\n\n-----Original Message-----\n{block}"),
    );
    assert_eq!(
        no_prefix.forwarded, None,
        "an Original Message banner needs a Fwd subject"
    );
}

#[test]
fn apple_mail_and_quoted_forwards() {
    let apple = parse(
        "Fwd: Demo request",
        &format!(
            "\n\nBegin forwarded message:\n\nFrom: Dana Prospect <dana@prospect.example>\n\
             Subject: Demo request\nDate: 7 December 2026 at 10:00:00 CET\nTo: bob@acme.example\n\n{DANA}\n"
        ),
    );
    assert_eq!(original(&apple).0, "dana@prospect.example");
    assert_eq!(
        apple.forwarded.as_ref().and_then(|f| f.date),
        Some(1_796_634_000_000)
    );
    // Quoted by the client (an HTML blockquote made text): unquoted one level, and the
    // forwarded message ends where the quote does.
    let quoted = parse(
        "Fwd: Demo request",
        &format!(
            "Look at this.\n\n> Begin forwarded message:\n>\n> From: \"Dana Prospect\" <dana@prospect.example>\n\
             > Subject: Demo request\n> Date: 7 December 2026 at 10:00:00 CET\n> To: bob@acme.example\n>\n> {DANA}\n\nBob again."
        ),
    );
    assert_eq!(
        original(&quoted),
        ("dana@prospect.example", Some("Dana Prospect"), DANA)
    );
}

#[test]
fn localized_forwards() {
    let german = parse(
        "WG: Angebot",
        "Bitte übernehmen.\n\n-------- Weitergeleitete Nachricht --------\nVon: Kai Berger <kai@kunde.example>\n\
         Datum: 07.12.2026 09:00\nBetreff: Angebot\nAn: bob@acme.example\n\nWir bitten um ein Angebot.\n",
    );
    assert_eq!(
        original(&german),
        (
            "kai@kunde.example",
            Some("Kai Berger"),
            "Wir bitten um ein Angebot."
        )
    );
    let french = parse(
        "TR: Devis",
        "\n-------- Message transféré --------\nDe : Léa Martin <lea@client.example>\nDate : lun. 7 déc. 2026 à 09:00\n\
         Objet : Devis\nÀ : bob@acme.example\n\nPourriez-vous nous envoyer un devis ?\n",
    );
    assert_eq!(original(&french).0, "lea@client.example");
    let f = french.forwarded.as_ref().expect("forward");
    assert_eq!(
        (f.date, f.date_text.as_deref()),
        (None, Some("lun. 7 déc. 2026 à 09:00"))
    );
    let spanish = parse(
        "RV: Presupuesto",
        "De: Ana Ruiz <ana@cliente.example>\nEnviado el: lunes, 7 de diciembre de 2026 9:00\n\
         Para: bob@acme.example\nAsunto: Presupuesto\n\nNecesitamos un presupuesto.\n",
    );
    assert_eq!(original(&spanish).0, "ana@cliente.example");
    let japanese = parse(
        "転送: 見積もり",
        "---------- 転送されたメッセージ ----------\n差出人: 山田 太郎 <taro@kokyaku.example>\n\
         日付: 2026-12-07 09:00\n件名: 見積もり\n宛先: bob@acme.example\n\n見積もりをお願いします。\n",
    );
    assert_eq!(original(&japanese).0, "taro@kokyaku.example");
}

#[test]
fn a_chain_of_forwards_yields_the_innermost_original() {
    let r = parse(
        "Fwd: Fwd: Demo request",
        &format!(
            "For you.\n\n---------- Forwarded message ---------\nFrom: Carol <carol@acme.example>\n\
             Date: Mon, Dec 7, 2026 at 10:00 AM\nSubject: Fwd: Demo request\nTo: bob@acme.example\n\nBob, this one is yours.\n\n\
             ---------- Forwarded message ---------\nFrom: Dana Prospect <dana@prospect.example>\n\
             Date: Mon, Dec 7, 2026 at 9:00 AM\nSubject: Demo request\nTo: carol@acme.example\n\n{DANA}\n"
        ),
    );
    assert_eq!(original(&r).0, "dana@prospect.example");
    assert_eq!(r.forwarded.as_ref().map(|f| f.depth), Some(2));
    // The original quoted a reply of its own: that is its history, not a forward.
    let history = parse(
        "Fwd: Re: Pricing",
        &format!(
            "---------- Forwarded message ---------\nFrom: Dana <dana@prospect.example>\nDate: Mon, Dec 7, 2026 at 9:00 AM\n\
             Subject: Re: Pricing\nTo: carol@acme.example\n\n{DANA}\n\nOn Sun, Dec 6, 2026 at 8:00 AM Carol <carol@acme.example> wrote:\n> Any questions?\n"
        ),
    );
    assert_eq!(
        original(&history),
        ("dana@prospect.example", Some("Dana"), DANA)
    );
}

#[test]
fn attached_forward() {
    let raw = format!(
        "From: Bob Seller <bob@acme.example>\r\nTo: crm@in.acme.example\r\nSubject: FW: Demo request\r\n\
         Message-ID: <fwd-2@acme.example>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n\
         --b1\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n\
         --b1\r\nContent-Type: message/rfc822\r\nContent-Disposition: attachment; filename=\"Demo request.eml\"\r\n\r\n\
         From: Dana Prospect <dana@prospect.example>\r\nTo: bob@acme.example\r\nSubject: Demo request\r\n\
         Date: Mon, 07 Dec 2026 09:00:00 +0000\r\nMessage-ID: <orig@prospect.example>\r\n\r\n{DANA}\r\n\r\n\
         --b1--\r\n"
    );
    let r = parse_message(raw.as_bytes(), &ParseContext::default()).expect("parses");
    assert_eq!(
        original(&r),
        ("dana@prospect.example", Some("Dana Prospect"), DANA)
    );
    let f = r.forwarded.as_ref().expect("forward");
    assert_eq!(
        (f.format.as_str(), f.depth, f.date),
        (Forwarded::ATTACHED, 1, Some(1_796_634_000_000))
    );
}

#[test]
fn a_robot_attaching_a_message_does_not_forward_it() {
    let raw = "From: no-reply@mta.example\r\nTo: a@acme.example\r\nSubject: Mail error\r\n\
               Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n\
               The mailbox is full.\r\n--b\r\nContent-Type: message/rfc822\r\n\r\nFrom: a@acme.example\r\n\
               Subject: x\r\n\r\nhello\r\n--b--\r\n";
    let r = parse_message(raw.as_bytes(), &ParseContext::default()).expect("parses");
    assert_eq!(r.forwarded, None);
}

#[test]
fn not_forwards() {
    for (subject, body) in [
        ("Hello", "Just a note.\nFrom: the desk of Bob\n"),
        (
            "Re: Demo",
            "Yes.\n\n---------- Forwarded message ---------\nFrom: Dana <dana@prospect.example>\n\nHi\n",
        ),
        ("Fwd: nothing", "I meant to forward something, sorry.\n"),
    ] {
        assert_eq!(parse(subject, body).forwarded, None, "{subject}");
    }
}

#[test]
fn a_forward_without_an_address_keeps_the_lead() {
    let r = parse(
        "Fwd: call",
        "---------- Forwarded message ---------\nFrom: Dana Prospect\nDate: Mon, Dec 7, 2026 at 9:00 AM\nSubject: call\n\nCall me.\n",
    );
    let f = r.forwarded.as_ref().expect("a forward");
    assert_eq!(f.from, None);
    assert_eq!(
        r.lead_sender().map(|a| a.email.as_str()),
        Some("bob@acme.example")
    );
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("without a sender address"))
    );
}

#[test]
fn hostile_nesting_is_bounded() {
    let mut body = String::new();
    for i in 0..1000 {
        body.push_str(&format!(
            "---------- Forwarded message ---------\nFrom: P{i} <p{i}@x.example>\nSubject: Fwd: x\n\n"
        ));
    }
    let started = std::time::Instant::now();
    let r = parse("Fwd: x", &body);
    assert_eq!(
        r.forwarded.as_ref().map(|f| f.depth),
        Some(MAX_DEPTH as i32)
    );
    assert!(r.warnings.iter().any(|w| w.contains("chain of more than")));
    let mut raw = format!("{DANA}\r\n");
    for i in 0..1000 {
        raw = format!(
            "From: p{i}@x.example\r\nSubject: FW: x\r\nContent-Type: multipart/mixed; boundary=\"b{i}\"\r\n\r\n\
             --b{i}\r\nContent-Type: message/rfc822\r\n\r\n{raw}\r\n--b{i}--\r\n"
        );
    }
    let r = parse_message(raw.as_bytes(), &ParseContext::default());
    if let Ok(r) = r {
        assert!(
            r.forwarded
                .as_ref()
                .is_none_or(|f| f.depth <= MAX_DEPTH as i32)
        );
    }
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}

#[test]
fn addresses_as_forwards_write_them() {
    let cases = [
        ("Ann Lee <ann@x.com>", "ann@x.com", Some("Ann Lee")),
        ("\"Lee, Ann\" <ann@X.COM>", "ann@x.com", Some("Lee, Ann")),
        ("Ann Lee [mailto:ann@x.com]", "ann@x.com", Some("Ann Lee")),
        ("*Ann Lee* <ann@x.com>", "ann@x.com", Some("Ann Lee")),
        ("ann@x.com (Ann Lee)", "ann@x.com", Some("Ann Lee")),
        ("ann@x.com", "ann@x.com", None),
        ("<ann@x.com>", "ann@x.com", None),
    ];
    for (value, email, name) in cases {
        let a = address(value).expect(value);
        assert_eq!(
            (a.email.as_str(), a.name.as_deref()),
            (email, name),
            "{value}"
        );
    }
    assert_eq!(address("Ann Lee"), None);
    assert_eq!(address("ann@localhost"), None);
}

#[test]
fn every_forward_banner_of_the_locales_is_one() {
    for locale in crate::reply::locales::LOCALES {
        for banner in locale.colon_banners {
            assert!(
                block::is_forward_banner(banner),
                "{}: {banner}",
                locale.code
            );
        }
    }
    assert!(!block::is_forward_banner("-----Original Message-----"));
    assert!(is_forward_subject("Fwd: x") && is_forward_subject("[EXT] WG: x"));
    assert!(is_forward_subject("FW : x") && !is_forward_subject("Fwd x"));
    assert!(is_reply_subject("AW: WG: x") && !is_reply_subject("Fwd: Re: x"));
}
