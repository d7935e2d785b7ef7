//! Deal routing by recipient address: `deal-{id}@` (configurable) links an email to deal `id`.
//!
//! The pattern's text before `@` is matched against the recipient's local part (a `+tag` after
//! it is allowed, as plus-addressing), `{id}` captures the deal id (letters, digits, `-`, `_`),
//! and a domain after the `@`, when given, must equal the recipient's domain.

use regex::Regex;

/// A compiled deal-address pattern.
#[derive(Debug, Clone)]
pub struct DealPattern {
    local: Regex,
    domain: Option<String>,
}

impl DealPattern {
    /// Compiles `deal-{id}@`, `{id}.deals@`, `deal-{id}@deals.example.com`, ...
    pub fn parse(pattern: &str) -> Result<Self, String> {
        let (local, domain) = pattern.split_once('@').ok_or_else(|| {
            format!("`{pattern}` has no `@` (expected something like deal-{{id}}@)")
        })?;
        let (before, after) = local
            .split_once("{id}")
            .ok_or_else(|| format!("`{pattern}` has no `{{id}}` placeholder"))?;
        if after.contains("{id}") {
            return Err(format!("`{pattern}` has more than one `{{id}}`"));
        }
        let regex = format!(
            r"(?i)^{}(?P<id>[A-Za-z0-9_-]+?){}(?:\+[^@]*)?$",
            regex::escape(before),
            regex::escape(after)
        );
        let local = Regex::new(&regex).map_err(|e| format!("`{pattern}`: {e}"))?;
        let domain = Some(domain.trim().to_ascii_lowercase()).filter(|d| !d.is_empty());
        Ok(Self { local, domain })
    }

    /// The deal id `address` routes to, if it is a deal address.
    pub fn deal_id(&self, address: &str) -> Option<String> {
        let (local, domain) = address.rsplit_once('@')?;
        if let Some(want) = &self.domain
            && !domain.eq_ignore_ascii_case(want)
        {
            return None;
        }
        self.local
            .captures(local)
            .and_then(|c| c.name("id"))
            .map(|m| m.as_str().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_pattern_routes_deal_addresses() {
        let p = DealPattern::parse("deal-{id}@").expect("valid");
        assert_eq!(p.deal_id("deal-42@in.example.com").as_deref(), Some("42"));
        assert_eq!(
            p.deal_id("Deal-Q3_acme@in.example.com").as_deref(),
            Some("Q3_acme")
        );
        assert_eq!(
            p.deal_id("deal-42+fwd@in.example.com").as_deref(),
            Some("42")
        );
        assert_eq!(p.deal_id("sales@in.example.com"), None);
        assert_eq!(p.deal_id("mydeal-42@in.example.com"), None);
    }

    #[test]
    fn suffix_and_domain_patterns() {
        let p = DealPattern::parse("{id}.deal@deals.example.com").expect("valid");
        assert_eq!(p.deal_id("7.deal@deals.example.com").as_deref(), Some("7"));
        assert_eq!(p.deal_id("7.deal@other.example.com"), None);
    }

    #[test]
    fn bad_patterns_say_why() {
        assert!(
            DealPattern::parse("deal-{id}")
                .expect_err("invalid")
                .contains("no `@`")
        );
        assert!(
            DealPattern::parse("deal@")
                .expect_err("invalid")
                .contains("{id}")
        );
    }
}
