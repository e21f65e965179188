//! The [`Admin`] trait: what an operator does to a store, beside the
//! engine's hot path in [`Store`](crate::Store).
//!
//! Listing, counting, positions, the dead-letter queue, cancelling and
//! pausing are an operator's calls: the worker never makes them. Keeping
//! them apart shows a backend author which calls must be fast under load
//! (the engine's) and which must stay correct while the engine runs (these).

use std::future::Future;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::StoreError;
use crate::job::{Job, JobId, JobState};
use crate::name::{GroupKey, QueueName};
use crate::queue::QueueInfo;
use crate::time::Timestamp;

/// What an operator does to jobs and queues: every backend implements it
/// next to [`Store`](crate::Store).
pub trait Admin: Send + Sync + 'static {
    /// Every declared queue, by name.
    fn list_queues(&self) -> impl Future<Output = Result<Vec<QueueInfo>, StoreError>> + Send;

    /// Pauses or resumes claiming from a queue; enqueueing goes on.
    fn set_paused(
        &self,
        queue: &QueueName,
        paused: bool,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Cancels a waiting job at once; a running job gets its cancellation
    /// requested and ends when its worker reports back or its lease lapses.
    fn cancel(
        &self,
        id: JobId,
        now: Timestamp,
    ) -> impl Future<Output = Result<Job, StoreError>> + Send;

    /// Jobs matching a filter, in id order.
    fn list(&self, query: &ListQuery) -> impl Future<Output = Result<Vec<Job>, StoreError>> + Send;

    /// Jobs of a queue by state.
    fn counts(&self, queue: &QueueName) -> impl Future<Output = Result<Counts, StoreError>> + Send;

    /// When the job next in line became due: the earliest `run_at` among
    /// the first job a claim would take now (of an open session or none)
    /// and the jobs that came due but were not yet promoted; `None` when no
    /// job is due. `now` minus it is how long the front of the queue has
    /// waited: what a dashboard shows as the queue's age. Constant cost,
    /// whatever the backlog.
    fn next_in_line(
        &self,
        queue: &QueueName,
        now: Timestamp,
    ) -> impl Future<Output = Result<Option<Timestamp>, StoreError>> + Send;

    /// Where a waiting job stands; `None` if it is not waiting.
    fn position(
        &self,
        id: JobId,
    ) -> impl Future<Output = Result<Option<Position>, StoreError>> + Send;

    /// Makes dead jobs available again with fresh attempts. A dead job that
    /// still heads its held group runs in place; otherwise it goes to the
    /// back of its group.
    fn retry_dead(
        &self,
        which: &DeadJobs,
        now: Timestamp,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Deletes dead jobs; a group held by its dead head moves on.
    fn purge_dead(
        &self,
        which: &DeadJobs,
        now: Timestamp,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
}

/// Jobs of one queue by state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Waiting for `run_at`.
    pub scheduled: u64,
    /// Due.
    pub available: u64,
    /// Leased.
    pub running: u64,
    /// Completed (and still retained).
    pub completed: u64,
    /// Dead (and still retained).
    pub dead: u64,
    /// Cancelled (and still retained).
    pub cancelled: u64,
    /// Jobs that reached a final state (completed, dead or cancelled) since
    /// the queue was declared, retained or not: it only grows, so its rate
    /// is the queue's throughput.
    pub finished: u64,
}

impl Counts {
    /// The count of one state.
    pub fn get(&self, state: JobState) -> u64 {
        match state {
            JobState::Scheduled => self.scheduled,
            JobState::Available => self.available,
            JobState::Running => self.running,
            JobState::Completed => self.completed,
            JobState::Dead => self.dead,
            JobState::Cancelled => self.cancelled,
        }
    }

    /// A mutable reference to the count of one state.
    pub fn get_mut(&mut self, state: JobState) -> &mut u64 {
        match state {
            JobState::Scheduled => &mut self.scheduled,
            JobState::Available => &mut self.available,
            JobState::Running => &mut self.running,
            JobState::Completed => &mut self.completed,
            JobState::Dead => &mut self.dead,
            JobState::Cancelled => &mut self.cancelled,
        }
    }

    /// All jobs counted by state (not [`finished`](Self::finished)).
    pub fn total(&self) -> u64 {
        JobState::ALL.into_iter().map(|s| self.get(s)).sum()
    }

    /// Jobs not yet terminal.
    pub fn pending(&self) -> u64 {
        self.scheduled + self.available + self.running
    }
}

/// Where a waiting job stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// Unfinished jobs of its group that must finish before it can start,
    /// the running one included (0: it heads the group); `None` for a job
    /// without a group.
    pub in_group: Option<u64>,
    /// Waiting jobs of its queue that start before it: ordered earlier by
    /// priority, `run_at` and enqueue order. Group order can only hold it
    /// back further.
    pub in_queue: u64,
}

/// A filter for [`Admin::list`]; results come in id order.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListQuery {
    /// Only this queue.
    pub queue: Option<QueueName>,
    /// Only this state.
    pub state: Option<JobState>,
    /// Only this group.
    pub group: Option<GroupKey>,
    /// Only this tenant's jobs.
    pub tenant: Option<Arc<str>>,
    /// Only the job with this idempotency key (needs `queue`: keys are
    /// unique per queue).
    pub idempotency_key: Option<Arc<str>>,
    /// Only ids after this one (the cursor of the next page).
    pub after: Option<JobId>,
    /// Most jobs returned.
    pub limit: usize,
}

impl ListQuery {
    /// Up to 100 jobs of any queue.
    pub fn new() -> Self {
        Self {
            queue: None,
            state: None,
            group: None,
            tenant: None,
            idempotency_key: None,
            after: None,
            limit: 100,
        }
    }

    /// Only `queue`.
    pub fn queue(mut self, queue: impl Into<QueueName>) -> Self {
        self.queue = Some(queue.into());
        self
    }

    /// Only jobs in `state`.
    pub fn state(mut self, state: JobState) -> Self {
        self.state = Some(state);
        self
    }

    /// Only jobs of `group`.
    pub fn group(mut self, group: impl Into<GroupKey>) -> Self {
        self.group = Some(group.into());
        self
    }

    /// Only jobs of `tenant`.
    pub fn tenant(mut self, tenant: impl Into<Arc<str>>) -> Self {
        self.tenant = Some(tenant.into());
        self
    }

    /// Only the job of `queue` with this idempotency key.
    pub fn idempotency_key(mut self, key: impl Into<Arc<str>>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// Only jobs after `id`.
    pub fn after(mut self, id: JobId) -> Self {
        self.after = Some(id);
        self
    }

    /// At most `limit` jobs.
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }

    /// Whether `job` passes the filter (the cursor and limit aside).
    pub fn matches(&self, job: &Job) -> bool {
        self.queue.as_ref().is_none_or(|q| *q == job.queue)
            && self.state.is_none_or(|s| s == job.state)
            && self
                .group
                .as_ref()
                .is_none_or(|g| job.group.as_ref() == Some(g))
            && self
                .tenant
                .as_ref()
                .is_none_or(|t| job.tenant.as_ref() == Some(t))
            && self
                .idempotency_key
                .as_ref()
                .is_none_or(|k| job.idempotency_key.as_ref() == Some(k))
    }
}

impl Default for ListQuery {
    fn default() -> Self {
        Self::new()
    }
}

/// Which dead jobs an operation applies to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeadJobs {
    /// Every dead job of the queue.
    All(QueueName),
    /// These jobs; ids that are not dead are skipped.
    Ids(Vec<JobId>),
}
