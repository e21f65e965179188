//! Typed jobs: a payload type that knows its queue and default options,
//! so callers enqueue the value itself and handlers receive it decoded.
//!
//! The untyped API ([`Enqueue::new`], [`Worker::handle`](crate::Worker::handle)
//! with [`JobContext::payload`]) stays beside it; both store the same JSON,
//! so a queue may be fed by either.

use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::client::Enqueue;
use crate::error::ValidationError;
use crate::handler::{Handler, HandlerFuture, JobContext, JobError};

/// A payload type tied to its queue: `client.enqueue(job)` needs no queue
/// string and [`Worker::handle_typed`](crate::Worker::handle_typed) no
/// decoding.
///
/// The queue is a constant because a worker registers a type's handler
/// before any value exists; a type sent to several queues uses
/// [`Enqueue::new`] for the others.
///
/// ```
/// use std::time::Duration;
/// use serde::{Deserialize, Serialize};
/// use wq::{Enqueue, QueueConfig, Timestamp, TypedJob};
///
/// #[derive(Serialize, Deserialize)]
/// struct SendText {
///     instance: String,
///     to: String,
///     text: String,
/// }
///
/// impl TypedJob for SendText {
///     const QUEUE: &'static str = "message";
///
///     // In order per contact, under the sending number's limits.
///     fn options(&self, job: Enqueue) -> Enqueue {
///         job.group(format!("{}:{}", self.instance, self.to))
///             .session(self.instance.as_str())
///     }
/// }
///
/// let send = SendText { instance: "inst-1".into(), to: "5511999998888".into(), text: "Olá!".into() };
/// // `client.enqueue(send)` stores it as is; a per-call change starts from the defaults:
/// let job = Enqueue::of(&send)
///     .delay(Duration::from_secs(2))
///     .build(&QueueConfig::new("message"), Timestamp::from_millis(0))?;
/// assert_eq!(job.group.unwrap().as_str(), "inst-1:5511999998888");
/// # Ok::<(), wq::ValidationError>(())
/// ```
pub trait TypedJob: Serialize + DeserializeOwned + Send + 'static {
    /// The queue every job of this type goes to and is handled from.
    const QUEUE: &'static str;

    /// The options every job of this type gets (group, session, priority,
    /// idempotency key...), usually read from the payload. Per-call changes
    /// made on [`Enqueue::of`] apply after these.
    fn options(&self, job: Enqueue) -> Enqueue {
        job
    }

    /// The type's own rules, checked before it is serialized: a refusal is
    /// returned, naming its field, when the job is enqueued, and nothing is
    /// stored.
    fn validate(&self) -> Result<(), ValidationError> {
        Ok(())
    }
}

impl Enqueue {
    /// A job carrying `job` to its type's queue with the type's default
    /// options, ready for per-call changes (`.delay(..)`, `.priority(..)`).
    ///
    /// A value that fails [`TypedJob::validate`] or does not serialize is
    /// refused when enqueued (the latter naming the field `payload`).
    pub fn of<J: TypedJob>(job: &J) -> Self {
        let base = match job.validate() {
            Ok(()) => Enqueue::new(J::QUEUE, job),
            Err(e) => Enqueue::checked(J::QUEUE, Err(e)),
        };
        job.options(base)
    }
}

/// What [`Client::enqueue`](crate::Client::enqueue) and
/// [`Client::enqueue_many`](crate::Client::enqueue_many) accept: an
/// [`Enqueue`] as built, or any [`TypedJob`] value with its defaults.
pub trait IntoEnqueue {
    /// The job to enqueue.
    fn into_enqueue(self) -> Enqueue;
}

impl IntoEnqueue for Enqueue {
    fn into_enqueue(self) -> Enqueue {
        self
    }
}

impl<J: TypedJob> IntoEnqueue for J {
    fn into_enqueue(self) -> Enqueue {
        Enqueue::of(&self)
    }
}

/// A [`Handler`] for the jobs of `J`'s queue that receives the payload
/// decoded; what [`Worker::handle_typed`](crate::Worker::handle_typed)
/// registers.
///
/// A payload that does not decode as `J` fails the attempt exactly as
/// [`JobContext::payload`] does on the untyped path: a permanent failure,
/// so the job goes to dead without a retry. The handler is not called.
///
/// It is also a tower `Service`, and cheap to clone whatever `F` is (the
/// function is shared), so tower layers wrap it directly.
pub struct TypedHandler<J, F> {
    f: Arc<F>,
    job: PhantomData<fn() -> J>,
}

impl<J, F> TypedHandler<J, F> {
    /// Runs `f` with each job's decoded payload and its context.
    pub fn new(f: F) -> Self {
        Self {
            f: Arc::new(f),
            job: PhantomData,
        }
    }
}

impl<J, F> Clone for TypedHandler<J, F> {
    fn clone(&self) -> Self {
        Self {
            f: self.f.clone(),
            job: PhantomData,
        }
    }
}

impl<J, F> std::fmt::Debug for TypedHandler<J, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TypedHandler")
            .field("job", &std::any::type_name::<J>())
            .finish_non_exhaustive()
    }
}

impl<J, F, Fut> Handler for TypedHandler<J, F>
where
    J: TypedJob,
    F: Fn(J, JobContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), JobError>> + Send + 'static,
{
    fn handle(&self, ctx: JobContext) -> impl Future<Output = Result<(), JobError>> + Send {
        decode_and_run(self.f.clone(), ctx)
    }
}

impl<J, F, Fut> tower::Service<JobContext> for TypedHandler<J, F>
where
    J: TypedJob,
    F: Fn(J, JobContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), JobError>> + Send + 'static,
{
    type Response = ();
    type Error = JobError;
    type Future = HandlerFuture;

    /// Always ready: a handler has no capacity of its own; the worker's
    /// concurrency and any layer's limits bound it.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), JobError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, ctx: JobContext) -> HandlerFuture {
        Box::pin(decode_and_run(self.f.clone(), ctx))
    }
}

async fn decode_and_run<J, F, Fut>(f: Arc<F>, ctx: JobContext) -> Result<(), JobError>
where
    J: TypedJob,
    F: Fn(J, JobContext) -> Fut,
    Fut: Future<Output = Result<(), JobError>>,
{
    let job: J = ctx.payload()?;
    f(job, ctx).await
}
