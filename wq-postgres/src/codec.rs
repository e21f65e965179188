//! Between Rust values and the columns and codes of the schema.

use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use wq_core::{
    AckAction, AckOutcome, Attempt, ExtendOutcome, GroupKey, Job, JobId, JobState, Lease, Payload,
    QueueName, SessionKey, Timestamp,
};

/// A wq time as Postgres' `timestamptz` (both count microseconds).
pub fn to_pg(t: Timestamp) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.as_micros()).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// A `timestamptz` as a wq time.
pub fn from_pg(t: DateTime<Utc>) -> Timestamp {
    Timestamp::from_micros(t.timestamp_micros())
}

/// The code a state is stored as.
pub fn state_code(state: JobState) -> i16 {
    match state {
        JobState::Scheduled => 0,
        JobState::Available => 1,
        JobState::Running => 2,
        JobState::Completed => 3,
        JobState::Dead => 4,
        JobState::Cancelled => 5,
    }
}

/// The state a code stands for.
pub fn state_from(code: i16) -> Result<JobState, sqlx::Error> {
    JobState::ALL
        .into_iter()
        .find(|s| state_code(*s) == code)
        .ok_or_else(|| sqlx::Error::Decode(format!("unknown state code {code}").into()))
}

/// An acknowledgement's action as the `ack` function's arguments: code,
/// `run_at`, message (for a continue, the step).
pub fn action_args(action: &AckAction) -> (i16, Option<DateTime<Utc>>, Option<String>) {
    match action {
        AckAction::Complete { .. } => (0, None, None),
        AckAction::Retry { run_at, error } => (1, Some(to_pg(*run_at)), Some(error.clone())),
        AckAction::Defer { run_at, reason } => (2, Some(to_pg(*run_at)), Some(reason.clone())),
        AckAction::Kill { error } => (3, None, Some(error.clone())),
        AckAction::Release => (4, None, None),
        AckAction::Continue { run_at, step } => (5, Some(to_pg(*run_at)), Some(step.clone())),
    }
}

/// The output a completion stores, as JSON text.
pub fn action_output(action: &AckAction) -> Option<String> {
    match action {
        AckAction::Complete { output } => output.as_ref().map(|o| o.as_str().to_owned()),
        _ => None,
    }
}

/// An acknowledgement's outcome from the `ack` function's codes.
pub fn ack_outcome(outcome: i16, state: Option<i16>) -> Result<AckOutcome, sqlx::Error> {
    match (outcome, state) {
        (0, Some(code)) => Ok(AckOutcome::Applied(state_from(code)?)),
        (1, _) => Ok(AckOutcome::Stale),
        (2, _) => Ok(AckOutcome::NotFound),
        other => Err(sqlx::Error::Decode(
            format!("unknown ack outcome {other:?}").into(),
        )),
    }
}

/// A lease extension's outcome from the `extend` function's codes.
pub fn extend_outcome(code: i16) -> Result<ExtendOutcome, sqlx::Error> {
    match code {
        0 => Ok(ExtendOutcome::Extended),
        1 => Ok(ExtendOutcome::CancelRequested),
        2 => Ok(ExtendOutcome::Lost),
        other => Err(sqlx::Error::Decode(
            format!("unknown extend outcome {other}").into(),
        )),
    }
}

fn unsigned<T: TryFrom<i64>>(v: i64, column: &str) -> Result<T, sqlx::Error> {
    T::try_from(v).map_err(|_| sqlx::Error::Decode(format!("{column} out of range: {v}").into()))
}

/// A job from a row holding the columns of `jobs` (by name).
pub fn job(row: &PgRow) -> Result<Job, sqlx::Error> {
    let lease = match (
        row.try_get::<Option<i64>, _>("lease_token")?,
        row.try_get::<Option<DateTime<Utc>>, _>("lease_expires_at")?,
    ) {
        (Some(token), Some(expires_at)) => Some(Lease {
            token: unsigned(token, "lease_token")?,
            expires_at: from_pg(expires_at),
            worker: row
                .try_get::<Option<String>, _>("lease_worker")?
                .unwrap_or_default()
                .into(),
            started_at: from_pg(
                row.try_get::<Option<DateTime<Utc>>, _>("lease_started_at")?
                    .unwrap_or(expires_at),
            ),
        }),
        _ => None,
    };
    let mut job = Job::new(
        JobId::from_uuid(row.try_get("id")?),
        QueueName::new(row.try_get::<String, _>("queue")?),
        Payload::from_trusted(row.try_get::<String, _>("payload")?),
        from_pg(row.try_get("created_at")?),
    );
    job.tenant = row.try_get::<Option<String>, _>("tenant")?.map(Into::into);
    job.group = row
        .try_get::<Option<String>, _>("group_key")?
        .map(GroupKey::new);
    job.session = row
        .try_get::<Option<String>, _>("session")?
        .map(SessionKey::new);
    job.seq = unsigned(row.try_get("seq")?, "seq")?;
    job.priority = row.try_get("priority")?;
    job.run_at = from_pg(row.try_get("run_at")?);
    job.attempt = unsigned(row.try_get::<i32, _>("attempt")?.into(), "attempt")?;
    job.max_attempts = unsigned(
        row.try_get::<i32, _>("max_attempts")?.into(),
        "max_attempts",
    )?;
    job.state = state_from(row.try_get("state")?)?;
    job.idempotency_key = row
        .try_get::<Option<String>, _>("idempotency_key")?
        .map(Into::into);
    job.lease = lease;
    job.cancel_requested = row.try_get("cancel_requested")?;
    job.last_error = row.try_get("last_error")?;
    job.step = row.try_get("step")?;
    job.output = row
        .try_get::<Option<String>, _>("output")?
        .map(Payload::from_trusted);
    job.history = row
        .try_get::<Option<Json<Vec<Attempt>>>, _>("history")?
        .map_or_else(Vec::new, |h| h.0);
    job.updated_at = from_pg(row.try_get("updated_at")?);
    job.finished_at = row
        .try_get::<Option<DateTime<Utc>>, _>("finished_at")?
        .map(from_pg);
    Ok(job)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip_to_the_microsecond() {
        let t = Timestamp::from_micros(1_795_341_845_000_123);
        assert_eq!(from_pg(to_pg(t)), t);
    }

    #[test]
    fn state_codes_round_trip() {
        for s in JobState::ALL {
            assert_eq!(state_from(state_code(s)).ok(), Some(s));
        }
        assert!(state_from(9).is_err());
    }
}
