//! Helpers for testing an application built on wq, in the spirit of River's
//! `rivertest`: assert what the application enqueued, run its handlers until
//! the queues are idle, and move time forward on a [`ManualClock`], with no
//! server and no sleeping.
//!
//! An application adds `wq-testkit` as a dev-dependency (the facade does not
//! re-export it, so it never reaches a normal build):
//!
//! ```toml
//! [dev-dependencies]
//! wq-testkit = "0.1"
//! ```
//!
//! - [`enqueued`], [`expect_enqueued`], [`expect_enqueued_n`],
//!   [`expect_none_enqueued`]: the jobs of a [`TypedJob`] type, decoded,
//!   with their options on [`EnqueuedJob::job`]; [`jobs_in`] and
//!   [`expect_jobs_in`] for a queue's raw jobs. They read the store through
//!   [`Client::list`], so they work on every backend. A failed expectation
//!   lists what was enqueued instead.
//! - [`TestApp`]: the backend, a client on a manual clock and the
//!   application's handlers; [`TestApp::run_until_idle`] starts a worker,
//!   waits until nothing is due or running and stops it;
//!   [`TestApp::advance_to_next_due`] and [`TestApp::advance`] move the clock
//!   and run again; [`TestApp::run_until_done`] walks through every retry,
//!   delay and step until nothing waits.
//!
//! ```
//! use std::time::Duration;
//! use serde::{Deserialize, Serialize};
//! use wq::{JobContext, JobError, QueueConfig, RetryPolicy, TypedJob};
//! use wq_testkit::app::{TestApp, expect_enqueued};
//!
//! #[derive(Debug, Serialize, Deserialize)]
//! struct SendText {
//!     to: String,
//!     text: String,
//! }
//!
//! impl TypedJob for SendText {
//!     const QUEUE: &'static str = "message";
//!     fn options(&self, job: wq::Enqueue) -> wq::Enqueue {
//!         job.group(self.to.as_str())
//!     }
//! }
//!
//! // Fails its first attempt, as a bridge that is briefly down would.
//! async fn send_text(send: SendText, ctx: JobContext) -> Result<(), JobError> {
//!     if ctx.attempt() == 1 {
//!         return Err(JobError::retry("bridge unreachable"));
//!     }
//!     let _ = send.text;
//!     Ok(())
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let app = TestApp::memory(|w| w.handle_typed(send_text));
//! let retry = RetryPolicy { jitter: false, ..RetryPolicy::default() }; // 2 s, then 4 s...
//! app.client().declare_queue(QueueConfig::new("message").retry(retry)).await?;
//!
//! app.client().enqueue(SendText { to: "5511999998888".into(), text: "Olá!".into() }).await?;
//! let sent = expect_enqueued::<SendText>(app.client()).await?;
//! assert_eq!(sent[0].job.group.as_ref().map(|g| g.as_str()), Some("5511999998888"));
//!
//! let first = app.run_until_idle().await?;
//! assert_eq!((first.stats.retried, first.stats.completed), (1, 0));
//! let start = app.now();
//! let second = app.advance_to_next_due().await?.expect("the retry waits");
//! assert_eq!(app.now().duration_since(start), Duration::from_secs(2));
//! assert_eq!(second.stats.completed, 1);
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast::{Receiver, error::TryRecvError};
use wq_core::validate::MAX_LIST;
use wq_core::{
    Admin, Backend, Client, EventKind, Events, Job, JobEvent, JobId, ListQuery, ManualClock,
    QueueName, Store, Timestamp, TypedJob, Worker, WorkerStats,
};
use wq_memory::MemoryStore;

use crate::harness::{Failure, PATIENCE, stop_within};

/// Most jobs a failed expectation lists before it only counts the rest.
const LISTED: usize = 20;

/// Events kept for a run between two looks: far more than a test's worker
/// produces between two polls of the store.
const EVENTS_CAPACITY: usize = 16_384;

/// How long the idle check waits between two looks at the store.
const POLL: Duration = Duration::from_millis(1);

/// Rounds [`TestApp::run_until_done`] runs by default before it calls the
/// queues endless (a repeatable job, a handler that always steps).
const MAX_ROUNDS: usize = 100;

/// A job of type `J` as the store holds it: the decoded value, and the job
/// with the options it was enqueued with (group, session, priority,
/// `run_at`, idempotency key, tenant, max attempts) and its state now.
#[derive(Clone, Debug)]
pub struct EnqueuedJob<J> {
    /// The payload, decoded as `J`.
    pub value: J,
    /// The stored job.
    pub job: Job,
}

impl<J> EnqueuedJob<J> {
    /// How long after its enqueue the job was due: the delay it was given,
    /// or the chained offset the backend resolved.
    pub fn delay(&self) -> Duration {
        self.job.run_at.duration_since(self.job.created_at)
    }
}

/// Every job of `J`'s queue, in any state, decoded as `J`, in id order
/// (enqueue order, unless ids were pre-assigned).
///
/// A job of that queue whose payload does not decode as `J` is a failure
/// naming it: the application put something else in the queue.
pub async fn enqueued<J: TypedJob>(
    client: &Client<impl Store + Admin>,
) -> Result<Vec<EnqueuedJob<J>>, Failure> {
    jobs_in(client, J::QUEUE)
        .await?
        .into_iter()
        .map(|job| match job.payload.decode::<J>() {
            Ok(value) => Ok(EnqueuedJob { value, job }),
            Err(e) => Err(Failure::new(format!(
                "job {} in queue `{}` does not decode as {}: {e}; its payload: {:?}",
                job.id,
                job.queue,
                std::any::type_name::<J>(),
                job.payload
            ))),
        })
        .collect()
}

/// The jobs of `J`'s queue, decoded, failing unless there is at least one.
pub async fn expect_enqueued<J: TypedJob>(
    client: &Client<impl Store + Admin>,
) -> Result<Vec<EnqueuedJob<J>>, Failure> {
    let found = enqueued::<J>(client).await?;
    if found.is_empty() {
        return Err(mismatch(client, J::QUEUE, "at least one job", 0).await);
    }
    Ok(found)
}

/// The jobs of `J`'s queue, decoded, failing unless there are exactly `n`.
pub async fn expect_enqueued_n<J: TypedJob>(
    client: &Client<impl Store + Admin>,
    n: usize,
) -> Result<Vec<EnqueuedJob<J>>, Failure> {
    let found = enqueued::<J>(client).await?;
    if found.len() != n {
        return Err(mismatch(client, J::QUEUE, &format!("{n} jobs"), found.len()).await);
    }
    Ok(found)
}

/// Fails if `J`'s queue holds any job.
pub async fn expect_none_enqueued<J: TypedJob>(
    client: &Client<impl Store + Admin>,
) -> Result<(), Failure> {
    expect_jobs_in(client, J::QUEUE, 0).await.map(drop)
}

/// Every job of `queue`, in any state, in id order; for queues fed with
/// untyped [`Enqueue`](wq_core::Enqueue)s.
pub async fn jobs_in(
    client: &Client<impl Store + Admin>,
    queue: &str,
) -> Result<Vec<Job>, Failure> {
    list_all(client, Some(queue)).await
}

/// The jobs of `queue`, failing unless there are exactly `n`.
pub async fn expect_jobs_in(
    client: &Client<impl Store + Admin>,
    queue: &str,
    n: usize,
) -> Result<Vec<Job>, Failure> {
    let found = jobs_in(client, queue).await?;
    if found.len() != n {
        return Err(mismatch(client, queue, &format!("{n} jobs"), found.len()).await);
    }
    Ok(found)
}

/// Every job of `queue` (or of every queue), page by page.
async fn list_all<S: Store + Admin>(
    client: &Client<S>,
    queue: Option<&str>,
) -> Result<Vec<Job>, Failure> {
    let mut all = Vec::new();
    loop {
        let mut query = ListQuery::new().limit(MAX_LIST);
        if let Some(q) = queue {
            query = query.queue(q);
        }
        if let Some(last) = all.last().map(|j: &Job| j.id) {
            query = query.after(last);
        }
        let page = client.list(query).await?;
        let short = page.len() < MAX_LIST;
        all.extend(page);
        if short {
            return Ok(all);
        }
    }
}

/// A failed expectation, listing every job the store holds instead.
async fn mismatch<S: Store + Admin>(
    client: &Client<S>,
    queue: &str,
    wanted: &str,
    got: usize,
) -> Failure {
    let mut msg = format!("expected {wanted} in queue `{queue}`, found {got}; ");
    match list_all(client, None).await {
        Ok(all) if all.is_empty() => msg.push_str("the store holds no job at all"),
        Ok(all) => {
            let _ = write!(msg, "the store holds {}:", all.len());
            for job in all.iter().take(LISTED) {
                let _ = write!(msg, "\n  {}", Summary(job));
            }
            if all.len() > LISTED {
                let _ = write!(msg, "\n  ... and {} more", all.len() - LISTED);
            }
        }
        Err(e) => {
            let _ = write!(msg, "and listing the store failed: {e}");
        }
    }
    Failure::new(msg)
}

/// One line about a job, for failure messages.
struct Summary<'a>(&'a Job);

impl fmt::Display for Summary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let j = self.0;
        write!(f, "{} `{}` {} run_at {}", j.id, j.queue, j.state, j.run_at)?;
        if let Some(g) = &j.group {
            write!(f, " group {g}")?;
        }
        if let Some(s) = &j.session {
            write!(f, " session {s}")?;
        }
        if let Some(k) = &j.idempotency_key {
            write!(f, " key {k}")?;
        }
        write!(f, " priority {} payload {:?}", j.priority, j.payload)
    }
}

/// What one or more runs of the worker did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Run {
    /// The worker's counters: attempts completed, retried, stepped, dead...
    /// Summed over the rounds of [`TestApp::run_until_done`].
    pub stats: WorkerStats,
    /// Every event the worker and the app's client told during the run, in
    /// the order they were told.
    pub events: Vec<JobEvent>,
    /// The clock when the run began.
    pub started_at: Timestamp,
    /// The clock when it ended.
    pub ended_at: Timestamp,
}

impl Run {
    /// What happened to one job during the run, in order: a timeline to
    /// assert on (`Started`, `Retried`, `Started`, `Completed`...).
    pub fn events_of(&self, id: JobId) -> Vec<&EventKind> {
        self.events
            .iter()
            .filter(|e| e.id == id)
            .map(|e| &e.kind)
            .collect()
    }

    /// Appends a later run.
    fn absorb(&mut self, later: Run) {
        let (a, b) = (&mut self.stats, later.stats);
        a.claimed += b.claimed;
        a.completed += b.completed;
        a.retried += b.retried;
        a.deferred += b.deferred;
        a.stepped += b.stepped;
        a.dead += b.dead;
        a.cancelled += b.cancelled;
        a.released += b.released;
        a.stale += b.stale;
        a.lost += b.lost;
        a.audits += b.audits;
        a.anomalies += b.anomalies;
        self.events.extend(later.events);
        self.ended_at = later.ended_at;
    }
}

/// How the test's worker is built from a fresh [`Worker`]: the
/// application's own function registering its handlers.
type Handlers<B> = Box<dyn Fn(Worker<B>) -> Worker<B> + Send + Sync>;

/// An application's queues under test: a backend, a [`Client`] on a
/// [`ManualClock`], and the function that registers the application's
/// handlers on a worker.
///
/// Nothing runs between the calls that run: each run starts a worker with
/// the handlers, waits until no watched queue has a job due or running, and
/// shuts it down. Time moves only when the test moves it, so retries,
/// delays, chaining and steps play out the same way every time.
pub struct TestApp<B: Backend> {
    backend: B,
    client: Client<B>,
    clock: Arc<ManualClock>,
    events: Events,
    handlers: Handlers<B>,
    queues: Option<Vec<QueueName>>,
    time_limit: Duration,
    max_rounds: usize,
}

impl<B: Backend> fmt::Debug for TestApp<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestApp")
            .field("now", &self.now())
            .field("queues", &self.queues)
            .field("time_limit", &self.time_limit)
            .field("max_rounds", &self.max_rounds)
            .finish_non_exhaustive()
    }
}

impl TestApp<MemoryStore> {
    /// A fresh in-process store; `handlers` registers the application's
    /// handlers on each run's worker.
    pub fn memory(
        handlers: impl Fn(Worker<MemoryStore>) -> Worker<MemoryStore> + Send + Sync + 'static,
    ) -> Self {
        Self::new(MemoryStore::new(), handlers)
    }
}

impl<B: Backend> TestApp<B> {
    /// `backend` with a manual clock standing at the current time.
    pub fn new(
        backend: B,
        handlers: impl Fn(Worker<B>) -> Worker<B> + Send + Sync + 'static,
    ) -> Self {
        Self::with_clock(backend, ManualClock::starting_now(), handlers)
    }

    /// `backend` with `clock`, e.g. one standing at a fixed instant so that
    /// timestamps in failures read the same on every run.
    ///
    /// The runs set the worker's clock and events hub after `handlers`:
    /// time and what the run reports belong to the test.
    pub fn with_clock(
        backend: B,
        clock: Arc<ManualClock>,
        handlers: impl Fn(Worker<B>) -> Worker<B> + Send + Sync + 'static,
    ) -> Self {
        let events = Events::new(EVENTS_CAPACITY);
        let client = Client::with_clock(backend.clone(), clock.clone()).with_events(events.clone());
        Self {
            backend,
            client,
            clock,
            events,
            handlers: Box::new(handlers),
            queues: None,
            time_limit: PATIENCE,
            max_rounds: MAX_ROUNDS,
        }
    }

    /// Watches only these queues for idleness (default: every declared
    /// queue). Needed when a queue holds due jobs that the handlers do not
    /// serve: a run would otherwise wait for them until its time limit.
    pub fn queues<Q: Into<QueueName>>(mut self, queues: impl IntoIterator<Item = Q>) -> Self {
        self.queues = Some(queues.into_iter().map(Into::into).collect());
        self
    }

    /// How long one run may take in real time before it fails, naming what
    /// is still due or running (default [`PATIENCE`]): a handler that hangs
    /// fails the test instead of hanging it.
    pub fn time_limit(mut self, limit: Duration) -> Self {
        self.time_limit = limit;
        self
    }

    /// How many runs [`TestApp::run_until_done`] makes before it fails
    /// (default 100; at least 1): a repeatable job or a handler that always asks to
    /// continue never lets the queues drain.
    pub fn max_rounds(mut self, rounds: usize) -> Self {
        self.max_rounds = rounds;
        self
    }

    /// The client the application code under test enqueues through: it
    /// reads the manual clock, so delays count from the test's time.
    pub fn client(&self) -> &Client<B> {
        &self.client
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The clock, to read it or move it without running anything.
    pub fn clock(&self) -> &Arc<ManualClock> {
        &self.clock
    }

    /// The test's current time.
    pub fn now(&self) -> Timestamp {
        wq_core::Clock::now(&*self.clock)
    }

    /// When the earliest waiting job of the watched queues may run, `None`
    /// when nothing waits (paused queues wait for nobody).
    pub async fn next_due(&self) -> Result<Option<Timestamp>, Failure> {
        let now = self.now();
        let mut earliest: Option<Timestamp> = None;
        for q in self.watched().await? {
            if let Some(at) = self.backend.next_due(&q, now).await? {
                earliest = Some(earliest.map_or(at, |e| e.min(at)));
            }
        }
        Ok(earliest)
    }

    /// Starts a worker with the handlers, waits until no watched queue has
    /// a job running or due now (jobs scheduled later do not count), stops
    /// the worker and reports what it did. The clock does not move.
    pub async fn run_until_idle(&self) -> Result<Run, Failure> {
        let mut rx = self.events.subscribe();
        let started_at = self.now();
        let worker = (self.handlers)(Worker::new(self.backend.clone()))
            .clock(self.clock.clone())
            .events(self.events.clone())
            .start()
            .await
            .map_err(|e| Failure::new(format!("the test's worker did not start: {e}")))?;
        let mut events = Vec::new();
        let deadline = tokio::time::Instant::now() + self.time_limit;
        let waited = loop {
            if let Err(e) = drain(&mut rx, &mut events) {
                break Err(e);
            }
            match self.busy(worker.stats()).await {
                Ok(None) => break Ok(()),
                Ok(Some(what)) if tokio::time::Instant::now() >= deadline => {
                    break Err(Failure::new(format!(
                        "not idle after {:?} (at {}): {what}; the worker so far: {:?}",
                        self.time_limit,
                        self.now(),
                        worker.stats()
                    )));
                }
                Ok(Some(_)) => tokio::time::sleep(POLL).await,
                Err(e) => break Err(e),
            }
        };
        // Idle: nothing runs and every attempt the worker claimed is
        // counted (see `busy`), so the grace only matters after a failure,
        // whose hung handlers are stopped at once.
        let grace = if waited.is_ok() {
            PATIENCE
        } else {
            Duration::ZERO
        };
        let stats = worker.stats();
        let stopped = stop_within(worker, grace).await;
        let drained = drain(&mut rx, &mut events);
        waited?;
        stopped?;
        drained?;
        Ok(Run {
            stats,
            events,
            started_at,
            ended_at: self.now(),
        })
    }

    /// Moves the clock to the earliest waiting job and runs until idle;
    /// `None`, with the clock left alone, when nothing waits.
    pub async fn advance_to_next_due(&self) -> Result<Option<Run>, Failure> {
        let Some(at) = self.next_due().await? else {
            return Ok(None);
        };
        if at > self.now() {
            self.clock.set(at);
        }
        self.run_until_idle().await.map(Some)
    }

    /// Moves the clock forward by `d` and runs until idle.
    pub async fn advance(&self, d: Duration) -> Result<Run, Failure> {
        self.clock.advance(d);
        self.run_until_idle().await
    }

    /// Runs until idle, then moves to the next waiting job and runs again,
    /// until nothing waits; reports all the rounds as one run. Fails after
    /// [`TestApp::max_rounds`] rounds.
    pub async fn run_until_done(&self) -> Result<Run, Failure> {
        if self.max_rounds == 0 {
            return Err(Failure::new(
                "max_rounds is 0: run_until_done needs at least one round",
            ));
        }
        let mut total = self.run_until_idle().await?;
        for _ in 1..self.max_rounds {
            match self.advance_to_next_due().await? {
                Some(run) => total.absorb(run),
                None => return Ok(total),
            }
        }
        match self.next_due().await? {
            None => Ok(total),
            Some(at) => Err(Failure::new(format!(
                "jobs still wait after {} rounds (the next at {at}); the rounds so far: {:?}",
                self.max_rounds, total.stats
            ))),
        }
    }

    /// The queues a run waits on.
    async fn watched(&self) -> Result<Vec<QueueName>, Failure> {
        match &self.queues {
            Some(q) => Ok(q.clone()),
            None => Ok(self
                .client
                .queues()
                .await?
                .into_iter()
                .map(|q| q.config.name)
                .collect()),
        }
    }

    /// What keeps the watched queues busy now, if anything. The worker
    /// counts as busy too until it has counted the end of every attempt it
    /// claimed: the store applies an acknowledgement a moment before the
    /// worker counts it.
    async fn busy(&self, worker: WorkerStats) -> Result<Option<String>, Failure> {
        let now = self.now();
        let mut busy = Vec::new();
        let unsettled = worker.claimed.saturating_sub(worker.finished());
        if unsettled > 0 {
            busy.push(format!(
                "the worker has {unsettled} attempts not yet acknowledged"
            ));
        }
        for q in self.watched().await? {
            let running = self.backend.counts(&q).await?.running;
            let due = self
                .backend
                .next_due(&q, now)
                .await?
                .is_some_and(|at| at <= now);
            match (running, due) {
                (0, false) => {}
                (0, true) => busy.push(format!("`{q}` has a job due")),
                (n, false) => busy.push(format!("`{q}` has {n} running")),
                (n, true) => busy.push(format!("`{q}` has {n} running and a job due")),
            }
        }
        Ok((!busy.is_empty()).then(|| busy.join(", ")))
    }
}

/// Takes the events told so far.
fn drain(rx: &mut Receiver<JobEvent>, into: &mut Vec<JobEvent>) -> Result<(), Failure> {
    loop {
        match rx.try_recv() {
            Ok(event) => into.push(event),
            Err(TryRecvError::Empty | TryRecvError::Closed) => return Ok(()),
            Err(TryRecvError::Lagged(n)) => {
                return Err(Failure::new(format!(
                    "the run's events overflowed: {n} lost (more than {EVENTS_CAPACITY} between two looks)"
                )));
            }
        }
    }
}
