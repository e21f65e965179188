//! `Lock`: a row per named lock, taken over only once it has lapsed.

use std::time::Duration;

use sqlx::Row;
use sqlx::postgres::PgRow;
use wq_core::{Lock, LockLease, StoreError, Timestamp};

use crate::PgStore;
use crate::codec::{from_pg, to_pg};
use crate::error;
use crate::error::first;

fn lease(row: &PgRow) -> Result<LockLease, sqlx::Error> {
    Ok(LockLease {
        name: row.try_get::<String, _>("name")?.into(),
        holder: row.try_get::<String, _>("holder")?.into(),
        token: u64::try_from(row.try_get::<i64, _>("token")?).unwrap_or(0),
        expires_at: from_pg(row.try_get("expires_at")?),
    })
}

impl Lock for PgStore {
    async fn acquire_lock(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
        now: Timestamp,
    ) -> Result<Option<LockLease>, StoreError> {
        let row = sqlx::query(self.inner.sql.acquire_lock.clone())
            .bind(name)
            .bind(holder)
            .bind(to_pg(now))
            .bind(to_pg(now + ttl))
            .fetch_all(&self.inner.pool)
            .await
            .map(first)
            .map_err(error::store)?;
        row.as_ref().map(lease).transpose().map_err(error::store)
    }

    async fn renew_lock(
        &self,
        held: &LockLease,
        ttl: Duration,
        now: Timestamp,
    ) -> Result<Option<LockLease>, StoreError> {
        let row = sqlx::query(self.inner.sql.renew_lock.clone())
            .bind(held.name.as_ref())
            .bind(i64::try_from(held.token).unwrap_or(i64::MAX))
            .bind(to_pg(now))
            .bind(to_pg(now + ttl))
            .fetch_all(&self.inner.pool)
            .await
            .map(first)
            .map_err(error::store)?;
        row.as_ref().map(lease).transpose().map_err(error::store)
    }

    async fn release_lock(&self, held: &LockLease) -> Result<bool, StoreError> {
        let done = sqlx::query(self.inner.sql.release_lock.clone())
            .bind(held.name.as_ref())
            .bind(i64::try_from(held.token).unwrap_or(i64::MAX))
            .execute(&self.inner.pool)
            .await
            .map_err(error::store)?;
        Ok(done.rows_affected() == 1)
    }
}
