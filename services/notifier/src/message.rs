//! What a notification says, built from the `scored` record alone (pure functions): a Slack
//! Block Kit message and the generic webhook's JSON. Both name the sender, the company, the
//! subject, the score, the top reasons (the breakdown's rules with the most points) and links
//! to the CRM records.
//!
//! Slack's limits are kept: a header's text at most 150 characters, a section's text 3,000, a
//! field's 2,000, a button's 75 and its URL 3,000, at most 10 fields; text in `mrkdwn` has
//! `&`, `<` and `>` escaped (Slack reads `<...>` as a link or mention), and a `text` fallback is
//! always there (notifications and screen readers show it).

use mailstream_runtime::records::ScoredLead;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Value, json};

use crate::settings::NotifierSettings;

/// The facts of one notification, from the scored record.
#[derive(Debug, Clone, PartialEq)]
pub struct Facts {
    pub event_id: String,
    pub message_id: String,
    pub lead_key: String,
    pub received_at: i64,
    pub sender_email: Option<String>,
    pub sender_name: Option<String>,
    pub company: Option<String>,
    pub subject: Option<String>,
    pub score: i32,
    pub status: String,
    /// (rule id, points, evidence), most points first.
    pub reasons: Vec<(String, i32, String)>,
    pub team: Option<String>,
    pub owner: Option<String>,
    pub intent: Option<String>,
    /// (label, URL) of the CRM records.
    pub links: Vec<(&'static str, String)>,
    pub rules_version: String,
}

/// The id of one lead event: the message and the lead it made.
pub fn event_id(lead: &ScoredLead) -> String {
    format!("{}|{}", lead.message_id, lead.lead_key)
}

impl Facts {
    pub fn of(lead: &ScoredLead, settings: &NotifierSettings) -> Self {
        let mut reasons: Vec<(String, i32, String)> = lead
            .breakdown
            .iter()
            .map(|h| (h.rule_id.clone(), h.points, h.evidence.clone()))
            .collect();
        // Stable: ties keep the rules file's order.
        reasons.sort_by_key(|r| std::cmp::Reverse(r.1));
        reasons.truncate(settings.top_reasons as usize);
        let resolved = &lead.resolved;
        let company = resolved
            .account
            .as_ref()
            .and_then(|a| a.name.clone().or_else(|| a.domain.clone()))
            .or_else(|| lead.sender_domain.clone());
        let sender_name = resolved
            .email
            .from
            .as_ref()
            .and_then(|a| a.name.clone())
            .filter(|n| !n.trim().is_empty());
        let routing = lead.routing.as_ref();
        Self {
            event_id: event_id(lead),
            message_id: lead.message_id.clone(),
            lead_key: lead.lead_key.clone(),
            received_at: lead.received_at,
            sender_email: lead.sender_email.clone(),
            sender_name,
            company,
            // The rules' visibility `metadata` keeps the subject out of the CRM, and out of
            // the channel too.
            subject: lead.subject.clone().filter(|_| lead.shows_subject()),
            score: lead.score,
            status: lead.status.clone(),
            reasons,
            team: routing.and_then(|r| r.team.clone()),
            owner: routing.and_then(|r| r.owner.clone()),
            intent: routing.map(|r| r.intent.clone()),
            links: links(lead, settings),
            rules_version: lead.rules_version.clone(),
        }
    }
}

/// The CRM links whose templates are set and whose placeholders are all known.
fn links(lead: &ScoredLead, settings: &NotifierSettings) -> Vec<(&'static str, String)> {
    let values = [
        ("{contact_id}", lead.contact_id.as_deref()),
        ("{account_id}", lead.account_id.as_deref()),
        ("{deal_id}", lead.deal_id.as_deref()),
        ("{message_id}", Some(lead.message_id.as_str())),
        ("{email}", lead.sender_email.as_deref()),
    ];
    let mut out = Vec::new();
    for (label, template) in [
        ("Contact", &settings.contact_url),
        ("Company", &settings.account_url),
        ("Deal", &settings.deal_url),
        ("Email", &settings.email_url),
    ] {
        let Some(template) = template else { continue };
        let mut url = template.clone();
        let mut complete = true;
        for (placeholder, value) in values {
            if !url.contains(placeholder) {
                continue;
            }
            match value.filter(|v| !v.is_empty()) {
                Some(v) => {
                    url = url.replace(
                        placeholder,
                        &utf8_percent_encode(v, NON_ALPHANUMERIC).to_string(),
                    )
                }
                None => complete = false,
            }
        }
        if complete {
            out.push((label, url));
        }
    }
    out
}

/// `text` cut to at most `max` characters (an ellipsis marks the cut).
fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Slack's `mrkdwn` escaping: `&`, `<`, `>` (everything else is shown as written).
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn sender_line(f: &Facts) -> String {
    match (&f.sender_name, &f.sender_email) {
        (Some(name), Some(email)) => format!("{name} ({email})"),
        (Some(name), None) => name.clone(),
        (None, Some(email)) => email.clone(),
        (None, None) => "unknown sender".into(),
    }
}

/// The Slack Block Kit message.
pub fn slack(f: &Facts) -> Value {
    let subject = f.subject.clone().unwrap_or_else(|| "(no subject)".into());
    let company = f
        .company
        .clone()
        .unwrap_or_else(|| "unknown company".into());
    let field = |label: &str, value: &str| json!({"type": "mrkdwn", "text": cut(&format!("*{label}*\n{}", escape(value)), 2000)});
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": cut(&format!("Hot lead: {} (score {})", company, f.score), 150), "emoji": false}}),
        json!({"type": "section", "fields": [
            field("From", &sender_line(f)),
            field("Company", &company),
            field("Subject", &subject),
            field("Score", &format!("{} ({})", f.score, f.status)),
        ]}),
    ];
    if !f.reasons.is_empty() {
        let lines: Vec<String> = f
            .reasons
            .iter()
            .map(|(rule, points, evidence)| {
                format!("• *{:+}* {}: {}", points, escape(rule), escape(evidence))
            })
            .collect();
        blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": cut(&format!("*Top reasons*\n{}", lines.join("\n")), 3000)}}));
    }
    let mut context = Vec::new();
    if let Some(intent) = &f.intent {
        context.push(format!("intent {}", escape(intent)));
    }
    if let Some(team) = &f.team {
        context.push(format!("team {}", escape(team)));
    }
    if let Some(owner) = &f.owner {
        context.push(format!("owner {}", escape(owner)));
    }
    context.push(format!("rules {}", escape(&f.rules_version)));
    blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn", "text": cut(&context.join(" · "), 3000)}]}));
    if !f.links.is_empty() {
        let buttons: Vec<Value> = f
            .links
            .iter()
            .enumerate()
            .map(|(i, (label, url))| {
                json!({"type": "button", "text": {"type": "plain_text", "text": cut(&format!("Open {label}"), 75)}, "url": cut(url, 3000), "action_id": format!("open-{i}")})
            })
            .collect();
        blocks.push(json!({"type": "actions", "elements": buttons}));
    }
    json!({
        "text": cut(&escape(&format!("Hot lead (score {}): {} at {} — {}", f.score, sender_line(f), company, subject)), 3000),
        "blocks": blocks,
    })
}

/// The generic webhook's JSON body.
pub fn webhook(f: &Facts) -> Value {
    let received_at = chrono::DateTime::from_timestamp_millis(f.received_at)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    let links: serde_json::Map<String, Value> = f
        .links
        .iter()
        .map(|(label, url)| (label.to_ascii_lowercase(), Value::String(url.clone())))
        .collect();
    json!({
        "event": "lead.qualified",
        "event_id": f.event_id,
        "message_id": f.message_id,
        "lead_key": f.lead_key,
        "received_at": received_at,
        "sender": {"email": f.sender_email, "name": f.sender_name},
        "company": f.company,
        "subject": f.subject,
        "score": f.score,
        "status": f.status,
        "reasons": f.reasons.iter().map(|(rule, points, evidence)| json!({"rule_id": rule, "points": points, "evidence": evidence})).collect::<Vec<_>>(),
        "routing": {"intent": f.intent, "team": f.team, "owner": f.owner},
        "links": links,
        "rules_version": f.rules_version,
    })
}

#[cfg(test)]
mod tests {
    use mailstream_runtime::records::{AccountMatch, Address, Routing, RuleHit};

    use super::*;

    pub(crate) fn settings() -> NotifierSettings {
        serde_json::from_value(json!({
            "slack_webhook_url": "https://hooks.slack.test/T/B/x",
            "contact_url": "https://crm.example/contacts/{contact_id}",
            "account_url": "https://crm.example/accounts/{account_id}",
            "deal_url": "https://crm.example/deals/{deal_id}",
            "email_url": "https://crm.example/emails?id={message_id}",
        }))
        .expect("settings")
    }

    pub(crate) fn lead() -> ScoredLead {
        let mut lead = ScoredLead {
            message_id: "m1@acme.example".into(),
            received_at: 1_700_000_000_000,
            lead_key: "c-1".into(),
            sender_email: Some("sam@acme.example".into()),
            sender_domain: Some("acme.example".into()),
            subject: Some("Pricing for <50> seats & support".into()),
            contact_id: Some("c-1".into()),
            account_id: Some("a 1".into()),
            score: 55,
            status: "qualified".into(),
            breakdown: vec![
                RuleHit {
                    rule_id: "small".into(),
                    points: 5,
                    evidence: "x".into(),
                },
                RuleHit {
                    rule_id: "pricing".into(),
                    points: 25,
                    evidence: "subject mentions \"pricing\"".into(),
                },
                RuleHit {
                    rule_id: "spam".into(),
                    points: -5,
                    evidence: "y".into(),
                },
                RuleHit {
                    rule_id: "target".into(),
                    points: 25,
                    evidence: "target account".into(),
                },
            ],
            rules_version: "0123456789ab".into(),
            routing: Some(Routing {
                intent: "sales".into(),
                team: Some("dach".into()),
                owner: Some("anna@us.example".into()),
                ..Routing::default()
            }),
            ..ScoredLead::default()
        };
        lead.resolved.email.from = Some(Address {
            email: "sam@acme.example".into(),
            name: Some("Sam <Boss>".into()),
        });
        lead.resolved.account = Some(AccountMatch {
            account_id: "a 1".into(),
            name: Some("Acme & Co".into()),
            domain: None,
            target_account: true,
            matched_by: "domain".into(),
        });
        lead
    }

    #[test]
    fn names_the_top_reasons_and_links_what_is_known() {
        let f = Facts::of(&lead(), &settings());
        assert_eq!(f.event_id, "m1@acme.example|c-1");
        let rules: Vec<&str> = f.reasons.iter().map(|r| r.0.as_str()).collect();
        assert_eq!(
            rules,
            ["pricing", "target", "small"],
            "most points first, ties in order"
        );
        let links: Vec<&str> = f.links.iter().map(|l| l.1.as_str()).collect();
        assert_eq!(
            links,
            [
                "https://crm.example/contacts/c%2D1",
                "https://crm.example/accounts/a%201",
                "https://crm.example/emails?id=m1%40acme%2Eexample",
            ],
            "no deal link without a deal id"
        );
        assert_eq!(f.company.as_deref(), Some("Acme & Co"));
    }

    #[test]
    fn slack_blocks_escape_mrkdwn_and_keep_the_limits() {
        let mut l = lead();
        l.subject = Some("x".repeat(5000));
        let message = slack(&Facts::of(&l, &settings()));
        let text = message.to_string();
        assert!(text.contains("Acme &amp; Co"));
        assert!(text.contains("Sam &lt;Boss&gt;"));
        assert!(!text.contains("<Boss>"), "mrkdwn left unescaped");
        let blocks = message["blocks"].as_array().expect("blocks");
        assert_eq!(blocks[0]["type"], "header");
        assert!(
            blocks[0]["text"]["text"]
                .as_str()
                .expect("text")
                .chars()
                .count()
                <= 150
        );
        for field in blocks[1]["fields"].as_array().expect("fields") {
            assert!(field["text"].as_str().expect("text").chars().count() <= 2000);
        }
        let actions = blocks.last().expect("actions");
        assert_eq!(actions["type"], "actions");
        assert_eq!(actions["elements"].as_array().expect("buttons").len(), 3);
        assert!(message["text"].as_str().expect("fallback").chars().count() <= 3000);
    }

    #[test]
    fn the_webhook_body_carries_the_event_id_and_the_reasons() {
        let body = webhook(&Facts::of(&lead(), &settings()));
        assert_eq!(body["event_id"], "m1@acme.example|c-1");
        assert_eq!(body["received_at"], "2023-11-14T22:13:20.000Z");
        assert_eq!(body["reasons"][0]["rule_id"], "pricing");
        assert_eq!(
            body["links"]["contact"],
            "https://crm.example/contacts/c%2D1"
        );
        assert_eq!(body["routing"]["owner"], "anna@us.example");
    }
}
