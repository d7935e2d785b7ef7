//! Delivery reports and automatic replies, per format family, class and language; whose
//! `Authentication-Results` count.
//!
//! The bounce fixtures (`fixtures/bounces/*.eml`) are short hand-written messages in the shape
//! of each MTA's report; the auto-replies are built here from a subject and the first lines.

use std::path::Path;

use mailstream_parser::{ParseContext, parse_message};
use mailstream_runtime::records::{AutoReply, Bounce, ParsedEmail};

fn ctx() -> ParseContext {
    ParseContext {
        ingest_id: "signals".into(),
        received_at: 1_765_000_000_000,
        ..ParseContext::default()
    }
}

fn fixture(name: &str) -> ParsedEmail {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/bounces")
        .join(name);
    let raw = std::fs::read(&path).expect("fixture");
    parse_message(&raw, &ctx()).expect("parses")
}

fn bounce(name: &str) -> Bounce {
    fixture(name)
        .bounce
        .unwrap_or_else(|| panic!("{name}: no bounce"))
}

/// (fixture, class, recipients with their class and reason)
type Expected = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str, Option<&'static str>)],
);

const BOUNCES: &[Expected] = &[
    (
        "postfix-dsn.eml",
        "hard",
        &[
            ("gone@example.org", "hard", Some("user-unknown")),
            ("full@example.org", "soft", Some("mailbox-full")),
        ],
    ),
    (
        "exim.eml",
        "hard",
        &[
            ("bob@example.org", "hard", Some("user-unknown")),
            ("carol@example.org", "hard", Some("host-unknown")),
        ],
    ),
    (
        "qmail.eml",
        "soft",
        &[("dan@example.org", "soft", Some("mailbox-full"))],
    ),
    (
        "sendmail.eml",
        "hard",
        &[("erin@example.org", "hard", Some("user-unknown"))],
    ),
    (
        "office365.eml",
        "hard",
        &[("frank@contoso.example", "hard", Some("user-unknown"))],
    ),
    (
        "domino.eml",
        "hard",
        &[("grace@notes.example.net", "hard", Some("user-unknown"))],
    ),
    (
        "groupwise.eml",
        "hard",
        &[("henry@gw.example.net", "hard", Some("user-unknown"))],
    ),
    (
        "gmail.eml",
        "soft",
        &[("ivy@example.org", "soft", Some("blocked"))],
    ),
    (
        "ses.eml",
        "hard",
        &[("jack@example.org", "hard", Some("user-unknown"))],
    ),
    (
        "delayed.eml",
        "delayed",
        &[("kate@example.org", "delayed", Some("network"))],
    ),
    (
        "challenge.eml",
        "challenge",
        &[("liam@example.org", "challenge", None)],
    ),
    (
        "arf.eml",
        "complaint",
        &[("mia@isp.example.net", "complaint", Some("abuse"))],
    ),
    (
        "via-list.eml",
        "hard",
        &[("noah@example.org", "hard", Some("user-unknown"))],
    ),
];

#[test]
fn every_format_family_gives_its_recipients_classes_and_reasons() {
    let mut failures = Vec::new();
    for (name, class, recipients) in BOUNCES {
        let b = bounce(name);
        let got: Vec<(String, String, Option<String>)> = b
            .recipients
            .iter()
            .map(|r| (r.address.clone(), r.class.clone(), r.reason.clone()))
            .collect();
        let want: Vec<(String, String, Option<String>)> = recipients
            .iter()
            .map(|(a, c, r)| (a.to_string(), c.to_string(), r.map(str::to_string)))
            .collect();
        if b.class != *class || got != want {
            failures.push(format!("{name}: class {} {got:?}", b.class));
        }
        // Old readers see only failed deliveries in failed_recipients.
        let failed: Vec<&str> = recipients
            .iter()
            .filter(|(_, c, _)| matches!(*c, "hard" | "soft" | "undetermined"))
            .map(|(a, _, _)| *a)
            .collect();
        if b.failed_recipients != failed {
            failures.push(format!(
                "{name}: failed_recipients {:?}",
                b.failed_recipients
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn dsn_fields_are_kept_per_recipient() {
    let b = bounce("postfix-dsn.eml");
    let first = &b.recipients[0];
    assert_eq!(first.original.as_deref(), Some("Gone.Person@example.org"));
    assert_eq!(first.action.as_deref(), Some("failed"));
    assert_eq!(first.status.as_deref(), Some("5.1.1"));
    assert_eq!(first.remote_mta.as_deref(), Some("mx.example.org"));
    assert!(
        first
            .diagnostic
            .as_deref()
            .is_some_and(|d| d.contains("Recipient address rejected: User unknown")),
        "{first:?}"
    );
    assert_eq!(b.status.as_deref(), Some("5.1.1"));
    assert_eq!(b.reason.as_deref(), Some("user-unknown"));
}

#[test]
fn delays_challenges_and_complaints_are_not_failures() {
    for name in ["delayed.eml", "challenge.eml", "arf.eml"] {
        let b = bounce(name);
        assert!(!b.is_failure(), "{name}");
        assert!(b.failed_recipients.is_empty(), "{name}");
    }
    assert!(bounce("exim.eml").is_failure());
}

#[test]
fn the_reporter_the_sender_and_the_list_are_never_recipients() {
    for (name, ..) in BOUNCES {
        let b = bounce(name);
        for r in &b.recipients {
            let local = r.address.split('@').next().unwrap_or_default();
            assert!(
                !matches!(
                    local.to_ascii_lowercase().as_str(),
                    "mailer-daemon" | "postmaster"
                ),
                "{name}: {r:?}"
            );
            assert_ne!(r.address, "ann@example.com", "{name}");
            assert_ne!(r.address, "dev@lists.example.com", "{name}");
        }
    }
}

fn message(headers: &str, subject: &str, body: &str) -> ParsedEmail {
    let raw = format!(
        "From: Pat Example <pat@example.org>\r\nTo: ann@example.com\r\nSubject: {subject}\r\nDate: Mon, 14 Dec 2026 10:00:00 +0000\r\nMessage-ID: <ar@example.org>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n{headers}\r\n{body}\r\n"
    );
    parse_message(raw.as_bytes(), &ctx()).expect("parses")
}

fn auto(headers: &str, subject: &str, body: &str) -> AutoReply {
    message(headers, subject, body)
        .auto_reply
        .unwrap_or_else(|| panic!("no auto-reply: {subject} / {body}"))
}

const AUTO: &str = "Auto-Submitted: auto-replied\r\n";

/// (language, subject, body, return date)
const OUT_OF_OFFICE: &[(&str, &str, &str, Option<&str>)] = &[
    (
        "en",
        "Out of Office: Our offer",
        "I am out of the office until January 15th, 2027 with limited access to email.",
        Some("2027-01-15"),
    ),
    (
        "de",
        "Abwesenheitsnotiz: Unser Angebot",
        "Ich bin bis zum 15.01.2027 nicht im Büro.",
        Some("2027-01-15"),
    ),
    (
        "fr",
        "Réponse automatique : Notre offre",
        "Je suis absent du bureau, de retour le 5 janvier 2027.",
        Some("2027-01-05"),
    ),
    (
        "es",
        "Respuesta automática: Nuestra oferta",
        "Estoy fuera de la oficina hasta el 10 de enero de 2027.",
        Some("2027-01-10"),
    ),
    (
        "pt",
        "Resposta automática: Nossa oferta",
        "Estou de férias até 12/01/2027.",
        Some("2027-01-12"),
    ),
    (
        "it",
        "Risposta automatica: La nostra offerta",
        "Sono fuori ufficio fino al 7 gennaio 2027.",
        Some("2027-01-07"),
    ),
    (
        "nl",
        "Automatisch antwoord: Ons aanbod",
        "Ik ben afwezig tot 8 januari 2027.",
        Some("2027-01-08"),
    ),
    (
        "sv",
        "Automatiskt svar: Vårt erbjudande",
        "Jag är på semester till 2027-01-09.",
        Some("2027-01-09"),
    ),
    (
        "no",
        "Automatisk svar: Vårt tilbud",
        "Jeg er på ferie til 11.01.2027.",
        Some("2027-01-11"),
    ),
    (
        "da",
        "Autosvar: Vores tilbud",
        "Jeg er ikke på kontoret før 4. januar 2027.",
        Some("2027-01-04"),
    ),
    (
        "fi",
        "Automaattinen vastaus: Tarjouksemme",
        "Olen lomalla 6.1.2027 asti.",
        Some("2027-01-06"),
    ),
    (
        "pl",
        "Automatyczna odpowiedź: Nasza oferta",
        "Jestem na urlopie do 13 stycznia 2027.",
        Some("2027-01-13"),
    ),
    (
        "cs",
        "Automatická odpověď: Naše nabídka",
        "Jsem na dovolené do 14. ledna 2027.",
        Some("2027-01-14"),
    ),
    (
        "ru",
        "Автоматический ответ: Наше предложение",
        "Я в отпуске до 12 января 2027.",
        Some("2027-01-12"),
    ),
    (
        "ja",
        "自動応答: ご提案",
        "1月8日まで休暇をいただいております。",
        Some("2027-01-08"),
    ),
    (
        "zh",
        "自动回复: 我们的报价",
        "我正在休假，2027年1月6日返回。",
        Some("2027-01-06"),
    ),
    (
        "ko",
        "자동 응답: 제안",
        "2027년 1월 5일까지 휴가입니다.",
        Some("2027-01-05"),
    ),
    (
        "tr",
        "Otomatik yanıt: Teklifimiz",
        "15 Ocak 2027 tarihine kadar izindeyim.",
        Some("2027-01-15"),
    ),
];

#[test]
fn out_of_office_in_every_language_with_the_return_date() {
    let mut failures = Vec::new();
    for (language, subject, body, date) in OUT_OF_OFFICE {
        let a = auto(AUTO, subject, body);
        if a.class != "out-of-office"
            || a.language.as_deref() != Some(*language)
            || a.return_date.as_deref() != *date
        {
            failures.push(format!("{language}: {a:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// (language, body, replacement)
const LEFT: &[(&str, &str, Option<&str>)] = &[
    (
        "en",
        "Pat is no longer with Example Corp. Please contact Jane Doe (jane.doe@example.org).",
        Some("jane.doe@example.org"),
    ),
    ("en", "This mailbox is no longer monitored.", None),
    (
        "de",
        "Pat ist nicht mehr im Unternehmen tätig. Bitte wenden Sie sich an max@example.org.",
        Some("max@example.org"),
    ),
    (
        "fr",
        "Pat ne fait plus partie de la société. Merci de contacter marie@example.org.",
        Some("marie@example.org"),
    ),
    (
        "es",
        "Pat ya no trabaja en la empresa. Escriba a lucia@example.org.",
        Some("lucia@example.org"),
    ),
    ("pt", "Pat não faz mais parte da empresa.", None),
    ("it", "Pat non fa più parte dell'azienda.", None),
    ("nl", "Pat is niet meer werkzaam bij ons.", None),
    ("sv", "Pat arbetar inte längre hos oss.", None),
    ("no", "Pat jobber ikke lenger her.", None),
    ("da", "Pat arbejder ikke længere her.", None),
    ("fi", "Pat ei enää työskentele meillä.", None),
    ("pl", "Pat nie pracuje już w firmie.", None),
    ("cs", "Pat již nepracuje ve společnosti.", None),
    ("ru", "Пат больше не работает в компании.", None),
    ("ja", "山田は退職いたしました。", None),
    ("zh", "王先生已离职。", None),
    ("ko", "김은 퇴사했습니다.", None),
    ("tr", "Pat artık şirketimizde çalışmıyor.", None),
];

#[test]
fn left_the_company_in_every_language_with_the_replacement() {
    let mut failures = Vec::new();
    for (language, body, replacement) in LEFT {
        let a = auto(AUTO, "Automatic reply: Our offer", body);
        let got = a.replacement.as_ref().map(|r| r.email.as_str());
        if a.class != "left-company"
            || a.language.as_deref() != Some(*language)
            || got != *replacement
        {
            failures.push(format!("{language}: {a:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let named = auto(AUTO, "Automatic reply", LEFT[0].1);
    assert_eq!(
        named.replacement.and_then(|r| r.name).as_deref(),
        Some("Jane Doe")
    );
}

/// (language, subject, body)
const UNSUBSCRIBE: &[(&str, &str, &str)] = &[
    ("en", "unsubscribe", ""),
    (
        "en",
        "Re: Our offer",
        "Please remove me from your mailing list.",
    ),
    (
        "en",
        "Unsubscribe",
        "This message was automatically generated by Mail to unsubscribe you from this mailing list.",
    ),
    (
        "de",
        "Abmelden",
        "Bitte entfernen Sie mich aus Ihrem Verteiler.",
    ),
    ("fr", "Désinscription", "Merci de me désabonner."),
    ("es", "Baja", "Por favor, darme de baja de la lista."),
    ("pt", "Descadastrar", "Por favor me remova da lista."),
    ("it", "Cancellami", "Non voglio più ricevere queste email."),
    ("nl", "Afmelden", "Graag uitschrijven."),
    ("sv", "Avregistrera", "Ta bort mig från listan."),
    ("no", "Avmeld", "Fjern meg fra listen."),
    ("da", "Afmeld", "Fjern mig fra listen."),
    ("fi", "Peruuta tilaus", "Poista minut listalta."),
    ("pl", "Wypisz", "Proszę usuń mnie z listy."),
    ("cs", "Odhlásit", "Odhlaste mě prosím."),
    ("ru", "Отписаться", "Удалите меня из рассылки."),
    ("ja", "配信停止", "配信停止をお願いします。"),
    ("zh", "退订", "请取消订阅。"),
    ("ko", "수신거부", "수신 거부합니다."),
    ("tr", "Abonelikten çık", "Beni listeden çıkarın."),
];

#[test]
fn unsubscribe_requests_in_every_language() {
    let mut failures = Vec::new();
    for (language, subject, body) in UNSUBSCRIBE {
        let a = message("", subject, body).auto_reply;
        if a.as_ref().map(|a| a.class.as_str()) != Some("unsubscribe")
            || a.as_ref().and_then(|a| a.language.as_deref()) != Some(*language)
        {
            failures.push(format!("{language} {subject}: {a:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn ordinary_mail_is_no_auto_reply_and_list_mail_no_unsubscribe_request() {
    let plain = message("", "Our offer", "Thanks, we would like a demo next week.");
    assert!(plain.auto_reply.is_none());
    assert!(plain.bounce.is_none());
    let newsletter = message(
        "List-Unsubscribe: <mailto:leave@example.org>\r\n",
        "Unsubscribe",
        "Our news",
    );
    assert!(
        newsletter.auto_reply.is_none(),
        "{:?}",
        newsletter.auto_reply
    );
    let generic = auto(AUTO, "Re: Our offer", "Thank you for your message.");
    assert_eq!(generic.class, "auto-reply");
    assert_eq!(generic.kind, "auto-replied");
}

/// Authentication results come from our own MTA's header only: a header the sender wrote (or
/// another server added) is ignored, whatever it claims, so a `pass` cannot be forged.
#[test]
fn authentication_results_are_read_from_our_own_mta_only() {
    let raw = |headers: &str| {
        format!(
            "{headers}From: Kim <kim@acme.example>\r\nTo: sales@in.example.com\r\n\
             Subject: Pricing\r\nMessage-ID: <auth-1@acme.example>\r\n\r\nHello\r\n"
        )
    };
    let auth = |headers: &str, trusted: &[&str]| {
        let ids: Vec<String> = trusted.iter().map(|t| t.to_string()).collect();
        let ctx = ParseContext {
            trusted_authserv_ids: mailstream_parser::trusted_authserv_ids(&ids),
            ..ctx()
        };
        let parsed = parse_message(raw(headers).as_bytes(), &ctx).expect("parses");
        let a = parsed.auth;
        (a.spf, a.dkim, a.dmarc)
    };
    let pass = || Some("pass".to_string());
    let ours = "Authentication-Results: MX.in.example.com 1 (our MTA);\r\n \
                spf=fail smtp.mailfrom=acme.example; dkim=none; dmarc=fail header.from=acme.example\r\n";
    let forged =
        "Authentication-Results: mx.in.example.com.evil.test; spf=pass; dkim=pass; dmarc=pass\r\n";
    let forged_no_id = "Authentication-Results: spf=pass; dkim=pass; dmarc=pass\r\n";
    let trusted = ["mx.in.example.com"];
    // Ours is the topmost: the sender's own claim below it, or above it, changes nothing.
    let ours_only = (
        Some("fail".into()),
        Some("none".into()),
        Some("fail".into()),
    );
    assert_eq!(auth(&format!("{ours}{forged}"), &trusted), ours_only);
    assert_eq!(
        auth(&format!("{forged}{forged_no_id}{ours}"), &trusted),
        ours_only
    );
    // No header of ours: nothing, however many claim a pass.
    assert_eq!(
        auth(&format!("{forged}{forged_no_id}"), &trusted),
        (None, None, None)
    );
    // Nothing trusted (the default): nothing read.
    assert_eq!(auth(ours, &[]), (None, None, None));
    let good = "Authentication-Results: mx.in.example.com;\r\n spf=pass smtp.mailfrom=acme.example;\r\n \
                dkim=pass header.d=acme.example; dmarc=pass header.from=acme.example\r\n";
    assert_eq!(auth(good, &trusted), (pass(), pass(), pass()));
}

/// S/MIME is reported: a signed email reads as usual, its detached signature not kept as an
/// attachment; an encrypted one says its content cannot be read, and keeps the envelope.
#[test]
fn smime_signed_and_encrypted_mail_is_reported() {
    let parse = |raw: String| parse_message(raw.as_bytes(), &ctx()).expect("parses");
    let head = "From: Kim <kim@acme.example>\r\nTo: sales@in.example.com\r\nSubject: Order\r\n\
                MIME-Version: 1.0\r\n";
    let signed = parse(format!(
        "{head}Message-ID: <smime-1@acme.example>\r\nContent-Type: multipart/signed; \
         protocol=\"application/pkcs7-signature\"; micalg=sha-256; boundary=\"s1\"\r\n\r\n\
         --s1\r\nContent-Type: multipart/mixed; boundary=\"m1\"\r\n\r\n\
         --m1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nPlease ship 40 units.\r\n\
         --m1\r\nContent-Type: application/pdf; name=\"po.pdf\"\r\n\
         Content-Disposition: attachment; filename=\"po.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n\
         JVBERi0xLjQKJeLjz9M=\r\n--m1--\r\n\
         --s1\r\nContent-Type: application/pkcs7-signature; name=\"smime.p7s\"\r\n\
         Content-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=\"smime.p7s\"\r\n\r\n\
         MIAGCSqGSIb3DQEHAqCAMIACAQExDzANBglghkgBZQMEAgEFADCABgkqhkiG9w0BBwEAAA==\r\n--s1--\r\n"
    ));
    assert_eq!(signed.smime.as_deref(), Some("signed"));
    assert_eq!(
        signed.text.as_deref().map(str::trim),
        Some("Please ship 40 units.")
    );
    let files: Vec<Option<&str>> = signed
        .attachments
        .iter()
        .map(|a| a.filename.as_deref())
        .collect();
    assert_eq!(
        files,
        [Some("po.pdf")],
        "the signature is reported, not kept as a file"
    );
    assert!(
        signed.warnings.iter().all(|w| !w.contains("S/MIME")),
        "{:?}",
        signed.warnings
    );

    let encrypted = parse(format!(
        "{head}Message-ID: <smime-2@acme.example>\r\nContent-Type: application/pkcs7-mime; \
         smime-type=enveloped-data; name=\"smime.p7m\"\r\nContent-Transfer-Encoding: base64\r\n\
         Content-Disposition: attachment; filename=\"smime.p7m\"\r\n\r\n\
         MIAGCSqGSIb3DQEHA6CAMIACAQAxggFAMIIBPAIBADAkMBQxEjAQBgNVBAMMCWtpbUBhY21lAgw=\r\n"
    ));
    assert_eq!(encrypted.smime.as_deref(), Some("encrypted"));
    assert!(
        encrypted
            .warnings
            .iter()
            .any(|w| w.contains("S/MIME encrypted")),
        "{:?}",
        encrypted.warnings
    );
    assert_eq!(
        encrypted.attachments.len(),
        1,
        "the encrypted envelope is kept"
    );

    let plain = parse(format!(
        "{head}Message-ID: <smime-3@acme.example>\r\nContent-Type: text/plain\r\n\r\nHi\r\n"
    ));
    assert_eq!(plain.smime, None);
}
