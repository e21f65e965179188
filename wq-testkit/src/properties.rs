//! Property tests, state-machine style: random interleavings of enqueues
//! (groups, delays, priorities, idempotency keys), claims by three workers,
//! acknowledgements, retries, lease extensions, clock jumps, rescues, late
//! acknowledgements by stale workers and cancellations. After every step,
//! and after a final drain, the invariants are checked against the store:
//!
//! - per-group FIFO: a job is handed out only once every earlier job of its
//!   group is terminal, and at most one job per group runs;
//! - no loss and no duplicates: every enqueued job is stored exactly once
//!   and ends in exactly one terminal state, which never changes;
//! - no duplicate job per idempotency key;
//! - fencing: every acknowledgement or extension from a lapsed lease is
//!   refused, every one from a live lease is applied;
//! - counts agree with the jobs.
//!
//! A failing case shrinks to a short, readable list of [`Op`]s.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use wq_core::{
    Ack, AckAction, AckOutcome, Backend, Client, Clock, Counts, Enqueue, Error, ExtendOutcome, Job,
    JobId, JobState, LeaseRef, ListQuery, ManualClock, QueueConfig, StoreError, Timestamp,
};

use crate::harness::{Failure, TestBackend, claim, run_cases, with_backend};

const QUEUE: &str = "prop";
const LEASE: Duration = Duration::from_secs(5);
const WORKERS: usize = 3;

/// One step of a property-test run.
#[derive(Clone, Debug)]
pub enum Op {
    /// Enqueue into group `g{group}` (or none), `delay` seconds ahead,
    /// with an idempotency key `k{key}` (or none).
    Enqueue {
        /// Group number.
        group: Option<u8>,
        /// Seconds of delay.
        delay: u8,
        /// Priority.
        priority: i8,
        /// Idempotency key number.
        key: Option<u8>,
    },
    /// Worker `worker` claims up to `limit` jobs.
    Claim {
        /// Which worker.
        worker: u8,
        /// Most jobs.
        limit: u8,
    },
    /// A worker acknowledges one of the jobs it holds (`pick` chooses which).
    Ack {
        /// Which worker.
        worker: u8,
        /// Which held job, modulo how many it holds.
        pick: u8,
        /// What to do with it.
        action: Action,
    },
    /// A worker extends every lease it holds.
    Extend {
        /// Which worker.
        worker: u8,
    },
    /// The clock moves forward.
    Advance {
        /// Seconds.
        secs: u8,
    },
    /// Lapsed leases are rescued.
    Rescue,
    /// An operator cancels an enqueued job (`pick` chooses which).
    Cancel {
        /// Which job, modulo how many were enqueued.
        pick: u8,
    },
}

/// What an [`Op::Ack`] does.
#[derive(Clone, Copy, Debug)]
pub enum Action {
    /// Complete.
    Complete,
    /// Retry after this many seconds.
    Retry(u8),
    /// Kill.
    Kill,
    /// Release.
    Release,
}

fn op() -> impl Strategy<Value = Op> {
    let action = prop_oneof![
        4 => Just(Action::Complete),
        2 => (0u8..4).prop_map(Action::Retry),
        1 => Just(Action::Kill),
        1 => Just(Action::Release),
    ];
    prop_oneof![
        5 => (option::weighted(0.8, 0u8..4), 0u8..3, 0i8..3, option::weighted(0.3, 0u8..4))
            .prop_map(|(group, delay, priority, key)| Op::Enqueue { group, delay, priority, key }),
        4 => (0u8..WORKERS as u8, 1u8..4).prop_map(|(worker, limit)| Op::Claim { worker, limit }),
        5 => (0u8..WORKERS as u8, any::<u8>(), action)
            .prop_map(|(worker, pick, action)| Op::Ack { worker, pick, action }),
        1 => (0u8..WORKERS as u8).prop_map(|worker| Op::Extend { worker }),
        2 => (1u8..8).prop_map(|secs| Op::Advance { secs }),
        1 => Just(Op::Rescue),
        1 => any::<u8>().prop_map(|pick| Op::Cancel { pick }),
    ]
}

/// Sequences of up to 60 steps.
pub fn ops() -> impl Strategy<Value = Vec<Op>> {
    vec(op(), 1..60)
}

/// Runs `cases` random cases against fresh backends from `t`; `Err` holds
/// the shrunk failing sequence and what broke.
pub fn run<T: TestBackend>(t: &T, cases: u32) -> Result<(), String> {
    run_cases(ops(), cases, 4_000, |ops| {
        with_backend(t, |b| async move { Machine::new(b).await?.run(&ops).await })
    })
}

/// Runs the property tests and panics with the shrunk failure.
pub fn check<T: TestBackend>(t: &T, cases: u32) {
    if let Err(e) = run(t, cases) {
        panic!("property test failed: {e}");
    }
}

struct Held {
    id: JobId,
    token: u64,
    attempt: u32,
    max_attempts: u32,
    expires_at: Timestamp,
}

/// The test's own record of what it did and saw.
struct Machine<B: Backend> {
    b: B,
    client: Client<B>,
    clock: std::sync::Arc<ManualClock>,
    /// Jobs created, in enqueue order, with their group.
    jobs: Vec<(JobId, Option<u8>)>,
    index: HashMap<JobId, usize>,
    keys: HashMap<u8, JobId>,
    held: Vec<Vec<Held>>,
    tokens: HashMap<JobId, u64>,
    cancel_asked: HashSet<JobId>,
    terminal: HashMap<JobId, JobState>,
    /// Distinct jobs handed out per group, in order.
    claimed: HashMap<u8, Vec<JobId>>,
}

fn fail<T>(msg: String) -> Result<T, Failure> {
    Err(Failure(msg))
}

impl<B: Backend> Machine<B> {
    async fn new(b: B) -> Result<Self, Failure> {
        let clock = ManualClock::starting_now();
        let client = Client::with_clock(b.clone(), clock.clone());
        client
            .declare_queue(QueueConfig::new(QUEUE).max_attempts(3))
            .await?;
        Ok(Self {
            b,
            client,
            clock,
            jobs: Vec::new(),
            index: HashMap::new(),
            keys: HashMap::new(),
            held: (0..WORKERS).map(|_| Vec::new()).collect(),
            tokens: HashMap::new(),
            cancel_asked: HashSet::new(),
            terminal: HashMap::new(),
            claimed: HashMap::new(),
        })
    }

    fn now(&self) -> Timestamp {
        self.clock.now()
    }

    async fn run(mut self, ops: &[Op]) -> Result<(), Failure> {
        for (i, op) in ops.iter().enumerate() {
            self.step(op)
                .await
                .map_err(|f| Failure(format!("step {i} {op:?}: {}", f.0)))?;
            self.invariants()
                .await
                .map_err(|f| Failure(format!("after step {i} {op:?}: {}", f.0)))?;
        }
        self.drain()
            .await
            .map_err(|f| Failure(format!("drain: {}", f.0)))
    }

    async fn step(&mut self, op: &Op) -> Result<(), Failure> {
        match *op {
            Op::Enqueue {
                group,
                delay,
                priority,
                key,
            } => self.enqueue(group, delay, priority, key).await,
            Op::Claim { worker, limit } => {
                self.claim(usize::from(worker), usize::from(limit)).await
            }
            Op::Ack {
                worker,
                pick,
                action,
            } => self.ack(usize::from(worker), pick, action).await,
            Op::Extend { worker } => self.extend(usize::from(worker)).await,
            Op::Advance { secs } => {
                self.clock.advance(Duration::from_secs(u64::from(secs)));
                Ok(())
            }
            Op::Rescue => self.rescue().await,
            Op::Cancel { pick } => self.cancel(pick).await,
        }
    }

    async fn enqueue(
        &mut self,
        group: Option<u8>,
        delay: u8,
        priority: i8,
        key: Option<u8>,
    ) -> Result<(), Failure> {
        let mut e = Enqueue::new(QUEUE, &self.jobs.len())
            .delay(Duration::from_secs(u64::from(delay)))
            .priority(i16::from(priority));
        if let Some(g) = group {
            e = e.group(format!("g{g}"));
        }
        if let Some(k) = key {
            e = e.idempotency_key(format!("k{k}"));
        }
        let got = self.client.enqueue(e).await?;
        match key.and_then(|k| self.keys.get(&k)) {
            Some(existing) => {
                if got.created || got.job.id != *existing {
                    return fail(format!(
                        "key {key:?} known as {existing}, yet enqueue stored {} (created: {})",
                        got.job.id, got.created
                    ));
                }
            }
            None => {
                if !got.created {
                    return fail("a new job was reported as a duplicate".into());
                }
                self.index.insert(got.job.id, self.jobs.len());
                self.jobs.push((got.job.id, group));
                if let Some(k) = key {
                    self.keys.insert(k, got.job.id);
                }
            }
        }
        Ok(())
    }

    async fn claim(&mut self, worker: usize, limit: usize) -> Result<(), Failure> {
        let now = self.now();
        let jobs = claim(&self.b, QUEUE, limit, now, LEASE).await?;
        if jobs.len() > limit {
            return fail(format!(
                "claimed {} jobs with a limit of {limit}",
                jobs.len()
            ));
        }
        let mut groups = HashSet::new();
        for job in &jobs {
            let token = self.check_claimed(job, now).await?;
            let group = self.group_of(job.id)?;
            if let Some(g) = group {
                if !groups.insert(g) {
                    return fail(format!("one claim handed out two jobs of group g{g}"));
                }
                let live =
                    self.held.iter().flatten().find(|h| {
                        h.expires_at > now && self.group_of(h.id).ok().flatten() == Some(g)
                    });
                if let Some(h) = live {
                    return fail(format!(
                        "group g{g}: job {} handed out while {} runs under a live lease",
                        job.id, h.id
                    ));
                }
                let order = self.claimed.entry(g).or_default();
                if order.last() != Some(&job.id) {
                    order.push(job.id);
                }
            }
            self.held[worker].push(Held {
                id: job.id,
                token,
                attempt: job.attempt,
                max_attempts: job.max_attempts,
                expires_at: now + LEASE,
            });
        }
        Ok(())
    }

    fn group_of(&self, id: JobId) -> Result<Option<u8>, Failure> {
        self.index.get(&id).map(|i| self.jobs[*i].1).ok_or_else(|| {
            Failure(format!(
                "the store handed out {id}, which was never enqueued"
            ))
        })
    }

    /// Checks one claimed job; returns its token.
    async fn check_claimed(&mut self, job: &Job, now: Timestamp) -> Result<u64, Failure> {
        let Some(lease) = &job.lease else {
            return fail(format!("claimed job {} has no lease", job.id));
        };
        if job.state != JobState::Running || job.run_at > now {
            return fail(format!(
                "claimed job {} is {} and due at {}",
                job.id, job.state, job.run_at
            ));
        }
        if job.attempt == 0 || job.attempt > job.max_attempts {
            return fail(format!(
                "claimed job {} is on attempt {}/{}",
                job.id, job.attempt, job.max_attempts
            ));
        }
        if let Some(old) = self.tokens.insert(job.id, lease.token)
            && old >= lease.token
        {
            return fail(format!(
                "job {} reclaimed with token {} after {old}",
                job.id, lease.token
            ));
        }
        let i = self.index.get(&job.id).copied().unwrap_or(usize::MAX);
        let group = self.group_of(job.id)?;
        for (earlier, g) in self.jobs.iter().take(i) {
            if group.is_some() && *g == group {
                let state = self.state(*earlier).await?;
                if !state.is_terminal() {
                    return fail(format!(
                        "FIFO broken: {} handed out while the earlier {earlier} of its group is {state}",
                        job.id
                    ));
                }
            }
        }
        Ok(lease.token)
    }

    async fn state(&self, id: JobId) -> Result<JobState, Failure> {
        match self.b.get(id).await? {
            Some(j) => Ok(j.state),
            None => fail(format!("job {id} was lost")),
        }
    }

    async fn ack(&mut self, worker: usize, pick: u8, action: Action) -> Result<(), Failure> {
        if self.held[worker].is_empty() {
            return Ok(());
        }
        let now = self.now();
        let pick = usize::from(pick) % self.held[worker].len();
        let h = self.held[worker].remove(pick);
        let ack_action = match action {
            Action::Complete => AckAction::complete(),
            Action::Retry(s) => AckAction::Retry {
                run_at: now + Duration::from_secs(u64::from(s)),
                error: "retry".into(),
            },
            Action::Kill => AckAction::Kill {
                error: "kill".into(),
            },
            Action::Release => AckAction::Release,
        };
        let outcome = self
            .b
            .ack(
                &[Ack {
                    id: h.id,
                    token: h.token,
                    action: ack_action,
                }],
                now,
            )
            .await?
            .pop();
        let expected = if h.expires_at <= now {
            AckOutcome::Stale
        } else {
            let cancelled = self.cancel_asked.contains(&h.id);
            AckOutcome::Applied(match action {
                Action::Complete => JobState::Completed,
                _ if cancelled => JobState::Cancelled,
                Action::Kill => JobState::Dead,
                Action::Retry(_) if h.attempt >= h.max_attempts => JobState::Dead,
                Action::Retry(0) | Action::Release => JobState::Available,
                Action::Retry(_) => JobState::Scheduled,
            })
        };
        if outcome != Some(expected) {
            return fail(format!(
                "ack of {} with a lease expiring {} at {now}: expected {expected:?}, got {outcome:?}",
                h.id, h.expires_at
            ));
        }
        if let AckOutcome::Applied(state) = expected {
            let stored = self.state(h.id).await?;
            if stored != state {
                return fail(format!("ack reported {state} but job {} is {stored}", h.id));
            }
        }
        Ok(())
    }

    async fn extend(&mut self, worker: usize) -> Result<(), Failure> {
        if self.held[worker].is_empty() {
            return Ok(());
        }
        let now = self.now();
        let refs: Vec<_> = self.held[worker]
            .iter()
            .map(|h| LeaseRef {
                id: h.id,
                token: h.token,
            })
            .collect();
        let outcomes = self.b.extend(&refs, now + LEASE, now).await?;
        if outcomes.len() != refs.len() {
            return fail(format!(
                "{} outcomes for {} leases",
                outcomes.len(),
                refs.len()
            ));
        }
        for (h, outcome) in self.held[worker].iter_mut().zip(outcomes) {
            let expected = if h.expires_at <= now {
                ExtendOutcome::Lost
            } else if self.cancel_asked.contains(&h.id) {
                ExtendOutcome::CancelRequested
            } else {
                ExtendOutcome::Extended
            };
            if outcome != expected {
                return fail(format!(
                    "extend of {} expiring {} at {now}: expected {expected:?}, got {outcome:?}",
                    h.id, h.expires_at
                ));
            }
            if outcome != ExtendOutcome::Lost {
                h.expires_at = now + LEASE;
            }
        }
        Ok(())
    }

    async fn rescue(&mut self) -> Result<(), Failure> {
        let now = self.now();
        let lapsed = self
            .all_jobs()
            .await?
            .iter()
            .filter(|j| {
                j.state == JobState::Running
                    && j.lease.as_ref().is_some_and(|l| l.expires_at <= now)
            })
            .count() as u64;
        let report = self.b.rescue(now, 10_000).await?;
        if report.total() != lapsed {
            return fail(format!(
                "{lapsed} leases had lapsed but rescue reported {report:?}"
            ));
        }
        Ok(())
    }

    async fn cancel(&mut self, pick: u8) -> Result<(), Failure> {
        if self.jobs.is_empty() {
            return Ok(());
        }
        let id = self.jobs[usize::from(pick) % self.jobs.len()].0;
        let before = self.state(id).await?;
        let result = self.client.cancel(id).await;
        match (before, result) {
            (s, Err(Error::Store(StoreError::InvalidState { .. }))) if s.is_terminal() => Ok(()),
            (JobState::Running, Ok(job))
                if job.state == JobState::Running && job.cancel_requested =>
            {
                self.cancel_asked.insert(id);
                Ok(())
            }
            (s, Ok(job)) if s.is_waiting() && job.state == JobState::Cancelled => Ok(()),
            (s, other) => fail(format!("cancel of a {s} job returned {other:?}")),
        }
    }

    async fn all_jobs(&self) -> Result<Vec<Job>, Failure> {
        Ok(self
            .b
            .list(&ListQuery::new().queue(QUEUE).limit(10_000))
            .await?)
    }

    async fn invariants(&mut self) -> Result<(), Failure> {
        let jobs = self.all_jobs().await?;
        if jobs.len() != self.jobs.len() {
            return fail(format!(
                "{} jobs enqueued but {} stored",
                self.jobs.len(),
                jobs.len()
            ));
        }
        let mut tally = Counts::default();
        let mut by_group: HashMap<&str, Vec<&Job>> = HashMap::new();
        let mut keys = HashSet::new();
        for j in &jobs {
            *tally.get_mut(j.state) += 1;
            if !self.index.contains_key(&j.id) {
                return fail(format!("stored job {} was never enqueued", j.id));
            }
            if j.attempt > j.max_attempts {
                return fail(format!(
                    "job {} ran {} of {} attempts",
                    j.id, j.attempt, j.max_attempts
                ));
            }
            if let Some(k) = &j.idempotency_key
                && !keys.insert(k.clone())
            {
                return fail(format!("two jobs share idempotency key {k}"));
            }
            if let Some(g) = &j.group {
                by_group.entry(g.as_str()).or_default().push(j);
            }
            if j.state.is_terminal() {
                match self.terminal.insert(j.id, j.state) {
                    Some(old) if old != j.state => {
                        return fail(format!("job {} was {old} and is now {}", j.id, j.state));
                    }
                    _ => {}
                }
            } else if let Some(old) = self.terminal.get(&j.id) {
                return fail(format!("job {} was {old} and is now {}", j.id, j.state));
            }
        }
        for (g, mut members) in by_group {
            members.sort_by_key(|j| j.seq);
            let running: Vec<_> = members
                .iter()
                .filter(|j| j.state == JobState::Running)
                .collect();
            if running.len() > 1 {
                return fail(format!("group {g} runs {} jobs at once", running.len()));
            }
            if let Some(r) = running.first()
                && let Some(open) = members
                    .iter()
                    .find(|j| j.seq < r.seq && !j.state.is_terminal())
            {
                return fail(format!(
                    "group {g} runs {} while the earlier {} is {}",
                    r.id, open.id, open.state
                ));
            }
        }
        let counts = self.client.counts(QUEUE).await?;
        // Jobs ever finished: at least those finished and kept (a job
        // retried from the dead-letter queue finishes twice).
        let kept = tally.completed + tally.dead + tally.cancelled;
        if counts.finished < kept {
            return fail(format!("{} finished but {kept} jobs are", counts.finished));
        }
        let tally = Counts {
            finished: counts.finished,
            ..tally
        };
        if counts != tally {
            return fail(format!("counts {counts:?} but the jobs say {tally:?}"));
        }
        Ok(())
    }

    /// Lets every lease lapse, then claims and completes until nothing is
    /// left, and checks the end state.
    async fn drain(&mut self) -> Result<(), Failure> {
        self.clock.advance(Duration::from_secs(3_600));
        for h in &mut self.held {
            h.clear();
        }
        self.rescue().await?;
        for _ in 0..500 {
            let now = self.now();
            let jobs = claim(&self.b, QUEUE, 100, now, LEASE).await?;
            if jobs.is_empty() {
                if self.client.counts(QUEUE).await?.pending() == 0 {
                    break;
                }
                self.clock.advance(Duration::from_secs(10));
                continue;
            }
            for job in &jobs {
                let token = self.check_claimed(job, now).await?;
                if let Some(g) = self.group_of(job.id)? {
                    let order = self.claimed.entry(g).or_default();
                    if order.last() != Some(&job.id) {
                        order.push(job.id);
                    }
                }
                let out = self
                    .b
                    .ack(
                        &[Ack {
                            id: job.id,
                            token,
                            action: AckAction::complete(),
                        }],
                        now,
                    )
                    .await?;
                if out.first() != Some(&AckOutcome::Applied(JobState::Completed)) {
                    return fail(format!("completing {} during the drain: {out:?}", job.id));
                }
            }
            self.invariants().await?;
        }
        self.invariants().await?;
        for (id, _) in &self.jobs {
            let state = self.state(*id).await?;
            if !state.is_terminal() {
                return fail(format!("job {id} never finished: {state}"));
            }
        }
        for (g, order) in &self.claimed {
            let idx: Vec<_> = order.iter().map(|id| self.index[id]).collect();
            if idx.windows(2).any(|w| w[0] >= w[1]) {
                return fail(format!("group g{g} ran its jobs in the order {idx:?}"));
            }
        }
        Ok(())
    }
}
