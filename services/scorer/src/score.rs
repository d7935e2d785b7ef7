//! Scoring: a pure function from a resolved email and the rules to a score, a status, tags and
//! the breakdown that explains them.
//!
//! Kept apart from the processor so it can be tested without Kafka and so a replay is
//! deterministic by construction: nothing here reads the clock, the environment or any state,
//! so the same input and the same rules always give the same record (the lead's `updated_at` is
//! the email's `received_at`, not the time of scoring).
//!
//! Auto-replies, delivery reports, list mail and mail we sent are not scored: they get status
//! `excluded`, score 0, an empty breakdown and the tags that say why (`auto-reply`, `list`,
//! `outbound`; `bounce` for a failed delivery only, `delayed`, `challenge` or `complaint` for
//! the other reports), and are still written to `scored` (never dropped), but not to `leads`.

use mailstream_runtime::records::{Lead, ResolvedEmail, Routing, RuleHit, ScoredLead};

use crate::condition::Candidate;
use crate::routing::intent_of;
use crate::rules::RuleSet;
use crate::visibility::visibility_of;

/// Where a score puts a lead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Qualified,
    Review,
    Nurture,
    Excluded,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Qualified => "qualified",
            Status::Review => "review",
            Status::Nurture => "nurture",
            Status::Excluded => "excluded",
        }
    }
}

/// The outcome of scoring one email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scoring {
    pub score: i32,
    pub status: Status,
    pub tags: Vec<String>,
    pub breakdown: Vec<RuleHit>,
    /// Intent, language and team; `None` for an excluded email.
    pub routing: Option<Routing>,
    /// How much of the email the CRM gets ([`crate::visibility`]).
    pub visibility: String,
}

impl RuleSet {
    /// The status of a (non-excluded) score under these thresholds.
    pub fn status_of(&self, score: i32) -> Status {
        if score >= self.qualified_at {
            Status::Qualified
        } else if score < self.nurture_below {
            Status::Nurture
        } else {
            Status::Review
        }
    }
}

/// Why an email is kept out of scoring (empty: it is scored). Every delivery report is kept
/// out, but only a failed delivery is tagged `bounce`: a delay warning, a challenge-response
/// request and a complaint are tagged by their class (`delayed`, `challenge`, `complaint`).
fn exclusion_tags(email: &ResolvedEmail) -> Vec<String> {
    let parsed = &email.email;
    let report = parsed.bounce.as_ref();
    let report_class = report.filter(|b| !b.is_failure()).map(|b| b.class.as_str());
    [
        (parsed.auto_reply.is_some(), "auto-reply"),
        (report.is_some_and(|b| b.is_failure()), "bounce"),
        (report_class == Some("delayed"), "delayed"),
        (report_class == Some("challenge"), "challenge"),
        (report_class == Some("complaint"), "complaint"),
        (
            report_class.is_some_and(|c| !matches!(c, "delayed" | "challenge" | "complaint")),
            "delivery-report",
        ),
        (parsed.list.is_some(), "list"),
        (email.outbound, "outbound"),
    ]
    .into_iter()
    .filter(|(set, _)| *set)
    .map(|(_, tag)| tag.to_string())
    .collect()
}

/// Context for the analyst, whether or not the email is scored. `malware`: clamd found
/// malware in an attachment (which was not stored; the attachment names the signature).
fn context_tags(email: &ResolvedEmail) -> Vec<String> {
    [
        (email.free_mail, "free-mail"),
        (
            email.email.attachments.iter().any(|a| a.malware.is_some()),
            "malware",
        ),
        (email.new_contact.is_some(), "new-contact"),
        (
            email.account.as_ref().is_some_and(|a| a.target_account),
            "target-account",
        ),
    ]
    .into_iter()
    .filter(|(set, _)| *set)
    .map(|(_, tag)| tag.to_string())
    .collect()
}

/// Scores `email` with `rules`.
pub fn score(email: &ResolvedEmail, rules: &RuleSet) -> Scoring {
    let mut tags = exclusion_tags(email);
    let excluded = !tags.is_empty();
    tags.extend(context_tags(email));
    let mut candidate = Candidate::new(email);
    if excluded {
        return Scoring {
            score: 0,
            status: Status::Excluded,
            tags,
            breakdown: Vec::new(),
            routing: None,
            visibility: visibility_of(&rules.visibility, &candidate),
        };
    }
    // The intent first: the scoring rules and the routes may test it.
    let intent = intent_of(&rules.intents, &candidate);
    candidate.set_intent(&intent.intent);
    let breakdown: Vec<RuleHit> = rules
        .rules
        .iter()
        .filter_map(|rule| {
            rule.condition.test(&candidate).map(|evidence| RuleHit {
                rule_id: rule.id.clone(),
                points: rule.points,
                evidence,
            })
        })
        .collect();
    let score = breakdown
        .iter()
        .fold(0i32, |sum, hit| sum.saturating_add(hit.points));
    let assignment = rules
        .router
        .as_ref()
        .map(|router| router.assign(&candidate, &sticky_key(email)))
        .unwrap_or_default();
    let routing = Routing {
        language: rules
            .detect_language
            .then(|| candidate.language().map(str::to_string))
            .flatten(),
        country: candidate.country(),
        intent: intent.intent,
        intent_rule: intent.rule,
        intent_evidence: intent.evidence,
        team: assignment.team,
        route: assignment.route,
        owner: assignment.owner,
    };
    Scoring {
        score,
        status: rules.status_of(score),
        tags,
        breakdown,
        routing: Some(routing),
        visibility: visibility_of(&rules.visibility, &candidate),
    }
}

/// What keeps a lead with its owner: the account, else the lead key.
fn sticky_key(email: &ResolvedEmail) -> String {
    account_of(email).unwrap_or_else(|| lead_key(email))
}

/// The email's account: the one resolved, else the known contact's.
fn account_of(email: &ResolvedEmail) -> Option<String> {
    email
        .account
        .as_ref()
        .map(|a| a.account_id.clone())
        .or_else(|| email.contact.as_ref().and_then(|c| c.account_id.clone()))
}

/// Who the lead is: the contact id when the sender is a known contact, else the sender's email
/// (empty when the email has no sender at all).
pub fn lead_key(email: &ResolvedEmail) -> String {
    email
        .contact
        .as_ref()
        .map(|c| c.contact_id.clone())
        .or_else(|| email.sender_email.clone())
        .unwrap_or_default()
}

/// The `scored` record of `resolved` under `rules`.
pub fn scored_record(resolved: ResolvedEmail, rules: &RuleSet) -> ScoredLead {
    let Scoring {
        score,
        status,
        tags,
        breakdown,
        routing,
        visibility,
    } = score(&resolved, rules);
    ScoredLead {
        message_id: resolved.message_id.clone(),
        received_at: resolved.received_at,
        lead_key: lead_key(&resolved),
        sender_email: resolved.sender_email.clone(),
        sender_domain: resolved.sender_domain.clone(),
        subject: resolved.email.subject.clone(),
        contact_id: resolved.contact.as_ref().map(|c| c.contact_id.clone()),
        account_id: account_of(&resolved),
        deal_id: resolved.deal_id.clone(),
        thread_id: resolved.thread_id.clone(),
        score,
        status: status.as_str().to_string(),
        tags,
        breakdown,
        rules_version: rules.version.clone(),
        routing,
        visibility,
        resolved,
    }
}

/// The `leads` record a scored email sets: none when it was excluded or has no lead key.
pub fn lead_of(scored: &ScoredLead) -> Option<Lead> {
    if scored.status == Status::Excluded.as_str() || scored.lead_key.is_empty() {
        return None;
    }
    Some(Lead {
        lead_key: scored.lead_key.clone(),
        contact_id: scored.contact_id.clone(),
        sender_email: scored.sender_email.clone(),
        account_id: scored.account_id.clone(),
        last_message_id: scored.message_id.clone(),
        subject: scored.subject.clone(),
        score: scored.score,
        status: scored.status.clone(),
        breakdown: scored.breakdown.clone(),
        updated_at: scored.received_at,
    })
}

#[cfg(test)]
mod tests {
    use mailstream_runtime::records::{
        AccountMatch, Attachment, AuthResults, AutoReply, Bounce, ContactMatch, Disposition,
        FormLead, Forwarded, Header, ListInfo, NewContactProposal, ParsedEmail,
    };

    use super::*;
    use crate::rules::Format;

    fn rules() -> RuleSet {
        RuleSet::builtin().expect("default rules")
    }

    /// An email no default rule matches.
    fn plain() -> ResolvedEmail {
        ResolvedEmail {
            message_id: "m1@mail.example.net".into(),
            received_at: 1_700_000_000_000,
            email: ParsedEmail {
                message_id: "m1@mail.example.net".into(),
                subject: Some("Hello there".into()),
                text: Some("Hi, could we talk next week?\n\n> older text".into()),
                stripped_text: Some("Hi, could we talk next week?".into()),
                ..ParsedEmail::default()
            },
            recipients: vec!["sales@in.example.com".into()],
            sender_email: Some("alex.chen@example.net".into()),
            sender_domain: Some("example.net".into()),
            thread_id: "m1@mail.example.net".into(),
            new_contact: Some(NewContactProposal {
                email: "alex.chen@example.net".into(),
                name: None,
                domain: Some("example.net".into()),
                account_id: None,
            }),
            ..ResolvedEmail::default()
        }
    }

    fn pdf(name: &str, size: i64) -> Attachment {
        Attachment {
            filename: Some(name.into()),
            content_type: "application/pdf".into(),
            sniffed_type: Some("application/pdf".into()),
            size,
            sha256: "00".into(),
            disposition: Disposition::Attachment,
            content_id: None,
            blob_uri: None,
            executable: false,
            malware: None,
        }
    }

    fn target(email: &mut ResolvedEmail) {
        email.account = Some(AccountMatch {
            account_id: "acc-1".into(),
            name: Some("Acme".into()),
            domain: Some("acme.io".into()),
            target_account: true,
            matched_by: "domain".into(),
        });
    }

    fn hits(scoring: &Scoring) -> Vec<(&str, i32, &str)> {
        scoring
            .breakdown
            .iter()
            .map(|h| (h.rule_id.as_str(), h.points, h.evidence.as_str()))
            .collect()
    }

    #[test]
    fn nothing_matches_a_plain_email() {
        let s = score(&plain(), &rules());
        assert_eq!((s.score, s.status), (0, Status::Nurture));
        assert!(s.breakdown.is_empty());
        assert_eq!(s.tags, ["new-contact"]);
    }

    #[test]
    fn subject_intent() {
        let mut e = plain();
        e.email.subject = Some("Requesting a product DEMO and pricing".into());
        assert_eq!(
            hits(&score(&e, &rules())),
            [(
                "subject-intent",
                20,
                r#"subject mentions "demo", "pricing""#
            )]
        );
        e.email.subject = Some("Demonstration of repricing".into());
        assert!(score(&e, &rules()).breakdown.is_empty(), "whole words only");
    }

    #[test]
    fn sender_authenticated_needs_both() {
        let mut e = plain();
        e.email.auth = AuthResults {
            spf: Some("pass".into()),
            dkim: Some("fail".into()),
            dmarc: None,
        };
        assert!(score(&e, &rules()).breakdown.is_empty());
        e.email.auth.dkim = Some("pass".into());
        assert_eq!(
            hits(&score(&e, &rules())),
            [("sender-authenticated", 10, "spf=pass dkim=pass")]
        );
    }

    #[test]
    fn target_account() {
        let mut e = plain();
        target(&mut e);
        let s = score(&e, &rules());
        assert_eq!(hits(&s), [("target-account", 15, "target account Acme")]);
        assert_eq!(s.tags, ["new-contact", "target-account"]);
    }

    #[test]
    fn document_attachment_under_five_megabytes() {
        let mut e = plain();
        let docx = Attachment {
            filename: Some("brief.DOCX".into()),
            content_type: "application/octet-stream".into(),
            sniffed_type: None,
            ..pdf("x", 1000)
        };
        e.email.attachments = vec![pdf("big.pdf", 5 * 1024 * 1024), docx];
        assert_eq!(
            hits(&score(&e, &rules())),
            [(
                "document-attachment",
                10,
                "attachment brief.DOCX (1000 bytes)"
            )]
        );
        let renamed_exe = Attachment {
            executable: true,
            malware: None,
            ..pdf("invoice.pdf", 10)
        };
        e.email.attachments = vec![renamed_exe, pdf("big.pdf", 5 * 1024 * 1024)];
        assert!(score(&e, &rules()).breakdown.is_empty());
    }

    #[test]
    fn body_rules_read_what_the_lead_wrote_in_a_forward_or_a_form() {
        let mut e = plain();
        e.email.stripped_text = Some("FYI, see below.".into());
        e.email.forwarded = Some(Forwarded {
            body: Some("ACT NOW: this offer is risk-free".into()),
            ..Forwarded::default()
        });
        assert_eq!(
            hits(&score(&e, &rules())),
            [(
                "spam-signals",
                -30,
                r#"body mentions "act now", "risk-free""#
            )],
            "the original's body, not the colleague's note"
        );
        e.email.form = Some(FormLead {
            message: Some("   ".into()),
            ..FormLead::default()
        });
        assert_eq!(
            hits(&score(&e, &rules())).len(),
            1,
            "a blank form message passes to the forward's body"
        );
    }

    #[test]
    fn spam_signals_from_words_or_links() {
        let mut e = plain();
        e.email.stripped_text = Some("ACT NOW: this offer is risk-free".into());
        assert_eq!(
            hits(&score(&e, &rules())),
            [(
                "spam-signals",
                -30,
                r#"body mentions "act now", "risk-free""#
            )]
        );
        let mut e = plain();
        e.email.html = Some(r#"<a href="https://bit.ly/x1">read more</a>"#.into());
        let s = score(&e, &rules());
        assert_eq!(
            hits(&s),
            [(
                "spam-signals",
                -30,
                "suspicious link bit.ly (URL shortener)"
            )]
        );
        assert_eq!((s.score, s.status), (-30, Status::Nurture));
    }

    #[test]
    fn thresholds_make_the_status() {
        let mut e = plain();
        e.email.subject = Some("Enterprise plan".into());
        e.email.auth.spf = Some("pass".into());
        e.email.auth.dkim = Some("pass".into());
        let s = score(&e, &rules());
        assert_eq!((s.score, s.status), (30, Status::Review));
        target(&mut e);
        e.email.attachments = vec![pdf("requirements.pdf", 48_321)];
        let s = score(&e, &rules());
        assert_eq!((s.score, s.status), (55, Status::Qualified));
        let ids: Vec<&str> = s.breakdown.iter().map(|h| h.rule_id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "subject-intent",
                "sender-authenticated",
                "target-account",
                "document-attachment"
            ],
            "in rules-file order"
        );
        let set = rules();
        assert_eq!(set.status_of(40), Status::Qualified);
        assert_eq!(set.status_of(39), Status::Review);
        assert_eq!(set.status_of(15), Status::Review);
        assert_eq!(set.status_of(14), Status::Nurture);
    }

    #[test]
    fn auto_replies_bounces_and_lists_are_excluded_and_tagged() {
        let mut e = plain();
        e.email.subject = Some("Out of office: demo pricing".into());
        e.email.auto_reply = Some(AutoReply {
            kind: "out-of-office".into(),
            evidence: "Auto-Submitted: auto-replied".into(),
            ..AutoReply::default()
        });
        e.email.list = Some(ListInfo::default());
        let s = score(&e, &rules());
        assert_eq!((s.score, s.status), (0, Status::Excluded));
        assert!(s.breakdown.is_empty());
        assert_eq!(s.tags, ["auto-reply", "list", "new-contact"]);
        let mut b = plain();
        b.email.bounce = Some(Bounce::default());
        assert_eq!(score(&b, &rules()).tags, ["bounce", "new-contact"]);
        // A delay warning is excluded too, but it is not a failed delivery.
        let mut d = plain();
        d.email.bounce = Some(Bounce {
            class: Bounce::DELAYED.into(),
            ..Bounce::default()
        });
        let delayed = score(&d, &rules());
        assert_eq!(delayed.status, Status::Excluded);
        assert_eq!(delayed.tags, ["delayed", "new-contact"]);
        // Mail we sent is not a lead.
        let mut ours = plain();
        ours.outbound = true;
        ours.new_contact = None;
        let ours = score(&ours, &rules());
        assert_eq!(
            (ours.status, ours.tags),
            (Status::Excluded, vec!["outbound".to_string()])
        );
        let scored = scored_record(e, &rules());
        assert_eq!(scored.status, "excluded");
        assert_eq!(lead_of(&scored), None, "excluded mail sets no lead state");
    }

    #[test]
    fn scored_record_and_lead_carry_the_summary() {
        let mut e = plain();
        e.email.subject = Some("Pricing".into());
        e.contact = Some(ContactMatch {
            contact_id: "c-7".into(),
            name: None,
            account_id: Some("acc-9".into()),
        });
        e.deal_id = Some("42".into());
        let set = rules();
        let scored = scored_record(e.clone(), &set);
        assert_eq!(scored.lead_key, "c-7");
        assert_eq!(scored.account_id.as_deref(), Some("acc-9"));
        assert_eq!(scored.status, "review");
        assert_eq!(scored.score, 20);
        assert_eq!(scored.rules_version, set.version);
        assert_eq!(scored.resolved, e);
        assert_eq!(scored, scored_record(e.clone(), &set), "deterministic");
        let lead = lead_of(&scored).expect("a lead");
        assert_eq!(lead.lead_key, "c-7");
        assert_eq!(lead.updated_at, e.received_at);
        assert_eq!(lead.last_message_id, e.message_id);
        assert_eq!(lead.breakdown, scored.breakdown);
        e.contact = None;
        assert_eq!(lead_key(&e), "alex.chen@example.net");
    }

    #[test]
    fn evidence_never_quotes_an_address_or_the_body() {
        let text = r#"
rules:
  - {id: a, points: 1, when: {sender_email: {matches: "@example\\.net$"}}}
  - {id: b, points: 1, when: {recipient: {contains_any: [sales]}}}
  - {id: c, points: 1, when: {body: {matches: "(?s)could.*week"}}}
  - {id: d, points: 1, when: {header: {name: Reply-To, contains_any: [alex]}}}
  - {id: e, points: 1, when: {sender_domain: {in: [example.net]}}}
  - {id: f, points: 1, when: {known_contact: false}}
"#;
        let set = RuleSet::from_text(text, Format::Yaml).expect("valid");
        let mut e = plain();
        e.email.headers = vec![Header {
            name: "reply-to".into(),
            value: "Alex <alex.chen@example.net>".into(),
        }];
        let s = score(&e, &set);
        assert_eq!(s.breakdown.len(), 6, "{:?}", s.breakdown);
        for hit in &s.breakdown {
            assert!(!hit.evidence.contains("alex.chen"), "{hit:?}");
            assert!(!hit.evidence.contains("next week"), "{hit:?}");
        }
    }
}
