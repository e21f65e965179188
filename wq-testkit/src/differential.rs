//! Differential tests: a backend against the reference, the memory backend.
//!
//! Random sequences of store calls run on both stores at once, on one
//! manual clock: enqueues (groups, delays, time chaining, priorities,
//! idempotency keys, batches, sessions) into a queue whose groups continue
//! past a dead head, one that holds them (and spaces a group's jobs by a
//! gap) and one that keeps no finished job; claims; every kind of
//! acknowledgement, and the last acknowledgement sent again; lease
//! extensions; clock jumps; rescues; cancels; retries and purges of dead
//! jobs; pruning; promotion; session limits (max running, rate), pauses and
//! resumes. After every step:
//!
//! - each call answered the same on both (outcomes, claimed ids, counts of
//!   what was rescued, pruned, promoted, retried or purged);
//! - every job, every queue's counts, sessions and next due time, and every
//!   job's position agree;
//! - both backends' [`Audit`] finds nothing wrong in any queue;
//! - an acknowledgement sent again with its token answers `Applied` with the
//!   job's state now, until the job is claimed again.
//!
//! Fencing tokens and sequence numbers are compared by their order only,
//! since backends number them differently. A failing case shrinks to a
//! short list of [`Op`]s, printed with the step that disagreed.
//!
//! Expanded into a test by [`differential_tests!`](crate::differential_tests).

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use wq_core::{
    Ack, AckAction, AckOutcome, Admin, Admissions as _, Allowance, Audit, Backend, ClaimRequest,
    Clock, DeadJobs, Enqueued, GroupKey, Job, JobId, JobState, LeaseRef, ListQuery, ManualClock,
    NewJob, OnDead, PauseChange, Payload, QueueConfig, QueueName, Rate, RescueReport, Retention,
    RunAt, Scheduler, SessionKey, SessionLimits, Sessions, Store, StoreError, Timestamp,
};
use wq_memory::MemoryStore;

use crate::harness::{Failure, TestBackend, run_cases, with_backend, within};

/// A queue whose groups continue past a dead head, one whose groups wait
/// for an operator and start 2 s apart, and one that drops finished jobs
/// at once.
const QUEUES: [&str; 3] = ["cont", "hold", "zero"];

/// How long a claim leases its jobs, and an extension extends them.
const LEASE: Duration = Duration::from_secs(5);

/// What an [`Op::Ack`] does with the job.
#[derive(Clone, Debug)]
pub enum Act {
    /// Complete it.
    Complete,
    /// Retry it this many seconds from now.
    Retry(u8),
    /// Defer it this many seconds, giving the attempt back.
    Defer(u8),
    /// Kill it.
    Kill,
    /// Release it untouched.
    Release,
    /// Continue it at step `s{step}` this many seconds from now, giving the
    /// attempt back.
    Continue {
        /// Seconds.
        secs: u8,
        /// Which step name.
        step: u8,
    },
}

/// One step of a differential run, applied to both stores.
#[derive(Clone, Debug)]
pub enum Op {
    /// Enqueue a batch of `batch` jobs into queue `queue`.
    Enqueue {
        /// Index into the three queues (`cont`, `hold`, `zero`).
        queue: usize,
        /// Group `g{group}`, or none.
        group: Option<u8>,
        /// Seconds of delay, or of spacing when chained.
        delay: u8,
        /// Chained after the group's last job (grouped jobs only).
        chained: bool,
        /// Priority.
        priority: i8,
        /// Idempotency keys `k{key}`, `k{key + 1}`, … one per job, or none.
        key: Option<u8>,
        /// Jobs in the batch.
        batch: u8,
        /// Session `s{session}`, or none.
        session: Option<u8>,
    },
    /// Set the limits of session `s{session}` of queue `queue`.
    Limit {
        /// Index into the three queues.
        queue: usize,
        /// Which session.
        session: u8,
        /// Most running, or no limit.
        max_running: Option<u8>,
        /// One start per this many seconds, or no rate.
        spacing: Option<u8>,
    },
    /// Change the pause of session `s{session}` of queue `queue`.
    PauseSession {
        /// Index into the three queues.
        queue: usize,
        /// Which session.
        session: u8,
        /// Which change (0 to 7: pause, pause unless paused, resume, resume
        /// if; each for reason `a` or `b`).
        change: u8,
    },
    /// Set (`new` per 10 s) or lift the allowance of new groups of
    /// session `s{session}` of queue `queue`, or hold its admissions for
    /// `hold` seconds.
    Allow {
        /// Index into the three queues.
        queue: usize,
        /// Which session.
        session: u8,
        /// New groups per 10 s, or none.
        new: Option<u8>,
        /// Seconds to hold admissions from now, instead.
        hold: Option<u8>,
    },
    /// Admit session `s{session}` of queue `queue` to group `g{group}` now.
    Admit {
        /// Index into the three queues.
        queue: usize,
        /// Which session.
        session: u8,
        /// Which group.
        group: u8,
    },
    /// Claim up to `limit` jobs of queue `queue`.
    Claim {
        /// Index into the three queues.
        queue: usize,
        /// Most jobs.
        limit: u8,
    },
    /// Acknowledge one held job (`pick` chooses which) and stop holding it.
    Ack {
        /// Which held job, modulo how many are held.
        pick: u8,
        /// What to do with it.
        act: Act,
    },
    /// Send the last acknowledgement again, with its token: a reply that was
    /// lost.
    RepeatAck,
    /// Extend one held lease (`pick` chooses which).
    Extend {
        /// Which held job, modulo how many are held.
        pick: u8,
    },
    /// Move the clock forward.
    Advance {
        /// Seconds.
        secs: u8,
    },
    /// Rescue lapsed leases.
    Rescue,
    /// Cancel an enqueued job (`pick` chooses which).
    Cancel {
        /// Which job, modulo how many were created.
        pick: u8,
    },
    /// Retry one dead job (`pick` chooses which), or all of the `hold` queue.
    RetryDead {
        /// Which job, modulo how many were created; `None` for all.
        pick: Option<u8>,
    },
    /// Purge one dead job (`pick` chooses which), or all of the `hold` queue.
    PurgeDead {
        /// Which job, modulo how many were created; `None` for all.
        pick: Option<u8>,
    },
    /// Prune finished jobs past their retention.
    Prune,
    /// Promote due scheduled jobs of queue `queue`.
    Promote {
        /// Index into the three queues.
        queue: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let act = prop_oneof![
        3 => Just(Act::Complete),
        2 => (0u8..4).prop_map(Act::Retry),
        1 => (0u8..3).prop_map(Act::Defer),
        1 => Just(Act::Kill),
        1 => Just(Act::Release),
        1 => (0u8..3, 0u8..3).prop_map(|(secs, step)| Act::Continue { secs, step }),
    ];
    prop_oneof![
        5 => (0usize..3, option::weighted(0.8, 0u8..3), 0u8..3, any::<bool>(), -1i8..2,
              option::weighted(0.3, 0u8..4), 1u8..4, option::weighted(0.4, 0u8..2))
            .prop_map(|(queue, group, delay, chained, priority, key, batch, session)| {
                Op::Enqueue { queue, group, delay, chained, priority, key, batch, session }
            }),
        1 => (0usize..3, 0u8..2, option::of(1u8..3), option::of(1u8..4))
            .prop_map(|(queue, session, max_running, spacing)| Op::Limit {
                queue, session, max_running, spacing,
            }),
        1 => (0usize..3, 0u8..2, 0u8..8)
            .prop_map(|(queue, session, change)| Op::PauseSession { queue, session, change }),
        1 => (0usize..3, 0u8..2, option::of(1u8..3), option::weighted(0.2, 1u8..15))
            .prop_map(|(queue, session, new, hold)| Op::Allow { queue, session, new, hold }),
        2 => (0usize..3, 0u8..2, 0u8..5)
            .prop_map(|(queue, session, group)| Op::Admit { queue, session, group }),
        4 => (0usize..3, 1u8..4).prop_map(|(queue, limit)| Op::Claim { queue, limit }),
        5 => (any::<u8>(), act).prop_map(|(pick, act)| Op::Ack { pick, act }),
        2 => Just(Op::RepeatAck),
        1 => any::<u8>().prop_map(|pick| Op::Extend { pick }),
        2 => (1u8..8).prop_map(|secs| Op::Advance { secs }),
        1 => Just(Op::Rescue),
        1 => any::<u8>().prop_map(|pick| Op::Cancel { pick }),
        1 => option::of(any::<u8>()).prop_map(|pick| Op::RetryDead { pick }),
        1 => option::of(any::<u8>()).prop_map(|pick| Op::PurgeDead { pick }),
        1 => Just(Op::Prune),
        1 => (0usize..3).prop_map(|queue| Op::Promote { queue }),
    ]
}

/// Sequences of up to 50 steps.
pub fn ops() -> impl Strategy<Value = Vec<Op>> {
    vec(op(), 1..50)
}

/// Shrunk sequences on which a backend once disagreed with the memory
/// backend, replayed on every backend so that none of them comes back.
pub fn regressions() -> Vec<(&'static str, Vec<Op>)> {
    let enqueue = |queue, group, priority, delay| Op::Enqueue {
        queue,
        group,
        delay,
        chained: false,
        priority,
        key: None,
        batch: 1,
        session: None,
    };
    let in_session = |queue, group, delay| Op::Enqueue {
        queue,
        group,
        delay,
        chained: false,
        priority: 0,
        key: None,
        batch: 1,
        session: Some(1),
    };
    vec![
        (
            "a session whose rate came due while it had no due head starts \
             the head promoted when it comes due (Postgres opened the rate \
             only for a session already waiting on it, one claim late)",
            vec![
                Op::Limit {
                    queue: 1,
                    session: 1,
                    max_running: None,
                    spacing: Some(1),
                },
                in_session(1, Some(0), 0),
                enqueue(0, None, 0, 0),
                Op::Claim { queue: 1, limit: 1 },
                in_session(1, None, 1),
                Op::Advance { secs: 1 },
                enqueue(0, None, 0, 0),
                Op::Claim { queue: 1, limit: 1 },
            ],
        ),
        (
            "a claim hands out its jobs in the order it picked them (Postgres \
             returned them in the order its update met them)",
            vec![
                enqueue(1, None, 0, 0),
                enqueue(0, None, 0, 0),
                enqueue(0, Some(0), -1, 0),
                enqueue(0, None, 0, 1),
                Op::Claim { queue: 0, limit: 2 },
            ],
        ),
        (
            "a retried dead job's killing acknowledgement, sent again, is stale \
             (Redis answered it as applied, the job being available)",
            vec![
                enqueue(0, Some(0), 0, 0),
                Op::Claim { queue: 0, limit: 1 },
                Op::Ack {
                    pick: 0,
                    act: Act::Kill,
                },
                Op::RetryDead { pick: Some(0) },
                Op::RepeatAck,
            ],
        ),
    ]
}

/// Replays every [`regressions`] sequence on fresh backends from `t`; `Err`
/// names each that disagreed.
pub async fn replay_regressions<T: TestBackend>(t: &T) -> Result<(), Failure> {
    let mut failed = Vec::new();
    for (what, ops) in regressions() {
        if let Err(e) = replay(t, &ops).await {
            failed.push(format!("{what}: {e}"));
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        fail(failed.join("\n"))
    }
}

/// Runs `cases` random cases (overridden by `WQ_PROPTEST_CASES`), each on a
/// fresh backend from `t` and a fresh memory store; `Err` holds the shrunk
/// sequence and where the two disagreed.
pub fn run<T: TestBackend>(t: &T, cases: u32) -> Result<(), String> {
    run_cases(
        ops(),
        cases,
        2_000,
        |ops| async move { replay(t, &ops).await },
    )
}

/// Runs the differential tests and panics with the shrunk failure.
pub fn check<T: TestBackend>(t: &T, cases: u32) {
    if let Err(e) = run(t, cases) {
        panic!("the backend and the memory backend disagree: {e}");
    }
}

/// Runs one given sequence on a fresh backend from `t` and a fresh memory
/// store: a shrunk failure kept as a regression test.
pub async fn replay<T: TestBackend>(t: &T, ops: &[Op]) -> Result<(), Failure> {
    with_backend(t, |tested| run_case(tested, ops)).await
}

async fn run_case<B: Backend>(tested: B, ops: &[Op]) -> Result<(), Failure> {
    let mut pair = Pair::new(tested).await?;
    for (i, op) in ops.iter().enumerate() {
        within(&format!("step {i} {op:?}"), pair.step(op))
            .await?
            .map_err(|e| Failure(format!("step {i} {op:?}: {e}")))?;
        // Listings are many queries: every fourth step and the last.
        let listings = i % 4 == 3 || i + 1 == ops.len();
        within(&format!("the checks after step {i}"), pair.agree(listings))
            .await?
            .map_err(|e| Failure(format!("after step {i} {op:?}: {e}")))?;
    }
    Ok(())
}

/// A claimed job and the token each store leased it under.
struct Held {
    id: JobId,
    reference: u64,
    tested: u64,
}

/// The last acknowledgement sent, to send again.
struct LastAck {
    held: Held,
    action: AckAction,
    /// Whether a claim has handed the job out since: its token is then stale.
    claimed_since: bool,
}

/// The two stores and what the run holds.
struct Pair<B> {
    reference: MemoryStore,
    tested: B,
    /// The tested backend's type, for messages.
    name: &'static str,
    clock: Arc<ManualClock>,
    /// Every job created, in enqueue order.
    ids: Vec<JobId>,
    held: Vec<Held>,
    last_ack: Option<LastAck>,
}

fn fail<T>(msg: String) -> Result<T, Failure> {
    Err(Failure(msg))
}

/// An outcome as text, so that results of different types compare; a
/// backend error fails at once, since the reference never has one.
fn outcome_text<T: Debug>(r: &Result<T, StoreError>) -> Result<String, Failure> {
    match r {
        Ok(v) => Ok(format!("Ok({v:?})")),
        Err(StoreError::Backend(e)) => fail(format!("backend error: {e}")),
        Err(e) => Ok(format!("Err({e})")),
    }
}

/// Every job as text, in id order, with its sequence number replaced by its
/// rank among its queue's jobs and its token dropped.
fn normalize(mut jobs: Vec<Job>) -> Vec<String> {
    let mut ranks: HashMap<(QueueName, u64), usize> = HashMap::new();
    for q in QUEUES {
        let mut seqs: Vec<u64> = jobs
            .iter()
            .filter(|j| j.queue.as_str() == q)
            .map(|j| j.seq)
            .collect();
        seqs.sort_unstable();
        for (rank, s) in seqs.into_iter().enumerate() {
            ranks.insert((q.into(), s), rank);
        }
    }
    jobs.sort_by_key(|j| j.id);
    jobs.into_iter()
        .map(|mut j| {
            let rank = ranks
                .get(&(j.queue.clone(), j.seq))
                .copied()
                .unwrap_or(usize::MAX);
            j.seq = rank as u64;
            if let Some(l) = &mut j.lease {
                l.token = 0;
            }
            format!("{j:?}")
        })
        .collect()
}

/// Pause change `n` (0 to 7): each of the four kinds, for reason `a` or `b`.
fn pause_change(n: u8) -> PauseChange {
    let reason = if n.is_multiple_of(2) { "a" } else { "b" }.to_owned();
    match n / 2 {
        0 => PauseChange::Pause(reason),
        1 => PauseChange::PauseUnlessPaused(reason),
        2 => PauseChange::Resume,
        _ => PauseChange::ResumeIf(reason),
    }
}

/// Session `s{n}`.
fn session_key(n: u8) -> SessionKey {
    format!("s{n}").into()
}

/// Whether each enqueued job was created, or the error.
fn created(r: Result<Vec<Enqueued>, StoreError>) -> Result<String, Failure> {
    outcome_text(&r.map(|v| v.into_iter().map(|e| e.created).collect::<Vec<_>>()))
}

/// What a cancel answers that both stores must agree on: not the sequence
/// number or the token.
fn cancelled(r: Result<Job, StoreError>) -> Result<String, Failure> {
    outcome_text(&r.map(|j| {
        (
            j.id,
            j.state,
            j.cancel_requested,
            j.updated_at,
            j.finished_at,
            j.attempt,
        )
    }))
}

impl<B: Backend> Pair<B> {
    async fn new(tested: B) -> Result<Self, Failure> {
        let type_name = std::any::type_name::<B>();
        let pair = Self {
            reference: MemoryStore::new(),
            tested,
            name: type_name.rsplit("::").next().unwrap_or(type_name),
            clock: ManualClock::starting_now(),
            ids: Vec::new(),
            held: Vec::new(),
            last_ack: None,
        };
        let keep = Duration::from_secs(10);
        let settings = [
            (OnDead::Continue, keep, Duration::ZERO),
            (OnDead::Hold, keep, Duration::from_secs(2)),
            (OnDead::Continue, Duration::ZERO, Duration::ZERO),
        ];
        for (q, (on_dead, completed, gap)) in QUEUES.iter().zip(settings) {
            let config = QueueConfig::new(*q)
                .max_attempts(2)
                .on_dead(on_dead)
                .group_gap(gap)
                .retention(Retention {
                    completed,
                    dead: Duration::from_secs(20),
                });
            pair.reference.declare_queue(&config).await?;
            pair.tested.declare_queue(&config).await?;
        }
        Ok(pair)
    }

    fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Fails unless both answers read the same.
    fn same<M: Debug, T: Debug>(&self, what: &str, m: M, t: T) -> Result<(), Failure> {
        let (m, t) = (format!("{m:?}"), format!("{t:?}"));
        if m != t {
            return fail(format!("{what}: memory {m}, {} {t}", self.name));
        }
        Ok(())
    }

    fn pick(&self, pick: u8) -> Option<JobId> {
        (!self.ids.is_empty()).then(|| self.ids[usize::from(pick) % self.ids.len()])
    }

    async fn step(&mut self, op: &Op) -> Result<(), Failure> {
        let now = self.now();
        match op {
            Op::Enqueue {
                queue,
                group,
                delay,
                chained,
                priority,
                key,
                batch,
                session,
            } => {
                let delay = Duration::from_secs(u64::from(*delay));
                let jobs: Vec<NewJob> = (0..*batch)
                    .map(|i| NewJob {
                        id: JobId::new(),
                        queue: QUEUES[*queue].into(),
                        // Two tenants, so that listing by tenant is compared.
                        tenant: Some(format!("t{}", (self.ids.len() + usize::from(i)) % 2).into()),
                        group: group.map(|g| format!("g{g}").into()),
                        session: session.map(|s| format!("s{s}").into()),
                        priority: i16::from(*priority),
                        run_at: if *chained && group.is_some() {
                            RunAt::Chained { offset: delay }
                        } else {
                            RunAt::At(now + delay)
                        },
                        max_attempts: 2,
                        idempotency_key: key.map(|k| format!("k{}", k + i).into()),
                        payload: Payload::from_trusted(format!(
                            "{}",
                            self.ids.len() + usize::from(i)
                        )),
                    })
                    .collect();
                let m = self.reference.enqueue(jobs.clone(), now).await;
                let t = self.tested.enqueue(jobs, now).await;
                if let Ok(stored) = &m {
                    self.ids
                        .extend(stored.iter().filter(|e| e.created).map(|e| e.job.id));
                }
                // A batch's jobs are compared in the store after the step,
                // where their sequence numbers have ranks to compare by.
                self.same("enqueue", created(m)?, created(t)?)
            }
            Op::Allow {
                queue,
                session,
                new,
                hold,
            } => {
                let (q, s) = (QueueName::from(QUEUES[*queue]), session_key(*session));
                let (m, t) = match hold {
                    Some(secs) => {
                        let until = now + Duration::from_secs(u64::from(*secs));
                        (
                            self.reference.hold_admissions(&q, &s, until).await,
                            self.tested.hold_admissions(&q, &s, until).await,
                        )
                    }
                    None => {
                        let allowance =
                            new.map(|n| Allowance::new(u32::from(n), Duration::from_secs(10)));
                        (
                            self.reference
                                .set_allowance(&q, &s, allowance.as_ref())
                                .await,
                            self.tested.set_allowance(&q, &s, allowance.as_ref()).await,
                        )
                    }
                };
                self.same("allowance", outcome_text(&m)?, outcome_text(&t)?)
            }
            Op::Admit {
                queue,
                session,
                group,
            } => {
                let (q, s) = (QueueName::from(QUEUES[*queue]), session_key(*session));
                let g = GroupKey::from(format!("g{group}").as_str());
                let m = self.reference.admit(&q, &s, &g, now).await;
                let t = self.tested.admit(&q, &s, &g, now).await;
                self.same("admission", outcome_text(&m)?, outcome_text(&t)?)
            }
            Op::Claim { queue, limit } => {
                let req =
                    ClaimRequest::new(QUEUES[*queue], usize::from(*limit), now, now + LEASE, "w");
                let m = self.reference.claim(&req).await?;
                let t = self.tested.claim(&req).await?;
                let ids = |v: &[Job]| v.iter().map(|j| j.id).collect::<Vec<_>>();
                self.same("claimed ids", ids(&m), ids(&t))?;
                let token = |j: &Job| j.lease.as_ref().map_or(0, |l| l.token);
                for (a, b) in m.iter().zip(&t) {
                    if let Some(last) = &mut self.last_ack
                        && last.held.id == a.id
                    {
                        last.claimed_since = true;
                    }
                    self.held.push(Held {
                        id: a.id,
                        reference: token(a),
                        tested: token(b),
                    });
                }
                Ok(())
            }
            Op::Ack { pick, act } => {
                if self.held.is_empty() {
                    return Ok(());
                }
                let held = self.held.remove(usize::from(*pick) % self.held.len());
                let later = |s: &u8| now + Duration::from_secs(u64::from(*s));
                let action = match act {
                    // Every other completion stores an output, which the
                    // stores must keep alike.
                    Act::Complete => AckAction::Complete {
                        output: (pick % 2 == 1)
                            .then(|| Payload::from_json(&pick))
                            .transpose()
                            .map_err(|e| Failure(e.to_string()))?,
                    },
                    Act::Retry(s) => AckAction::Retry {
                        run_at: later(s),
                        error: "retry".into(),
                    },
                    Act::Defer(s) => AckAction::Defer {
                        run_at: later(s),
                        reason: "defer".into(),
                    },
                    Act::Kill => AckAction::Kill {
                        error: "kill".into(),
                    },
                    Act::Release => AckAction::Release,
                    Act::Continue { secs, step } => AckAction::Continue {
                        run_at: later(secs),
                        step: format!("s{step}"),
                    },
                };
                let last = LastAck {
                    held,
                    action,
                    claimed_since: false,
                };
                let result = self.send(&last, now).await;
                self.last_ack = Some(last);
                result.map(drop)
            }
            Op::RepeatAck => {
                let Some(last) = &self.last_ack else {
                    return Ok(());
                };
                let outcome = self.send(last, now).await?;
                let id = last.held.id;
                match outcome {
                    AckOutcome::Applied(_) if last.claimed_since => fail(format!(
                        "an acknowledgement sent again after job {id} was claimed again \
                         answered {outcome:?}, not Stale"
                    )),
                    AckOutcome::Applied(state) => {
                        let now_in = self.reference.get(id).await?.map(|j| j.state);
                        if now_in != Some(state) {
                            return fail(format!(
                                "an acknowledgement sent again answered {outcome:?}, but job \
                                 {id} is {now_in:?}"
                            ));
                        }
                        Ok(())
                    }
                    _ => Ok(()),
                }
            }
            Op::Extend { pick } => {
                if self.held.is_empty() {
                    return Ok(());
                }
                let h = &self.held[usize::from(*pick) % self.held.len()];
                let until = now + LEASE;
                let lease = |token| [LeaseRef { id: h.id, token }];
                let m = self
                    .reference
                    .extend(&lease(h.reference), until, now)
                    .await?;
                let t = self.tested.extend(&lease(h.tested), until, now).await?;
                self.same("extend", m, t)
            }
            Op::Advance { secs } => {
                self.clock.advance(Duration::from_secs(u64::from(*secs)));
                Ok(())
            }
            Op::Rescue => {
                // Backends take lapsed jobs in orders of their own.
                let by_id = |mut r: RescueReport| {
                    r.jobs.sort_by_key(|j| j.id);
                    r
                };
                let m = by_id(self.reference.rescue(now, 1_000).await?);
                let t = by_id(self.tested.rescue(now, 1_000).await?);
                self.same("rescue", m, t)
            }
            Op::Cancel { pick } => {
                let Some(id) = self.pick(*pick) else {
                    return Ok(());
                };
                let m = self.reference.cancel(id, now).await;
                let t = self.tested.cancel(id, now).await;
                self.same("cancel", cancelled(m)?, cancelled(t)?)
            }
            Op::RetryDead { pick } | Op::PurgeDead { pick } => {
                let which = match pick {
                    Some(p) => match self.pick(*p) {
                        Some(id) => DeadJobs::Ids(vec![id]),
                        None => return Ok(()),
                    },
                    None => DeadJobs::All(QUEUES[1].into()),
                };
                let (m, t) = if matches!(op, Op::RetryDead { .. }) {
                    (
                        self.reference.retry_dead(&which, now).await,
                        self.tested.retry_dead(&which, now).await,
                    )
                } else {
                    (
                        self.reference.purge_dead(&which, now).await,
                        self.tested.purge_dead(&which, now).await,
                    )
                };
                self.same("dead jobs", outcome_text(&m)?, outcome_text(&t)?)
            }
            Op::Prune => {
                let m = self.reference.prune(now, 1_000).await?;
                let t = self.tested.prune(now, 1_000).await?;
                self.same("prune", m, t)
            }
            Op::Promote { queue } => {
                let q = QueueName::from(QUEUES[*queue]);
                let m = self.reference.promote_due(&q, now).await?;
                let t = self.tested.promote_due(&q, now).await?;
                self.same("promote", m, t)
            }
            Op::Limit {
                queue,
                session,
                max_running,
                spacing,
            } => {
                let mut limits = SessionLimits::new();
                if let Some(n) = max_running {
                    limits = limits.max_running(u32::from(*n));
                }
                if let Some(s) = spacing {
                    let per = Duration::from_secs(u64::from(*s));
                    limits = limits.rate(Rate::new(1, per));
                }
                let (q, s) = (QueueName::from(QUEUES[*queue]), session_key(*session));
                let m = self.reference.set_session_limits(&q, &s, &limits).await;
                let t = self.tested.set_session_limits(&q, &s, &limits).await;
                self.same("limits", outcome_text(&m)?, outcome_text(&t)?)
            }
            Op::PauseSession {
                queue,
                session,
                change,
            } => {
                let (q, s) = (QueueName::from(QUEUES[*queue]), session_key(*session));
                let change = pause_change(*change);
                let m = self.reference.set_session_paused(&q, &s, &change).await;
                let t = self.tested.set_session_paused(&q, &s, &change).await;
                self.same("pause session", outcome_text(&m)?, outcome_text(&t)?)
            }
        }
    }

    /// Sends `last` to both stores, each under its own token; both must
    /// answer alike.
    async fn send(&self, last: &LastAck, now: Timestamp) -> Result<AckOutcome, Failure> {
        let ack = |token| Ack {
            id: last.held.id,
            token,
            action: last.action.clone(),
        };
        let m = self.reference.ack(&[ack(last.held.reference)], now).await?;
        let t = self.tested.ack(&[ack(last.held.tested)], now).await?;
        self.same("ack", &m, &t)?;
        match m.as_slice() {
            [outcome] => Ok(*outcome),
            _ => fail(format!("one acknowledgement answered {m:?}")),
        }
    }

    /// Listings by each filter agree, in small pages, so that each backend's
    /// indexes of groups, tenants, states and keys are compared as jobs come
    /// and go.
    async fn listings_agree(&self) -> Result<(), Failure> {
        let mut queries = vec![ListQuery::new().tenant("t1")];
        for q in QUEUES {
            queries.push(ListQuery::new().queue(q).tenant("t0"));
            queries.extend((0..4).map(|g| ListQuery::new().queue(q).group(format!("g{g}"))));
            queries
                .extend((0..4).map(|k| ListQuery::new().queue(q).idempotency_key(format!("k{k}"))));
            queries.extend(JobState::ALL.map(|st| ListQuery::new().queue(q).state(st)));
        }
        queries.extend(JobState::ALL.map(|st| ListQuery::new().state(st).tenant("t1")));
        for query in queries {
            self.same(
                &format!("listing {query:?}"),
                paged(&self.reference, &query).await?,
                paged(&self.tested, &query).await?,
            )?;
        }
        Ok(())
    }

    /// Every job, count, position and next due time (and with `listings`,
    /// every filtered listing) agrees, and neither
    /// store's audit finds anything wrong.
    async fn agree(&self, listings: bool) -> Result<(), Failure> {
        let all = ListQuery::new().limit(10_000);
        let m = normalize(self.reference.list(&all).await?);
        let t = normalize(self.tested.list(&all).await?);
        if m != t {
            let diff: Vec<_> = m.iter().zip(&t).filter(|(a, b)| a != b).take(2).collect();
            return fail(format!(
                "jobs differ ({} in memory, {} in {}): {diff:#?}",
                m.len(),
                t.len(),
                self.name
            ));
        }
        if listings {
            self.listings_agree().await?;
        }
        let now = self.now();
        for q in QUEUES {
            let q = QueueName::from(q);
            self.same(
                &format!("counts of {q}"),
                self.reference.counts(&q).await?,
                self.tested.counts(&q).await?,
            )?;
            self.same(
                &format!("sessions of {q}"),
                self.reference.list_sessions(&q, None, 100).await?,
                self.tested.list_sessions(&q, None, 100).await?,
            )?;
            self.same(
                &format!("next in line of {q}"),
                self.reference.next_in_line(&q, now).await?,
                self.tested.next_in_line(&q, now).await?,
            )?;
            self.same(
                &format!("next due of {q}"),
                self.reference.next_due(&q, now).await?,
                self.tested.next_due(&q, now).await?,
            )?;
            for (name, report) in [
                ("memory", self.reference.audit(&q, now, false).await?),
                (self.name, self.tested.audit(&q, now, false).await?),
            ] {
                if !report.is_clean() {
                    let found: Vec<String> =
                        report.anomalies.iter().map(ToString::to_string).collect();
                    return fail(format!("the audit of {name} found {found:?}"));
                }
            }
        }
        for id in &self.ids {
            self.same(
                &format!("position of {id}"),
                self.reference.position(*id).await?,
                self.tested.position(*id).await?,
            )?;
        }
        Ok(())
    }
}

/// Every id `query` lists, read in pages of three.
async fn paged<S: Admin>(store: &S, query: &ListQuery) -> Result<Vec<JobId>, Failure> {
    let mut page = query.clone().limit(3);
    let mut ids = Vec::new();
    loop {
        let got = store.list(&page).await?;
        let Some(last) = got.last() else {
            return Ok(ids);
        };
        page = page.after(last.id);
        ids.extend(got.iter().map(|j| j.id));
    }
}
