//! The return date an out-of-office states.
//!
//! Dates are found by shape, then parsed by chrono (`NaiveDate::parse_from_str`):
//!
//! | shape | chrono formats |
//! |---|---|
//! | `2027-01-15` | `%Y-%m-%d` |
//! | `15.01.2027`, `15.1.27`, `15.01.` (year from the email's date) | `%d.%m.%Y`, `%d.%m.%y` |
//! | `15/01/2027` (`01/15/2027` first in English) | `%d/%m/%Y`, `%m/%d/%Y`, `%d/%m/%y`, `%m/%d/%y` |
//! | `15 January 2027`, `January 15th, 2027`, `15. Januar`, `15 de enero de 2027`, `15 января` | `%d %B %Y` (month names of the languages of [`super::phrases`] are given to chrono in English) |
//! | `2027年1月15日`, `1月15日`, `2027년 1월 15일` | `%Y年%m月%d日` |
//!
//! The date taken is the first one within 60 characters after a return or until phrase (`back
//! on`, `returning`, `until`, `zurück am`, `bis`, `de retour le`, `jusqu'au`, `hasta el`, `até`,
//! `fino al`, `tot`, `till`, `do`, `до`, `まで`, `까지`, ...), else the last one stated. A date
//! without a year takes the email's year (the next year if that is over a week before the
//! email); a date before the email is not a return date.

use std::sync::LazyLock;

use chrono::{Datelike, Month, NaiveDate};
use regex::Regex;

use crate::bodies::re;

static DATE: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?i)(?P<iso>\d{4}-\d{1,2}-\d{1,2})|(?P<cjk>(?:\d{4}\s*[年년]\s*)?\d{1,2}\s*[月월]\s*\d{1,2}\s*[日일])|(?P<num>\d{1,2}[./]\d{1,2}[./](?:\d{4}|\d{2})?)|(?P<dm>\d{1,2})(?:st|nd|rd|th|er|\.|º)?\s+(?:de\s+|of\s+)?(?P<dmonth>\p{L}{3,12})\.?(?:\s+de)?,?(?:\s+(?P<dyear>\d{4}))?|(?P<mmonth>\p{L}{3,12})\.?\s+(?P<md>\d{1,2})(?:st|nd|rd|th)?,?(?:\s+(?P<myear>\d{4}))?",
    )
});
static RETURN: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?i)(back|return|returning|available again|in the office|until|till|through|zurück|wieder|bis|retour|jusqu|regres|volver|hasta|retorno|voltar|de volta|até|rientr|torner|fino al|terug|tot|tillbaka|tilbage|tilbake|palaan|asti|wracam|powrót|zpět|вернусь|выйду|до|戻|まで|返回|回来|到|복귀|까지|dönüş|döneceğim|kadar)",
    )
});

/// Month names and abbreviations, lower-case, of the supported languages.
const MONTHS: &[(&str, u32)] = &[
    ("jan", 1),
    ("januar", 1),
    ("jänner", 1),
    ("janvier", 1),
    ("enero", 1),
    ("janeiro", 1),
    ("gennaio", 1),
    ("januari", 1),
    ("stycznia", 1),
    ("ledna", 1),
    ("января", 1),
    ("ocak", 1),
    ("feb", 2),
    ("februar", 2),
    ("février", 2),
    ("febrero", 2),
    ("fevereiro", 2),
    ("febbraio", 2),
    ("februari", 2),
    ("lutego", 2),
    ("února", 2),
    ("февраля", 2),
    ("şubat", 2),
    ("mar", 3),
    ("märz", 3),
    ("mars", 3),
    ("marzo", 3),
    ("março", 3),
    ("maart", 3),
    ("marts", 3),
    ("marca", 3),
    ("března", 3),
    ("марта", 3),
    ("mart", 3),
    ("apr", 4),
    ("avril", 4),
    ("abril", 4),
    ("aprile", 4),
    ("kwietnia", 4),
    ("dubna", 4),
    ("апреля", 4),
    ("nisan", 4),
    ("may", 5),
    ("mai", 5),
    ("mayo", 5),
    ("maio", 5),
    ("maggio", 5),
    ("mei", 5),
    ("maj", 5),
    ("maja", 5),
    ("května", 5),
    ("мая", 5),
    ("mayıs", 5),
    ("jun", 6),
    ("juni", 6),
    ("juin", 6),
    ("junio", 6),
    ("junho", 6),
    ("giugno", 6),
    ("czerwca", 6),
    ("června", 6),
    ("июня", 6),
    ("haziran", 6),
    ("jul", 7),
    ("juli", 7),
    ("juillet", 7),
    ("julio", 7),
    ("julho", 7),
    ("luglio", 7),
    ("lipca", 7),
    ("července", 7),
    ("июля", 7),
    ("temmuz", 7),
    ("aug", 8),
    ("august", 8),
    ("août", 8),
    ("agosto", 8),
    ("augustus", 8),
    ("augusti", 8),
    ("sierpnia", 8),
    ("srpna", 8),
    ("августа", 8),
    ("ağustos", 8),
    ("sep", 9),
    ("sept", 9),
    ("septembre", 9),
    ("septiembre", 9),
    ("setiembre", 9),
    ("setembro", 9),
    ("settembre", 9),
    ("września", 9),
    ("září", 9),
    ("сентября", 9),
    ("eylül", 9),
    ("oct", 10),
    ("okt", 10),
    ("oktober", 10),
    ("octobre", 10),
    ("octubre", 10),
    ("outubro", 10),
    ("ottobre", 10),
    ("października", 10),
    ("října", 10),
    ("октября", 10),
    ("ekim", 10),
    ("nov", 11),
    ("novembre", 11),
    ("noviembre", 11),
    ("novembro", 11),
    ("listopada", 11),
    ("listopadu", 11),
    ("ноября", 11),
    ("kasım", 11),
    ("dec", 12),
    ("dez", 12),
    ("dezember", 12),
    ("décembre", 12),
    ("diciembre", 12),
    ("dezembro", 12),
    ("dicembre", 12),
    ("desember", 12),
    ("grudnia", 12),
    ("prosince", 12),
    ("декабря", 12),
    ("aralık", 12),
];

fn month(word: &str) -> Option<Month> {
    let lower = word.to_lowercase();
    let number = MONTHS
        .iter()
        .find(|(name, _)| *name == lower)
        .map(|(_, n)| *n)
        .or_else(|| {
            // English full names and their prefixes (`january`, `janu`).
            (1..=12u32).find(|n| {
                lower.len() >= 3
                    && u8::try_from(*n)
                        .ok()
                        .and_then(|n| Month::try_from(n).ok())
                        .is_some_and(|m| m.name().to_lowercase().starts_with(&lower))
            })
        })?;
    Month::try_from(u8::try_from(number).ok()?).ok()
}

/// The return date stated in `text` (ISO 8601), given the email's own date.
pub fn return_date(text: &str, sent: Option<NaiveDate>, english: bool) -> Option<String> {
    let mut last = None;
    let mut after_phrase = None;
    let phrase_ends: Vec<usize> = RETURN.find_iter(text).map(|m| m.end()).collect();
    let mut at = 0;
    // Not `captures_iter`: a word before a number (`bis 15`) may look like a month-day date; when
    // it is not one, the search goes on from the next character, not after the number.
    while let Some(caps) = DATE.captures_at(text, at) {
        let Some(whole) = caps.get(0) else { break };
        let next_char = text[whole.start()..]
            .chars()
            .next()
            .map_or(1, char::len_utf8);
        at = whole.start() + next_char;
        // `1.2.3` is a version, `10.0.0.1` an address: a date is not part of a longer number.
        let before = text[..whole.start()].chars().next_back();
        let mut after = text[whole.end()..].chars();
        let continues = match (after.next(), after.next()) {
            (Some(c), _) if c.is_ascii_digit() => true,
            (Some('.'), Some(c)) => c.is_ascii_digit(),
            _ => false,
        };
        if caps.name("num").is_some()
            && (before.is_some_and(|c| c.is_ascii_digit() || c == '.') || continues)
        {
            continue;
        }
        let Some(date) = parse(&caps, sent, english) else {
            continue;
        };
        at = whole.end();
        if sent.is_some_and(|s| date < s) {
            continue;
        }
        let near_phrase = phrase_ends
            .iter()
            .any(|end| *end <= whole.start() && whole.start() - end <= 60);
        if near_phrase && after_phrase.is_none() {
            after_phrase = Some(date);
        }
        last = Some(date);
    }
    after_phrase
        .or(last)
        .map(|d| d.format("%Y-%m-%d").to_string())
}

fn parse(caps: &regex::Captures<'_>, sent: Option<NaiveDate>, english: bool) -> Option<NaiveDate> {
    let year_of = |month: u32, day: u32| -> Option<i32> {
        let sent = sent?;
        let this = NaiveDate::from_ymd_opt(sent.year(), month, day)?;
        Some(if this + chrono::Days::new(7) < sent {
            sent.year() + 1
        } else {
            sent.year()
        })
    };
    if let Some(iso) = caps.name("iso") {
        return NaiveDate::parse_from_str(iso.as_str(), "%Y-%m-%d").ok();
    }
    if let Some(cjk) = caps.name("cjk") {
        let text: String = cjk
            .as_str()
            .chars()
            .filter(|c| !c.is_whitespace())
            .map(|c| match c {
                '년' => '年',
                '월' => '月',
                '일' => '日',
                c => c,
            })
            .collect();
        if text.contains('年') {
            return NaiveDate::parse_from_str(&text, "%Y年%m月%d日").ok();
        }
        let (m, d) = text.trim_end_matches('日').split_once('月')?;
        let (m, d) = (m.parse().ok()?, d.parse().ok()?);
        return NaiveDate::parse_from_str(&format!("{}年{text}", year_of(m, d)?), "%Y年%m月%d日")
            .ok();
    }
    if let Some(num) = caps.name("num") {
        let text = num.as_str();
        let sep = if text.contains('/') { '/' } else { '.' };
        let parts: Vec<&str> = text.split(sep).collect();
        let with_year = match parts.as_slice() {
            [d, m, y] if !y.is_empty() => format!("{d}{sep}{m}{sep}{y}"),
            [d, m, _] if sep == '.' => {
                let (dn, mn) = (d.parse().ok()?, m.parse().ok()?);
                format!("{d}.{m}.{}", year_of(mn, dn)?)
            }
            _ => return None,
        };
        let formats: &[&str] = match (sep, english) {
            ('.', _) => &["%d.%m.%Y", "%d.%m.%y"],
            (_, true) => &["%m/%d/%Y", "%d/%m/%Y", "%m/%d/%y", "%d/%m/%y"],
            _ => &["%d/%m/%Y", "%m/%d/%Y", "%d/%m/%y", "%m/%d/%y"],
        };
        // `%Y` takes a two-digit year as the year 27: prefer the two-digit format for those.
        let short = with_year.rsplit(sep).next().is_some_and(|y| y.len() == 2);
        return formats
            .iter()
            .filter(|f| f.ends_with('y') == short)
            .find_map(|f| NaiveDate::parse_from_str(&with_year, f).ok());
    }
    let (day, month_word, year) = match (caps.name("dm"), caps.name("md")) {
        (Some(d), _) => (d, caps.name("dmonth")?, caps.name("dyear")),
        (None, Some(d)) => (d, caps.name("mmonth")?, caps.name("myear")),
        _ => return None,
    };
    let month = month(month_word.as_str())?;
    let day: u32 = day.as_str().parse().ok()?;
    let year = match year {
        Some(y) => y.as_str().parse().ok()?,
        None => year_of(month.number_from_month(), day)?,
    };
    NaiveDate::parse_from_str(&format!("{day} {} {year}", month.name()), "%d %B %Y").ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Option<String> {
        let sent = NaiveDate::from_ymd_opt(2026, 12, 20);
        return_date(text, sent, true)
    }

    #[test]
    fn shapes_and_languages() {
        assert_eq!(
            at("I'm back on January 15th, 2027.").as_deref(),
            Some("2027-01-15")
        );
        assert_eq!(
            at("Ich bin ab dem 15.01.2027 wieder im Büro.").as_deref(),
            Some("2027-01-15")
        );
        assert_eq!(at("Zurück am 7. Januar").as_deref(), Some("2027-01-07"));
        assert_eq!(
            at("De retour le 5 janvier 2027").as_deref(),
            Some("2027-01-05")
        );
        assert_eq!(
            at("Estaré fuera hasta el 10 de enero de 2027").as_deref(),
            Some("2027-01-10")
        );
        assert_eq!(
            at("1月8日まで休暇をいただいております").as_deref(),
            Some("2027-01-08")
        );
        assert_eq!(at("Вернусь 12 января").as_deref(), Some("2027-01-12"));
        assert_eq!(
            at("away from 21/12/2026 to 01/04/2027").as_deref(),
            Some("2027-01-04")
        );
        assert_eq!(at("back 2027-01-03").as_deref(), Some("2027-01-03"));
        assert_eq!(at("no date here, version 1.2.3"), None);
    }
}
