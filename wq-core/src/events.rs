//! Lifecycle events: what happened to each job, told in process to whoever
//! subscribed.
//!
//! An [`Events`] hub is handed to a [`Client`](crate::Client) (which tells
//! of jobs it stored or cancelled) and to [`Worker`](crate::Worker)s (which
//! tell of attempts started and of how they ended, and, while one leads
//! maintenance, of jobs it rescued from lapsed leases); any number of
//! subscribers each get every event from then on. An event is sent only
//! once the store has applied what it tells, so a subscriber never hears of
//! an outcome that a crash could undo. With no hub, or no subscriber, no
//! event is even built.
//!
//! Events are a view, not a record: a subscriber that falls more than the
//! hub's capacity behind loses the oldest ones (its next `recv` says how
//! many), and a process hears only of what its own clients and workers did.
//! The store holds the truth ([`Client::get`](crate::Client::get)).

use std::sync::Arc;

use tokio::sync::broadcast;

use crate::handler::WaitCause;
use crate::job::{JobId, JobState, Payload};
use crate::name::QueueName;
use crate::time::Timestamp;

/// One job's transition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobEvent {
    /// The job.
    pub id: JobId,
    /// Its queue.
    pub queue: QueueName,
    /// When the transition was applied, by the clock of the process that
    /// applied it.
    pub at: Timestamp,
    /// What happened.
    pub kind: EventKind,
}

/// What happened to a job.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EventKind {
    /// Stored by `enqueue` (a known idempotency key stores nothing and
    /// tells nothing); due at `run_at`.
    Enqueued {
        /// When it may first run.
        run_at: Timestamp,
    },
    /// An attempt began on a worker.
    Started {
        /// The attempt, from 1.
        attempt: u32,
        /// The worker's id.
        worker: Arc<str>,
    },
    /// The handler succeeded.
    Completed {
        /// The attempt that succeeded.
        attempt: u32,
        /// What the handler stored with its success
        /// ([`JobContext::set_output`](crate::JobContext::set_output)).
        output: Option<Payload>,
    },
    /// The attempt failed and the job runs again at `run_at`.
    Retried {
        /// The attempt that failed.
        attempt: u32,
        /// The failure.
        error: String,
        /// When it runs again.
        run_at: Timestamp,
    },
    /// The job runs again at `run_at` without spending an attempt.
    Deferred {
        /// Why.
        reason: Deferral,
        /// When it runs again.
        run_at: Timestamp,
    },
    /// No attempt left, or a failure retrying cannot fix: the job is in
    /// the dead-letter queue.
    Dead {
        /// The last attempt.
        attempt: u32,
        /// The failure.
        error: String,
    },
    /// Cancelled: while it waited, by the client, or while it ran, by the
    /// worker once the handler stopped.
    Cancelled,
    /// Its worker stopped heartbeating and the lease lapsed; the
    /// maintenance leader took it back into `state`: available or
    /// scheduled to run again (the attempt stays spent), dead when none
    /// was left, or cancelled when that had been asked.
    Rescued {
        /// The state it is in now.
        state: JobState,
    },
}

/// Why a job was put back without spending an attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Deferral {
    /// The handler asked to wait ([`JobError::Wait`](crate::JobError::Wait)):
    /// the other side throttled it or was unreachable, or something it
    /// needs is paused, as `cause` tells.
    Wait {
        /// What kind of wait.
        cause: WaitCause,
        /// The handler's reason.
        reason: String,
    },
    /// The handler ended a step and continues at `step`
    /// ([`JobError::Continue`](crate::JobError::Continue)).
    Step {
        /// The step the next run starts at.
        step: String,
    },
    /// The worker shut down before the handler finished and gave the job
    /// back.
    Released,
}

/// A hub of [`JobEvent`]s: clone it into the clients and workers whose
/// events you want, and [`subscribe`](Events::subscribe) as often as needed.
///
/// ```
/// use std::time::Duration;
/// use wq::{
///     Client, Enqueue, EventKind, Events, JobContext, JobError, MemoryStore, QueueConfig, Worker,
/// };
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), wq::Error> {
/// let store = MemoryStore::new();
/// let events = Events::new(1024);
/// let mut seen = events.subscribe();
/// let client = Client::new(store.clone()).with_events(events.clone());
/// client.declare_queue(QueueConfig::new("message")).await?;
/// let worker = Worker::new(store)
///     .events(events)
///     .handle("message", |_job: JobContext| async { Ok::<(), JobError>(()) })
///     .start()
///     .await?;
///
/// let id = client.enqueue(Enqueue::new("message", "Olá!")).await?.job.id;
/// loop {
///     let event = seen.recv().await.expect("the hub lives");
///     if event.id == id && matches!(event.kind, EventKind::Completed { .. }) {
///         break;
///     }
/// }
/// worker.shutdown(Duration::from_secs(5)).await;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Events {
    tx: broadcast::Sender<JobEvent>,
}

impl Events {
    /// A hub that keeps up to `capacity` events for its slowest subscriber
    /// (at least 1).
    pub fn new(capacity: usize) -> Self {
        Self {
            tx: broadcast::Sender::new(capacity.max(1)),
        }
    }

    /// Every event sent from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<JobEvent> {
        self.tx.subscribe()
    }

    /// Whether anyone listens: senders skip building events otherwise.
    pub(crate) fn listened(&self) -> bool {
        self.tx.receiver_count() > 0
    }

    /// Sends one event; nobody listening is not an error.
    pub(crate) fn send(&self, event: JobEvent) {
        let _ = self.tx.send(event);
    }
}

/// The hub of a client or worker, if it has one that someone listens to.
pub(crate) fn listening(events: &Option<Events>) -> Option<&Events> {
    events.as_ref().filter(|e| e.listened())
}
