//! A record of what handlers saw, to check order and overlap afterwards.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use parking_lot::Mutex;
use rand::RngExt;
use serde::{Deserialize, Serialize};
use wq_core::{Backend, Handler, JobContext, JobError, QueueOptions, Worker, WorkerHandle};

use crate::harness::Failure;

/// The payload of ordered test jobs: the `n`th job of group `g`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Step {
    /// The group key.
    pub g: String,
    /// Position in the group, from 0.
    pub n: u32,
    /// What the handler should do: "ok", "fail", "die" (permanent), "block".
    #[serde(default = "ok")]
    pub kind: String,
}

fn ok() -> String {
    "ok".into()
}

impl Step {
    /// A job that succeeds.
    pub fn ok(g: impl Into<String>, n: u32) -> Self {
        Self {
            g: g.into(),
            n,
            kind: ok(),
        }
    }
}

/// Starts, ends and overlaps per group.
#[derive(Debug, Default)]
pub struct Ledger {
    starts: Mutex<HashMap<String, Vec<u32>>>,
    running: Mutex<HashMap<String, u32>>,
    overlaps: AtomicU64,
}

impl Ledger {
    /// A handler started job `n` of group `g`.
    pub fn start(&self, g: &str, n: u32) {
        let mut running = self.running.lock();
        let r = running.entry(g.to_owned()).or_default();
        *r += 1;
        if *r > 1 {
            self.overlaps.fetch_add(1, Ordering::SeqCst);
        }
        self.starts.lock().entry(g.to_owned()).or_default().push(n);
    }

    /// A handler of group `g` finished.
    pub fn end(&self, g: &str) {
        if let Some(r) = self.running.lock().get_mut(g) {
            *r = r.saturating_sub(1);
        }
    }

    /// Times two handlers of one group ran at once.
    pub fn overlaps(&self) -> u64 {
        self.overlaps.load(Ordering::SeqCst)
    }

    /// Starts per group, in order.
    pub fn starts(&self) -> HashMap<String, Vec<u32>> {
        self.starts.lock().clone()
    }

    /// Every group started its jobs in order (a retry may repeat a job, but
    /// never goes back to an earlier one) and never ran two at once.
    pub fn check_fifo(&self) -> Result<(), Failure> {
        if self.overlaps() > 0 {
            return Err(Failure(format!(
                "one in flight per group broken: {} overlapping starts",
                self.overlaps()
            )));
        }
        for (g, starts) in self.starts() {
            if let Some(w) = starts.windows(2).find(|w| w[1] < w[0]) {
                return Err(Failure(format!(
                    "FIFO broken in group {g}: job {} started after job {} (starts: {starts:?})",
                    w[1], w[0]
                )));
            }
        }
        Ok(())
    }
}

/// A handler that records into `ledger`, yields a random 0–3 times so that
/// interleavings really happen, and then does what the step says.
pub fn recording_handler(ledger: Arc<Ledger>) -> impl Handler {
    move |ctx: JobContext| {
        let ledger = ledger.clone();
        async move {
            let step: Step = ctx.payload()?;
            ledger.start(&step.g, step.n);
            let yields = rand::rng().random_range(0..4);
            for _ in 0..yields {
                tokio::task::yield_now().await;
            }
            ledger.end(&step.g);
            match step.kind.as_str() {
                "fail" => Err(JobError::retry(format!(
                    "step {} of {} failed",
                    step.n, step.g
                ))),
                "die" => Err(JobError::permanent("step cannot succeed")),
                _ => Ok(()),
            }
        }
    }
}

/// A handler that counts its starts in `counter` and succeeds.
pub fn counting_handler(counter: Arc<AtomicU32>) -> impl Handler {
    move |_: JobContext| {
        counter.fetch_add(1, Ordering::SeqCst);
        std::future::ready(Ok::<(), JobError>(()))
    }
}

/// Starts a worker for `queue` running `handler` with `concurrency` slots.
pub async fn start_worker<B: Backend>(
    backend: &B,
    queue: &str,
    handler: impl Handler,
    concurrency: usize,
) -> Result<WorkerHandle, Failure> {
    Ok(Worker::new(backend.clone())
        .handle_with(
            queue,
            handler,
            QueueOptions::default().concurrency(concurrency),
        )
        .start()
        .await?)
}
