//! Queue settings.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::name::QueueName;
use crate::retry::RetryPolicy;

/// What a group does when its head job dies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnDead {
    /// The next job of the group runs (the default, as in the Prisma seed).
    #[default]
    Continue,
    /// The group waits until an operator retries or purges the dead head.
    Hold,
}

/// How long finished jobs are kept before [`crate::Store::prune`] removes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retention {
    /// Completed and cancelled jobs (default 7 days). Zero removes them at once.
    #[serde(with = "crate::time::serde_millis")]
    pub completed: Duration,
    /// Dead jobs (default 30 days).
    #[serde(with = "crate::time::serde_millis")]
    pub dead: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            completed: Duration::from_secs(7 * 24 * 3600),
            dead: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

/// A queue's settings, stored by the backend so every process sees the same.
///
/// ```
/// use std::time::Duration;
/// use wq::{OnDead, QueueConfig};
///
/// let campaign = QueueConfig::new("campaign")
///     .concurrency(4)
///     .max_attempts(5)
///     .on_dead(OnDead::Hold)
///     .lease(Duration::from_secs(60));
/// assert_eq!(campaign.retry.max_attempts, 5);
/// ```
///
/// More settings may come: other crates start from [`QueueConfig::new`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct QueueConfig {
    /// The queue's name.
    pub name: QueueName,
    /// Handlers one worker runs at once for this queue (default 10).
    pub concurrency: usize,
    /// Priority of jobs enqueued without one (default 0; lower runs first).
    pub default_priority: i16,
    /// Retries, backoff and dead-lettering.
    pub retry: RetryPolicy,
    /// What a group does when its head dies.
    pub on_dead: OnDead,
    /// Lease length (default 30 s); the worker renews at a third of it.
    #[serde(with = "crate::time::serde_millis")]
    pub lease: Duration,
    /// Longest one attempt may run before it counts as failed (default 5 min).
    #[serde(with = "crate::time::serde_millis")]
    pub timeout: Duration,
    /// How long finished jobs are kept.
    pub retention: Retention,
    /// Largest payload accepted, in bytes (default 256 KiB).
    pub max_payload_bytes: usize,
    /// Least time between one job of a group finishing and the next job of
    /// the group starting (default zero). The backend pushes the next
    /// head's `run_at` forward when the group moves on, so the gap holds
    /// however the jobs were enqueued, and when a backlog drains after a
    /// pause. A retried or continued job keeps its own times.
    #[serde(with = "crate::time::serde_millis", default)]
    pub group_gap: Duration,
}

impl QueueConfig {
    /// Default lease length.
    pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

    /// A queue with the defaults of the systems wq replaces.
    pub fn new(name: impl Into<QueueName>) -> Self {
        Self {
            name: name.into(),
            concurrency: 10,
            default_priority: 0,
            retry: RetryPolicy::default(),
            on_dead: OnDead::Continue,
            lease: Self::DEFAULT_LEASE,
            timeout: Duration::from_secs(300),
            retention: Retention::default(),
            max_payload_bytes: 256 * 1024,
            group_gap: Duration::ZERO,
        }
    }

    /// Sets the handlers run at once per worker.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n;
        self
    }

    /// Sets the priority of jobs enqueued without one.
    pub fn default_priority(mut self, p: i16) -> Self {
        self.default_priority = p;
        self
    }

    /// Sets the whole retry policy.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Sets the attempts allowed before a job is dead.
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.retry.max_attempts = n;
        self
    }

    /// Sets what a group does when its head dies.
    pub fn on_dead(mut self, on_dead: OnDead) -> Self {
        self.on_dead = on_dead;
        self
    }

    /// Sets the lease length.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// Sets the per-attempt timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets retention of finished jobs.
    pub fn retention(mut self, retention: Retention) -> Self {
        self.retention = retention;
        self
    }

    /// Sets the largest payload accepted.
    pub fn max_payload_bytes(mut self, n: usize) -> Self {
        self.max_payload_bytes = n;
        self
    }

    /// Sets the least time between a group's job finishing and its next
    /// job starting.
    pub fn group_gap(mut self, gap: Duration) -> Self {
        self.group_gap = gap;
        self
    }

    /// How often a running job's lease is renewed.
    pub fn heartbeat(&self) -> Duration {
        self.lease / 3
    }
}

/// A queue's settings together with its run-time state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueInfo {
    /// The settings.
    pub config: QueueConfig,
    /// Whether claiming is paused.
    pub paused: bool,
}
