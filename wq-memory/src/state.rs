//! The in-memory data structure and every state change, under one lock.
//!
//! Per queue, only jobs that may run next are indexed: ungrouped jobs and
//! the head of each group. `ready` orders the due ones by (priority,
//! fresh, `run_at`, sequence), where a job between steps is not fresh and
//! so comes first at its priority; `scheduled` orders the rest by
//! `run_at`. A claim pops
//! from `ready` and a group's next job enters an index only when its head is
//! terminal, so one job in flight per group holds by construction and no
//! operation on the hot path scans the backlog. A due head with a session
//! sits in its session's own index instead (see `session.rs`).

mod admission;
mod audit;
mod session;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use wq_core::attempt::{LEASE_LAPSED, push_history};
use wq_core::{
    Ack, AckAction, AckOutcome, Attempt, AttemptOutcome, ClaimRequest, Counts, DeadJobs, Enqueued,
    ExtendOutcome, GroupKey, Job, JobId, JobState, Lease, LeaseRef, ListQuery, LockLease, NewJob,
    OnDead, Position, QueueConfig, QueueInfo, QueueName, RescueReport, RunAt, SessionKey,
    StoreError, Timestamp, WakeSender, chained_run_at,
};

use session::Session;

/// Maps on the hot path hash with foldhash: ids and names come from our
/// own code, not from an attacker choosing collisions.
type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Sequences are unique, so keys need no job id (and no UUID comparisons).
/// The flag is false for a job between steps ([`Job::continued`]).
type ReadyKey = (i16, bool, Timestamp, u64);
type ScheduledKey = (Timestamp, u64);

#[derive(Debug, Default)]
struct Group {
    /// Non-terminal jobs in enqueue order; a held group keeps its dead head first.
    pending: VecDeque<JobId>,
    /// The latest `run_at` in the group, for time chaining.
    last_run_at: Timestamp,
    /// The head is dead and the queue holds the group until an operator acts.
    held: bool,
    /// No new head starts before this (the queue's `group_gap` after the
    /// group last moved on).
    gap_until: Timestamp,
}

#[derive(Debug)]
struct QueueState {
    config: QueueConfig,
    paused: bool,
    ready: BTreeMap<ReadyKey, JobId>,
    scheduled: BTreeMap<ScheduledKey, JobId>,
    groups: Map<GroupKey, Group>,
    idempotency: Map<Arc<str>, JobId>,
    /// Completed and cancelled jobs by `finished_at`, for pruning.
    finished: BTreeSet<(Timestamp, JobId)>,
    /// Dead jobs by `finished_at`.
    dead: BTreeSet<(Timestamp, JobId)>,
    counts: Counts,
    wake: WakeSender,
    sessions: Map<SessionKey, Session>,
    /// Sessions that may start a job now, by their best due head.
    sessions_ready: BTreeMap<ReadyKey, SessionKey>,
    /// Sessions with due heads that their rate holds back, by when it lets go.
    session_timers: BTreeSet<(Timestamp, SessionKey)>,
    /// Sessions changed since they were last indexed.
    dirty: Vec<SessionKey>,
    /// Sessions' admitted groups and allowances.
    admissions: Map<SessionKey, admission::Admitted>,
}

impl QueueState {
    fn new(config: QueueConfig, wake: WakeSender) -> Self {
        Self {
            config,
            paused: false,
            ready: BTreeMap::new(),
            scheduled: BTreeMap::new(),
            groups: Map::default(),
            idempotency: Map::default(),
            finished: BTreeSet::new(),
            dead: BTreeSet::new(),
            counts: Counts::default(),
            wake,
            sessions: Map::default(),
            sessions_ready: BTreeMap::new(),
            session_timers: BTreeSet::new(),
            dirty: Vec::new(),
            admissions: Map::default(),
        }
    }

    fn info(&self) -> QueueInfo {
        QueueInfo {
            config: self.config.clone(),
            paused: self.paused,
        }
    }

    fn set_state(&mut self, job: &mut Job, state: JobState, now: Timestamp) {
        *self.counts.get_mut(job.state) -= 1;
        *self.counts.get_mut(state) += 1;
        if state.is_terminal() {
            self.counts.finished += 1;
        }
        if let Some(key) = &job.session {
            let s = self.session_mut(key);
            s.count(job.state, -1);
            s.count(state, 1);
            if job.state == JobState::Running || state == JobState::Running {
                self.dirty.push(key.clone());
            }
        }
        job.state = state;
        job.updated_at = now;
    }

    /// Indexes a due head: in its session's line, or the queue's.
    fn index_ready(&mut self, job: &Job) {
        match &job.session {
            Some(key) => {
                self.session_mut(key).ready.insert(ready_key(job), job.id);
                self.dirty.push(key.clone());
            }
            None => {
                self.ready.insert(ready_key(job), job.id);
            }
        }
    }

    /// Removes a job from the ready or scheduled index, wherever it is.
    fn unindex(&mut self, job: &Job) {
        let key = ready_key(job);
        let was_ready = match &job.session {
            Some(s) => {
                let removed = self
                    .sessions
                    .get_mut(s)
                    .and_then(|sess| sess.ready.remove(&key))
                    .is_some();
                if removed {
                    self.dirty.push(s.clone());
                }
                removed
            }
            None => self.ready.remove(&key).is_some(),
        };
        if !was_ready {
            self.scheduled.remove(&scheduled_key(job));
        }
    }

    /// Takes the next due head a claim may hand out: the lowest key among
    /// the session-less heads and the best heads of sessions that may
    /// start a job.
    fn pop_next(&mut self) -> Option<JobId> {
        let plain = self.ready.first_key_value().map(|(k, _)| *k);
        let session = self.sessions_ready.first_key_value().map(|(k, _)| *k);
        match (plain, session) {
            (Some(p), Some(s)) if s < p => self.pop_session_head(),
            (Some(_), _) => self.ready.pop_first().map(|(_, id)| id),
            (None, Some(_)) => self.pop_session_head(),
            (None, None) => None,
        }
    }

    /// Takes the best head of the best ready session; the caller reindexes
    /// the session once the job runs.
    fn pop_session_head(&mut self) -> Option<JobId> {
        let (_, key) = self.sessions_ready.pop_first()?;
        let s = self.sessions.get_mut(&key)?;
        s.mark_unindexed();
        s.ready.pop_first().map(|(_, id)| id)
    }

    /// Moves scheduled jobs whose time has come into `ready`.
    fn promote(&mut self, jobs: &mut Map<JobId, Job>, now: Timestamp) -> u64 {
        let mut moved = 0;
        while let Some(entry) = self.scheduled.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let id = entry.remove();
            if let Some(job) = jobs.get_mut(&id) {
                self.set_state(job, JobState::Available, now);
                self.index_ready(job);
                moved += 1;
            }
        }
        self.settle_sessions();
        self.promote_sessions(now);
        moved
    }
}

/// The job if `token` holds a live lease on it.
fn leased(
    jobs: &mut Map<JobId, Job>,
    id: JobId,
    token: u64,
    now: Timestamp,
) -> Result<&mut Job, AckOutcome> {
    let job = jobs.get_mut(&id).ok_or(AckOutcome::NotFound)?;
    match &job.lease {
        Some(l) if job.state == JobState::Running && l.token == token && l.expires_at > now => {
            Ok(job)
        }
        _ => Err(AckOutcome::Stale),
    }
}

/// How a run acknowledged with `action` ends, and the message its record
/// keeps: the action's failure or reason to wait.
fn run_outcome<'a>(
    action: &'a AckAction,
    cancelled: bool,
    job: &Job,
) -> (AttemptOutcome, Option<&'a str>) {
    let error = match action {
        AckAction::Retry { error, .. } | AckAction::Kill { error } => Some(error.as_str()),
        AckAction::Defer { reason, .. } => Some(reason.as_str()),
        _ => None,
    };
    let outcome = match action {
        AckAction::Complete { .. } => AttemptOutcome::Completed,
        _ if cancelled => AttemptOutcome::Cancelled,
        AckAction::Kill { .. } => AttemptOutcome::Dead,
        AckAction::Retry { .. } if job.attempt >= job.max_attempts => AttemptOutcome::Dead,
        AckAction::Retry { .. } => AttemptOutcome::Retried,
        AckAction::Defer { .. } => AttemptOutcome::Deferred,
        AckAction::Continue { .. } => AttemptOutcome::Continued,
        AckAction::Release => AttemptOutcome::Released,
    };
    (outcome, error)
}

/// Appends the run that `lease` held to `job`'s history.
fn record_run(
    job: &mut Job,
    lease: Option<Lease>,
    now: Timestamp,
    outcome: AttemptOutcome,
    error: Option<String>,
) {
    if let Some(lease) = lease {
        let run = Attempt::new(
            job.attempt,
            lease.started_at,
            now,
            lease.worker,
            outcome,
            error,
        );
        push_history(&mut job.history, run);
    }
}

fn ready_key(job: &Job) -> ReadyKey {
    (job.priority, !job.continued(), job.run_at, job.seq)
}

fn scheduled_key(job: &Job) -> ScheduledKey {
    (job.run_at, job.seq)
}

/// Everything the memory store holds.
#[derive(Debug, Default)]
pub(crate) struct State {
    jobs: Map<JobId, Job>,
    queues: Map<QueueName, QueueState>,
    /// Running jobs by lease expiry, for rescue.
    leases: BTreeSet<(Timestamp, JobId)>,
    /// The token of the last acknowledgement applied to each job that has
    /// not run since: the same acknowledgement sent again answers applied.
    acked: Map<JobId, u64>,
    locks: Map<Arc<str>, LockLease>,
    next_seq: u64,
    next_token: u64,
    /// Queues to wake once the lock is released.
    wakes: Vec<WakeSender>,
}

impl State {
    /// Queues whose workers should wake; call after releasing the lock.
    pub fn take_wakes(&mut self) -> Vec<WakeSender> {
        std::mem::take(&mut self.wakes)
    }

    fn mark_wake(&mut self, queue: &QueueName) {
        if let Some(q) = self.queues.get(queue)
            && !self.wakes.iter().any(|w| w.same_channel(&q.wake))
        {
            self.wakes.push(q.wake.clone());
        }
    }

    fn queue(&self, name: &QueueName) -> Result<&QueueState, StoreError> {
        self.queues
            .get(name)
            .ok_or_else(|| StoreError::UnknownQueue(name.clone()))
    }

    fn queue_mut(&mut self, name: &QueueName) -> Result<&mut QueueState, StoreError> {
        self.queues
            .get_mut(name)
            .ok_or_else(|| StoreError::UnknownQueue(name.clone()))
    }

    // ---- queues -------------------------------------------------------------

    pub fn declare_queue(&mut self, config: &QueueConfig, wake: WakeSender) {
        match self.queues.get_mut(&config.name) {
            Some(q) => q.config = config.clone(),
            None => {
                self.queues
                    .insert(config.name.clone(), QueueState::new(config.clone(), wake));
            }
        }
    }

    pub fn queue_info(&self, name: &QueueName) -> Option<QueueInfo> {
        self.queues.get(name).map(QueueState::info)
    }

    pub fn list_queues(&self) -> Vec<QueueInfo> {
        let mut all: Vec<_> = self.queues.values().map(QueueState::info).collect();
        all.sort_by(|a, b| a.config.name.cmp(&b.config.name));
        all
    }

    pub fn set_paused(&mut self, name: &QueueName, paused: bool) -> Result<(), StoreError> {
        self.queue_mut(name)?.paused = paused;
        if !paused {
            self.mark_wake(name);
        }
        Ok(())
    }

    // ---- enqueue ------------------------------------------------------------

    pub fn enqueue(
        &mut self,
        jobs: Vec<NewJob>,
        now: Timestamp,
    ) -> Result<Vec<Enqueued>, StoreError> {
        if let Some(unknown) = jobs.iter().find(|j| !self.queues.contains_key(&j.queue)) {
            return Err(StoreError::UnknownQueue(unknown.queue.clone()));
        }
        let mut out = Vec::with_capacity(jobs.len());
        for new in jobs {
            out.push(self.enqueue_one(new, now)?);
        }
        Ok(out)
    }

    fn existing(&self, new: &NewJob) -> Option<&Job> {
        if let Some(job) = self.jobs.get(&new.id) {
            return Some(job);
        }
        let key = new.idempotency_key.as_ref()?;
        let id = self.queues.get(&new.queue)?.idempotency.get(key)?;
        self.jobs.get(id)
    }

    fn enqueue_one(&mut self, new: NewJob, now: Timestamp) -> Result<Enqueued, StoreError> {
        if let Some(job) = self.existing(&new) {
            return Ok(Enqueued {
                job: job.clone(),
                created: false,
            });
        }
        self.next_seq += 1;
        let seq = self.next_seq;
        let Some(q) = self.queues.get_mut(&new.queue) else {
            return Err(StoreError::UnknownQueue(new.queue));
        };
        let (run_at, is_head) = match &new.group {
            Some(g) => {
                let group = q.groups.entry(g.clone()).or_default();
                let is_head = group.pending.is_empty() && !group.held;
                let run_at = match new.run_at {
                    RunAt::At(t) => t,
                    RunAt::Chained { offset } => {
                        chained_run_at(Some(group.last_run_at), now, offset)
                    }
                };
                let run_at = if is_head {
                    run_at.max(group.gap_until)
                } else {
                    run_at
                };
                group.last_run_at = group.last_run_at.max(run_at);
                group.pending.push_back(new.id);
                (run_at, is_head)
            }
            None => match new.run_at {
                RunAt::At(t) => (t, true),
                RunAt::Chained { offset } => (now + offset, true),
            },
        };
        let state = if run_at <= now {
            JobState::Available
        } else {
            JobState::Scheduled
        };
        let job = Job::enqueued(new, seq, run_at, state, now);
        *q.counts.get_mut(state) += 1;
        if let Some(key) = &job.session {
            q.session_mut(key).count(state, 1);
        }
        if is_head {
            match state {
                JobState::Available => q.index_ready(&job),
                _ => {
                    q.scheduled.insert(scheduled_key(&job), job.id);
                }
            };
        }
        if let Some(key) = &job.idempotency_key {
            q.idempotency.insert(key.clone(), job.id);
        }
        let queue = job.queue.clone();
        self.jobs.insert(job.id, job.clone());
        self.mark_wake(&queue);
        Ok(Enqueued { job, created: true })
    }

    // ---- claim and acknowledge ----------------------------------------------

    pub fn claim(&mut self, req: &ClaimRequest) -> Result<Vec<Job>, StoreError> {
        let Some(q) = self.queues.get_mut(&req.queue) else {
            return Err(StoreError::UnknownQueue(req.queue.clone()));
        };
        if q.paused || req.limit == 0 {
            return Ok(Vec::new());
        }
        q.promote(&mut self.jobs, req.now);
        let mut out = Vec::with_capacity(req.limit.min(q.ready.len() + q.sessions_ready.len()));
        // Sessions with a rate give one job per claim, a start or not: they
        // stay out of the index until the claim ends.
        let mut rated = Vec::new();
        while out.len() < req.limit {
            let Some(id) = q.pop_next() else {
                break;
            };
            let Some(job) = self.jobs.get_mut(&id) else {
                continue;
            };
            self.next_token += 1;
            q.set_state(job, JobState::Running, req.now);
            job.attempt += 1;
            job.lease = Some(Lease {
                token: self.next_token,
                expires_at: req.lease_until,
                worker: req.worker.clone(),
                started_at: req.now,
            });
            self.leases.insert((req.lease_until, id));
            self.acked.remove(&id);
            if let Some(key) = &job.session {
                let session = q.session_mut(key);
                if session.has_rate() {
                    if !job.continued() {
                        session.started(self.next_token, req.now);
                    }
                    rated.push(key.clone());
                } else {
                    q.reindex(key);
                }
            }
            out.push(job.clone());
        }
        for key in &rated {
            q.reindex(key);
        }
        Ok(out)
    }

    pub fn ack(&mut self, acks: &[Ack], now: Timestamp) -> Vec<AckOutcome> {
        acks.iter().map(|a| self.ack_one(a, now)).collect()
    }

    fn ack_one(&mut self, ack: &Ack, now: Timestamp) -> AckOutcome {
        let outcome = self.apply_ack(ack, now);
        if let AckOutcome::Applied(_) = outcome
            && self.jobs.contains_key(&ack.id)
        {
            self.acked.insert(ack.id, ack.token);
        }
        outcome
    }

    fn apply_ack(&mut self, ack: &Ack, now: Timestamp) -> AckOutcome {
        if self.acked.get(&ack.id) == Some(&ack.token)
            && let Some(job) = self.jobs.get(&ack.id)
        {
            return AckOutcome::Applied(job.state);
        }
        let job = match leased(&mut self.jobs, ack.id, ack.token, now) {
            Ok(job) => job,
            Err(outcome) => return outcome,
        };
        let lease = job.lease.take();
        if let Some(lease) = &lease {
            self.leases.remove(&(lease.expires_at, ack.id));
        }
        let cancelled = job.cancel_requested;
        let (outcome, error) = run_outcome(&ack.action, cancelled, job);
        record_run(job, lease, now, outcome, error.map(str::to_owned));
        let final_state = match &ack.action {
            AckAction::Complete { output } => {
                // The error of an earlier attempt no longer describes it.
                job.last_error = None;
                job.output = output.clone();
                JobState::Completed
            }
            _ if cancelled => JobState::Cancelled,
            AckAction::Kill { error } => {
                job.last_error = Some(error.clone());
                JobState::Dead
            }
            AckAction::Retry { error, .. } if job.attempt >= job.max_attempts => {
                job.last_error = Some(error.clone());
                JobState::Dead
            }
            AckAction::Retry { run_at, error } => {
                job.last_error = Some(error.clone());
                job.run_at = *run_at;
                return AckOutcome::Applied(self.requeue(ack.id, now));
            }
            AckAction::Defer { run_at, reason } => {
                job.last_error = Some(reason.clone());
                job.attempt = job.attempt.saturating_sub(1);
                job.run_at = *run_at;
                return AckOutcome::Applied(self.requeue(ack.id, now));
            }
            AckAction::Continue { run_at, step } => {
                job.step = Some(step.clone());
                job.attempt = job.attempt.saturating_sub(1);
                job.run_at = *run_at;
                return AckOutcome::Applied(self.requeue(ack.id, now));
            }
            AckAction::Release => {
                job.attempt = job.attempt.saturating_sub(1);
                return AckOutcome::Applied(self.requeue(ack.id, now));
            }
        };
        self.finish(ack.id, final_state, now);
        AckOutcome::Applied(final_state)
    }

    pub fn extend(
        &mut self,
        leases: &[LeaseRef],
        until: Timestamp,
        now: Timestamp,
    ) -> Vec<ExtendOutcome> {
        leases
            .iter()
            .map(|r| {
                let Ok(job) = leased(&mut self.jobs, r.id, r.token, now) else {
                    return ExtendOutcome::Lost;
                };
                let cancel = job.cancel_requested;
                let Some(lease) = job.lease.as_mut() else {
                    return ExtendOutcome::Lost;
                };
                let old = std::mem::replace(&mut lease.expires_at, until);
                self.leases.remove(&(old, r.id));
                self.leases.insert((until, r.id));
                if cancel {
                    ExtendOutcome::CancelRequested
                } else {
                    ExtendOutcome::Extended
                }
            })
            .collect()
    }

    pub fn rescue(&mut self, now: Timestamp, limit: usize) -> RescueReport {
        let mut report = RescueReport::default();
        while (report.total() as usize) < limit {
            let Some(&(expires_at, id)) = self.leases.first() else {
                break;
            };
            if expires_at > now {
                break;
            }
            self.leases.pop_first();
            let Some(job) = self.jobs.get_mut(&id) else {
                continue;
            };
            let lease = job.lease.take();
            let queue = job.queue.clone();
            let error = Some(LEASE_LAPSED.to_owned());
            record_run(job, lease, now, AttemptOutcome::Lapsed, error);
            let state = if job.cancel_requested {
                self.finish(id, JobState::Cancelled, now);
                JobState::Cancelled
            } else if job.attempt >= job.max_attempts {
                job.last_error = Some(LEASE_LAPSED.into());
                self.finish(id, JobState::Dead, now);
                JobState::Dead
            } else {
                job.last_error = Some(LEASE_LAPSED.into());
                self.requeue(id, now)
            };
            report.add(id, queue, state);
        }
        report
    }

    /// Puts a job that heads its group (or has none) back in its queue's
    /// indexes, as scheduled or available by its `run_at`.
    fn requeue(&mut self, id: JobId, now: Timestamp) -> JobState {
        let Some(job) = self.jobs.get_mut(&id) else {
            return JobState::Dead;
        };
        let Some(q) = self.queues.get_mut(&job.queue) else {
            return job.state;
        };
        if job.run_at <= now {
            q.set_state(job, JobState::Available, now);
            q.index_ready(job);
        } else {
            q.set_state(job, JobState::Scheduled, now);
            q.scheduled.insert(scheduled_key(job), id);
        }
        let (state, queue) = (job.state, job.queue.clone());
        self.mark_wake(&queue);
        state
    }

    /// Ends a job in a terminal state and lets its group move on (unless a
    /// dead head holds it).
    fn finish(&mut self, id: JobId, state: JobState, now: Timestamp) {
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        let Some(q) = self.queues.get_mut(&job.queue) else {
            return;
        };
        q.unindex(job);
        q.set_state(job, state, now);
        job.finished_at = Some(now);
        job.lease = None;
        if state == JobState::Dead {
            q.dead.insert((now, id));
        } else {
            q.finished.insert((now, id));
        }
        let hold = state == JobState::Dead && q.config.on_dead == OnDead::Hold;
        let drop_now = state != JobState::Dead && q.config.retention.completed.is_zero();
        let (queue, group) = (job.queue.clone(), job.group.clone());
        if let Some(g) = group {
            self.leave_group(&queue, &g, id, hold, now);
        }
        if drop_now {
            self.remove(id);
        }
    }

    /// Takes `id` out of its group's line (or holds the group on it), and
    /// indexes the group's next head.
    fn leave_group(
        &mut self,
        queue: &QueueName,
        g: &GroupKey,
        id: JobId,
        hold: bool,
        now: Timestamp,
    ) {
        let Some(q) = self.queues.get_mut(queue) else {
            return;
        };
        let gap = q.config.group_gap;
        let Some(group) = q.groups.get_mut(g) else {
            return;
        };
        let was_head = group.pending.front() == Some(&id);
        if hold && was_head {
            group.held = true;
            return;
        }
        if was_head {
            group.pending.pop_front();
            group.held = false;
            // Without a gap the next head keeps its run_at, and so its
            // place in the queue's order.
            if !gap.is_zero() {
                group.gap_until = group.gap_until.max(now + gap);
            }
        } else if let Some(pos) = group.pending.iter().position(|p| *p == id) {
            group.pending.remove(pos);
        }
        if was_head {
            self.advance(queue, g, now);
        }
    }

    /// Indexes the group's new head, or forgets an empty group whose chain
    /// no longer matters.
    fn advance(&mut self, queue: &QueueName, g: &GroupKey, now: Timestamp) {
        let Some(q) = self.queues.get_mut(queue) else {
            return;
        };
        let Some(group) = q.groups.get(g) else {
            return;
        };
        match group.pending.front() {
            Some(next) if !group.held => {
                let (next, gap_until) = (*next, group.gap_until);
                if let Some(job) = self.jobs.get_mut(&next) {
                    job.run_at = job.run_at.max(gap_until);
                }
                self.requeue(next, now);
            }
            Some(_) => {}
            None if group.last_run_at <= now && group.gap_until <= now => {
                q.groups.remove(g);
            }
            None => {}
        }
    }

    /// Deletes a job outright.
    fn remove(&mut self, id: JobId) -> Option<Job> {
        self.acked.remove(&id);
        let job = self.jobs.remove(&id)?;
        if let Some(q) = self.queues.get_mut(&job.queue) {
            *q.counts.get_mut(job.state) -= 1;
            if let Some(at) = job.finished_at {
                q.finished.remove(&(at, id));
                q.dead.remove(&(at, id));
            }
            if let Some(key) = &job.idempotency_key
                && q.idempotency.get(key) == Some(&id)
            {
                q.idempotency.remove(key);
            }
        }
        Some(job)
    }

    // ---- operations ---------------------------------------------------------

    pub fn cancel(&mut self, id: JobId, now: Timestamp) -> Result<Job, StoreError> {
        let job = self.jobs.get_mut(&id).ok_or(StoreError::NotFound(id))?;
        match job.state {
            JobState::Running => {
                job.cancel_requested = true;
                job.updated_at = now;
                Ok(job.clone())
            }
            JobState::Scheduled | JobState::Available => {
                let mut snapshot = job.clone();
                self.finish(id, JobState::Cancelled, now);
                // A zero-retention queue has dropped the job already.
                Ok(self.jobs.get(&id).cloned().unwrap_or_else(|| {
                    snapshot.state = JobState::Cancelled;
                    snapshot.finished_at = Some(now);
                    snapshot.updated_at = now;
                    snapshot
                }))
            }
            state => Err(StoreError::InvalidState {
                id,
                state,
                action: "cancel",
            }),
        }
    }

    pub fn get(&self, id: JobId) -> Option<Job> {
        self.jobs.get(&id).cloned()
    }

    pub fn list(&self, query: &ListQuery) -> Vec<Job> {
        let mut hits: Vec<&Job> = self
            .jobs
            .values()
            .filter(|j| query.matches(j) && query.after.is_none_or(|a| j.id > a))
            .collect();
        hits.sort_unstable_by_key(|j| j.id);
        hits.into_iter().take(query.limit).cloned().collect()
    }

    pub fn counts(&self, name: &QueueName) -> Result<Counts, StoreError> {
        Ok(self.queue(name)?.counts)
    }

    pub fn position(&self, id: JobId) -> Option<Position> {
        let job = self.jobs.get(&id)?;
        if !job.state.is_waiting() {
            return None;
        }
        let q = self.queues.get(&job.queue)?;
        let in_group = job.group.as_ref().map(|g| {
            q.groups
                .get(g)
                .and_then(|grp| grp.pending.iter().position(|p| *p == id))
                .unwrap_or(0) as u64
        });
        let key = ready_key(job);
        let in_queue = self
            .jobs
            .values()
            .filter(|o| o.queue == job.queue && o.state.is_waiting() && ready_key(o) < key)
            .count() as u64;
        Some(Position { in_group, in_queue })
    }

    fn dead_ids(&self, which: &DeadJobs) -> Vec<JobId> {
        match which {
            DeadJobs::All(name) => self
                .queues
                .get(name)
                .map(|q| q.dead.iter().map(|(_, id)| *id).collect())
                .unwrap_or_default(),
            DeadJobs::Ids(ids) => ids
                .iter()
                .copied()
                .filter(|id| self.jobs.get(id).is_some_and(|j| j.state == JobState::Dead))
                .collect(),
        }
    }

    pub fn retry_dead(&mut self, which: &DeadJobs, now: Timestamp) -> u64 {
        let ids = self.dead_ids(which);
        for &id in &ids {
            self.revive(id, now);
        }
        ids.len() as u64
    }

    /// Brings a dead job back with fresh attempts: in place if it still
    /// holds its group, else at the back of its group.
    fn revive(&mut self, id: JobId, now: Timestamp) {
        self.acked.remove(&id);
        self.next_seq += 1;
        let seq = self.next_seq;
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        let Some(q) = self.queues.get_mut(&job.queue) else {
            return;
        };
        if let Some(at) = job.finished_at.take() {
            q.dead.remove(&(at, id));
        }
        job.attempt = 0;
        job.cancel_requested = false;
        job.step = None;
        job.run_at = now;
        q.set_state(job, JobState::Available, now);
        let runs_now = match &job.group {
            None => true,
            Some(g) => {
                let group = q.groups.entry(g.clone()).or_default();
                if group.held && group.pending.front() == Some(&id) {
                    group.held = false;
                    true
                } else {
                    job.seq = seq;
                    group.pending.push_back(id);
                    if group.pending.len() == 1 {
                        job.run_at = job.run_at.max(group.gap_until);
                    }
                    group.pending.len() == 1
                }
            }
        };
        if runs_now {
            self.requeue(id, now);
        }
    }

    pub fn purge_dead(&mut self, which: &DeadJobs, now: Timestamp) -> u64 {
        let ids = self.dead_ids(which);
        for &id in &ids {
            self.purge(id, now);
        }
        ids.len() as u64
    }

    /// Deletes a terminal job; a group it held moves on.
    fn purge(&mut self, id: JobId, now: Timestamp) {
        let Some(job) = self.remove(id) else {
            return;
        };
        if let Some(g) = &job.group {
            self.leave_group(&job.queue, g, id, false, now);
        }
    }

    pub fn prune(&mut self, now: Timestamp, limit: usize) -> u64 {
        let mut doomed = Vec::new();
        for q in self.queues.values() {
            expired(
                &q.finished,
                q.config.retention.completed,
                now,
                limit,
                &mut doomed,
            );
            expired(&q.dead, q.config.retention.dead, now, limit, &mut doomed);
            if doomed.len() >= limit {
                break;
            }
        }
        doomed.truncate(limit);
        for &id in &doomed {
            self.purge(id, now);
        }
        doomed.len() as u64
    }

    // ---- scheduling ---------------------------------------------------------

    pub fn next_due(
        &self,
        name: &QueueName,
        now: Timestamp,
    ) -> Result<Option<Timestamp>, StoreError> {
        let q = self.queue(name)?;
        if q.paused {
            return Ok(None);
        }
        if !q.ready.is_empty() || !q.sessions_ready.is_empty() {
            return Ok(Some(now));
        }
        let scheduled = q.scheduled.first_key_value().map(|((at, _), _)| *at);
        // A session whose next start has passed is as good as ready.
        let session = q.next_session_start().map(|at| at.max(now));
        Ok(match (scheduled, session) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        })
    }

    pub fn next_in_line(
        &self,
        name: &QueueName,
        now: Timestamp,
    ) -> Result<Option<Timestamp>, StoreError> {
        let q = self.queue(name)?;
        let fronts = [
            q.ready.first_key_value().map(|(k, _)| k.2),
            q.sessions_ready.first_key_value().map(|(k, _)| k.2),
            q.scheduled
                .first_key_value()
                .map(|((at, _), _)| *at)
                .filter(|at| *at <= now),
        ];
        Ok(fronts.into_iter().flatten().min())
    }

    pub fn promote_due(&mut self, name: &QueueName, now: Timestamp) -> Result<u64, StoreError> {
        let q = self
            .queues
            .get_mut(name)
            .ok_or_else(|| StoreError::UnknownQueue(name.clone()))?;
        let had_timers = q.next_session_start().is_some_and(|at| at <= now);
        let moved = q.promote(&mut self.jobs, now);
        if moved > 0 || had_timers {
            self.mark_wake(name);
        }
        Ok(moved)
    }

    // ---- locks --------------------------------------------------------------

    pub fn acquire_lock(
        &mut self,
        name: &str,
        holder: &str,
        ttl: std::time::Duration,
        now: Timestamp,
    ) -> Option<LockLease> {
        if self.locks.get(name).is_some_and(|l| l.expires_at > now) {
            return None;
        }
        self.next_token += 1;
        let lease = LockLease {
            name: name.into(),
            holder: holder.into(),
            token: self.next_token,
            expires_at: now + ttl,
        };
        self.locks.insert(lease.name.clone(), lease.clone());
        Some(lease)
    }

    pub fn renew_lock(
        &mut self,
        lease: &LockLease,
        ttl: std::time::Duration,
        now: Timestamp,
    ) -> Option<LockLease> {
        let held = self.locks.get_mut(&lease.name)?;
        if held.token != lease.token || held.expires_at <= now {
            return None;
        }
        held.expires_at = now + ttl;
        Some(held.clone())
    }

    pub fn release_lock(&mut self, lease: &LockLease) -> bool {
        if self
            .locks
            .get(&lease.name)
            .is_some_and(|l| l.token == lease.token)
        {
            self.locks.remove(&lease.name);
            true
        } else {
            false
        }
    }
}

/// Adds to `out` (up to `limit` in all) the jobs of `set` finished at least
/// `keep` before `now`.
fn expired(
    set: &BTreeSet<(Timestamp, JobId)>,
    keep: std::time::Duration,
    now: Timestamp,
    limit: usize,
    out: &mut Vec<JobId>,
) {
    for (at, id) in set {
        if out.len() >= limit || *at + keep > now {
            return;
        }
        out.push(*id);
    }
}
