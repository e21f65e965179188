//! Queues and the operator's calls: declare, pause, look up, list, count,
//! position, cancel, dead jobs, pruning, and the scheduler's two reads.

use std::collections::HashMap;

use redis::Value;
use wq_core::{
    Counts, DeadJobs, Job, JobId, JobState, ListQuery, OnDead, Position, QueueConfig, QueueInfo,
    QueueName, StoreError, Timestamp,
};

use crate::error::{driver, reply};
use crate::reply::{array, count, due_time, int, job, jobs, state, text, tuple};
use crate::scripts::SCRIPTS;
use crate::store::RedisStore;
use crate::work::{by_queue, rest_tuple};

/// Jobs a list call looks at per script call before handing back a cursor.
const LIST_BUDGET: usize = 5_000;

/// Dead jobs retried or purged per script call for `DeadJobs::All`, and
/// scheduled heads promoted per call.
const BATCH: usize = 1_000;

pub(crate) fn micros(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

impl RedisStore {
    pub(crate) async fn declare(&self, config: &QueueConfig) -> Result<(), StoreError> {
        let json = serde_json::to_string(config).map_err(|e| reply(e.to_string()))?;
        let hold = u8::from(config.on_dead == OnDead::Hold);
        redis::pipe()
            .cmd("HSET")
            .arg(self.keys().config(&config.name))
            .arg("name")
            .arg(config.name.as_str())
            .arg("json")
            .arg(json)
            .arg("hold")
            .arg(hold)
            .arg("kd")
            .arg(micros(config.retention.completed))
            .arg("kx")
            .arg(micros(config.retention.dead))
            .arg("gg")
            .arg(micros(config.group_gap))
            .ignore()
            .cmd("SADD")
            .arg(self.keys().registry())
            .arg(config.name.as_str())
            .ignore()
            .query_async::<()>(&mut self.conn())
            .await
            .map_err(driver)?;
        self.queues().await.map(drop)
    }

    pub(crate) async fn info(&self, queue: &QueueName) -> Result<Option<QueueInfo>, StoreError> {
        let (json, paused): (Option<String>, Option<String>) = redis::cmd("HMGET")
            .arg(self.keys().config(queue))
            .arg("json")
            .arg("paused")
            .query_async(&mut self.conn())
            .await
            .map_err(driver)?;
        json.map(|j| {
            let config: QueueConfig =
                serde_json::from_str(&j).map_err(|e| reply(format!("queue `{queue}`: {e}")))?;
            Ok(QueueInfo {
                config,
                paused: paused.as_deref() == Some("1"),
            })
        })
        .transpose()
    }

    pub(crate) async fn all_info(&self) -> Result<Vec<QueueInfo>, StoreError> {
        let mut out = Vec::new();
        for q in self.queues().await? {
            out.extend(self.info(&q).await?);
        }
        Ok(out)
    }

    pub(crate) async fn pause(&self, queue: &QueueName, paused: bool) -> Result<(), StoreError> {
        // Pausing depends on no time; the script takes the usual `now` slot.
        self.write(&SCRIPTS.pause, queue, Timestamp::EPOCH, |call| {
            call.arg(u8::from(paused));
        })
        .await
        .map(drop)
    }

    /// One job of a known queue.
    async fn fetch(&self, queue: &QueueName, id: JobId) -> Result<Option<Job>, StoreError> {
        let keys = self.keys();
        let (fields, payload, history, output): (Value, Value, Value, Value) = redis::pipe()
            .cmd("HGETALL")
            .arg(keys.job(queue, id))
            .cmd("GET")
            .arg(keys.payload(queue, id))
            .cmd("GET")
            .arg(keys.history(queue, id))
            .cmd("GET")
            .arg(keys.output(queue, id))
            .query_async(&mut self.conn())
            .await
            .map_err(driver)?;
        let fields = hash_fields(fields);
        if fields.is_empty() || payload == Value::Nil {
            return Ok(None);
        }
        let v = Value::Array(vec![
            Value::BulkString(id.to_string().into_bytes()),
            payload,
            Value::Array(fields),
            history,
            output,
        ]);
        job(queue, v).map(Some)
    }

    pub(crate) async fn get_job(&self, id: JobId) -> Result<Option<Job>, StoreError> {
        match self.locate(&[id]).await?.pop().flatten() {
            Some(queue) => self.fetch(&queue, id).await,
            None => Ok(None),
        }
    }

    pub(crate) async fn cancel_job(&self, id: JobId, now: Timestamp) -> Result<Job, StoreError> {
        let Some(queue) = self.locate(&[id]).await?.pop().flatten() else {
            return Err(StoreError::NotFound(id));
        };
        let rest = self
            .write(&SCRIPTS.cancel, &queue, now, |call| {
                call.arg(id.to_string());
            })
            .await?;
        let [outcome, data] = rest_tuple(rest)?;
        match text(&outcome)? {
            "ok" => job(&queue, data),
            "dropped" => {
                let mut j = job(&queue, data)?;
                j.state = JobState::Cancelled;
                j.finished_at = Some(now);
                j.updated_at = now;
                Ok(j)
            }
            "state" => Err(StoreError::InvalidState {
                id,
                state: state(&data)?,
                action: "cancel",
            }),
            _ => Err(StoreError::NotFound(id)),
        }
    }

    pub(crate) async fn list_jobs(&self, query: &ListQuery) -> Result<Vec<Job>, StoreError> {
        let queues = match &query.queue {
            Some(q) => vec![q.clone()],
            None => self.queues().await?,
        };
        let mut out = Vec::new();
        for q in &queues {
            out.extend(self.list_queue(q, query).await?);
        }
        out.sort_by_key(|j| j.id);
        out.truncate(query.limit);
        Ok(out)
    }

    /// Up to `query.limit` matching jobs of one queue, in id order.
    async fn list_queue(
        &self,
        queue: &QueueName,
        query: &ListQuery,
    ) -> Result<Vec<Job>, StoreError> {
        let mut out: Vec<Job> = Vec::new();
        let mut after = query.after.map(|a| a.to_string()).unwrap_or_default();
        let state = query.state.map_or("", JobState::as_str);
        let group = query.group.as_ref().map_or("", |g| g.as_str());
        let tenant = query.tenant.as_deref().unwrap_or("");
        let key = query.idempotency_key.as_deref().unwrap_or("");
        loop {
            let wanted = query.limit - out.len();
            let reply = self
                .run(&SCRIPTS.list, queue, |call| {
                    call.arg(&after)
                        .arg(state)
                        .arg(group)
                        .arg(tenant)
                        .arg(key)
                        .arg(wanted)
                        .arg(LIST_BUDGET);
                })
                .await;
            let reply = match reply {
                Err(StoreError::UnknownQueue(_)) => return Ok(out),
                other => other?,
            };
            let [page, cursor] = tuple::<2>(reply)?;
            out.extend(jobs(queue, page)?);
            let cursor = text(&cursor)?;
            if cursor.is_empty() || out.len() >= query.limit {
                return Ok(out);
            }
            after = cursor.to_owned();
        }
    }

    pub(crate) async fn queue_counts(&self, queue: &QueueName) -> Result<Counts, StoreError> {
        let (declared, by_state): (bool, HashMap<String, i64>) = redis::pipe()
            .cmd("HEXISTS")
            .arg(self.keys().config(queue))
            .arg("name")
            .cmd("HGETALL")
            .arg(self.keys().counts(queue))
            .query_async(&mut self.conn())
            .await
            .map_err(driver)?;
        if !declared {
            return Err(StoreError::UnknownQueue(queue.clone()));
        }
        let mut counts = Counts::default();
        for (name, n) in by_state {
            let n = u64::try_from(n).unwrap_or(0);
            if let Ok(s) = name.parse::<JobState>() {
                *counts.get_mut(s) = n;
            } else if name == "finished" {
                counts.finished = n;
            }
        }
        Ok(counts)
    }

    pub(crate) async fn job_position(&self, id: JobId) -> Result<Option<Position>, StoreError> {
        let Some(queue) = self.locate(&[id]).await?.pop().flatten() else {
            return Ok(None);
        };
        let found = self
            .run(&SCRIPTS.position, &queue, |call| {
                call.arg(id.to_string());
            })
            .await?;
        match array(found)?.as_slice() {
            [] => Ok(None),
            [in_group, in_queue] => Ok(Some(Position {
                in_group: u64::try_from(int(in_group)?).ok(),
                in_queue: count(in_queue)?,
            })),
            other => Err(reply(format!("position {other:?}"))),
        }
    }

    /// Runs `retry_dead.lua` or `purge_dead.lua` over a selection.
    pub(crate) async fn dead_jobs(
        &self,
        script: &redis::Script,
        which: &DeadJobs,
        now: Timestamp,
    ) -> Result<u64, StoreError> {
        match which {
            DeadJobs::All(queue) => {
                let mut total = 0;
                loop {
                    let n = match self.dead_call(script, queue, now, None).await {
                        Err(StoreError::UnknownQueue(_)) => return Ok(0),
                        other => other?,
                    };
                    total += n;
                    if n < BATCH as u64 {
                        return Ok(total);
                    }
                }
            }
            DeadJobs::Ids(ids) => {
                let mut unique: Vec<JobId> = Vec::with_capacity(ids.len());
                for id in ids {
                    if !unique.contains(id) {
                        unique.push(*id);
                    }
                }
                let queues = self.locate(&unique).await?;
                let mut total = 0;
                for (queue, idx) in by_queue(&queues) {
                    let some: Vec<JobId> = idx.iter().map(|&i| unique[i]).collect();
                    total += self.dead_call(script, &queue, now, Some(&some)).await?;
                }
                Ok(total)
            }
        }
    }

    async fn dead_call(
        &self,
        script: &redis::Script,
        queue: &QueueName,
        now: Timestamp,
        ids: Option<&[JobId]>,
    ) -> Result<u64, StoreError> {
        let rest = self
            .write(script, queue, now, |call| match ids {
                None => {
                    call.arg("all").arg(BATCH);
                }
                Some(ids) => {
                    call.arg("ids");
                    for id in ids {
                        call.arg(id.to_string());
                    }
                }
            })
            .await?;
        let [n] = rest_tuple(rest)?;
        count(&n)
    }

    pub(crate) async fn prune_jobs(&self, now: Timestamp, limit: usize) -> Result<u64, StoreError> {
        let mut total = 0u64;
        for queue in self.queues().await? {
            let left = limit.saturating_sub(total as usize);
            if left == 0 {
                break;
            }
            let rest = self
                .write(&SCRIPTS.prune, &queue, now, |call| {
                    call.arg(left);
                })
                .await?;
            let [n] = rest_tuple(rest)?;
            total += count(&n)?;
        }
        Ok(total)
    }

    pub(crate) async fn due(
        &self,
        queue: &QueueName,
        now: Timestamp,
    ) -> Result<Option<Timestamp>, StoreError> {
        let reply = self
            .run(&SCRIPTS.next_due, queue, |call| {
                call.arg(now.as_micros());
            })
            .await?;
        due_time(reply)
    }

    pub(crate) async fn front_due(
        &self,
        queue: &QueueName,
        now: Timestamp,
    ) -> Result<Option<Timestamp>, StoreError> {
        let reply = self
            .run(&SCRIPTS.next_in_line, queue, |call| {
                call.arg(now.as_micros());
            })
            .await?;
        due_time(reply)
    }

    pub(crate) async fn promote(
        &self,
        queue: &QueueName,
        now: Timestamp,
    ) -> Result<u64, StoreError> {
        let mut total = 0;
        loop {
            let rest = self
                .write(&SCRIPTS.promote, queue, now, |call| {
                    call.arg(BATCH);
                })
                .await?;
            let [n] = rest_tuple(rest)?;
            let n = count(&n)?;
            total += n;
            if n < BATCH as u64 {
                return Ok(total);
            }
        }
    }
}

/// The field/value list of an `HGETALL` reply (a map under RESP3).
fn hash_fields(v: Value) -> Vec<Value> {
    match v {
        Value::Array(items) => items,
        Value::Map(pairs) => pairs.into_iter().flat_map(|(k, v)| [k, v]).collect(),
        _ => Vec::new(),
    }
}
