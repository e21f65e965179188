//! Enqueue: one script call for the whole batch, whatever queues it spans,
//! so a batch is stored all or nothing.

use redis::{ScriptInvocation, Value};
use wq_core::{Enqueued, Job, NewJob, QueueName, RunAt, StoreError, Timestamp};

use crate::error::{for_queue, reply};
use crate::reply::{array, count, int, job, state, woke};
use crate::scripts::SCRIPTS;
use crate::store::RedisStore;

impl RedisStore {
    /// Stores `jobs` in one call of `lua/enqueue.lua`. A batch over several
    /// queues touches several hash slots in that call: atomic on one server
    /// (the store's only mode), refused by a cluster (see docs/redis.md).
    pub(crate) async fn enqueue_jobs(
        &self,
        jobs: Vec<NewJob>,
        now: Timestamp,
    ) -> Result<Vec<Enqueued>, StoreError> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let mut queues: Vec<(QueueName, Vec<usize>)> = Vec::new();
        for (i, j) in jobs.iter().enumerate() {
            match queues.iter_mut().find(|(q, _)| *q == j.queue) {
                Some((_, idx)) => idx.push(i),
                None => queues.push((j.queue.clone(), vec![i])),
            }
        }
        let mut call = SCRIPTS.enqueue.prepare_invoke();
        for (q, _) in &queues {
            call.key(self.keys().base(q));
        }
        call.arg(now.as_micros()).arg(&*self.inner.origin);
        for (_, idx) in &queues {
            call.arg(idx.len());
        }
        for (_, idx) in &queues {
            for &i in idx {
                job_args(&mut call, &jobs[i]);
            }
        }
        let reply_value: Value = call
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| for_queue(&queues[unknown_index(&e, queues.len())].0)(e))?;

        let mut parts = array(reply_value)?.into_iter();
        let (Some(woken), Some(results), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(reply("enqueue reply is not { woke, results }"));
        };
        let (woken, results) = (array(woken)?, array(results)?);
        if woken.len() != queues.len() || results.len() != queues.len() {
            return Err(reply(format!(
                "enqueue answered for {} and {} queues of {}",
                woken.len(),
                results.len(),
                queues.len()
            )));
        }
        let mut out: Vec<Option<Enqueued>> = vec![None; jobs.len()];
        for (((queue, idx), w), r) in queues.iter().zip(woken).zip(results) {
            if woke(&w)? {
                self.inner.wakeups.wake(queue);
            }
            let r = array(r)?;
            if r.len() != idx.len() {
                return Err(reply(format!(
                    "{} results for {} jobs of {queue}",
                    r.len(),
                    idx.len()
                )));
            }
            for (&i, r) in idx.iter().zip(r) {
                out[i] = Some(enqueued(queue, &jobs[i], r, now)?);
            }
        }
        out.into_iter()
            .map(|e| e.ok_or_else(|| reply("enqueue returned too few results")))
            .collect()
    }
}

/// Which of the batch's queues an error names: the script's refusal of an
/// undeclared queue ends with its 1-based position in `KEYS`. Any other
/// error names none, and the first queue does as well as another.
fn unknown_index(e: &redis::RedisError, queues: usize) -> usize {
    e.detail()
        .and_then(|d| d.rsplit(' ').next())
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|&n| (1..=queues).contains(&n))
        .map_or(0, |n| n - 1)
}

/// The ten arguments of one job (see `lua/enqueue.lua`).
fn job_args(call: &mut ScriptInvocation<'_>, j: &NewJob) {
    call.arg(j.id.to_string())
        .arg(j.tenant.as_deref().unwrap_or(""))
        .arg(j.group.as_ref().map_or("", |g| g.as_str()))
        .arg(j.session.as_ref().map_or("", |s| s.as_str()))
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
