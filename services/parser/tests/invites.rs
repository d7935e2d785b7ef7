//! Calendar invitations and answers (iTIP): the meeting an email carries, from an inline
//! `text/calendar` alternative (as Google Calendar and Outlook send them) or an `.ics`
//! attachment; mail without one has none.

use mailstream_parser::{ParseContext, parse_message};
use mailstream_runtime::records::{Attendee, ParsedEmail};

fn parse(raw: &str) -> ParsedEmail {
    let ctx = ParseContext {
        ingest_id: "invite".into(),
        ..ParseContext::default()
    };
    parse_message(raw.as_bytes(), &ctx).expect("parses")
}

const INVITE: &str = "BEGIN:VCALENDAR\r\nPRODID:-//Google Inc//Google Calendar 70.9054//EN\r\n\
VERSION:2.0\r\nCALSCALE:GREGORIAN\r\nMETHOD:REQUEST\r\nBEGIN:VEVENT\r\n\
DTSTART:20261210T150000Z\r\nDTEND:20261210T154500Z\r\nDTSTAMP:20261207T090000Z\r\n\
ORGANIZER;CN=Kim Buyer:mailto:kim@acme.example\r\nUID:7kq2@google.com\r\n\
ATTENDEE;CUTYPE=INDIVIDUAL;ROLE=REQ-PARTICIPANT;PARTSTAT=NEEDS-ACTION;RSVP=\r\n TRUE;CN=Ana Sales;X-NUM-GUESTS=0:mailto:ana@in.example.com\r\n\
ATTENDEE;CUTYPE=INDIVIDUAL;ROLE=REQ-PARTICIPANT;PARTSTAT=ACCEPTED;CN=Kim Buy\r\n er:mailto:kim@acme.example\r\n\
SUMMARY:Demo: pricing\\, seats and rollout\r\nLOCATION:Video call\\; link in the invite\r\n\
SEQUENCE:0\r\nSTATUS:CONFIRMED\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";

#[test]
fn an_inline_invitation_is_a_meeting_with_its_people_and_times() {
    let raw = format!(
        "From: Kim Buyer <kim@acme.example>\r\nTo: ana@in.example.com\r\n\
         Subject: Invitation: Demo @ Thu Dec 10, 2026\r\nMessage-ID: <inv-1@acme.example>\r\n\
         MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=\"a1\"\r\n\r\n\
         --a1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nYou have been invited to Demo.\r\n\
         --a1\r\nContent-Type: text/calendar; charset=utf-8; method=REQUEST\r\n\
         Content-Transfer-Encoding: 7bit\r\n\r\n{INVITE}\r\n--a1--\r\n"
    );
    let email = parse(&raw);
    let meeting = email.meeting.expect("a meeting");
    assert_eq!(meeting.method, "REQUEST");
    assert_eq!(meeting.uid.as_deref(), Some("7kq2@google.com"));
    assert_eq!(
        meeting.summary.as_deref(),
        Some("Demo: pricing, seats and rollout")
    );
    assert_eq!(
        meeting.location.as_deref(),
        Some("Video call; link in the invite")
    );
    let organizer = meeting.organizer.expect("organizer");
    assert_eq!(
        (organizer.email.as_str(), organizer.name.as_deref()),
        ("kim@acme.example", Some("Kim Buyer"))
    );
    assert_eq!(
        meeting.attendees,
        [
            Attendee {
                email: "ana@in.example.com".into(),
                name: Some("Ana Sales".into()),
                status: Some("needs-action".into()),
            },
            Attendee {
                email: "kim@acme.example".into(),
                name: Some("Kim Buyer".into()),
                status: Some("accepted".into()),
            },
        ]
    );
    assert_eq!(meeting.start.as_deref(), Some("20261210T150000Z"));
    assert_eq!(meeting.end.as_deref(), Some("20261210T154500Z"));
    assert_eq!(
        meeting.starts_at,
        Some(1_796_914_800_000),
        "2026-12-10 15:00 UTC"
    );
    assert_eq!(
        email.text.as_deref().map(str::trim),
        Some("You have been invited to Demo.")
    );
}

#[test]
fn an_answer_in_an_ics_attachment_keeps_its_local_time_and_zone() {
    let reply = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:Microsoft Exchange Server 2010\r\n\
                 METHOD:REPLY\r\nBEGIN:VEVENT\r\nUID:040000008200E00074C5B7101A82E008\r\n\
                 DTSTART;TZID=W. Europe Standard Time:20261211T100000\r\n\
                 DTEND;TZID=W. Europe Standard Time:20261211T110000\r\n\
                 ATTENDEE;PARTSTAT=DECLINED;CN=Lee:mailto:Lee@Partner.example\r\n\
                 ORGANIZER:mailto:ana@in.example.com\r\nSUMMARY:Quarterly review\r\n\
                 END:VEVENT\r\nEND:VCALENDAR\r\n";
    let raw = format!(
        "From: Lee <lee@partner.example>\r\nTo: ana@in.example.com\r\nSubject: Declined: Quarterly review\r\n\
         Message-ID: <inv-2@partner.example>\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"m1\"\r\n\r\n\
         --m1\r\nContent-Type: text/plain\r\n\r\nSorry, I cannot make it.\r\n\
         --m1\r\nContent-Type: application/ics; name=\"invite.ics\"\r\n\
         Content-Disposition: attachment; filename=\"invite.ics\"\r\n\r\n{reply}\r\n--m1--\r\n"
    );
    let meeting = parse(&raw).meeting.expect("a meeting");
    assert_eq!(meeting.method, "REPLY");
    assert_eq!(meeting.start.as_deref(), Some("20261211T100000"));
    assert_eq!(meeting.tzid.as_deref(), Some("W. Europe Standard Time"));
    assert_eq!(
        meeting.starts_at, None,
        "a local time is not guessed into UTC"
    );
    assert_eq!(meeting.attendees.len(), 1);
    assert_eq!(
        meeting.attendees[0].email, "Lee@partner.example",
        "the domain lower-cased"
    );
    assert_eq!(meeting.attendees[0].status.as_deref(), Some("declined"));
}

#[test]
fn mail_without_a_calendar_or_with_a_broken_one_has_no_meeting() {
    let plain = parse(
        "From: a@example.com\r\nTo: b@example.org\r\nSubject: Hi\r\nMessage-ID: <p-1@example.com>\r\n\r\nHello\r\n",
    );
    assert_eq!(plain.meeting, None);
    let broken = parse(
        "From: a@example.com\r\nTo: b@example.org\r\nSubject: Hi\r\nMessage-ID: <p-2@example.com>\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/calendar; method=REQUEST\r\n\r\nBEGIN:VCALENDAR\r\nnot a calendar\r\n",
    );
    assert_eq!(broken.meeting, None);
}

#[test]
fn a_meeting_is_bounded() {
    let attendees: String = (0..5000)
        .map(|i| format!("ATTENDEE;PARTSTAT=NEEDS-ACTION:mailto:p{i}@big.example\r\n"))
        .collect();
    let calendar = format!(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nMETHOD:REQUEST\r\nBEGIN:VEVENT\r\nUID:all-hands\r\n\
         SUMMARY:{}\r\nDTSTART:20261210T150000Z\r\n{attendees}END:VEVENT\r\nEND:VCALENDAR\r\n",
        "x".repeat(100_000)
    );
    let raw = format!(
        "From: a@big.example\r\nTo: b@in.example.com\r\nSubject: All hands\r\nMessage-ID: <big-1@big.example>\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/calendar; method=REQUEST\r\n\r\n{calendar}"
    );
    let meeting = parse(&raw).meeting.expect("a meeting");
    assert_eq!(
        meeting.attendees.len(),
        mailstream_parser::invite::MAX_ATTENDEES
    );
    assert_eq!(
        meeting.summary.map(|s| s.len()),
        Some(mailstream_parser::limits::MAX_NAME_BYTES)
    );
}
