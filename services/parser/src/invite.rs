//! Calendar invitations (iTIP, RFC 5546): a `text/calendar` part (inline or an `.ics`
//! attachment) becomes the record's `meeting`: the method (`REQUEST` an invitation, `REPLY` an
//! answer, `CANCEL`, ...), the first event's uid, summary, location, organizer, attendees with
//! their answer (`PARTSTAT`), and its start and end as written (with their `TZID`), plus the start
//! in UTC when the calendar gives it in UTC. The calendar is read by the `icalendar` crate.
//! The meeting is bounded like the rest of the record: [`MAX_ATTENDEES`] attendees, text and
//! ids cut to [`MAX_NAME_BYTES`], people's addresses and names to [`MAX_HOST_BYTES`], times to
//! [`MAX_SHORT_BYTES`].

use icalendar::parser::{Component, Property, read_calendar, unfold};
use mail_parser::{Message, MimeHeaders};
use mailstream_runtime::records::{Address, Attendee, Meeting};

use crate::limits::{MAX_HOST_BYTES, MAX_NAME_BYTES, MAX_SHORT_BYTES, cut};
use crate::normalize;

/// Attendees kept (an invitation to a whole company lists thousands).
pub const MAX_ATTENDEES: usize = 100;
/// The most a meeting adds to a record's encoding: uid, summary, location and tzid; the
/// organizer's and each attendee's address and name, and status; the method and the times;
/// with length prefixes.
pub const MAX_ENCODED_BYTES: usize = 4 * (MAX_NAME_BYTES + 10)
    + 2 * (1 + MAX_ATTENDEES) * (MAX_HOST_BYTES + 10)
    + (4 + MAX_ATTENDEES) * (MAX_SHORT_BYTES + 10);

/// The meeting of the first calendar part of `message` that holds an event, if any.
pub fn detect(message: &Message<'_>) -> Option<Meeting> {
    message.parts.iter().find_map(|part| {
        let ct = part.content_type()?;
        let calendar = ct.ctype().eq_ignore_ascii_case("text")
            && ct
                .subtype()
                .is_some_and(|s| s.eq_ignore_ascii_case("calendar"))
            || ct.ctype().eq_ignore_ascii_case("application")
                && ct.subtype().is_some_and(|s| s.eq_ignore_ascii_case("ics"));
        if !calendar {
            return None;
        }
        let text = String::from_utf8_lossy(part.contents()).into_owned();
        meeting(&text)
    })
}

/// The meeting of iCalendar `text`, if it parses and holds an event.
pub fn meeting(text: &str) -> Option<Meeting> {
    let unfolded = unfold(text);
    let calendar = read_calendar(&unfolded).ok()?;
    let root = calendar
        .components
        .iter()
        .find(|c| c.name.as_str().eq_ignore_ascii_case("VCALENDAR"));
    let (properties, components) = match root {
        Some(root) => (&root.properties, &root.components),
        None => (&calendar.properties, &calendar.components),
    };
    let event = components
        .iter()
        .find(|c| c.name.as_str().eq_ignore_ascii_case("VEVENT"))?;
    let mut method = value(properties, "METHOD")
        .map(|m| m.to_ascii_uppercase())
        .unwrap_or_else(|| "PUBLISH".into());
    cut(&mut method, MAX_SHORT_BYTES);
    let start = property(event, "DTSTART");
    let text = |name: &str| {
        value(&event.properties, name).map(|mut v| {
            v = unescape(&v);
            cut(&mut v, MAX_NAME_BYTES);
            v
        })
    };
    let short = |p: Option<&Property<'_>>| {
        p.map(|p| {
            let mut v = p.val.as_str().to_string();
            cut(&mut v, MAX_SHORT_BYTES);
            v
        })
    };
    Some(Meeting {
        method,
        uid: text("UID"),
        summary: text("SUMMARY"),
        location: text("LOCATION"),
        organizer: property(event, "ORGANIZER").and_then(person),
        attendees: event
            .properties
            .iter()
            .filter(|p| p.name.as_str().eq_ignore_ascii_case("ATTENDEE"))
            .filter_map(|p| {
                let who = person(p)?;
                let mut status = param(p, "PARTSTAT").map(|s| s.to_ascii_lowercase());
                if let Some(s) = status.as_mut() {
                    cut(s, MAX_SHORT_BYTES);
                }
                Some(Attendee {
                    email: who.email,
                    name: who.name,
                    status,
                })
            })
            .take(MAX_ATTENDEES)
            .collect(),
        starts_at: start.and_then(|p| utc_ms(p.val.as_str())),
        start: short(start),
        end: short(property(event, "DTEND")),
        tzid: start.and_then(|p| param(p, "TZID")).map(|mut z| {
            cut(&mut z, MAX_NAME_BYTES);
            z
        }),
    })
}

fn property<'c, 'a>(component: &'c Component<'a>, name: &str) -> Option<&'c Property<'a>> {
    component
        .properties
        .iter()
        .find(|p| p.name.as_str().eq_ignore_ascii_case(name))
}

fn value(properties: &[Property<'_>], name: &str) -> Option<String> {
    properties
        .iter()
        .find(|p| p.name.as_str().eq_ignore_ascii_case(name))
        .map(|p| p.val.as_str().trim().to_string())
        .filter(|v| !v.is_empty())
}

fn param(property: &Property<'_>, key: &str) -> Option<String> {
    property
        .params
        .iter()
        .find(|p| p.key.as_str().eq_ignore_ascii_case(key))
        .and_then(|p| p.val.as_ref())
        .map(|v| v.as_str().trim_matches('"').to_string())
}

/// The person a `mailto:` calendar address names, with its `CN`.
fn person(property: &Property<'_>) -> Option<Address> {
    let uri = property.val.as_str().trim();
    let address = uri
        .get(..7)
        .filter(|scheme| scheme.eq_ignore_ascii_case("mailto:"))
        .map_or(uri, |_| &uri[7..]);
    let mut email = normalize::email(address)?;
    cut(&mut email, MAX_HOST_BYTES);
    let mut name = param(property, "CN").filter(|n| !n.is_empty());
    if let Some(n) = name.as_mut() {
        cut(n, MAX_HOST_BYTES);
    }
    Some(Address { email, name })
}

/// RFC 5545 TEXT unescaped: `\n`, `\,`, `\;`, `\\`.
fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match (c, c == '\\') {
            (_, true) => match chars.next() {
                Some('n' | 'N') => out.push('\n'),
                Some(other) => out.push(other),
                None => out.push('\\'),
            },
            (c, false) => out.push(c),
        }
    }
    out
}

/// Milliseconds since the epoch of a UTC date-time (`20261210T150000Z`); `None` for a local
/// time or a date.
fn utc_ms(value: &str) -> Option<i64> {
    chrono::NaiveDateTime::parse_from_str(value.trim(), "%Y%m%dT%H%M%SZ")
        .ok()
        .map(|t| t.and_utc().timestamp_millis())
}
