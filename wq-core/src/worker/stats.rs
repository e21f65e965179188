//! Counters a worker keeps about what it did.

use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters, shared between a worker's tasks.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub claimed: AtomicU64,
    pub completed: AtomicU64,
    pub retried: AtomicU64,
    pub deferred: AtomicU64,
    pub stepped: AtomicU64,
    pub dead: AtomicU64,
    pub cancelled: AtomicU64,
    pub released: AtomicU64,
    pub stale: AtomicU64,
    pub lost: AtomicU64,
    pub audits: AtomicU64,
    pub anomalies: AtomicU64,
}

impl Stats {
    pub fn bump(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> WorkerStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        WorkerStats {
            claimed: get(&self.claimed),
            completed: get(&self.completed),
            retried: get(&self.retried),
            deferred: get(&self.deferred),
            stepped: get(&self.stepped),
            dead: get(&self.dead),
            cancelled: get(&self.cancelled),
            released: get(&self.released),
            stale: get(&self.stale),
            lost: get(&self.lost),
            audits: get(&self.audits),
            anomalies: get(&self.anomalies),
        }
    }
}

/// What a worker has done since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorkerStats {
    /// Jobs claimed (attempts started).
    pub claimed: u64,
    /// Attempts that completed their job.
    pub completed: u64,
    /// Attempts that failed and were rescheduled.
    pub retried: u64,
    /// Attempts deferred without spending an attempt (disconnected, rate limited).
    pub deferred: u64,
    /// Attempts that ended a step and continue later at the next
    /// ([`JobError::Continue`](crate::JobError::Continue)): no attempt
    /// spent, the slot freed.
    pub stepped: u64,
    /// Attempts that left their job dead.
    pub dead: u64,
    /// Attempts that ended in a requested cancellation.
    pub cancelled: u64,
    /// Jobs given back at shutdown.
    pub released: u64,
    /// Acknowledgements the store refused (the lease had lapsed).
    pub stale: u64,
    /// Attempts stopped because their lease was lost.
    pub lost: u64,
    /// Audits of a queue's invariants this worker ran as maintenance leader
    /// (see [`Worker::audit_every`](crate::Worker::audit_every)).
    pub audits: u64,
    /// Broken invariants those audits found (and repaired where they
    /// could), each logged at `error`. Any is a bug in the backend: jobs
    /// that would have waited forever, run out of order, or never been
    /// rescued. It stays 0 on a healthy store.
    pub anomalies: u64,
}

impl WorkerStats {
    /// Attempts that have ended, whatever the outcome.
    pub fn finished(&self) -> u64 {
        self.completed
            + self.retried
            + self.deferred
            + self.stepped
            + self.dead
            + self.cancelled
            + self.released
            + self.stale
            + self.lost
    }
}
