//! Calling one configured function the way production must: a concurrency
//! cap and a rate limit (waiting for them is backpressure, never an error),
//! classified retries within a budget, a circuit breaker, and a fallback
//! function while the breaker is open.
//!
//! Per attempt, in order: a slot of the concurrency cap, a token of the
//! rate, then the invocation under its timeout; the slot is released
//! before any backoff.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use aws_sdk_lambda::Client;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::Semaphore;

use crate::config::{BreakerConfig, FunctionConfig, RetryConfig};
use crate::lambda::breaker::{Admission, Breaker, Outcome};
use crate::lambda::invoke::{InvokeError, invoke};
use crate::metrics;
use crate::pipeline::billing::Meter;
use crate::retry::{RetryBudget, retrying};

/// A function's typed answer and who gave it.
#[derive(Debug, Clone)]
pub struct Answer<A> {
    pub response: A,
    /// The function that answered: the configured one or its fallback.
    pub function: String,
    /// `X-Amz-Executed-Version`.
    pub function_version: Option<String>,
}

/// Counters of one function's calls since start.
#[derive(Debug, Default)]
struct Counters {
    calls: AtomicU64,
    attempts: AtomicU64,
    retries: AtomicU64,
    throttled: AtomicU64,
    failed: AtomicU64,
    fallback_calls: AtomicU64,
    fast_failures: AtomicU64,
}

/// A snapshot of one function's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CallStats {
    /// Calls asked for.
    pub calls: u64,
    /// Invocations made, retries and fallback calls included.
    pub attempts: u64,
    pub retries: u64,
    /// Attempts Lambda refused with 429.
    pub throttled: u64,
    /// Calls that failed for good.
    pub failed: u64,
    /// Calls that went to the fallback.
    pub fallback_calls: u64,
    /// Calls the open breaker failed at once, with no fallback.
    pub fast_failures: u64,
    pub breaker_opened: u64,
}

/// One configured function, shared by every job.
#[derive(Debug)]
pub struct Caller {
    client: Client,
    function: String,
    qualifier: Option<String>,
    fallback: Option<String>,
    timeout: std::time::Duration,
    rate: Option<DefaultDirectRateLimiter>,
    in_flight: Semaphore,
    retry: RetryConfig,
    budget: RetryBudget,
    breaker: Breaker,
    counters: Counters,
    /// The size of the last request: what the next one's buffer starts
    /// with, so that a request of crops is not copied as it grows.
    payload_hint: AtomicUsize,
}

impl Caller {
    pub fn new(
        client: Client,
        config: &FunctionConfig,
        retry: &RetryConfig,
        breaker: &BreakerConfig,
    ) -> Self {
        Self {
            client,
            function: config.function.clone(),
            qualifier: config.qualifier.clone(),
            fallback: config.fallback.clone(),
            timeout: config.timeout,
            rate: config
                .rate_per_second
                .map(|rate: NonZeroU32| RateLimiter::direct(Quota::per_second(rate))),
            in_flight: Semaphore::new(config.concurrency),
            retry: retry.clone(),
            budget: RetryBudget::new(retry),
            breaker: Breaker::new(breaker.failure_threshold, breaker.cooldown),
            counters: Counters::default(),
            payload_hint: AtomicUsize::new(0),
        }
    }

    /// The configured function's name.
    pub fn function(&self) -> &str {
        &self.function
    }

    /// When calls will be let through again, while this function's breaker
    /// is open and it has no fallback to answer instead; `None` while
    /// calls go through.
    pub fn unavailable_until(&self) -> Option<tokio::time::Instant> {
        if self.fallback.is_some() {
            return None;
        }
        self.breaker.reopens_at()
    }

    pub fn stats(&self) -> CallStats {
        let c = &self.counters;
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        CallStats {
            calls: load(&c.calls),
            attempts: load(&c.attempts),
            retries: load(&c.retries),
            throttled: load(&c.throttled),
            failed: load(&c.failed),
            fallback_calls: load(&c.fallback_calls),
            fast_failures: load(&c.fast_failures),
            breaker_opened: self.breaker.times_opened(),
        }
    }

    /// Calls the function with `request`; the `REPORT` of every attempt
    /// goes to `meter`.
    pub async fn call<Q: Serialize, A: DeserializeOwned>(
        &self,
        request: &Q,
        meter: &Meter,
    ) -> Result<Answer<A>, InvokeError> {
        self.counters.calls.fetch_add(1, Ordering::Relaxed);
        self.budget.deposit();
        let mut payload = Vec::with_capacity(self.payload_hint.load(Ordering::Relaxed));
        serde_json::to_writer(&mut payload, request).map_err(|error| InvokeError::BadAnswer {
            function: self.function.clone(),
            reason: format!("cannot serialise the request: {error}"),
        })?;
        self.payload_hint.store(payload.len(), Ordering::Relaxed);
        let primary = match self.breaker.admit() {
            Admission::Rejected => Err(InvokeError::CircuitOpen {
                function: self.function.clone(),
            }),
            // Boxed, here and below: the SDK's future nests deep, and a
            // job's future nests it again in several layers (the pipeline,
            // a batch); a box keeps the job's future small and its type
            // within the compiler's depth limit.
            admitted => {
                Box::pin(self.retried(
                    &self.function,
                    self.qualifier.as_deref(),
                    &payload,
                    meter,
                    Some(admitted),
                ))
                .await
            }
        };
        let result = match (primary, &self.fallback) {
            // The function is broken, not the input: the fallback may do.
            (Err(error), Some(fallback))
                if matches!(error, InvokeError::CircuitOpen { .. })
                    || error.is_function_failure() =>
            {
                tracing::info!(%error, function = %self.function, %fallback, "Calling the fallback.");
                self.counters.fallback_calls.fetch_add(1, Ordering::Relaxed);
                Box::pin(self.retried(fallback, None, &payload, meter, None)).await
            }
            (Err(error @ InvokeError::CircuitOpen { .. }), None) => {
                self.counters.fast_failures.fetch_add(1, Ordering::Relaxed);
                Err(error)
            }
            (other, _) => other,
        };
        let answered = result.and_then(|(function, invoked)| {
            let response = serde_json::from_slice(&invoked.payload).map_err(|error| {
                InvokeError::BadAnswer {
                    function: function.clone(),
                    reason: error.to_string(),
                }
            })?;
            Ok(Answer {
                response,
                function,
                function_version: invoked.function_version,
            })
        });
        if answered.is_err() {
            self.counters.failed.fetch_add(1, Ordering::Relaxed);
        }
        answered
    }

    /// `function` with retries; with `breaker`, every attempt after the one
    /// admitted asks the breaker again, and every outcome is recorded.
    async fn retried(
        &self,
        function: &str,
        qualifier: Option<&str>,
        payload: &[u8],
        meter: &Meter,
        breaker: Option<Admission>,
    ) -> Result<(String, crate::lambda::invoke::Invoked), InvokeError> {
        let mut first = true;
        retrying(
            &self.retry,
            self.retry.max_attempts,
            Some(&self.budget),
            || {
                let ask_breaker = breaker.is_some() && !std::mem::take(&mut first);
                async move {
                    if ask_breaker && self.breaker.admit() == Admission::Rejected {
                        return Err(InvokeError::CircuitOpen {
                            function: function.to_owned(),
                        });
                    }
                    let result = self.attempt(function, qualifier, payload, meter).await;
                    if breaker.is_some() {
                        self.breaker.record(match &result {
                            Ok(_) => Outcome::Success,
                            Err(error) if error.is_function_failure() => Outcome::Failure,
                            Err(InvokeError::Throttled { .. }) => Outcome::Neutral,
                            Err(_) => Outcome::Success,
                        });
                        metrics::breaker(&self.function, self.breaker.is_open());
                    }
                    result.map(|invoked| (function.to_owned(), invoked))
                }
            },
            |error: &InvokeError, wait| {
                self.counters.retries.fetch_add(1, Ordering::Relaxed);
                metrics::retry(function);
                tracing::info!(%error, function, ?wait, "Retrying invoke.");
            },
        )
        .await
    }

    async fn attempt(
        &self,
        function: &str,
        qualifier: Option<&str>,
        payload: &[u8],
        meter: &Meter,
    ) -> Result<crate::lambda::invoke::Invoked, InvokeError> {
        let _slot = self
            .in_flight
            .acquire()
            .await
            .expect("the semaphore is never closed");
        if let Some(rate) = &self.rate {
            rate.until_ready().await;
        }
        self.counters.attempts.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let result = invoke(
            &self.client,
            function,
            qualifier,
            payload.to_vec(),
            self.timeout,
            |report| {
                metrics::billed(function, report.billed_duration_ms);
                meter.record(function, report);
            },
        )
        .await;
        let class = result.as_ref().err().map(InvokeError::class);
        metrics::invocation(function, started.elapsed(), class.as_ref());
        if let Err(InvokeError::Throttled { .. }) = &result {
            self.counters.throttled.fetch_add(1, Ordering::Relaxed);
        }
        result
    }
}
