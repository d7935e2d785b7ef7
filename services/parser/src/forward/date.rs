//! The date a forward's header block states, as the clients write it: RFC 5322 (Thunderbird,
//! forwarded headers kept as they were), Gmail (`Mon, Dec 7, 2026 at 9:00 AM`), Outlook
//! (`Monday, December 7, 2026 9:00 AM`), Apple Mail (`7 December 2026 at 09:00:00 CET`) and
//! numeric forms (`2026-12-07 09:00`, `07.12.2026 09:00`, `12/7/2026 9:00 AM`). English month
//! names only; other dates stay text (`date_text`). A date without a zone is read as UTC.

use chrono::{DateTime, FixedOffset, NaiveDateTime};

/// Formats tried, after weekdays, commas and `at` are removed and whitespace collapsed.
const FORMATS: &[&str] = &[
    "%b %d %Y %I:%M %p",
    "%B %d %Y %I:%M %p",
    "%b %d %Y %I:%M:%S %p",
    "%B %d %Y %I:%M:%S %p",
    "%d %B %Y %H:%M:%S",
    "%d %b %Y %H:%M:%S",
    "%d %B %Y %H:%M",
    "%d %b %Y %H:%M",
    "%B %d %Y %H:%M",
    "%b %d %Y %H:%M",
    "%B %d %Y %H:%M:%S",
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%d %H:%M",
    "%d.%m.%Y %H:%M:%S",
    "%d.%m.%Y %H:%M",
    "%m/%d/%Y %I:%M %p",
    "%m/%d/%Y %I:%M:%S %p",
    "%d/%m/%Y %H:%M:%S",
    "%d/%m/%Y %H:%M",
];

const WEEKDAYS: &[&str] = &[
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
    "mon",
    "tue",
    "tues",
    "wed",
    "thu",
    "thur",
    "thurs",
    "fri",
    "sat",
    "sun",
];

/// Zone abbreviations the clients print, with their offset in minutes.
const ZONES: &[(&str, i32)] = &[
    ("utc", 0),
    ("gmt", 0),
    ("z", 0),
    ("wet", 0),
    ("bst", 60),
    ("cet", 60),
    ("west", 60),
    ("cest", 120),
    ("eet", 120),
    ("eest", 180),
    ("msk", 180),
    ("ist", 330),
    ("cst", -360),
    ("cdt", -300),
    ("est", -300),
    ("edt", -240),
    ("mst", -420),
    ("mdt", -360),
    ("pst", -480),
    ("pdt", -420),
    ("jst", 540),
    ("kst", 540),
    ("aest", 600),
    ("aedt", 660),
];

/// Milliseconds since the epoch of a date as a forward states it, when it can be read.
pub fn parse(text: &str) -> Option<i64> {
    if text.len() > 200 {
        return None;
    }
    if let Ok(d) = DateTime::parse_from_rfc2822(text.trim()) {
        return Some(d.timestamp_millis());
    }
    let mut words: Vec<String> = text
        .replace([',', '(', ')'], " ")
        .split_whitespace()
        .map(|w| w.trim_end_matches('.').to_string())
        .filter(|w| {
            let lower = w.to_ascii_lowercase();
            !WEEKDAYS.contains(&lower.as_str()) && lower != "at" && lower != "um" && lower != "à"
        })
        .collect();
    let mut offset_minutes = 0;
    while let Some(last) = words.last() {
        match zone(last) {
            Some(minutes) => {
                offset_minutes += minutes;
                words.pop();
            }
            None => break,
        }
    }
    // `9:00 AM` and `9:00AM`.
    let joined = words
        .join(" ")
        .replace("AM", " AM")
        .replace("PM", " PM")
        .replace("am", " AM")
        .replace("pm", " PM");
    let joined = joined.split_whitespace().collect::<Vec<_>>().join(" ");
    let naive = FORMATS
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(&joined, f).ok())?;
    let offset = FixedOffset::east_opt(offset_minutes * 60)?;
    naive
        .and_local_timezone(offset)
        .single()
        .map(|d| d.timestamp_millis())
}

/// The offset of a trailing zone word: `+0100`, `-05:00`, `GMT+1`, `UTC`, `CET`.
fn zone(word: &str) -> Option<i32> {
    let lower = word.to_ascii_lowercase();
    if let Some(&(_, minutes)) = ZONES.iter().find(|(name, _)| *name == lower) {
        return Some(minutes);
    }
    let rest = lower
        .strip_prefix("gmt")
        .or_else(|| lower.strip_prefix("utc"))
        .unwrap_or(&lower);
    let (sign, digits) = match rest.as_bytes().first()? {
        b'+' => (1, &rest[1..]),
        b'-' => (-1, &rest[1..]),
        _ => return None,
    };
    let digits: String = digits.chars().filter(|c| *c != ':').collect();
    if digits.is_empty() || digits.len() > 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: i32 = digits.parse().ok()?;
    let minutes = if digits.len() <= 2 {
        n * 60
    } else {
        (n / 100) * 60 + n % 100
    };
    Some(sign * minutes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> Option<String> {
        parse(text)
            .and_then(DateTime::from_timestamp_millis)
            .map(|d| d.to_rfc3339())
    }

    #[test]
    fn the_clients_dates() {
        let nine = Some("2026-12-07T09:00:00+00:00".to_string());
        assert_eq!(utc("Mon, Dec 7, 2026 at 9:00 AM"), nine, "Gmail");
        assert_eq!(utc("Monday, December 7, 2026 9:00 AM"), nine, "Outlook");
        assert_eq!(utc("Monday, December 7, 2026 at 9:00:00 AM"), nine);
        assert_eq!(utc("7 December 2026 at 10:00:00 CET"), nine, "Apple Mail");
        assert_eq!(utc("Mon, 07 Dec 2026 10:00:00 +0100"), nine, "RFC 5322");
        assert_eq!(utc("2026-12-07 09:00"), nine);
        assert_eq!(utc("07.12.2026 11:00 GMT+2"), nine);
        assert_eq!(utc("12/7/2026 9:00AM"), nine);
        assert_eq!(
            utc("Mo., 7. Dez. 2026 um 09:00 Uhr"),
            None,
            "not English: text only"
        );
        assert_eq!(utc("yesterday"), None);
        assert_eq!(utc(&"9".repeat(500)), None);
    }
}
