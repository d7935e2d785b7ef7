//! Signals about how an email was sent: authentication results, automatic replies, bounces and
//! mailing lists.
//!
//! - **auth**: the first (topmost, so added by the nearest receiving server) `Authentication-Results`
//!   header gives `spf=`, `dkim=` and `dmarc=`; `Received-SPF` fills SPF when that header has none.
//! - **auto_reply** (RFC 3834 headers, then phrases in many languages), in classes:
//!   [`crate::autoreply`].
//! - **bounce**: delivery reports (DSNs and the prose formats of MTAs, delays, challenges,
//!   complaints), per recipient and classified: [`crate::bounce`].
//! - **list**: `List-Id` (angle-bracketed id) and `Precedence`.

use std::sync::LazyLock;

use mail_parser::Message;
use mailstream_runtime::records::{AuthResults, AutoReply, Bounce, ListInfo};
use regex::Regex;

use crate::bodies::re;
use crate::normalize;

static AUTH_RESULT: LazyLock<Regex> =
    LazyLock::new(|| re(r"(?i)(?:^|[;\s])(spf|dkim|dmarc)\s*=\s*([a-z]+)"));
/// SPF, DKIM and DMARC results.
pub fn auth(message: &Message<'_>) -> AuthResults {
    let mut auth = AuthResults::default();
    if let Some(value) = header_text(message, "Authentication-Results") {
        for caps in AUTH_RESULT.captures_iter(&value) {
            let (Some(method), Some(result)) = (caps.get(1), caps.get(2)) else {
                continue;
            };
            let result = Some(result.as_str().to_ascii_lowercase());
            match method.as_str().to_ascii_lowercase().as_str() {
                "spf" if auth.spf.is_none() => auth.spf = result,
                "dkim" if auth.dkim.is_none() => auth.dkim = result,
                "dmarc" if auth.dmarc.is_none() => auth.dmarc = result,
                _ => {}
            }
        }
    }
    if auth.spf.is_none()
        && let Some(value) = header_text(message, "Received-SPF")
    {
        auth.spf = value
            .split_whitespace()
            .next()
            .map(|w| w.trim_end_matches([';', ':']).to_ascii_lowercase());
    }
    auth
}

/// The automatic reply (out-of-office, left the company, unsubscribe, other) `message` is: see
/// [`crate::autoreply`].
pub fn auto_reply(message: &Message<'_>, ctx: &crate::autoreply::Context<'_>) -> Option<AutoReply> {
    crate::autoreply::detect(message, ctx)
}

/// The delivery report (bounce, delay, challenge or complaint) in `message`: see [`crate::bounce`].
pub fn bounce(
    message: &Message<'_>,
    from: Option<&str>,
    subject: Option<&str>,
    envelope_null_sender: bool,
) -> Option<Bounce> {
    crate::bounce::detect(message, from, subject, envelope_null_sender)
}

/// Mailing-list markers, when there are any.
pub fn list(message: &Message<'_>) -> Option<ListInfo> {
    let list_id = header_text(message, "List-Id").and_then(|v| {
        let id = match (v.rfind('<'), v.rfind('>')) {
            (Some(start), Some(end)) if start < end => v[start + 1..end].trim().to_string(),
            _ => v.trim().to_string(),
        };
        (!id.is_empty()).then(|| id.to_lowercase())
    });
    let precedence = header_text(message, "Precedence").map(|v| v.trim().to_ascii_lowercase());
    (list_id.is_some() || precedence.is_some()).then_some(ListInfo {
        list_id,
        precedence,
    })
}

/// The first (topmost) top-level header called `name`, decoded and unfolded.
pub(crate) fn header_text(message: &Message<'_>, name: &str) -> Option<String> {
    let raw = message.raw_message();
    message
        .root_part()
        .headers
        .iter()
        .find(|h| h.name.as_str().eq_ignore_ascii_case(name))
        .map(|h| {
            let start = (h.offset_start as usize).min(raw.len());
            let end = (h.offset_end as usize).clamp(start, raw.len());
            normalize::decode_unstructured(&raw[start..end])
        })
        .filter(|v| !v.is_empty())
}
