//! # wq-core
//!
//! The core of wq, a durable job queue: the job model, the traits every
//! backend implements ([`Store`], [`Lock`], [`Scheduler`], [`Audit`]), the
//! [`Client`] that enqueues and operates, and the [`Worker`] engine that runs
//! handlers.
//!
//! The engine knows nothing about SQL or Redis, nor about what the jobs do:
//! backends live in their own crates (`wq-memory`, `wq-postgres`,
//! `wq-redis`), domain layers too (`wq-whatsapp`), and the `wq` facade
//! chooses them through its features.
//!
//! ## Guarantees
//!
//! Every backend proves these with `wq-testkit`: durable enqueue, no loss,
//! per-group FIFO with one job in flight per group, idempotent enqueue,
//! stable ids for exactly-once effects, parallelism across groups, retries
//! with backoff and a dead-letter queue, delays and time chaining,
//! priorities, and the operations around them.
//!
//! ## Example
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
//!
//! // Two jobs of one group: they run in this order, never at once.
//! for text in ["order received", "order shipped"] {
//!     client
//!         .enqueue(Enqueue::new("message", &text).group("customer-42"))
//!         .await?;
//! }
//!
//! let worker = Worker::new(store)
//!     .handle("message", |job: JobContext| async move {
//!         let text: String = job.payload()?;
//!         println!("notify {text:?}, keyed by {}", job.id());
//!         Ok::<(), JobError>(())
//!     })
//!     .start()
//!     .await?;
//! # while client.counts("message").await?.completed < 2 {
//! #     tokio::time::sleep(Duration::from_millis(5)).await;
//! # }
//! worker.shutdown(Duration::from_secs(5)).await;
//! # Ok(())
//! # }
//! ```
#![cfg_attr(
    not(test),
    warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

mod admin;
mod admission;
pub mod attempt;
mod audit;
mod client;
pub mod connect;
mod error;
mod events;
mod handler;
mod job;
mod lock;
mod name;
mod queue;
mod repeat;
pub mod retry;
mod scheduler;
mod service;
mod session;
mod store;
mod time;
mod typed;
pub mod validate;
pub mod worker;

pub use admin::{Admin, Counts, DeadJobs, ListQuery, Position};
pub use admission::{Admission, Admissions, Allowance};
pub use attempt::{Attempt, AttemptOutcome};
pub use audit::{Anomaly, AnomalyKind, Audit, AuditReport};
pub use client::{Client, Enqueue};
pub use error::{BoxError, Error, StoreError, ValidationError};
pub use events::{Deferral, EventKind, Events, JobEvent};
pub use handler::{Handler, HandlerFuture, JobContext, JobError, WaitCause};
pub use job::{Job, JobId, JobState, Lease, NewJob, Payload, RunAt, UnknownState};
pub use lock::{Lock, LockLease};
pub use name::{GroupKey, QueueName, SessionKey};
pub use queue::{OnDead, QueueConfig, QueueInfo, Retention};
pub use repeat::Repeat;
pub use retry::RetryPolicy;
pub use scheduler::{Scheduler, WakeSender, WakeSignal, Wakeups, chained_run_at};
pub use service::{HandlerService, ServiceHandler};
pub use session::{
    MAX_PAUSE_REASON, MAX_RATE_STARTS, OPERATOR_PAUSE, PauseChange, Rate, SessionInfo,
    SessionLimits, Sessions,
};
pub use store::{
    Ack, AckAction, AckOutcome, AckedAndClaimed, ClaimRequest, Enqueued, ExtendOutcome, LeaseRef,
    RescueReport, RescuedJob, Store,
};
pub use time::{Clock, ManualClock, SharedClock, Sleep, SystemClock, Timestamp};
pub use typed::{IntoEnqueue, TypedHandler, TypedJob};
pub use worker::{QueueOptions, ShutdownReport, Worker, WorkerHandle, WorkerStats};

/// Everything a worker needs from a backend: jobs, sessions and their
/// admissions, locks, time and the audit of its own invariants.
pub trait Backend:
    Store + Admin + Sessions + Admissions + Lock + Scheduler + Audit + Clone
{
}

impl<T: Store + Admin + Sessions + Admissions + Lock + Scheduler + Audit + Clone> Backend for T {}
