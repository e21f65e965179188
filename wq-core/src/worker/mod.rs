//! The engine: a worker pool that claims in batches, runs at most
//! `concurrency` handlers per queue, heartbeats their leases, enforces the
//! per-attempt timeout, applies retries and the dead-letter queue, and shuts
//! down gracefully.
//!
//! ```
//! use std::time::Duration;
//! use wq::{Client, Enqueue, JobContext, JobError, MemoryStore, QueueConfig, Worker};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), wq::Error> {
//! let store = MemoryStore::new();
//! let client = Client::new(store.clone());
//! client.declare_queue(QueueConfig::new("message")).await?;
//! client.enqueue(Enqueue::new("message", &"hello").group("customer-42")).await?;
//!
//! let worker = Worker::new(store)
//!     .handle("message", |job: JobContext| async move {
//!         let text: String = job.payload()?;
//!         assert_eq!(text, "hello");
//!         Ok::<(), JobError>(())
//!     })
//!     .start()
//!     .await?;
//! # while client.counts("message").await?.completed == 0 {
//! #     tokio::time::sleep(Duration::from_millis(5)).await;
//! # }
//! worker.shutdown(Duration::from_secs(5)).await;
//! # Ok(())
//! # }
//! ```

mod execute;
mod lease;
mod maintenance;
mod runner;
mod stats;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
#[cfg(feature = "test-util")]
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use maintenance::LEADER_LOCK;
pub use stats::WorkerStats;

use crate::Backend;
use crate::error::{Error, ValidationError};
use crate::events::Events;
use crate::handler::{DynHandler, Handler, JobContext, JobError};
use crate::job::JobId;
use crate::name::QueueName;
use crate::queue::QueueConfig;
use crate::repeat::Repeat;
use crate::service::ServiceHandler;
use crate::time::{SharedClock, SystemClock};
use crate::typed::{TypedHandler, TypedJob};
use crate::validate;

/// Per-queue options of one worker, overriding the queue's settings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueOptions {
    /// Handlers run at once for this queue (default: the queue's concurrency).
    pub concurrency: Option<usize>,
    /// Most jobs claimed per round trip (default: the concurrency).
    pub claim_batch: Option<usize>,
}

impl QueueOptions {
    /// Sets the concurrency.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = Some(n);
        self
    }

    /// Sets the claim batch size.
    pub fn claim_batch(mut self, n: usize) -> Self {
        self.claim_batch = Some(n);
        self
    }
}

struct Binding {
    queue: QueueName,
    handler: Arc<dyn DynHandler>,
    options: QueueOptions,
}

/// Builds and starts a worker. See the [module docs](self).
pub struct Worker<B> {
    backend: B,
    clock: SharedClock,
    id: Option<Arc<str>>,
    bindings: Vec<Binding>,
    repeats: Vec<Repeat>,
    poll_interval: Duration,
    maintenance: bool,
    leader_lease: Option<Duration>,
    audit_every: Option<Duration>,
    prune_every: Duration,
    events: Option<Events>,
}

impl<B: Backend> Worker<B> {
    /// A worker over `backend` with no queues yet.
    pub fn new(backend: B) -> Self {
        Self {
            backend,
            clock: SystemClock::shared(),
            id: None,
            bindings: Vec::new(),
            repeats: Vec::new(),
            poll_interval: Duration::from_secs(5),
            maintenance: true,
            leader_lease: None,
            audit_every: Some(Duration::from_secs(60)),
            prune_every: maintenance::PRUNE_EVERY,
            events: None,
        }
    }

    /// Tells `events` of every attempt this worker starts and of how each
    /// ended, once the store has applied it.
    pub fn events(mut self, events: Events) -> Self {
        self.events = Some(events);
        self
    }

    /// Reads `clock` instead of the system clock.
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// Names the worker (default: `worker-` and a random id); shown in leases.
    pub fn id(mut self, id: impl Into<Arc<str>>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Runs `handler` for the jobs of `queue`.
    pub fn handle(self, queue: impl Into<QueueName>, handler: impl Handler) -> Self {
        self.handle_with(queue, handler, QueueOptions::default())
    }

    /// Runs `handler` for the jobs of `queue`, with options.
    pub fn handle_with(
        mut self,
        queue: impl Into<QueueName>,
        handler: impl Handler,
        options: QueueOptions,
    ) -> Self {
        self.bindings.push(Binding {
            queue: queue.into(),
            handler: Arc::new(handler),
            options,
        });
        self
    }

    /// Runs `handler` for the jobs of `J`'s queue, with each payload
    /// decoded as `J` (see [`TypedHandler`]); options go through
    /// [`Worker::handle_with`] and `TypedHandler::new`.
    pub fn handle_typed<J: TypedJob, Fut>(
        self,
        handler: impl Fn(J, JobContext) -> Fut + Send + Sync + 'static,
    ) -> Self
    where
        Fut: Future<Output = Result<(), JobError>> + Send + 'static,
    {
        self.handle(J::QUEUE, TypedHandler::new(handler))
    }

    /// Runs a tower service for the jobs of `queue` (see
    /// [`ServiceHandler`]), e.g. a handler wrapped in layers.
    pub fn service<S>(self, queue: impl Into<QueueName>, service: S) -> Self
    where
        S: tower::Service<JobContext, Response = (), Error = JobError>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send,
    {
        self.handle(queue, ServiceHandler::new(service))
    }

    /// Enqueues `repeat`'s job once per slot while this worker leads
    /// maintenance. Every worker of a deployment may register the same
    /// schedules: each slot is enqueued once.
    pub fn repeat(mut self, repeat: Repeat) -> Self {
        self.repeats.push(repeat);
        self
    }

    /// The slow fallback poll, for wake-ups a backend could not deliver
    /// (default 5 s).
    pub fn poll_interval(mut self, every: Duration) -> Self {
        self.poll_interval = every;
        self
    }

    /// Whether this worker takes part in leader election for rescue,
    /// promotion and pruning (default on).
    pub fn maintenance(mut self, enabled: bool) -> Self {
        self.maintenance = enabled;
        self
    }

    /// How long the maintenance leader's lock lasts unless renewed (default:
    /// the shortest lease of the queues this worker serves, within 500 ms to
    /// 10 s). When the leader dies, nobody rescues its jobs until the lock
    /// lapses, so a lock no longer than a job lease lets them run again
    /// about one lease after the crash. The leader renews it three times
    /// per lease at least; at least 100 ms.
    pub fn leader_lease(mut self, ttl: Duration) -> Self {
        self.leader_lease = Some(ttl);
        self
    }

    /// How often the maintenance leader audits each queue this worker
    /// serves (default 60 s; `Duration::ZERO` turns it off): it checks the
    /// store's invariants with [`Audit::audit`](crate::Audit::audit),
    /// repairs what it can, logs every anomaly at `error` and counts it in
    /// [`WorkerStats::anomalies`]. An audit reads every unfinished job of
    /// the queue, so on queues with millions waiting a longer interval
    /// keeps it cheap.
    pub fn audit_every(mut self, every: Duration) -> Self {
        self.audit_every = (!every.is_zero()).then_some(every);
        self
    }

    /// How often the maintenance leader deletes finished jobs past their
    /// queue's retention, and folds the counts it keeps of them (default
    /// 60 s; at least 1 s). Shorter keeps the tables smaller under heavy
    /// churn; longer makes each prune a larger batch.
    pub fn prune_every(mut self, every: Duration) -> Self {
        self.prune_every = every.max(Duration::from_secs(1));
        self
    }

    /// Loads the queues' settings and starts claiming.
    pub async fn start(self) -> Result<WorkerHandle, Error> {
        let queues = self.resolve_queues().await?;
        self.check_repeats()?;
        self.check_leader_lease()?;
        let id = self
            .id
            .unwrap_or_else(|| format!("worker-{:08x}", rand::random::<u32>()).into());
        let shortest_lease = queues.iter().map(|q| q.config.lease).min();
        let control = Arc::new(Control::default());
        let shared = Arc::new(Shared {
            backend: self.backend,
            clock: self.clock,
            worker_id: id.clone(),
            poll_interval: self.poll_interval,
            control: control.clone(),
            events: self.events,
        });
        let mut background = vec![tokio::spawn(lease::run(shared.clone(), queues.clone()))];
        if self.maintenance {
            let timing = maintenance::Timing::new(shortest_lease, self.leader_lease)
                .audit_every(self.audit_every)
                .prune_every(self.prune_every);
            background.push(tokio::spawn(maintenance::run(
                shared.clone(),
                queues.clone(),
                self.repeats,
                timing,
            )));
        }
        for q in queues {
            control.runners.spawn(runner::run(shared.clone(), q));
        }
        control.runners.close();
        Ok(WorkerHandle {
            id,
            control,
            background,
        })
    }

    fn check_leader_lease(&self) -> Result<(), Error> {
        match self.leader_lease {
            Some(ttl) if ttl < maintenance::MIN_LEADER_LEASE => Err(ValidationError::new(
                "leader_lease",
                format!(
                    "{ttl:?} is shorter than {:?}",
                    maintenance::MIN_LEADER_LEASE
                ),
            )
            .into()),
            _ => Ok(()),
        }
    }

    fn check_repeats(&self) -> Result<(), Error> {
        for (i, r) in self.repeats.iter().enumerate() {
            r.validate()?;
            if self.repeats[..i].iter().any(|o| o.name() == r.name()) {
                return Err(ValidationError::new(
                    "repeat.name",
                    format!("`{}` is registered twice", r.name()),
                )
                .into());
            }
            if !self.maintenance {
                return Err(ValidationError::new(
                    "repeat",
                    "repeatable jobs need maintenance enabled on this worker",
                )
                .into());
            }
        }
        Ok(())
    }

    async fn resolve_queues(&self) -> Result<Vec<Arc<QueueRuntime>>, Error> {
        let mut queues = Vec::with_capacity(self.bindings.len());
        for (index, b) in self.bindings.iter().enumerate() {
            validate::queue_name(b.queue.as_str())?;
            if self.bindings[..index].iter().any(|o| o.queue == b.queue) {
                return Err(ValidationError::new(
                    "queue",
                    format!("`{}` has two handlers in one worker", b.queue),
                )
                .into());
            }
            let info = self
                .backend
                .queue_info(&b.queue)
                .await?
                .ok_or_else(|| ValidationError::unknown_queue(b.queue.as_str()))?;
            let concurrency = b.options.concurrency.unwrap_or(info.config.concurrency);
            if concurrency == 0 || concurrency > validate::MAX_CONCURRENCY {
                return Err(ValidationError::new(
                    "concurrency",
                    format!("{concurrency} is outside 1..={}", validate::MAX_CONCURRENCY),
                )
                .into());
            }
            let claim_batch = b.options.claim_batch.unwrap_or(concurrency);
            if claim_batch == 0 {
                return Err(ValidationError::new("claim_batch", "must be at least 1").into());
            }
            queues.push(Arc::new(QueueRuntime {
                index,
                name: b.queue.clone(),
                config: info.config,
                handler: b.handler.clone(),
                concurrency,
                claim_batch: claim_batch.min(concurrency),
            }));
        }
        Ok(queues)
    }
}

/// One served queue, as the worker's tasks see it.
pub(crate) struct QueueRuntime {
    index: usize,
    name: QueueName,
    config: QueueConfig,
    handler: Arc<dyn DynHandler>,
    concurrency: usize,
    claim_batch: usize,
}

/// Why a running handler was told to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Interrupt {
    /// The store refused to extend the lease.
    LeaseLost,
    /// An operator cancelled the job.
    CancelRequested,
}

/// A running attempt, as the heartbeat sees it.
pub(crate) struct InFlight {
    token: u64,
    queue: usize,
    cancel: CancellationToken,
    interrupt: Option<Interrupt>,
}

/// What the worker's tasks share.
pub(crate) struct Shared<B> {
    backend: B,
    clock: SharedClock,
    worker_id: Arc<str>,
    poll_interval: Duration,
    control: Arc<Control>,
    events: Option<Events>,
}

/// Running attempts by job, hashed with foldhash (the ids are ours).
type InFlightMap = HashMap<JobId, InFlight, foldhash::fast::RandomState>;

/// The backend-independent state a [`WorkerHandle`] shares with the tasks.
#[derive(Default)]
pub(crate) struct Control {
    stop_claiming: CancellationToken,
    abort_running: CancellationToken,
    done: CancellationToken,
    #[cfg(feature = "test-util")]
    crashed: AtomicBool,
    runners: TaskTracker,
    inflight: Mutex<InFlightMap>,
    stats: stats::Stats,
}

impl Control {
    /// Whether [`WorkerHandle::crash`] stopped the worker: then nothing
    /// more may reach the store.
    #[cfg(feature = "test-util")]
    fn is_crashed(&self) -> bool {
        self.crashed.load(Ordering::Acquire)
    }

    /// Without `test-util` no worker can crash.
    #[cfg(not(feature = "test-util"))]
    fn is_crashed(&self) -> bool {
        false
    }

    /// Tells every running handler to stop.
    fn abort_running(&self) {
        self.abort_running.cancel();
        for f in self.inflight.lock().values() {
            f.cancel.cancel();
        }
    }
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control")
            .field("running", &self.inflight.lock().len())
            .field("stats", &self.stats.snapshot())
            .finish_non_exhaustive()
    }
}

/// What a graceful shutdown did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Attempts that ended within the grace period.
    pub finished: u64,
    /// Jobs given back because they were still running at the deadline.
    pub released: u64,
}

/// A running worker.
///
/// Dropping the handle leaves the worker running until the runtime stops;
/// call [`WorkerHandle::shutdown`] to stop it and give back what it holds.
#[derive(Debug)]
pub struct WorkerHandle {
    id: Arc<str>,
    control: Arc<Control>,
    background: Vec<JoinHandle<()>>,
}

impl WorkerHandle {
    /// The worker's id, as shown in leases.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// What the worker has done so far.
    pub fn stats(&self) -> WorkerStats {
        self.control.stats.snapshot()
    }

    /// Handlers running now.
    pub fn running(&self) -> usize {
        self.control.inflight.lock().len()
    }

    /// A probe that tells whether the worker still runs: false once it
    /// was shut down or one of its tasks ended (which only a bug in the
    /// worker itself can cause). For a health check that outlives this
    /// borrow, such as `/health` in `wq-server`.
    pub fn liveness(&self) -> impl Fn() -> bool + Send + Sync + 'static {
        let tasks: Vec<tokio::task::AbortHandle> = self
            .background
            .iter()
            .map(JoinHandle::abort_handle)
            .collect();
        let control = self.control.clone();
        move || !control.done.is_cancelled() && tasks.iter().all(|t| !t.is_finished())
    }

    /// Stops claiming, lets running handlers finish for up to `grace`, then
    /// stops the rest and gives their jobs back (available at once, no
    /// attempt spent), and stores every acknowledgement.
    pub async fn shutdown(self, grace: Duration) -> ShutdownReport {
        let before = self.stats();
        let c = &self.control;
        c.stop_claiming.cancel();
        // Runners return once every attempt they started is acknowledged.
        if tokio::time::timeout(grace, c.runners.wait()).await.is_err() {
            c.abort_running();
            c.runners.wait().await;
        }
        c.done.cancel();
        for task in self.background {
            let _ = task.await;
        }
        let after = self.control.stats.snapshot();
        let released = after.released - before.released;
        ShutdownReport {
            finished: (after.finished() - before.finished()).saturating_sub(released),
            released,
        }
    }

    /// Stops at once as if the process died: nothing more is acknowledged
    /// or released, leases are left to lapse and the jobs are rescued.
    /// For crash tests and simulations: only with the `test-util` feature.
    #[cfg(feature = "test-util")]
    pub async fn crash(self) {
        let c = &self.control;
        c.crashed.store(true, Ordering::Release);
        c.stop_claiming.cancel();
        c.done.cancel();
        c.abort_running();
        for task in self.background {
            task.abort();
        }
        c.runners.wait().await;
    }
}
