//! The runner of one queue: it owns the queue's slots, stores the
//! acknowledgements of finished attempts in batches, and claims as many jobs
//! as slots are free, so one task does what the claim loop, the ack batcher
//! and the slot semaphore would otherwise do across three.
//!
//! When the queue has nothing more for it, the runner sleeps until a
//! wake-up, the next due job, the slow poll or a finished attempt.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::stats::Stats;
use super::{QueueRuntime, Shared, execute};
use crate::Backend;
use crate::events::{Deferral, EventKind, JobEvent, listening};
use crate::handler::WaitCause;
use crate::job::JobState;
use crate::store::{Ack, AckAction, AckOutcome, ClaimRequest};
use crate::time::Timestamp;

/// Shortest idle wait, so a backend whose `next_due` says "now" while its
/// claim finds nothing cannot make the loop spin.
const MIN_IDLE: Duration = Duration::from_millis(2);

/// Most acknowledgements stored in one round trip.
const ACK_BATCH: usize = 512;

/// Tries of one turn whose call fails, the first included, before the
/// runner gives up on it (it also gives up once half the lease has gone:
/// what the first try claimed would have little time left to run); the
/// pause before the first retry, doubled for each next one up to a cap.
const TURN_TRIES: u32 = 10;
const TURN_RETRY_WAIT: Duration = Duration::from_millis(10);
const TURN_RETRY_MAX_WAIT: Duration = Duration::from_millis(200);

/// Most scheduler passes a turn waits for attempts still running, and how
/// many in a row may bring none before it stops waiting.
const GATHER_PASSES: usize = 16;
const GATHER_QUIET: usize = 3;

/// The runner's channel: every finished attempt reports here, with what
/// to store (none when its lease was lost).
pub(crate) type Done = mpsc::UnboundedSender<Option<Ended>>;

/// A finished attempt: its acknowledgement, and for the events its number
/// and the cause of a wait it asked for.
pub(crate) struct Ended {
    pub(crate) ack: Ack,
    pub(crate) attempt: u32,
    pub(crate) cause: Option<WaitCause>,
}

/// Finished attempts not yet stored.
#[derive(Default)]
struct Finished {
    acks: Vec<Ack>,
    /// The rest of each attempt's report, by the acknowledgement's index.
    told: Vec<(u32, Option<WaitCause>)>,
    /// Attempts reported, with or without an acknowledgement.
    count: usize,
}

impl Finished {
    fn add(&mut self, done: Option<Ended>) {
        self.count += 1;
        if let Some(e) = done {
            self.acks.push(e.ack);
            self.told.push((e.attempt, e.cause));
        }
    }
}

struct Runner<B> {
    shared: Arc<Shared<B>>,
    queue: Arc<QueueRuntime>,
    done_tx: Done,
    done_rx: mpsc::UnboundedReceiver<Option<Ended>>,
    signal: crate::WakeSignal,
    /// Attempts started and not yet acknowledged in the store.
    running: usize,
    /// The last claim came back short: wait for a reason to claim again.
    idle_until: Option<Timestamp>,
    claim_failures: u32,
    /// The last turn's number. It starts at random so that a worker
    /// restarted under the same id does not repeat an earlier life's turns.
    turn: u64,
}

pub(crate) async fn run<B: Backend>(shared: Arc<Shared<B>>, queue: Arc<QueueRuntime>) {
    let (done_tx, done_rx) = mpsc::unbounded_channel();
    let signal = shared.backend.subscribe(&queue.name);
    let mut runner = Runner {
        shared,
        queue,
        done_tx,
        done_rx,
        signal,
        running: 0,
        idle_until: None,
        claim_failures: 0,
        turn: rand::random(),
    };
    runner.run().await
}

impl<B: Backend> Runner<B> {
    async fn run(&mut self) {
        let mut finished = Finished::default();
        loop {
            let stopping = self.shared.control.stop_claiming.is_cancelled();
            if self.shared.control.is_crashed() || (stopping && self.running == 0) {
                return;
            }
            self.drain(&mut finished);
            self.gather(&mut finished).await;
            // A finished attempt may have let its group's next job through,
            // so finishing always earns a claim while slots are free.
            let free = self.queue.concurrency - (self.running - finished.count);
            let claim = !stopping && free > 0 && (self.idle_until.is_none() || finished.count > 0);
            if finished.count == 0 && !claim {
                self.wait(stopping, free > 0, &mut finished).await;
                continue;
            }
            let limit = free.min(self.queue.claim_batch);
            self.turn(std::mem::take(&mut finished), claim.then_some(limit))
                .await;
        }
    }

    /// Takes the finished attempts already reported, up to a batch.
    fn drain(&mut self, finished: &mut Finished) {
        while finished.count < ACK_BATCH {
            match self.done_rx.try_recv() {
                Ok(ack) => finished.add(ack),
                Err(_) => break,
            }
        }
    }

    /// While other attempts are still running, lets them run on for a few
    /// scheduler passes before the turn, until passes stop bringing any in:
    /// the first attempt to finish would otherwise take a round trip alone,
    /// and the rest the next one, halving every batch.
    async fn gather(&mut self, finished: &mut Finished) {
        let mut quiet = 0;
        for _ in 0..GATHER_PASSES {
            let before = finished.count;
            if before == 0 || before >= self.running || before >= ACK_BATCH {
                return;
            }
            tokio::task::yield_now().await;
            self.drain(finished);
            quiet = if finished.count == before {
                quiet + 1
            } else {
                0
            };
            if quiet == GATHER_QUIET {
                return;
            }
        }
    }

    /// Stores finished attempts and claims up to `claim` jobs, in one
    /// round trip where the backend allows.
    ///
    /// A call that fails may still have been applied, its reply lost on the
    /// way back: the runner then sends the same turn again (same
    /// acknowledgements, a claim with the same turn number) a few times, so
    /// a backend that remembers turns answers what the first try did
    /// instead of refusing the acknowledgements as stale and leaving the
    /// first try's claims leased to nobody.
    async fn turn(&mut self, finished: Finished, claim: Option<usize>) {
        self.turn = self.turn.wrapping_add(1);
        let started = std::time::Instant::now();
        let mut wait = TURN_RETRY_WAIT;
        let mut tries = 0;
        loop {
            tries += 1;
            let now = self.shared.clock.now();
            let req = claim.map(|limit| {
                self.signal.mark_seen();
                ClaimRequest::new(
                    self.queue.name.clone(),
                    limit,
                    now,
                    now + self.queue.config.lease,
                    self.shared.worker_id.clone(),
                )
                .turn(self.turn)
            });
            let result = self
                .shared
                .backend
                .ack_and_claim(&finished.acks, req.as_ref(), now)
                .await;
            match result {
                Ok(done) => {
                    self.record(&finished, &done.acks);
                    self.running -= finished.count;
                    if let Some(req) = req {
                        self.start(req, done.jobs, done.next_due).await;
                    }
                    return;
                }
                Err(e)
                    if tries < TURN_TRIES
                        && started.elapsed() < self.queue.config.lease / 2
                        && !self.shared.control.is_crashed() =>
                {
                    tracing::warn!(error = %e, queue = %self.queue.name, "acknowledge and claim failed; sending the turn again");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(TURN_RETRY_MAX_WAIT);
                }
                Err(e) => {
                    tracing::warn!(error = %e, queue = %self.queue.name, "acknowledge and claim failed");
                    if !finished.acks.is_empty() {
                        self.store_acks(&finished).await;
                    }
                    self.running -= finished.count;
                    if claim.is_some() {
                        self.claim_failures = self.claim_failures.saturating_add(1);
                        let wait = Duration::from_millis(50 << self.claim_failures.min(6));
                        self.idle_until = Some(now + wait);
                    }
                    return;
                }
            }
        }
    }

    /// Waits for a finished attempt, or (with free slots and nothing
    /// claimable) a wake-up or the idle deadline, or the stop.
    async fn wait(&mut self, stopping: bool, free: bool, finished: &mut Finished) {
        let may_claim = !stopping && free;
        let deadline = self.idle_until.unwrap_or(Timestamp::MAX);
        let clock = self.shared.clock.clone();
        let control = self.shared.control.clone();
        tokio::select! {
            biased;
            Some(ack) = self.done_rx.recv() => finished.add(ack),
            () = control.done.cancelled() => {}
            () = control.stop_claiming.cancelled(), if !stopping => {}
            () = self.signal.changed(), if may_claim => self.idle_until = None,
            () = clock.sleep_until(deadline), if may_claim => self.idle_until = None,
        }
    }

    /// Stores acknowledgements, retrying while the store fails; gives up once
    /// the leases must have lapsed (those jobs run again after rescue).
    async fn store_acks(&self, finished: &Finished) {
        let acks = &finished.acks;
        let started = std::time::Instant::now();
        let mut wait = Duration::from_millis(10);
        loop {
            match self.shared.backend.ack(acks, self.shared.clock.now()).await {
                Ok(outcomes) => return self.record(finished, &outcomes),
                Err(e)
                    if started.elapsed() < self.queue.config.lease
                        && !self.shared.control.is_crashed() =>
                {
                    tracing::warn!(error = %e, jobs = acks.len(), "acknowledgement failed; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(1));
                }
                Err(e) => {
                    tracing::error!(error = %e, jobs = acks.len(), "acknowledgement abandoned; leases will lapse and the jobs run again");
                    return;
                }
            }
        }
    }

    /// Counts what the store applied, and tells the events.
    fn record(&self, finished: &Finished, outcomes: &[AckOutcome]) {
        let s = &self.shared.control.stats;
        if let Some(events) = listening(&self.shared.events) {
            let at = self.shared.clock.now();
            for ((ack, &(attempt, cause)), outcome) in
                finished.acks.iter().zip(&finished.told).zip(outcomes)
            {
                if let Some(kind) = ended(ack, attempt, cause, outcome, at) {
                    events.send(JobEvent {
                        id: ack.id,
                        queue: self.queue.name.clone(),
                        at,
                        kind,
                    });
                }
            }
        }
        for (ack, outcome) in finished.acks.iter().zip(outcomes) {
            let counter = match (outcome, &ack.action) {
                (AckOutcome::Applied(JobState::Completed), _) => &s.completed,
                (AckOutcome::Applied(JobState::Cancelled), _) => &s.cancelled,
                (AckOutcome::Applied(JobState::Dead), _) => &s.dead,
                (AckOutcome::Applied(_), AckAction::Retry { .. }) => &s.retried,
                (AckOutcome::Applied(_), AckAction::Release) => &s.released,
                (AckOutcome::Applied(_), AckAction::Continue { .. }) => &s.stepped,
                (AckOutcome::Applied(_), _) => &s.deferred,
                (AckOutcome::Stale | AckOutcome::NotFound, _) => {
                    tracing::warn!(job.id = %ack.id, "acknowledgement refused: the lease had lapsed");
                    &s.stale
                }
            };
            Stats::bump(counter, 1);
        }
    }

    /// Starts the jobs a claim returned; a short claim makes the runner idle
    /// until a wake-up or the next due job (`next_due`, when the claim
    /// brought it).
    async fn start(
        &mut self,
        req: ClaimRequest,
        jobs: Vec<crate::Job>,
        next_due: Option<Option<Timestamp>>,
    ) {
        self.claim_failures = 0;
        let got = jobs.len();
        Stats::bump(&self.shared.control.stats.claimed, got as u64);
        self.running += got;
        if let Some(events) = listening(&self.shared.events) {
            for job in &jobs {
                events.send(JobEvent {
                    id: job.id,
                    queue: job.queue.clone(),
                    at: req.now,
                    kind: EventKind::Started {
                        attempt: job.attempt,
                        worker: self.shared.worker_id.clone(),
                    },
                });
            }
        }
        for job in jobs {
            let task = execute::run(
                self.shared.clone(),
                self.queue.clone(),
                job,
                self.done_tx.clone(),
            );
            tokio::spawn(task);
        }
        self.idle_until = if got < req.limit {
            let next = match next_due {
                Some(next) => next,
                None => self.next_due(req.now).await,
            };
            Some(self.idle_deadline(req.now, next))
        } else {
            None
        };
    }

    /// When the queue's next job is due, asked of the backend.
    async fn next_due(&self, now: Timestamp) -> Option<Timestamp> {
        match self.shared.backend.next_due(&self.queue.name, now).await {
            Ok(next) => next,
            Err(e) => {
                tracing::warn!(error = %e, queue = %self.queue.name, "next_due failed; polling");
                None
            }
        }
    }

    /// When to look again if no wake-up comes: the next due job or the poll.
    fn idle_deadline(&self, now: Timestamp, next: Option<Timestamp>) -> Timestamp {
        let poll = now + self.shared.poll_interval;
        next.map_or(poll, |t| t.min(poll)).max(now + MIN_IDLE)
    }
}

/// The event an applied acknowledgement tells, if any (a refused one tells
/// nothing: the job's lease had lapsed, and whoever holds it now tells).
fn ended(
    ack: &Ack,
    attempt: u32,
    cause: Option<WaitCause>,
    outcome: &AckOutcome,
    at: Timestamp,
) -> Option<EventKind> {
    let AckOutcome::Applied(state) = outcome else {
        return None;
    };
    Some(match (state, &ack.action) {
        (JobState::Completed, AckAction::Complete { output }) => EventKind::Completed {
            attempt,
            output: output.clone(),
        },
        (JobState::Completed, _) => EventKind::Completed {
            attempt,
            output: None,
        },
        (JobState::Cancelled, _) => EventKind::Cancelled,
        (JobState::Dead, AckAction::Kill { error } | AckAction::Retry { error, .. }) => {
            EventKind::Dead {
                attempt,
                error: error.clone(),
            }
        }
        (JobState::Dead, _) => EventKind::Dead {
            attempt,
            error: String::new(),
        },
        (_, AckAction::Retry { run_at, error }) => EventKind::Retried {
            attempt,
            error: error.clone(),
            run_at: *run_at,
        },
        (_, AckAction::Defer { run_at, reason }) => EventKind::Deferred {
            reason: Deferral::Wait {
                cause: cause.unwrap_or(WaitCause::Other),
                reason: reason.clone(),
            },
            run_at: *run_at,
        },
        (_, AckAction::Continue { run_at, step }) => EventKind::Deferred {
            reason: Deferral::Step { step: step.clone() },
            run_at: *run_at,
        },
        (_, AckAction::Release) => EventKind::Deferred {
            reason: Deferral::Released,
            run_at: at,
        },
        // A completion the store did not record as completed, or a kill
        // it did not record as dead: the state says what happened.
        (_, AckAction::Complete { .. } | AckAction::Kill { .. }) => return None,
    })
}
