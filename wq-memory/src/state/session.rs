//! Sessions in memory: each session keeps its own ready heads, and the
//! queue indexes only the sessions that may start a job, by their best
//! head, so a claim never looks at a paused, full or rate-limited session.

use std::collections::BTreeMap;

use wq_core::{
    JobId, JobState, PauseChange, QueueName, SessionInfo, SessionKey, SessionLimits, StoreError,
    Timestamp,
};

use super::{QueueState, ReadyKey, State};

/// Where a session is indexed in its queue.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Slot {
    /// Nowhere: paused, full, or no due head.
    #[default]
    Idle,
    /// In `sessions_ready` under its best head.
    Ready(ReadyKey),
    /// In `session_timers` until its rate lets it start again.
    Timer(Timestamp),
}

#[derive(Debug, Default)]
pub(super) struct Session {
    limits: SessionLimits,
    /// Why it is paused (`None`: it is not).
    pause: Option<String>,
    running: u64,
    waiting: u64,
    next_start: Option<Timestamp>,
    /// A claim has seen `next_start` pass: the rate holds it back no more.
    rate_open: bool,
    /// Its due heads (available jobs that head their group or have none).
    pub(super) ready: BTreeMap<ReadyKey, JobId>,
    slot: Slot,
}

impl Session {
    /// Counts a job of the session entering (`+1`) or leaving (`-1`) `state`.
    pub(super) fn count(&mut self, state: JobState, delta: i8) {
        let n = match state {
            JobState::Running => &mut self.running,
            s if s.is_waiting() => &mut self.waiting,
            _ => return,
        };
        *n = if delta > 0 {
            *n + 1
        } else {
            n.saturating_sub(1)
        };
    }

    fn full(&self) -> bool {
        self.limits
            .max_running
            .is_some_and(|max| self.running >= u64::from(max))
    }

    pub(super) fn has_rate(&self) -> bool {
        self.limits.rate.is_some()
    }

    /// Where the session belongs now. A timer may lie in the past (no
    /// claim has looked since): the next claim's promotion opens it. A
    /// best head between steps (not fresh) runs without a start, so the
    /// rate does not hold it back.
    fn wanted_slot(&self) -> Slot {
        let Some((&best, _)) = self.ready.first_key_value() else {
            return Slot::Idle;
        };
        if self.pause.is_some() || self.full() {
            return Slot::Idle;
        }
        match (self.limits.rate, self.next_start) {
            (Some(_), Some(at)) if !self.rate_open && best.1 => Slot::Timer(at),
            _ => Slot::Ready(best),
        }
    }

    /// Notes that the claim took the session out of `sessions_ready`.
    pub(super) fn mark_unindexed(&mut self) {
        self.slot = Slot::Idle;
    }

    /// Records a start under lease `token` at `now` for the rate.
    pub(super) fn started(&mut self, token: u64, now: Timestamp) {
        if let Some(rate) = self.limits.rate {
            self.next_start = Some(now + rate.spacing_after(token));
            self.rate_open = false;
        }
    }

    fn info(&self, queue: &QueueName, key: &SessionKey) -> SessionInfo {
        let mut info = SessionInfo::new(queue.clone(), key.clone());
        info.limits = self.limits;
        info.paused = self.pause.is_some();
        info.pause_reason = self.pause.clone();
        info.running = self.running;
        info.waiting = self.waiting;
        info.next_start = self.next_start.filter(|_| self.limits.rate.is_some());
        info
    }
}

impl QueueState {
    /// Puts a session where its state says; true if it became able to
    /// start a job (workers should wake).
    pub(super) fn reindex(&mut self, key: &SessionKey) -> bool {
        let Some(s) = self.sessions.get_mut(key) else {
            return false;
        };
        let old = s.slot;
        let new = s.wanted_slot();
        if old == new {
            return false;
        }
        s.slot = new;
        match old {
            Slot::Idle => {}
            Slot::Ready(k) => {
                self.sessions_ready.remove(&k);
            }
            Slot::Timer(at) => {
                self.session_timers.remove(&(at, key.clone()));
            }
        }
        match new {
            Slot::Idle => false,
            Slot::Ready(k) => {
                self.sessions_ready.insert(k, key.clone());
                !matches!(old, Slot::Ready(_))
            }
            Slot::Timer(at) => {
                self.session_timers.insert((at, key.clone()));
                old == Slot::Idle
            }
        }
    }

    /// Moves sessions whose rate lets them start again by `now` to ready.
    pub(super) fn promote_sessions(&mut self, now: Timestamp) {
        while let Some((at, _)) = self.session_timers.first()
            && *at <= now
        {
            let Some((_, key)) = self.session_timers.pop_first() else {
                break;
            };
            let Some(s) = self.sessions.get_mut(&key) else {
                continue;
            };
            s.slot = Slot::Idle;
            s.rate_open = true;
            if let Some((&best, _)) = s.ready.first_key_value() {
                s.slot = Slot::Ready(best);
                self.sessions_ready.insert(best, key);
            }
        }
    }

    /// The earliest time a rate-limited session may start a job.
    pub(super) fn next_session_start(&self) -> Option<Timestamp> {
        self.session_timers.first().map(|(at, _)| *at)
    }

    /// The session named `key`, created with no limits if new.
    pub(super) fn session_mut(&mut self, key: &SessionKey) -> &mut Session {
        self.sessions.entry(key.clone()).or_default()
    }

    /// Reindexes the sessions touched since the last call; true if any
    /// became able to start a job.
    pub(super) fn settle_sessions(&mut self) -> bool {
        let mut wake = false;
        for key in std::mem::take(&mut self.dirty) {
            wake |= self.reindex(&key);
        }
        wake
    }
}

impl State {
    /// Reindexes every session touched by the last operation and wakes
    /// the queues where one may start a job again.
    pub fn settle_sessions(&mut self) {
        let mut woken = Vec::new();
        for (name, q) in self.queues.iter_mut() {
            if !q.dirty.is_empty() && q.settle_sessions() {
                woken.push(name.clone());
            }
        }
        for name in woken {
            self.mark_wake(&name);
        }
    }

    pub fn set_session_limits(
        &mut self,
        queue: &QueueName,
        key: &SessionKey,
        limits: &SessionLimits,
    ) -> Result<(), StoreError> {
        let q = self.queue_mut(queue)?;
        q.session_mut(key).limits = *limits;
        q.dirty.push(key.clone());
        Ok(())
    }

    pub fn set_session_paused(
        &mut self,
        queue: &QueueName,
        key: &SessionKey,
        change: &PauseChange,
    ) -> Result<bool, StoreError> {
        let q = self.queue_mut(queue)?;
        let session = q.session_mut(key);
        let Some(pause) = change.apply(session.pause.as_deref()) else {
            return Ok(false);
        };
        session.pause = pause;
        q.dirty.push(key.clone());
        Ok(true)
    }

    pub fn session_info(
        &self,
        queue: &QueueName,
        key: &SessionKey,
    ) -> Result<Option<SessionInfo>, StoreError> {
        let q = self.queue(queue)?;
        Ok(q.sessions.get(key).map(|s| s.info(queue, key)))
    }

    pub fn list_sessions(
        &self,
        queue: &QueueName,
        after: Option<&SessionKey>,
        limit: usize,
    ) -> Result<Vec<SessionInfo>, StoreError> {
        let q = self.queue(queue)?;
        let mut keys: Vec<&SessionKey> = q
            .sessions
            .keys()
            .filter(|k| after.is_none_or(|a| *k > a))
            .collect();
        keys.sort_unstable();
        Ok(keys
            .into_iter()
            .take(limit)
            .map(|k| q.sessions[k].info(queue, k))
            .collect())
    }
}
