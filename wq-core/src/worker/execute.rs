//! One attempt of one job: run the handler under its timeout, turn the
//! outcome into an acknowledgement, and hand it to the queue's runner.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::FutureExt;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::runner::{Done, Ended};
use super::stats::Stats;
use super::{InFlight, Interrupt, QueueRuntime, Shared};
use crate::Backend;
use crate::handler::{JobContext, JobError, WaitCause};
use crate::job::Job;
use crate::retry::{AttemptEnd, decide};
use crate::store::{Ack, AckAction};

/// Runs one attempt of `job` and reports to `done`.
pub(crate) async fn run<B: Backend>(
    shared: Arc<Shared<B>>,
    queue: Arc<QueueRuntime>,
    job: Job,
    done: Done,
) {
    let span = tracing::info_span!(
        "wq.job",
        queue = %job.queue,
        job.id = %job.id,
        attempt = job.attempt,
        group = job.group.as_ref().map(|g| g.as_str()),
        session = job.session.as_ref().map(|s| s.as_str()),
        tenant = job.tenant.as_deref(),
    );
    let number = job.attempt;
    let ended = attempt(&shared, &queue, job).instrument(span).await;
    // The runner stores the acknowledgement, if any, and frees the slot.
    let _ = done.send(
        ended
            .filter(|_| !shared.control.is_crashed())
            .map(|(ack, cause)| Ended {
                ack,
                attempt: number,
                cause,
            }),
    );
}

/// What to acknowledge, and the cause of a wait the handler asked for; or
/// `None` when the lease was lost.
async fn attempt<B: Backend>(
    shared: &Shared<B>,
    queue: &QueueRuntime,
    job: Job,
) -> Option<(Ack, Option<WaitCause>)> {
    let (id, attempt, max_attempts) = (job.id, job.attempt, job.max_attempts);
    let token = job.lease.as_ref().map_or(0, |l| l.token);
    let cancel = CancellationToken::new();
    let control = &shared.control;
    control.inflight.lock().insert(
        id,
        InFlight {
            token,
            queue: queue.index,
            cancel: cancel.clone(),
            interrupt: None,
        },
    );
    if control.abort_running.is_cancelled() {
        cancel.cancel();
    }
    let ctx = JobContext::new(job, cancel.clone());
    let output = ctx.output_slot();
    let handler = queue.handler.clone().call(ctx);
    let timeout = queue.config.timeout;
    let end = tokio::select! {
        biased;
        r = tokio::time::timeout(timeout, AssertUnwindSafe(handler).catch_unwind()) => Some(match r {
            Ok(Ok(result)) => AttemptEnd::Returned(result),
            Ok(Err(panic)) => AttemptEnd::Panicked(panic_message(panic.as_ref())),
            Err(_) => AttemptEnd::TimedOut(timeout),
        }),
        () = cancel.cancelled() => None,
    };
    let interrupt = control
        .inflight
        .lock()
        .remove(&id)
        .and_then(|f| f.interrupt);
    let cause = match &end {
        Some(AttemptEnd::Returned(Err(JobError::Wait { cause, .. }))) => Some(*cause),
        _ => None,
    };
    let action = match (end, interrupt) {
        (_, Some(Interrupt::LeaseLost)) => {
            tracing::warn!("lease lost; the job will run again elsewhere");
            Stats::bump(&control.stats.lost, 1);
            return None;
        }
        (Some(AttemptEnd::Returned(Ok(()))), _) => AckAction::Complete {
            output: output.lock().take(),
        },
        (Some(end), _) => {
            match &end {
                AttemptEnd::Returned(Err(e @ JobError::Continue { .. })) => {
                    tracing::debug!(outcome = %e, "step done")
                }
                AttemptEnd::Returned(Err(e)) => tracing::warn!(error = %e, "attempt failed"),
                other => tracing::warn!(outcome = ?other, "attempt failed"),
            }
            decide(
                attempt,
                max_attempts,
                end,
                &queue.config.retry,
                shared.clock.now(),
                &mut rand::rng(),
            )
        }
        (None, Some(Interrupt::CancelRequested)) => AckAction::Kill {
            error: "cancelled while running".into(),
        },
        (None, None) => AckAction::Release,
    };
    Some((Ack { id, token, action }, cause))
}

fn panic_message(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic".to_owned())
}
