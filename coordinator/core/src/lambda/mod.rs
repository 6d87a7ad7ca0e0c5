//! Calling a Lambda function: the one SDK [`client`], a [`caller`] per
//! configured function (concurrency cap, rate, classified retries within a
//! budget, the [`breaker`], the fallback), and one [`invoke`] per attempt,
//! the only place that decides what an invocation's failure means.

pub mod breaker;
pub mod caller;
pub mod client;
pub mod invoke;
