//! A small, explainable detector of suspicious links, for the `links` condition.
//!
//! Spam and phishing hide where a link really goes. Rather than pull in a URL or public-suffix
//! library, this looks for a handful of plain signs, each of which an analyst can check by eye:
//!
//! | reason | sign |
//! |---|---|
//! | `IP address` | the host is an IP literal (`http://192.0.2.7/`, `http://[2001:db8::1]/`, `http://3232235777/`) |
//! | `punycode` | a label of the host starts with `xn--` (an internationalised look-alike) |
//! | `non-ASCII host` | the host is written in Unicode (the same, before encoding) |
//! | `URL shortener` | the host is a known shortener ([`SHORTENERS`]) that hides the destination |
//! | `user info` | the link has a `user@` part before the host (`http://bank.com@evil.io/`) |
//! | `text shows X` | an HTML link's text is a domain (`paypal.com`) other than where it goes |
//!
//! Links are found in the body text (`http://`, `https://`, `ftp://` and `www.` forms) and in the
//! HTML (the same, plus `<a href>` with its text). Only hosts are reported: a URL's path and
//! query can carry an address or a token, so they never reach evidence.

use std::net::Ipv4Addr;
use std::sync::LazyLock;

use regex::Regex;

/// Hosts of URL shorteners.
pub const SHORTENERS: &[&str] = &[
    "bit.ly",
    "bit.do",
    "buff.ly",
    "cutt.ly",
    "goo.gl",
    "is.gd",
    "ow.ly",
    "rb.gy",
    "rebrand.ly",
    "s.id",
    "shorturl.at",
    "t.co",
    "t.ly",
    "tiny.cc",
    "tinyurl.com",
    "v.gd",
    "clck.ru",
    "adf.ly",
    "shorte.st",
    "bl.ink",
    "qr.ae",
];

/// One link: where it goes, and (for an HTML link whose text is a domain) what it shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Lower-case host, without port or user info (`[...]` kept for IPv6).
    pub host: String,
    /// The link had a `user@` part before the host.
    pub user_info: bool,
    /// The domain the link's text shows, when the text is a domain or URL.
    pub shown: Option<String>,
}

/// The patterns are constants of this file, and its tests use each of them, so `None` (an
/// invalid pattern) cannot ship; it would only turn the detector off, never panic.
type Pattern = LazyLock<Option<Regex>>;

static URL: Pattern =
    LazyLock::new(|| Regex::new(r#"(?i)\b(?:(?:https?|ftp)://|www\.)[^\s<>"'`]+"#).ok());
static ANCHOR: Pattern = LazyLock::new(|| {
    Regex::new(r#"(?is)<a\s[^>]*?\bhref\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+))[^>]*>(.*?)</a\s*>"#)
        .ok()
});
static TAG: Pattern = LazyLock::new(|| Regex::new(r"(?s)<[^>]*>").ok());
static SHOWN_DOMAIN: Pattern = LazyLock::new(|| {
    Regex::new(
        r"(?i)^(?:https?://)?((?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)+[a-z]{2,63})\.?(?:[/:?#]\S*)?$",
    )
    .ok()
});

/// The host of `url` (`scheme://[user@]host[:port]/...` or `www.host/...`) and whether it had
/// user info.
fn host_of(url: &str) -> Option<(String, bool)> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest
        .split(|c: char| matches!(c, '/' | '?' | '#' | '\\') || c.is_whitespace())
        .next()
        .unwrap_or_default();
    let (user_info, host_port) = match authority.rsplit_once('@') {
        Some((_, host)) => (true, host),
        None => (false, authority),
    };
    let host: String = if host_port.starts_with('[') {
        let end = host_port.find(']')?;
        host_port[..=end].to_string()
    } else {
        host_port
            .chars()
            .take_while(|c| c.is_alphanumeric() || matches!(c, '-' | '.' | '_'))
            .collect()
    };
    let host = host.trim_end_matches('.').to_lowercase();
    (!host.is_empty()).then_some((host, user_info))
}

fn push(links: &mut Vec<Link>, link: Link) {
    if !links.contains(&link) {
        links.push(link);
    }
}

/// Every distinct link in `text` and `html`, in order of appearance.
pub fn extract(text: Option<&str>, html: Option<&str>) -> Vec<Link> {
    let mut links = Vec::new();
    let (Some(url), Some(anchor), Some(tag), Some(shown_domain)) = (
        URL.as_ref(),
        ANCHOR.as_ref(),
        TAG.as_ref(),
        SHOWN_DOMAIN.as_ref(),
    ) else {
        return links;
    };
    for source in [text, html].into_iter().flatten() {
        for m in url.find_iter(source) {
            if let Some((host, user_info)) = host_of(m.as_str()) {
                push(
                    &mut links,
                    Link {
                        host,
                        user_info,
                        shown: None,
                    },
                );
            }
        }
    }
    if let Some(html) = html {
        for caps in anchor.captures_iter(html) {
            let href = caps
                .get(1)
                .or_else(|| caps.get(2))
                .or_else(|| caps.get(3))
                .map_or("", |m| m.as_str().trim());
            let lower = href.to_ascii_lowercase();
            if !(lower.starts_with("http://") || lower.starts_with("https://")) {
                continue;
            }
            let text = tag.replace_all(caps.get(4).map_or("", |m| m.as_str()), "");
            let shown = shown_domain
                .captures(text.trim())
                .and_then(|c| c.get(1))
                .map(|d| d.as_str().to_ascii_lowercase());
            if let (Some(shown), Some((host, user_info))) = (shown, host_of(href)) {
                push(
                    &mut links,
                    Link {
                        host,
                        user_info,
                        shown: Some(shown),
                    },
                );
            }
        }
    }
    links
}

fn is_ip_literal(host: &str) -> bool {
    if host.starts_with('[') || host.parse::<Ipv4Addr>().is_ok() {
        return true;
    }
    // Decimal, octal and hex spellings (`3232235777`, `0x7f.0.0.1`) that browsers still resolve.
    host.split('.').all(|label| {
        !label.is_empty()
            && (label.chars().all(|c| c.is_ascii_digit())
                || label
                    .strip_prefix("0x")
                    .is_some_and(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_hexdigit())))
    })
}

fn within(host: &str, domain: &str) -> bool {
    host == domain
        || host
            .strip_suffix(domain)
            .is_some_and(|prefix| prefix.ends_with('.'))
}

fn same_site(a: &str, b: &str) -> bool {
    let a = a.strip_prefix("www.").unwrap_or(a);
    let b = b.strip_prefix("www.").unwrap_or(b);
    within(a, b) || within(b, a)
}

/// Why `link` is suspicious, or `None`.
pub fn suspicion(link: &Link) -> Option<String> {
    let host = link.host.as_str();
    if is_ip_literal(host) {
        return Some("IP address".into());
    }
    if host.split('.').any(|label| label.starts_with("xn--")) {
        return Some("punycode".into());
    }
    if !host.is_ascii() {
        return Some("non-ASCII host".into());
    }
    if SHORTENERS.iter().any(|s| within(host, s)) {
        return Some("URL shortener".into());
    }
    if link.user_info {
        return Some("user info".into());
    }
    match &link.shown {
        Some(shown) if !same_site(shown, host) => Some(format!("text shows {shown}")),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reasons(text: Option<&str>, html: Option<&str>) -> Vec<String> {
        extract(text, html)
            .iter()
            .filter_map(|l| suspicion(l).map(|r| format!("{} ({r})", l.host)))
            .collect()
    }

    #[test]
    fn plain_links_are_not_suspicious() {
        let text = "See https://www.example.com/pricing?x=1 and www.acme.io.";
        let html = r#"<a href="https://docs.example.com/a">example.com</a> <a href="https://x.io">here</a>"#;
        assert_eq!(reasons(Some(text), Some(html)), Vec::<String>::new());
        let hosts: Vec<String> = extract(Some(text), None)
            .into_iter()
            .map(|l| l.host)
            .collect();
        assert_eq!(hosts, ["www.example.com", "www.acme.io"]);
    }

    #[test]
    fn each_sign_is_recognised() {
        let text = "a http://192.0.2.7/x b https://bit.ly/abc c http://xn--pypal-4ve.com/ \
                    d http://bank.example@evil.example/login e http://3232235777/ \
                    f http://[2001:db8::1]:8080/ g https://päypal.com/";
        assert_eq!(
            reasons(Some(text), None),
            [
                "192.0.2.7 (IP address)",
                "bit.ly (URL shortener)",
                "xn--pypal-4ve.com (punycode)",
                "evil.example (user info)",
                "3232235777 (IP address)",
                "[2001:db8::1] (IP address)",
                "päypal.com (non-ASCII host)",
            ]
        );
    }

    #[test]
    fn anchor_text_naming_another_domain_is_suspicious() {
        let html = r#"<p><a class="x" href='https://paypal.com.evil.io/login'><b>www.PayPal.com</b></a>
            <a href="mailto:someone@example.com">someone@example.com</a></p>"#;
        assert_eq!(
            reasons(None, Some(html)),
            ["paypal.com.evil.io (text shows www.paypal.com)"]
        );
    }
}
