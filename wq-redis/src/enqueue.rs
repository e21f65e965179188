//! Enqueue: one script call per queue of the batch, all or nothing within
//! a queue.

use redis::{ScriptInvocation, Value};
use wq_core::{Enqueued, Job, NewJob, QueueName, RunAt, StoreError, Timestamp};

use crate::error::{driver, reply};
use crate::reply::{array, count, int, job, state};
use crate::scripts::SCRIPTS;
use crate::store::RedisStore;

impl RedisStore {
    pub(crate) async fn enqueue_jobs(
        &self,
        jobs: Vec<NewJob>,
        now: Timestamp,
    ) -> Result<Vec<Enqueued>, StoreError> {
        let mut queues: Vec<(QueueName, Vec<usize>)> = Vec::new();
        for (i, j) in jobs.iter().enumerate() {
            match queues.iter_mut().find(|(q, _)| *q == j.queue) {
                Some((_, idx)) => idx.push(i),
                None => queues.push((j.queue.clone(), vec![i])),
            }
        }
        if queues.len() > 1 {
            // The batch spans hash slots: refuse it whole before writing any.
            let names: Vec<&QueueName> = queues.iter().map(|(q, _)| q).collect();
            self.check_declared(&names).await?;
        }
        let mut out: Vec<Option<Enqueued>> = vec![None; jobs.len()];
        for (queue, idx) in &queues {
            let batch: Vec<&NewJob> = idx.iter().map(|&i| &jobs[i]).collect();
            let stored = self.enqueue_queue(queue, &batch, now).await?;
            for (&i, e) in idx.iter().zip(stored) {
                out[i] = Some(e);
            }
        }
        out.into_iter()
            .map(|e| e.ok_or_else(|| reply("enqueue returned too few results")))
            .collect()
    }

    /// Fails with `UnknownQueue` unless every queue is declared.
    async fn check_declared(&self, queues: &[&QueueName]) -> Result<(), StoreError> {
        let mut pipe = redis::pipe();
        for q in queues {
            pipe.cmd("HEXISTS").arg(self.keys().config(q)).arg("name");
        }
        let declared: Vec<bool> = pipe.query_async(&mut self.conn()).await.map_err(driver)?;
        match queues.iter().zip(declared).find(|(_, d)| !d) {
            Some((q, _)) => Err(StoreError::UnknownQueue((*q).clone())),
            None => Ok(()),
        }
    }

    async fn enqueue_queue(
        &self,
        queue: &QueueName,
        batch: &[&NewJob],
        now: Timestamp,
    ) -> Result<Vec<Enqueued>, StoreError> {
        let rest = self
            .write(&SCRIPTS.enqueue, queue, now, |call| {
                call.arg(batch.len());
                for j in batch {
                    job_args(call, j);
                }
            })
            .await?;
        let results = array(rest.into_iter().next().unwrap_or(Value::Nil))?;
        if results.len() != batch.len() {
            return Err(reply(format!(
                "{} results for {} jobs",
                results.len(),
                batch.len()
            )));
        }
        results
            .into_iter()
            .zip(batch)
            .map(|(r, new)| enqueued(queue, new, r, now))
            .collect()
    }
}

/// The nine arguments of one job (see `lua/enqueue.lua`).
fn job_args(call: &mut ScriptInvocation<'_>, j: &NewJob) {
    call.arg(j.id.to_string())
        .arg(j.tenant.as_deref().unwrap_or(""))
        .arg(j.group.as_ref().map_or("", |g| g.as_str()))
        .arg(j.priority);
    match j.run_at {
        RunAt::At(t) => call.arg("a").arg(t.as_micros()),
        RunAt::Chained { offset } => call
            .arg("c")
            .arg(i64::try_from(offset.as_micros()).unwrap_or(i64::MAX)),
    };
    call.arg(j.max_attempts)
        .arg(j.idempotency_key.as_deref().unwrap_or(""))
        .arg(j.payload.as_str());
}

/// One result: the job as stored, or the existing one.
fn enqueued(
    queue: &QueueName,
    new: &NewJob,
    r: Value,
    now: Timestamp,
) -> Result<Enqueued, StoreError> {
    let items = array(r)?;
    match items.as_slice() {
        [created, seq, run_at, st] if int(created)? == 1 => Ok(Enqueued {
            job: Job::enqueued(
                new.clone(),
                count(seq)?,
                Timestamp::from_micros(int(run_at)?),
                state(st)?,
                now,
            ),
            created: true,
        }),
        [_, existing] => Ok(Enqueued {
            job: job(queue, existing.clone())?,
            created: false,
        }),
        other => Err(reply(format!("enqueue result {other:?}"))),
    }
}
