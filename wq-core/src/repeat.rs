//! Repeatable jobs: a job enqueued once per slot of a schedule by the
//! maintenance leader.
//!
//! A schedule is a fixed period or a cron expression. Fixed-period slots
//! are `offset + k * period` since the Unix epoch (UTC), so
//! `every(24 h).offset(9 h)` is "every day at 09:00 UTC". Cron slots are
//! the times the expression names on the wall clock of an IANA time zone,
//! so `"0 9 * * *"` in `America/Sao_Paulo` is 09:00 there whatever UTC
//! says; across a daylight-saving change a fixed time the clock skips runs
//! at the first minute after the gap, and one it repeats runs once.
//!
//! Each slot's job carries the idempotency key `repeat:{name}:{slot}` (the
//! slot's UTC time in microseconds), so a leader that takes over cannot
//! enqueue a slot twice; after downtime only the latest missed slot runs,
//! not a backlog of them.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

use crate::client::Enqueue;
use crate::error::ValidationError;
use crate::time::Timestamp;
use crate::validate;

/// When a [`Repeat`] has slots.
#[derive(Clone, Debug)]
enum Schedule {
    /// `offset + k * period` since the epoch, the offset being the
    /// [`Repeat`]'s.
    Every { period: Duration },
    /// The times `cron` names on the wall clock of `zone`.
    Cron { cron: Box<Cron>, zone: Tz },
}

/// A job enqueued on a schedule: a fixed period or a cron expression in a
/// time zone.
///
/// ```
/// use std::time::Duration;
/// use wq::{Enqueue, Repeat};
///
/// let job = Enqueue::new("automation", &serde_json::json!({ "kind": "report" }));
/// // Every day at 09:00 UTC.
/// let utc = Repeat::every("daily-report", Duration::from_secs(24 * 3600), job.clone())
///     .offset(Duration::from_secs(9 * 3600));
/// // Weekdays at 09:00 in São Paulo.
/// let local = Repeat::cron("weekday-report", "0 9 * * MON-FRI", "America/Sao_Paulo", job)?;
/// # let _ = (utc, local);
/// # Ok::<(), wq::ValidationError>(())
/// ```
#[derive(Clone, Debug)]
pub struct Repeat {
    name: Arc<str>,
    schedule: Schedule,
    offset: Duration,
    job: Enqueue,
}

impl Repeat {
    /// Enqueues `job` once every `period`, starting on the epoch.
    pub fn every(name: impl Into<Arc<str>>, period: Duration, job: Enqueue) -> Self {
        Self {
            name: name.into(),
            schedule: Schedule::Every { period },
            offset: Duration::ZERO,
            job,
        }
    }

    /// Enqueues `job` at the times the cron `expression` names on the wall
    /// clock of `zone`, an IANA time zone name such as `America/Sao_Paulo`
    /// or `UTC`.
    ///
    /// The expression has five fields (minute, hour, day of month, month,
    /// day of week) or six with seconds first; names (`JAN`, `MON`),
    /// ranges, lists, steps and `L`, `W`, `#` are understood. An expression
    /// that does not parse or never matches is refused naming
    /// `repeat.cron`, an unknown zone naming `repeat.zone`.
    pub fn cron(
        name: impl Into<Arc<str>>,
        expression: &str,
        zone: &str,
        job: Enqueue,
    ) -> Result<Self, ValidationError> {
        let zone = Tz::from_str(zone).map_err(|_| {
            ValidationError::new("repeat.zone", format!("`{zone}` is not an IANA time zone"))
        })?;
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build()
            .parse(expression)
            .map_err(|e| ValidationError::new("repeat.cron", format!("`{expression}`: {e}")))?;
        // A pattern such as "0 0 30 2 *" parses but has no time at all.
        let epoch = DateTime::<Utc>::UNIX_EPOCH.with_timezone(&zone);
        cron.find_next_occurrence(&epoch, false).map_err(|_| {
            ValidationError::new("repeat.cron", format!("`{expression}` never matches"))
        })?;
        Ok(Self {
            name: name.into(),
            schedule: Schedule::Cron {
                cron: Box::new(cron),
                zone,
            },
            offset: Duration::ZERO,
            job,
        })
    }

    /// Shifts the slots of a fixed period by `offset` (less than the
    /// period); [`validate`](Self::validate) refuses it on a cron schedule.
    pub fn offset(mut self, offset: Duration) -> Self {
        self.offset = offset;
        self
    }

    /// The schedule's name, unique among a worker's schedules.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Checks the name, and the period (1 s to a year) and offset of a
    /// fixed period; a cron schedule was checked when it was built.
    pub fn validate(&self) -> Result<(), ValidationError> {
        validate::name_like("repeat.name", &self.name, 128)?;
        match self.schedule {
            Schedule::Every { period } => {
                if period < Duration::from_secs(1) {
                    return Err(ValidationError::new("repeat.period", "is shorter than 1 s"));
                }
                validate::delay("repeat.period", period)?;
                if self.offset >= period {
                    return Err(ValidationError::new(
                        "repeat.offset",
                        "is not shorter than the period",
                    ));
                }
            }
            Schedule::Cron { .. } if !self.offset.is_zero() => {
                return Err(ValidationError::new(
                    "repeat.offset",
                    "applies to a fixed period, not to a cron schedule",
                ));
            }
            Schedule::Cron { .. } => {}
        }
        Ok(())
    }

    /// The latest slot at or before `now`; `None` when the schedule has no
    /// slot that early.
    pub fn slot(&self, now: Timestamp) -> Option<Timestamp> {
        match &self.schedule {
            Schedule::Every { period } => {
                let period = i64::try_from(period.as_micros()).unwrap_or(i64::MAX).max(1);
                let offset = i64::try_from(self.offset.as_micros()).unwrap_or(0);
                let since = now.as_micros() - offset;
                Some(Timestamp::from_micros(
                    since.div_euclid(period) * period + offset,
                ))
            }
            Schedule::Cron { cron, zone } => {
                let now =
                    DateTime::<Utc>::from_timestamp_micros(now.as_micros())?.with_timezone(zone);
                let slot = cron.find_previous_occurrence(&now, true).ok()?;
                Some(Timestamp::from_micros(slot.timestamp_micros()))
            }
        }
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

    fn cron(expression: &str, zone: &str) -> Repeat {
        Repeat::cron("c", expression, zone, Enqueue::new("q", &1)).unwrap()
    }

    fn at(rfc3339: &str) -> Timestamp {
        Timestamp::from_micros(
            DateTime::parse_from_rfc3339(rfc3339)
                .unwrap()
                .timestamp_micros(),
        )
    }

    #[test]
    fn slots_align_to_the_epoch_plus_offset() {
        let h = hourly();
        let t = Timestamp::from_millis(10 * 3_600_000 + 59 * 60_000);
        assert_eq!(h.slot(t), Some(Timestamp::from_millis(10 * 3_600_000)));
        assert_eq!(
            h.slot(Timestamp::from_millis(10 * 3_600_000)),
            Some(Timestamp::from_millis(10 * 3_600_000))
        );
        let at_nine = Repeat::every("d", Duration::from_secs(86_400), Enqueue::new("q", &1))
            .offset(Duration::from_secs(9 * 3600));
        let eight = Timestamp::from_millis(86_400_000 + 8 * 3_600_000);
        assert_eq!(
            at_nine.slot(eight),
            Some(Timestamp::from_millis(9 * 3_600_000))
        );
    }

    #[test]
    fn cron_slots_follow_a_zone_without_daylight_saving() {
        // São Paulo keeps UTC-3 all year: 09:00 there is 12:00 UTC.
        let nine = cron("0 9 * * *", "America/Sao_Paulo");
        let today = at("2025-06-10T12:00:00Z");
        assert_eq!(nine.slot(at("2025-06-10T15:30:00Z")), Some(today));
        assert_eq!(nine.slot(today), Some(today), "a slot is its own slot");
        assert_eq!(
            nine.slot(at("2025-06-10T12:00:00.000500Z")),
            Some(today),
            "within the slot's second"
        );
        assert_eq!(
            nine.slot(at("2025-06-10T11:59:59Z")),
            Some(at("2025-06-09T12:00:00Z"))
        );
        let job = format!("{:?}", nine.occurrence(today));
        assert!(
            job.contains(&format!("\"repeat:c:{}\"", today.as_micros())),
            "keyed by the slot's UTC time: {job}"
        );
    }

    #[test]
    fn cron_slots_follow_daylight_saving_changes() {
        let nine = cron("0 9 * * *", "America/New_York");
        // EST (UTC-5) before the change of 9 March 2025, EDT (UTC-4) after.
        assert_eq!(
            nine.slot(at("2025-03-08T20:00:00Z")),
            Some(at("2025-03-08T14:00:00Z"))
        );
        assert_eq!(
            nine.slot(at("2025-03-10T20:00:00Z")),
            Some(at("2025-03-10T13:00:00Z"))
        );
        // 02:30 does not exist on 9 March: it runs when the clock resumes.
        let skipped = cron("30 2 * * *", "America/New_York");
        assert_eq!(
            skipped.slot(at("2025-03-09T12:00:00Z")),
            Some(at("2025-03-09T07:00:00Z"))
        );
        assert_eq!(
            skipped.slot(at("2025-03-10T12:00:00Z")),
            Some(at("2025-03-10T06:30:00Z"))
        );
        // 01:30 happens twice on 2 November: it runs once, the first time.
        let repeated = cron("30 1 * * *", "America/New_York");
        assert_eq!(
            repeated.slot(at("2025-11-02T07:00:00Z")),
            Some(at("2025-11-02T05:30:00Z"))
        );
    }

    #[test]
    fn cron_takes_seconds_and_names() {
        let every_ten = cron("*/10 * * * * *", "UTC");
        assert_eq!(
            every_ten.slot(at("2025-01-01T00:00:19Z")),
            Some(at("2025-01-01T00:00:10Z"))
        );
        let fridays = cron("0 18 * * FRI", "Europe/Lisbon");
        assert_eq!(
            fridays.slot(at("2025-01-06T12:00:00Z")),
            Some(at("2025-01-03T18:00:00Z"))
        );
        assert!(fridays.validate().is_ok());
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
        let refused = |expression: &str, zone: &str| {
            Repeat::cron("x", expression, zone, Enqueue::new("q", &1))
                .unwrap_err()
                .field
        };
        assert_eq!(refused("0 9 * *", "UTC"), "repeat.cron");
        assert_eq!(refused("61 * * * *", "UTC"), "repeat.cron");
        assert_eq!(refused("0 0 30 2 *", "UTC"), "repeat.cron");
        assert_eq!(refused("0 9 * * *", "America/Atlantis"), "repeat.zone");
        assert_eq!(
            field(cron("0 9 * * *", "UTC").offset(Duration::from_secs(60))),
            "repeat.offset"
        );
    }
}
