//! The never-log list (`never_log`): addresses and domains whose mail is never written to the
//! CRM. A lead is never logged when **any participant** of its email matches: the sender (From,
//! Sender, the envelope's MAIL FROM), Reply-To, To, Cc, Bcc and the envelope's recipients. Mail
//! a prospect sends with your lawyer in Cc must stay out of the CRM as much as the lawyer's own;
//! so list other people's addresses, never your own domains (that would log nothing).
//!
//! | entry | matches |
//! |---|---|
//! | `ceo@board.example` | that address, also with a `+tag` (`ceo+x@board.example`) |
//! | `@lawfirm.example` or `lawfirm.example` | every address on that domain and its subdomains (`eu.lawfirm.example`) |
//!
//! Case does not matter. Such a lead is skipped like an excluded one: nothing is written, its
//! crm-results record says `skipped` with the reason `never-log`, and no address is logged.

use std::collections::HashSet;

use mailstream_runtime::records::ScoredLead;

/// The reason in crm-results.
pub const REASON: &str = "never-log";

/// The parsed list.
#[derive(Debug, Clone, Default)]
pub struct NeverLog {
    addresses: HashSet<String>,
    domains: HashSet<String>,
}

impl NeverLog {
    /// The list from its entries; each entry that is neither an address nor a domain is
    /// named in the errors by its position (1 is the first), not by its text: entries are
    /// people's addresses, which are never logged.
    pub fn parse(entries: &[String]) -> Result<Self, Vec<String>> {
        let mut list = Self::default();
        let mut errors = Vec::new();
        for (n, entry) in entries.iter().enumerate() {
            let lower = entry.trim().to_lowercase();
            let (local, domain) = match lower.rsplit_once('@') {
                Some((local, domain)) => (local, domain),
                None => ("", lower.as_str()),
            };
            let domain_ok = !domain.is_empty()
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !domain.contains(['@', '/']);
            if !domain_ok || lower.contains(char::is_whitespace) || local.contains('@') {
                errors.push(format!(
                    "entry {} is neither an address (`name@domain`) nor a domain (`@domain` or `domain`)",
                    n + 1
                ));
            } else if local.is_empty() {
                list.domains.insert(domain.to_string());
            } else {
                list.addresses.insert(format!("{local}@{domain}"));
            }
        }
        if errors.is_empty() {
            Ok(list)
        } else {
            Err(errors)
        }
    }

    pub fn is_empty(&self) -> bool {
        self.addresses.is_empty() && self.domains.is_empty()
    }

    /// Whether `address` is on the list.
    pub fn matches(&self, address: &str) -> bool {
        let address = address.trim().to_lowercase();
        let Some((local, domain)) = address.rsplit_once('@') else {
            return false;
        };
        let base = local.split_once('+').map_or(local, |(base, _)| base);
        if self.addresses.contains(&address) || self.addresses.contains(&format!("{base}@{domain}"))
        {
            return true;
        }
        // The domain and each parent domain: `eu.lawfirm.example`, `lawfirm.example`, ...
        let mut rest = domain;
        loop {
            if self.domains.contains(rest) {
                return true;
            }
            match rest.split_once('.') {
                Some((_, parent)) if !parent.is_empty() => rest = parent,
                _ => return false,
            }
        }
    }

    /// Whether any participant of `lead`'s email is on the list.
    pub fn matches_lead(&self, lead: &ScoredLead) -> bool {
        if self.is_empty() {
            return false;
        }
        let resolved = [&lead.sender_email, &lead.resolved.sender_email]
            .into_iter()
            .flatten()
            .map(String::as_str)
            .chain(lead.resolved.recipients.iter().map(String::as_str));
        lead.resolved
            .email
            .participants()
            .chain(resolved)
            .any(|a| self.matches(a))
    }
}

#[cfg(test)]
mod tests {
    use mailstream_runtime::records::{Address, ParsedEmail, ResolvedEmail};

    use super::*;

    fn list(entries: &[&str]) -> NeverLog {
        NeverLog::parse(&entries.iter().map(|e| e.to_string()).collect::<Vec<_>>())
            .expect("valid entries")
    }

    #[test]
    fn addresses_match_exactly_with_tags_and_domains_with_subdomains_any_case() {
        let l = list(&["CEO@Board.example", "@LawFirm.example", "hr.acme.io"]);
        for yes in [
            "ceo@board.example",
            " Ceo+Personal@BOARD.example",
            "anyone@lawfirm.example",
            "x@eu.lawfirm.example",
            "jo@hr.acme.io",
        ] {
            assert!(l.matches(yes), "{yes}");
        }
        for no in [
            "cfo@board.example",
            "x@notlawfirm.example",
            "x@lawfirm.example.org",
            "jo@acme.io",
            "not an address",
        ] {
            assert!(!l.matches(no), "{no}");
        }
    }

    #[test]
    fn entries_that_are_neither_address_nor_domain_are_named() {
        let errors = NeverLog::parse(&[
            "ok.example".into(),
            "a@".into(),
            "two words.example".into(),
            "a@b@c.example".into(),
        ])
        .expect_err("bad entries");
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(
            errors[0].starts_with("entry 2 ") && errors[2].starts_with("entry 4 "),
            "{errors:?}"
        );
        assert!(!errors.concat().contains("c.example"), "{errors:?}");
    }

    #[test]
    fn any_participant_of_the_lead_counts() {
        let l = list(&["@lawfirm.example"]);
        let address = |email: &str| Address {
            email: email.into(),
            name: None,
        };
        let lead = |cc: &str| ScoredLead {
            sender_email: Some("dana@prospect.example".into()),
            resolved: ResolvedEmail {
                email: ParsedEmail {
                    from: Some(address("dana@prospect.example")),
                    cc: vec![address(cc)],
                    ..ParsedEmail::default()
                },
                ..ResolvedEmail::default()
            },
            ..ScoredLead::default()
        };
        assert!(l.matches_lead(&lead("counsel@lawfirm.example")));
        assert!(!l.matches_lead(&lead("colleague@prospect.example")));
        assert!(!NeverLog::default().matches_lead(&lead("counsel@lawfirm.example")));
    }
}
