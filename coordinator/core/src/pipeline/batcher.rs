//! Cross-image batching: for a function's batch window, the pieces of
//! different jobs bound for that function (an image for face-crop, an
//! image's crops for a classifier) wait to share one invocation.
//!
//! Every invocation pays the request fee, the SDK's work and the function's
//! fixed cost (event, JSON, a model run) whatever its batch, and most images
//! show one or two faces: a queue of such images costs several times less
//! per image when they travel together. The window (default
//! [`crate::config::DEFAULT_BATCH_WINDOW`]) is the most a piece waits; a
//! batch goes as soon as it is full (its items or its bytes). Each job pays
//! its share of the call — its items over the batch's — of the billed time
//! and the request fee.
//!
//! One task per function packs the pieces in arrival order; a piece that
//! would overflow the batch sends the batch and starts the next. Calls run
//! concurrently, under the function's caller (its concurrency cap, rate,
//! retries and breaker). A call that still fails after its retries, with an
//! error its content may have caused (the function crashed, timed out,
//! refused or garbled it: [`InvokeError::may_be_the_content`]), is sent
//! again piece by piece, so one poisonous image fails alone; any other
//! failure (throttled, unreachable, breaker open) fails every piece with
//! the same reason.
//!
//! [`Batched`] says what a function's batch is: [`crate::pipeline::fanout`] and
//! [`crate::pipeline::crop`] implement it.

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::future::join_all;
use lambdex_proto::Report;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::lambda::caller::{Answer, Caller};
use crate::lambda::invoke::InvokeError;
use crate::pipeline::billing::Meter;

/// What one batched function takes and answers.
pub trait Batched: Send + Sync + 'static {
    /// One unit of a batch: a crop, an image.
    type Item: Clone + Send + Sync + 'static;
    type Request: Serialize + Send + Sync + 'static;
    type Response: DeserializeOwned + Send + 'static;
    /// One piece's part of the answer.
    type Part: Send + 'static;

    /// The request bytes `item` takes.
    fn bytes(item: &Self::Item) -> usize;
    fn request(items: Vec<Self::Item>) -> Self::Request;
    /// The answer cut into one part per piece of `sizes` items, in order,
    /// or why it cannot be.
    fn split(response: Self::Response, sizes: &[usize]) -> Result<Vec<Self::Part>, String>;
}

/// When a batch goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Items per call at most.
    pub items: usize,
    /// Request bytes per call at most (a piece over it goes alone).
    pub bytes: usize,
    /// The most a piece waits for others.
    pub window: Duration,
}

/// A function's shared batches.
pub struct Batcher<B: Batched> {
    caller: Arc<Caller>,
    limits: Limits,
    /// The packing task's queue, started on first use (inside the runtime).
    queue: OnceLock<mpsc::UnboundedSender<Piece<B>>>,
}

impl<B: Batched> fmt::Debug for Batcher<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batcher")
            .field("function", &self.caller.function())
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// One job's items, waiting for a batch.
struct Piece<B: Batched> {
    items: Vec<B::Item>,
    bytes: usize,
    reply: oneshot::Sender<Reply<B>>,
}

/// What a piece gets back.
struct Reply<B: Batched> {
    /// Only this piece's part of the answer.
    result: Result<Answer<B::Part>, InvokeError>,
    /// The `REPORT`s of every call the piece was in, each with the piece's
    /// share of it.
    bills: Vec<Bill>,
}

/// The `REPORT` of every attempt of one call, and a piece's share of it.
type Bill = (Arc<Vec<(String, Report)>>, f64);

/// How full a batch is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Load {
    items: usize,
    bytes: usize,
}

impl Load {
    fn of(items: usize, bytes: usize) -> Self {
        Self { items, bytes }
    }

    /// Whether `piece` fits beside what is already in.
    fn admits(self, piece: Load, limits: &Limits) -> bool {
        self.items == 0
            || (self.items + piece.items <= limits.items
                && self.bytes + piece.bytes <= limits.bytes)
    }

    fn is_full(self, limits: &Limits) -> bool {
        self.items >= limits.items || self.bytes >= limits.bytes
    }

    fn add(&mut self, piece: Load) {
        self.items += piece.items;
        self.bytes += piece.bytes;
    }
}

impl<B: Batched> Batcher<B> {
    pub fn new(caller: Arc<Caller>, limits: Limits) -> Self {
        Self {
            caller,
            limits: Limits {
                items: limits.items.max(1),
                ..limits
            },
            queue: OnceLock::new(),
        }
    }

    /// `items` (at most a batch) sent in a call shared with other jobs';
    /// this job's share of every call it was in goes to `meter`.
    pub async fn submit(
        &self,
        items: Vec<B::Item>,
        meter: &Meter,
    ) -> Result<Answer<B::Part>, InvokeError> {
        debug_assert!(items.len() <= self.limits.items);
        let (reply, answer) = oneshot::channel();
        let queue = self.queue.get_or_init(|| {
            let (queue, pieces) = mpsc::unbounded_channel();
            tokio::spawn(pack(Arc::clone(&self.caller), self.limits, pieces));
            queue
        });
        let gone = || InvokeError::BadAnswer {
            function: self.caller.function().to_owned(),
            reason: "the batching task stopped".to_owned(),
        };
        let bytes = items.iter().map(B::bytes).sum();
        queue
            .send(Piece {
                items,
                bytes,
                reply,
            })
            .map_err(|_| gone())?;
        let reply = answer.await.map_err(|_| gone())?;
        for (reports, share) in &reply.bills {
            for (function, report) in reports.iter() {
                meter.record_share(function, report.clone(), *share);
            }
        }
        reply.result
    }
}

/// `items` cut into runs of `sizes` in order; `None` unless they add up.
pub fn cut<T>(items: Vec<T>, sizes: &[usize]) -> Option<Vec<Vec<T>>> {
    if items.len() != sizes.iter().sum::<usize>() {
        return None;
    }
    let mut items = items.into_iter();
    Some(
        sizes
            .iter()
            .map(|size| items.by_ref().take(*size).collect())
            .collect(),
    )
}

/// `items` in a call of their own, billed whole to `meter`.
pub async fn call_alone<B: Batched>(
    caller: &Caller,
    items: Vec<B::Item>,
    meter: &Meter,
) -> Result<Answer<B::Part>, InvokeError> {
    let sizes = [items.len()];
    let answer = caller
        .call::<_, B::Response>(&B::request(items), meter)
        .await;
    let mut parts = answer.and_then(|answer| split::<B>(answer, &sizes))?;
    Ok(parts.remove(0))
}

/// Packs pieces into batches until every sender is gone.
async fn pack<B: Batched>(
    caller: Arc<Caller>,
    limits: Limits,
    mut pieces: mpsc::UnboundedReceiver<Piece<B>>,
) {
    let mut batch: Vec<Piece<B>> = Vec::new();
    let mut load = Load::default();
    let mut deadline = Instant::now();
    let send = |batch: &mut Vec<Piece<B>>, load: &mut Load| {
        tokio::spawn(call(Arc::clone(&caller), std::mem::take(batch)));
        *load = Load::default();
    };
    loop {
        let next = if batch.is_empty() {
            pieces.recv().await
        } else {
            match tokio::time::timeout_at(deadline, pieces.recv()).await {
                Ok(next) => next,
                Err(_window_closed) => {
                    send(&mut batch, &mut load);
                    continue;
                }
            }
        };
        let Some(piece) = next else {
            if !batch.is_empty() {
                send(&mut batch, &mut load);
            }
            return;
        };
        let piece_load = Load::of(piece.items.len(), piece.bytes);
        if !load.admits(piece_load, &limits) {
            send(&mut batch, &mut load);
        }
        if batch.is_empty() {
            deadline = Instant::now() + limits.window;
        }
        load.add(piece_load);
        batch.push(piece);
        if load.is_full(&limits) {
            send(&mut batch, &mut load);
        }
    }
}

/// One shared call; each piece gets its part, or the call's error — or,
/// when the error may come from the batch's content, a call of its own.
async fn call<B: Batched>(caller: Arc<Caller>, pieces: Vec<Piece<B>>) {
    let sizes: Vec<usize> = pieces.iter().map(|piece| piece.items.len()).collect();
    let total = sizes.iter().sum::<usize>().max(1);
    let items = pieces
        .iter()
        .flat_map(|piece| piece.items.iter().cloned())
        .collect();
    let (result, reports) = attempt::<B>(&caller, items, &sizes).await;
    let share = |size: usize| size as f64 / total as f64;
    match result {
        Err(error) if pieces.len() > 1 && error.may_be_the_content() => {
            tracing::warn!(
                function = caller.function(),
                pieces = pieces.len(),
                %error,
                "a shared call failed; its pieces are sent again one by one"
            );
            join_all(pieces.into_iter().map(|piece| {
                let first = (Arc::clone(&reports), share(piece.items.len()));
                alone(&caller, piece, first)
            }))
            .await;
        }
        Err(error) => {
            for piece in pieces {
                let bill = (Arc::clone(&reports), share(piece.items.len()));
                // A job that has gone (its worker stopped) no longer listens.
                let _ = piece.reply.send(Reply {
                    result: Err(error.clone()),
                    bills: vec![bill],
                });
            }
        }
        Ok(parts) => {
            for (piece, part) in pieces.into_iter().zip(parts) {
                let bill = (Arc::clone(&reports), share(piece.items.len()));
                let _ = piece.reply.send(Reply {
                    result: Ok(part),
                    bills: vec![bill],
                });
            }
        }
    }
}

/// A piece of a failed shared call, sent again on its own; it pays its
/// share of the shared call (`first`) and the whole of its own.
async fn alone<B: Batched>(caller: &Caller, piece: Piece<B>, first: Bill) {
    let sizes = [piece.items.len()];
    let (result, reports) = attempt::<B>(caller, piece.items, &sizes).await;
    let _ = piece.reply.send(Reply {
        result: result.map(|mut parts| parts.remove(0)),
        bills: vec![first, (reports, 1.0)],
    });
}

/// One call of `items`, its answer cut into one part per piece of `sizes`
/// items, and the `REPORT` of every attempt.
async fn attempt<B: Batched>(
    caller: &Caller,
    items: Vec<B::Item>,
    sizes: &[usize],
) -> (
    Result<Vec<Answer<B::Part>>, InvokeError>,
    Arc<Vec<(String, Report)>>,
) {
    let meter = Meter::default();
    let answer = caller
        .call::<_, B::Response>(&B::request(items), &meter)
        .await;
    let parts = answer.and_then(|answer| split::<B>(answer, sizes));
    (parts, Arc::new(meter.take()))
}

/// The shared answer cut into one answer per piece of `sizes` items.
fn split<B: Batched>(
    answer: Answer<B::Response>,
    sizes: &[usize],
) -> Result<Vec<Answer<B::Part>>, InvokeError> {
    let Answer {
        response,
        function,
        function_version,
    } = answer;
    let parts = match B::split(response, sizes) {
        Ok(parts) if parts.len() == sizes.len() => parts,
        Ok(parts) => {
            return Err(InvokeError::BadAnswer {
                function,
                reason: format!("{} parts for {} pieces", parts.len(), sizes.len()),
            });
        }
        Err(reason) => return Err(InvokeError::BadAnswer { function, reason }),
    };
    Ok(parts
        .into_iter()
        .map(|response| Answer {
            response,
            function: function.clone(),
            function_version: function_version.clone(),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        items: 4,
        bytes: 1000,
        window: Duration::from_millis(20),
    };

    #[test]
    fn a_piece_joins_a_batch_while_both_its_items_and_its_bytes_fit() {
        let load = Load::of(2, 600);
        assert!(load.admits(Load::of(2, 400), &LIMITS));
        assert!(!load.admits(Load::of(3, 10), &LIMITS), "five items");
        assert!(!load.admits(Load::of(1, 401), &LIMITS), "1001 bytes");
        assert!(!load.is_full(&LIMITS));
        assert!(Load::of(4, 0).is_full(&LIMITS));
        assert!(Load::of(1, 1000).is_full(&LIMITS));
    }

    #[test]
    fn an_answer_is_cut_piece_by_piece_only_when_it_adds_up() {
        assert_eq!(
            cut(vec![1, 2, 3, 4], &[1, 0, 3]),
            Some(vec![vec![1], vec![], vec![2, 3, 4]])
        );
        assert_eq!(cut(vec![1, 2], &[1, 2]), None);
        assert_eq!(cut(vec![1, 2, 3], &[1, 1]), None);
    }

    #[test]
    fn a_piece_over_the_limits_still_goes_alone() {
        assert!(Load::default().admits(Load::of(9, 5000), &LIMITS));
    }
}
