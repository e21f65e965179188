//! The [`Store`] trait: jobs and their states.
//!
//! Every call that changes a job takes `now` from the caller; the fencing
//! token travels with every acknowledgement and lease extension, so a worker
//! whose lease has lapsed can change nothing.

use std::future::Future;
use std::sync::Arc;

use crate::error::StoreError;
use crate::job::{Job, JobId, JobState, NewJob, Payload};
use crate::name::QueueName;
use crate::queue::{QueueConfig, QueueInfo};
use crate::time::Timestamp;

/// A request to claim up to `limit` jobs of one queue in one round trip.
///
/// A backend hands out only jobs that are due, head their group (the lowest
/// sequence not yet terminal), belong to a group with nothing running, and
/// sit in an unpaused queue; among those, lower priority first, then earlier
/// `run_at`, then enqueue order. It picks one head per group *before* it
/// applies the limit, so a blocked group never starves the others, and
/// returns the jobs in the order it picked them.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClaimRequest {
    /// The queue to claim from.
    pub queue: QueueName,
    /// Most jobs to hand out.
    pub limit: usize,
    /// The caller's time.
    pub now: Timestamp,
    /// When the new leases lapse unless extended.
    pub lease_until: Timestamp,
    /// The claiming worker's id.
    pub worker: Arc<str>,
    /// The worker's turn this claim belongs to. A claim retried with the
    /// same worker and turn returns what the first try claimed, where the
    /// backend remembers it: a reply lost on the way back then costs no
    /// lease and no attempt. The Redis backend remembers a worker's last
    /// turn per queue; memory and Postgres ignore the turn and claim afresh
    /// (the memory store's calls cannot lose a reply; a Postgres claim whose
    /// reply is lost stays leased until its lease lapses).
    pub turn: Option<u64>,
}

impl ClaimRequest {
    /// A claim of up to `limit` jobs of `queue` at `now`, leased until `lease_until`.
    pub fn new(
        queue: impl Into<QueueName>,
        limit: usize,
        now: Timestamp,
        lease_until: Timestamp,
        worker: impl Into<Arc<str>>,
    ) -> Self {
        Self {
            queue: queue.into(),
            limit,
            now,
            lease_until,
            worker: worker.into(),
            turn: None,
        }
    }

    /// Marks the claim as part of the worker's turn `turn` (see the field
    /// of the same name).
    pub fn turn(mut self, turn: u64) -> Self {
        self.turn = Some(turn);
        self
    }
}

/// What to do with a running job, decided by the worker that holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AckAction {
    /// The handler succeeded: `completed`, keeping the handler's output.
    Complete {
        /// What the handler stored with its success (at most
        /// [`MAX_OUTPUT`](crate::attempt::MAX_OUTPUT) bytes of JSON).
        output: Option<Payload>,
    },
    /// The attempt failed; run again at `run_at` (the attempt is spent).
    /// A job with no attempts left is dead instead.
    Retry {
        /// When to run again.
        run_at: Timestamp,
        /// The failure, kept as `last_error`.
        error: String,
    },
    /// Run again at `run_at` without spending the attempt (the handler
    /// returned [`JobError::Wait`](crate::JobError::Wait)).
    Defer {
        /// When to run again.
        run_at: Timestamp,
        /// Why, kept as `last_error`.
        reason: String,
    },
    /// The handler finished one step of the job and continues at `step`
    /// at `run_at` (it returned [`JobError::Continue`](crate::JobError::Continue)).
    /// Like `Defer`, the attempt is given back and the job stays its
    /// group's head, so nothing behind it starts meanwhile; unlike `Defer`,
    /// `last_error` is left as it was and the job's
    /// [`step`](crate::Job::step) becomes `step`.
    Continue {
        /// When to run again.
        run_at: Timestamp,
        /// The step the next run starts at.
        step: String,
    },
    /// Failed for good: `dead`.
    Kill {
        /// The failure, kept as `last_error`.
        error: String,
    },
    /// Give the job back untouched (graceful shutdown): available at once,
    /// no attempt spent.
    Release,
}

impl AckAction {
    /// `Complete` with no output.
    pub const fn complete() -> Self {
        AckAction::Complete { output: None }
    }
}

/// One acknowledgement of a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ack {
    /// The job.
    pub id: JobId,
    /// The fencing token of the lease the worker holds.
    pub token: u64,
    /// What to do.
    pub action: AckAction,
}

impl Ack {
    /// An acknowledgement of a claimed `job` under the lease it carries;
    /// `None` if it carries none.
    pub fn for_job(job: &Job, action: AckAction) -> Option<Ack> {
        job.lease.as_ref().map(|l| Ack {
            id: job.id,
            token: l.token,
            action,
        })
    }
}

/// What became of one acknowledgement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AckOutcome {
    /// Applied; the job is now in this state. A job whose cancellation was
    /// requested ends `cancelled` unless the action was `Complete`.
    Applied(JobState),
    /// Refused: the job is not running under this token (nor was this
    /// token's acknowledgement the last applied to it), or the lease has
    /// lapsed. Nothing changed.
    Stale,
    /// No such job.
    NotFound,
}

/// The result of [`Store::ack_and_claim`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AckedAndClaimed {
    /// One outcome per acknowledgement, in order.
    pub acks: Vec<AckOutcome>,
    /// The jobs claimed.
    pub jobs: Vec<Job>,
    /// For a claim that came back short, what [`Scheduler::next_due`] would
    /// answer, if the backend found it in the same call; `None` when it did
    /// not look, and the worker asks.
    ///
    /// [`Scheduler::next_due`]: crate::Scheduler::next_due
    pub next_due: Option<Option<Timestamp>>,
}

/// A lease to extend: a job and the token its holder got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseRef {
    /// The job.
    pub id: JobId,
    /// The holder's fencing token.
    pub token: u64,
}

/// What became of one lease extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExtendOutcome {
    /// Extended.
    Extended,
    /// Extended, but an operator asked to cancel the job: stop the handler.
    CancelRequested,
    /// Refused: the lease lapsed or another worker holds the job now.
    Lost,
}

/// The result of one enqueue.
#[derive(Clone, Debug, PartialEq)]
pub struct Enqueued {
    /// The stored job (the existing one when the idempotency key was known).
    pub job: Job,
    /// False when an existing job was returned and nothing was stored.
    pub created: bool,
}

/// What a rescue of lapsed leases did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RescueReport {
    /// Jobs made available again.
    pub retried: u64,
    /// Jobs that had no attempts left and are dead.
    pub dead: u64,
    /// Jobs whose cancellation had been requested, now cancelled.
    pub cancelled: u64,
    /// Each job rescued, in the order the backend took them.
    pub jobs: Vec<RescuedJob>,
}

/// One job a rescue took back, and the state it left it in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RescuedJob {
    /// The job.
    pub id: JobId,
    /// Its queue.
    pub queue: QueueName,
    /// Available or scheduled (it runs again), dead or cancelled.
    pub state: JobState,
}

impl RescueReport {
    /// Jobs rescued in all.
    pub fn total(&self) -> u64 {
        self.retried + self.dead + self.cancelled
    }

    /// Counts a job rescued into `state`, and keeps it.
    pub fn add(&mut self, id: JobId, queue: QueueName, state: JobState) {
        match state {
            JobState::Dead => self.dead += 1,
            JobState::Cancelled => self.cancelled += 1,
            _ => self.retried += 1,
        }
        self.jobs.push(RescuedJob { id, queue, state });
    }
}

/// Jobs and their states: what every backend implements.
///
/// What must be atomic is atomic inside one call: enqueue with its sequence,
/// chained `run_at` and idempotency check; claim with its leases; each
/// acknowledgement with its fencing check.
pub trait Store: Send + Sync + 'static {
    /// Creates or updates a queue's settings (its pause state is kept).
    fn declare_queue(
        &self,
        config: &QueueConfig,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// A queue's settings and state.
    fn queue_info(
        &self,
        queue: &QueueName,
    ) -> impl Future<Output = Result<Option<QueueInfo>, StoreError>> + Send;

    /// Stores jobs, all or none, in order. A job whose idempotency key is
    /// already known in its queue stores nothing and returns the existing job.
    fn enqueue(
        &self,
        jobs: Vec<NewJob>,
        now: Timestamp,
    ) -> impl Future<Output = Result<Vec<Enqueued>, StoreError>> + Send;

    /// Claims up to `req.limit` jobs (see [`ClaimRequest`]).
    fn claim(
        &self,
        req: &ClaimRequest,
    ) -> impl Future<Output = Result<Vec<Job>, StoreError>> + Send;

    /// Applies acknowledgements, each checked against its fencing token;
    /// one outcome per ack, in order.
    ///
    /// An acknowledgement sent again with the token of the last one applied
    /// to its job (the first reply was lost) answers `Applied` with the
    /// job's state now and changes nothing, until the job is claimed again,
    /// rescued or retried from the dead-letter queue; after that its token
    /// is `Stale`.
    fn ack(
        &self,
        acks: &[Ack],
        now: Timestamp,
    ) -> impl Future<Output = Result<Vec<AckOutcome>, StoreError>> + Send;

    /// Applies `acks`, then claims per `claim`: what a worker does after a
    /// batch of attempts ends. Backends that can do both in one round trip
    /// (one lock, one transaction, one script) should; the default makes two
    /// calls. On error the acknowledgements may or may not have been
    /// applied; sending them again is safe (applied ones answer `Applied`
    /// again, see [`Store::ack`]), and a claim sent again with the same
    /// [`ClaimRequest::turn`] gets back what the first try claimed where the
    /// backend remembers turns.
    fn ack_and_claim(
        &self,
        acks: &[Ack],
        claim: Option<&ClaimRequest>,
        now: Timestamp,
    ) -> impl Future<Output = Result<AckedAndClaimed, StoreError>> + Send {
        async move {
            let acks = if acks.is_empty() {
                Vec::new()
            } else {
                self.ack(acks, now).await?
            };
            let jobs = match claim {
                Some(req) => self.claim(req).await?,
                None => Vec::new(),
            };
            Ok(AckedAndClaimed {
                acks,
                jobs,
                next_due: None,
            })
        }
    }

    /// Extends leases to `until`; one outcome per lease, in order.
    fn extend(
        &self,
        leases: &[LeaseRef],
        until: Timestamp,
        now: Timestamp,
    ) -> impl Future<Output = Result<Vec<ExtendOutcome>, StoreError>> + Send;

    /// Takes back up to `limit` jobs whose lease lapsed before `now`: they
    /// run again (the attempt stays spent), or are dead when none is left.
    fn rescue(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> impl Future<Output = Result<RescueReport, StoreError>> + Send;

    /// One job.
    fn get(&self, id: JobId) -> impl Future<Output = Result<Option<Job>, StoreError>> + Send;

    /// Deletes up to `limit` finished jobs older than their queue's retention.
    fn prune(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
}
