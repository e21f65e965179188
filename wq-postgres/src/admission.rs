//! `Admissions` over the `admissions` and `admitted` tables: the `admit`
//! function decides a new group under the session's row lock.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::Row;
use wq_core::{
    Admission, Admissions, Allowance, GroupKey, QueueName, SessionKey, StoreError, Timestamp,
};

use crate::PgStore;
use crate::codec::{from_pg, to_pg};
use crate::error;

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

impl PgStore {
    /// Sets the allowance (when `allowance` is given: `Some(None)` lifts
    /// it) or the hold (when `hold` is).
    async fn set_admissions(
        &self,
        queue: &QueueName,
        session: &SessionKey,
        allowance: Option<Option<&Allowance>>,
        hold: Option<Timestamp>,
    ) -> Result<(), StoreError> {
        let set = allowance.flatten();
        sqlx::query(self.inner.sql.set_admissions.clone())
            .bind(queue.as_str())
            .bind(session.as_str())
            .bind(allowance.is_some())
            .bind(set.map(|a| i32::try_from(a.new).unwrap_or(i32::MAX)))
            .bind(set.map(|a| micros(a.per)))
            .bind(hold.is_some())
            .bind(hold.map(to_pg))
            .execute(&self.inner.pool)
            .await
            .map_err(error::store)?;
        Ok(())
    }
}

impl Admissions for PgStore {
    async fn set_allowance(
        &self,
        queue: &QueueName,
        session: &SessionKey,
        allowance: Option<&Allowance>,
    ) -> Result<(), StoreError> {
        if let Some(a) = allowance {
            a.validate()?;
        }
        self.set_admissions(queue, session, Some(allowance), None)
            .await
    }

    async fn hold_admissions(
        &self,
        queue: &QueueName,
        session: &SessionKey,
        until: Timestamp,
    ) -> Result<(), StoreError> {
        self.set_admissions(queue, session, None, Some(until)).await
    }

    async fn admit(
        &self,
        queue: &QueueName,
        session: &SessionKey,
        group: &GroupKey,
        now: Timestamp,
    ) -> Result<Admission, StoreError> {
        let row = sqlx::query(self.inner.sql.admit.clone())
            .bind(queue.as_str())
            .bind(session.as_str())
            .bind(group.as_str())
            .bind(to_pg(now))
            .fetch_one(&self.inner.pool)
            .await
            .map_err(error::store)?;
        let outcome: i16 = row.try_get("outcome").map_err(error::store)?;
        let until: Option<DateTime<Utc>> = row.try_get("until").map_err(error::store)?;
        match (outcome, until) {
            (0, _) => Ok(Admission::Known),
            (1, _) => Ok(Admission::Admitted),
            (2, Some(until)) => Ok(Admission::Refused {
                until: from_pg(until),
            }),
            other => Err(StoreError::backend(format!("admit answered {other:?}"))),
        }
    }
}
