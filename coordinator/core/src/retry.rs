//! The retry policy every remote call shares: which errors to retry is the
//! error type's to say ([`Retryable`]); how long to wait is exponential
//! backoff with full jitter (backon), never less than a throttling answer's
//! retry hint, within a number of attempts, a total time, and an optional
//! retry budget so a failing downstream cannot have its load multiplied.

use std::future::Future;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable as _};
use tokio::time::Instant;
use tower::retry::budget::{Budget as _, TpsBudget};

use crate::config::RetryConfig;

/// What the retry policy needs to know about an error.
pub trait Retryable {
    /// Whether another attempt can succeed.
    fn is_retryable(&self) -> bool;
    /// How long the other side asked us to wait (`Retry-After`).
    fn retry_after(&self) -> Option<Duration> {
        None
    }
}

/// A retry budget: retries may add a fraction of the recent calls, plus a
/// floor per second (tower's `TpsBudget`).
#[derive(Debug)]
pub struct RetryBudget(TpsBudget);

impl RetryBudget {
    pub fn new(config: &RetryConfig) -> Self {
        Self(TpsBudget::new(
            config.budget_window,
            config.budget_min_per_second,
            config.budget_ratio,
        ))
    }

    /// A call was made.
    pub fn deposit(&self) {
        self.0.deposit();
    }

    /// May a retry be made?
    pub fn withdraw(&self) -> bool {
        self.0.withdraw()
    }
}

/// The delay before a retry: uniformly random in `[0, backoff]` ("full
/// jitter"), but at least what the server asked for, up to `max_hint`.
pub fn delay(backoff: Duration, retry_after: Option<Duration>, max_hint: Duration) -> Duration {
    let jittered = backoff.mul_f64(fastrand::f64());
    retry_after.map_or(jittered, |hint| jittered.max(hint.min(max_hint)))
}

/// Runs `attempt` until it succeeds, fails for good, or the policy says
/// stop: out of attempts or budget, or a wait that would end past
/// `max_elapsed`. `on_retry` sees each error that will be retried and the
/// wait.
pub async fn retrying<T, E, F, Fut>(
    config: &RetryConfig,
    max_attempts: usize,
    budget: Option<&RetryBudget>,
    attempt: F,
    mut on_retry: impl FnMut(&E, Duration),
) -> Result<T, E>
where
    E: Retryable,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let started = Instant::now();
    let backoff = ExponentialBuilder::new()
        .with_min_delay(config.min_delay)
        .with_max_delay(config.max_delay)
        .with_max_times(max_attempts.saturating_sub(1))
        .with_total_delay(Some(config.max_elapsed));
    attempt
        .retry(backoff)
        .sleep(tokio::time::sleep)
        .when(|error: &E| {
            error.is_retryable()
                && started.elapsed() < config.max_elapsed
                && budget.is_none_or(RetryBudget::withdraw)
        })
        .adjust(|error: &E, backoff| {
            let wait = delay(backoff?, error.retry_after(), config.max_retry_after);
            (started.elapsed() + wait <= config.max_elapsed).then_some(wait)
        })
        .notify(|error: &E, wait| on_retry(error, wait))
        .await
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[derive(Debug)]
    struct Flaky {
        retryable: bool,
    }

    impl Retryable for Flaky {
        fn is_retryable(&self) -> bool {
            self.retryable
        }
    }

    fn quick() -> RetryConfig {
        RetryConfig {
            min_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
            ..RetryConfig::default()
        }
    }

    #[test]
    fn full_jitter_stays_within_the_backoff_and_honours_the_hint_up_to_its_cap() {
        let backoff = Duration::from_millis(100);
        let cap = Duration::from_secs(10);
        for _ in 0..100 {
            assert!(delay(backoff, None, cap) <= backoff);
        }
        let hint = Duration::from_secs(1);
        assert_eq!(delay(backoff, Some(hint), cap), hint);
        let hostile = Duration::from_secs(u64::from(u32::MAX));
        assert_eq!(delay(backoff, Some(hostile), cap), cap);
    }

    #[derive(Debug)]
    struct Throttled(Duration);

    impl Retryable for Throttled {
        fn is_retryable(&self) -> bool {
            true
        }
        fn retry_after(&self) -> Option<Duration> {
            Some(self.0)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_huge_retry_after_is_waited_at_most_its_cap_and_never_past_max_elapsed() {
        let config = RetryConfig {
            max_attempts: 100,
            max_elapsed: Duration::from_secs(25),
            max_retry_after: Duration::from_secs(10),
            ..quick()
        };
        let started = Instant::now();
        let calls = AtomicUsize::new(0);
        let result: Result<(), Throttled> = retrying(
            &config,
            config.max_attempts,
            None,
            || async {
                calls.fetch_add(1, Ordering::Relaxed);
                Err(Throttled(Duration::from_secs(4_294_967_295)))
            },
            |_, _| {},
        )
        .await;
        assert!(result.is_err());
        // Waits of 10 s each: at 0, 10 and 20 s; a fourth would end at 30 s.
        assert_eq!(calls.load(Ordering::Relaxed), 3);
        assert!(
            started.elapsed() <= config.max_elapsed,
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn a_transient_error_is_retried_up_to_the_attempts() {
        let calls = AtomicUsize::new(0);
        let mut retries = 0;
        let result: Result<(), Flaky> = retrying(
            &quick(),
            3,
            None,
            || async {
                calls.fetch_add(1, Ordering::Relaxed);
                Err(Flaky { retryable: true })
            },
            |_, _| retries += 1,
        )
        .await;
        assert!(result.is_err());
        assert_eq!(calls.load(Ordering::Relaxed), 3);
        assert_eq!(retries, 2);
    }

    #[tokio::test]
    async fn a_permanent_error_is_not_retried() {
        let calls = AtomicUsize::new(0);
        let result: Result<(), Flaky> = retrying(
            &quick(),
            5,
            None,
            || async {
                calls.fetch_add(1, Ordering::Relaxed);
                Err(Flaky { retryable: false })
            },
            |_, _| {},
        )
        .await;
        assert!(result.is_err());
        assert_eq!(calls.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn an_empty_budget_stops_retries() {
        let config = RetryConfig {
            budget_min_per_second: 0,
            budget_ratio: 0.0,
            ..quick()
        };
        let budget = RetryBudget::new(&config);
        let calls = AtomicUsize::new(0);
        let result: Result<(), Flaky> = retrying(
            &config,
            5,
            Some(&budget),
            || async {
                budget.deposit();
                calls.fetch_add(1, Ordering::Relaxed);
                Err(Flaky { retryable: true })
            },
            |_, _| {},
        )
        .await;
        assert!(result.is_err());
        assert_eq!(calls.load(Ordering::Relaxed), 1);
    }
}
