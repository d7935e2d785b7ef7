//! Bounded memory of the one-time values of signed provider requests (Mailgun's `token`,
//! SNS's `MessageId`): each is accepted once while its timestamp is within the replay window,
//! and forgotten when it leaves the window (a request that old is refused as stale anyway).
//! At most [`MAX_SEEN`] are remembered: past it new requests are answered 503 (the providers
//! retry) until older ones leave the window, so memory stays bounded and nothing is forgotten
//! while it could still be replayed.

use std::collections::{HashSet, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// One-time values remembered at most at once, per provider.
pub const MAX_SEEN: usize = 100_000;

/// Why a token was not taken.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Seen {
    Replayed,
    Full,
}

/// Tokens accepted within the replay window, each with the time it leaves it. Bounded: at
/// most `cap` entries; expired ones are dropped first (they are in time order).
pub(super) struct Tokens {
    seen: HashSet<String>,
    expiry: VecDeque<(i64, String)>,
    cap: usize,
}

impl Tokens {
    pub fn new(cap: usize) -> Self {
        Self {
            seen: HashSet::new(),
            expiry: VecDeque::new(),
            cap,
        }
    }

    /// Takes `token` until `expires` (unix seconds), unless it was taken or there is no room.
    pub fn take(&mut self, token: &str, now: i64, expires: i64) -> Result<(), Seen> {
        while let Some((at, _)) = self.expiry.front() {
            if *at >= now {
                break;
            }
            if let Some((_, old)) = self.expiry.pop_front() {
                self.seen.remove(&old);
            }
        }
        if self.seen.contains(token) {
            return Err(Seen::Replayed);
        }
        if self.seen.len() >= self.cap {
            return Err(Seen::Full);
        }
        self.seen.insert(token.to_string());
        // Expiry times arrive nearly in order; keep the queue sorted so the front is oldest.
        let at = self.expiry.partition_point(|(t, _)| *t <= expires);
        self.expiry.insert(at, (expires, token.to_string()));
        Ok(())
    }

    pub fn forget(&mut self, token: &str) {
        if self.seen.remove(token) {
            self.expiry.retain(|(_, t)| t != token);
        }
    }
}

/// The set behind its lock; a poisoned lock (a panic while holding it) still holds a valid set.
pub(super) fn lock(tokens: &Mutex<Tokens>) -> MutexGuard<'_, Tokens> {
    tokens.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_taken_once_within_their_window_and_bounded() {
        let mut t = Tokens::new(2);
        assert_eq!(t.take("a", 100, 400), Ok(()));
        assert_eq!(t.take("a", 101, 401), Err(Seen::Replayed));
        assert_eq!(t.take("b", 102, 402), Ok(()));
        assert_eq!(
            t.take("c", 103, 403),
            Err(Seen::Full),
            "full of live tokens"
        );
        // Once `a` left its window it is forgotten (its timestamp is stale by then anyway).
        assert_eq!(t.take("c", 401, 701), Ok(()));
        assert_eq!(t.seen.len(), 2);
        t.forget("c");
        assert_eq!(
            t.take("c", 402, 702),
            Ok(()),
            "a failed write's token is usable again"
        );
    }
}
