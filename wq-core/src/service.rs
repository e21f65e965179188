//! Handlers and tower services, both ways: [`ServiceHandler`] runs any
//! `tower::Service<JobContext>` as a handler, [`HandlerService`] makes any
//! [`Handler`] a service, so tower's layers (timeouts, concurrency limits,
//! tracing, metrics) wrap handlers as they wrap HTTP handlers.
//!
//! A layer whose error is not [`JobError`] (tower's timeout, load shedding)
//! boxes it; map it back with `.map_err(JobError::from)` outside that layer
//! (see [`JobError`]'s `From<BoxError>`).

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower::Service;

use crate::handler::{Handler, HandlerFuture, JobContext, JobError};

/// Runs a tower service as a [`Handler`]: the service's readiness is
/// awaited before each job.
///
/// Per job the service is cloned, `poll_ready` is driven on the clone until
/// it is ready, and `call` is made on that same clone: the contract layers
/// such as `ConcurrencyLimit` rely on (a permit is taken by `poll_ready`
/// and spent by `call`). Waiting for readiness is part of the attempt: it
/// holds the worker's slot and counts towards the queue's timeout. A
/// `poll_ready` error fails the attempt like a handler's error.
///
/// ```
/// use std::time::Duration;
/// use tower::ServiceBuilder;
/// use wq::{HandlerService, JobContext, JobError, MemoryStore, ServiceHandler, Worker};
///
/// let handler = |ctx: JobContext| async move {
///     let _text: String = ctx.payload()?;
///     Ok::<(), JobError>(())
/// };
/// let service = ServiceBuilder::new()
///     // Outermost: the timeout's boxed error becomes a retryable JobError.
///     .map_err(JobError::from)
///     .timeout(Duration::from_secs(5))
///     .service(HandlerService::new(handler));
/// let worker = Worker::new(MemoryStore::new()).handle("message", ServiceHandler::new(service));
/// # let _ = worker;
/// ```
#[derive(Clone, Debug)]
pub struct ServiceHandler<S> {
    service: S,
}

impl<S> ServiceHandler<S> {
    /// Runs `service` for each job.
    pub fn new(service: S) -> Self {
        Self { service }
    }
}

impl<S> Handler for ServiceHandler<S>
where
    S: Service<JobContext, Response = (), Error = JobError> + Clone + Send + Sync + 'static,
    S::Future: Send,
{
    fn handle(&self, ctx: JobContext) -> impl Future<Output = Result<(), JobError>> + Send {
        let mut service = self.service.clone();
        async move {
            std::future::poll_fn(|cx| service.poll_ready(cx)).await?;
            service.call(ctx).await
        }
    }
}

/// Makes a [`Handler`] a tower service, so layers wrap it:
/// `ServiceBuilder::new().layer(..).service(HandlerService::new(handler))`.
///
/// Always ready (a handler has no capacity of its own) and cheap to clone
/// whatever the handler is: clones share it.
#[derive(Debug)]
pub struct HandlerService<H> {
    handler: Arc<H>,
}

impl<H> HandlerService<H> {
    /// Serves `handler`.
    pub fn new(handler: H) -> Self {
        Self {
            handler: Arc::new(handler),
        }
    }
}

impl<H> Clone for HandlerService<H> {
    fn clone(&self) -> Self {
        Self {
            handler: self.handler.clone(),
        }
    }
}

impl<H: Handler> Service<JobContext> for HandlerService<H> {
    type Response = ();
    type Error = JobError;
    type Future = HandlerFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), JobError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, ctx: JobContext) -> HandlerFuture {
        let handler = self.handler.clone();
        Box::pin(async move { handler.handle(ctx).await })
    }
}
