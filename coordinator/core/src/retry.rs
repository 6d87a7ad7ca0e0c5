//! The retry policy every remote call shares: which errors to retry is the
//! error type's to say ([`Retryable`]); how long to wait is exponential
//! backoff with full jitter (backon), never less than a throttling answer's
//! retry hint, within a number of attempts, a total time, and an optional
//! retry budget so a failing downstream cannot have its load multiplied.

use std::future::Future;
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable as _};
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
/// jitter"), but at least what the server asked for.
pub fn delay(backoff: Duration, retry_after: Option<Duration>) -> Duration {
    let jittered = backoff.mul_f64(fastrand::f64());
    retry_after.map_or(jittered, |hint| jittered.max(hint))
}

/// Runs `attempt` until it succeeds, fails for good, or the policy says
/// stop. `on_retry` sees each error that will be retried and the wait.
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
        .adjust(|error: &E, backoff| backoff.map(|backoff| delay(backoff, error.retry_after())))
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
    fn full_jitter_stays_within_the_backoff_and_honours_the_hint() {
        let backoff = Duration::from_millis(100);
        for _ in 0..100 {
            assert!(delay(backoff, None) <= backoff);
        }
        let hint = Duration::from_secs(1);
        assert_eq!(delay(backoff, Some(hint)), hint);
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
