//! The Redis backend against the reference, the memory backend: random
//! sequences of store calls (enqueues with groups, delays, chaining,
//! priorities and keys into a `continue` and a `hold` queue; claims; every
//! kind of acknowledgement; extensions; clock jumps; rescues; cancels;
//! retries and purges of dead jobs; pruning; promotion) run on both, and
//! after every step the outcomes and every job, count, position and next
//! due time must agree. Tokens and sequence numbers are compared by their
//! order, since the backends number them differently.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use wq_core::{
    Ack, AckAction, ClaimRequest, Clock, DeadJobs, Job, JobId, LeaseRef, ListQuery, ManualClock,
    NewJob, OnDead, Payload, QueueConfig, QueueName, Retention, RunAt, Scheduler, Store,
    StoreError, Timestamp,
};
use wq_memory::MemoryStore;
use wq_redis::RedisStore;

/// A queue that lets groups continue past a dead head, one that holds
/// them, and one that drops finished jobs at once.
const QUEUES: [&str; 3] = ["cont", "hold", "zero"];

#[derive(Clone, Debug)]
enum Act {
    Complete,
    Retry(u8),
    Defer(u8),
    Kill,
    Release,
}

#[derive(Clone, Debug)]
enum Op {
    Enqueue {
        queue: usize,
        group: Option<u8>,
        delay: u8,
        chained: bool,
        priority: i8,
        key: Option<u8>,
        batch: u8,
    },
    Claim {
        queue: usize,
        limit: u8,
    },
    Ack {
        pick: u8,
        act: Act,
    },
    Extend {
        pick: u8,
    },
    Advance {
        secs: u8,
    },
    Rescue,
    Cancel {
        pick: u8,
    },
    RetryDead {
        pick: Option<u8>,
    },
    PurgeDead {
        pick: Option<u8>,
    },
    Prune,
    Promote {
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
    ];
    prop_oneof![
        5 => (0usize..3, proptest::option::weighted(0.8, 0u8..3), 0u8..3, any::<bool>(), -1i8..2,
              proptest::option::weighted(0.3, 0u8..4), 1u8..4)
            .prop_map(|(queue, group, delay, chained, priority, key, batch)| Op::Enqueue {
                queue, group, delay, chained, priority, key, batch,
            }),
        4 => (0usize..3, 1u8..4).prop_map(|(queue, limit)| Op::Claim { queue, limit }),
        5 => (any::<u8>(), act).prop_map(|(pick, act)| Op::Ack { pick, act }),
        1 => any::<u8>().prop_map(|pick| Op::Extend { pick }),
        2 => (1u8..8).prop_map(|secs| Op::Advance { secs }),
        1 => Just(Op::Rescue),
        1 => any::<u8>().prop_map(|pick| Op::Cancel { pick }),
        1 => proptest::option::of(any::<u8>()).prop_map(|pick| Op::RetryDead { pick }),
        1 => proptest::option::of(any::<u8>()).prop_map(|pick| Op::PurgeDead { pick }),
        1 => Just(Op::Prune),
        1 => (0usize..3).prop_map(|queue| Op::Promote { queue }),
    ]
}

/// A claimed job as each backend handed it out.
struct Held {
    id: JobId,
    mem: u64,
    red: u64,
}

struct Pair {
    mem: MemoryStore,
    red: RedisStore,
    clock: Arc<ManualClock>,
    ids: Vec<JobId>,
    held: Vec<Held>,
}

fn fail<T>(msg: String) -> Result<T, TestCaseError> {
    Err(TestCaseError::fail(msg))
}

fn err<E: std::fmt::Display>(e: E) -> TestCaseError {
    TestCaseError::fail(e.to_string())
}

/// Compares two results by their `Debug` text.
fn same<A: std::fmt::Debug, B: std::fmt::Debug>(
    what: &str,
    m: A,
    r: B,
) -> Result<(), TestCaseError> {
    let (m, r) = (format!("{m:?}"), format!("{r:?}"));
    if m != r {
        return fail(format!("{what}: memory {m}, redis {r}"));
    }
    Ok(())
}

/// A job with its sequence number replaced by its rank among its queue's
/// jobs, and its token dropped.
fn normalize(mut jobs: Vec<Job>) -> Vec<String> {
    let mut ranks: HashMap<(QueueName, u64), usize> = HashMap::new();
    for q in QUEUES {
        let mut seqs: Vec<u64> = jobs
            .iter()
            .filter(|j| j.queue.as_str() == q)
            .map(|j| j.seq)
            .collect();
        seqs.sort();
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

fn outcome_text<T: std::fmt::Debug>(r: &Result<T, StoreError>) -> String {
    match r {
        Ok(v) => format!("Ok({v:?})"),
        Err(StoreError::Backend(e)) => format!("backend error {e}"),
        Err(e) => format!("Err({e})"),
    }
}

impl Pair {
    fn now(&self) -> Timestamp {
        self.clock.now()
    }

    async fn both_declare(&self) -> Result<(), TestCaseError> {
        let keep = Duration::from_secs(10);
        let settings = [
            (OnDead::Continue, keep),
            (OnDead::Hold, keep),
            (OnDead::Continue, Duration::ZERO),
        ];
        for (q, (on_dead, completed)) in QUEUES.iter().zip(settings) {
            let config = QueueConfig::new(*q)
                .max_attempts(2)
                .on_dead(on_dead)
                .retention(Retention {
                    completed,
                    dead: Duration::from_secs(20),
                });
            self.mem.declare_queue(&config).await.map_err(err)?;
            self.red.declare_queue(&config).await.map_err(err)?;
        }
        Ok(())
    }

    fn pick(&self, pick: u8) -> Option<JobId> {
        (!self.ids.is_empty()).then(|| self.ids[usize::from(pick) % self.ids.len()])
    }

    async fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
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
            } => {
                let jobs: Vec<NewJob> = (0..*batch)
                    .map(|i| NewJob {
                        id: JobId::new(),
                        queue: QUEUES[*queue].into(),
                        tenant: None,
                        group: group.map(|g| format!("g{g}").into()),
                        priority: i16::from(*priority),
                        run_at: if *chained && group.is_some() {
                            RunAt::Chained {
                                offset: Duration::from_secs(u64::from(*delay)),
                            }
                        } else {
                            RunAt::At(now + Duration::from_secs(u64::from(*delay)))
                        },
                        max_attempts: 2,
                        idempotency_key: key.map(|k| format!("k{}", k + i).into()),
                        payload: Payload::from_trusted(format!(
                            "{}",
                            self.ids.len() + usize::from(i)
                        )),
                    })
                    .collect();
                let m = self.mem.enqueue(jobs.clone(), now).await;
                let r = self.red.enqueue(jobs, now).await;
                if let Ok(stored) = &m {
                    self.ids
                        .extend(stored.iter().filter(|e| e.created).map(|e| e.job.id));
                }
                let strip = |r: Result<Vec<wq_core::Enqueued>, StoreError>| {
                    r.map(|v| {
                        v.into_iter()
                            .map(|e| (e.created, e.job))
                            .collect::<Vec<_>>()
                    })
                    .map(|v| {
                        let (created, jobs): (Vec<bool>, Vec<Job>) = v.into_iter().unzip();
                        (created, normalize(jobs))
                    })
                };
                // Ranks within a returned batch differ from ranks in the store; compare states.
                same(
                    "enqueue",
                    outcome_text(&strip(m).map(|(c, _)| c)),
                    outcome_text(&strip(r).map(|(c, _)| c)),
                )
            }
            Op::Claim { queue, limit } => {
                let req = ClaimRequest::new(
                    QUEUES[*queue],
                    usize::from(*limit),
                    now,
                    now + Duration::from_secs(5),
                    "w",
                );
                let m = self.mem.claim(&req).await.map_err(err)?;
                let r = self.red.claim(&req).await.map_err(err)?;
                let ids = |v: &[Job]| v.iter().map(|j| j.id).collect::<Vec<_>>();
                same("claimed ids", ids(&m), ids(&r))?;
                for (a, b) in m.iter().zip(&r) {
                    let tok = |j: &Job| j.lease.as_ref().map_or(0, |l| l.token);
                    self.held.push(Held {
                        id: a.id,
                        mem: tok(a),
                        red: tok(b),
                    });
                }
                Ok(())
            }
            Op::Ack { pick, act } => {
                if self.held.is_empty() {
                    return Ok(());
                }
                let h = self.held.remove(usize::from(*pick) % self.held.len());
                let later = |s: &u8| now + Duration::from_secs(u64::from(*s));
                let action = match act {
                    Act::Complete => AckAction::Complete,
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
                };
                let ack = |token| Ack {
                    id: h.id,
                    token,
                    action: action.clone(),
                };
                let m = self.mem.ack(&[ack(h.mem)], now).await.map_err(err)?;
                let r = self.red.ack(&[ack(h.red)], now).await.map_err(err)?;
                same("ack", m, r)
            }
            Op::Extend { pick } => {
                if self.held.is_empty() {
                    return Ok(());
                }
                let h = &self.held[usize::from(*pick) % self.held.len()];
                let until = now + Duration::from_secs(5);
                let m = self
                    .mem
                    .extend(
                        &[LeaseRef {
                            id: h.id,
                            token: h.mem,
                        }],
                        until,
                        now,
                    )
                    .await
                    .map_err(err)?;
                let r = self
                    .red
                    .extend(
                        &[LeaseRef {
                            id: h.id,
                            token: h.red,
                        }],
                        until,
                        now,
                    )
                    .await
                    .map_err(err)?;
                same("extend", m, r)
            }
            Op::Advance { secs } => {
                self.clock.advance(Duration::from_secs(u64::from(*secs)));
                Ok(())
            }
            Op::Rescue => {
                let m = self.mem.rescue(now, 1_000).await.map_err(err)?;
                let r = self.red.rescue(now, 1_000).await.map_err(err)?;
                same("rescue", m, r)
            }
            Op::Cancel { pick } => {
                let Some(id) = self.pick(*pick) else {
                    return Ok(());
                };
                let m = self.mem.cancel(id, now).await;
                let r = self.red.cancel(id, now).await;
                let norm = |r: Result<Job, StoreError>| {
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
                };
                same("cancel", norm(m), norm(r))
            }
            Op::RetryDead { pick } | Op::PurgeDead { pick } => {
                let which = match pick {
                    Some(p) => match self.pick(*p) {
                        Some(id) => DeadJobs::Ids(vec![id]),
                        None => return Ok(()),
                    },
                    None => DeadJobs::All(QUEUES[1].into()),
                };
                let (m, r) = if matches!(op, Op::RetryDead { .. }) {
                    (
                        self.mem.retry_dead(&which, now).await,
                        self.red.retry_dead(&which, now).await,
                    )
                } else {
                    (
                        self.mem.purge_dead(&which, now).await,
                        self.red.purge_dead(&which, now).await,
                    )
                };
                same("dead jobs", outcome_text(&m), outcome_text(&r))
            }
            Op::Prune => {
                let m = self.mem.prune(now, 1_000).await.map_err(err)?;
                let r = self.red.prune(now, 1_000).await.map_err(err)?;
                same("prune", m, r)
            }
            Op::Promote { queue } => {
                let q = QueueName::from(QUEUES[*queue]);
                let m = self.mem.promote_due(&q, now).await.map_err(err)?;
                let r = self.red.promote_due(&q, now).await.map_err(err)?;
                same("promote", m, r)
            }
        }
    }

    /// Every job, count, position and next due time agrees.
    async fn agree(&self) -> Result<(), TestCaseError> {
        let all = ListQuery::new().limit(10_000);
        let m = normalize(self.mem.list(&all).await.map_err(err)?);
        let r = normalize(self.red.list(&all).await.map_err(err)?);
        if m != r {
            let diff: Vec<_> = m.iter().zip(&r).filter(|(a, b)| a != b).take(2).collect();
            return fail(format!(
                "jobs differ ({} vs {}): {diff:#?}",
                m.len(),
                r.len()
            ));
        }
        let now = self.now();
        for q in QUEUES {
            let q = QueueName::from(q);
            same(
                "counts",
                self.mem.counts(&q).await.map_err(err)?,
                self.red.counts(&q).await.map_err(err)?,
            )?;
            same(
                "next_due",
                self.mem.next_due(&q, now).await.map_err(err)?,
                self.red.next_due(&q, now).await.map_err(err)?,
            )?;
        }
        for id in &self.ids {
            let m = self.mem.position(*id).await.map_err(err)?;
            let r = self.red.position(*id).await.map_err(err)?;
            same(&format!("position of {id}"), m, r)?;
        }
        Ok(())
    }
}

async fn run_case(ops: &[Op]) -> Result<(), TestCaseError> {
    let red = common::store("diff").await.map_err(TestCaseError::fail)?;
    let mut pair = Pair {
        mem: MemoryStore::new(),
        red: red.clone(),
        clock: ManualClock::starting_now(),
        ids: Vec::new(),
        held: Vec::new(),
    };
    let result = async {
        pair.both_declare().await?;
        for (i, op) in ops.iter().enumerate() {
            pair.step(op)
                .await
                .map_err(|e| TestCaseError::fail(format!("step {i} {op:?}: {e}")))?;
            pair.agree()
                .await
                .map_err(|e| TestCaseError::fail(format!("after step {i} {op:?}: {e}")))?;
        }
        Ok(())
    }
    .await;
    let _ = red.clear().await;
    red.close();
    result
}

#[test]
fn redis_behaves_like_memory() {
    let cases = std::env::var("WQ_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("no runtime: {e}"),
    };
    let config = Config {
        cases,
        max_shrink_iters: 2_000,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let result = runner.run(&proptest::collection::vec(op(), 1..50), |ops| {
        rt.block_on(run_case(&ops))
    });
    if let Err(e) = result {
        panic!("the backends disagree: {e}");
    }
}
