//! The [`Audit`] trait: a backend checks its own invariants.
//!
//! The guarantees rest on a few facts a backend keeps true after every call:
//! each group with waiting jobs has exactly one head (claimable or running),
//! that head is the group's lowest unfinished sequence, and every running job
//! holds a lease the rescuer can find. A bug that breaks one of them loses or
//! reorders jobs silently: a group without a head is never claimed again.
//! The audit turns such a bug into a number. The testkit runs it after every
//! round of its concurrent tests; the maintenance leader runs it on a timer,
//! repairs what it finds, logs an error and counts it in
//! [`WorkerStats::anomalies`](crate::WorkerStats::anomalies).

use std::fmt;
use std::future::Future;

use crate::error::StoreError;
use crate::job::JobId;
use crate::name::{GroupKey, QueueName};
use crate::time::Timestamp;

/// What an audit found wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AnomalyKind {
    /// A waiting job that no claim can reach: its group (or, for an
    /// ungrouped job, the job itself) has no claimable head and nothing
    /// running, and no dead head holds it. `job` is the one that should
    /// head it. Repair: make it claimable.
    Headless,
    /// A claimable or running job that is not its group's lowest unfinished
    /// sequence (or a second head beside another). `job` is the misplaced
    /// head. Repair: a waiting one stops being claimable and the group's
    /// true head is placed; a running one cannot be undone and is reported.
    MisplacedHead,
    /// A running job without a lease the rescuer can find: it would never
    /// run again if its worker died. Repair: its lease is made lapsed, so
    /// the next rescue takes it back.
    Unleased,
}

impl fmt::Display for AnomalyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AnomalyKind::Headless => "waiting job with no claimable head in its group",
            AnomalyKind::MisplacedHead => "head that is not its group's lowest sequence",
            AnomalyKind::Unleased => "running job with no lease the rescuer can find",
        })
    }
}

/// One broken invariant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Anomaly {
    /// What is wrong.
    pub kind: AnomalyKind,
    /// The queue.
    pub queue: QueueName,
    /// The group, if the job has one.
    pub group: Option<GroupKey>,
    /// The job concerned (see [`AnomalyKind`]).
    pub job: JobId,
    /// Whether the audit repaired it.
    pub repaired: bool,
}

impl fmt::Display for Anomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: job {} of queue `{}`",
            self.kind, self.job, self.queue
        )?;
        if let Some(g) = &self.group {
            write!(f, ", group `{g}`")?;
        }
        if self.repaired {
            f.write_str(" (repaired)")?;
        }
        Ok(())
    }
}

/// What one audit of a queue found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditReport {
    /// Every broken invariant, in no particular order.
    pub anomalies: Vec<Anomaly>,
    /// Waiting and running jobs looked at.
    pub checked: u64,
}

impl AuditReport {
    /// True when nothing was wrong.
    pub fn is_clean(&self) -> bool {
        self.anomalies.is_empty()
    }
}

/// A backend that checks, and can repair, its own invariants.
pub trait Audit: Send + Sync + 'static {
    /// Scans the waiting and running jobs of `queue` for the anomalies of
    /// [`AnomalyKind`] and repairs them when `repair` is set. It reads every
    /// unfinished job of the queue (in pages, where the backend would
    /// otherwise block others), so it is maintenance work, never hot path.
    /// What it reports was wrong in one consistent view of each group;
    /// a repair rechecks under the group's lock before it writes.
    fn audit(
        &self,
        queue: &QueueName,
        now: Timestamp,
        repair: bool,
    ) -> impl Future<Output = Result<AuditReport, StoreError>> + Send;
}
