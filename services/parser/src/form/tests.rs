use mailstream_runtime::records::ParsedEmail;

use super::*;
use crate::{ParseContext, parse_message};

fn parse(headers: &str, content_type: &str, body: &str) -> ParsedEmail {
    let raw = format!(
        "{headers}To: sales@in.acme.example\r\nMessage-ID: <form-1@site.example>\r\n\
         Date: Tue, 08 Dec 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n\
         Content-Type: {content_type}; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n{body}"
    );
    parse_message(raw.as_bytes(), &ParseContext::default()).expect("parses")
}

fn person(record: &ParsedEmail) -> (String, Option<String>) {
    let form = record.form.as_ref().expect("a form lead");
    let p = form.person.clone().expect("a person");
    (p.email, p.name)
}

#[test]
fn contact_form_7() {
    let r = parse(
        "From: WordPress <wordpress@acme-site.example>\r\nReply-To: Li Wong <li@shop.example>\r\nSubject: Acme \"Contact us\"\r\n",
        "text/plain",
        "From: Li Wong <li@shop.example>\nSubject: Pricing\n\nMessage Body:\nHello,\nwhat does the team plan cost?\n\nThanks\n\n--\nThis e-mail was sent from a contact form on Acme (https://acme-site.example)\n",
    );
    // CF7's default template: `From:` is the person, the message under `Message Body:`.
    assert_eq!(
        r.form, None,
        "no field of a known role but the message: not clear enough"
    );
    let r = parse(
        "From: WordPress <wordpress@acme-site.example>\r\nReply-To: Li Wong <li@shop.example>\r\nSubject: Acme \"Contact us\"\r\n",
        "text/plain",
        "Your Name: Li Wong\nYour Email: li@shop.example\nPhone: +44 20 7946 0958\nCompany: Shop Ltd\n\
         Your Message:\nHello,\n\nwhat does the team plan cost?\n\n--\nThis e-mail was sent from a contact form on Acme (https://acme-site.example)\n",
    );
    assert_eq!(
        person(&r),
        ("li@shop.example".into(), Some("Li Wong".into()))
    );
    let f = r.form.as_ref().expect("form");
    assert_eq!(f.provider, "contact-form-7");
    assert_eq!(f.phone.as_deref(), Some("+44 20 7946 0958"));
    assert_eq!(f.company.as_deref(), Some("Shop Ltd"));
    assert_eq!(
        f.message.as_deref(),
        Some("Hello,\n\nwhat does the team plan cost?")
    );
    assert_eq!(f.fields.len(), 5);
    assert_eq!(f.fields[0].name, "Your Name");
    assert_eq!(
        r.lead_sender().map(|a| a.email.as_str()),
        Some("li@shop.example")
    );
}

#[test]
fn html_tables_of_hubspot_and_gravity_forms() {
    let hubspot = parse(
        "From: HubSpot <noreply@notifications.hubspot.com>\r\nSubject: New form submission on Acme\r\n",
        "text/html",
        "<html><body><p>Someone filled out <b>Contact us</b>.</p><table>\
         <tr><td><b>First Name:</b></td><td>Kai</td></tr><tr><td><b>Last Name:</b></td><td>Berger</td></tr>\
         <tr><td>Email:</td><td><a href=\"mailto:kai@kunde.example\">kai@kunde.example</a></td></tr>\
         <tr><td>Company name</td><td>Kunde GmbH</td></tr><tr><td>Message</td><td>Angebot bitte.<br>Danke.</td></tr>\
         </table></body></html>",
    );
    assert_eq!(
        person(&hubspot),
        ("kai@kunde.example".into(), Some("Kai Berger".into()))
    );
    let f = hubspot.form.as_ref().expect("form");
    assert_eq!(f.provider, "hubspot");
    assert_eq!(f.company.as_deref(), Some("Kunde GmbH"));
    assert_eq!(f.message.as_deref(), Some("Angebot bitte.\nDanke."));
    let gravity = parse(
        "From: \"Acme Site\" <admin@acme-site.example>\r\nSubject: New submission from Contact\r\n",
        "text/html",
        "<table><tr><td><strong>Name</strong></td></tr><tr><td>Ana Ruiz</td></tr>\
         <tr><td><strong>Email</strong></td></tr><tr><td>ana@cliente.example</td></tr>\
         <tr><td><strong>Phone</strong></td></tr><tr><td>(555) 010-2030</td></tr></table>",
    );
    assert_eq!(
        person(&gravity),
        ("ana@cliente.example".into(), Some("Ana Ruiz".into()))
    );
    assert_eq!(
        gravity.form.as_ref().map(|f| f.provider.as_str()),
        Some("generic")
    );
}

#[test]
fn typeform_questions_and_reply_to_only() {
    let typeform = parse(
        "From: Typeform <notifications@typeform.com>\r\nSubject: New response for Demo request\r\n",
        "text/plain",
        "You got a new response!\n\nWhat's your name?\nSam Park\n\nWhat's your email address?\nsam@startup.example\n\n\
         What can we help you with?\nA demo for our team of 12.\n",
    );
    assert_eq!(
        person(&typeform),
        ("sam@startup.example".into(), Some("Sam Park".into()))
    );
    assert_eq!(
        typeform.form.as_ref().and_then(|f| f.message.as_deref()),
        Some("A demo for our team of 12.")
    );
    // No email field: Reply-To names the person.
    let reply_to = parse(
        "From: noreply@acme-site.example\r\nReply-To: \"Eve Stone\" <eve@buyer.example>\r\nSubject: Website enquiry\r\n",
        "text/plain",
        "Name: Eve Stone\nCompany: Buyer Inc\nMessage: Please call me back.\n",
    );
    assert_eq!(
        person(&reply_to),
        ("eve@buyer.example".into(), Some("Eve Stone".into()))
    );
    // German labels.
    let german = parse(
        "From: no-reply@firma-site.example\r\nSubject: Neue Anfrage über das Kontaktformular\r\n",
        "text/plain",
        "Vorname: Jonas\nNachname: Weber\nE-Mail: jonas@kunde.example\nTelefon: 030 1234567\nNachricht: Bitte um Rückruf.\n",
    );
    assert_eq!(
        person(&german),
        ("jonas@kunde.example".into(), Some("Jonas Weber".into()))
    );
}

#[test]
fn unclear_structure_leaves_the_email_alone() {
    // A person's email with a signature that lists contact details.
    let human = parse(
        "From: Dana Prospect <dana@prospect.example>\r\nSubject: Question\r\n",
        "text/plain",
        "Hi, can you send pricing?\n\nDana\nPhone: +1 555 0100\nEmail: dana@prospect.example\n",
    );
    assert_eq!(human.form, None);
    // A robot without fields (a newsletter), and one whose form names nobody.
    let newsletter = parse(
        "From: noreply@news.example\r\nSubject: Our December news\r\n",
        "text/plain",
        "Read our latest product news at https://news.example/december\n",
    );
    assert_eq!(newsletter.form, None);
    let nobody = parse(
        "From: noreply@acme-site.example\r\nSubject: New submission\r\n",
        "text/plain",
        "Name: Anonymous\nMessage: Nice site!\n",
    );
    assert_eq!(nobody.form, None, "no address: not a lead");
    let reply = parse(
        "From: noreply@acme-site.example\r\nSubject: Re: New submission\r\n",
        "text/plain",
        "Name: Li\nEmail: li@shop.example\n",
    );
    assert_eq!(reply.form, None);
}

#[test]
fn hostile_forms_are_bounded() {
    let mut body = String::new();
    for i in 0..100_000 {
        body.push_str(&format!("Field {i}: value {i}\nEmail: p{i}@x.example\n"));
    }
    let started = std::time::Instant::now();
    let r = parse(
        "From: noreply@site.example\r\nSubject: New submission\r\n",
        "text/plain",
        &body,
    );
    let f = r.form.as_ref().expect("a form");
    assert!(f.fields.len() <= MAX_FIELDS);
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    let long = format!(
        "Name: {}\nEmail: a@b.example\nMessage: {}\n",
        "n".repeat(100_000),
        "m".repeat(100_000)
    );
    let r = parse(
        "From: noreply@site.example\r\nSubject: x\r\n",
        "text/plain",
        &long,
    );
    let f = r.form.as_ref().expect("a form");
    assert!(f.fields.iter().all(|h| h.value.len() <= 4 * 1024));
    let person = f.person.as_ref().expect("a person");
    assert!(person.name.as_ref().is_some_and(|n| n.len() <= 1024));
}
