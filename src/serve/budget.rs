//! A shared allowance of some resource (decoded pixels, body bytes) that requests reserve
//! before they use it and give back when done.
//!
//! Memory is what a hostile client attacks: a 20 KB PNG can claim 49 million pixels, and a
//! thousand connections can each promise a 20 MB body. Limits per request do not bound the
//! sum; a budget does. A request that does not fit waits (at most `wait`), then is refused,
//! so the server's memory stays under the budget whatever arrives at once. One reservation
//! larger than the whole budget is charged the whole budget: it runs alone rather than never.
//! The decode budget has two lanes ([`DecodeBudget`]) so that large images waiting in line
//! never hold up ordinary photos (a semaphore is first come, first served).

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Some units of a [`Budget`], held until dropped.
#[derive(Debug)]
pub struct Reservation(#[allow(dead_code)] Option<OwnedSemaphorePermit>);

/// The budget stayed full for the whole wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exhausted;

/// How a reservation was granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granted {
    /// There was room at once.
    AtOnce,
    /// It waited for others to finish.
    AfterWaiting,
}

/// A pool of `total` units shared by every request.
#[derive(Debug, Clone)]
pub struct Budget {
    units: Arc<Semaphore>,
    total: u32,
    wait: Duration,
}

impl Budget {
    /// `total` units (at most `u32::MAX`); a reservation waits up to `wait` for room.
    pub fn new(total: u64, wait: Duration) -> Self {
        let total = u32::try_from(total.max(1)).unwrap_or(u32::MAX);
        Budget {
            units: Arc::new(Semaphore::new(total as usize)),
            total,
            wait,
        }
    }

    /// The whole budget, in units.
    pub fn total(&self) -> u64 {
        u64::from(self.total)
    }

    /// Reserves `units` (capped at the whole budget) until the reservation is dropped.
    ///
    /// # Errors
    /// [`Exhausted`] when there is still no room after the wait.
    pub async fn reserve(&self, units: u64) -> Result<(Reservation, Granted), Exhausted> {
        let units = u32::try_from(units).unwrap_or(u32::MAX).min(self.total);
        if units == 0 {
            return Ok((Reservation(None), Granted::AtOnce));
        }
        if let Ok(permit) = Arc::clone(&self.units).try_acquire_many_owned(units) {
            return Ok((Reservation(Some(permit)), Granted::AtOnce));
        }
        let waiting = Arc::clone(&self.units).acquire_many_owned(units);
        match tokio::time::timeout(self.wait, waiting).await {
            Ok(Ok(permit)) => Ok((Reservation(Some(permit)), Granted::AfterWaiting)),
            // Timed out, or the semaphore was closed (never done here).
            _ => Err(Exhausted),
        }
    }
}

/// The decode budget, in two lanes: a quarter for images up to a quarter of the budget (every
/// ordinary photo), the rest for larger ones. A line of huge images waiting for the large lane
/// thus never delays a phone photo, and the pixels decoded at once stay under the budget
/// (plus, when one image is larger than the large lane, that image alone: it runs alone).
#[derive(Debug, Clone)]
pub struct DecodeBudget {
    small: Budget,
    large: Budget,
}

impl DecodeBudget {
    /// `total` pixels, split as above; a decode waits up to `wait` for its lane.
    pub fn new(total: u64, wait: Duration) -> Self {
        let small = (total / 4).max(1);
        DecodeBudget {
            small: Budget::new(small, wait),
            large: Budget::new(total.saturating_sub(small).max(1), wait),
        }
    }

    /// Reserves `pixels` in their lane until the reservation is dropped.
    ///
    /// # Errors
    /// [`Exhausted`] when the lane is still full after the wait.
    pub async fn reserve(&self, pixels: u64) -> Result<(Reservation, Granted), Exhausted> {
        if pixels <= self.small.total() {
            self.small.reserve(pixels).await
        } else {
            self.large.reserve(pixels).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_reservation_waits_for_room_then_is_refused_after_the_wait() {
        let budget = Budget::new(100, Duration::from_millis(100));
        let (a, how) = budget.reserve(60).await.unwrap();
        assert_eq!(how, Granted::AtOnce);
        // 60 + 60 > 100: refused after the wait.
        assert_eq!(budget.reserve(60).await.unwrap_err(), Exhausted);
        // Room comes back when the first is dropped during the wait.
        let waiter = {
            let budget = budget.clone();
            tokio::spawn(async move { budget.reserve(60).await.map(|(_, how)| how) })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(a);
        assert_eq!(waiter.await.unwrap(), Ok(Granted::AfterWaiting));
    }

    #[tokio::test]
    async fn more_than_the_whole_budget_runs_alone_rather_than_never() {
        let budget = Budget::new(100, Duration::from_millis(50));
        let (big, _) = budget.reserve(1_000).await.unwrap();
        assert!(budget.reserve(1).await.is_err());
        drop(big);
        assert!(budget.reserve(100).await.is_ok());
        assert_eq!(budget.total(), 100);
    }

    #[tokio::test]
    async fn a_photo_is_not_delayed_by_huge_images_waiting() {
        let budget = DecodeBudget::new(100, Duration::from_millis(50));
        let (_huge, _) = budget.reserve(99).await.unwrap();
        // A second huge image waits (and here gives up); a small one passes at once.
        assert!(budget.reserve(99).await.is_err());
        assert_eq!(budget.reserve(20).await.unwrap().1, Granted::AtOnce);
    }
}
