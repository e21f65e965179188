//! `Sessions` over the `sessions` table: limits and pause set through the
//! `set_session` function, which brings the session's state up to date for
//! the claim; counts read in one statement.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::postgres::PgRow;
use wq_core::{
    PauseChange, QueueName, Rate, SessionInfo, SessionKey, SessionLimits, Sessions, StoreError,
};

use crate::PgStore;
use crate::codec::from_pg;
use crate::error;

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

fn unsigned(d: i64) -> Duration {
    Duration::from_micros(u64::try_from(d).unwrap_or(0))
}

/// A session from a row of the `session_info` or `list_sessions`
/// statements; `None` for the queue's row without one.
fn session(queue: &QueueName, row: &PgRow) -> Result<Option<SessionInfo>, sqlx::Error> {
    let Some(key) = row.try_get::<Option<String>, _>("session")? else {
        return Ok(None);
    };
    let rate = match (
        row.try_get::<Option<i32>, _>("rate_starts")?,
        row.try_get::<Option<i64>, _>("rate_per_us")?,
    ) {
        (Some(starts), Some(per)) => Some(
            Rate::new(u32::try_from(starts).unwrap_or(0), unsigned(per)).jitter(unsigned(
                row.try_get::<Option<i64>, _>("rate_jitter_us")?
                    .unwrap_or(0),
            )),
        ),
        _ => None,
    };
    let mut limits = SessionLimits::new();
    limits.max_running = row
        .try_get::<Option<i32>, _>("max_running")?
        .and_then(|n| u32::try_from(n).ok());
    limits.rate = rate;
    let mut info = SessionInfo::new(queue.clone(), SessionKey::new(key));
    info.limits = limits;
    info.paused = row.try_get("paused")?;
    info.pause_reason = row.try_get("pause_reason")?;
    info.running = u64::try_from(row.try_get::<i32, _>("running")?).unwrap_or(0);
    info.waiting = u64::try_from(row.try_get::<i64, _>("waiting")?).unwrap_or(0);
    // Reported only while a rate applies, as the contract says.
    info.next_start = match rate {
        Some(_) => row
            .try_get::<Option<DateTime<Utc>>, _>("next_start")?
            .map(from_pg),
        None => None,
    };
    Ok(Some(info))
}

impl PgStore {
    /// Sets a session's limits (when `limits` is given) and changes its
    /// pause (when `pause` is), then wakes this process's workers of the
    /// queue: the change may let the session start a job (other processes
    /// wake on the function's notification). True if the pause changed.
    async fn set_session(
        &self,
        queue: &QueueName,
        key: &SessionKey,
        limits: Option<&SessionLimits>,
        pause: Option<&PauseChange>,
    ) -> Result<bool, StoreError> {
        let rate = limits.and_then(|l| l.rate);
        let (change, reason) = match pause {
            None => (None, None),
            Some(PauseChange::Pause(r)) => (Some(1i16), Some(r.as_str())),
            Some(PauseChange::PauseUnlessPaused(r)) => (Some(2), Some(r.as_str())),
            Some(PauseChange::Resume) => (Some(3), None),
            Some(PauseChange::ResumeIf(r)) => (Some(4), Some(r.as_str())),
        };
        let row = sqlx::query(self.inner.sql.set_session.clone())
            .bind(queue.as_str())
            .bind(key.as_str())
            .bind(limits.is_some())
            .bind(
                limits
                    .and_then(|l| l.max_running)
                    .map(|n| i32::try_from(n).unwrap_or(i32::MAX)),
            )
            .bind(rate.map(|r| i32::try_from(r.starts).unwrap_or(i32::MAX)))
            .bind(rate.map(|r| micros(r.per)))
            .bind(rate.map(|r| micros(r.jitter)))
            .bind(change)
            .bind(reason)
            .fetch_one(&self.inner.pool)
            .await
            .map_err(error::store)?;
        self.inner.wakeups.wake(queue);
        row.try_get("changed").map_err(error::store)
    }
}

impl Sessions for PgStore {
    async fn set_session_limits(
        &self,
        queue: &QueueName,
        session: &SessionKey,
        limits: &SessionLimits,
    ) -> Result<(), StoreError> {
        limits.validate()?;
        self.set_session(queue, session, Some(limits), None)
            .await
            .map(drop)
    }

    async fn set_session_paused(
        &self,
        queue: &QueueName,
        session: &SessionKey,
        change: &PauseChange,
    ) -> Result<bool, StoreError> {
        self.set_session(queue, session, None, Some(change)).await
    }

    async fn session_info(
        &self,
        queue: &QueueName,
        key: &SessionKey,
    ) -> Result<Option<SessionInfo>, StoreError> {
        let rows = sqlx::query(self.inner.sql.session_info.clone())
            .bind(queue.as_str())
            .bind(key.as_str())
            .fetch_all(&self.inner.pool)
            .await
            .map_err(error::store)?;
        let Some(row) = rows.first() else {
            return Err(StoreError::UnknownQueue(queue.clone()));
        };
        session(queue, row).map_err(error::store)
    }

    async fn list_sessions(
        &self,
        queue: &QueueName,
        after: Option<&SessionKey>,
        limit: usize,
    ) -> Result<Vec<SessionInfo>, StoreError> {
        self.page_sessions(self.inner.sql.list_sessions.clone(), queue, after, limit)
            .await
    }

    async fn paused_sessions(
        &self,
        queue: &QueueName,
        after: Option<&SessionKey>,
        limit: usize,
    ) -> Result<Vec<SessionInfo>, StoreError> {
        self.page_sessions(self.inner.sql.paused_sessions.clone(), queue, after, limit)
            .await
    }
}

impl PgStore {
    /// A page of sessions by `statement` (`list_sessions` or
    /// `paused_sessions`).
    async fn page_sessions(
        &self,
        statement: sqlx::SqlStr,
        queue: &QueueName,
        after: Option<&SessionKey>,
        limit: usize,
    ) -> Result<Vec<SessionInfo>, StoreError> {
        let rows = sqlx::query(statement)
            .bind(queue.as_str())
            .bind(after.map_or("", |k| k.as_str()))
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.inner.pool)
            .await
            .map_err(error::store)?;
        if rows.is_empty() {
            return Err(StoreError::UnknownQueue(queue.clone()));
        }
        let mut sessions = Vec::with_capacity(rows.len());
        for row in &rows {
            if let Some(info) = session(queue, row).map_err(error::store)? {
                sessions.push(info);
            }
        }
        Ok(sessions)
    }
}
