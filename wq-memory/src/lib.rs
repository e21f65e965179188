//! # wq-memory
//!
//! The in-process backend of wq: every guarantee of the design, for tests,
//! demos and single-process apps. Jobs live as long as the process (that is
//! its durability); claim and acknowledge cost O(log n) and never scan the
//! backlog, and one lock keeps it safe under many concurrent workers.
//!
//! ```
//! use wq::{Client, Enqueue, MemoryStore, QueueConfig};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), wq::Error> {
//! let client = Client::new(MemoryStore::new());
//! client.declare_queue(QueueConfig::new("message")).await?;
//! let first = client.enqueue(Enqueue::new("message", &"hi").idempotency_key("wamid.1")).await?;
//! let again = client.enqueue(Enqueue::new("message", &"hi").idempotency_key("wamid.1")).await?;
//! assert!(first.created && !again.created);
//! assert_eq!(first.job.id, again.job.id);
//! # Ok(())
//! # }
//! ```
#![cfg_attr(
    not(test),
    warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

mod state;

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use wq_core::{
    Ack, AckOutcome, AckedAndClaimed, Admin, Admission, Admissions, Allowance, Audit, AuditReport,
    ClaimRequest, Counts, DeadJobs, Enqueued, ExtendOutcome, GroupKey, Job, JobId, LeaseRef,
    ListQuery, Lock, LockLease, NewJob, PauseChange, Position, QueueConfig, QueueInfo, QueueName,
    RescueReport, Scheduler, SessionInfo, SessionKey, SessionLimits, Sessions, Store, StoreError,
    Timestamp, WakeSignal, Wakeups,
};

use state::State;

/// The in-memory backend. Clones share the same jobs.
#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    wakeups: Wakeups,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `f` under the lock, then wakes the queues it touched.
    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let (out, wakes) = {
            let mut state = self.shared.state.lock();
            let out = f(&mut state);
            state.settle_sessions();
            (out, state.take_wakes())
        };
        for w in wakes {
            w.wake();
        }
        out
    }

    fn read<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        f(&self.shared.state.lock())
    }
}

impl Store for MemoryStore {
    async fn declare_queue(&self, config: &QueueConfig) -> Result<(), StoreError> {
        let wake = self.shared.wakeups.sender(&config.name);
        self.with(|s| s.declare_queue(config, wake));
        Ok(())
    }

    async fn queue_info(&self, queue: &QueueName) -> Result<Option<QueueInfo>, StoreError> {
        Ok(self.read(|s| s.queue_info(queue)))
    }

    async fn enqueue(
        &self,
        jobs: Vec<NewJob>,
        now: Timestamp,
    ) -> Result<Vec<Enqueued>, StoreError> {
        self.with(|s| s.enqueue(jobs, now))
    }

    async fn claim(&self, req: &ClaimRequest) -> Result<Vec<Job>, StoreError> {
        self.with(|s| s.claim(req))
    }

    async fn ack(&self, acks: &[Ack], now: Timestamp) -> Result<Vec<AckOutcome>, StoreError> {
        Ok(self.with(|s| s.ack(acks, now)))
    }

    async fn ack_and_claim(
        &self,
        acks: &[Ack],
        claim: Option<&ClaimRequest>,
        now: Timestamp,
    ) -> Result<AckedAndClaimed, StoreError> {
        self.with(|s| {
            let acks = s.ack(acks, now);
            let (jobs, next_due) = match claim {
                Some(req) => {
                    let jobs = s.claim(req)?;
                    let short = jobs.len() < req.limit;
                    let next = if short {
                        Some(s.next_due(&req.queue, req.now)?)
                    } else {
                        None
                    };
                    (jobs, next)
                }
                None => (Vec::new(), None),
            };
            Ok(AckedAndClaimed {
                acks,
                jobs,
                next_due,
            })
        })
    }

    async fn extend(
        &self,
        leases: &[LeaseRef],
        until: Timestamp,
        now: Timestamp,
    ) -> Result<Vec<ExtendOutcome>, StoreError> {
        Ok(self.with(|s| s.extend(leases, until, now)))
    }

    async fn rescue(&self, now: Timestamp, limit: usize) -> Result<RescueReport, StoreError> {
        Ok(self.with(|s| s.rescue(now, limit)))
    }

    async fn get(&self, id: JobId) -> Result<Option<Job>, StoreError> {
        Ok(self.read(|s| s.get(id)))
    }

    async fn prune(&self, now: Timestamp, limit: usize) -> Result<u64, StoreError> {
        Ok(self.with(|s| s.prune(now, limit)))
    }
}

impl Admin for MemoryStore {
    async fn list_queues(&self) -> Result<Vec<QueueInfo>, StoreError> {
        Ok(self.read(State::list_queues))
    }

    async fn set_paused(&self, queue: &QueueName, paused: bool) -> Result<(), StoreError> {
        self.with(|s| s.set_paused(queue, paused))
    }

    async fn cancel(&self, id: JobId, now: Timestamp) -> Result<Job, StoreError> {
        self.with(|s| s.cancel(id, now))
    }

    async fn list(&self, query: &ListQuery) -> Result<Vec<Job>, StoreError> {
        Ok(self.read(|s| s.list(query)))
    }

    async fn counts(&self, queue: &QueueName) -> Result<Counts, StoreError> {
        self.read(|s| s.counts(queue))
    }

    async fn next_in_line(
        &self,
        queue: &QueueName,
        now: Timestamp,
    ) -> Result<Option<Timestamp>, StoreError> {
        self.read(|s| s.next_in_line(queue, now))
    }

    async fn position(&self, id: JobId) -> Result<Option<Position>, StoreError> {
        Ok(self.read(|s| s.position(id)))
    }

    async fn retry_dead(&self, which: &DeadJobs, now: Timestamp) -> Result<u64, StoreError> {
        Ok(self.with(|s| s.retry_dead(which, now)))
    }

    async fn purge_dead(&self, which: &DeadJobs, now: Timestamp) -> Result<u64, StoreError> {
        Ok(self.with(|s| s.purge_dead(which, now)))
    }
}

impl Admissions for MemoryStore {
    async fn set_allowance(
        &self,
        queue: &QueueName,
        session: &SessionKey,
        allowance: Option<&Allowance>,
    ) -> Result<(), StoreError> {
        self.with(|s| s.set_allowance(queue, session, allowance))
    }

    async fn hold_admissions(
        &self,
        queue: &QueueName,
        session: &SessionKey,
        until: Timestamp,
    ) -> Result<(), StoreError> {
        self.with(|s| s.hold_admissions(queue, session, until))
    }

    async fn admit(
        &self,
        queue: &QueueName,
        session: &SessionKey,
        group: &GroupKey,
        now: Timestamp,
    ) -> Result<Admission, StoreError> {
        self.with(|s| s.admit(queue, session, group, now))
    }
}

impl Sessions for MemoryStore {
    async fn set_session_limits(
        &self,
        queue: &QueueName,
        session: &SessionKey,
        limits: &SessionLimits,
    ) -> Result<(), StoreError> {
        limits.validate()?;
        self.with(|s| s.set_session_limits(queue, session, limits))
    }

    async fn set_session_paused(
        &self,
        queue: &QueueName,
        session: &SessionKey,
        change: &PauseChange,
    ) -> Result<bool, StoreError> {
        self.with(|s| s.set_session_paused(queue, session, change))
    }

    async fn session_info(
        &self,
        queue: &QueueName,
        session: &SessionKey,
    ) -> Result<Option<SessionInfo>, StoreError> {
        self.read(|s| s.session_info(queue, session))
    }

    async fn list_sessions(
        &self,
        queue: &QueueName,
        after: Option<&SessionKey>,
        limit: usize,
    ) -> Result<Vec<SessionInfo>, StoreError> {
        self.read(|s| s.list_sessions(queue, after, limit))
    }
}

impl Audit for MemoryStore {
    async fn audit(
        &self,
        queue: &QueueName,
        now: Timestamp,
        repair: bool,
    ) -> Result<AuditReport, StoreError> {
        self.with(|s| s.audit(queue, now, repair))
    }
}

impl Lock for MemoryStore {
    async fn acquire_lock(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
        now: Timestamp,
    ) -> Result<Option<LockLease>, StoreError> {
        Ok(self.with(|s| s.acquire_lock(name, holder, ttl, now)))
    }

    async fn renew_lock(
        &self,
        lease: &LockLease,
        ttl: Duration,
        now: Timestamp,
    ) -> Result<Option<LockLease>, StoreError> {
        Ok(self.with(|s| s.renew_lock(lease, ttl, now)))
    }

    async fn release_lock(&self, lease: &LockLease) -> Result<bool, StoreError> {
        Ok(self.with(|s| s.release_lock(lease)))
    }
}

impl Scheduler for MemoryStore {
    fn subscribe(&self, queue: &QueueName) -> WakeSignal {
        self.shared.wakeups.subscribe(queue)
    }

    async fn next_due(
        &self,
        queue: &QueueName,
        now: Timestamp,
    ) -> Result<Option<Timestamp>, StoreError> {
        self.read(|s| s.next_due(queue, now))
    }

    async fn promote_due(&self, queue: &QueueName, now: Timestamp) -> Result<u64, StoreError> {
        self.with(|s| s.promote_due(queue, now))
    }
}
