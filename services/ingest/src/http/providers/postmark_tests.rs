//! The Postmark mapping, on a payload shaped like the example of Postmark's inbound-webhook
//! documentation; the rebuilt message is read back with `mail-parser`.

use mail_parser::{MessageParser, MimeHeaders};

use super::*;

/// Postmark's documented example, trimmed (its attachment is real base64).
const EXAMPLE: &str = r#"{
  "FromName": "Postmarkapp Support",
  "MessageStream": "inbound",
  "From": "support@postmarkapp.com",
  "FromFull": {"Email": "support@postmarkapp.com", "Name": "Postmarkapp Support", "MailboxHash": ""},
  "To": "\"Firstname Lastname\" <yourhash+SampleHash@inbound.postmarkapp.com>",
  "ToFull": [{"Email": "yourhash+SampleHash@inbound.postmarkapp.com", "Name": "Firstname Lastname", "MailboxHash": "SampleHash"}],
  "Cc": "\"First Cc\" <firstcc@postmarkapp.com>, secondCc@postmarkapp.com",
  "CcFull": [
    {"Email": "firstcc@postmarkapp.com", "Name": "First Cc", "MailboxHash": ""},
    {"Email": "secondCc@postmarkapp.com", "Name": "", "MailboxHash": ""}
  ],
  "Bcc": "\"First Bcc\" <firstbcc@postmarkapp.com>",
  "BccFull": [{"Email": "firstbcc@postmarkapp.com", "Name": "First Bcc", "MailboxHash": ""}],
  "OriginalRecipient": "yourhash+SampleHash@inbound.postmarkapp.com",
  "Subject": "Test subject – naïve",
  "MessageID": "73e6d360-66eb-11e1-8e72-a8904824019b",
  "ReplyTo": "replyto@postmarkapp.com",
  "MailboxHash": "SampleHash",
  "Date": "Fri, 1 Aug 2014 16:45:32 -04:00",
  "TextBody": "This is a test text body.",
  "HtmlBody": "<html><body><p>This is a test html body.</p></body></html>",
  "StrippedTextReply": "This is the reply text",
  "Tag": "TestTag",
  "Headers": [
    {"Name": "X-Header-Test", "Value": ""},
    {"Name": "X-Spam-Status", "Value": "No"},
    {"Name": "X-Spam-Score", "Value": "-0.1"},
    {"Name": "Return-Path", "Value": "<bounces+abc@postmarkapp.com>"},
    {"Name": "Message-ID", "Value": "<CAGXpo2WKfxHWZ5UFYCR3H_J9SNMG+5AXUovfEFL6DjWBJSyZaA@mail.gmail.com>"},
    {"Name": "X-Evil", "Value": "x\r\nBcc: attacker@evil.test"}
  ],
  "Attachments": [
    {"Name": "test.txt", "Content": "VGhpcyBpcyBhdHRhY2htZW50IGNvbnRlbnRzLCBiYXNlLTY0IGVuY29kZWQu", "ContentType": "text/plain", "ContentLength": 45}
  ]
}"#;

fn example() -> Inbound {
    serde_json::from_str(EXAMPLE).expect("the documented example parses")
}

#[test]
fn the_documented_example_is_rebuilt_faithfully() {
    let raw = rebuild(&example()).expect("rebuilt");
    let message = MessageParser::default().parse(&raw).expect("parses");
    let from = message.from().and_then(|a| a.first()).expect("from");
    assert_eq!(from.address(), Some("support@postmarkapp.com"));
    assert_eq!(from.name(), Some("Postmarkapp Support"));
    let to: Vec<_> = message
        .to()
        .expect("to")
        .iter()
        .filter_map(|a| a.address())
        .collect();
    assert_eq!(to, ["yourhash+SampleHash@inbound.postmarkapp.com"]);
    let cc: Vec<_> = message
        .cc()
        .expect("cc")
        .iter()
        .filter_map(|a| a.address())
        .collect();
    assert_eq!(cc, ["firstcc@postmarkapp.com", "secondCc@postmarkapp.com"]);
    assert!(message.bcc().is_none(), "Bcc is envelope only");
    assert_eq!(message.subject(), Some("Test subject – naïve"));
    assert_eq!(
        message.message_id(),
        Some("CAGXpo2WKfxHWZ5UFYCR3H_J9SNMG+5AXUovfEFL6DjWBJSyZaA@mail.gmail.com")
    );
    assert_eq!(
        message.date().map(|d| d.to_rfc3339()),
        Some("2014-08-01T16:45:32-04:00".to_string())
    );
    assert_eq!(
        message.header_raw("X-Spam-Status").map(str::trim),
        Some("No")
    );
    assert_eq!(
        message
            .reply_to()
            .and_then(|a| a.first())
            .and_then(|a| a.address()),
        Some("replyto@postmarkapp.com")
    );
    assert_eq!(
        message.body_text(0).as_deref(),
        Some("This is a test text body.")
    );
    assert!(
        message
            .body_html(0)
            .is_some_and(|h| h.contains("This is a test html body."))
    );
    let attachment = message.attachment(0).expect("attachment");
    assert_eq!(attachment.attachment_name(), Some("test.txt"));
    assert_eq!(
        attachment.contents(),
        b"This is attachment contents, base-64 encoded."
    );
    // A CR LF inside a header value does not make a header of its own.
    assert!(message.header_raw("Bcc").is_none());
    assert!(!String::from_utf8_lossy(&raw).contains("\r\nBcc:"));
}

#[test]
fn the_envelope_is_the_original_recipient_and_the_return_path() {
    let inbound = example();
    let (from, to) = envelope(&inbound);
    assert_eq!(from.as_deref(), Some("bounces+abc@postmarkapp.com"));
    assert_eq!(to, ["yourhash+SampleHash@inbound.postmarkapp.com"]);

    let mut bare = example();
    bare.original_recipient.clear();
    bare.headers.clear();
    let (from, to) = envelope(&bare);
    assert_eq!(
        from.as_deref(),
        Some("support@postmarkapp.com"),
        "From when no Return-Path"
    );
    assert_eq!(to.len(), 4, "To, Cc and Bcc: {to:?}");

    bare.headers.push(Header {
        name: "Return-Path".into(),
        value: "<>".into(),
    });
    assert_eq!(envelope(&bare).0, None, "the null sender");
}

#[test]
fn without_a_message_id_header_postmarks_id_is_used_and_bad_base64_is_refused() {
    let mut inbound = example();
    inbound.headers.retain(|h| h.name != "Message-ID");
    let raw = rebuild(&inbound).expect("rebuilt");
    let message = MessageParser::default().parse(&raw).expect("parses");
    assert_eq!(
        message.message_id(),
        Some("postmark-73e6d360-66eb-11e1-8e72-a8904824019b@mailstream.invalid")
    );
    inbound.attachments[0].content = "not base64!".into();
    assert!(rebuild(&inbound).is_err());
}
