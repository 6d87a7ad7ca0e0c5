//! The memory a job's image may hold, bounded for all jobs together: a
//! download's body (and the copies the request makes of it) and an
//! image decoded to be scaled. Jobs are capped in number elsewhere; this
//! caps them in bytes, so a burst of large images waits its turn instead
//! of taking the worker's memory (and the worker, and every delivery it
//! holds, with it).
//!
//! A reservation is taken before the bytes exist and released when it is
//! dropped. A job asking for more than the whole budget gets the whole
//! budget: it runs, alone.
//!
//! A job reserves through its own [`JobMemory`], which keeps how long it
//! has waited: that time is the other jobs', so the job's own deadlines
//! (its download's, its whole run's) do not count it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// The budget's unit: permits are KiB, so a u32 of them spans 4 TiB.
const UNIT: usize = 1024;

/// The shared budget; cheap to clone.
#[derive(Debug, Clone)]
pub struct MemoryBudget {
    permits: Arc<Semaphore>,
    total: u32,
}

/// Bytes held from the budget until dropped.
#[derive(Debug, Default)]
pub struct Reservation {
    permit: Option<OwnedSemaphorePermit>,
}

impl MemoryBudget {
    /// A budget of `bytes` (at least one unit).
    pub fn new(bytes: u64) -> Self {
        let total = u32::try_from(bytes.div_ceil(UNIT as u64))
            .unwrap_or(u32::MAX)
            .clamp(1, Semaphore::MAX_PERMITS as u32);
        Self {
            permits: Arc::new(Semaphore::new(total as usize)),
            total,
        }
    }

    /// Waits until `bytes` (at most the whole budget) are free, and holds
    /// them.
    pub async fn reserve(&self, bytes: usize) -> Reservation {
        let units = self.units(bytes);
        if units == 0 {
            return Reservation::default();
        }
        let permit = Arc::clone(&self.permits)
            .acquire_many_owned(units)
            .await
            .expect("the budget's semaphore is never closed");
        Reservation {
            permit: Some(permit),
        }
    }

    /// `bytes` (at most the whole budget) if they are free now.
    fn try_reserve(&self, bytes: usize) -> Option<Reservation> {
        let units = self.units(bytes);
        if units == 0 {
            return Some(Reservation::default());
        }
        let permit = Arc::clone(&self.permits)
            .try_acquire_many_owned(units)
            .ok()?;
        Some(Reservation {
            permit: Some(permit),
        })
    }

    fn units(&self, bytes: usize) -> u32 {
        u32::try_from(bytes.div_ceil(UNIT))
            .unwrap_or(u32::MAX)
            .min(self.total)
    }

    /// Bytes free now.
    pub fn available(&self) -> usize {
        self.permits.available_permits() * UNIT
    }
}

/// One job's reservations, and the time it has spent waiting for them.
#[derive(Debug)]
pub struct JobMemory {
    budget: MemoryBudget,
    waits: Mutex<Waits>,
    /// Told when a wait starts or ends.
    changed: Notify,
}

#[derive(Debug, Default, Clone, Copy)]
struct Waits {
    /// Waits that have ended.
    ended: Duration,
    /// The wait going on, if any.
    since: Option<Instant>,
}

/// How long a job has waited for memory, as of now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Waited {
    pub total: Duration,
    /// Whether it is waiting now.
    pub waiting: bool,
}

impl JobMemory {
    pub fn new(budget: &MemoryBudget) -> Self {
        Self {
            budget: budget.clone(),
            waits: Mutex::new(Waits::default()),
            changed: Notify::new(),
        }
    }

    /// [`MemoryBudget::reserve`], the wait kept.
    pub async fn reserve(&self, bytes: usize) -> Reservation {
        let _waiting = WaitGuard::start(self);
        self.budget.reserve(bytes).await
    }

    /// `held` and `extra` bytes more, as one reservation. If they are not
    /// free at once, `held` is given back first and both are waited for
    /// together: a job never waits while holding memory, or jobs holding
    /// their downloads and each waiting to decode would wait on each other
    /// for ever once their downloads filled the budget. Meanwhile what
    /// `held` accounted for stays in memory (a download's body, at most
    /// `fetch.max_bytes`) without being counted.
    pub async fn grow(&self, mut held: Reservation, extra: usize) -> Reservation {
        if let Some(more) = self.budget.try_reserve(extra) {
            held.merge(more);
            return held;
        }
        let total = held.bytes() + extra;
        drop(held);
        self.reserve(total).await
    }

    pub fn waited(&self) -> Waited {
        let waits = *self.waits.lock().expect("never poisoned");
        Waited {
            total: waits.ended + waits.since.map_or(Duration::ZERO, |since| since.elapsed()),
            waiting: waits.since.is_some(),
        }
    }

    /// Resolves when a wait starts or ends; enable it before reading
    /// [`Self::waited`] so neither is missed.
    pub fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.changed.notified()
    }
}

/// A wait in progress, ended when dropped: a job dropped while waiting
/// (its deadline up) ends it too.
struct WaitGuard<'a>(&'a JobMemory);

impl<'a> WaitGuard<'a> {
    fn start(memory: &'a JobMemory) -> Self {
        memory.waits.lock().expect("never poisoned").since = Some(Instant::now());
        memory.changed.notify_waiters();
        Self(memory)
    }
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        let mut waits = self.0.waits.lock().expect("never poisoned");
        if let Some(since) = waits.since.take() {
            waits.ended += since.elapsed();
        }
        drop(waits);
        self.0.changed.notify_waiters();
    }
}

impl Reservation {
    /// Adds `other` to this reservation: both are released together.
    pub fn merge(&mut self, other: Reservation) {
        match (&mut self.permit, other.permit) {
            (Some(mine), Some(theirs)) => mine.merge(theirs),
            (None, theirs) => self.permit = theirs,
            (Some(_), None) => {}
        }
    }

    /// Splits `bytes` (whole units, at most all it holds) off into a
    /// reservation of their own, to be given back sooner.
    pub fn split_off(&mut self, bytes: usize) -> Reservation {
        let units = bytes.div_ceil(UNIT);
        let permit = self.permit.as_mut().and_then(|permit| {
            let units = units.min(permit.num_permits());
            if units == permit.num_permits() {
                return None;
            }
            permit.split(units)
        });
        match permit {
            Some(permit) => Reservation {
                permit: Some(permit),
            },
            // All of it, or nothing held.
            None if units > 0 => std::mem::take(self),
            None => Reservation::default(),
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.permit
            .as_ref()
            .map_or(0, |permit| permit.num_permits() * UNIT)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn reservations_wait_for_the_bytes_and_give_them_back_when_dropped() {
        let budget = MemoryBudget::new(10 * 1024);
        let mut first = budget.reserve(6 * 1024).await;
        first.merge(budget.reserve(1024).await);
        assert_eq!(first.bytes(), 7 * 1024);
        assert_eq!(budget.available(), 3 * 1024);
        // More than is free waits…
        let waiting = tokio::time::timeout(Duration::from_millis(50), budget.reserve(5 * 1024));
        assert!(waiting.await.is_err());
        drop(first);
        // …until it is given back.
        let second = budget.reserve(5 * 1024).await;
        assert_eq!(second.bytes(), 5 * 1024);
    }

    #[tokio::test(start_paused = true)]
    async fn a_job_keeps_the_time_it_waited_for_memory() {
        let budget = MemoryBudget::new(4 * 1024);
        let job = JobMemory::new(&budget);
        let all = job.reserve(4 * 1024).await;
        assert_eq!(
            job.waited(),
            Waited {
                total: Duration::ZERO,
                waiting: false
            }
        );
        let other = JobMemory::new(&budget);
        let waiting = other.reserve(1024);
        tokio::pin!(waiting);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), waiting.as_mut())
                .await
                .is_err()
        );
        assert!(other.waited().waiting);
        drop(all);
        let _held = waiting.await;
        let waited = other.waited();
        assert!(!waited.waiting);
        assert!(waited.total >= Duration::from_millis(50), "{waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn jobs_holding_downloads_and_waiting_to_decode_do_not_wait_on_each_other() {
        // Two jobs hold their downloads (4 KiB each of 10); each then needs
        // 5 KiB more to decode. Waiting while holding, neither would ever
        // get it; growing gives its download back while it waits.
        let budget = MemoryBudget::new(10 * 1024);
        let (a, b) = (JobMemory::new(&budget), JobMemory::new(&budget));
        let held_a = a.reserve(4 * 1024).await;
        let held_b = b.reserve(4 * 1024).await;
        async fn decode(memory: &JobMemory, held: Reservation) {
            let mut all = memory.grow(held, 5 * 1024).await;
            let decoding = all.split_off(5 * 1024);
            assert_eq!((all.bytes(), decoding.bytes()), (4 * 1024, 5 * 1024));
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let both = async { tokio::join!(decode(&a, held_a), decode(&b, held_b)) };
        tokio::time::timeout(Duration::from_secs(60), both)
            .await
            .expect("both jobs decode");
        assert_eq!(budget.available(), 10 * 1024);
    }

    #[tokio::test]
    async fn a_split_reservation_gives_back_each_part_on_its_own() {
        let budget = MemoryBudget::new(10 * 1024);
        let mut all = budget.reserve(6 * 1024).await;
        let part = all.split_off(2 * 1024);
        assert_eq!((all.bytes(), part.bytes()), (4 * 1024, 2 * 1024));
        drop(part);
        assert_eq!(budget.available(), 6 * 1024);
        let rest = all.split_off(1 << 30);
        assert_eq!((all.bytes(), rest.bytes()), (0, 4 * 1024));
        drop(rest);
        assert_eq!(budget.available(), 10 * 1024);
    }

    #[tokio::test]
    async fn a_reservation_over_the_whole_budget_takes_the_whole_budget() {
        let budget = MemoryBudget::new(4 * 1024);
        let all = budget.reserve(1 << 30).await;
        assert_eq!(all.bytes(), 4 * 1024);
        assert_eq!(budget.available(), 0);
        assert_eq!(budget.reserve(0).await.bytes(), 0);
    }
}
