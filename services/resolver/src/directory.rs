//! Where resolution looks things up. Live, the [`TableDirectory`]: the `contacts`, `accounts` and
//! `threads` table topics read as global tables, plus the [`ThreadOverlay`] of links this
//! instance wrote that the threads table has not read back yet (so a reply processed right
//! after its parent still finds it). Offline and in tests, a [`MemoryDirectory`] loaded from
//! CSV exports.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::Path;

use mailstream_runtime::GlobalTable;
use mailstream_runtime::records::{Account, Contact, ThreadLink};

use crate::csv;
use crate::identity::Directory;

/// The live table topics.
pub struct TableDirectory<'a> {
    pub contacts: &'a GlobalTable<Contact>,
    pub accounts: &'a GlobalTable<Account>,
    pub threads: &'a GlobalTable<ThreadLink>,
    pub overlay: &'a ThreadOverlay,
}

impl Directory for TableDirectory<'_> {
    fn contact(&self, email: &str) -> Option<Contact> {
        self.contacts.get(email)
    }

    fn account(&self, domain: &str) -> Option<Account> {
        self.accounts.get(domain)
    }

    fn thread(&self, message_id: &str) -> Option<ThreadLink> {
        self.overlay
            .get(message_id)
            .cloned()
            .or_else(|| self.threads.get(message_id))
    }
}

/// Thread links this instance wrote recently, newest kept, undone when their transaction aborts.
#[derive(Debug)]
pub struct ThreadOverlay {
    links: HashMap<String, ThreadLink>,
    order: VecDeque<String>,
    pending: Vec<String>,
    capacity: usize,
}

impl ThreadOverlay {
    pub fn new(capacity: usize) -> Self {
        Self {
            links: HashMap::new(),
            order: VecDeque::new(),
            pending: Vec::new(),
            capacity: capacity.max(1),
        }
    }

    pub fn get(&self, message_id: &str) -> Option<&ThreadLink> {
        self.links.get(message_id)
    }

    /// Remembers a link written in the open transaction.
    pub fn insert(&mut self, link: ThreadLink) {
        let id = link.message_id.clone();
        if self.links.insert(id.clone(), link).is_none() {
            self.order.push_back(id.clone());
        }
        self.pending.push(id);
        while self.order.len() > self.capacity {
            if let Some(oldest) = self.order.pop_front() {
                self.links.remove(&oldest);
            }
        }
    }

    /// The threads table applied a write of each of `ids` (ours, or a later one of another
    /// instance): from now on the table answers for them, unless the open transaction wrote
    /// one again. Without this a link this instance wrote would shadow a newer one (a relink
    /// by the partition's next owner). `None`: more arrived than the table kept; forget every
    /// committed link.
    pub fn forget(&mut self, ids: Option<&[String]>) {
        let pending: HashSet<&String> = self.pending.iter().collect();
        match ids {
            Some(ids) => {
                for id in ids.iter().filter(|id| !pending.contains(id)) {
                    self.links.remove(id);
                }
            }
            None => self.links.retain(|id, _| pending.contains(id)),
        }
        // `order` keeps the forgotten ids until they reach its front: they only count
        // against the capacity a little longer.
    }

    /// The open transaction committed: its links stay.
    pub fn commit(&mut self) {
        self.pending.clear();
    }

    /// The open transaction aborted: forget its links.
    pub fn rollback(&mut self) {
        self.rollback_to(0);
    }

    /// A point to roll one record's links back to.
    pub fn mark(&self) -> usize {
        self.pending.len()
    }

    /// Forgets the links inserted since `mark` (their record is dead-lettered).
    pub fn rollback_to(&mut self, mark: usize) {
        if self.pending.len() <= mark {
            return;
        }
        let undone: HashSet<String> = self.pending.drain(mark..).collect();
        self.order.retain(|id| !undone.contains(id));
        self.links.retain(|id, _| !undone.contains(id));
    }
}

/// Tables in memory.
#[derive(Debug, Default, Clone)]
pub struct MemoryDirectory {
    pub contacts: HashMap<String, Contact>,
    pub accounts: HashMap<String, Account>,
    pub threads: HashMap<String, ThreadLink>,
}

impl MemoryDirectory {
    /// Loads a contacts and an accounts CSV export (either may be absent).
    pub fn from_csv(contacts: Option<&Path>, accounts: Option<&Path>) -> Result<Self, String> {
        let mut directory = Self::default();
        if let Some(path) = contacts {
            for contact in csv::read_contacts(path, 0)? {
                directory.contacts.insert(contact.email.clone(), contact);
            }
        }
        if let Some(path) = accounts {
            for account in csv::read_accounts(path, 0)? {
                directory.accounts.insert(account.domain.clone(), account);
            }
        }
        Ok(directory)
    }
}

impl Directory for MemoryDirectory {
    fn contact(&self, email: &str) -> Option<Contact> {
        self.contacts.get(email).cloned()
    }

    fn account(&self, domain: &str) -> Option<Account> {
        self.accounts.get(domain).cloned()
    }

    fn thread(&self, message_id: &str) -> Option<ThreadLink> {
        self.threads.get(message_id).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(id: &str) -> ThreadLink {
        ThreadLink {
            message_id: id.into(),
            thread_id: "root".into(),
            ..ThreadLink::default()
        }
    }

    #[test]
    fn overlay_undoes_aborted_links_and_stays_bounded() {
        let mut overlay = ThreadOverlay::new(2);
        overlay.insert(link("a"));
        overlay.commit();
        overlay.insert(link("b"));
        overlay.rollback();
        assert!(overlay.get("a").is_some() && overlay.get("b").is_none());
        overlay.insert(link("c"));
        overlay.insert(link("d"));
        overlay.commit();
        assert!(overlay.get("a").is_none(), "oldest evicted beyond capacity");
        assert!(overlay.get("c").is_some() && overlay.get("d").is_some());
    }

    #[test]
    fn overlay_leaves_to_the_table_what_it_applied_but_keeps_open_writes() {
        let mut overlay = ThreadOverlay::new(10);
        overlay.insert(link("a"));
        overlay.insert(link("b"));
        overlay.commit();
        overlay.insert(link("c"));
        overlay.forget(Some(&["a".to_string(), "c".to_string()]));
        assert!(overlay.get("a").is_none(), "the table answers for a");
        assert!(overlay.get("b").is_some());
        assert!(overlay.get("c").is_some(), "c is in the open transaction");
        overlay.forget(None);
        assert!(overlay.get("b").is_none() && overlay.get("c").is_some());
    }
}
