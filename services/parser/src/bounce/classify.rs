//! Why a delivery failed, and whether retrying could ever help.
//!
//! The reason comes from what the server said (the diagnostic text; the first matching row
//! wins), else from the status code; the class from the reason, else from the status code and
//! the DSN action.
//!
//! | reason | said (examples, case-insensitive) | status codes | class |
//! |---|---|---|---|
//! | `user-unknown` | user unknown, no such user, does not exist, invalid recipient, address not found | 5.1.1, 5.1.0, 5.1.3 | hard |
//! | `host-unknown` | host not found, no such domain, unrouteable address, domain not found | 5.1.2, 5.4.4 | hard |
//! | `not-accepting` | does not accept mail, null MX | 5.1.10 | hard |
//! | `moved` | has moved, no longer at this address | 5.1.6 | hard |
//! | `mailbox-full` | mailbox full, over quota, insufficient storage | 4.2.2, 5.2.2 | soft |
//! | `suspended` | account disabled, suspended, inactive | 5.2.1 | soft |
//! | `too-big` | message too large, size limit | 5.2.3, 5.3.4 | soft |
//! | `expired` | expired, retry time exceeded, too long in queue, giving up | 4.4.7, 5.4.7 | soft |
//! | `relaying-denied` | relaying denied, relay not permitted | 5.7.1 with that text | soft |
//! | `rejected` | the sender refused: sender address rejected, sender verify failed | 5.1.7, 5.1.8 | soft |
//! | `blocked` | the sending host refused: blocked, blacklisted, RBL, Spamhaus, poor reputation, client host rejected | | soft |
//! | `spam` | spam, junk | 5.7.1 with that text | soft |
//! | `virus` | virus, malware | | soft |
//! | `security` | SPF, DKIM, DMARC, authentication, TLS | 5.7.23–5.7.27 | soft |
//! | `policy` | policy, not permitted, prohibited | 5.7.0, 5.7.1 | soft |
//! | `filtered` | filtered, refused by the recipient's rules | | soft |
//! | `rate-limited` | too many connections / messages, rate limit | 4.7.0, 4.7.28 | soft |
//! | `network` | connection refused / timed out, mail loop, too many hops | 4.4.1, 4.4.2, 5.4.6 | soft |
//! | `system` | system error, system full, local error | 4.3.0, 5.3.0–5.3.5 | soft |
//! | `content` | content / MIME / header rejected | 5.6.x | soft |
//!
//! Without a reason: a DSN action `delayed` (or a 4.x.x status in a warning) is `delayed`;
//! `delivered`, `relayed` and `expanded` are `delivered`; a 4.x.x status is `soft`; anything
//! else is `undetermined`.

use std::sync::LazyLock;

use mailstream_runtime::records::Bounce;
use regex::Regex;

use crate::bodies::re;

/// Reasons by what the server said, in order; the first that matches wins.
static REASONS: LazyLock<Vec<(&'static str, Regex)>> = LazyLock::new(|| {
    [
        ("mailbox-full", r"mailbox (is )?full|full mailbox|(over|exceeded?( the)?|reached( its)?|out of|mailbox) (disk )?(quota|storage)|quota (exceeded|full)|insufficient (disk |system )?(space|storage)|mailbox size limit|over (the )?(allowed )?quota|not enough (disk )?space|storage (space )?(is )?full|user is over|mailbox.{0,20}exceeded"),
        ("too-big", r"too (large|big)|size (limit|exceeds|exceeded)|exceeds? (the )?(maximum|size|message size)|message length exceeds"),
        ("host-unknown", r"host (not found|unknown)|unknown host|no such domain|domain (not found|does not exist|name not found|unknown)|unroute?able|name service error|no (mx|mail exchanger)|nxdomain|non-existent hosts?|host or domain name not found|domain (is )?invalid|invalid domain|no route to host|unknown domain"),
        ("not-accepting", r"does not accept (e-?)?mail|null mx|accepts no mail"),
        ("moved", r"has moved|no longer (at|with) |address (has )?changed"),
        ("relaying-denied", r"relay(ing)? (access )?(denied|not (permitted|allowed))|not permitted to relay|unable to relay|relay not"),
        ("rejected", r"sender (address )?(rejected|refused|denied|verif(y|ication) failed|domain)|sender (is )?(blocked|invalid)|mail from.{0,40}(rejected|refused)|domain of sender|bad sender|envelope sender|return path"),
        ("user-unknown", r"user (unknown|not found|does ?n[o']t exist)|unknown (user|recipient|local[- ]?part|address|mailbox)|no such (user|recipient|mailbox|address|account)|(mailbox|recipient|user|address|account)( \S+)? (does not|doesn't|did not) exist|does not exist|doesn't have an? .{0,40} account|(recipient|mailbox|address|user) (not found|unknown|invalid|unavailable)|invalid (recipient|mailbox|address|user)|not (a valid|an existing) (recipient|mailbox|user|address)|address (rejected|not found|invalid)|recipient address rejected|couldn't be found|could not be found|name is not recognized|not listed in|no mailbox|undeliverable address|bad destination mailbox|account (that you tried to reach )?(does not exist|is unavailable)|mailbox unavailable|unknown or illegal alias|no valid recipients|is not a known user|user invalid|addressee unknown|no account by that name"),
        ("suspended", r"disabled|suspended|inactive|deactivated|account (has )?expired|blocked for inactivity|is frozen|(?-u:\b)locked"),
        ("expired", r"expired|retry (time(out)?|period) (exceeded|reached)|too long in (the )?queue|could not be delivered (within|for)|delivery time|giving up|given up|message timed out|timeout exceeded|was not delivered within|retry limit|unable to deliver for"),
        ("virus", r"virus|malware|infected"),
        ("security", r"(?-u:\b)spf(?-u:\b)|dkim|dmarc|authenticat|(?-u:\b)tls(?-u:\b)|starttls|certificate|encryption required|unauthenticated"),
        ("blocked", r"block(ed|list)|black ?list|(?-u:\b)rbl(?-u:\b)|dnsbl|spamhaus|spamcop|barracuda|reputation|client host .{0,40}rejected|rejected .{0,20}(ip|host|address)|ip .{0,30}(rejected|refused|listed)|listed (at|in|on)|banned|access denied|reverse dns|(?-u:\b)ptr(?-u:\b)|connection refused by|not allowed to send|smtp server of your isp|dynamic ip|residential"),
        ("spam", r"spam|junk mail|unsolicited|bulk mail"),
        ("rate-limited", r"too many (connections|messages|recipients|sessions|mails)|rate limit|rate-limit|throttl|temporarily deferred|try (again )?later|exceeded the (rate|maximum number)"),
        ("policy", r"policy|not permitted|prohibited|not authori[sz]ed|violat"),
        ("filtered", r"filter|refused by (the )?recipient|recipient (has )?(refused|rejected|blocked)|rejected by (the )?(recipient|user)|content rejected|message rejected"),
        ("network", r"connection (refused|timed out|reset|lost|closed|failure)|network|mail loop|loop(s)? (back|detected)|too many hops|hop count|routing loop|could not connect|unable to connect|no answer|lost connection"),
        ("system", r"system (error|full|config)|internal (server )?error|local error|server error|disk full|system (is )?(busy|overloaded)|temporary (local )?(failure|problem)|out of memory|resources"),
        ("content", r"mime|content|header|8-?bit|encoding|malformed|syntax"),
    ]
    .into_iter()
    .map(|(reason, pattern)| (reason, re(&format!("(?i){pattern}"))))
    .collect()
});

/// Reasons by status code, when the text names none.
const STATUS_REASONS: &[(&str, &str)] = &[
    ("5.1.1", "user-unknown"),
    ("5.1.0", "user-unknown"),
    ("5.1.3", "user-unknown"),
    ("5.1.2", "host-unknown"),
    ("5.4.4", "host-unknown"),
    ("5.1.10", "not-accepting"),
    ("5.1.6", "moved"),
    ("5.1.7", "rejected"),
    ("5.1.8", "rejected"),
    ("4.2.2", "mailbox-full"),
    ("5.2.2", "mailbox-full"),
    ("5.2.1", "suspended"),
    ("5.2.3", "too-big"),
    ("5.3.4", "too-big"),
    ("4.4.7", "expired"),
    ("5.4.7", "expired"),
    ("4.4.1", "network"),
    ("4.4.2", "network"),
    ("5.4.6", "network"),
    ("5.4.14", "network"),
    ("4.3.0", "system"),
    ("5.3.0", "system"),
    ("5.3.2", "system"),
    ("4.7.0", "rate-limited"),
    ("4.7.28", "rate-limited"),
    ("5.7.0", "policy"),
    ("5.7.1", "policy"),
    ("5.7.23", "security"),
    ("5.7.25", "security"),
    ("5.7.26", "security"),
    ("5.7.27", "security"),
    ("5.7.7", "security"),
];

/// Reasons that no retry can cure.
const HARD_REASONS: &[&str] = &["user-unknown", "host-unknown", "not-accepting", "moved"];

/// The reason for a failure: from what the server said, else from the status code.
pub fn reason(diagnostic: &str, status: Option<&str>) -> Option<&'static str> {
    if !diagnostic.is_empty()
        && let Some((reason, _)) = REASONS.iter().find(|(_, re)| re.is_match(diagnostic))
    {
        return Some(reason);
    }
    let status = status?;
    STATUS_REASONS
        .iter()
        .find(|(code, _)| *code == status)
        .map(|(_, reason)| *reason)
        .or_else(|| {
            // A class-level fallback: 5.1.x and 5.2.x are about the mailbox, 5.6.x the content.
            let mut parts = status.split('.');
            match (parts.next(), parts.next()) {
                (Some("5"), Some("6")) => Some("content"),
                _ => None,
            }
        })
}

/// The class of one recipient: from the action, the reason and the status code.
pub fn class(action: Option<&str>, reason: Option<&str>, status: Option<&str>) -> &'static str {
    match action.map(str::to_ascii_lowercase).as_deref() {
        Some("delayed") => return Bounce::DELAYED,
        Some("delivered" | "relayed" | "expanded") => return DELIVERED,
        _ => {}
    }
    if let Some(reason) = reason {
        return if HARD_REASONS.contains(&reason) {
            Bounce::HARD
        } else {
            Bounce::SOFT
        };
    }
    match status.and_then(|s| s.chars().next()) {
        Some('4') => Bounce::SOFT,
        _ => Bounce::UNDETERMINED,
    }
}

/// The class of a recipient whose delivery succeeded (a positive DSN): not a failure.
pub const DELIVERED: &str = "delivered";

/// Orders classes from the worst: a report's class is its worst recipient's.
pub fn severity(class: &str) -> u8 {
    match class {
        Bounce::HARD => 6,
        Bounce::SOFT => 5,
        Bounce::UNDETERMINED => 4,
        Bounce::COMPLAINT => 3,
        Bounce::DELAYED => 2,
        Bounce::CHALLENGE => 1,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_from_text_then_status() {
        let cases = [
            (
                "550 5.1.1 <a@b.example>... User Unknown",
                None,
                "user-unknown",
            ),
            ("552 Mailbox is full", None, "mailbox-full"),
            ("Host or domain name not found", None, "host-unknown"),
            (
                "554 Rejected: IP listed in zen.spamhaus.org",
                None,
                "blocked",
            ),
            ("550 Message rejected as spam", None, "spam"),
            ("Retry timeout exceeded", None, "expired"),
            ("", Some("5.2.2"), "mailbox-full"),
            ("", Some("5.4.4"), "host-unknown"),
            ("550 sender verify failed", None, "rejected"),
            ("552 message size exceeds fixed maximum", None, "too-big"),
        ];
        for (text, status, expected) in cases {
            assert_eq!(reason(text, status), Some(expected), "{text}");
        }
        assert_eq!(reason("something odd", Some("5.0.0")), None);
    }

    #[test]
    fn classes() {
        assert_eq!(class(Some("failed"), Some("user-unknown"), None), "hard");
        assert_eq!(class(Some("failed"), Some("mailbox-full"), None), "soft");
        assert_eq!(class(Some("delayed"), Some("network"), None), "delayed");
        assert_eq!(class(Some("relayed"), None, None), "delivered");
        assert_eq!(class(None, None, Some("4.0.0")), "soft");
        assert_eq!(class(None, None, Some("5.0.0")), "undetermined");
    }
}
