//! The global in-flight bytes budget: every byte of a message being received or written (SMTP
//! DATA, an HTTP body), in memory or in a spool file, holds one unit of one shared budget
//! (`max_inflight_bytes`) until the message is published or dropped.
//!
//! Rules:
//! - reservations never wait: a chunk that does not fit is refused at once (SMTP 451 4.3.1,
//!   HTTP 503 with `Retry-After`), so no session can block another and no deadlock is possible;
//! - a [`Reservation`] releases its bytes when dropped, on every path (error, abort, success);
//! - the `ingest_inflight_bytes` gauge follows the reserved total.
//!
//! The budget is a tokio [`Semaphore`] with one permit per byte.

use std::sync::Arc;

use prometheus::IntGauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The shared budget. Cheap to clone.
#[derive(Clone)]
pub struct Budget {
    permits: Arc<Semaphore>,
    total: usize,
    gauge: IntGauge,
}

/// Bytes held against the budget; released on drop.
pub struct Reservation {
    permit: Option<OwnedSemaphorePermit>,
    budget: Budget,
}

/// The budget has no room for the bytes asked for.
#[derive(Debug)]
pub struct OverBudget;

impl Budget {
    /// A budget of `total` bytes (capped at the semaphore's maximum), reported in `gauge`.
    pub fn new(total: u64, gauge: IntGauge) -> Self {
        let total = usize::try_from(total)
            .unwrap_or(usize::MAX)
            .min(Semaphore::MAX_PERMITS);
        Self {
            permits: Arc::new(Semaphore::new(total)),
            total,
            gauge,
        }
    }

    /// An empty reservation to grow with [`Reservation::grow`].
    pub fn reservation(&self) -> Reservation {
        Reservation {
            permit: None,
            budget: self.clone(),
        }
    }

    /// Bytes reserved now.
    pub fn in_use(&self) -> usize {
        self.total.saturating_sub(self.permits.available_permits())
    }

    fn report(&self) {
        self.gauge
            .set(i64::try_from(self.in_use()).unwrap_or(i64::MAX));
    }
}

impl Reservation {
    /// Adds `bytes` to the reservation, or refuses at once when the budget has no room.
    pub fn grow(&mut self, bytes: usize) -> Result<(), OverBudget> {
        if bytes == 0 {
            return Ok(());
        }
        let n = u32::try_from(bytes).map_err(|_| OverBudget)?;
        let more = self
            .budget
            .permits
            .clone()
            .try_acquire_many_owned(n)
            .map_err(|_| OverBudget)?;
        match &mut self.permit {
            Some(permit) => permit.merge(more),
            None => self.permit = Some(more),
        }
        self.budget.report();
        Ok(())
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.permit
            .as_ref()
            .map_or(0, OwnedSemaphorePermit::num_permits)
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(permit) = self.permit.take() {
            drop(permit);
            self.budget.report();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(total: u64) -> Budget {
        Budget::new(total, IntGauge::new("g", "g").expect("gauge"))
    }

    #[test]
    fn reservations_share_the_budget_and_release_on_drop() {
        let b = budget(100);
        let mut one = b.reservation();
        one.grow(60).expect("fits");
        let mut two = b.reservation();
        assert!(two.grow(50).is_err(), "over the total");
        two.grow(40).expect("the rest fits");
        assert_eq!(b.in_use(), 100);
        assert_eq!(b.gauge.get(), 100);
        drop(one);
        assert_eq!(b.in_use(), 40);
        assert_eq!(b.gauge.get(), 40);
        two.grow(60).expect("room again");
        assert_eq!(two.bytes(), 100);
        drop(two);
        assert_eq!(b.gauge.get(), 0);
    }
}
