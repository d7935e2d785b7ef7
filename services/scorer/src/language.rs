//! The language of an email's body and the country of its sender's domain, for routing rules
//! (`language`, `country` conditions) and the `scored` record's `routing`.
//!
//! - **Language**: whatlang's trigram detector on the reply text (quotes and signature removed,
//!   else the whole text), at most [`SAMPLE_CHARS`] characters of it; reported only when
//!   whatlang calls its guess reliable. It costs 0.1–0.3 ms of CPU per email (measured on this
//!   2-core machine), as much as the rest of scoring, so it runs only when the rules file tests
//!   the language somewhere ([`crate::rules::RuleSet::detect_language`]). Codes are ISO 639-1 (`de`), else ISO 639-3 for a
//!   language without a two-letter code (isolang maps them).
//! - **Country**: the sender domain's country-code TLD (`acme.de` → `de`; `uk` → `gb`), except
//!   the ccTLDs sold as generic names ([`GENERIC_CCTLDS`]: `.io`, `.co`, `.ai`, ...), which say
//!   nothing about where a company is. `eu` is not a country.
//!
//! Both are pure functions of the email, so a replay routes the same way.

/// Characters of the body the detector reads: enough for a confident guess, bounded cost.
pub const SAMPLE_CHARS: usize = 1_000;

/// Country-code TLDs mostly bought as generic names.
pub const GENERIC_CCTLDS: &[&str] = &[
    "ac", "ai", "am", "bz", "cc", "co", "fm", "gg", "io", "ly", "me", "nu", "sh", "so", "to", "tv",
    "vc", "ws",
];

/// The language of `text`, when it can be told reliably.
pub fn detect(text: &str) -> Option<String> {
    let end = text
        .char_indices()
        .nth(SAMPLE_CHARS)
        .map_or(text.len(), |(i, _)| i);
    let info = whatlang::detect(&text[..end]).filter(whatlang::Info::is_reliable)?;
    let code = info.lang().code();
    let two = isolang::Language::from_639_3(code).and_then(|l| l.to_639_1());
    Some(two.unwrap_or(code).to_string())
}

/// The country of `domain` from its country-code TLD.
pub fn country_of(domain: &str) -> Option<String> {
    let tld = domain.trim_end_matches('.').rsplit('.').next()?;
    let tld = tld.to_ascii_lowercase();
    if tld.len() != 2 || !tld.bytes().all(|b| b.is_ascii_lowercase()) {
        return None;
    }
    match tld.as_str() {
        "uk" => Some("gb".into()),
        "eu" => None,
        t if GENERIC_CCTLDS.contains(&t) => None,
        _ => Some(tld),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn languages_are_told_in_two_letters() {
        let cases = [
            (
                "Guten Tag, wir interessieren uns für Ihre Software und möchten gerne ein Angebot für unser Team erhalten.",
                "de",
            ),
            (
                "Bonjour, nous aimerions recevoir une démonstration de votre produit pour notre équipe commerciale.",
                "fr",
            ),
            (
                "Hola, estamos interesados en su producto y queremos saber el precio para nuestra empresa.",
                "es",
            ),
            (
                "Hello, we would like to see a demo of your product and learn about your pricing for our team.",
                "en",
            ),
        ];
        for (text, want) in cases {
            assert_eq!(detect(text).as_deref(), Some(want), "{text}");
        }
    }

    #[test]
    fn a_few_words_are_not_enough_to_tell() {
        assert_eq!(detect("ok"), None);
        assert_eq!(detect(""), None);
    }

    #[test]
    fn countries_come_from_country_code_tlds_only() {
        assert_eq!(country_of("acme.de").as_deref(), Some("de"));
        assert_eq!(country_of("shop.co.uk").as_deref(), Some("gb"));
        assert_eq!(country_of("ACME.FR.").as_deref(), Some("fr"));
        for generic in [
            "startup.io",
            "acme.com",
            "acme.co",
            "eu-agency.eu",
            "x.museum",
        ] {
            assert_eq!(country_of(generic), None, "{generic}");
        }
    }
}
