use mailstream_runtime::records::{ContactDetails, ParsedEmail};

use crate::{ParseContext, parse_message};

fn parse(from: &str, subject: &str, body: &str) -> ParsedEmail {
    let raw = format!(
        "From: {from}\r\nTo: sales@in.acme.example\r\nSubject: {subject}\r\n\
         Message-ID: <sig-1@x.example>\r\nDate: Tue, 08 Dec 2026 10:00:00 +0000\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: 8bit\r\n\r\n{body}"
    );
    parse_message(raw.as_bytes(), &ParseContext::default()).expect("parses")
}

fn details(record: &ParsedEmail) -> &ContactDetails {
    record.contact_details.as_ref().expect("contact details")
}

#[test]
fn a_german_signature_gives_name_title_company_phone_and_website() {
    let r = parse(
        "juergen@mueller-maschinenbau.de",
        "Anfrage Wartungsvertrag",
        "Guten Tag,\n\nwir hätten gern ein Angebot für 40 Lizenzen.\n\n\
         Mit freundlichen Grüßen\n\nJürgen Weiß\nLeiter Einkauf\nMüller Maschinenbau GmbH\n\
         Tel.: 0711 1234560 | Fax: 0711 1234569\nMobil: +49 (0)170 1234567\n\
         www.mueller-maschinenbau.de\n",
    );
    let d = details(&r);
    assert_eq!(d.source, "signature");
    assert_eq!(d.name.as_deref(), Some("Jürgen Weiß"));
    assert_eq!(d.title.as_deref(), Some("Leiter Einkauf"));
    assert_eq!(d.company.as_deref(), Some("Müller Maschinenbau GmbH"));
    // The national number read in Germany (the sender's .de), the fax left out.
    assert_eq!(d.phones, ["+497111234560", "+491701234567"]);
    assert_eq!(
        d.website.as_deref(),
        Some("https://www.mueller-maschinenbau.de")
    );
}

#[test]
fn a_title_line_names_the_company_and_social_links_are_not_the_website() {
    let r = parse(
        "Jane Doe <jane@acme-robotics.com>",
        "Pricing for 200 seats",
        "Hi team,\n\ncould you send pricing for 200 seats?\n\nBest regards,\nJane Doe\n\
         VP of Sales | Acme Robotics Inc.\nM: +1 415-555-0132\n\
         https://www.linkedin.com/in/janedoe\nhttps://acme-robotics.com/contact\n",
    );
    let d = details(&r);
    assert_eq!(d.name.as_deref(), Some("Jane Doe"));
    assert_eq!(d.title.as_deref(), Some("VP of Sales"));
    assert_eq!(d.company.as_deref(), Some("Acme Robotics Inc."));
    assert_eq!(d.phones, ["+14155550132"]);
    assert_eq!(d.website.as_deref(), Some("https://acme-robotics.com"));
}

#[test]
fn national_numbers_of_a_generic_domain_and_invalid_numbers_are_left_out() {
    let r = parse(
        "sam@startup.io",
        "Question",
        "Hello,\n\nis there an API?\n\nThanks,\nSam Lee\nFounder\n(415) 555-0132\n\
         Order 2026-12-08 ref 99999999\n",
    );
    let d = details(&r);
    assert_eq!(d.title.as_deref(), Some("Founder"));
    assert!(d.phones.is_empty(), "{:?}", d.phones);
}

#[test]
fn a_forward_gives_the_original_authors_signature_never_the_forwarders() {
    let forward = parse(
        "Colleague Name <colleague@in.acme.example>",
        "Fwd: Pricing",
        "FYI, a lead for you.\n\nBest,\nColleague Name\nAccount Executive\nAcme Software GmbH\n\
         +49 30 1234567\n\n---------- Forwarded message ---------\n\
         From: Jane Doe <jane@acme-robotics.co.uk>\nDate: Mon, 7 Dec 2026 at 09:00\n\
         Subject: Pricing\nTo: <info@in.acme.example>\n\nCould you send pricing for 200 seats?\n\n\
         Kind regards,\nJane Doe\nHead of Procurement | Acme Robotics Ltd\nT: 020 7123 4567\n\
         www.acme-robotics.co.uk\n",
    );
    let original = forward.forwarded.as_ref().expect("a forward");
    assert_eq!(
        original.body.as_deref().map(str::trim),
        Some("Could you send pricing for 200 seats?"),
        "the signature is not in the original's body"
    );
    let d = details(&forward);
    assert_eq!(d.source, "signature");
    assert_eq!(d.name.as_deref(), Some("Jane Doe"));
    assert_eq!(d.title.as_deref(), Some("Head of Procurement"));
    assert_eq!(d.company.as_deref(), Some("Acme Robotics Ltd"));
    // A UK national number: the original sender's .uk, not the forwarder's domain.
    assert_eq!(d.phones, ["+442071234567"]);
    assert_eq!(
        d.website.as_deref(),
        Some("https://www.acme-robotics.co.uk")
    );
    // The original signed with nothing: the forwarder's signature is still not the lead's.
    let unsigned = parse(
        "Colleague Name <colleague@in.acme.example>",
        "Fwd: Pricing",
        "FYI\n\nBest,\nColleague Name\nAccount Executive\n+49 30 1234567\n\n\
         ---------- Forwarded message ---------\nFrom: Jane Doe <jane@acme-robotics.com>\n\
         Date: Mon, 7 Dec 2026 at 09:00\nSubject: Pricing\nTo: <info@in.acme.example>\n\n\
         Could you send pricing?\n",
    );
    assert!(unsigned.forwarded.is_some());
    assert_eq!(unsigned.contact_details, None, "the forwarder's signature");
}

#[test]
fn a_bounce_or_a_mail_without_signature_says_nothing() {
    let plain = parse("ann@shop.example", "Hi", "Could you call me back?\n");
    assert_eq!(plain.contact_details, None);
    let footer = parse(
        "ann@shop.example",
        "Hi",
        "Could you call me back?\n\nSent from my iPhone\n",
    );
    assert_eq!(footer.contact_details, None);
}

#[test]
fn a_form_gives_its_person_company_and_phone() {
    let raw = "From: WordPress <wordpress@acme-site.example>\r\nReply-To: Li Wong <li@shop.co.uk>\r\n\
         Subject: Acme \"Contact us\"\r\nTo: sales@in.acme.example\r\nMessage-ID: <form-2@site.example>\r\n\
         Date: Tue, 08 Dec 2026 10:00:00 +0000\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\
         Your Name: Li Wong\nYour Email: li@shop.co.uk\nPhone: 020 7946 0958\nCompany: Shop Ltd\n\
         Your Message:\nHello,\n\nwhat does the team plan cost?\n\n--\n\
         This e-mail was sent from a contact form on Acme (https://acme-site.example)\n";
    let r = parse_message(raw.as_bytes(), &ParseContext::default()).expect("parses");
    assert!(r.form.is_some());
    let d = details(&r);
    assert_eq!(d.source, "form");
    assert_eq!(d.name.as_deref(), Some("Li Wong"));
    assert_eq!(d.company.as_deref(), Some("Shop Ltd"));
    // A UK number written nationally, read in the UK (the person's .co.uk).
    assert_eq!(d.phones, ["+442079460958"]);
}

#[test]
fn a_title_line_may_carry_the_name_and_a_department_is_not_a_company() {
    let r = parse(
        "Tom Baker <tom@client.example>",
        "Re: Meeting",
        "Tuesday works.\n\nCheers,\nTom\n--\nTom Baker | Procurement | Client Corp\n",
    );
    let d = details(&r);
    assert_eq!(
        (d.name.as_deref(), d.title.as_deref(), d.company.as_deref()),
        (Some("Tom Baker"), Some("Procurement"), Some("Client Corp"))
    );
    let r = parse(
        "Ana Souza <ana@cliente.example>",
        "Pricing",
        "What does it cost?\n\nBest regards,\nAna Souza\nDirector - Sales & Marketing, EMEA\n",
    );
    let d = details(&r);
    assert_eq!(
        (d.title.as_deref(), d.company.as_deref()),
        (Some("Director"), None)
    );
}
