//! A job's attempt history and output: what each run of its handler came
//! to, kept with the job for as long as the job is retained.
//!
//! Every backend appends one [`Attempt`] in the same call that ends a run
//! (an acknowledgement, or the rescue of a lapsed lease), so the history
//! never disagrees with the job's state. Backends store the records as the
//! JSON that serde makes of them, which is also how `wq serve` shows them.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

/// Most runs a job's history keeps; older ones are dropped first. A job
/// that waits out a long outage defers many times, and the history must
/// not grow with it.
pub const MAX_HISTORY: usize = 20;

/// Largest output, in bytes of JSON, a handler may store with a completed
/// job: enough for a receipt, not a place for data.
pub const MAX_OUTPUT: usize = 16 * 1024;

/// The message a run's record and `last_error` carry when its lease lapsed.
pub const LEASE_LAPSED: &str =
    "lease expired: the worker stopped heartbeating (crashed or stalled)";

/// How one run of a job's handler ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum AttemptOutcome {
    /// The handler succeeded: the job completed.
    Completed,
    /// The run failed and the job runs again (the attempt is spent).
    Retried,
    /// The handler asked to wait; the attempt was given back.
    Deferred,
    /// The handler ended a step and continues at the next one.
    Continued,
    /// The worker shut down and gave the job back untouched.
    Released,
    /// The run failed and no attempt was left, or retrying could not help.
    Dead,
    /// An operator cancelled the job while it ran.
    Cancelled,
    /// The worker stopped heartbeating; maintenance took the job back.
    Lapsed,
}

impl AttemptOutcome {
    /// The lowercase name, as stored by backends.
    pub const fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Completed => "completed",
            AttemptOutcome::Retried => "retried",
            AttemptOutcome::Deferred => "deferred",
            AttemptOutcome::Continued => "continued",
            AttemptOutcome::Released => "released",
            AttemptOutcome::Dead => "dead",
            AttemptOutcome::Cancelled => "cancelled",
            AttemptOutcome::Lapsed => "lapsed",
        }
    }
}

/// One finished run of a job's handler.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Attempt {
    /// The attempt number the run had (from 1). A deferral, a step or a
    /// release gives the attempt back, so the next run has the same number.
    pub attempt: u32,
    /// When the run was claimed (microseconds in JSON, as every
    /// [`Timestamp`]).
    pub started_at: Timestamp,
    /// When it ended: its acknowledgement, or the rescue of its lapsed lease.
    pub ended_at: Timestamp,
    /// The worker that ran it.
    pub worker: Arc<str>,
    /// How it ended.
    pub outcome: AttemptOutcome,
    /// The failure, or the reason to wait; `None` for a success, a step or
    /// a release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Attempt {
    /// A run of attempt `attempt` on `worker`, from `started_at` to
    /// `ended_at`, that ended as `outcome`.
    pub fn new(
        attempt: u32,
        started_at: Timestamp,
        ended_at: Timestamp,
        worker: impl Into<Arc<str>>,
        outcome: AttemptOutcome,
        error: Option<String>,
    ) -> Self {
        Self {
            attempt,
            started_at,
            ended_at,
            worker: worker.into(),
            outcome,
            error,
        }
    }
}

/// Appends `attempt` to `history`, dropping the oldest runs beyond
/// [`MAX_HISTORY`].
pub fn push_history(history: &mut Vec<Attempt>, attempt: Attempt) {
    if history.len() >= MAX_HISTORY {
        history.drain(..=history.len() - MAX_HISTORY);
    }
    history.push(attempt);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(n: u32) -> Attempt {
        let at = Timestamp::from_micros(i64::from(n));
        Attempt::new(n, at, at, "w", AttemptOutcome::Retried, None)
    }

    #[test]
    fn history_keeps_the_latest_runs() {
        let mut history = Vec::new();
        for n in 1..=(MAX_HISTORY as u32 + 5) {
            push_history(&mut history, run(n));
        }
        assert_eq!(history.len(), MAX_HISTORY);
        assert_eq!(history[0].attempt, 6);
        assert_eq!(history[MAX_HISTORY - 1].attempt, MAX_HISTORY as u32 + 5);
    }

    #[test]
    fn records_serialize_with_their_field_names() {
        let json = serde_json::to_value(run(2)).expect("serialize");
        assert_eq!(
            json,
            serde_json::json!({
                "attempt": 2, "started_at": 2, "ended_at": 2,
                "worker": "w", "outcome": "retried"
            })
        );
        let back: Attempt = serde_json::from_value(json).expect("deserialize");
        assert_eq!(back, run(2));
    }
}
