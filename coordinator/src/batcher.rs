//! Cross-image batching: for a model's batch window, the crops of
//! different images bound for that model wait to share one invocation.
//!
//! Every invocation pays the request fee and the function's fixed cost
//! (event, JSON, a model run) whatever its batch, and most images show one
//! or two faces: a queue of such images costs several times less per face
//! when their crops travel together. The window (default
//! [`crate::config::DEFAULT_BATCH_WINDOW`]) is the most a crop waits; a batch
//! goes as soon as it is full. Each image pays its share of the call —
//! its crops over the batch's — of the billed time and the request fee.
//!
//! One task per model packs the pieces (an image's crops, at most a batch)
//! in arrival order; a piece that would overflow the batch sends the batch
//! and starts the next. Calls run concurrently, under the model's caller
//! (its concurrency cap, rate, retries and breaker). A failed call fails
//! every image in it, with the same reason.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use lambdex_lambdas::local::Report;
use lambdex_proto::{Base64Text, ClassifyRequest, ClassifyResponse, Crop};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::billing::Meter;
use crate::caller::{Answer, Caller};
use crate::invoke::InvokeError;

/// A model's shared batches.
#[derive(Debug)]
pub struct Batcher {
    caller: Arc<Caller>,
    batch_size: usize,
    window: Duration,
    /// The packing task's queue, started on first use (inside the runtime).
    queue: OnceLock<mpsc::UnboundedSender<Piece>>,
}

/// One image's crops, waiting for a batch.
#[derive(Debug)]
struct Piece {
    crops: Vec<Crop<Base64Text>>,
    reply: oneshot::Sender<Reply>,
}

/// What a piece gets back from its batch's call.
#[derive(Debug)]
struct Reply {
    /// Only this piece's predictions, in its crop order.
    result: Result<Answer<ClassifyResponse>, InvokeError>,
    /// The `REPORT` of every attempt of the shared call.
    reports: Arc<Vec<(String, Report)>>,
    /// This piece's crops over the batch's.
    share: f64,
}

impl Batcher {
    /// Batches of up to `batch_size` crops, each sent at most `window`
    /// after its first crop arrived.
    pub fn new(caller: Arc<Caller>, batch_size: usize, window: Duration) -> Self {
        Self {
            caller,
            batch_size: batch_size.max(1),
            window,
            queue: OnceLock::new(),
        }
    }

    /// Classifies `crops` (at most a batch) in a call shared with other
    /// images; this image's share of the call's bill goes to `meter`.
    pub async fn classify(
        &self,
        crops: Vec<Crop<Base64Text>>,
        meter: &Meter,
    ) -> Result<Answer<ClassifyResponse>, InvokeError> {
        debug_assert!(crops.len() <= self.batch_size);
        let (reply, answer) = oneshot::channel();
        let queue = self.queue.get_or_init(|| {
            let (queue, pieces) = mpsc::unbounded_channel();
            tokio::spawn(pack(
                Arc::clone(&self.caller),
                self.batch_size,
                self.window,
                pieces,
            ));
            queue
        });
        let gone = || InvokeError::BadAnswer {
            function: self.caller.function().to_owned(),
            reason: "the batching task stopped".to_owned(),
        };
        queue.send(Piece { crops, reply }).map_err(|_| gone())?;
        let reply = answer.await.map_err(|_| gone())?;
        for (function, report) in reply.reports.iter() {
            meter.record_share(function, report.clone(), reply.share);
        }
        reply.result
    }
}

/// Packs pieces into batches until every sender is gone.
async fn pack(
    caller: Arc<Caller>,
    batch_size: usize,
    window: Duration,
    mut pieces: mpsc::UnboundedReceiver<Piece>,
) {
    let mut batch: Vec<Piece> = Vec::new();
    let mut crops = 0;
    let mut deadline = Instant::now();
    loop {
        let next = if batch.is_empty() {
            pieces.recv().await
        } else {
            match tokio::time::timeout_at(deadline, pieces.recv()).await {
                Ok(next) => next,
                Err(_window_closed) => {
                    tokio::spawn(call(Arc::clone(&caller), std::mem::take(&mut batch)));
                    crops = 0;
                    continue;
                }
            }
        };
        let Some(piece) = next else {
            if !batch.is_empty() {
                call(caller, batch).await;
            }
            return;
        };
        if crops + piece.crops.len() > batch_size {
            tokio::spawn(call(Arc::clone(&caller), std::mem::take(&mut batch)));
            crops = 0;
        }
        if batch.is_empty() {
            deadline = Instant::now() + window;
        }
        crops += piece.crops.len();
        batch.push(piece);
        if crops >= batch_size {
            tokio::spawn(call(Arc::clone(&caller), std::mem::take(&mut batch)));
            crops = 0;
        }
    }
}

/// One shared call; each piece gets its predictions, or the call's error.
async fn call(caller: Arc<Caller>, mut pieces: Vec<Piece>) {
    let sizes: Vec<usize> = pieces.iter().map(|piece| piece.crops.len()).collect();
    let total: usize = sizes.iter().sum();
    let request = ClassifyRequest {
        crops: pieces
            .iter_mut()
            .flat_map(|piece| std::mem::take(&mut piece.crops))
            .collect(),
    };
    let meter = Meter::default();
    let answer = caller
        .call::<_, ClassifyResponse>(&request, &meter)
        .await
        .and_then(|answer| {
            let got = answer.response.predictions.len();
            if got == total {
                Ok(answer)
            } else {
                Err(InvokeError::BadAnswer {
                    function: answer.function,
                    reason: format!("{got} predictions for {total} crops"),
                })
            }
        });
    let reports = Arc::new(meter.take());
    let mut results = split(answer, &sizes).into_iter();
    for (piece, size) in pieces.into_iter().zip(&sizes) {
        let result = results.next().expect("one result per piece");
        // A job that has gone (its worker stopped) no longer listens.
        let _ = piece.reply.send(Reply {
            result,
            reports: Arc::clone(&reports),
            share: *size as f64 / total.max(1) as f64,
        });
    }
}

/// The shared answer cut into one answer per piece of `sizes` crops.
fn split(
    answer: Result<Answer<ClassifyResponse>, InvokeError>,
    sizes: &[usize],
) -> Vec<Result<Answer<ClassifyResponse>, InvokeError>> {
    match answer {
        Err(error) => sizes.iter().map(|_| Err(error.clone())).collect(),
        Ok(answer) => {
            let mut predictions = answer.response.predictions.into_iter();
            sizes
                .iter()
                .map(|size| {
                    Ok(Answer {
                        response: ClassifyResponse {
                            model: answer.response.model.clone(),
                            predictions: predictions.by_ref().take(*size).collect(),
                            timings: answer.response.timings,
                        },
                        function: answer.function.clone(),
                        function_version: answer.function_version.clone(),
                    })
                })
                .collect()
        }
    }
}
