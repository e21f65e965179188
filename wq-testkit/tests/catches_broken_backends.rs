//! The suite can fail: deliberately broken backends are caught.
//!
//! `Sabotaged` wraps the memory store and breaks one guarantee while
//! looking normal from the outside. Its audit is the inner store's, which
//! cannot see what the wrapper hides: the concurrent tests must catch those
//! faults through their ledger.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use wq_core::{
    Ack, AckOutcome, Admin, Admission, Admissions, Allowance, Audit, AuditReport, ClaimRequest,
    Counts, DeadJobs, Enqueued, ExtendOutcome, GroupKey, Job, JobId, JobState, LeaseRef, ListQuery,
    Lock, LockLease, NewJob, PauseChange, Position, QueueConfig, QueueInfo, QueueName,
    RescueReport, RunAt, Scheduler, SessionInfo, SessionKey, SessionLimits, Sessions, Store,
    StoreError, Timestamp, WakeSignal,
};
use wq_memory::MemoryStore;
use wq_testkit::{Failure, TestBackend, concurrency, conformance, differential, properties};

#[derive(Clone, Copy, Debug)]
enum Fault {
    /// Stores jobs without their group (so nothing orders them) but shows
    /// the group everywhere, as if it were kept.
    IgnoreGroups,
    /// Acknowledges every seventh enqueued job without storing it.
    LoseJobs,
    /// Accepts acknowledgements from any token and any lease age.
    NoFencing,
    /// Now and then, a job enqueued into a group whose head is running is
    /// never made the group's next head: it waits, due (as far as anyone
    /// outside can tell), behind a head that completes, and no claim reaches
    /// it or the jobs behind it. The race that stranded jobs on Postgres.
    StrandBehindRunningHead,
    /// Grants every job one attempt more than it shows: a retry on the
    /// last attempt reschedules instead of killing.
    ExtraAttempt,
    /// Stores a job enqueued into a group whose head runs without its
    /// group (shown with it everywhere), so it runs at once beside the head.
    SecondHead,
    /// Hands out a claim's jobs last picked first: the right jobs, out of
    /// the order they were picked in (Postgres did this until its claim
    /// sorted the rows its update returned).
    UnorderedClaims,
    /// Refuses an acknowledgement unless the job runs under its token, so
    /// one sent again after a lost reply is `Stale`, not `Applied`.
    ForgetsAppliedAcks,
    /// Shows a session's max running but never applies it.
    ExceedsMaxRunning,
    /// Shows a session paused but goes on running its jobs.
    RunsPausedSessions,
}

/// Far enough ahead that a stranded job never comes due during a test.
const NEVER: Duration = Duration::from_secs(365 * 24 * 3600);

/// A session's limits and pause as a session fault shows them.
type Shown = (SessionLimits, Option<String>);

#[derive(Clone)]
struct Sabotaged {
    inner: MemoryStore,
    fault: Fault,
    groups: Arc<Mutex<HashMap<JobId, GroupKey>>>,
    /// Stranded jobs, with the time they were enqueued (and were due).
    stranded: Arc<Mutex<HashMap<JobId, Timestamp>>>,
    enqueued: Arc<AtomicU64>,
    /// What the session faults show instead of what they apply.
    shown: Arc<Mutex<HashMap<(QueueName, SessionKey), Shown>>>,
}

impl Sabotaged {
    fn new(fault: Fault) -> Self {
        Self {
            inner: MemoryStore::new(),
            fault,
            groups: Arc::default(),
            stranded: Arc::default(),
            enqueued: Arc::default(),
            shown: Arc::default(),
        }
    }

    /// Shows the limits and pause a session fault did not apply.
    fn disguise_session(&self, mut info: SessionInfo) -> SessionInfo {
        let key = (info.queue.clone(), info.session.clone());
        if let Some((limits, pause)) = self.shown.lock().get(&key) {
            info.limits = *limits;
            info.paused = pause.is_some();
            info.pause_reason = pause.clone();
        }
        info
    }

    /// Puts back the group that `IgnoreGroups` hid from the inner store, and
    /// the due time and state that `StrandBehindRunningHead` hid.
    fn disguise(&self, mut job: Job) -> Job {
        if let Some(g) = self.groups.lock().get(&job.id) {
            job.group = Some(g.clone());
        }
        if let Some(at) = self.stranded.lock().get(&job.id)
            && job.state == JobState::Scheduled
        {
            job.state = JobState::Available;
            job.run_at = *at;
        }
        if matches!(self.fault, Fault::ExtraAttempt) {
            job.max_attempts = job.max_attempts.saturating_sub(1);
        }
        job
    }

    /// Whether a job of `group` runs now, as the inner store sees it.
    async fn head_runs(&self, queue: &QueueName, group: &GroupKey) -> Result<bool, StoreError> {
        let running = ListQuery::new()
            .queue(queue.clone())
            .group(group.clone())
            .state(JobState::Running)
            .limit(1);
        Ok(!self.inner.list(&running).await?.is_empty())
    }

    fn disguise_all(&self, jobs: Vec<Job>) -> Vec<Job> {
        jobs.into_iter().map(|j| self.disguise(j)).collect()
    }

    fn fabricate(new: &NewJob, now: Timestamp) -> Job {
        Job::enqueued(new.clone(), 0, now, JobState::Available, now)
    }
}

impl Store for Sabotaged {
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
        match self.fault {
            Fault::IgnoreGroups => {
                let stripped = jobs
                    .into_iter()
                    .map(|mut j| {
                        if let Some(g) = j.group.take() {
                            self.groups.lock().insert(j.id, g);
                        }
                        j
                    })
                    .collect();
                let out = self.inner.enqueue(stripped, now).await?;
                Ok(out
                    .into_iter()
                    .map(|e| Enqueued {
                        job: self.disguise(e.job),
                        created: e.created,
                    })
                    .collect())
            }
            Fault::LoseJobs => {
                let mut kept = Vec::new();
                let mut slots = Vec::new();
                for job in jobs {
                    if self.enqueued.fetch_add(1, Ordering::SeqCst) % 7 == 6 {
                        slots.push(Some(Self::fabricate(&job, now)));
                    } else {
                        slots.push(None);
                        kept.push(job);
                    }
                }
                let mut stored = self.inner.enqueue(kept, now).await?.into_iter();
                Ok(slots
                    .into_iter()
                    .filter_map(|s| match s {
                        Some(job) => Some(Enqueued { job, created: true }),
                        None => stored.next(),
                    })
                    .collect())
            }
            Fault::NoFencing
            | Fault::UnorderedClaims
            | Fault::ForgetsAppliedAcks
            | Fault::ExceedsMaxRunning
            | Fault::RunsPausedSessions => self.inner.enqueue(jobs, now).await,
            Fault::ExtraAttempt | Fault::SecondHead => {
                let mut jobs = jobs;
                for job in &mut jobs {
                    if matches!(self.fault, Fault::ExtraAttempt) {
                        job.max_attempts += 1;
                    } else if let Some(g) = job.group.clone()
                        && self.head_runs(&job.queue, &g).await?
                    {
                        job.group = None;
                        self.groups.lock().insert(job.id, g);
                    }
                }
                let out = self.inner.enqueue(jobs, now).await?;
                Ok(out
                    .into_iter()
                    .map(|e| Enqueued {
                        job: self.disguise(e.job),
                        created: e.created,
                    })
                    .collect())
            }
            Fault::StrandBehindRunningHead => {
                let mut jobs = jobs;
                for job in &mut jobs {
                    let Some(g) = &job.group else { continue };
                    if self.head_runs(&job.queue, g).await?
                        && self.enqueued.fetch_add(1, Ordering::SeqCst) % 4 == 3
                    {
                        job.run_at = RunAt::At(now + NEVER);
                        self.stranded.lock().insert(job.id, now);
                    }
                }
                let out = self.inner.enqueue(jobs, now).await?;
                Ok(out
                    .into_iter()
                    .map(|e| Enqueued {
                        job: self.disguise(e.job),
                        created: e.created,
                    })
                    .collect())
            }
        }
    }
    async fn claim(&self, req: &ClaimRequest) -> Result<Vec<Job>, StoreError> {
        let mut jobs = self.disguise_all(self.inner.claim(req).await?);
        if matches!(self.fault, Fault::UnorderedClaims) {
            jobs.reverse();
        }
        Ok(jobs)
    }
    async fn ack(&self, acks: &[Ack], now: Timestamp) -> Result<Vec<AckOutcome>, StoreError> {
        if matches!(self.fault, Fault::ForgetsAppliedAcks) {
            let mut out = Vec::new();
            for a in acks {
                let job = self.inner.get(a.id).await?;
                let leased = job.as_ref().and_then(|j| j.lease.as_ref());
                if job.is_some() && leased.is_none_or(|l| l.token != a.token) {
                    out.push(AckOutcome::Stale);
                } else {
                    out.extend(self.inner.ack(std::slice::from_ref(a), now).await?);
                }
            }
            return Ok(out);
        }
        if !matches!(self.fault, Fault::NoFencing) {
            return self.inner.ack(acks, now).await;
        }
        let mut out = Vec::new();
        for a in acks {
            let current = self.inner.get(a.id).await?.and_then(|j| j.lease);
            let Some(lease) = current else {
                out.push(AckOutcome::Stale);
                continue;
            };
            let forged = Ack {
                token: lease.token,
                ..a.clone()
            };
            let at = now.min(lease.expires_at - Duration::from_micros(1));
            out.extend(self.inner.ack(&[forged], at).await?);
        }
        Ok(out)
    }
    async fn extend(
        &self,
        leases: &[LeaseRef],
        until: Timestamp,
        now: Timestamp,
    ) -> Result<Vec<ExtendOutcome>, StoreError> {
        self.inner.extend(leases, until, now).await
    }
    async fn rescue(&self, now: Timestamp, limit: usize) -> Result<RescueReport, StoreError> {
        self.inner.rescue(now, limit).await
    }
    async fn get(&self, id: JobId) -> Result<Option<Job>, StoreError> {
        Ok(self.inner.get(id).await?.map(|j| self.disguise(j)))
    }
    async fn prune(&self, now: Timestamp, limit: usize) -> Result<u64, StoreError> {
        self.inner.prune(now, limit).await
    }
}

impl Admin for Sabotaged {
    async fn list_queues(&self) -> Result<Vec<QueueInfo>, StoreError> {
        self.inner.list_queues().await
    }
    async fn set_paused(&self, q: &QueueName, paused: bool) -> Result<(), StoreError> {
        self.inner.set_paused(q, paused).await
    }
    async fn cancel(&self, id: JobId, now: Timestamp) -> Result<Job, StoreError> {
        Ok(self.disguise(self.inner.cancel(id, now).await?))
    }
    async fn list(&self, q: &ListQuery) -> Result<Vec<Job>, StoreError> {
        // The inner store may not know the groups: filter them here, over
        // every job after the cursor, then take the page.
        let mut unfiltered = q.clone();
        unfiltered.group = None;
        unfiltered.limit = usize::MAX;
        let jobs = self.disguise_all(self.inner.list(&unfiltered).await?);
        Ok(jobs
            .into_iter()
            .filter(|j| q.matches(j))
            .take(q.limit)
            .collect())
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

impl Lock for Sabotaged {
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

impl Scheduler for Sabotaged {
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

impl Admissions for Sabotaged {
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

impl Sessions for Sabotaged {
    async fn set_session_limits(
        &self,
        q: &QueueName,
        s: &SessionKey,
        limits: &SessionLimits,
    ) -> Result<(), StoreError> {
        let mut applied = *limits;
        if matches!(self.fault, Fault::ExceedsMaxRunning) {
            applied.max_running = None;
        }
        self.inner.set_session_limits(q, s, &applied).await?;
        let mut shown = self.shown.lock();
        shown.entry((q.clone(), s.clone())).or_default().0 = *limits;
        Ok(())
    }
    async fn set_session_paused(
        &self,
        q: &QueueName,
        s: &SessionKey,
        change: &PauseChange,
    ) -> Result<bool, StoreError> {
        let applied = if matches!(self.fault, Fault::RunsPausedSessions) {
            &PauseChange::Resume
        } else {
            change
        };
        self.inner.set_session_paused(q, s, applied).await?;
        let mut shown = self.shown.lock();
        let pause = &mut shown.entry((q.clone(), s.clone())).or_default().1;
        let next = change.apply(pause.as_deref());
        let changed = next.is_some();
        if let Some(next) = next {
            *pause = next;
        }
        Ok(changed)
    }
    async fn session_info(
        &self,
        q: &QueueName,
        s: &SessionKey,
    ) -> Result<Option<SessionInfo>, StoreError> {
        let info = self.inner.session_info(q, s).await?;
        Ok(info.map(|i| self.disguise_session(i)))
    }
    async fn list_sessions(
        &self,
        q: &QueueName,
        after: Option<&SessionKey>,
        limit: usize,
    ) -> Result<Vec<SessionInfo>, StoreError> {
        let all = self.inner.list_sessions(q, after, limit).await?;
        Ok(all.into_iter().map(|i| self.disguise_session(i)).collect())
    }
}

impl Audit for Sabotaged {
    async fn audit(
        &self,
        queue: &QueueName,
        now: Timestamp,
        repair: bool,
    ) -> Result<AuditReport, StoreError> {
        self.inner.audit(queue, now, repair).await
    }
}

struct Broken(Fault);

impl TestBackend for Broken {
    type Backend = Sabotaged;
    async fn create(&self) -> Result<Sabotaged, Failure> {
        Ok(Sabotaged::new(self.0))
    }
    async fn destroy(&self, _: Sabotaged) {}
}

fn says(failure: &str, words: &[&str]) -> bool {
    words.iter().any(|w| failure.contains(w))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_suite_catches_a_backend_that_breaks_fifo() {
    let fifo = conformance::fifo_per_group(&Broken(Fault::IgnoreGroups)).await;
    let failure = fifo.expect_err("fifo_per_group passed on a backend without order");
    assert!(says(&failure.0, &["FIFO", "one in flight"]), "{failure}");

    let single = conformance::one_in_flight_per_group(&Broken(Fault::IgnoreGroups)).await;
    let failure = single.expect_err("one_in_flight_per_group passed on a backend without order");
    assert!(
        says(&failure.0, &["one group of five", "handed out twice"]),
        "{failure}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_suite_catches_a_backend_that_loses_jobs() {
    let outcome = conformance::no_loss_under_failures(&Broken(Fault::LoseJobs)).await;
    let failure = outcome.expect_err("no_loss_under_failures passed on a backend that loses jobs");
    assert!(says(&failure.0, &["missing", "stored"]), "{failure}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_suite_catches_a_backend_that_does_not_fence() {
    let outcome = conformance::stale_workers_are_fenced(&Broken(Fault::NoFencing)).await;
    let failure = outcome.expect_err("stale_workers_are_fenced passed without fencing");
    assert!(failure.0.contains("Stale"), "{failure}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_suite_catches_a_backend_that_grants_an_extra_attempt() {
    let outcome = conformance::retry_on_the_last_attempt_kills(&Broken(Fault::ExtraAttempt)).await;
    let failure =
        outcome.expect_err("retry_on_the_last_attempt_kills passed with an extra attempt");
    assert!(says(&failure.0, &["on the last attempt"]), "{failure}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_suite_catches_a_backend_that_makes_a_second_head() {
    let outcome =
        conformance::enqueue_behind_a_running_head_waits(&Broken(Fault::SecondHead)).await;
    let failure = outcome.expect_err("enqueue_behind_a_running_head_waits passed with two heads");
    assert!(
        says(
            &failure.0,
            &["heads its group", "while the head runs", "second head"]
        ),
        "{failure}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_suite_catches_a_backend_that_lets_a_session_exceed_max_running() {
    let broken = Broken(Fault::ExceedsMaxRunning);
    let outcome = conformance::sessions_cap_running_jobs(&broken).await;
    let failure = outcome.expect_err("sessions_cap_running_jobs passed beyond max running");
    assert!(says(&failure.0, &["two of n1"]), "{failure}");

    let outcome = conformance::session_limits_hold_across_workers(&broken).await;
    let failure =
        outcome.expect_err("session_limits_hold_across_workers passed beyond max running");
    assert!(
        says(&failure.0, &["at once of a max-1 session"]),
        "{failure}"
    );

    let outcome = concurrency::racing_enqueues_workers_and_cancels(&broken).await;
    let failure =
        outcome.expect_err("racing_enqueues_workers_and_cancels passed beyond max running");
    assert!(says(&failure.0, &["above its max running"]), "{failure}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_suite_catches_a_backend_that_runs_a_paused_session() {
    let broken = Broken(Fault::RunsPausedSessions);
    let outcome = conformance::paused_sessions_hold_their_jobs(&broken).await;
    let failure = outcome.expect_err("paused_sessions_hold_their_jobs passed running paused jobs");
    assert!(
        says(&failure.0, &["only the unpaused session runs"]),
        "{failure}"
    );

    let outcome = conformance::session_limits_hold_across_workers(&broken).await;
    let failure =
        outcome.expect_err("session_limits_hold_across_workers passed running paused jobs");
    assert!(says(&failure.0, &["paused session"]), "{failure}");
}

#[test]
fn the_differential_tests_catch_a_backend_that_runs_a_paused_session() {
    let failure = differential::run(&Broken(Fault::RunsPausedSessions), 256)
        .expect_err("the differential tests passed on a backend that runs paused sessions");
    assert!(failure.contains("PauseSession"), "{failure}");
}

#[test]
fn the_properties_catch_a_backend_that_breaks_fifo() {
    let failure = properties::run(&Broken(Fault::IgnoreGroups), 256)
        .expect_err("property tests passed on a backend without order");
    assert!(
        says(&failure, &["FIFO", "at once", "handed out"]),
        "{failure}"
    );
}

#[test]
fn the_properties_catch_a_backend_that_loses_jobs() {
    let failure = properties::run(&Broken(Fault::LoseJobs), 256)
        .expect_err("property tests passed on a backend that loses jobs");
    assert!(says(&failure, &["lost", "stored"]), "{failure}");
}

#[test]
fn the_properties_catch_a_backend_that_does_not_fence() {
    let failure = properties::run(&Broken(Fault::NoFencing), 256)
        .expect_err("property tests passed without fencing");
    assert!(failure.contains("Stale"), "{failure}");
}

#[test]
fn a_failing_case_shrinks_to_a_short_readable_sequence() {
    let failure = properties::run(&Broken(Fault::IgnoreGroups), 256)
        .expect_err("property tests passed on a backend without order");
    let steps = failure.matches("Enqueue {").count() + failure.matches("Claim {").count();
    assert!(
        steps <= 12,
        "the shrunk case is long ({steps} steps):\n{failure}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_concurrent_tests_catch_a_backend_that_strands_jobs_behind_a_running_head() {
    let broken = Broken(Fault::StrandBehindRunningHead);
    let outcome = concurrency::batch_enqueues_race_head_acks(&broken).await;
    let failure = outcome.expect_err("batch_enqueues_race_head_acks passed on a stranding backend");
    assert!(says(&failure.0, &["never finished"]), "{failure}");

    let outcome = concurrency::racing_enqueues_workers_and_cancels(&broken).await;
    let failure =
        outcome.expect_err("racing_enqueues_workers_and_cancels passed on a stranding backend");
    assert!(says(&failure.0, &["never finished"]), "{failure}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_concurrent_tests_catch_a_backend_that_breaks_fifo() {
    let outcome =
        concurrency::racing_enqueues_workers_and_cancels(&Broken(Fault::IgnoreGroups)).await;
    let failure =
        outcome.expect_err("racing_enqueues_workers_and_cancels passed on a backend without order");
    assert!(says(&failure.0, &["at once", "FIFO"]), "{failure}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_concurrent_tests_catch_a_backend_that_loses_jobs() {
    let outcome = concurrency::racing_enqueues_workers_and_cancels(&Broken(Fault::LoseJobs)).await;
    let failure = outcome
        .expect_err("racing_enqueues_workers_and_cancels passed on a backend that loses jobs");
    assert!(says(&failure.0, &["lost"]), "{failure}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_concurrent_tests_catch_a_backend_that_does_not_fence() {
    // A stale handler overlaps a rescued run only when the timing lets it,
    // so a run of fresh seeds may miss it: a few runs must not all miss.
    for _ in 0..5 {
        let outcome =
            concurrency::lapsed_leases_are_rescued_under_races(&Broken(Fault::NoFencing)).await;
        if let Err(failure) = outcome {
            assert!(says(&failure.0, &["at once"]), "{failure}");
            return;
        }
    }
    panic!("lapsed_leases_are_rescued_under_races passed five times without fencing");
}

/// The number of steps in a shrunk differential failure.
fn steps(failure: &str) -> usize {
    let ops = [
        "Enqueue {",
        "Claim {",
        "Ack {",
        "RepeatAck",
        "Extend {",
        "Advance {",
        "Rescue",
        "Cancel {",
        "RetryDead {",
        "PurgeDead {",
        "Prune",
        "Promote {",
        "Limit {",
        "PauseSession {",
    ];
    let listed = failure
        .split("minimal failing input")
        .nth(1)
        .unwrap_or(failure);
    ops.iter().map(|op| listed.matches(op).count()).sum()
}

#[test]
fn the_differential_tests_catch_a_backend_that_reorders_claims() {
    let failure = differential::run(&Broken(Fault::UnorderedClaims), 256)
        .expect_err("the differential tests passed on a backend that reorders claims");
    assert!(failure.contains("claimed ids"), "{failure}");
    assert!(
        steps(&failure) <= 6,
        "the shrunk case is long ({} steps):\n{failure}",
        steps(&failure)
    );
}

#[test]
fn the_differential_tests_catch_a_backend_that_forgets_applied_acks() {
    let failure = differential::run(&Broken(Fault::ForgetsAppliedAcks), 256)
        .expect_err("the differential tests passed on a backend that forgets applied acks");
    assert!(
        failure.contains("RepeatAck") && failure.contains("Stale"),
        "{failure}"
    );
    assert!(
        steps(&failure) <= 6,
        "the shrunk case is long ({} steps):\n{failure}",
        steps(&failure)
    );
}
