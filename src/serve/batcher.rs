//! One worker that classifies whatever images are waiting as one batch.
//!
//! Requests decode their images in parallel, then hand each decoded row to a bounded queue.
//! The worker takes the first row waiting and everything queued behind it (up to a batch
//! limit), runs [`Model::predict`] once on the stacked rows and answers each row's sender.
//! Many small requests arriving together thus cost one matrix product, not one each. The
//! queue's capacity bounds the memory held by rows waiting; when it is full, [`Batcher::submit`]
//! says so at once and the caller answers "busy" rather than queueing without end.

use super::metrics::Metrics;
use crate::device::Forward;
use crate::model::{Model, Predictions};
use ndarray::{Array2, s};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// One decoded image waiting for its prediction.
struct Job {
    /// `(features,)` bytes, in the model's preprocessing.
    row: Vec<u8>,
    /// Where its one-row [`Predictions`] go.
    reply: oneshot::Sender<Predictions>,
}

/// The queue is full: try again shortly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy;

/// The sending side of the queue; cheap to share between requests.
#[derive(Debug, Clone)]
pub struct Batcher {
    queue: mpsc::Sender<Job>,
    features: usize,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Job({} bytes)", self.row.len())
    }
}

impl Batcher {
    /// Starts the worker thread for `model` with a queue of `capacity` rows and batches of at
    /// most `max_batch` rows, counting queue depth, batch sizes and images in `metrics`. The
    /// worker ends when every [`Batcher`] clone is dropped; join the returned handle to wait
    /// for it.
    ///
    /// # Errors
    /// If the operating system refuses a thread.
    pub fn start(
        (model, forward): (Arc<Model>, Option<Box<dyn Forward>>),
        capacity: usize,
        max_batch: usize,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<(Self, std::thread::JoinHandle<()>)> {
        let (queue, jobs) = mpsc::channel(capacity.max(1));
        let features = model.preprocess.features();
        let counted = Arc::clone(&metrics);
        let worker = std::thread::Builder::new()
            .name("deepcat-batcher".into())
            .spawn(move || {
                let model = Running {
                    model: &model,
                    forward: forward.as_deref(),
                };
                work(model, jobs, max_batch.max(1), &counted)
            })?;
        let batcher = Batcher {
            queue,
            features,
            metrics,
        };
        Ok((batcher, worker))
    }

    /// Queues `row` and returns where its prediction will arrive.
    ///
    /// # Errors
    /// [`Busy`] when the queue is full (or the worker has stopped).
    ///
    /// # Panics
    /// If `row` does not have the model's feature count (rows come from its own preprocessing).
    pub fn submit(&self, row: Vec<u8>) -> Result<oneshot::Receiver<Predictions>, Busy> {
        assert_eq!(row.len(), self.features, "a row of the model's features");
        let (reply, answer) = oneshot::channel();
        // Counted before it is sent, so the worker's decrement never comes first.
        self.metrics.queue_depth.inc();
        if self.queue.try_send(Job { row, reply }).is_err() {
            self.metrics.queue_depth.dec();
            return Err(Busy);
        }
        Ok(answer)
    }
}

/// The model the worker runs, and where (its inference pass on a device, or `None` for the
/// CPU).
#[derive(Clone, Copy)]
struct Running<'m> {
    model: &'m Model,
    forward: Option<&'m dyn Forward>,
}

/// The worker's loop: wait for a row, take all that wait behind it, classify, answer.
fn work(running: Running<'_>, mut jobs: mpsc::Receiver<Job>, max_batch: usize, metrics: &Metrics) {
    let model = running.model;
    let features = model.preprocess.features();
    while let Some(first) = jobs.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < max_batch {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let n = batch.len();
        metrics.queue_depth.dec_by(n as i64);
        metrics.batch_size.observe(n as f64);
        let mut data = Vec::with_capacity(n * features);
        for job in &batch {
            data.extend_from_slice(&job.row);
        }
        let Ok(x) = Array2::from_shape_vec((batch.len(), features), data) else {
            unreachable!("every row was checked to have {features} bytes in submit");
        };
        let predictions = match model.predict_on(x.view(), running.forward) {
            Ok(p) => p,
            Err(e) => {
                // The requests' replies are dropped: each is answered as an internal error.
                eprintln!("deepcat serve: cannot classify a batch of {n}: {e}");
                continue;
            }
        };
        for (i, job) in batch.into_iter().enumerate() {
            let one = Predictions {
                probabilities: predictions.probabilities.slice(s![i..=i, ..]).to_owned(),
                classes: vec![predictions.classes[i]],
            };
            // The request may have gone (client closed): nothing to answer then.
            let _ = job.reply.send(one);
        }
        metrics.images_classified.inc_by(n as u64);
    }
}
