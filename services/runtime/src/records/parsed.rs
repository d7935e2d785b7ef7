//! `ParsedEmail` (schema `parsed.avsc`): one normalized email, written by the parser and read by
//! the resolver. Keyed by `message_id`.

use serde::{Deserialize, Serialize};

/// A mailbox: normalized address and decoded display name.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Address {
    /// Address with the domain lower-cased (local part and plus-addressing kept).
    pub email: String,
    /// Decoded display name.
    pub name: Option<String>,
}

/// Whether an attachment is shown inline (with a Content-ID, in the HTML) or attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Disposition {
    #[serde(rename = "ATTACHMENT")]
    Attachment,
    #[serde(rename = "INLINE")]
    Inline,
}

/// One attachment or inline part that is not a body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub filename: Option<String>,
    /// Declared MIME type (lower-case `type/subtype`).
    pub content_type: String,
    /// MIME type detected from the content.
    pub sniffed_type: Option<String>,
    /// Decoded size in bytes.
    pub size: i64,
    /// Hex SHA-256 of the decoded bytes.
    pub sha256: String,
    pub disposition: Disposition,
    /// Content-ID without angle brackets.
    pub content_id: Option<String>,
    /// Where the attachment bytes are stored, when they were stored.
    pub blob_uri: Option<String>,
    /// Flagged by the attachment policy (executables, scripts).
    pub executable: bool,
    /// The signature clamd found: the bytes were not stored (null when clean or not scanned).
    #[serde(default)]
    pub malware: Option<String>,
}

/// Authentication results (`pass`, `fail`, `softfail`, `none`, ...), lower-case.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AuthResults {
    pub spf: Option<String>,
    pub dkim: Option<String>,
    pub dmarc: Option<String>,
}

/// Evidence that the email was sent automatically.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AutoReply {
    /// `auto-replied`, `auto-generated`, `out-of-office`, ...
    pub kind: String,
    /// The header or phrase that gave it away.
    pub evidence: String,
    /// `out-of-office`, `left-company` (contact inactive), `unsubscribe` (opt-out) or
    /// `auto-reply` (any other automatic answer).
    pub class: String,
    /// The stated return date of an out-of-office, ISO 8601 (`2027-01-15`).
    pub return_date: Option<String>,
    /// Who to write to instead, when a left-the-company reply names someone.
    pub replacement: Option<Address>,
    /// Language of the phrase that classified it (`en`, `de`, `ja`, ...).
    pub language: Option<String>,
}

impl Default for AutoReply {
    fn default() -> Self {
        Self {
            kind: String::new(),
            evidence: String::new(),
            class: AutoReply::GENERIC.into(),
            return_date: None,
            replacement: None,
            language: None,
        }
    }
}

impl AutoReply {
    /// The class of an automatic answer that is none of the others (the schema's default).
    pub const GENERIC: &'static str = "auto-reply";
    /// Away, with a return date when stated.
    pub const OUT_OF_OFFICE: &'static str = "out-of-office";
    /// Left the company or the mailbox is no longer read: the contact is inactive.
    pub const LEFT_COMPANY: &'static str = "left-company";
    /// A request to be written to no more: the contact opts out.
    pub const UNSUBSCRIBE: &'static str = "unsubscribe";
}

/// A delivery report: a failure (`hard`, `soft`, `undetermined`), a delay warning, a
/// challenge-response request or a complaint (ARF feedback report). Only failures are bounces:
/// see [`Bounce::is_failure`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bounce {
    /// The recipients whose delivery failed (empty for delays, challenges and complaints).
    pub failed_recipients: Vec<String>,
    /// DSN status code such as `5.1.1`.
    pub status: Option<String>,
    pub evidence: String,
    /// `hard`, `soft`, `undetermined`, `delayed`, `challenge`, `complaint` or `delivered`: the
    /// worst class of the recipients (hard before soft before undetermined before delayed).
    pub class: String,
    /// Why, for the first failed recipient (`user-unknown`, `mailbox-full`, ...); for a
    /// complaint, the feedback type (`abuse`, `opt-out`, ...).
    pub reason: Option<String>,
    /// Every recipient the report names, with what it says about each.
    pub recipients: Vec<BounceRecipient>,
}

impl Default for Bounce {
    fn default() -> Self {
        Self {
            failed_recipients: Vec::new(),
            status: None,
            evidence: String::new(),
            class: Bounce::UNDETERMINED.into(),
            reason: None,
            recipients: Vec::new(),
        }
    }
}

impl Bounce {
    pub const HARD: &'static str = "hard";
    pub const SOFT: &'static str = "soft";
    /// A failure whose permanence is unknown (also the class of records written before classes).
    pub const UNDETERMINED: &'static str = "undetermined";
    pub const DELAYED: &'static str = "delayed";
    pub const CHALLENGE: &'static str = "challenge";
    pub const COMPLAINT: &'static str = "complaint";

    /// Whether the report says a delivery failed (`hard`, `soft`, `undetermined`): what a bounce
    /// means downstream. Delays, challenges and complaints are not failed deliveries.
    pub fn is_failure(&self) -> bool {
        is_failure_class(&self.class)
    }
}

/// Whether a bounce class is a failed delivery.
pub fn is_failure_class(class: &str) -> bool {
    matches!(class, Bounce::HARD | Bounce::SOFT | Bounce::UNDETERMINED)
}

/// What a delivery report says about one recipient.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct BounceRecipient {
    /// The recipient (DSN `Final-Recipient`), normalized.
    pub address: String,
    /// The address as the sender wrote it (DSN `Original-Recipient`), when it differs.
    pub original: Option<String>,
    /// DSN `Action`: `failed`, `delayed`, `delivered`, `relayed`, `expanded`.
    pub action: Option<String>,
    /// Status code such as `5.1.1`.
    pub status: Option<String>,
    /// What the remote server or the reporting MTA said (DSN `Diagnostic-Code`), unfolded.
    pub diagnostic: Option<String>,
    /// The remote server (DSN `Remote-MTA`).
    pub remote_mta: Option<String>,
    /// `hard`, `soft`, `undetermined`, `delayed`, `challenge`, `complaint` or `delivered`.
    pub class: String,
    /// `user-unknown`, `mailbox-full`, `host-unknown`, `blocked`, ... (see the parser's
    /// `bounce::classify`).
    pub reason: Option<String>,
}

/// Mailing-list markers.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ListInfo {
    pub list_id: Option<String>,
    pub precedence: Option<String>,
}

/// One header field, value decoded (RFC 2047) and unfolded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub name: String,
    pub value: String,
}

/// What reply stripping made of the text body: whether `stripped_text` is the new content
/// alone, so a failed strip is visible rather than silent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ReplyStripping {
    /// Quoted history was found and removed.
    #[serde(rename = "stripped")]
    Stripped,
    /// No quote was found, and nothing that looks like one.
    #[serde(rename = "nothing_quoted")]
    NothingQuoted,
    /// Quote-like lines were left in place, or the text and the HTML disagree on the cut.
    #[serde(rename = "unsure")]
    Unsure,
}

impl ReplyStripping {
    /// The Avro symbol, also the metric label and what `mailstream parse` prints.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stripped => "stripped",
            Self::NothingQuoted => "nothing_quoted",
            Self::Unsure => "unsure",
        }
    }
}

/// A field the parser cut to its size limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Truncation {
    /// `text`, `html`, `headers`, `to`, ...
    pub field: String,
    /// Bytes (entries, for a list) before the cut.
    pub original_size: i64,
    /// The whole value in the blob store, when it was stored.
    pub blob_uri: Option<String>,
}

/// The message an email forwards: its sender is the lead, the email's From the forwarder.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Forwarded {
    /// The original sender (null when the forward names no address).
    pub from: Option<Address>,
    /// The original date in milliseconds since the epoch, when it could be read.
    pub date: Option<i64>,
    /// The original date as the forward wrote it.
    pub date_text: Option<String>,
    pub subject: Option<String>,
    /// The original message's new content (its own quotes and signature removed).
    pub body: Option<String>,
    /// Who forwarded it (the email's From).
    pub forwarder: Option<Address>,
    /// `inline` or `attached` (message/rfc822).
    pub format: String,
    /// How many forwards deep the original was found (1: forwarded once).
    pub depth: i32,
}

impl Forwarded {
    pub const INLINE: &'static str = "inline";
    pub const ATTACHED: &'static str = "attached";
}

/// A website form's notification: the person who filled the form in is the lead.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct FormLead {
    /// `contact-form-7`, `gravity-forms`, `hubspot`, `typeform`, ... or `generic`.
    pub provider: String,
    /// The form's email field (else Reply-To) and name.
    pub person: Option<Address>,
    pub phone: Option<String>,
    pub company: Option<String>,
    pub message: Option<String>,
    /// Every label and value the notification lists, in order.
    pub fields: Vec<Header>,
}

/// A normalized email: what the parser made of one raw-email record.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ParsedEmail {
    /// Normalized Message-ID without angle brackets (domain lower-cased), or a generated one.
    pub message_id: String,
    /// True when `message_id` was derived from the content because the header was missing.
    pub message_id_generated: bool,
    /// The raw-email record this came from.
    pub ingest_id: String,
    /// When mailstream accepted the email, milliseconds since the epoch.
    pub received_at: i64,
    pub envelope_rcpt_to: Vec<String>,
    pub envelope_mail_from: Option<String>,
    /// The Date header in milliseconds since the epoch, if present and valid.
    pub date: Option<i64>,
    pub subject: Option<String>,
    pub in_reply_to: Option<String>,
    pub references: Vec<String>,
    pub from: Option<Address>,
    pub sender: Option<Address>,
    pub reply_to: Vec<Address>,
    pub to: Vec<Address>,
    pub cc: Vec<Address>,
    pub bcc: Vec<Address>,
    pub text: Option<String>,
    pub html: Option<String>,
    pub stripped_text: Option<String>,
    pub signature: Option<String>,
    /// How sure the split into `stripped_text` and `signature` is (null in records written
    /// before the field existed, and when there is no text).
    #[serde(default)]
    pub reply_stripping: Option<ReplyStripping>,
    pub attachments: Vec<Attachment>,
    pub auth: AuthResults,
    pub auto_reply: Option<AutoReply>,
    pub bounce: Option<Bounce>,
    pub list: Option<ListInfo>,
    pub headers: Vec<Header>,
    pub warnings: Vec<String>,
    /// What was cut to keep the record bounded (empty for almost every email).
    pub truncated: Vec<Truncation>,
    /// The message this email forwards, when it forwards one.
    #[serde(default)]
    pub forwarded: Option<Forwarded>,
    /// The website form notification this email is, when it is one.
    #[serde(default)]
    pub form: Option<FormLead>,
    /// `signed` or `encrypted` when the email is S/MIME (RFC 8551); not verified.
    #[serde(default)]
    pub smime: Option<String>,
    /// The calendar invitation (or answer to one) the email carries.
    #[serde(default)]
    pub meeting: Option<Meeting>,
    /// What the lead says about themselves: their signature's name, title, company, phone
    /// numbers and website, or a form's fields (null when it says nothing).
    #[serde(default)]
    pub contact_details: Option<ContactDetails>,
}

/// A lead's contact details, as their signature or a website form gives them; the CRM sink
/// fills a contact's empty fields with them, never overwriting one.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ContactDetails {
    /// `signature` or `form`.
    pub source: String,
    pub name: Option<String>,
    /// Job title (`Head of Procurement`).
    pub title: Option<String>,
    pub company: Option<String>,
    /// Phone numbers in E.164 (`+493012345678`), fax numbers left out; at most three.
    pub phones: Vec<String>,
    /// The company's website (`https://acme.de`), social profiles left out.
    pub website: Option<String>,
}

impl ContactDetails {
    pub const SIGNATURE: &'static str = "signature";
    pub const FORM: &'static str = "form";
}

/// A calendar invitation or an answer to one (iTIP, RFC 5546): the first event of the email's
/// `text/calendar` part.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Meeting {
    /// `REQUEST` (an invitation), `REPLY` (an answer), `CANCEL`, `COUNTER`, ... (`PUBLISH` when
    /// the calendar names none).
    pub method: String,
    pub uid: Option<String>,
    pub summary: Option<String>,
    pub location: Option<String>,
    pub organizer: Option<Address>,
    pub attendees: Vec<Attendee>,
    /// `DTSTART` and `DTEND` as written (`20261210T150000Z`, `20261210T160000`, `20261210`).
    pub start: Option<String>,
    pub end: Option<String>,
    /// The time zone of a local `start`, when the calendar names one.
    pub tzid: Option<String>,
    /// `start` in milliseconds since the epoch, when it is given in UTC.
    pub starts_at: Option<i64>,
}

/// One attendee of a [`Meeting`], with their answer.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Attendee {
    pub email: String,
    pub name: Option<String>,
    /// `PARTSTAT`, lower-case: `needs-action`, `accepted`, `declined`, `tentative`, ...
    pub status: Option<String>,
}

impl ParsedEmail {
    /// Every address that took part in the email: From, Sender, Reply-To, To, Cc, Bcc and the
    /// envelope's sender and recipients, as written (not de-duplicated).
    pub fn participants(&self) -> impl Iterator<Item = &str> {
        [&self.from, &self.sender]
            .into_iter()
            .flatten()
            .chain(&self.reply_to)
            .chain(&self.to)
            .chain(&self.cc)
            .chain(&self.bcc)
            .map(|a| a.email.as_str())
            .chain(self.envelope_mail_from.as_deref())
            .chain(self.envelope_rcpt_to.iter().map(String::as_str))
    }

    /// Who the email is from as a lead: the person a form notification names, else the
    /// original sender of a forwarded message, else From, else Sender. The forwarder and the
    /// form's robot stay in `from`.
    pub fn lead_sender(&self) -> Option<&Address> {
        self.form
            .as_ref()
            .and_then(|f| f.person.as_ref())
            .or_else(|| self.forwarded.as_ref().and_then(|f| f.from.as_ref()))
            .or(self.from.as_ref())
            .or(self.sender.as_ref())
    }

    /// What the lead wrote, for rules that read the body: the message of a form notification,
    /// else the forwarded original's body, else the email's own new text (without quotes and
    /// signature), else its whole text. Blank texts are passed over.
    pub fn lead_text(&self) -> Option<&str> {
        fn written(text: Option<&String>) -> Option<&str> {
            text.map(String::as_str).filter(|t| !t.trim().is_empty())
        }
        written(self.form.as_ref().and_then(|f| f.message.as_ref()))
            .or_else(|| written(self.forwarded.as_ref().and_then(|f| f.body.as_ref())))
            .or_else(|| written(self.stripped_text.as_ref()))
            .or(self.text.as_deref())
    }

    /// The text a CRM activity keeps: the whole text of a forward or a form notification (the
    /// forwarder's note with the original, every field of the form), else the new text
    /// without quotes and signature, else the whole text.
    pub fn activity_text(&self) -> Option<&str> {
        let whole = self.forwarded.is_some() || self.form.is_some();
        self.stripped_text
            .as_deref()
            .filter(|t| !whole && !t.trim().is_empty())
            .or(self.text.as_deref())
    }

    /// The blobs this email's record points to: stored attachments and whole bodies.
    pub fn blob_uris(&self) -> impl Iterator<Item = &str> {
        self.attachments
            .iter()
            .filter_map(|a| a.blob_uri.as_deref())
            .chain(self.truncated.iter().filter_map(|t| t.blob_uri.as_deref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::roundtrip::through_schema;

    #[test]
    fn round_trips_through_its_schema() {
        let address = |email: &str, name: Option<&str>| Address {
            email: email.into(),
            name: name.map(Into::into),
        };
        let email = ParsedEmail {
            message_id: "abc@example.com".into(),
            message_id_generated: false,
            ingest_id: "0b7c".into(),
            received_at: 1_700_000_000_123,
            envelope_rcpt_to: vec!["deal-42@in.example.com".into()],
            envelope_mail_from: Some("a@example.com".into()),
            date: Some(1_699_999_999_000),
            subject: Some("Grüße".into()),
            in_reply_to: Some("parent@example.com".into()),
            references: vec!["root@example.com".into(), "parent@example.com".into()],
            from: Some(address("a@example.com", Some("Ann"))),
            sender: None,
            reply_to: vec![address("r@example.com", None)],
            to: vec![address("b@example.com", None)],
            cc: vec![address("c@example.com", Some("Cé"))],
            bcc: vec![],
            text: Some("hi\n\n> old".into()),
            html: Some("<p>hi</p>".into()),
            stripped_text: Some("hi".into()),
            signature: Some("-- \nAnn".into()),
            reply_stripping: Some(ReplyStripping::Stripped),
            attachments: vec![Attachment {
                filename: Some("a.pdf".into()),
                content_type: "application/pdf".into(),
                sniffed_type: Some("application/pdf".into()),
                size: 10,
                sha256: "ab".into(),
                disposition: Disposition::Inline,
                content_id: Some("cid1".into()),
                blob_uri: Some("file:///tmp/b/ab".into()),
                executable: true,
                malware: Some("Eicar-Test-Signature".into()),
            }],
            auth: AuthResults {
                spf: Some("pass".into()),
                dkim: None,
                dmarc: Some("fail".into()),
            },
            auto_reply: Some(AutoReply {
                kind: "out-of-office".into(),
                evidence: "Subject: Out of office".into(),
                class: "left-company".into(),
                return_date: Some("2027-01-15".into()),
                replacement: Some(address("d@example.com", Some("Dee"))),
                language: Some("de".into()),
            }),
            bounce: Some(Bounce {
                failed_recipients: vec!["x@example.com".into()],
                status: Some("5.1.1".into()),
                evidence: "multipart/report".into(),
                class: Bounce::HARD.into(),
                reason: Some("user-unknown".into()),
                recipients: vec![BounceRecipient {
                    address: "x@example.com".into(),
                    original: Some("X@Example.com".into()),
                    action: Some("failed".into()),
                    status: Some("5.1.1".into()),
                    diagnostic: Some("smtp; 550 5.1.1 no such user".into()),
                    remote_mta: Some("mx.example.com".into()),
                    class: Bounce::HARD.into(),
                    reason: Some("user-unknown".into()),
                }],
            }),
            list: Some(ListInfo {
                list_id: Some("dev.lists.example.com".into()),
                precedence: Some("list".into()),
            }),
            headers: vec![Header {
                name: "Subject".into(),
                value: "Grüße".into(),
            }],
            warnings: vec!["repaired".into()],
            truncated: vec![Truncation {
                field: "text".into(),
                original_size: 2_000_000,
                blob_uri: Some("file:///tmp/b/cd".into()),
            }],
            forwarded: Some(Forwarded {
                from: Some(address("dana@prospect.example", Some("Dana"))),
                date: Some(1_699_000_000_000),
                date_text: Some("Mon, Dec 7, 2026 at 9:00 AM".into()),
                subject: Some("Demo".into()),
                body: Some("Could we see a demo?".into()),
                forwarder: Some(address("a@example.com", Some("Ann"))),
                format: Forwarded::ATTACHED.into(),
                depth: 2,
            }),
            form: Some(FormLead {
                provider: "contact-form-7".into(),
                person: Some(address("li@shop.example", Some("Li"))),
                phone: Some("+49 30 1234567".into()),
                company: Some("Shop".into()),
                message: Some("Pricing?".into()),
                fields: vec![Header {
                    name: "Your Name".into(),
                    value: "Li".into(),
                }],
            }),
            smime: Some("signed".into()),
            meeting: Some(Meeting {
                method: "REQUEST".into(),
                uid: Some("u1".into()),
                summary: Some("Demo".into()),
                organizer: Some(address("kim@acme.example", Some("Kim"))),
                attendees: vec![Attendee {
                    email: "ana@example.com".into(),
                    name: None,
                    status: Some("accepted".into()),
                }],
                start: Some("20261210T150000Z".into()),
                starts_at: Some(1_796_828_400_000),
                ..Meeting::default()
            }),
            contact_details: Some(ContactDetails {
                source: ContactDetails::SIGNATURE.into(),
                name: Some("Li Wong".into()),
                title: Some("Head of IT".into()),
                company: Some("Shop Ltd".into()),
                phones: vec!["+442079460958".into()],
                website: Some("https://shop.example".into()),
            }),
        };
        assert_eq!(through_schema("parsed.avsc", email.clone()), email);
        let empty = ParsedEmail::default();
        assert_eq!(through_schema("parsed.avsc", empty.clone()), empty);
        assert_eq!(
            email.lead_sender().map(|a| a.email.as_str()),
            Some("li@shop.example"),
            "the form's person first"
        );
    }
}
