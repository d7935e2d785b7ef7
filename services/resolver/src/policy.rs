//! Who becomes a contact: the rules that keep an unknown sender from being proposed as a new
//! contact (`contact_policy`, `contacts_from_free_mail`, `role_local_parts`). A known contact
//! always resolves; these rules only decide whether an unknown sender is proposed, and each
//! refusal has a [`Refusal`] reason the resolver counts (`resolver_contacts_refused_total`).
//!
//! | reason | refused when |
//! |---|---|
//! | `policy` | `contact_policy = never` |
//! | `bounce` | the email is a delivery report (bounce, delay, challenge, complaint) |
//! | `bulk` | list or bulk mail: a `List-Id`, or `Precedence: bulk`, `list` or `junk` |
//! | `automatic` | an automatic message (RFC 3834 `Auto-Submitted`, out-of-office, left the company, ...), unless it is a website form's notification (its person is the sender) |
//! | `role` | the sender's local part (without a `+tag`) is a role or a robot: [`ROLE_LOCAL_PARTS`] and `role_local_parts` |
//! | `free-mail` | `contacts_from_free_mail = false` and the sender's domain is free-mail or disposable |
//!
//! The first that applies, in this order, is the reason.

use std::collections::HashSet;

use mailstream_runtime::records::{ListInfo, ParsedEmail};

use crate::settings::{ContactPolicy, ResolverSettings};

/// Local parts of senders that are robots or shared role mailboxes, not people.
pub const ROLE_LOCAL_PARTS: &[&str] = &[
    // robots
    "mailer-daemon",
    "postmaster",
    "noreply",
    "no-reply",
    "donotreply",
    "do-not-reply",
    "bounce",
    "bounces",
    "notifications",
    "notification",
    "alerts",
    "newsletter",
    // roles
    "info",
    "sales",
    "support",
    "help",
    "contact",
    "enquiries",
    "inquiries",
    "office",
    "admin",
    "billing",
    "accounts",
    "invoices",
    "marketing",
    "team",
    "webmaster",
    "hostmaster",
    "abuse",
    "security",
    "privacy",
    "careers",
    "jobs",
];

/// `Precedence` values that mark bulk mail.
const BULK_PRECEDENCE: &[&str] = &["bulk", "list", "junk"];

/// Why an unknown sender was not proposed as a contact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Policy,
    Bounce,
    Bulk,
    Automatic,
    Role,
    FreeMail,
    /// The sender is on our domains: mail we sent ([`ResolvedEmail::outbound`]).
    ///
    /// [`ResolvedEmail::outbound`]: mailstream_runtime::records::ResolvedEmail::outbound
    Ours,
}

impl Refusal {
    /// Every reason, for metrics that exist from the start.
    pub const ALL: [Refusal; 7] = [
        Refusal::Policy,
        Refusal::Bounce,
        Refusal::Bulk,
        Refusal::Automatic,
        Refusal::Role,
        Refusal::FreeMail,
        Refusal::Ours,
    ];

    /// The reason's name in metrics and logs.
    pub fn name(self) -> &'static str {
        match self {
            Refusal::Policy => "policy",
            Refusal::Bounce => "bounce",
            Refusal::Bulk => "bulk",
            Refusal::Automatic => "automatic",
            Refusal::Role => "role",
            Refusal::FreeMail => "free-mail",
            Refusal::Ours => "ours",
        }
    }
}

/// The contact rules of one deployment.
#[derive(Debug, Clone)]
pub struct ContactRules {
    policy: ContactPolicy,
    free_mail: bool,
    roles: HashSet<String>,
}

impl ContactRules {
    pub fn new(settings: &ResolverSettings) -> Self {
        Self {
            policy: settings.contact_policy,
            free_mail: settings.contacts_from_free_mail,
            roles: ROLE_LOCAL_PARTS
                .iter()
                .map(|p| p.to_string())
                .chain(
                    settings
                        .role_local_parts
                        .iter()
                        .map(|p| p.trim().trim_end_matches('@').to_ascii_lowercase()),
                )
                .collect(),
        }
    }

    /// Why the unknown, lower-cased `sender` of `email` must not be proposed as a contact, if
    /// it must not; `free_mail` tells whether its domain is free-mail.
    pub fn refusal(&self, email: &ParsedEmail, sender: &str, free_mail: bool) -> Option<Refusal> {
        let local = sender.rsplit_once('@').map_or(sender, |(local, _)| local);
        let base = local.split_once('+').map_or(local, |(base, _)| base);
        [
            (self.policy == ContactPolicy::Never, Refusal::Policy),
            (email.bounce.is_some(), Refusal::Bounce),
            (email.list.as_ref().is_some_and(is_bulk), Refusal::Bulk),
            // A form notification is sent by a robot; the person it names wrote the form.
            (
                email.auto_reply.is_some() && email.form.is_none(),
                Refusal::Automatic,
            ),
            (self.roles.contains(base), Refusal::Role),
            (free_mail && !self.free_mail, Refusal::FreeMail),
        ]
        .into_iter()
        .find_map(|(refused, reason)| refused.then_some(reason))
    }
}

/// Whether the list markers make the email list or bulk mail.
pub fn is_bulk(list: &ListInfo) -> bool {
    list.list_id.is_some()
        || list
            .precedence
            .as_deref()
            .is_some_and(|p| BULK_PRECEDENCE.contains(&p.trim().to_ascii_lowercase().as_str()))
}

#[cfg(test)]
mod tests {
    use mailstream_runtime::records::{AutoReply, Bounce};

    use super::*;

    fn rules(settings: ResolverSettings) -> ContactRules {
        ContactRules::new(&settings)
    }

    fn refusal(rules: &ContactRules, email: &ParsedEmail, sender: &str) -> Option<&'static str> {
        let free = sender.ends_with("@gmail.com");
        rules.refusal(email, sender, free).map(Refusal::name)
    }

    #[test]
    fn role_and_robot_local_parts_are_refused_with_their_tag_and_extra_ones() {
        let r = rules(ResolverSettings {
            role_local_parts: vec!["Hello@".into(), "partners".into()],
            ..ResolverSettings::default()
        });
        let email = ParsedEmail::default();
        for sender in [
            "info@acme.io",
            "noreply@acme.io",
            "sales+eu@acme.io",
            "hello@acme.io",
            "partners@acme.io",
        ] {
            assert_eq!(refusal(&r, &email, sender), Some("role"), "{sender}");
        }
        for sender in [
            "dana@acme.io",
            "information.desk@acme.io",
            "salesforce@x.io",
        ] {
            assert_eq!(refusal(&r, &email, sender), None, "{sender}");
        }
    }

    #[test]
    fn bulk_is_a_list_id_or_a_bulk_precedence() {
        let r = rules(ResolverSettings::default());
        let with = |list_id: Option<&str>, precedence: Option<&str>| ParsedEmail {
            list: Some(ListInfo {
                list_id: list_id.map(Into::into),
                precedence: precedence.map(Into::into),
            }),
            ..ParsedEmail::default()
        };
        let sender = "dana@acme.io";
        assert_eq!(
            refusal(&r, &with(Some("news.acme.io"), None), sender),
            Some("bulk")
        );
        for p in ["bulk", "List", "junk"] {
            assert_eq!(refusal(&r, &with(None, Some(p)), sender), Some("bulk"));
        }
        assert_eq!(refusal(&r, &with(None, Some("first-class")), sender), None);
    }

    #[test]
    fn the_policy_comes_first_then_reports_and_automatic_mail_then_free_mail() {
        let never = rules(ResolverSettings {
            contact_policy: ContactPolicy::Never,
            ..ResolverSettings::default()
        });
        assert_eq!(
            refusal(&never, &ParsedEmail::default(), "dana@acme.io"),
            Some("policy")
        );
        let default = rules(ResolverSettings::default());
        let report = ParsedEmail {
            bounce: Some(Bounce::default()),
            auto_reply: Some(AutoReply::default()),
            ..ParsedEmail::default()
        };
        assert_eq!(refusal(&default, &report, "dana@acme.io"), Some("bounce"));
        let automatic = ParsedEmail {
            auto_reply: Some(AutoReply::default()),
            ..ParsedEmail::default()
        };
        assert_eq!(
            refusal(&default, &automatic, "dana@acme.io"),
            Some("automatic")
        );
        let form = ParsedEmail {
            form: Some(mailstream_runtime::records::FormLead::default()),
            ..automatic.clone()
        };
        assert_eq!(
            refusal(&default, &form, "dana@acme.io"),
            None,
            "a form notification's person filled the form in"
        );
        assert_eq!(
            refusal(&default, &ParsedEmail::default(), "dana@gmail.com"),
            None,
            "free mail is proposed by default"
        );
        let business_only = rules(ResolverSettings {
            contacts_from_free_mail: false,
            ..ResolverSettings::default()
        });
        assert_eq!(
            refusal(&business_only, &ParsedEmail::default(), "dana@gmail.com"),
            Some("free-mail")
        );
    }

    #[test]
    fn settings_load_from_the_environment_and_name_their_key_when_wrong() {
        use mailstream_runtime::ConfigSource;
        use mailstream_runtime::config::load;
        let base = ConfigSource::default()
            .with_env("MAILSTREAM_BOOTSTRAP_SERVERS", "k:9092")
            .with_env("MAILSTREAM_SCHEMA_REGISTRY_URL", "http://r:8081");
        let (_, s) = load::<ResolverSettings>(
            "resolver",
            &base
                .clone()
                .with_env("MAILSTREAM_RESOLVER_CONTACT_POLICY", "never")
                .with_env("MAILSTREAM_RESOLVER_CONTACTS_FROM_FREE_MAIL", "false")
                .with_env("MAILSTREAM_RESOLVER_ROLE_LOCAL_PARTS", "hello@, partners"),
        )
        .expect("valid");
        assert_eq!(s.contact_policy, ContactPolicy::Never);
        assert!(!s.contacts_from_free_mail);
        assert_eq!(s.role_local_parts, ["hello@", "partners"]);
        let err = load::<ResolverSettings>(
            "resolver",
            &base
                .clone()
                .with_env("MAILSTREAM_RESOLVER_CONTACT_POLICY", "sometimes"),
        )
        .expect_err("not a policy");
        assert!(
            err.to_string()
                .contains("MAILSTREAM_RESOLVER_CONTACT_POLICY"),
            "{err}"
        );
        let err = load::<ResolverSettings>(
            "resolver",
            &base.with_env("MAILSTREAM_RESOLVER_ROLE_LOCAL_PARTS", "info@acme.io"),
        )
        .expect_err("not a local part");
        assert!(
            err.to_string().contains(
                "key `resolver.role_local_parts` (env MAILSTREAM_RESOLVER_ROLE_LOCAL_PARTS): `info@acme.io` is not a local part"
            ),
            "{err}"
        );
    }
}
