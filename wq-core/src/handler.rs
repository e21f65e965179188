//! The [`Handler`] trait a worker runs for each job, and what it may return.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use crate::attempt::MAX_OUTPUT;
use crate::error::{BoxError, ValidationError};
use crate::job::{Job, JobId, Payload};

/// Why an attempt failed, and so what happens next; or, for
/// [`JobError::Continue`], that it ended a step and the job goes on later.
///
/// More outcomes may join, so a `match` needs a wildcard arm; layers above
/// the core map their own error classes onto these (a transport's rate limit
/// or lost connection becomes [`JobError::Wait`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JobError {
    /// Try again after `after`, or after the queue's backoff; spends an attempt.
    #[error("{reason}")]
    Retryable {
        /// What went wrong.
        reason: String,
        /// A wait chosen by the handler instead of the queue's backoff.
        after: Option<Duration>,
    },
    /// Not the job's fault, and not now: the other side is throttling, or
    /// something the job needs is unavailable. Runs again after `after`, or
    /// after the queue's [`RetryPolicy::disconnected_delay`], without
    /// spending an attempt.
    ///
    /// [`RetryPolicy::disconnected_delay`]: crate::RetryPolicy::disconnected_delay
    #[error("{reason}")]
    Wait {
        /// Why the job waits.
        reason: String,
        /// How long, when the other side said; `None` waits the queue's delay.
        after: Option<Duration>,
        /// What kind of wait, kept apart in the job's events.
        cause: WaitCause,
    },
    /// Not a failure: the handler finished one step and the job continues
    /// at `step` after `after`. No attempt is spent, `last_error` is left
    /// alone, and the job stays its group's head (nothing behind it
    /// starts), but the worker's slot is free at once: a job that waits
    /// between steps holds no handler. The next run reads the step with
    /// [`JobContext::step`]; a failure after it retries the same step.
    ///
    /// A step of more than [`MAX_STEP`](crate::validate::MAX_STEP) bytes,
    /// blank, or with control characters fails the attempt instead (as a
    /// retryable failure naming the field).
    #[error("continue at step `{step}` after {after:?}")]
    Continue {
        /// The step the next run starts at.
        step: String,
        /// How long until it runs.
        after: Duration,
    },
    /// Will never succeed (invalid input, bad payload): straight to dead.
    #[error("{reason}")]
    Permanent {
        /// What went wrong.
        reason: String,
    },
}

/// Why a job waits without spending an attempt ([`JobError::Wait`]): told
/// apart in its [`Deferral`](crate::Deferral) events, so that an operator
/// sees a throttled number from a disconnected one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WaitCause {
    /// The other side throttles: a rate limit or quota.
    RateLimited,
    /// The other side cannot be reached: a connection or session is down.
    Disconnected,
    /// What the job needs is paused on purpose.
    Paused,
    /// Anything else.
    Other,
}

impl JobError {
    /// A failure worth retrying with the queue's backoff.
    pub fn retry(reason: impl Into<String>) -> Self {
        JobError::Retryable {
            reason: reason.into(),
            after: None,
        }
    }

    /// A failure worth retrying after `after`.
    pub fn retry_after(reason: impl Into<String>, after: Duration) -> Self {
        JobError::Retryable {
            reason: reason.into(),
            after: Some(after),
        }
    }

    /// A wait of the queue's [`RetryPolicy::disconnected_delay`] that spends
    /// no attempt.
    ///
    /// [`RetryPolicy::disconnected_delay`]: crate::RetryPolicy::disconnected_delay
    pub fn wait(reason: impl Into<String>) -> Self {
        Self::wait_because(WaitCause::Other, reason, None)
    }

    /// A wait of `after` that spends no attempt.
    pub fn wait_for(reason: impl Into<String>, after: Duration) -> Self {
        Self::wait_because(WaitCause::Other, reason, Some(after))
    }

    /// A wait for `cause` that spends no attempt: of `after`, or of the
    /// queue's [`RetryPolicy::disconnected_delay`] when `None`.
    ///
    /// [`RetryPolicy::disconnected_delay`]: crate::RetryPolicy::disconnected_delay
    pub fn wait_because(
        cause: WaitCause,
        reason: impl Into<String>,
        after: Option<Duration>,
    ) -> Self {
        JobError::Wait {
            reason: reason.into(),
            after,
            cause,
        }
    }

    /// Not a failure: continue the job at `step` after `after`, freeing
    /// the worker's slot meanwhile (see [`JobError::Continue`]).
    pub fn continue_at(step: impl Into<String>, after: Duration) -> Self {
        JobError::Continue {
            step: step.into(),
            after,
        }
    }

    /// A failure that retrying cannot fix.
    pub fn permanent(reason: impl Into<String>) -> Self {
        JobError::Permanent {
            reason: reason.into(),
        }
    }
}

/// The error of a tower layer that boxes errors (timeout, load shedding,
/// `BoxService`), mapped back: a boxed [`JobError`] (the handler's own,
/// passed through the layer) is restored as it was; anything else is
/// retryable with the queue's backoff, its message kept. So a tower
/// timeout spends an attempt and backs off, never kills the job: a layer
/// cannot tell a slow bridge from a bad job.
///
/// Apply it outside the layer: `ServiceBuilder::new().map_err(JobError::from)`
/// `.timeout(..)`; a layer whose error needs another class (e.g. load
/// shedding as a [`JobError::Wait`]) gets its own `map_err` closure.
impl From<BoxError> for JobError {
    fn from(e: BoxError) -> Self {
        match e.downcast::<JobError>() {
            Ok(job) => *job,
            Err(other) => JobError::retry(other.to_string()),
        }
    }
}

/// Output that cannot be valid ([`JobContext::set_output`]) is not fixed by
/// retrying: a permanent failure naming the field.
impl From<ValidationError> for JobError {
    fn from(e: ValidationError) -> Self {
        JobError::permanent(e.to_string())
    }
}

/// What a handler gets: the job, a way to learn that it should stop, and a
/// place for the output its success stores.
#[derive(Debug, Clone)]
pub struct JobContext {
    job: Job,
    cancel: CancellationToken,
    output: OutputSlot,
}

/// Where a run's output waits for the acknowledgement that stores it;
/// shared by the clones of one run's context.
pub(crate) type OutputSlot = Arc<Mutex<Option<Payload>>>;

impl JobContext {
    /// A context for `job`; `cancel` fires when the handler should stop.
    pub fn new(job: Job, cancel: CancellationToken) -> Self {
        Self {
            job,
            cancel,
            output: OutputSlot::default(),
        }
    }

    /// Where this run's output goes, for the worker to read once the
    /// handler returns.
    pub(crate) fn output_slot(&self) -> OutputSlot {
        self.output.clone()
    }

    /// Stores `value` with the job if this run succeeds: a send's receipt,
    /// say. It is read back as [`Job::output`] and carried by the
    /// [`Completed`](crate::EventKind::Completed) event; a run that fails
    /// stores nothing. A later call replaces an earlier one.
    ///
    /// Refused, with nothing set, when `value` does not serialize or its
    /// JSON exceeds [`MAX_OUTPUT`] bytes; `?` turns that into a
    /// permanent failure in a handler.
    pub fn set_output<T: Serialize + ?Sized>(&self, value: &T) -> Result<(), ValidationError> {
        let output = Payload::from_json(value)
            .map_err(|e| ValidationError::new("output", format!("does not serialize: {e}")))?;
        if output.len() > MAX_OUTPUT {
            return Err(ValidationError::new(
                "output",
                format!(
                    "{} bytes of JSON, over the {MAX_OUTPUT} allowed",
                    output.len()
                ),
            ));
        }
        *self.output.lock() = Some(output);
        Ok(())
    }

    /// The job as claimed.
    pub fn job(&self) -> &Job {
        &self.job
    }

    /// The job's stable id: the same on every attempt, so an effect keyed by
    /// it is not repeated by a retry after a lost acknowledgement.
    pub fn id(&self) -> JobId {
        self.job.id
    }

    /// The attempt now running (1 for the first).
    pub fn attempt(&self) -> u32 {
        self.job.attempt
    }

    /// The step an earlier run said to continue at (see
    /// [`JobError::Continue`]); `None` before any.
    pub fn step(&self) -> Option<&str> {
        self.job.step.as_deref()
    }

    /// Decodes the payload; a payload that does not decode is a permanent
    /// failure (retrying cannot fix it).
    pub fn payload<T: DeserializeOwned>(&self) -> Result<T, JobError> {
        self.job
            .payload
            .decode()
            .map_err(|e| JobError::permanent(format!("payload does not decode: {e}")))
    }

    /// Whether the handler has been asked to stop (lease lost, job
    /// cancelled, worker shutting down).
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Resolves when the handler is asked to stop.
    pub async fn cancelled(&self) {
        self.cancel.cancelled().await
    }
}

/// Runs one job. Implemented for every `Fn(JobContext) -> impl Future`.
///
/// A handler that wants its payload decoded is a
/// [`TypedHandler`](crate::TypedHandler); one under tower layers is a
/// [`HandlerService`](crate::HandlerService) wrapped, then run by a
/// [`ServiceHandler`](crate::ServiceHandler).
///
/// Handlers run at least once per job: a worker that dies mid-run loses its
/// lease and the job runs again, so effects should be idempotent or keyed by
/// [`JobContext::id`].
pub trait Handler: Send + Sync + 'static {
    /// Handles one attempt of a job.
    fn handle(&self, ctx: JobContext) -> impl Future<Output = Result<(), JobError>> + Send;
}

impl<F, Fut> Handler for F
where
    F: Fn(JobContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), JobError>> + Send + 'static,
{
    fn handle(&self, ctx: JobContext) -> impl Future<Output = Result<(), JobError>> + Send {
        self(ctx)
    }
}

/// The boxed future of a handler run as a tower service: a service must
/// name its future's type, and a handler's own future has no name.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<(), JobError>> + Send>>;

/// A handler behind a pointer, so one worker can serve queues with
/// different handler types.
pub(crate) trait DynHandler: Send + Sync + 'static {
    fn call(self: Arc<Self>, ctx: JobContext) -> HandlerFuture;
}

impl<H: Handler> DynHandler for H {
    fn call(self: Arc<Self>, ctx: JobContext) -> HandlerFuture {
        Box::pin(async move { self.handle(ctx).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Timestamp;

    fn context() -> JobContext {
        let job = Job::new(
            JobId::new(),
            "q".into(),
            Payload::from_trusted("1"),
            Timestamp::EPOCH,
        );
        JobContext::new(job, CancellationToken::new())
    }

    #[test]
    fn the_last_output_set_is_kept_across_clones() {
        let ctx = context();
        ctx.set_output(&1).expect("small");
        ctx.clone().set_output(&"receipt").expect("small");
        let kept = ctx.output_slot().lock().clone();
        assert_eq!(
            kept.map(|p| p.as_str().to_owned()),
            Some(r#""receipt""#.into())
        );
    }

    #[test]
    fn an_output_over_the_limit_is_refused_naming_the_field() {
        let ctx = context();
        ctx.set_output(&"kept").expect("small");
        let big = "x".repeat(MAX_OUTPUT);
        let err = ctx.set_output(&big).expect_err("over the limit");
        assert_eq!(err.field, "output");
        let kept = ctx.output_slot().lock().clone();
        assert_eq!(
            kept.map(|p| p.as_str().to_owned()),
            Some(r#""kept""#.into())
        );
        let failure = JobError::from(err);
        assert!(matches!(failure, JobError::Permanent { .. }), "{failure:?}");
    }
}
