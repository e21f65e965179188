//! The worker's path: claim, acknowledge (with a claim in the same script
//! call), extend leases, rescue lapsed ones.

use redis::{ScriptInvocation, Value};
use wq_core::{
    Ack, AckAction, AckOutcome, AckedAndClaimed, ClaimRequest, ExtendOutcome, Job, JobId, LeaseRef,
    Payload, QueueName, RescueReport, StoreError, Timestamp,
};

use crate::error::reply;
use crate::reply::{array, due_time, job_id, jobs, state, text};
use crate::scripts::SCRIPTS;
use crate::store::RedisStore;

impl RedisStore {
    pub(crate) async fn claim_jobs(&self, req: &ClaimRequest) -> Result<Vec<Job>, StoreError> {
        let rest = self
            .write(&SCRIPTS.claim, &req.queue, req.now, |call| {
                claim_args(call, req);
            })
            .await?;
        let [claimed] = rest_tuple(rest)?;
        let claimed = jobs(&req.queue, claimed)?;
        self.remember(&claimed);
        Ok(claimed)
    }

    pub(crate) async fn ack_jobs(
        &self,
        acks: &[Ack],
        now: Timestamp,
    ) -> Result<Vec<AckOutcome>, StoreError> {
        let ids: Vec<JobId> = acks.iter().map(|a| a.id).collect();
        let queues = self.locate(&ids).await?;
        let mut out = vec![AckOutcome::NotFound; acks.len()];
        for (queue, idx) in by_queue(&queues) {
            let batch: Vec<&Ack> = idx.iter().map(|&i| &acks[i]).collect();
            let rest = self
                .write(&SCRIPTS.ack, &queue, now, |call| ack_args(call, &batch))
                .await?;
            let [outcomes] = rest_tuple(rest)?;
            for (&i, o) in idx.iter().zip(array(outcomes)?) {
                out[i] = outcome(&o)?;
            }
        }
        self.forget(ids);
        Ok(out)
    }

    /// Acknowledges and claims in one script call when every acknowledged
    /// job belongs to the claimed queue (the worker's case), else in two.
    /// A job no queue holds goes with them: the script answers `notfound`
    /// for it as the lookup would, unless the call repeats a turn, whose
    /// remembered outcomes then stand for jobs deleted since (a queue that
    /// keeps no finished jobs).
    pub(crate) async fn ack_then_claim(
        &self,
        acks: &[Ack],
        claim: Option<&ClaimRequest>,
        now: Timestamp,
    ) -> Result<AckedAndClaimed, StoreError> {
        let ids: Vec<JobId> = acks.iter().map(|a| a.id).collect();
        let queues = self.locate(&ids).await?;
        let Some(req) = claim.filter(|r| {
            queues
                .iter()
                .all(|q| q.as_ref().is_none_or(|q| *q == r.queue))
        }) else {
            let acks = if acks.is_empty() {
                Vec::new()
            } else {
                self.ack_jobs(acks, now).await?
            };
            let jobs = match claim {
                Some(req) => self.claim_jobs(req).await?,
                None => Vec::new(),
            };
            return Ok(AckedAndClaimed {
                acks,
                jobs,
                next_due: None,
            });
        };
        let batch: Vec<&Ack> = acks.iter().collect();
        let rest = self
            .write(&SCRIPTS.ack_claim, &req.queue, now, |call| {
                ack_args(call, &batch);
                claim_args(call, req);
            })
            .await?;
        let [outcomes, claimed, due] = rest_tuple(rest)?;
        let outcomes = array(outcomes)?
            .iter()
            .map(outcome)
            .collect::<Result<Vec<_>, _>>()?;
        self.forget(ids);
        let claimed = jobs(&req.queue, claimed)?;
        self.remember(&claimed);
        Ok(AckedAndClaimed {
            acks: outcomes,
            jobs: claimed,
            next_due: brought_due(due)?,
        })
    }

    pub(crate) async fn extend_leases(
        &self,
        leases: &[LeaseRef],
        until: Timestamp,
        now: Timestamp,
    ) -> Result<Vec<ExtendOutcome>, StoreError> {
        let ids: Vec<JobId> = leases.iter().map(|l| l.id).collect();
        let queues = self.locate(&ids).await?;
        let mut out = vec![ExtendOutcome::Lost; leases.len()];
        for (queue, idx) in by_queue(&queues) {
            let reply = self
                .run(&SCRIPTS.extend, &queue, |call| {
                    call.arg(now.as_micros()).arg(until.as_micros());
                    for &i in &idx {
                        call.arg(leases[i].id.to_string()).arg(leases[i].token);
                    }
                })
                .await?;
            for (&i, o) in idx.iter().zip(array(reply)?) {
                out[i] = match text(&o)? {
                    "x" => ExtendOutcome::Extended,
                    "c" => ExtendOutcome::CancelRequested,
                    _ => ExtendOutcome::Lost,
                };
            }
        }
        // A lost lease is never acknowledged: forget its route now.
        self.forget(
            ids.iter()
                .zip(&out)
                .filter(|(_, o)| **o == ExtendOutcome::Lost)
                .map(|(id, _)| *id),
        );
        Ok(out)
    }

    pub(crate) async fn rescue_leases(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<RescueReport, StoreError> {
        let mut report = RescueReport::default();
        for queue in self.queues().await? {
            let left = limit.saturating_sub(report.total() as usize);
            if left == 0 {
                break;
            }
            let rest = self
                .write(&SCRIPTS.rescue, &queue, now, |call| {
                    call.arg(left);
                })
                .await?;
            let [taken] = rest_tuple(rest)?;
            for pair in array(taken)?.chunks(2) {
                let [id, taken_into] = pair else {
                    return Err(reply("a rescued job without its state"));
                };
                report.add(job_id(text(id)?)?, queue.clone(), state(taken_into)?);
            }
        }
        Ok(report)
    }
}

/// The next due time a short claim brings (`-1` when the claim was full and
/// the script did not look): `[]` for none, `[micros]` for a time.
fn brought_due(due: Value) -> Result<Option<Option<Timestamp>>, StoreError> {
    if matches!(due, Value::Int(-1)) {
        return Ok(None);
    }
    Ok(Some(due_time(due)?))
}

/// The rest of a writing script's reply, as exactly `N` values.
pub(crate) fn rest_tuple<const N: usize>(rest: Vec<Value>) -> Result<[Value; N], StoreError> {
    let len = rest.len();
    rest.try_into().map_err(|_| {
        reply(format!(
            "expected {N} values after the wake-up flag, got {len}"
        ))
    })
}

/// Indices grouped by the queue they belong to; unknown ones are left out.
pub(crate) fn by_queue(queues: &[Option<QueueName>]) -> Vec<(QueueName, Vec<usize>)> {
    let mut groups: Vec<(QueueName, Vec<usize>)> = Vec::new();
    for (i, q) in queues.iter().enumerate() {
        let Some(q) = q else { continue };
        match groups.iter_mut().find(|(g, _)| g == q) {
            Some((_, idx)) => idx.push(i),
            None => groups.push((q.clone(), vec![i])),
        }
    }
    groups
}

/// The claim's arguments; the turn is `''` when there is none.
fn claim_args(call: &mut ScriptInvocation<'_>, req: &ClaimRequest) {
    call.arg(req.lease_until.as_micros())
        .arg(&*req.worker)
        .arg(req.limit)
        .arg(req.turn.map(|t| t.to_string()).unwrap_or_default());
}

/// The count and five arguments per acknowledgement (see `lua/lib/ack.lua`).
fn ack_args(call: &mut ScriptInvocation<'_>, acks: &[&Ack]) {
    call.arg(acks.len());
    for a in acks {
        call.arg(a.id.to_string()).arg(a.token);
        let (code, run_at, message) = match &a.action {
            AckAction::Complete { output } => {
                ("c", None, output.as_ref().map_or("", Payload::as_str))
            }
            AckAction::Retry { run_at, error } => ("r", Some(*run_at), error.as_str()),
            AckAction::Defer { run_at, reason } => ("d", Some(*run_at), reason.as_str()),
            AckAction::Kill { error } => ("k", None, error.as_str()),
            AckAction::Release => ("l", None, ""),
            AckAction::Continue { run_at, step } => ("s", Some(*run_at), step.as_str()),
        };
        call.arg(code)
            .arg(run_at.map_or(0, Timestamp::as_micros))
            .arg(message);
    }
}

fn outcome(v: &Value) -> Result<AckOutcome, StoreError> {
    Ok(match text(v)? {
        "notfound" => AckOutcome::NotFound,
        "stale" => AckOutcome::Stale,
        _ => AckOutcome::Applied(state(v)?),
    })
}
