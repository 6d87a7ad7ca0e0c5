//! A circuit breaker per function: after a run of consecutive failures of
//! the function itself it opens, and calls fail fast (or go to the
//! fallback) instead of piling onto a broken function; after a cool-down
//! one probe call may try again, and its outcome closes or reopens it. A
//! probe that never reports (its job was dropped) expires after another
//! cool-down, so the breaker cannot stay half-open for ever.
//!
//! Written here (some fifty lines) rather than taken from a crate: the
//! maintained breaker crates wrap a whole `tower` service or a future,
//! while this one must sit between our own retries and fallback.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One probe is in flight, let through at `since`.
    HalfOpen {
        since: Instant,
    },
}

/// Whether a call may go ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Call,
    /// The one call let through after the cool-down.
    Probe,
    Rejected,
}

/// How a call ended, as the breaker sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The function ran (even if it refused the input).
    Success,
    /// The function failed to run: crashed, timed out, unreachable.
    Failure,
    /// Says nothing about the function (throttled, cancelled).
    Neutral,
}

#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    cooldown: Duration,
    state: Mutex<State>,
    opened: AtomicU64,
}

impl Breaker {
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        Self {
            threshold: threshold.max(1),
            cooldown,
            state: Mutex::new(State::Closed { failures: 0 }),
            opened: AtomicU64::new(0),
        }
    }

    pub fn admit(&self) -> Admission {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        match *state {
            State::Closed { .. } => Admission::Call,
            State::Open { until } if now >= until => {
                *state = State::HalfOpen { since: now };
                Admission::Probe
            }
            // The probe never reported: another may go.
            State::HalfOpen { since } if now >= since + self.cooldown => {
                *state = State::HalfOpen { since: now };
                Admission::Probe
            }
            State::Open { .. } | State::HalfOpen { .. } => Admission::Rejected,
        }
    }

    /// When a call may next be let through, while the breaker is not
    /// closed; `None` while it is.
    pub fn reopens_at(&self) -> Option<Instant> {
        match *self.state.lock().unwrap_or_else(|e| e.into_inner()) {
            State::Closed { .. } => None,
            State::Open { until } => Some(until),
            State::HalfOpen { since } => Some(since + self.cooldown),
        }
    }

    pub fn record(&self, outcome: Outcome) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        *state = match (*state, outcome) {
            (_, Outcome::Success) => State::Closed { failures: 0 },
            (State::Closed { failures }, Outcome::Failure) if failures + 1 >= self.threshold => {
                self.open()
            }
            (State::Closed { failures }, Outcome::Failure) => State::Closed {
                failures: failures + 1,
            },
            (State::HalfOpen { .. }, Outcome::Failure) => self.open(),
            // A probe that proved nothing: the next call probes again.
            (State::HalfOpen { .. }, Outcome::Neutral) => State::Open {
                until: Instant::now(),
            },
            (state, _) => state,
        };
    }

    fn open(&self) -> State {
        self.opened.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(cooldown = ?self.cooldown, "Circuit breaker opened.");
        State::Open {
            until: Instant::now() + self.cooldown,
        }
    }

    /// Times it has opened.
    pub fn times_opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }

    pub fn is_open(&self) -> bool {
        !matches!(
            *self.state.lock().unwrap_or_else(|e| e.into_inner()),
            State::Closed { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn opens_after_the_threshold_and_probes_after_the_cooldown() {
        let breaker = Breaker::new(3, Duration::from_secs(30));
        for _ in 0..2 {
            assert_eq!(breaker.admit(), Admission::Call);
            breaker.record(Outcome::Failure);
        }
        // A success resets the count.
        breaker.record(Outcome::Success);
        for _ in 0..3 {
            assert_eq!(breaker.admit(), Admission::Call);
            breaker.record(Outcome::Failure);
        }
        assert_eq!(breaker.admit(), Admission::Rejected);
        assert_eq!(breaker.times_opened(), 1);

        tokio::time::advance(Duration::from_secs(31)).await;
        assert_eq!(breaker.admit(), Admission::Probe);
        // Only one probe at a time.
        assert_eq!(breaker.admit(), Admission::Rejected);
        breaker.record(Outcome::Failure);
        assert_eq!(breaker.admit(), Admission::Rejected);
        assert_eq!(breaker.times_opened(), 2);

        tokio::time::advance(Duration::from_secs(31)).await;
        assert_eq!(breaker.admit(), Admission::Probe);
        breaker.record(Outcome::Success);
        assert_eq!(breaker.admit(), Admission::Call);
        assert!(!breaker.is_open());
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_that_never_reports_expires_after_a_cooldown() {
        let breaker = Breaker::new(1, Duration::from_secs(5));
        breaker.record(Outcome::Failure);
        assert!(breaker.reopens_at().is_some());
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(breaker.admit(), Admission::Probe);
        // Its job was dropped: no outcome comes.
        assert_eq!(breaker.admit(), Admission::Rejected);
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(breaker.admit(), Admission::Probe);
        breaker.record(Outcome::Success);
        assert_eq!(breaker.reopens_at(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_neutral_probe_lets_the_next_call_probe() {
        let breaker = Breaker::new(1, Duration::from_secs(5));
        breaker.record(Outcome::Failure);
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(breaker.admit(), Admission::Probe);
        breaker.record(Outcome::Neutral);
        assert_eq!(breaker.admit(), Admission::Probe);
    }
}
