//! Decoding script replies: jobs, outcomes, numbers.

use std::str::FromStr;
use std::sync::Arc;

use redis::Value;
use wq_core::{
    Attempt, GroupKey, Job, JobId, JobState, Lease, Payload, QueueName, SessionKey, StoreError,
    Timestamp,
};

use crate::error::reply;

/// The elements of an array reply.
pub(crate) fn array(v: Value) -> Result<Vec<Value>, StoreError> {
    match v {
        Value::Array(items) => Ok(items),
        other => Err(reply(format!("expected an array, got {other:?}"))),
    }
}

/// An array reply of exactly `N` elements.
pub(crate) fn tuple<const N: usize>(v: Value) -> Result<[Value; N], StoreError> {
    let items = array(v)?;
    let len = items.len();
    items
        .try_into()
        .map_err(|_| reply(format!("expected {N} elements, got {len}")))
}

/// A text reply.
pub(crate) fn text(v: &Value) -> Result<&str, StoreError> {
    match v {
        Value::BulkString(b) => std::str::from_utf8(b).map_err(|e| reply(e.to_string())),
        Value::SimpleString(s) => Ok(s),
        other => Err(reply(format!("expected text, got {other:?}"))),
    }
}

/// An integer reply, or an integer written as text (a sorted-set score).
pub(crate) fn int(v: &Value) -> Result<i64, StoreError> {
    match v {
        Value::Int(n) => Ok(*n),
        other => parse_int(text(other)?),
    }
}

fn parse_int(s: &str) -> Result<i64, StoreError> {
    s.parse::<i64>().or_else(|_| {
        // Scores come back as doubles; timestamps are exact below 2^53.
        s.parse::<f64>()
            .ok()
            .filter(|f| f.is_finite() && f.fract() == 0.0)
            .map(|f| f as i64)
            .ok_or_else(|| reply(format!("`{s}` is not an integer")))
    })
}

/// A next due time as the scripts answer it: `[]` or `[micros]`.
pub(crate) fn due_time(v: Value) -> Result<Option<Timestamp>, StoreError> {
    match array(v)?.first() {
        Some(t) => Ok(Some(Timestamp::from_micros(int(t)?))),
        None => Ok(None),
    }
}

/// A count reply.
pub(crate) fn count(v: &Value) -> Result<u64, StoreError> {
    let n = int(v)?;
    u64::try_from(n).map_err(|_| reply(format!("negative count {n}")))
}

/// A state name.
pub(crate) fn state(v: &Value) -> Result<JobState, StoreError> {
    let s = text(v)?;
    JobState::from_str(s).map_err(|e| reply(e.to_string()))
}

/// A job id.
pub(crate) fn job_id(s: &str) -> Result<JobId, StoreError> {
    JobId::from_str(s).map_err(|e| reply(format!("bad job id `{s}`: {e}")))
}

fn timestamp(s: &str) -> Result<Timestamp, StoreError> {
    parse_int(s).map(Timestamp::from_micros)
}

fn number<T: FromStr>(field: &str, s: &str) -> Result<T, StoreError> {
    s.parse()
        .map_err(|_| reply(format!("field `{field}` holds `{s}`")))
}

/// The fields of a job hash, as stored by the scripts.
#[derive(Default)]
struct Fields {
    tenant: Option<Arc<str>>,
    group: Option<GroupKey>,
    session: Option<SessionKey>,
    seq: Option<u64>,
    priority: Option<i16>,
    run_at: Option<Timestamp>,
    attempt: Option<u32>,
    max_attempts: Option<u32>,
    state: Option<JobState>,
    idempotency_key: Option<Arc<str>>,
    token: Option<u64>,
    lease_until: Option<Timestamp>,
    worker: Option<Arc<str>>,
    lease_start: Option<Timestamp>,
    cancel_requested: bool,
    last_error: Option<String>,
    step: Option<String>,
    created_at: Option<Timestamp>,
    updated_at: Option<Timestamp>,
    finished_at: Option<Timestamp>,
}

impl Fields {
    fn set(&mut self, name: &str, v: &str) -> Result<(), StoreError> {
        // A job that holds no lease keeps its lease fields empty.
        if v.is_empty() && matches!(name, "tk" | "lx" | "wk" | "ls") {
            return Ok(());
        }
        match name {
            "tn" => self.tenant = Some(v.into()),
            "g" => self.group = Some(GroupKey::from(v)),
            "s" => self.session = Some(SessionKey::from(v)),
            "sq" => self.seq = Some(number(name, v)?),
            "pr" => self.priority = Some(number(name, v)?),
            "ra" => self.run_at = Some(timestamp(v)?),
            "at" => self.attempt = Some(number(name, v)?),
            "mx" => self.max_attempts = Some(number(name, v)?),
            "st" => self.state = Some(JobState::from_str(v).map_err(|e| reply(e.to_string()))?),
            "ik" => self.idempotency_key = Some(v.into()),
            "tk" => self.token = Some(number(name, v)?),
            "lx" => self.lease_until = Some(timestamp(v)?),
            "wk" => self.worker = Some(v.into()),
            "ls" => self.lease_start = Some(timestamp(v)?),
            "cr" => self.cancel_requested = v == "1",
            "er" => self.last_error = Some(v.to_owned()),
            "sp" => self.step = Some(v.to_owned()),
            "ca" => self.created_at = Some(timestamp(v)?),
            "ua" => self.updated_at = Some(timestamp(v)?),
            "fa" => self.finished_at = Some(timestamp(v)?),
            _ => {}
        }
        Ok(())
    }

    fn lease(&mut self) -> Option<Lease> {
        Some(Lease {
            token: self.token?,
            expires_at: self.lease_until?,
            worker: self.worker.take()?,
            // A lease taken before its start was kept counts from the
            // claim's update, as its record will.
            started_at: self.lease_start.or(self.updated_at)?,
        })
    }
}

fn required<T>(id: JobId, field: &str, v: Option<T>) -> Result<T, StoreError> {
    v.ok_or_else(|| reply(format!("job {id} has no `{field}`")))
}

/// A job's history as stored: the JSON array of its records, or nil.
fn history(id: JobId, v: &Value) -> Result<Vec<Attempt>, StoreError> {
    if *v == Value::Nil {
        return Ok(Vec::new());
    }
    serde_json::from_str(text(v)?).map_err(|e| reply(format!("job {id} has a bad history: {e}")))
}

/// A job's output as stored (checked JSON, kept byte for byte), or nil.
fn output(v: &Value) -> Result<Option<Payload>, StoreError> {
    match v {
        Value::Nil => Ok(None),
        v => text(v).map(|t| Some(Payload::from_trusted(t))),
    }
}

/// A job as the scripts return it: `{ id, payload, { field, value, ... },
/// history, output }`, the last two nil for none.
pub(crate) fn job(queue: &QueueName, v: Value) -> Result<Job, StoreError> {
    let [id, payload, fields, runs, out] = tuple::<5>(v)?;
    let id = job_id(text(&id)?)?;
    let payload = Payload::from_trusted(text(&payload)?);
    let mut f = Fields::default();
    for pair in array(fields)?.chunks(2) {
        if let [name, value] = pair {
            f.set(text(name)?, text(value)?)?;
        }
    }
    let lease = f.lease();
    let mut job = Job::new(
        id,
        queue.clone(),
        payload,
        required(id, "ca", f.created_at)?,
    );
    job.tenant = f.tenant;
    job.group = f.group;
    job.session = f.session;
    job.seq = required(id, "sq", f.seq)?;
    job.priority = required(id, "pr", f.priority)?;
    job.run_at = required(id, "ra", f.run_at)?;
    job.attempt = required(id, "at", f.attempt)?;
    job.max_attempts = required(id, "mx", f.max_attempts)?;
    job.state = required(id, "st", f.state)?;
    job.idempotency_key = f.idempotency_key;
    job.lease = lease;
    job.cancel_requested = f.cancel_requested;
    job.last_error = f.last_error;
    job.step = f.step;
    job.output = output(&out)?;
    job.history = history(id, &runs)?;
    job.updated_at = required(id, "ua", f.updated_at)?;
    job.finished_at = f.finished_at;
    Ok(job)
}

/// A list of jobs.
pub(crate) fn jobs(queue: &QueueName, v: Value) -> Result<Vec<Job>, StoreError> {
    array(v)?.into_iter().map(|j| job(queue, j)).collect()
}

/// Whether a writing script published a wake-up.
pub(crate) fn woke(v: &Value) -> Result<bool, StoreError> {
    Ok(int(v)? != 0)
}
