//! Concurrent tests: many tasks race on the same groups at once.
//!
//! The conformance suite and the property tests drive a backend from one
//! task at a time, so a race between two calls of the backend (a batch
//! enqueue into a group while that group's running head is acknowledged,
//! say) never happens there. Each test here runs, per seed, in rounds:
//!
//! - enqueuer tasks, each enqueueing one job at a time and in
//!   `enqueue_many` batches, into groups that exist and groups that are new,
//!   some jobs without a group, some with idempotency keys that collide
//!   across tasks and rounds;
//! - several [`Worker`]s on the same backend (one `Worker::new` each,
//!   concurrency above one), whose handlers yield or sleep at random and
//!   sometimes fail, so that jobs retry, and now and then die;
//! - an operator cancelling random jobs, waiting or running;
//! - in [`lapsed_leases_are_rescued_under_races`], workers whose heartbeats
//!   do not reach the store, so that handlers outlive their leases, the
//!   maintenance leader rescues the jobs and they run again elsewhere.
//!
//! A ledger records every enqueue result, every handler start and end (in
//! one global order, from an atomic counter) and, through a thin wrapper
//! that the workers' backend calls pass through, every lease a worker was
//! given or had extended and every acknowledgement the store applied. After
//! each round, with work still in flight, [`Audit::audit`] must find nothing
//! wrong; after the run drains (or stops making progress, which fails the
//! test: nothing here waits without a deadline), the ledger is checked:
//!
//! 1. no loss, no duplicates: every job an enqueue reported as created is
//!    stored and terminal, the counts agree, no job became terminal twice or
//!    ran after it was, and all enqueues of one idempotency key returned the
//!    same job, created once;
//! 2. FIFO per group: every attempt of a job starts before the first attempt
//!    of the group's next job (jobs cancelled before they ran aside);
//! 3. one in flight per group: two handlers of one group (or two attempts of
//!    one ungrouped job) never ran at once, unless the earlier one's lease
//!    had lapsed before the later one started (the engine stops such a
//!    handler at its next heartbeat; fencing keeps it from acknowledging);
//! 4. a session's max running holds: in the first two tests every third
//!    group's jobs share a session that runs at most two at once, and no
//!    handler of it starts while two others run (but where a lease lapsed);
//! 5. the audit is clean after every round and at the end, which covers
//!    "no group is left without a claimable head while it has due jobs";
//!    the maintenance leader also audits (and would repair) several times a
//!    second while the run goes on, and must find nothing either.
//!
//! ## Seeds
//!
//! Each test runs a few fresh random seeds, as many as fit in a short time
//! budget (at least one). A seed fixes the workload and every handler's
//! decisions; thread timing still varies, so a replay reproduces the shape,
//! not the exact interleaving. A failure names its seed. Environment:
//!
//! - `WQ_SEED=<n>` runs that seed alone;
//! - `WQ_SOAK_SECONDS=<n>` keeps running fresh seeds for `n` seconds per test.
//!
//! [`concurrency_tests!`] expands them for any [`TestBackend`].
//!
//! [`concurrency_tests!`]: crate::concurrency_tests

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use wq_core::{
    Ack, AckOutcome, AckedAndClaimed, Admin, Admission, Admissions, Allowance, AttemptOutcome,
    Audit, AuditReport, Backend, ClaimRequest, Client, Counts, DeadJobs, Enqueue, Enqueued, Error,
    ExtendOutcome, GroupKey, Job, JobContext, JobError, JobId, JobState, LeaseRef, ListQuery, Lock,
    LockLease, NewJob, PauseChange, Position, QueueConfig, QueueInfo, QueueName, QueueOptions,
    RescueReport, Scheduler, SessionInfo, SessionKey, SessionLimits, Sessions, Store, StoreError,
    Timestamp, WakeSignal, Worker, WorkerHandle,
};

use crate::harness::{Failure, PATIENCE, TestBackend, TestResult, quick_retry, with_backend};

const QUEUE: &str = "race";

/// How long the drain may go without any progress (no handler starting or
/// ending, no count changing) while jobs are still pending: a backend that
/// strands a job is caught here.
const STALL: Duration = Duration::from_secs(5);

/// Fresh seeds run per test unless `WQ_SOAK_SECONDS` asks for more.
const CI_SEEDS: usize = 3;

/// No fresh seed starts once a test has run this long (unless soaking), so
/// a slow backend runs fewer seeds instead of taking longer.
const CI_BUDGET: Duration = Duration::from_secs(8);

/// The backstop for one seed, beyond the bounds on every wait inside it.
const SEED_LIMIT: Duration = Duration::from_secs(240);

/// The fallback poll of the workers: wake-ups do the real work, and a lost
/// one must not look like a stall.
const POLL: Duration = Duration::from_millis(500);

/// How often the maintenance leader audits (and repairs) the queue while
/// the run goes on, so that its audits race with the work as well.
const LEADER_AUDITS: Duration = Duration::from_millis(100);

/// The leader lock: short, so that the maintenance round (a third of it at
/// most) comes every 200 ms even where job leases are long, and the leader's
/// rescues and audits happen many times per run.
const LEADER_LEASE: Duration = Duration::from_millis(600);

/// Several enqueuers, workers and an operator race on shared groups: single
/// and batch enqueues into old and new groups, ungrouped jobs, colliding
/// idempotency keys, handlers that yield, sleep, fail and retry, random
/// cancellations. Checks no loss, no duplicates, FIFO and one in flight per
/// group, and a clean audit after every round.
pub async fn racing_enqueues_workers_and_cancels<T: TestBackend>(t: &T) -> TestResult {
    seeded(t, &Scenario::racing()).await
}

/// As [`racing_enqueues_workers_and_cancels`], with 150 ms leases, one
/// worker whose heartbeats never reach the store and others whose
/// heartbeats drop out now and then, and handlers that sometimes run longer
/// than a lease: leases lapse, the maintenance leader rescues the jobs and
/// they run again while the stale handler may still run. Overlaps are
/// excused only where the earlier lease had really lapsed, and the test
/// fails unless some lapsed attempt was rescued and ran again.
pub async fn lapsed_leases_are_rescued_under_races<T: TestBackend>(t: &T) -> TestResult {
    seeded(t, &Scenario::lapsing()).await
}

/// One worker (concurrency 50, a handler sleeping 0–2 ms) drains 20 rounds
/// of one `enqueue_many` each, one job into each of 200 groups, 0–10 ms
/// apart, so that batches keep landing in groups whose head is running or
/// being acknowledged. Every job must finish and the audit must stay clean:
/// a backend that leaves the new job without a claimable head strands it.
pub async fn batch_enqueues_race_head_acks<T: TestBackend>(t: &T) -> TestResult {
    seeded(t, &Scenario::sweeping()).await
}

/// The knobs of one test's workload.
#[derive(Clone, Debug)]
struct Scenario {
    name: &'static str,
    rounds: u64,
    /// Enqueuer tasks per round.
    enqueuers: u64,
    /// Enqueue calls per enqueuer and round.
    calls: u64,
    /// Largest `enqueue_many` batch.
    max_batch: u64,
    /// Each round, one batch with one job for each of this many groups, and
    /// nothing else (the reproduction of the stranding race).
    sweep: Option<u64>,
    /// Groups that exist from the first round, and groups added per round.
    groups: u64,
    new_groups: u64,
    /// Share of jobs without a group, and with an idempotency key.
    ungrouped: f64,
    keyed: f64,
    /// Idempotency keys to draw from: small, so enqueues collide.
    keys: u64,
    /// Longest pause before an enqueue call.
    pause: Duration,
    workers: usize,
    concurrency: usize,
    lease: Duration,
    /// Per attempt: chance to fail (retry), to fail for good, to run long.
    fail: f64,
    permanent: f64,
    slow: f64,
    slow_for: (Duration, Duration),
    /// Longest ordinary handler sleep.
    nap: Duration,
    cancels: bool,
    /// Worker 0's heartbeats never arrive; others' drop out now and then.
    lapses: bool,
    /// Every third group's jobs share the session [`CAPPED`].
    sessions: bool,
}

/// The session of every third group in scenarios with sessions, and how
/// many of its jobs may run at once.
const CAPPED: &str = "capped";
const CAP: usize = 2;

fn capped(group: &str) -> bool {
    group
        .strip_prefix('g')
        .and_then(|n| n.parse::<u64>().ok())
        .is_some_and(|n| n % 3 == 0)
}

impl Scenario {
    fn racing() -> Self {
        Self {
            name: "racing_enqueues_workers_and_cancels",
            rounds: 8,
            enqueuers: 4,
            calls: 24,
            max_batch: 8,
            sweep: None,
            groups: 60,
            new_groups: 15,
            ungrouped: 0.1,
            keyed: 0.08,
            keys: 40,
            pause: Duration::from_millis(2),
            workers: 3,
            concurrency: 8,
            lease: Duration::from_secs(2),
            fail: 0.12,
            permanent: 0.02,
            slow: 0.04,
            slow_for: (Duration::from_millis(5), Duration::from_millis(15)),
            nap: Duration::from_millis(2),
            cancels: true,
            lapses: false,
            sessions: true,
        }
    }

    fn lapsing() -> Self {
        Self {
            name: "lapsed_leases_are_rescued_under_races",
            rounds: 6,
            calls: 18,
            groups: 40,
            new_groups: 10,
            lease: Duration::from_millis(150),
            slow: 0.05,
            slow_for: (Duration::from_millis(200), Duration::from_millis(400)),
            lapses: true,
            ..Self::racing()
        }
    }

    fn sweeping() -> Self {
        Self {
            name: "batch_enqueues_race_head_acks",
            rounds: 20,
            enqueuers: 1,
            calls: 1,
            max_batch: 200,
            sweep: Some(200),
            groups: 200,
            new_groups: 0,
            ungrouped: 0.0,
            keyed: 0.0,
            keys: 0,
            pause: Duration::from_millis(10),
            workers: 1,
            concurrency: 50,
            lease: Duration::from_secs(5),
            fail: 0.0,
            permanent: 0.0,
            slow: 0.0,
            slow_for: (Duration::ZERO, Duration::ZERO),
            nap: Duration::from_millis(2),
            cancels: false,
            lapses: false,
            sessions: false,
        }
    }

    /// The enqueue calls of one enqueuer in one round, with the pause
    /// before each: all decided by the seed.
    fn calls(&self, seed: u64, round: u64, task: u64) -> Vec<(Duration, Vec<Spec>)> {
        let mut rng = StdRng::seed_from_u64(mix(seed, round * 1_000 + task, 0x656e_7175));
        let mut next = (round * self.enqueuers + task) << 32;
        let mut spec = |group: Option<u64>, key: Option<u64>| {
            next += 1;
            Spec {
                n: next,
                group,
                key,
            }
        };
        let pause = |rng: &mut StdRng| {
            Duration::from_micros(rng.random_range(0..=self.pause.as_micros() as u64))
        };
        if let Some(groups) = self.sweep {
            let batch = (0..groups).map(|g| spec(Some(g), None)).collect();
            return vec![(pause(&mut rng), batch)];
        }
        let known = self.groups + round * self.new_groups;
        let mut calls = Vec::new();
        for _ in 0..self.calls {
            let size = if rng.random_bool(0.5) {
                1
            } else {
                rng.random_range(2..=self.max_batch)
            };
            let mut used = HashSet::new();
            let mut batch = Vec::new();
            for _ in 0..size {
                let key = (self.keys > 0 && rng.random_bool(self.keyed))
                    .then(|| rng.random_range(0..self.keys))
                    .filter(|k| used.insert(*k));
                let group = match key {
                    // A key always comes with the same group, so that every
                    // enqueue of it asks for the job it gets back.
                    Some(k) => (k % 5 != 0).then_some(k % self.groups),
                    None if rng.random_bool(self.ungrouped) => None,
                    None if self.new_groups > 0 && rng.random_bool(0.3) => {
                        Some(known - rng.random_range(1..=self.new_groups))
                    }
                    None => Some(rng.random_range(0..known)),
                };
                batch.push(spec(group, key));
            }
            calls.push((pause(&mut rng), batch));
        }
        calls
    }

    /// What attempt `attempt` of job `n` does: decided by the seed.
    fn plan(&self, seed: u64, n: u64, attempt: u32) -> Plan {
        let mut rng = StdRng::seed_from_u64(mix(seed, n, u64::from(attempt)));
        let work = if self.slow > 0.0 && rng.random_bool(self.slow) {
            Work::Sleep(rng.random_range(self.slow_for.0..=self.slow_for.1))
        } else if self.sweep.is_none() && rng.random_bool(0.5) {
            Work::Yield(rng.random_range(0..4))
        } else {
            Work::Sleep(rng.random_range(Duration::ZERO..=self.nap))
        };
        let roll: f64 = rng.random();
        let outcome = if roll < self.permanent {
            Outcome::Permanent
        } else if roll < self.permanent + self.fail {
            Outcome::Retry
        } else {
            Outcome::Ok
        };
        Plan { work, outcome }
    }
}

fn mix(seed: u64, a: u64, b: u64) -> u64 {
    seed ^ a.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ b.wrapping_mul(0xc2b2_ae3d_27d4_eb4f)
}

/// One job an enqueuer asks for.
#[derive(Clone, Debug)]
struct Spec {
    n: u64,
    group: Option<u64>,
    key: Option<u64>,
}

fn group_name(g: u64) -> String {
    format!("g{g}")
}

fn key_name(k: u64) -> String {
    format!("k{k}")
}

/// The payload: which job this is, so the handler can find its plan.
#[derive(Serialize, Deserialize)]
struct Tag {
    n: u64,
}

#[derive(Clone, Copy, Debug)]
enum Work {
    Yield(u32),
    Sleep(Duration),
}

#[derive(Clone, Copy, Debug)]
enum Outcome {
    Ok,
    Retry,
    Permanent,
}

#[derive(Clone, Copy, Debug)]
struct Plan {
    work: Work,
    outcome: Outcome,
}

/// What one enqueue returned.
#[derive(Clone, Debug)]
struct Placed {
    id: JobId,
    group: Option<String>,
    seq: u64,
    key: Option<String>,
    created: bool,
}

/// One handler run.
#[derive(Clone, Debug)]
struct Run {
    job: JobId,
    attempt: u32,
    token: u64,
    worker: usize,
    start: u64,
    started_at: Timestamp,
    end: Option<u64>,
    ok: bool,
}

/// Everything the run saw, in one global order.
#[derive(Default)]
struct Ledger {
    order: AtomicU64,
    placed: Mutex<Vec<Placed>>,
    /// Created jobs, in the order their enqueues returned.
    created: Mutex<Vec<JobId>>,
    runs: Mutex<Vec<Run>>,
    /// The latest expiry of each lease a worker was given or had extended.
    leases: Mutex<HashMap<(JobId, u64), Timestamp>>,
    /// Attempts (job, token) whose acknowledgement the store applied.
    applied: Mutex<HashSet<(JobId, u64)>>,
    /// Terminal states the store reported through acknowledgements: the
    /// state, when (in the ledger's order) and under which token.
    finals: Mutex<HashMap<JobId, Final>>,
    /// Broken guarantees seen while the run went on.
    violations: Mutex<Vec<String>>,
    /// Cancellations the store accepted (of a waiting or a running job).
    cancels: AtomicU64,
}

impl Ledger {
    fn tick(&self) -> u64 {
        self.order.fetch_add(1, Ordering::SeqCst)
    }

    fn violation(&self, what: String) {
        self.violations.lock().push(what);
    }

    fn start(self: &Arc<Self>, ctx: &JobContext, worker: usize) -> RunGuard {
        let token = ctx.job().lease.as_ref().map_or(0, |l| l.token);
        let mut runs = self.runs.lock();
        runs.push(Run {
            job: ctx.id(),
            attempt: ctx.attempt(),
            token,
            worker,
            start: self.tick(),
            started_at: Timestamp::now(),
            end: None,
            ok: false,
        });
        RunGuard {
            ledger: self.clone(),
            index: runs.len() - 1,
            ok: false,
        }
    }

    fn lease(&self, id: JobId, token: u64, until: Timestamp) {
        self.leases
            .lock()
            .entry((id, token))
            .and_modify(|t| *t = (*t).max(until))
            .or_insert(until);
    }

    fn claimed(&self, jobs: &[Job]) {
        for j in jobs {
            if let Some(l) = &j.lease {
                self.lease(j.id, l.token, l.expires_at);
            }
        }
    }

    fn acked(&self, acks: &[Ack], outcomes: &[AckOutcome]) {
        for (ack, outcome) in acks.iter().zip(outcomes) {
            let AckOutcome::Applied(state) = outcome else {
                continue;
            };
            self.applied.lock().insert((ack.id, ack.token));
            if !state.is_terminal() {
                continue;
            }
            let now = Final {
                state: *state,
                at: self.tick(),
                token: ack.token,
            };
            let mut finals = self.finals.lock();
            match finals.get(&ack.id) {
                None => {
                    finals.insert(ack.id, now);
                }
                // The same acknowledgement sent again (after a failed round
                // trip) is answered as applied again; the job ended once.
                Some(old) if old.token == now.token && old.state == now.state => {}
                Some(old) => {
                    let old = old.state;
                    drop(finals);
                    self.violation(format!(
                        "job {} became {state} through an acknowledgement after it was already {old}",
                        ack.id
                    ));
                }
            }
        }
    }

    fn recent(&self, back: usize) -> Option<JobId> {
        let created = self.created.lock();
        created.len().checked_sub(back + 1).map(|i| created[i])
    }
}

/// How a job ended, as an acknowledgement reported it.
#[derive(Clone, Copy, Debug)]
struct Final {
    state: JobState,
    at: u64,
    token: u64,
}

/// Records the end of a handler run when the handler returns or is
/// dropped (the engine drops a handler it stops).
struct RunGuard {
    ledger: Arc<Ledger>,
    index: usize,
    ok: bool,
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        let end = self.ledger.tick();
        if let Some(run) = self.ledger.runs.lock().get_mut(self.index) {
            run.end = Some(end);
            run.ok = self.ok;
        }
    }
}

/// The backend as the workers see it: every call goes through unchanged,
/// and the leases handed out, the extensions granted and the
/// acknowledgements applied are written to the ledger. While `deaf` is set,
/// lease extensions fail as if the heartbeat never reached the store.
#[derive(Clone)]
struct Watched<B> {
    inner: B,
    ledger: Arc<Ledger>,
    deaf: Arc<AtomicBool>,
}

impl<B: Backend> Store for Watched<B> {
    async fn declare_queue(&self, config: &QueueConfig) -> Result<(), StoreError> {
        self.inner.declare_queue(config).await
    }
    async fn queue_info(&self, q: &QueueName) -> Result<Option<QueueInfo>, StoreError> {
        self.inner.queue_info(q).await
    }
    async fn enqueue(
        &self,
        jobs: Vec<NewJob>,
        now: Timestamp,
    ) -> Result<Vec<Enqueued>, StoreError> {
        self.inner.enqueue(jobs, now).await
    }
    async fn claim(&self, req: &ClaimRequest) -> Result<Vec<Job>, StoreError> {
        let jobs = self.inner.claim(req).await?;
        self.ledger.claimed(&jobs);
        Ok(jobs)
    }
    async fn ack(&self, acks: &[Ack], now: Timestamp) -> Result<Vec<AckOutcome>, StoreError> {
        let outcomes = self.inner.ack(acks, now).await?;
        self.ledger.acked(acks, &outcomes);
        Ok(outcomes)
    }
    async fn ack_and_claim(
        &self,
        acks: &[Ack],
        claim: Option<&ClaimRequest>,
        now: Timestamp,
    ) -> Result<AckedAndClaimed, StoreError> {
        let done = self.inner.ack_and_claim(acks, claim, now).await?;
        self.ledger.acked(acks, &done.acks);
        self.ledger.claimed(&done.jobs);
        Ok(done)
    }
    async fn extend(
        &self,
        leases: &[LeaseRef],
        until: Timestamp,
        now: Timestamp,
    ) -> Result<Vec<ExtendOutcome>, StoreError> {
        if self.deaf.load(Ordering::SeqCst) {
            return Err(StoreError::backend("the heartbeat did not reach the store"));
        }
        let outcomes = self.inner.extend(leases, until, now).await?;
        for (l, o) in leases.iter().zip(&outcomes) {
            if matches!(o, ExtendOutcome::Extended | ExtendOutcome::CancelRequested) {
                self.ledger.lease(l.id, l.token, until);
            }
        }
        Ok(outcomes)
    }
    async fn rescue(&self, now: Timestamp, limit: usize) -> Result<RescueReport, StoreError> {
        self.inner.rescue(now, limit).await
    }
    async fn get(&self, id: JobId) -> Result<Option<Job>, StoreError> {
        self.inner.get(id).await
    }
    async fn prune(&self, now: Timestamp, limit: usize) -> Result<u64, StoreError> {
        self.inner.prune(now, limit).await
    }
}

impl<B: Backend> Admin for Watched<B> {
    async fn list_queues(&self) -> Result<Vec<QueueInfo>, StoreError> {
        self.inner.list_queues().await
    }
    async fn set_paused(&self, q: &QueueName, paused: bool) -> Result<(), StoreError> {
        self.inner.set_paused(q, paused).await
    }
    async fn cancel(&self, id: JobId, now: Timestamp) -> Result<Job, StoreError> {
        self.inner.cancel(id, now).await
    }
    async fn list(&self, q: &ListQuery) -> Result<Vec<Job>, StoreError> {
        self.inner.list(q).await
    }
    async fn counts(&self, q: &QueueName) -> Result<Counts, StoreError> {
        self.inner.counts(q).await
    }
    async fn next_in_line(
        &self,
        queue: &QueueName,
        now: Timestamp,
    ) -> Result<Option<Timestamp>, StoreError> {
        self.inner.next_in_line(queue, now).await
    }
    async fn position(&self, id: JobId) -> Result<Option<Position>, StoreError> {
        self.inner.position(id).await
    }
    async fn retry_dead(&self, which: &DeadJobs, now: Timestamp) -> Result<u64, StoreError> {
        self.inner.retry_dead(which, now).await
    }
    async fn purge_dead(&self, which: &DeadJobs, now: Timestamp) -> Result<u64, StoreError> {
        self.inner.purge_dead(which, now).await
    }
}

impl<B: Backend> Lock for Watched<B> {
    async fn acquire_lock(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
        now: Timestamp,
    ) -> Result<Option<LockLease>, StoreError> {
        self.inner.acquire_lock(name, holder, ttl, now).await
    }
    async fn renew_lock(
        &self,
        lease: &LockLease,
        ttl: Duration,
        now: Timestamp,
    ) -> Result<Option<LockLease>, StoreError> {
        self.inner.renew_lock(lease, ttl, now).await
    }
    async fn release_lock(&self, lease: &LockLease) -> Result<bool, StoreError> {
        self.inner.release_lock(lease).await
    }
}

impl<B: Backend> Scheduler for Watched<B> {
    fn subscribe(&self, q: &QueueName) -> WakeSignal {
        self.inner.subscribe(q)
    }
    async fn next_due(
        &self,
        q: &QueueName,
        now: Timestamp,
    ) -> Result<Option<Timestamp>, StoreError> {
        self.inner.next_due(q, now).await
    }
    async fn promote_due(&self, q: &QueueName, now: Timestamp) -> Result<u64, StoreError> {
        self.inner.promote_due(q, now).await
    }
}

impl<B: Backend> Admissions for Watched<B> {
    async fn set_allowance(
        &self,
        q: &QueueName,
        s: &SessionKey,
        allowance: Option<&Allowance>,
    ) -> Result<(), StoreError> {
        self.inner.set_allowance(q, s, allowance).await
    }
    async fn hold_admissions(
        &self,
        q: &QueueName,
        s: &SessionKey,
        until: Timestamp,
    ) -> Result<(), StoreError> {
        self.inner.hold_admissions(q, s, until).await
    }
    async fn admit(
        &self,
        q: &QueueName,
        s: &SessionKey,
        g: &GroupKey,
        now: Timestamp,
    ) -> Result<Admission, StoreError> {
        self.inner.admit(q, s, g, now).await
    }
}

impl<B: Backend> Sessions for Watched<B> {
    async fn set_session_limits(
        &self,
        q: &QueueName,
        s: &SessionKey,
        limits: &SessionLimits,
    ) -> Result<(), StoreError> {
        self.inner.set_session_limits(q, s, limits).await
    }
    async fn set_session_paused(
        &self,
        q: &QueueName,
        s: &SessionKey,
        change: &PauseChange,
    ) -> Result<bool, StoreError> {
        self.inner.set_session_paused(q, s, change).await
    }
    async fn session_info(
        &self,
        q: &QueueName,
        s: &SessionKey,
    ) -> Result<Option<SessionInfo>, StoreError> {
        self.inner.session_info(q, s).await
    }
    async fn list_sessions(
        &self,
        q: &QueueName,
        after: Option<&SessionKey>,
        limit: usize,
    ) -> Result<Vec<SessionInfo>, StoreError> {
        self.inner.list_sessions(q, after, limit).await
    }
}

impl<B: Backend> Audit for Watched<B> {
    async fn audit(
        &self,
        queue: &QueueName,
        now: Timestamp,
        repair: bool,
    ) -> Result<AuditReport, StoreError> {
        self.inner.audit(queue, now, repair).await
    }
}

/// Awaits `fut` for at most [`PATIENCE`], so a call that never returns
/// fails the test instead of hanging it.
async fn bounded<F: Future>(what: &str, fut: F) -> Result<F::Output, Failure> {
    tokio::time::timeout(PATIENCE, fut)
        .await
        .map_err(|_| Failure(format!("{what} did not return within {PATIENCE:?}")))
}

async fn joined(what: &str, task: JoinHandle<TestResult>) -> TestResult {
    bounded(what, task)
        .await?
        .map_err(|e| Failure(format!("{what} panicked: {e}")))?
}

/// Which seeds a test runs: `WQ_SEED`, or fresh ones for the CI budget or
/// `WQ_SOAK_SECONDS`.
enum Seeds {
    One(u64),
    Fresh { at_most: usize, budget: Duration },
}

impl Seeds {
    fn from_env() -> Result<Self, Failure> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        if let Some(v) = var("WQ_SEED") {
            return v
                .trim()
                .parse()
                .map(Seeds::One)
                .map_err(|e| Failure(format!("WQ_SEED={v:?} is not a seed: {e}")));
        }
        if let Some(v) = var("WQ_SOAK_SECONDS") {
            let secs: u64 = v
                .trim()
                .parse()
                .map_err(|e| Failure(format!("WQ_SOAK_SECONDS={v:?} is not a number: {e}")))?;
            return Ok(Seeds::Fresh {
                at_most: usize::MAX,
                budget: Duration::from_secs(secs),
            });
        }
        Ok(Seeds::Fresh {
            at_most: CI_SEEDS,
            budget: CI_BUDGET,
        })
    }

    fn next(&self, ran: usize, elapsed: Duration) -> Option<u64> {
        match *self {
            Seeds::One(seed) => (ran == 0).then_some(seed),
            Seeds::Fresh { at_most, budget } => {
                (ran == 0 || (ran < at_most && elapsed < budget)).then(rand::random::<u64>)
            }
        }
    }
}

async fn seeded<T: TestBackend>(t: &T, sc: &Scenario) -> TestResult {
    let seeds = Seeds::from_env()?;
    let started = Instant::now();
    let mut ran = 0;
    while let Some(seed) = seeds.next(ran, started.elapsed()) {
        eprintln!("{}: seed {seed}", sc.name);
        let run = with_backend(t, |b| async move { Race::run(b, sc, seed).await });
        let outcome = tokio::time::timeout(SEED_LIMIT, run)
            .await
            .unwrap_or_else(|_| Err(Failure(format!("no result within {SEED_LIMIT:?}"))));
        if let Err(f) = outcome {
            return Err(Failure(format!(
                "{} with seed {seed} (replay with WQ_SEED={seed}): {f}",
                sc.name
            )));
        }
        ran += 1;
    }
    Ok(())
}

/// One seed's run.
struct Race<B> {
    b: B,
    client: Client<B>,
    sc: Scenario,
    seed: u64,
    ledger: Arc<Ledger>,
    queue: QueueName,
}

impl<B: Backend> Race<B> {
    async fn run(b: B, sc: &Scenario, seed: u64) -> TestResult {
        let client = Client::new(b.clone());
        let config = QueueConfig::new(QUEUE)
            .retry(quick_retry(3))
            .lease(sc.lease)
            .timeout(Duration::from_secs(10))
            .concurrency(sc.concurrency);
        bounded("declare_queue", client.declare_queue(config)).await??;
        if sc.sessions {
            let cap = SessionLimits::new().max_running(CAP as u32);
            let limit = client.set_session_limits(QUEUE, CAPPED, cap);
            bounded("set_session_limits", limit).await??;
        }
        let race = Arc::new(Race {
            b,
            client,
            sc: sc.clone(),
            seed,
            ledger: Arc::default(),
            queue: QueueName::from(QUEUE),
        });
        let deaf: Vec<Arc<AtomicBool>> = (0..sc.workers)
            .map(|i| Arc::new(AtomicBool::new(sc.lapses && i == 0)))
            .collect();
        let mut workers = Vec::new();
        for (i, deaf) in deaf.iter().enumerate() {
            match race.worker(i, deaf.clone()).await {
                Ok(w) => workers.push(w),
                Err(f) => {
                    stop_all(workers).await?;
                    return Err(f);
                }
            }
        }
        let outcome = race.clone().drive(&deaf).await;
        let stopped = stop_all(workers).await;
        outcome?;
        let leaders = stopped?;
        // The leader repairs what it finds, which would hide a stranded job
        // from the drain and the audits here: anything it found fails the run.
        if leaders.anomalies > 0 {
            return Err(Failure(format!(
                "the maintenance leader's audits found {} anomalies (and repaired them) \
                 while the run went on",
                leaders.anomalies
            )));
        }
        race.audit("after the workers stopped").await?;
        race.check(leaders).await
    }

    async fn worker(&self, i: usize, deaf: Arc<AtomicBool>) -> Result<WorkerHandle, Failure> {
        let watched = Watched {
            inner: self.b.clone(),
            ledger: self.ledger.clone(),
            deaf,
        };
        let (ledger, sc, seed) = (self.ledger.clone(), Arc::new(self.sc.clone()), self.seed);
        let handler = move |ctx: JobContext| {
            let (ledger, sc) = (ledger.clone(), sc.clone());
            async move { handle(ctx, &ledger, &sc, seed, i).await }
        };
        // Claim batches differ per worker, so claims of different sizes race.
        let options = QueueOptions::default()
            .concurrency(self.sc.concurrency)
            .claim_batch((self.sc.concurrency >> (i % 3)).max(1));
        let worker = Worker::new(watched)
            .id(format!("race-w{i}"))
            .poll_interval(POLL)
            .leader_lease(LEADER_LEASE)
            .audit_every(LEADER_AUDITS)
            .handle_with(QUEUE, handler, options)
            .start();
        Ok(bounded("worker start", worker).await??)
    }

    /// Rounds of enqueues with the operator and the heartbeat outages
    /// running beside them, an audit after each round, then the drain.
    async fn drive(self: Arc<Self>, deaf: &[Arc<AtomicBool>]) -> TestResult {
        let stop = Arc::new(AtomicBool::new(false));
        let mut helpers = Vec::new();
        if self.sc.cancels {
            helpers.push((
                "the operator",
                tokio::spawn(self.clone().operator(stop.clone())),
            ));
        }
        if self.sc.lapses {
            helpers.push((
                "the heartbeat outages",
                tokio::spawn(self.clone().outages(deaf[1..].to_vec(), stop.clone())),
            ));
        }
        let rounds = self.clone().rounds().await;
        stop.store(true, Ordering::SeqCst);
        for (what, task) in helpers {
            joined(what, task).await?;
        }
        rounds?;
        self.drain().await
    }

    async fn rounds(self: Arc<Self>) -> TestResult {
        for round in 0..self.sc.rounds {
            let tasks: Vec<_> = (0..self.sc.enqueuers)
                .map(|task| {
                    let calls = self.sc.calls(self.seed, round, task);
                    tokio::spawn(self.clone().enqueuer(calls))
                })
                .collect();
            for task in tasks {
                joined("an enqueuer", task).await?;
            }
            self.audit(&format!("after round {round}")).await?;
        }
        Ok(())
    }

    async fn enqueuer(self: Arc<Self>, calls: Vec<(Duration, Vec<Spec>)>) -> TestResult {
        for (i, (pause, specs)) in calls.into_iter().enumerate() {
            tokio::time::sleep(pause).await;
            let out = match specs.as_slice() {
                // Half the single jobs go through `enqueue`, half through a
                // batch of one: backends may take different paths.
                [one] if self.sc.sweep.is_none() && i % 2 == 0 => {
                    bounded("enqueue", self.client.enqueue(enqueue_of(one, &self.sc)))
                        .await?
                        .map(|e| vec![e])
                }
                _ => {
                    let jobs = specs.iter().map(|s| enqueue_of(s, &self.sc));
                    bounded("enqueue_many", self.client.enqueue_many(jobs)).await?
                }
            }
            .map_err(|e| Failure(format!("enqueue of {} jobs failed: {e}", specs.len())))?;
            if out.len() != specs.len() {
                return Err(Failure(format!(
                    "enqueue of {} jobs returned {} results",
                    specs.len(),
                    out.len()
                )));
            }
            self.record(&specs, &out);
        }
        Ok(())
    }

    fn record(&self, specs: &[Spec], out: &[Enqueued]) {
        let mut placed = self.ledger.placed.lock();
        let mut created = self.ledger.created.lock();
        for (spec, e) in specs.iter().zip(out) {
            let group = spec.group.map(group_name);
            let stored = e.job.group.as_ref().map(|g| g.as_str().to_owned());
            if stored != group {
                self.ledger.violation(format!(
                    "enqueue into group {group:?} returned job {} of group {stored:?}",
                    e.job.id
                ));
            }
            placed.push(Placed {
                id: e.job.id,
                group,
                seq: e.job.seq,
                key: spec.key.map(key_name),
                created: e.created,
            });
            if e.created {
                created.push(e.job.id);
            }
            self.ledger.tick();
        }
    }

    /// Cancels random recent jobs, waiting or running, until told to stop.
    async fn operator(self: Arc<Self>, stop: Arc<AtomicBool>) -> TestResult {
        let mut rng = StdRng::seed_from_u64(mix(self.seed, 0x6f70, 0));
        while !stop.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_micros(rng.random_range(500..3_000))).await;
            let Some(id) = self.ledger.recent(rng.random_range(0..30)) else {
                continue;
            };
            match bounded("cancel", self.client.cancel(id)).await? {
                Ok(job) if job.state == JobState::Cancelled => {}
                Ok(job) if job.state == JobState::Running && job.cancel_requested => {}
                Ok(job) => self.ledger.violation(format!(
                    "cancel of job {id} returned it {} (cancel requested: {})",
                    job.state, job.cancel_requested
                )),
                Err(Error::Store(StoreError::InvalidState { .. })) => continue,
                Err(Error::Store(StoreError::NotFound(_))) => self.ledger.violation(format!(
                    "job {id} was lost: enqueue reported it stored, cancel found no such job"
                )),
                Err(e) => return Err(Failure(format!("cancel of job {id} failed: {e}"))),
            }
            self.ledger.cancels.fetch_add(1, Ordering::SeqCst);
        }
        Ok(())
    }

    /// Cuts one worker's heartbeats off for a while, then another's.
    async fn outages(
        self: Arc<Self>,
        deaf: Vec<Arc<AtomicBool>>,
        stop: Arc<AtomicBool>,
    ) -> TestResult {
        let mut rng = StdRng::seed_from_u64(mix(self.seed, 0x6f75, 0));
        while !deaf.is_empty() && !stop.load(Ordering::SeqCst) {
            let w = &deaf[rng.random_range(0..deaf.len())];
            w.store(true, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(rng.random_range(150..400))).await;
            w.store(false, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(rng.random_range(50..300))).await;
        }
        Ok(())
    }

    async fn audit(&self, when: &str) -> TestResult {
        let report = bounded("audit", self.b.audit(&self.queue, Timestamp::now(), false))
            .await?
            .map_err(|e| Failure(format!("audit {when} failed: {e}")))?;
        if report.is_clean() {
            return Ok(());
        }
        let mut msg = format!(
            "audit {when} found {} anomalies among {} jobs:",
            report.anomalies.len(),
            report.checked
        );
        for a in report.anomalies.iter().take(8) {
            let _ = write!(msg, "\n  {a}");
        }
        Err(Failure(msg))
    }

    /// Waits until no job is pending; fails once nothing has moved for
    /// [`STALL`].
    async fn drain(&self) -> TestResult {
        let started = Instant::now();
        let mut last = None;
        let mut since = Instant::now();
        loop {
            let counts = bounded("counts", self.b.counts(&self.queue)).await??;
            if counts.pending() == 0 {
                return Ok(());
            }
            let now = (self.ledger.order.load(Ordering::SeqCst), counts);
            if last != Some(now) {
                last = Some(now);
                since = Instant::now();
            } else if since.elapsed() >= STALL || started.elapsed() >= PATIENCE {
                return Err(self.stuck(counts, since.elapsed()).await);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Why the drain stalled: what should head each group that still waits.
    async fn stuck(&self, counts: Counts, idle: Duration) -> Failure {
        let mut msg = format!(
            "{} jobs never finished: nothing moved for {idle:?} ({counts:?})",
            counts.pending()
        );
        let list = ListQuery::new().queue(QUEUE).limit(10_000);
        if let Ok(Ok(jobs)) = bounded("list", self.b.list(&list)).await {
            let mut lines: HashMap<String, Vec<&Job>> = HashMap::new();
            for j in jobs.iter().filter(|j| !j.state.is_terminal()) {
                let line = match &j.group {
                    Some(g) => format!("group {g}"),
                    None => format!("ungrouped job {}", j.id),
                };
                lines.entry(line).or_default().push(j);
            }
            let mut lines: Vec<_> = lines.into_iter().collect();
            lines.sort_by_key(|(_, waiting)| waiting.iter().map(|j| j.seq).min());
            let _ = write!(msg, "; {} groups or jobs wait:", lines.len());
            for (line, waiting) in lines.iter().take(8) {
                if let Some(head) = waiting.iter().min_by_key(|j| j.seq) {
                    let _ = write!(
                        msg,
                        "\n  {line}: {} wait; the first, job {} (seq {}), is {} (attempt {}, due {})",
                        waiting.len(),
                        head.id,
                        head.seq,
                        head.state,
                        head.attempt,
                        head.run_at
                    );
                }
            }
        }
        if let Err(f) = self.audit("of the stalled queue").await {
            let _ = write!(msg, "\n{f}");
        }
        Failure(msg)
    }

    /// The checks on the ledger, once everything has stopped.
    async fn check(&self, leaders: Audits) -> TestResult {
        let violations = self.ledger.violations.lock().clone();
        if !violations.is_empty() {
            return Err(report("broken while the run went on", &violations));
        }
        let placed = self.ledger.placed.lock().clone();
        let runs = self.ledger.runs.lock().clone();
        let jobs = self.check_enqueues(&placed)?;
        let tally = self.check_no_loss(&jobs, &runs).await?;
        check_fifo(&jobs, &runs)?;
        let excused = self.check_one_in_flight(&jobs, &runs)?;
        if self.sc.sessions {
            self.check_session_cap(&jobs, &runs)?;
        }
        let rescued = self.rescued(&runs);
        eprintln!(
            "{}: {} jobs ({} completed, {} dead, {} cancelled), {} runs, {} cancels asked, \
             {rescued} runs rescued after a lapse, {excused} overlaps excused by one, \
             {} leader audits",
            self.sc.name,
            jobs.len(),
            tally.completed,
            tally.dead,
            tally.cancelled,
            runs.len(),
            self.ledger.cancels.load(Ordering::SeqCst),
            leaders.audits,
        );
        if self.sc.lapses && rescued == 0 {
            return Err(Failure(
                "no lapsed lease was rescued and run again: the test did not test rescue".into(),
            ));
        }
        Ok(())
    }

    /// Checks what the enqueues returned; the created jobs by id.
    fn check_enqueues(&self, placed: &[Placed]) -> Result<HashMap<JobId, Placed>, Failure> {
        let mut jobs: HashMap<JobId, Placed> = HashMap::new();
        let mut problems = Vec::new();
        for p in placed.iter().filter(|p| p.created) {
            if jobs.insert(p.id, p.clone()).is_some() {
                problems.push(format!("job {} was reported created twice", p.id));
            }
        }
        let mut by_key: HashMap<&str, Vec<&Placed>> = HashMap::new();
        for p in placed {
            if !jobs.contains_key(&p.id) {
                problems.push(format!(
                    "an enqueue returned job {} as existing, but no enqueue created it",
                    p.id
                ));
            }
            if let Some(k) = &p.key {
                by_key.entry(k).or_default().push(p);
            }
        }
        for (key, all) in by_key {
            let ids: HashSet<JobId> = all.iter().map(|p| p.id).collect();
            let created = all.iter().filter(|p| p.created).count();
            if ids.len() > 1 || created != 1 {
                problems.push(format!(
                    "idempotency key {key}: {} enqueues returned {} jobs, {created} reported created",
                    all.len(),
                    ids.len()
                ));
            }
        }
        if problems.is_empty() {
            Ok(jobs)
        } else {
            Err(report("duplicate or unknown jobs", &problems))
        }
    }

    /// Every created job is stored and terminal, once; returns the jobs by
    /// state.
    async fn check_no_loss(
        &self,
        jobs: &HashMap<JobId, Placed>,
        runs: &[Run],
    ) -> Result<Counts, Failure> {
        let mut problems = Vec::new();
        let mut tally = Counts::default();
        let finals = self.ledger.finals.lock().clone();
        let succeeded: HashSet<JobId> = runs.iter().filter(|r| r.ok).map(|r| r.job).collect();
        for id in jobs.keys() {
            let Some(job) = bounded("get", self.b.get(*id)).await?? else {
                problems.push(format!(
                    "job {id} was lost: enqueue reported it stored, the store has no such job"
                ));
                continue;
            };
            *tally.get_mut(job.state) += 1;
            if !job.state.is_terminal() {
                problems.push(format!("job {id} never finished: it is {}", job.state));
            }
            if let Some(f) = finals.get(id)
                && f.state != job.state
            {
                problems.push(format!(
                    "job {id} became {}, and is now {}: terminal twice",
                    f.state, job.state
                ));
            }
            if job.state == JobState::Completed && !succeeded.contains(id) {
                problems.push(format!(
                    "job {id} is completed, yet no attempt of it succeeded"
                ));
            }
            problems.extend(history_problems(&job));
        }
        for r in runs {
            if !jobs.contains_key(&r.job) {
                problems.push(format!(
                    "a handler ran job {}, which no enqueue created",
                    r.job
                ));
            }
            if let Some(f) = finals.get(&r.job)
                && r.start > f.at
            {
                problems.push(format!(
                    "job {} ran again (attempt {}) after it was {}",
                    r.job, r.attempt, f.state
                ));
            }
        }
        // Jobs stored beyond those created (a duplicate behind a reused
        // idempotency key, say) show here.
        let counts = bounded("counts", self.b.counts(&self.queue)).await??;
        // Jobs ever finished: at least those finished and kept.
        let kept = tally.completed + tally.dead + tally.cancelled;
        if counts.finished < kept {
            problems.push(format!("{} finished but {kept} jobs are", counts.finished));
        }
        let tally = Counts {
            finished: counts.finished,
            ..tally
        };
        if problems.is_empty() && counts != tally {
            problems.push(format!(
                "counts {counts:?} disagree with the jobs, {tally:?}"
            ));
        }
        if problems.is_empty() {
            Ok(tally)
        } else {
            Err(report("jobs lost or not terminal once", &problems))
        }
    }

    /// Overlapping runs of one group (or of one ungrouped job), excused only
    /// where the earlier run's lease had lapsed before the later one started.
    /// Returns how many overlaps were excused.
    fn check_one_in_flight(
        &self,
        jobs: &HashMap<JobId, Placed>,
        runs: &[Run],
    ) -> Result<usize, Failure> {
        let mut lines: HashMap<String, Vec<&Run>> = HashMap::new();
        for r in runs {
            let line = match jobs.get(&r.job).and_then(|p| p.group.clone()) {
                Some(g) => format!("group {g}"),
                None => format!("ungrouped job {}", r.job),
            };
            lines.entry(line).or_default().push(r);
        }
        let leases = self.ledger.leases.lock().clone();
        let mut problems = Vec::new();
        let mut excused = 0;
        for (line, mut line_runs) in lines {
            line_runs.sort_by_key(|r| r.start);
            for (i, later) in line_runs.iter().enumerate() {
                for earlier in &line_runs[..i] {
                    if earlier.end.is_some_and(|end| end < later.start) {
                        continue;
                    }
                    let lapsed = leases.get(&(earlier.job, earlier.token));
                    if lapsed.is_some_and(|until| *until <= later.started_at) {
                        excused += 1;
                        continue;
                    }
                    problems.push(format!(
                        "two handlers of {line} at once: job {} attempt {} (worker {}, lease until {}) \
                         was still running when job {} attempt {} started (worker {}, at {})",
                        earlier.job,
                        earlier.attempt,
                        earlier.worker,
                        lapsed.map_or_else(|| "unknown".into(), ToString::to_string),
                        later.job,
                        later.attempt,
                        later.worker,
                        later.started_at
                    ));
                }
            }
        }
        if problems.is_empty() {
            Ok(excused)
        } else {
            Err(report("more than one in flight", &problems))
        }
    }

    /// No handler of the capped session started while [`CAP`] others of it
    /// ran under live leases.
    fn check_session_cap(&self, jobs: &HashMap<JobId, Placed>, runs: &[Run]) -> TestResult {
        let mut session_runs: Vec<&Run> = runs
            .iter()
            .filter(|r| {
                jobs.get(&r.job)
                    .and_then(|p| p.group.as_deref())
                    .is_some_and(capped)
            })
            .collect();
        session_runs.sort_by_key(|r| r.start);
        let leases = self.ledger.leases.lock().clone();
        let mut problems = Vec::new();
        for (i, later) in session_runs.iter().enumerate() {
            let beside: Vec<&&Run> = session_runs[..i]
                .iter()
                .filter(|earlier| earlier.end.is_none_or(|end| end > later.start))
                .filter(|earlier| {
                    let until = leases.get(&(earlier.job, earlier.token));
                    until.is_none_or(|until| *until > later.started_at)
                })
                .collect();
            if beside.len() >= CAP {
                problems.push(format!(
                    "job {} attempt {} of session {CAPPED} started while {} of its jobs ran (max running {CAP}): {:?}",
                    later.job,
                    later.attempt,
                    beside.len(),
                    beside.iter().map(|r| r.job).collect::<Vec<_>>()
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(report("a session above its max running", &problems))
        }
    }

    /// Attempts whose lease lapsed with no acknowledgement applied, and whose
    /// job then ran again.
    fn rescued(&self, runs: &[Run]) -> usize {
        let applied = self.ledger.applied.lock();
        runs.iter()
            .filter(|r| !applied.contains(&(r.job, r.token)))
            .filter(|r| runs.iter().any(|o| o.job == r.job && o.attempt > r.attempt))
            .count()
    }
}

/// Every attempt of a job starts before the first attempt of its group's
/// next job that ran.
/// What is wrong with a finished job's history after the races: a run
/// that ends before it starts, or a completed job whose success is not its
/// last and only completed run (an acknowledgement or a rescue recorded
/// twice, or one of them applied after the other).
fn history_problems(job: &Job) -> Vec<String> {
    let mut problems = Vec::new();
    for a in job.history.iter().filter(|a| a.ended_at < a.started_at) {
        problems.push(format!(
            "job {}: a run ends before it starts: {a:?}",
            job.id
        ));
    }
    let completed = job
        .history
        .iter()
        .filter(|a| a.outcome == AttemptOutcome::Completed)
        .count();
    let last_completed = job
        .history
        .last()
        .is_some_and(|a| a.outcome == AttemptOutcome::Completed);
    if job.state == JobState::Completed && (completed != 1 || !last_completed) {
        problems.push(format!(
            "job {} is completed, and its history says {:?}",
            job.id,
            job.history.iter().map(|a| a.outcome).collect::<Vec<_>>()
        ));
    }
    problems
}

fn check_fifo(jobs: &HashMap<JobId, Placed>, runs: &[Run]) -> TestResult {
    let mut starts: HashMap<JobId, (u64, u64, u32)> = HashMap::new();
    for r in runs {
        let s = starts.entry(r.job).or_insert((r.start, r.start, r.attempt));
        s.0 = s.0.min(r.start);
        if r.start > s.1 {
            (s.1, s.2) = (r.start, r.attempt);
        }
    }
    let mut groups: HashMap<&str, Vec<&Placed>> = HashMap::new();
    for p in jobs.values() {
        if let Some(g) = &p.group {
            groups.entry(g).or_default().push(p);
        }
    }
    let mut problems = Vec::new();
    for (g, mut line) in groups {
        line.sort_by_key(|p| p.seq);
        for w in line.windows(2) {
            if w[0].seq == w[1].seq {
                problems.push(format!(
                    "group {g}: jobs {} and {} share seq {}",
                    w[0].id, w[1].id, w[0].seq
                ));
            }
        }
        let ran: Vec<_> = line
            .iter()
            .filter_map(|p| starts.get(&p.id).map(|s| (*p, *s)))
            .collect();
        for w in ran.windows(2) {
            let ((a, (_, a_last, a_attempt)), (b, (b_first, _, _))) = (w[0], w[1]);
            if a_last > b_first {
                problems.push(format!(
                    "FIFO broken in group {g}: job {} (seq {}) started (#{b_first}) before \
                     attempt {a_attempt} of the earlier job {} (seq {}) started (#{a_last})",
                    b.id, b.seq, a.id, a.seq
                ));
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(report("order broken", &problems))
    }
}

fn report(what: &str, problems: &[String]) -> Failure {
    let mut msg = format!("{what}: {} problems", problems.len());
    for p in problems.iter().take(8) {
        let _ = write!(msg, "\n  {p}");
    }
    Failure(msg)
}

fn enqueue_of(spec: &Spec, sc: &Scenario) -> Enqueue {
    let mut e = Enqueue::new(QUEUE, &Tag { n: spec.n });
    if let Some(g) = spec.group {
        let name = group_name(g);
        if sc.sessions && capped(&name) {
            e = e.session(CAPPED);
        }
        e = e.group(name);
    }
    if let Some(k) = spec.key {
        e = e.idempotency_key(key_name(k));
    }
    e
}

async fn handle(
    ctx: JobContext,
    ledger: &Arc<Ledger>,
    sc: &Scenario,
    seed: u64,
    worker: usize,
) -> Result<(), JobError> {
    let mut run = ledger.start(&ctx, worker);
    let n = ctx.payload::<Tag>()?.n;
    let plan = sc.plan(seed, n, ctx.attempt());
    match plan.work {
        Work::Yield(k) => {
            for _ in 0..k {
                tokio::task::yield_now().await;
            }
        }
        Work::Sleep(d) => tokio::time::sleep(d).await,
    }
    match plan.outcome {
        Outcome::Ok => {
            run.ok = true;
            Ok(())
        }
        Outcome::Retry => Err(JobError::retry("the plan says fail")),
        Outcome::Permanent => Err(JobError::permanent("the plan says fail for good")),
    }
}

/// Shuts the workers down; returns what their maintenance audits found,
/// added up.
async fn stop_all(workers: Vec<WorkerHandle>) -> Result<Audits, Failure> {
    let mut found = Audits::default();
    for w in workers {
        let stats = w.stats();
        found.audits += stats.audits;
        found.anomalies += stats.anomalies;
        let id = w.id().to_owned();
        bounded(
            &format!("shutdown of {id}"),
            w.shutdown(Duration::from_secs(5)),
        )
        .await?;
    }
    Ok(found)
}

/// The maintenance leaders' audits of one run.
#[derive(Clone, Copy, Debug, Default)]
struct Audits {
    audits: u64,
    anomalies: u64,
}
