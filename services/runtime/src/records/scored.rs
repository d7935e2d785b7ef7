//! `ScoredLead` (schema `scored.avsc`, the analysts' topic) and `Lead` (schema `leads.avsc`,
//! the compacted latest state per lead), written by the scorer.

use serde::{Deserialize, Serialize};

use super::ResolvedEmail;

/// One rule that matched, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleHit {
    pub rule_id: String,
    pub points: i32,
    pub evidence: String,
}

/// A resolved email with its lead score and the breakdown that explains it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ScoredLead {
    pub message_id: String,
    pub received_at: i64,
    /// Contact id when known, else the sender's email.
    pub lead_key: String,
    pub sender_email: Option<String>,
    pub sender_domain: Option<String>,
    pub subject: Option<String>,
    pub contact_id: Option<String>,
    pub account_id: Option<String>,
    pub deal_id: Option<String>,
    pub thread_id: String,
    pub score: i32,
    /// `qualified`, `review`, `nurture` or `excluded`.
    pub status: String,
    pub tags: Vec<String>,
    pub breakdown: Vec<RuleHit>,
    pub rules_version: String,
    /// Intent, language, team and owner; `None` for an excluded email.
    pub routing: Option<Routing>,
    /// How much of the email the CRM gets: `full`, `subject` or `metadata` (the rules file's
    /// `visibility`); empty (an older record) is `full`.
    #[serde(default = "full")]
    pub visibility: String,
    pub resolved: ResolvedEmail,
}

fn full() -> String {
    ScoredLead::FULL.to_string()
}

impl ScoredLead {
    /// The visibility of an email shown whole.
    pub const FULL: &'static str = "full";
    /// The visibility that keeps the text and attachments out of the CRM, the subject in.
    pub const SUBJECT: &'static str = "subject";
    /// The visibility that keeps the subject, text and attachments out of the CRM.
    pub const METADATA: &'static str = "metadata";

    /// Whether the CRM and notifications may show the subject.
    pub fn shows_subject(&self) -> bool {
        self.visibility != Self::METADATA
    }

    /// Whether the CRM may hold the text and the attachments.
    pub fn shows_body(&self) -> bool {
        self.visibility != Self::METADATA && self.visibility != Self::SUBJECT
    }
}

/// What a lead is about and who works it (the rules file's `intents` and `routing`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Routing {
    /// ISO 639-1 code of the body's language, when it can be told reliably.
    pub language: Option<String>,
    /// Two-letter country of the sender's domain (its country-code TLD).
    pub country: Option<String>,
    /// The first matching intent rule's intent, else `other`.
    pub intent: String,
    pub intent_rule: Option<String>,
    pub intent_evidence: Option<String>,
    pub team: Option<String>,
    /// The route that chose the team, or `default`.
    pub route: Option<String>,
    pub owner: Option<String>,
}

/// The latest lead state per lead key.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Lead {
    pub lead_key: String,
    pub contact_id: Option<String>,
    pub sender_email: Option<String>,
    pub account_id: Option<String>,
    pub last_message_id: String,
    pub subject: Option<String>,
    pub score: i32,
    pub status: String,
    pub breakdown: Vec<RuleHit>,
    pub updated_at: i64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::roundtrip::through_schema;

    #[test]
    fn round_trip_through_their_schemas() {
        let hit = RuleHit {
            rule_id: "subject-intent".into(),
            points: 20,
            evidence: "subject mentions \"pricing\"".into(),
        };
        let scored = ScoredLead {
            message_id: "m1".into(),
            received_at: 5,
            lead_key: "c1".into(),
            thread_id: "m1".into(),
            score: 20,
            status: "review".into(),
            tags: vec!["target-account".into()],
            breakdown: vec![hit.clone()],
            rules_version: "0123456789ab".into(),
            routing: Some(Routing {
                language: Some("de".into()),
                country: Some("de".into()),
                intent: "sales".into(),
                intent_rule: Some("sales-words".into()),
                intent_evidence: Some("subject mentions \"pricing\"".into()),
                team: Some("dach".into()),
                route: Some("german".into()),
                owner: Some("anna@example.com".into()),
            }),
            resolved: crate::records::resolved::tests::sample(),
            ..ScoredLead::default()
        };
        assert_eq!(through_schema("scored.avsc", scored.clone()), scored);
        let lead = Lead {
            lead_key: "c1".into(),
            last_message_id: "m1".into(),
            score: 20,
            status: "review".into(),
            breakdown: vec![hit],
            updated_at: 5,
            ..Lead::default()
        };
        assert_eq!(through_schema("leads.avsc", lead.clone()), lead);
    }
}
