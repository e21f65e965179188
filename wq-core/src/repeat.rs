//! Repeatable jobs: a job enqueued once per slot of a fixed schedule by the
//! maintenance leader.
//!
//! Slots are `offset + k * period` since the Unix epoch (UTC), so
//! `every(24 h).offset(9 h)` is "every day at 09:00 UTC". Each slot's job
//! carries the idempotency key `repeat:{name}:{slot}`, so a leader that takes
//! over cannot enqueue a slot twice; after downtime only the latest missed
//! slot runs, not a backlog of them.

use std::sync::Arc;
use std::time::Duration;

use crate::client::Enqueue;
use crate::error::ValidationError;
use crate::time::Timestamp;
use crate::validate;

/// A job enqueued on a fixed schedule.
///
/// ```
/// use std::time::Duration;
/// use wq_core::{Enqueue, Repeat};
///
/// let report = Repeat::every(
///     "daily-report",
///     Duration::from_secs(24 * 3600),
///     Enqueue::new("automation", &serde_json::json!({ "kind": "report" })),
/// )
/// .offset(Duration::from_secs(9 * 3600)); // 09:00 UTC
/// # let _ = report;
/// ```
#[derive(Clone, Debug)]
pub struct Repeat {
    name: Arc<str>,
    period: Duration,
    offset: Duration,
    job: Enqueue,
}

impl Repeat {
    /// Enqueues `job` once every `period`, starting on the epoch.
    pub fn every(name: impl Into<Arc<str>>, period: Duration, job: Enqueue) -> Self {
        Self {
            name: name.into(),
            period,
            offset: Duration::ZERO,
            job,
        }
    }

    /// Shifts the slots by `offset` (less than the period).
    pub fn offset(mut self, offset: Duration) -> Self {
        self.offset = offset;
        self
    }

    /// The schedule's name, unique among a worker's schedules.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Checks the name, the period (1 s to a year) and the offset.
    pub fn validate(&self) -> Result<(), ValidationError> {
        validate::name_like("repeat.name", &self.name, 128)?;
        if self.period < Duration::from_secs(1) {
            return Err(ValidationError::new("repeat.period", "is shorter than 1 s"));
        }
        validate::delay("repeat.period", self.period)?;
        if self.offset >= self.period {
            return Err(ValidationError::new(
                "repeat.offset",
                "is not shorter than the period",
            ));
        }
        Ok(())
    }

    /// The latest slot at or before `now`.
    pub fn slot(&self, now: Timestamp) -> Timestamp {
        let period = i64::try_from(self.period.as_micros())
            .unwrap_or(i64::MAX)
            .max(1);
        let offset = i64::try_from(self.offset.as_micros()).unwrap_or(0);
        let since = now.as_micros() - offset;
        Timestamp::from_micros(since.div_euclid(period) * period + offset)
    }

    /// The job of one slot: due at the slot, deduplicated by slot.
    pub fn occurrence(&self, slot: Timestamp) -> Enqueue {
        self.job.clone().run_at(slot).idempotency_key(format!(
            "repeat:{}:{}",
            self.name,
            slot.as_micros()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hourly() -> Repeat {
        Repeat::every("h", Duration::from_secs(3600), Enqueue::new("q", &1))
    }

    #[test]
    fn slots_align_to_the_epoch_plus_offset() {
        let h = hourly();
        let t = Timestamp::from_millis(10 * 3_600_000 + 59 * 60_000);
        assert_eq!(h.slot(t), Timestamp::from_millis(10 * 3_600_000));
        assert_eq!(
            h.slot(Timestamp::from_millis(10 * 3_600_000)),
            Timestamp::from_millis(10 * 3_600_000)
        );
        let at_nine = Repeat::every("d", Duration::from_secs(86_400), Enqueue::new("q", &1))
            .offset(Duration::from_secs(9 * 3600));
        let eight = Timestamp::from_millis(86_400_000 + 8 * 3_600_000);
        assert_eq!(at_nine.slot(eight), Timestamp::from_millis(9 * 3_600_000));
    }

    #[test]
    fn bad_schedules_name_the_field() {
        let field = |r: Repeat| r.validate().unwrap_err().field;
        assert_eq!(
            field(Repeat::every(
                "",
                Duration::from_secs(60),
                Enqueue::new("q", &1)
            )),
            "repeat.name"
        );
        assert_eq!(
            field(Repeat::every(
                "x",
                Duration::from_millis(10),
                Enqueue::new("q", &1)
            )),
            "repeat.period"
        );
        assert_eq!(
            field(hourly().offset(Duration::from_secs(3600))),
            "repeat.offset"
        );
        assert!(hourly().validate().is_ok());
    }
}
