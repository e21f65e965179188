//! Sessions (`wq_core::Sessions`): limits and pause are set by
//! `lua/session.lua`, which puts the session where the claim finds it (or
//! not); operators read sessions back through `lua/sessions.lua`.

use std::time::Duration;

use redis::Value;
use wq_core::{
    PauseChange, QueueName, Rate, SessionInfo, SessionKey, SessionLimits, Sessions, StoreError,
    Timestamp,
};

use crate::error::reply;
use crate::ops::micros;
use crate::reply::{array, text, tuple};
use crate::scripts::SCRIPTS;
use crate::store::RedisStore;

impl RedisStore {
    /// Runs `lua/session.lua` for one session; `args` follow its name.
    /// Returns what the script answered after its wake-up flag.
    async fn set_session(
        &self,
        queue: &QueueName,
        session: &SessionKey,
        args: impl FnOnce(&mut redis::ScriptInvocation<'_>),
    ) -> Result<Vec<Value>, StoreError> {
        // Setting a session depends on no time (a rate's next_start is kept
        // as it was); the script takes the usual `now` slot.
        self.write(&SCRIPTS.session, queue, Timestamp::EPOCH, |call| {
            call.arg(session.as_str());
            args(call);
        })
        .await
    }

    /// Runs `lua/sessions.lua` and decodes what it found.
    async fn read_sessions(
        &self,
        queue: &QueueName,
        args: impl FnOnce(&mut redis::ScriptInvocation<'_>),
    ) -> Result<Vec<SessionInfo>, StoreError> {
        let found = self.run(&SCRIPTS.sessions, queue, args).await?;
        array(found)?
            .into_iter()
            .map(|s| session_info(queue, s))
            .collect()
    }
}

impl Sessions for RedisStore {
    async fn set_session_limits(
        &self,
        queue: &QueueName,
        session: &SessionKey,
        limits: &SessionLimits,
    ) -> Result<(), StoreError> {
        let rate = limits.rate.as_ref();
        let text = |v: Option<String>| v.unwrap_or_default();
        self.set_session(queue, session, |call| {
            call.arg("limits")
                .arg(text(limits.max_running.map(|n| n.to_string())))
                .arg(text(rate.map(|r| micros(r.spacing()).to_string())))
                .arg(text(rate.map(|r| micros(r.jitter).to_string())))
                .arg(text(rate.map(|r| r.starts.to_string())))
                .arg(text(rate.map(|r| r.per.as_nanos().to_string())))
                .arg(text(rate.map(|r| r.jitter.as_nanos().to_string())));
        })
        .await
        .map(drop)
    }

    async fn set_session_paused(
        &self,
        queue: &QueueName,
        session: &SessionKey,
        change: &PauseChange,
    ) -> Result<bool, StoreError> {
        let (name, reason) = match change {
            PauseChange::Pause(r) => ("pause", r.as_str()),
            PauseChange::PauseUnlessPaused(r) => ("pause_unless", r.as_str()),
            PauseChange::Resume => ("resume", ""),
            PauseChange::ResumeIf(r) => ("resume_if", r.as_str()),
        };
        let answer = self
            .set_session(queue, session, |call| {
                call.arg("pause").arg(name).arg(reason);
            })
            .await?;
        match answer.first() {
            Some(changed) => Ok(crate::reply::int(changed)? != 0),
            None => Err(crate::error::reply("no answer to a pause")),
        }
    }

    async fn session_info(
        &self,
        queue: &QueueName,
        session: &SessionKey,
    ) -> Result<Option<SessionInfo>, StoreError> {
        let mut found = self
            .read_sessions(queue, |call| {
                call.arg("one").arg(session.as_str());
            })
            .await?;
        Ok(found.pop())
    }

    async fn list_sessions(
        &self,
        queue: &QueueName,
        after: Option<&SessionKey>,
        limit: usize,
    ) -> Result<Vec<SessionInfo>, StoreError> {
        self.read_sessions(queue, |call| {
            call.arg("list")
                .arg(after.map_or("", SessionKey::as_str))
                .arg(limit);
        })
        .await
    }
}

/// A session as `lua/sessions.lua` returns it: `{ name, { field, value, ... } }`
/// (fields as `lua/lib/core.lua` describes them).
fn session_info(queue: &QueueName, v: Value) -> Result<SessionInfo, StoreError> {
    let [name, fields] = tuple::<2>(v)?;
    let mut info = SessionInfo::new(queue.clone(), SessionKey::from(text(&name)?));
    let (mut max_running, mut starts, mut per, mut jitter, mut next_start) =
        (None, None, None, None, None);
    for pair in array(fields)?.chunks(2) {
        let [field, value] = pair else { continue };
        let value = text(value)?;
        match text(field)? {
            "mr" => max_running = Some(number(field, value)?),
            "rs" => starts = Some(number(field, value)?),
            "rp" => per = Some(Duration::from_nanos(number(field, value)?)),
            "rj" => jitter = Some(Duration::from_nanos(number(field, value)?)),
            "pz" => info.paused = value == "1",
            "pw" => info.pause_reason = Some(value.to_owned()),
            "rn" => info.running = number(field, value)?,
            "wt" => info.waiting = number(field, value)?,
            "ns" => next_start = Some(Timestamp::from_micros(number(field, value)?)),
            _ => {}
        }
    }
    let mut limits = SessionLimits::new();
    if let Some(n) = max_running {
        limits = limits.max_running(n);
    }
    if let (Some(starts), Some(per)) = (starts, per) {
        limits = limits.rate(Rate::new(starts, per).jitter(jitter.unwrap_or_default()));
        info.next_start = next_start;
    }
    info.limits = limits;
    Ok(info)
}

fn number<T: std::str::FromStr>(field: &Value, value: &str) -> Result<T, StoreError> {
    value
        .parse()
        .map_err(|_| reply(format!("session field {field:?} holds `{value}`")))
}
