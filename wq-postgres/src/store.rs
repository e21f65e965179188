//! `Store` over the schema's functions: one round trip per call.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{Row, SqlStr};
use uuid::Uuid;
use wq_core::{
    Ack, AckOutcome, AckedAndClaimed, Admin, ClaimRequest, Counts, DeadJobs, Enqueued,
    ExtendOutcome, Job, JobId, LeaseRef, ListQuery, NewJob, Position, QueueConfig, QueueInfo,
    QueueName, RescueReport, RunAt, Store, StoreError, Timestamp,
};

use crate::PgStore;
use crate::codec::{self, from_pg, to_pg};
use crate::error::{self, DEADLOCK_DETECTED, UNIQUE_VIOLATION};
use crate::error::{first, only};
use crate::list::Listing;

/// The `finished_counts` state that counts every job ever finished.
const FINISHED_EVER: i16 = 9;
/// The row of the counts statement that tells how many rows of changes
/// `finished_counts` holds for the queue.
const CHANGE_ROWS: i16 = -1;
/// A count folds the queue's changes when it reads more rows than this.
const FOLD_ABOVE: u64 = 256;

/// How often an enqueue is tried again after a concurrent enqueue stored
/// the same id or key first (the next try returns that job), or after the
/// server rolled it back to break a lock cycle with one (batches that name
/// the same ids or keys in different orders).
const ENQUEUE_TRIES: usize = 5;

/// The `enqueue` function's arguments, one array per column.
#[derive(Default)]
struct EnqueueArgs {
    ids: Vec<Uuid>,
    queues: Vec<String>,
    tenants: Vec<Option<String>>,
    groups: Vec<Option<String>>,
    sessions: Vec<Option<String>>,
    priorities: Vec<i16>,
    run_ats: Vec<Option<DateTime<Utc>>>,
    offsets: Vec<Option<i64>>,
    max_attempts: Vec<i32>,
    keys: Vec<Option<String>>,
    payloads: Vec<String>,
}

impl EnqueueArgs {
    fn new(jobs: &[NewJob]) -> Self {
        let mut a = Self::default();
        for j in jobs {
            a.ids.push(*j.id.as_uuid());
            a.queues.push(j.queue.to_string());
            a.tenants.push(j.tenant.as_deref().map(str::to_owned));
            a.groups.push(j.group.as_ref().map(|g| g.to_string()));
            a.sessions.push(j.session.as_ref().map(|s| s.to_string()));
            a.priorities.push(j.priority);
            let (run_at, offset) = match j.run_at {
                RunAt::At(t) => (Some(to_pg(t)), None),
                RunAt::Chained { offset } => (
                    None,
                    Some(i64::try_from(offset.as_micros()).unwrap_or(i64::MAX)),
                ),
            };
            a.run_ats.push(run_at);
            a.offsets.push(offset);
            a.max_attempts
                .push(i32::try_from(j.max_attempts).unwrap_or(i32::MAX));
            a.keys.push(j.idempotency_key.as_deref().map(str::to_owned));
            a.payloads.push(j.payload.as_str().to_owned());
        }
        a
    }
}

/// The `ack` function's arguments.
struct AckArgs {
    ids: Vec<Uuid>,
    tokens: Vec<i64>,
    actions: Vec<i16>,
    run_ats: Vec<Option<DateTime<Utc>>>,
    messages: Vec<Option<String>>,
    outputs: Vec<Option<String>>,
}

impl AckArgs {
    fn new(acks: &[Ack]) -> Self {
        let mut a = Self {
            ids: Vec::with_capacity(acks.len()),
            tokens: Vec::with_capacity(acks.len()),
            actions: Vec::with_capacity(acks.len()),
            run_ats: Vec::with_capacity(acks.len()),
            messages: Vec::with_capacity(acks.len()),
            outputs: Vec::with_capacity(acks.len()),
        };
        for ack in acks {
            let (action, run_at, message) = codec::action_args(&ack.action);
            a.ids.push(*ack.id.as_uuid());
            a.tokens.push(i64::try_from(ack.token).unwrap_or(i64::MAX));
            a.actions.push(action);
            a.run_ats.push(run_at);
            a.messages.push(message);
            a.outputs.push(codec::action_output(&ack.action));
        }
        a
    }
}

/// Orders ack rows by their position in the request.
fn ack_outcomes(rows: &[PgRow], expected: usize) -> Result<Vec<AckOutcome>, sqlx::Error> {
    let mut out = vec![AckOutcome::NotFound; expected];
    for row in rows {
        let Some(ord) = row.try_get::<Option<i32>, _>("ord")? else {
            continue;
        };
        let slot = usize::try_from(ord - 1)
            .ok()
            .and_then(|i| out.get_mut(i))
            .ok_or_else(|| {
                sqlx::Error::Decode(format!("ack position {ord} out of range").into())
            })?;
        *slot = codec::ack_outcome(row.try_get("outcome")?, row.try_get("state")?)?;
    }
    Ok(out)
}

/// The outcome code of the row that carries a short claim's next due time.
const NEXT_DUE: i16 = 2;

/// The jobs `ack_and_claim` returned (the rows without a position), and the
/// next due time it reported for a short claim.
type Claimed = (Vec<Job>, Option<Option<Timestamp>>);

fn claimed(rows: &[PgRow]) -> Result<Claimed, sqlx::Error> {
    let mut jobs = Vec::new();
    let mut next_due = None;
    for row in rows {
        if row.try_get::<Option<i32>, _>("ord")?.is_some() {
            continue;
        }
        if row.try_get::<Option<i16>, _>("outcome")? == Some(NEXT_DUE) {
            let at: Option<DateTime<Utc>> = row.try_get("run_at")?;
            next_due = Some(at.map(from_pg));
        } else {
            jobs.push(codec::job(row)?);
        }
    }
    in_claim_order(&mut jobs);
    Ok((jobs, next_due))
}

/// Puts claimed jobs in the order the claim picked them (priority, due
/// time, sequence), as the other backends return them: the rows of an
/// `UPDATE … RETURNING` come back in whatever order the update met them,
/// and a worker starts its jobs in the order it gets them.
fn in_claim_order(jobs: &mut [Job]) {
    jobs.sort_by_key(|j| (j.priority, j.run_at, j.seq));
}

fn claim_args(
    req: Option<&ClaimRequest>,
) -> (Option<String>, i32, Option<DateTime<Utc>>, Option<String>) {
    match req {
        Some(r) => (
            Some(r.queue.to_string()),
            i32::try_from(r.limit).unwrap_or(i32::MAX),
            Some(to_pg(r.lease_until)),
            Some(r.worker.to_string()),
        ),
        None => (None, 0, None, None),
    }
}

fn queue_info(row: &PgRow) -> Result<QueueInfo, StoreError> {
    let config: String = row.try_get("config").map_err(error::store)?;
    let config: QueueConfig = serde_json::from_str(&config).map_err(StoreError::backend)?;
    Ok(QueueInfo {
        config,
        paused: row.try_get("paused").map_err(error::store)?,
    })
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

impl PgStore {
    async fn try_enqueue(
        &self,
        args: &EnqueueArgs,
        now: Timestamp,
    ) -> Result<Vec<Enqueued>, sqlx::Error> {
        let rows = sqlx::query(self.inner.sql.enqueue.clone())
            .bind(&args.ids)
            .bind(&args.queues)
            .bind(&args.tenants)
            .bind(&args.groups)
            .bind(&args.sessions)
            .bind(&args.priorities)
            .bind(&args.run_ats)
            .bind(&args.offsets)
            .bind(&args.max_attempts)
            .bind(&args.keys)
            .bind(&args.payloads)
            .bind(to_pg(now))
            .fetch_all(&self.inner.pool)
            .await?;
        let mut stored = rows
            .iter()
            .map(|row| {
                let ord: i32 = row.try_get("ord")?;
                let job = codec::job(row)?;
                let created = row.try_get::<i16, _>("outcome")? == 1;
                Ok((ord, Enqueued { job, created }))
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        stored.sort_unstable_by_key(|(ord, _)| *ord);
        Ok(stored.into_iter().map(|(_, e)| e).collect())
    }

    /// Wakes this process's workers of the queues now, not after the
    /// notification's round trip.
    fn wake_local<'a>(&self, queues: impl IntoIterator<Item = &'a QueueName>) {
        for q in queues {
            self.inner.wakeups.wake(q);
        }
    }

    fn dead_args(which: &DeadJobs) -> (Option<String>, Option<Vec<Uuid>>) {
        match which {
            DeadJobs::All(q) => (Some(q.to_string()), None),
            DeadJobs::Ids(ids) => (None, Some(ids.iter().map(|id| *id.as_uuid()).collect())),
        }
    }

    async fn dead_op(
        &self,
        sql: &SqlStr,
        which: &DeadJobs,
        now: Timestamp,
    ) -> Result<u64, StoreError> {
        let (queue, ids) = Self::dead_args(which);
        let n: i32 = sqlx::query_scalar(sql.clone())
            .bind(queue)
            .bind(ids)
            .bind(to_pg(now))
            .fetch_all(&self.inner.pool)
            .await
            .and_then(only)
            .map_err(error::store)?;
        match which {
            DeadJobs::All(q) => self.wake_local([q]),
            DeadJobs::Ids(_) => self.inner.wakeups.wake_all(),
        }
        Ok(count(n.into()))
    }
}

impl Store for PgStore {
    async fn declare_queue(&self, config: &QueueConfig) -> Result<(), StoreError> {
        let json = serde_json::to_string(config).map_err(StoreError::backend)?;
        sqlx::query(self.inner.sql.declare_queue.clone())
            .bind(config.name.as_str())
            .bind(json)
            .execute(&self.inner.pool)
            .await
            .map_err(error::store)?;
        Ok(())
    }

    async fn queue_info(&self, queue: &QueueName) -> Result<Option<QueueInfo>, StoreError> {
        let row = sqlx::query(self.inner.sql.queue_info.clone())
            .bind(queue.as_str())
            .fetch_all(&self.inner.pool)
            .await
            .map(first)
            .map_err(error::store)?;
        row.as_ref().map(queue_info).transpose()
    }

    async fn enqueue(
        &self,
        jobs: Vec<NewJob>,
        now: Timestamp,
    ) -> Result<Vec<Enqueued>, StoreError> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let args = EnqueueArgs::new(&jobs);
        let mut tries = 0;
        let stored = loop {
            tries += 1;
            match self.try_enqueue(&args, now).await {
                Ok(stored) => break stored,
                Err(e)
                    if tries < ENQUEUE_TRIES
                        && matches!(
                            error::code(&e).as_deref(),
                            Some(UNIQUE_VIOLATION | DEADLOCK_DETECTED)
                        ) => {}
                Err(e) => return Err(error::store(e)),
            }
        };
        if stored.len() != jobs.len() {
            return Err(StoreError::backend(format!(
                "enqueue stored {} rows for {} jobs",
                stored.len(),
                jobs.len()
            )));
        }
        // The function maps new rows back to inputs by the order of their
        // sequence numbers; a created job must carry its input's id.
        if let Some(k) =
            (0..jobs.len()).find(|&k| stored[k].created && stored[k].job.id != jobs[k].id)
        {
            return Err(StoreError::backend(format!(
                "enqueue returned job {} for input {k}, which has id {}",
                stored[k].job.id, jobs[k].id
            )));
        }
        let queues: BTreeSet<&QueueName> = jobs.iter().map(|j| &j.queue).collect();
        self.wake_local(queues);
        Ok(stored)
    }

    async fn claim(&self, req: &ClaimRequest) -> Result<Vec<Job>, StoreError> {
        let rows = sqlx::query(self.inner.sql.claim.clone())
            .bind(req.queue.as_str())
            .bind(i32::try_from(req.limit).unwrap_or(i32::MAX))
            .bind(to_pg(req.now))
            .bind(to_pg(req.lease_until))
            .bind(req.worker.as_ref())
            .fetch_all(&self.inner.pool)
            .await
            .map_err(error::store)?;
        let mut jobs = rows
            .iter()
            .map(codec::job)
            .collect::<Result<Vec<_>, _>>()
            .map_err(error::store)?;
        in_claim_order(&mut jobs);
        Ok(jobs)
    }

    async fn ack(&self, acks: &[Ack], now: Timestamp) -> Result<Vec<AckOutcome>, StoreError> {
        if acks.is_empty() {
            return Ok(Vec::new());
        }
        // One path for acknowledgements, so the commit mode is decided in
        // one place (see `ack_and_claim` in the functions).
        Ok(self.ack_and_claim(acks, None, now).await?.acks)
    }

    async fn ack_and_claim(
        &self,
        acks: &[Ack],
        claim: Option<&ClaimRequest>,
        now: Timestamp,
    ) -> Result<AckedAndClaimed, StoreError> {
        let a = AckArgs::new(acks);
        let (queue, limit, lease_until, worker) = claim_args(claim);
        let rows = sqlx::query(self.inner.sql.ack_and_claim.clone())
            .bind(&a.ids)
            .bind(&a.tokens)
            .bind(&a.actions)
            .bind(&a.run_ats)
            .bind(&a.messages)
            .bind(&a.outputs)
            .bind(to_pg(now))
            .bind(queue)
            .bind(limit)
            .bind(lease_until)
            .bind(worker)
            .fetch_all(&self.inner.pool)
            .await
            .map_err(error::store)?;
        let outcomes = ack_outcomes(&rows, acks.len()).map_err(error::store)?;
        let (jobs, next_due) = claimed(&rows).map_err(error::store)?;
        Ok(AckedAndClaimed {
            acks: outcomes,
            jobs,
            next_due,
        })
    }

    async fn extend(
        &self,
        leases: &[LeaseRef],
        until: Timestamp,
        now: Timestamp,
    ) -> Result<Vec<ExtendOutcome>, StoreError> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<Uuid> = leases.iter().map(|l| *l.id.as_uuid()).collect();
        let tokens: Vec<i64> = leases
            .iter()
            .map(|l| i64::try_from(l.token).unwrap_or(i64::MAX))
            .collect();
        let rows = sqlx::query(self.inner.sql.extend.clone())
            .bind(ids)
            .bind(tokens)
            .bind(to_pg(until))
            .bind(to_pg(now))
            .fetch_all(&self.inner.pool)
            .await
            .map_err(error::store)?;
        rows.iter()
            .map(|r| codec::extend_outcome(r.try_get("outcome")?))
            .collect::<Result<_, _>>()
            .map_err(error::store)
    }

    async fn rescue(&self, now: Timestamp, limit: usize) -> Result<RescueReport, StoreError> {
        let rows = sqlx::query(self.inner.sql.rescue.clone())
            .bind(to_pg(now))
            .bind(i32::try_from(limit).unwrap_or(i32::MAX))
            .fetch_all(&self.inner.pool)
            .await
            .map_err(error::store)?;
        let mut report = RescueReport::default();
        for row in rows {
            let id: Uuid = row.try_get("id").map_err(error::store)?;
            let queue: String = row.try_get("queue").map_err(error::store)?;
            let state = row
                .try_get::<i16, _>("state")
                .and_then(codec::state_from)
                .map_err(error::store)?;
            report.add(JobId::from_uuid(id), QueueName::from(queue), state);
        }
        if report.retried > 0 {
            self.inner.wakeups.wake_all();
        }
        Ok(report)
    }

    async fn get(&self, id: JobId) -> Result<Option<Job>, StoreError> {
        let row = sqlx::query(self.inner.sql.get.clone())
            .bind(id.as_uuid())
            .fetch_all(&self.inner.pool)
            .await
            .map(first)
            .map_err(error::store)?;
        row.as_ref()
            .map(codec::job)
            .transpose()
            .map_err(error::store)
    }

    async fn prune(&self, now: Timestamp, limit: usize) -> Result<u64, StoreError> {
        let n: i32 = sqlx::query_scalar(self.inner.sql.prune.clone())
            .bind(to_pg(now))
            .bind(i32::try_from(limit).unwrap_or(i32::MAX))
            .fetch_all(&self.inner.pool)
            .await
            .and_then(only)
            .map_err(error::store)?;
        Ok(count(n.into()))
    }
}

impl Admin for PgStore {
    async fn list_queues(&self) -> Result<Vec<QueueInfo>, StoreError> {
        let rows = sqlx::query(self.inner.sql.list_queues.clone())
            .fetch_all(&self.inner.pool)
            .await
            .map_err(error::store)?;
        rows.iter().map(queue_info).collect()
    }

    async fn set_paused(&self, queue: &QueueName, paused: bool) -> Result<(), StoreError> {
        let done = sqlx::query(self.inner.sql.set_paused.clone())
            .bind(queue.as_str())
            .bind(paused)
            .execute(&self.inner.pool)
            .await
            .map_err(error::store)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::UnknownQueue(queue.clone()));
        }
        if !paused {
            sqlx::query(self.inner.sql.notify.clone())
                .bind(queue.as_str())
                .execute(&self.inner.pool)
                .await
                .map_err(error::store)?;
            self.wake_local([queue]);
        }
        Ok(())
    }

    async fn cancel(&self, id: JobId, now: Timestamp) -> Result<Job, StoreError> {
        let row = sqlx::query(self.inner.sql.cancel.clone())
            .bind(id.as_uuid())
            .bind(to_pg(now))
            .fetch_all(&self.inner.pool)
            .await
            .and_then(only)
            .map_err(error::store)?;
        let outcome: i16 = row.try_get("outcome").map_err(error::store)?;
        if outcome == 2 {
            return Err(StoreError::NotFound(id));
        }
        let job = codec::job(&row).map_err(error::store)?;
        if outcome == 1 {
            return Err(StoreError::InvalidState {
                id,
                state: job.state,
                action: "cancel",
            });
        }
        self.wake_local([&job.queue]);
        Ok(job)
    }

    async fn list(&self, query: &ListQuery) -> Result<Vec<Job>, StoreError> {
        let rows = Listing::new(&self.inner.sql.schema, query)
            .query()
            .fetch_all(&self.inner.pool)
            .await
            .map_err(error::store)?;
        rows.iter()
            .map(codec::job)
            .collect::<Result<_, _>>()
            .map_err(error::store)
    }

    async fn next_in_line(
        &self,
        queue: &QueueName,
        now: Timestamp,
    ) -> Result<Option<Timestamp>, StoreError> {
        let row = sqlx::query(self.inner.sql.next_in_line.clone())
            .bind(queue.as_str())
            .bind(to_pg(now))
            .fetch_one(&self.inner.pool)
            .await
            .map_err(error::store)?;
        if !row.try_get::<bool, _>("known").map_err(error::store)? {
            return Err(StoreError::UnknownQueue(queue.clone()));
        }
        let due: Option<chrono::DateTime<chrono::Utc>> =
            row.try_get("due").map_err(error::store)?;
        Ok(due.map(from_pg))
    }

    async fn counts(&self, queue: &QueueName) -> Result<Counts, StoreError> {
        let rows = sqlx::query(self.inner.sql.counts.clone())
            .bind(queue.as_str())
            .fetch_all(&self.inner.pool)
            .await
            .map_err(error::store)?;
        if rows.is_empty() {
            return Err(StoreError::UnknownQueue(queue.clone()));
        }
        // The queue's marker row has no state; the rest count one state each.
        let mut counts = Counts::default();
        let mut changes = 0;
        for row in &rows {
            if let Some(code) = row
                .try_get::<Option<i16>, _>("state")
                .map_err(error::store)?
            {
                let n = count(row.try_get("n").map_err(error::store)?);
                match code {
                    FINISHED_EVER => counts.finished = n,
                    CHANGE_ROWS => changes = n,
                    _ => *counts.get_mut(codec::state_from(code).map_err(error::store)?) = n,
                }
            }
        }
        // Between two prunes the changes pile up; a count that reads many
        // folds them, so the next reads a few. Best effort: the count stands.
        if changes > FOLD_ABOVE {
            let folded = sqlx::query(self.inner.sql.fold_counts.clone())
                .bind(queue.as_str())
                .execute(&self.inner.pool)
                .await;
            if let Err(e) = folded {
                tracing::warn!(error = %e, %queue, "folding the counted changes failed");
            }
        }
        Ok(counts)
    }

    async fn position(&self, id: JobId) -> Result<Option<Position>, StoreError> {
        let Some(row) = sqlx::query(self.inner.sql.position.clone())
            .bind(id.as_uuid())
            .fetch_all(&self.inner.pool)
            .await
            .map(first)
            .map_err(error::store)?
        else {
            return Ok(None);
        };
        let state =
            codec::state_from(row.try_get("state").map_err(error::store)?).map_err(error::store)?;
        if !state.is_waiting() {
            return Ok(None);
        }
        let grouped: bool = row.try_get("grouped").map_err(error::store)?;
        let in_group = count(row.try_get("in_group").map_err(error::store)?);
        Ok(Some(Position {
            in_group: grouped.then_some(in_group),
            in_queue: count(row.try_get("in_queue").map_err(error::store)?),
        }))
    }

    async fn retry_dead(&self, which: &DeadJobs, now: Timestamp) -> Result<u64, StoreError> {
        self.dead_op(&self.inner.sql.retry_dead, which, now).await
    }

    async fn purge_dead(&self, which: &DeadJobs, now: Timestamp) -> Result<u64, StoreError> {
        self.dead_op(&self.inner.sql.purge_dead, which, now).await
    }
}
