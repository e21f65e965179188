//! Wake-ups across processes: the schema's functions `NOTIFY` when work may
//! be there, and one `LISTEN` connection per store turns that into in-process
//! wake-ups. A lost connection is reopened; since notifications sent in
//! between are lost, every queue is woken once it is back.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use wq_core::{QueueName, Scheduler, StoreError, Timestamp, WakeSignal, Wakeups};

use crate::PgStore;
use crate::codec::{from_pg, to_pg};
use crate::error;
use crate::error::{first, only};

/// The channel the functions notify: `wq:` and the schema.
pub fn channel(schema: &str) -> String {
    format!("wq:{schema}")
}

/// The session setting that names a store's connections' origin, which
/// the enqueue function appends to its notifications.
pub const ORIGIN_SETTING: &str = "wq.origin";

/// Listens until the task is aborted (when the store is dropped).
pub async fn run(pool: PgPool, channel: String, origin: String, wakeups: Arc<Wakeups>) {
    loop {
        if let Err(e) = listen(&pool, &channel, &origin, &wakeups).await {
            tracing::warn!(error = %e, "LISTEN connection lost; reconnecting");
        }
        wakeups.wake_all();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn listen(
    pool: &PgPool,
    channel: &str,
    origin: &str,
    wakeups: &Wakeups,
) -> Result<(), sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(channel).await?;
    wakeups.wake_all();
    loop {
        match listener.try_recv().await? {
            // A payload is a queue name (which has no spaces), then the
            // enqueuing store's origin if an enqueue sent it.
            Some(n) => match n.payload().split_once(' ') {
                Some((_, from)) if from == origin => {}
                Some((queue, _)) => wakeups.wake(&QueueName::from(queue)),
                None => wakeups.wake(&QueueName::from(n.payload())),
            },
            // The connection dropped and was reopened: anything sent in
            // between is lost, so everyone looks again.
            None => wakeups.wake_all(),
        }
    }
}

/// How often the maintenance leader vacuums `heads`.
const VACUUM_HEADS_EVERY: Duration = Duration::from_secs(2);

impl PgStore {
    /// Vacuums `heads` now and then. Claims read the front of its index,
    /// where every claim leaves dead entries; autovacuum visits a database
    /// once a minute, by then a busy queue has left thousands for each claim
    /// to step over (measured: 0.65 ms per claim of 10 instead of 0.40).
    async fn vacuum_heads(&self, now: Timestamp) {
        let last = &self.inner.heads_vacuumed;
        let due = last.load(Ordering::Relaxed) + VACUUM_HEADS_EVERY.as_micros() as i64;
        if now.as_micros() < due {
            return;
        }
        last.store(now.as_micros(), Ordering::Relaxed);
        if let Err(e) = sqlx::query(self.inner.sql.vacuum_heads.clone())
            .execute(&self.inner.pool)
            .await
        {
            tracing::warn!(error = %e, "vacuum of heads failed");
        }
    }
}

impl Scheduler for PgStore {
    fn subscribe(&self, queue: &QueueName) -> WakeSignal {
        self.inner.wakeups.subscribe(queue)
    }

    async fn next_due(
        &self,
        queue: &QueueName,
        now: Timestamp,
    ) -> Result<Option<Timestamp>, StoreError> {
        use sqlx::Row;
        let Some(row) = sqlx::query(self.inner.sql.next_due.clone())
            .bind(queue.as_str())
            .bind(to_pg(now))
            .fetch_all(&self.inner.pool)
            .await
            .map(first)
            .map_err(error::store)?
        else {
            return Err(StoreError::UnknownQueue(queue.clone()));
        };
        let due: Option<chrono::DateTime<chrono::Utc>> =
            row.try_get("due").map_err(error::store)?;
        Ok(due.map(from_pg))
    }

    async fn promote_due(&self, queue: &QueueName, now: Timestamp) -> Result<u64, StoreError> {
        use sqlx::Row;
        let row = sqlx::query(self.inner.sql.promote.clone())
            .bind(queue.as_str())
            .bind(to_pg(now))
            .bind(10_000i32)
            .fetch_all(&self.inner.pool)
            .await
            .and_then(only)
            .map_err(error::store)?;
        let moved: i32 = row.try_get("moved").map_err(error::store)?;
        if moved > 0 {
            self.inner.wakeups.wake(queue);
        }
        self.vacuum_heads(now).await;
        Ok(u64::try_from(moved).unwrap_or(0))
    }
}
