//! Resolution: what one parsed email is about. A pure function of the email and a
//! [`Directory`] (the contacts, accounts and threads tables), shared by the resolver processor
//! and the offline `mailstream score` command, so both resolve an email the same way.
//!
//! - **Sender**: the person a website form's notification names, else the original sender of a
//!   forwarded message (the forwarder stays in `email.from` and `email.forwarded`), else From,
//!   else Sender, else the envelope MAIL FROM, lower-cased ([`ParsedEmail::lead_sender`]).
//! - **Contact**: exact email match in `contacts`; then the same address without a `+tag`.
//! - **Account**: the contact's account; else the sender's domain in `accounts`, unless the
//!   domain is free-mail or disposable. An unknown sender becomes a new-contact proposal
//!   unless a contact rule refuses it ([`crate::policy`]: `contact_policy`, delivery reports,
//!   bulk and automatic mail, role and robot addresses, free mail when so configured).
//! - **Recipients**: the envelope's, plus To/Cc/Bcc addresses on our domains.
//! - **Deal**: the first recipient matching the deal pattern; else the deal of the thread.
//! - **Thread**: In-Reply-To, then References newest first, looked up in `threads`; an email
//!   whose parents are unknown starts the thread of its oldest reference (or its own). A link
//!   counts only while it is younger than `threads_max_age_days` at the email's own
//!   `received_at` (`linked_at >= received_at - max age`): whether an expired link is still in
//!   the table or already tombstoned, the email resolves the same.

use std::collections::{BTreeSet, HashSet};

use mailstream_runtime::records::{
    Account, AccountMatch, Contact, ContactMatch, NewContactProposal, ParsedEmail, ResolvedEmail,
    ThreadLink,
};

use crate::deal::DealPattern;
use crate::freemail;
use crate::policy::{ContactRules, Refusal};
use crate::settings::ResolverSettings;

/// Lookups resolution needs: the table topics, or in-memory maps offline.
pub trait Directory {
    /// The contact with this lower-cased email.
    fn contact(&self, email: &str) -> Option<Contact>;
    /// The account of this lower-cased domain.
    fn account(&self, domain: &str) -> Option<Account>;
    /// What this message id was linked to.
    fn thread(&self, message_id: &str) -> Option<ThreadLink>;
}

/// The resolution rules of one deployment.
#[derive(Debug, Clone)]
pub struct Resolution {
    our_domains: BTreeSet<String>,
    free_mail: HashSet<String>,
    deal: DealPattern,
    contacts: ContactRules,
    threads_max_age_ms: i64,
}

impl Resolution {
    pub fn new(settings: &ResolverSettings) -> Result<Self, String> {
        let lower = |d: &String| d.trim().trim_start_matches('@').to_ascii_lowercase();
        Ok(Self {
            our_domains: settings.our_domains.iter().map(lower).collect(),
            free_mail: freemail::BUILT_IN
                .iter()
                .map(|d| d.to_string())
                .chain(settings.free_mail_domains.iter().map(lower))
                .collect(),
            deal: DealPattern::parse(&settings.deal_pattern)?,
            contacts: ContactRules::new(settings),
            threads_max_age_ms: settings.threads_max_age_ms(),
        })
    }

    /// Whether `domain` is a free-mail or disposable provider.
    pub fn is_free_mail(&self, domain: &str) -> bool {
        self.free_mail.contains(domain)
    }

    /// Resolves `email` against `directory`.
    pub fn resolve(&self, email: ParsedEmail, directory: &impl Directory) -> ResolvedEmail {
        self.resolve_explained(email, directory).0
    }

    /// Resolves `email` against `directory`; with why its unknown sender was not proposed as a
    /// contact, when a contact rule refused it.
    pub fn resolve_explained(
        &self,
        email: ParsedEmail,
        directory: &impl Directory,
    ) -> (ResolvedEmail, Option<Refusal>) {
        let sender_email = sender_of(&email);
        let sender_domain = sender_email
            .as_deref()
            .and_then(domain_of)
            .map(str::to_string);
        let free_mail = sender_domain
            .as_deref()
            .is_some_and(|d| self.is_free_mail(d));

        let contact = sender_email
            .as_deref()
            .and_then(|s| find_contact(s, directory));
        let domain_account = sender_domain
            .as_deref()
            .filter(|_| !free_mail)
            .and_then(|d| directory.account(d));
        let account = match &contact {
            Some(c) if c.account_id.is_some() => c.account_id.as_ref().map(|id| {
                // The contact's account; its details when its domain's account is the same one.
                let same = domain_account.as_ref().filter(|a| &a.account_id == id);
                AccountMatch {
                    account_id: id.clone(),
                    name: same.and_then(|a| a.name.clone()),
                    domain: same.map(|a| a.domain.clone()),
                    target_account: same.is_some_and(|a| a.target_account),
                    matched_by: "contact".into(),
                }
            }),
            _ => domain_account.map(|a| AccountMatch {
                account_id: a.account_id,
                name: a.name,
                domain: Some(a.domain),
                target_account: a.target_account,
                matched_by: "domain".into(),
            }),
        };
        // Mail we sent: from our domains, and not a forward or a form (whose lead is someone
        // else, named in them).
        let outbound = email.forwarded.is_none()
            && email.form.is_none()
            && sender_domain
                .as_deref()
                .is_some_and(|d| self.our_domains.contains(d));
        let refusal = match (&contact, &sender_email) {
            (None, Some(_)) if outbound => Some(Refusal::Ours),
            (None, Some(address)) => self.contacts.refusal(&email, address, free_mail),
            _ => None,
        };
        let new_contact = match (&contact, &sender_email) {
            (None, Some(address)) if refusal.is_none() => Some(NewContactProposal {
                email: address.clone(),
                name: email.lead_sender().and_then(|f| f.name.clone()),
                domain: sender_domain.clone(),
                account_id: account.as_ref().map(|a| a.account_id.clone()),
            }),
            _ => None,
        };

        let recipients = self.recipients(&email);
        let (thread_id, thread_parent, thread_link) =
            thread_of(&email, directory, self.threads_max_age_ms);
        let (deal_id, deal_source) = match recipients.iter().find_map(|r| self.deal.deal_id(r)) {
            Some(id) => (Some(id), Some("recipient".to_string())),
            None => match thread_link.and_then(|l| l.deal_id) {
                Some(id) => (Some(id), Some("thread".to_string())),
                None => (None, None),
            },
        };

        let resolved = ResolvedEmail {
            message_id: email.message_id.clone(),
            received_at: email.received_at,
            recipients,
            sender_email,
            sender_domain,
            free_mail,
            contact: contact.map(|c| ContactMatch {
                contact_id: c.contact_id,
                name: c.name,
                account_id: c.account_id,
            }),
            account,
            new_contact,
            deal_id,
            deal_source,
            thread_id,
            thread_parent,
            thread_relinked: false,
            outbound,
            email,
        };
        (resolved, refusal)
    }

    /// Envelope recipients, plus header recipients on our domains; lower-cased, sorted, unique.
    fn recipients(&self, email: &ParsedEmail) -> Vec<String> {
        let headers = email.to.iter().chain(&email.cc).chain(&email.bcc);
        let ours = headers
            .map(|a| a.email.to_ascii_lowercase())
            .filter(|a| domain_of(a).is_some_and(|d| self.our_domains.contains(d)));
        let envelope = email
            .envelope_rcpt_to
            .iter()
            .map(|r| r.to_ascii_lowercase());
        envelope
            .chain(ours)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    }
}

/// The link this email writes to the threads table.
pub fn thread_link(resolved: &ResolvedEmail) -> ThreadLink {
    ThreadLink {
        message_id: resolved.message_id.clone(),
        thread_id: resolved.thread_id.clone(),
        deal_id: resolved.deal_id.clone(),
        contact_id: resolved.contact.as_ref().map(|c| c.contact_id.clone()),
        linked_at: resolved.received_at,
        waiting: false,
    }
}

fn sender_of(email: &ParsedEmail) -> Option<String> {
    email
        .lead_sender()
        .map(|a| a.email.clone())
        .or_else(|| email.envelope_mail_from.clone())
        .map(|a| a.trim().to_ascii_lowercase())
        .filter(|a| a.contains('@'))
}

fn domain_of(address: &str) -> Option<&str> {
    address
        .rsplit_once('@')
        .map(|(_, d)| d)
        .filter(|d| !d.is_empty())
}

fn find_contact(sender: &str, directory: &impl Directory) -> Option<Contact> {
    directory.contact(sender).or_else(|| {
        let (local, domain) = sender.rsplit_once('@')?;
        let (base, _tag) = local.split_once('+')?;
        directory.contact(&format!("{base}@{domain}"))
    })
}

/// The messages `email` replies to, in the order their links are looked up: In-Reply-To, then
/// References newest first (its own id left out; a repeated id comes once).
pub fn parents_of(email: &ParsedEmail) -> Vec<&String> {
    let mut seen = HashSet::new();
    email
        .in_reply_to
        .iter()
        .chain(email.references.iter().rev())
        .filter(|id| **id != email.message_id && seen.insert(id.as_str()))
        .collect()
}

/// (thread id, the parent it was linked to, that parent's link). Links older than
/// `max_age_ms` at the email's `received_at` do not count.
fn thread_of(
    email: &ParsedEmail,
    directory: &impl Directory,
    max_age_ms: i64,
) -> (String, Option<String>, Option<ThreadLink>) {
    let oldest = email.received_at.saturating_sub(max_age_ms);
    for parent in parents_of(email) {
        let link = directory.thread(parent).filter(|l| l.linked_at >= oldest);
        if let Some(link) = link {
            return (link.thread_id.clone(), Some(parent.clone()), Some(link));
        }
    }
    let root = email
        .references
        .first()
        .or(email.in_reply_to.as_ref())
        .unwrap_or(&email.message_id)
        .clone();
    (root, None, None)
}

#[cfg(test)]
mod tests;
