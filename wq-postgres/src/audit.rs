//! `Audit` over the schema's `audit` function (`migrations/0003_audit.sql`).

use sqlx::Row;
use uuid::Uuid;
use wq_core::{
    Anomaly, AnomalyKind, Audit, AuditReport, GroupKey, JobId, QueueName, StoreError, Timestamp,
};

use crate::PgStore;
use crate::codec::to_pg;
use crate::error;

/// The kind code of the summary row that closes the result.
const SUMMARY: i16 = 0;

fn kind(code: i16) -> Result<AnomalyKind, sqlx::Error> {
    match code {
        1 => Ok(AnomalyKind::Headless),
        2 => Ok(AnomalyKind::MisplacedHead),
        3 => Ok(AnomalyKind::Unleased),
        other => Err(sqlx::Error::Decode(
            format!("unknown anomaly kind {other}").into(),
        )),
    }
}

impl Audit for PgStore {
    async fn audit(
        &self,
        queue: &QueueName,
        now: Timestamp,
        repair: bool,
    ) -> Result<AuditReport, StoreError> {
        let rows = sqlx::query(self.inner.sql.audit.clone())
            .bind(queue.as_str())
            .bind(to_pg(now))
            .bind(repair)
            .fetch_all(&self.inner.pool)
            .await
            .map_err(error::store)?;
        decode(queue, &rows).map_err(error::store)
    }
}

fn decode(queue: &QueueName, rows: &[sqlx::postgres::PgRow]) -> Result<AuditReport, sqlx::Error> {
    let mut report = AuditReport::default();
    for row in rows {
        let code: i16 = row.try_get("kind")?;
        if code == SUMMARY {
            let checked: i64 = row.try_get("checked")?;
            report.checked = u64::try_from(checked).unwrap_or(0);
            continue;
        }
        let group: Option<String> = row.try_get("group_key")?;
        let id: Uuid = row.try_get("id")?;
        report.anomalies.push(Anomaly {
            kind: kind(code)?,
            queue: queue.clone(),
            group: group.map(GroupKey::from),
            job: JobId::from_uuid(id),
            repaired: row.try_get::<Option<bool>, _>("repaired")?.unwrap_or(false),
        });
    }
    Ok(report)
}
