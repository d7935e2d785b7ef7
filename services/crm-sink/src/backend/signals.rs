//! What an email says about contacts, apart from being an email: the CRM signals of delivery
//! reports and automatic answers, recorded on the contact whether or not the email itself is
//! written (these emails are `excluded` from scoring, and skipped unless `write_excluded`).
//!
//! | the email | signal | on the contact |
//! |---|---|---|
//! | a delivery report whose recipient failed for good (`hard`) | [`ContactSignal::Bouncing`] | `email_status` bouncing, the reason |
//! | a complaint (ARF feedback report) naming a recipient | [`ContactSignal::OptedOut`] (`complaint`) | opted out |
//! | an automatic answer asking to unsubscribe | [`ContactSignal::OptedOut`] (`unsubscribe`) | opted out |
//! | a left-the-company answer | [`ContactSignal::Left`] | inactive, the replacement when named |
//!
//! Soft and undetermined failures, delays and challenge-response requests change nothing: the
//! address may still work. Only contacts the CRM already has are changed; each change is
//! guarded so a replay of the same email changes nothing.

use chrono::{DateTime, Utc};
use mailstream_runtime::records::{AutoReply, Bounce, ScoredLead};

/// One thing an email says about the contact with address `email` (lower-case).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContactSignal {
    /// A delivery to `email` failed for good.
    Bouncing {
        email: String,
        reason: Option<String>,
    },
    /// `email` asked not to be written to, or complained about our mail.
    OptedOut { email: String, reason: &'static str },
    /// `email` left the company; `replacement` is who to write to instead, when named.
    Left {
        email: String,
        replacement: Option<String>,
    },
}

impl ContactSignal {
    /// The signal's name (`crm_contact_signals_total{signal}`).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Bouncing { .. } => "bouncing",
            Self::OptedOut { .. } => "opted-out",
            Self::Left { .. } => "left",
        }
    }
}

/// Every signal name, for metrics that exist from the start.
pub const SIGNALS: [&str; 3] = ["bouncing", "opted-out", "left"];

/// The signals of one email, at its `received_at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signals {
    pub message_id: String,
    pub at: DateTime<Utc>,
    pub list: Vec<ContactSignal>,
}

impl Signals {
    /// What `lead` says about contacts (often nothing).
    pub fn of(lead: &ScoredLead) -> Self {
        let email = &lead.resolved.email;
        let mut list = Vec::new();
        if let Some(report) = &email.bounce {
            for recipient in &report.recipients {
                let address = recipient.address.trim().to_ascii_lowercase();
                if address.is_empty() {
                    continue;
                }
                match recipient.class.as_str() {
                    Bounce::HARD => list.push(ContactSignal::Bouncing {
                        email: address,
                        reason: recipient.reason.clone(),
                    }),
                    Bounce::COMPLAINT => list.push(ContactSignal::OptedOut {
                        email: address,
                        reason: "complaint",
                    }),
                    _ => {}
                }
            }
        }
        let sender = lead.sender_email.as_deref().map(str::to_ascii_lowercase);
        if let (Some(reply), Some(sender)) = (&email.auto_reply, sender) {
            match reply.class.as_str() {
                AutoReply::UNSUBSCRIBE => list.push(ContactSignal::OptedOut {
                    email: sender,
                    reason: "unsubscribe",
                }),
                AutoReply::LEFT_COMPANY => list.push(ContactSignal::Left {
                    email: sender,
                    replacement: reply
                        .replacement
                        .as_ref()
                        .map(|a| a.email.trim().to_ascii_lowercase())
                        .filter(|a| a.contains('@')),
                }),
                _ => {}
            }
        }
        list.dedup();
        Self {
            message_id: lead.message_id.clone(),
            at: DateTime::from_timestamp_millis(lead.received_at).unwrap_or_default(),
            list,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use mailstream_runtime::records::{
        Address, AutoReply, Bounce, BounceRecipient, ParsedEmail, ResolvedEmail,
    };

    use super::*;

    fn lead(email: ParsedEmail) -> ScoredLead {
        ScoredLead {
            message_id: "m1".into(),
            received_at: 1_700_000_000_000,
            sender_email: Some("Kim@Acme.example".into()),
            resolved: ResolvedEmail {
                email,
                ..ResolvedEmail::default()
            },
            ..ScoredLead::default()
        }
    }

    fn recipient(address: &str, class: &str) -> BounceRecipient {
        BounceRecipient {
            address: address.into(),
            class: class.into(),
            reason: Some("user-unknown".into()),
            ..BounceRecipient::default()
        }
    }

    #[test]
    fn only_hard_failures_and_complaints_of_a_report_are_signals() {
        let report = Bounce {
            class: Bounce::HARD.into(),
            recipients: vec![
                recipient("Gone@Example.com", Bounce::HARD),
                recipient("full@example.com", Bounce::SOFT),
                recipient("later@example.com", Bounce::DELAYED),
                recipient("angry@example.com", Bounce::COMPLAINT),
            ],
            ..Bounce::default()
        };
        let signals = Signals::of(&lead(ParsedEmail {
            bounce: Some(report),
            ..ParsedEmail::default()
        }));
        assert_eq!(
            signals.list,
            vec![
                ContactSignal::Bouncing {
                    email: "gone@example.com".into(),
                    reason: Some("user-unknown".into()),
                },
                ContactSignal::OptedOut {
                    email: "angry@example.com".into(),
                    reason: "complaint",
                },
            ]
        );
        assert_eq!(signals.at.timestamp_millis(), 1_700_000_000_000);
    }

    #[test]
    fn automatic_answers_speak_for_their_sender() {
        let answer = |class: &str, replacement: Option<&str>| {
            Signals::of(&lead(ParsedEmail {
                auto_reply: Some(AutoReply {
                    class: class.into(),
                    replacement: replacement.map(|r| Address {
                        email: r.into(),
                        name: None,
                    }),
                    ..AutoReply::default()
                }),
                ..ParsedEmail::default()
            }))
            .list
        };
        assert_eq!(
            answer(AutoReply::UNSUBSCRIBE, None),
            vec![ContactSignal::OptedOut {
                email: "kim@acme.example".into(),
                reason: "unsubscribe",
            }]
        );
        assert_eq!(
            answer(AutoReply::LEFT_COMPANY, Some("Lee@Acme.example")),
            vec![ContactSignal::Left {
                email: "kim@acme.example".into(),
                replacement: Some("lee@acme.example".into()),
            }]
        );
        assert!(answer("out-of-office", None).is_empty());
        assert!(answer(AutoReply::GENERIC, None).is_empty());
    }
}
