//! Guarantee 7: retries with backoff, the dead-letter queue, and what a
//! group does when its head dies; and the transport's error classes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use wq_core::{
    Ack, AckAction, AckOutcome, ClaimRequest, Client, Clock as _, DeadJobs, Enqueue, JobContext,
    JobError, JobState, ListQuery, OnDead, QueueConfig, RetryPolicy, Scheduler, Store as _,
    Timestamp, Worker,
};
use wq_whatsapp::{
    AckLevel, Capabilities, EnqueueMessage as _, Jid, MessageId, OutboundMessage, Presence,
    RateScope, SendPipeline, SendReceipt, SessionState, Transport, TransportError,
};

use super::ledger::start_worker;
use crate::harness::{
    Failure, PATIENCE, TestBackend, TestResult, ack, claim, declare, manual_client, must_get,
    quick_retry, secs, stop, wait_until, with_backend,
};
use crate::{ensure, ensure_eq};

/// A failed attempt reschedules the job at its backoff; it is not claimable
/// before, its group waits behind it, and the last attempt makes it dead.
/// A job that completes after a failure keeps no `last_error`.
pub async fn retries_and_backoff<T: TestBackend>(t: &T) -> TestResult {
    with_backend(t, |b| async move {
        let (client, clock) = manual_client(&b);
        declare(&client, QueueConfig::new("retry").max_attempts(3)).await?;
        let head = client
            .enqueue(Enqueue::new("retry", &1).group("g"))
            .await?
            .job;
        let next = client
            .enqueue(Enqueue::new("retry", &2).group("g"))
            .await?
            .job;
        let t0 = clock.now();
        let mut at = t0;
        for (attempt, backoff) in [(1, 2), (2, 4)] {
            let got = claim(&b, "retry", 10, at, secs(30)).await?;
            ensure_eq!(
                got.iter().map(|j| j.id).collect::<Vec<_>>(),
                vec![head.id],
                "claimed at attempt {attempt}"
            );
            ensure_eq!(got[0].attempt, attempt, "attempt number");
            let retry = AckAction::Retry {
                run_at: at + secs(backoff),
                error: format!("failure {attempt}"),
            };
            ensure_eq!(
                ack(&b, &got[0], retry, at).await?,
                AckOutcome::Applied(JobState::Scheduled),
                "retry outcome"
            );
            let job = must_get(&b, head.id).await?;
            ensure_eq!(job.state, JobState::Scheduled, "state while backing off");
            ensure_eq!(
                job.last_error,
                Some(format!("failure {attempt}")),
                "last error"
            );
            ensure!(job.lease.is_none(), "a retrying job holds no lease");
            let early = claim(
                &b,
                "retry",
                10,
                at + secs(backoff) - Duration::from_millis(1),
                secs(30),
            )
            .await?;
            ensure!(
                early.is_empty(),
                "nothing claimable before the backoff ends (got {})",
                early.len()
            );
            let due = b.next_due(&"retry".into(), at).await?;
            ensure_eq!(due, Some(at + secs(backoff)), "next due time");
            at = at + secs(backoff);
        }
        let last = claim(&b, "retry", 10, at, secs(30)).await?;
        ensure_eq!(last.len(), 1, "third attempt claimed");
        ensure_eq!(last[0].attempt, 3, "third attempt");
        let kill = AckAction::Kill {
            error: "gave up".into(),
        };
        ensure_eq!(
            ack(&b, &last[0], kill, at).await?,
            AckOutcome::Applied(JobState::Dead),
            "kill outcome"
        );
        let dead = must_get(&b, head.id).await?;
        ensure_eq!(dead.state, JobState::Dead, "state after the last attempt");
        ensure!(dead.finished_at.is_some(), "a dead job has finished_at");
        let then = claim(&b, "retry", 10, at, secs(30)).await?;
        ensure_eq!(
            then.iter().map(|j| j.id).collect::<Vec<_>>(),
            vec![next.id],
            "the group continues after its head dies"
        );

        // A failure, then a success: the completed job keeps no error.
        let flaky = AckAction::Retry {
            run_at: at,
            error: "flaky".into(),
        };
        ack(&b, &then[0], flaky, at).await?;
        let again = claim(&b, "retry", 10, at, secs(30)).await?;
        ensure_eq!(again.len(), 1, "the failed job claimed again");
        ensure_eq!(
            again[0].last_error.as_deref(),
            Some("flaky"),
            "a retried job shows its failure while it waits or runs"
        );
        ack(&b, &again[0], AckAction::complete(), at).await?;
        let done = must_get(&b, next.id).await?;
        ensure_eq!(
            (done.state, done.last_error),
            (JobState::Completed, None),
            "a completed job after a failure: state, last_error"
        );
        Ok(())
    })
    .await
}

/// A `Retry` on a job's last attempt makes it dead, whether the
/// acknowledgement comes alone or with the next claim: no store may grant
/// one attempt more than `max_attempts`. A job with attempts left is
/// rescheduled by the same acknowledgement.
pub async fn retry_on_the_last_attempt_kills<T: TestBackend>(t: &T) -> TestResult {
    with_backend(t, |b| async move {
        let (client, clock) = manual_client(&b);
        declare(&client, QueueConfig::new("last").max_attempts(2)).await?;
        declare(&client, QueueConfig::new("single").max_attempts(1)).await?;
        let t0 = clock.now();
        let retry = |at: Timestamp, n: u32| AckAction::Retry {
            run_at: at,
            error: format!("failure {n}"),
        };
        let job = client
            .enqueue(Enqueue::new("last", &1).group("g"))
            .await?
            .job;
        let next = client
            .enqueue(Enqueue::new("last", &2).group("g"))
            .await?
            .job;
        let first = claim(&b, "last", 10, t0, secs(30)).await?;
        ensure_eq!(
            first.iter().map(|j| (j.id, j.attempt)).collect::<Vec<_>>(),
            vec![(job.id, 1)],
            "the first attempt"
        );
        ensure_eq!(
            ack(&b, &first[0], retry(t0 + secs(1), 1), t0).await?,
            AckOutcome::Applied(JobState::Scheduled),
            "a retry with an attempt left"
        );
        let t1 = t0 + secs(1);
        let second = claim(&b, "last", 10, t1, secs(30)).await?;
        ensure_eq!(
            second.iter().map(|j| (j.id, j.attempt)).collect::<Vec<_>>(),
            vec![(job.id, 2)],
            "the last attempt"
        );
        ensure_eq!(
            ack(&b, &second[0], retry(t1 + secs(1), 2), t1).await?,
            AckOutcome::Applied(JobState::Dead),
            "a retry on the last attempt"
        );
        let dead = must_get(&b, job.id).await?;
        ensure_eq!(
            (dead.state, dead.attempt),
            (JobState::Dead, 2),
            "the job after its last attempt failed"
        );
        ensure_eq!(
            dead.last_error.as_deref(),
            Some("failure 2"),
            "the last failure is kept"
        );
        ensure!(dead.finished_at.is_some(), "a dead job has finished_at");
        let then = claim(&b, "last", 10, t0 + secs(3600), secs(30)).await?;
        ensure_eq!(
            then.iter().map(|j| j.id).collect::<Vec<_>>(),
            vec![next.id],
            "only the group's next job runs; the dead one never again"
        );

        // The same through ack_and_claim, on a job with a single attempt.
        let once = client.enqueue(Enqueue::new("single", &1)).await?.job;
        let got = claim(&b, "single", 1, t0, secs(30)).await?;
        ensure_eq!(got.len(), 1, "the single attempt claimed");
        let acks: Vec<Ack> = Ack::for_job(&got[0], retry(t0, 1)).into_iter().collect();
        let req = ClaimRequest::new("single", 5, t0, t0 + secs(30), "test-worker");
        let done = b.ack_and_claim(&acks, Some(&req), t0).await?;
        ensure_eq!(
            done.acks,
            vec![AckOutcome::Applied(JobState::Dead)],
            "a retry on the only attempt, acknowledged with a claim"
        );
        ensure!(
            done.jobs.is_empty(),
            "the claim in the same call handed out {:?}",
            done.jobs.iter().map(|j| j.id).collect::<Vec<_>>()
        );
        ensure_eq!(
            must_get(&b, once.id).await?.state,
            JobState::Dead,
            "the single-attempt job"
        );
        ensure!(
            claim(&b, "single", 5, t0 + secs(3600), secs(30))
                .await?
                .is_empty(),
            "a dead job is claimed again"
        );
        let c = client.counts("single").await?;
        ensure_eq!((c.dead, c.pending()), (1, 0), "dead and pending jobs");
        Ok(())
    })
    .await
}

/// The engine retries a failing handler with backoff until it succeeds,
/// and kills a job that keeps failing after its last attempt.
pub async fn engine_retries_then_kills<T: TestBackend>(t: &T) -> TestResult {
    with_backend(t, |b| async move {
        let client = Client::new(b.clone());
        declare(&client, QueueConfig::new("flaky").retry(quick_retry(3))).await?;
        let heals = client
            .enqueue(Enqueue::new("flaky", &"heals"))
            .await?
            .job
            .id;
        let never = client
            .enqueue(Enqueue::new("flaky", &"never"))
            .await?
            .job
            .id;
        let handler = |ctx: JobContext| async move {
            let kind: String = ctx.payload()?;
            match (kind.as_str(), ctx.attempt()) {
                ("heals", 3) => Ok(()),
                _ => Err(JobError::retry(format!("failure {}", ctx.attempt()))),
            }
        };
        let worker = start_worker(&b, "flaky", handler, 4).await?;
        let done = wait_until("both jobs to finish", PATIENCE, || async {
            let c = client.counts("flaky").await?;
            Ok(c.completed == 1 && c.dead == 1)
        })
        .await;
        let stopped = stop(worker).await;
        done?;
        stopped?;
        let healed = must_get(&b, heals).await?;
        ensure_eq!(
            (healed.state, healed.attempt),
            (JobState::Completed, 3),
            "healed job"
        );
        ensure_eq!(
            healed.last_error.as_deref(),
            None,
            "a completed job keeps no error of its earlier attempts"
        );
        let dead = must_get(&b, never).await?;
        ensure_eq!((dead.state, dead.attempt), (JobState::Dead, 3), "dead job");
        ensure_eq!(
            dead.last_error.as_deref(),
            Some("failure 3"),
            "dead job's error"
        );
        Ok(())
    })
    .await
}

/// Dead jobs are listed, retried with fresh attempts, and purged.
pub async fn dead_jobs_retry_and_purge<T: TestBackend>(t: &T) -> TestResult {
    with_backend(t, |b| async move {
        let (client, clock) = manual_client(&b);
        declare(&client, QueueConfig::new("dlq").max_attempts(1)).await?;
        let ids: Vec<_> = client
            .enqueue_many((0..3).map(|i| Enqueue::new("dlq", &i)))
            .await?
            .into_iter()
            .map(|e| e.job.id)
            .collect();
        let now = clock.now();
        for j in claim(&b, "dlq", 10, now, secs(30)).await? {
            ack(
                &b,
                &j,
                AckAction::Kill {
                    error: "invalid number".into(),
                },
                now,
            )
            .await?;
        }
        let dead = client.dead("dlq", 100).await?;
        let mut dead_ids: Vec<_> = dead.iter().map(|j| j.id).collect();
        dead_ids.sort();
        ensure_eq!(dead_ids, ids, "dead jobs listed");
        ensure_eq!(client.counts("dlq").await?.dead, 3, "dead count");

        let retried = client
            .retry_dead(DeadJobs::Ids(vec![ids[0], wq_core::JobId::new()]))
            .await?;
        ensure_eq!(retried, 1, "dead jobs retried (unknown ids skipped)");
        let revived = must_get(&b, ids[0]).await?;
        ensure_eq!(
            (revived.state, revived.attempt),
            (JobState::Available, 0),
            "a retried job starts over"
        );
        ensure!(
            revived.finished_at.is_none(),
            "a retried job is not finished"
        );
        let again = claim(&b, "dlq", 10, now, secs(30)).await?;
        ensure_eq!(
            again.iter().map(|j| j.id).collect::<Vec<_>>(),
            vec![ids[0]],
            "the retried job runs"
        );
        ack(&b, &again[0], AckAction::complete(), now).await?;

        let purged = client.purge_dead(DeadJobs::All("dlq".into())).await?;
        ensure_eq!(purged, 2, "dead jobs purged");
        ensure!(b.get(ids[1]).await?.is_none(), "a purged job is gone");
        let c = client.counts("dlq").await?;
        ensure_eq!((c.dead, c.completed), (0, 1), "counts after purge");
        ensure!(
            client.dead("dlq", 100).await?.is_empty(),
            "no dead jobs left"
        );
        let all = client.list(ListQuery::new().queue("dlq")).await?;
        ensure_eq!(all.len(), 1, "jobs left");
        Ok(())
    })
    .await
}

/// When a group's head dies, `continue` lets the next job run and `hold`
/// makes the group wait until the head is retried or purged.
pub async fn dead_head_continue_or_hold<T: TestBackend>(t: &T) -> TestResult {
    with_backend(t, |b| async move {
        let (client, clock) = manual_client(&b);
        declare(&client, QueueConfig::new("cont").max_attempts(1)).await?;
        declare(
            &client,
            QueueConfig::new("hold")
                .max_attempts(1)
                .on_dead(OnDead::Hold),
        )
        .await?;
        let now = clock.now();
        let kill = || AckAction::Kill {
            error: "boom".into(),
        };
        for q in ["cont", "hold"] {
            client
                .enqueue_many((0..3).map(|i| Enqueue::new(q, &i).group("contact")))
                .await?;
            let head = claim(&b, q, 10, now, secs(30)).await?;
            ensure_eq!(head.len(), 1, "{q}: one head");
            ack(&b, &head[0], kill(), now).await?;
        }
        let cont_next = claim(&b, "cont", 10, now, secs(30)).await?;
        ensure_eq!(cont_next.len(), 1, "continue: the next job runs");
        ensure_eq!(cont_next[0].payload.as_str(), "1", "continue: in order");

        ensure!(
            claim(&b, "hold", 10, now, secs(30)).await?.is_empty(),
            "hold: the group waits"
        );
        let dead_head = client.dead("hold", 10).await?;
        ensure_eq!(dead_head.len(), 1, "hold: one dead head");
        let pos = client
            .position(must_get(&b, dead_head[0].id).await?.id)
            .await?;
        ensure!(pos.is_none(), "a dead job has no position");
        client
            .retry_dead(DeadJobs::Ids(vec![dead_head[0].id]))
            .await?;
        let rerun = claim(&b, "hold", 10, now, secs(30)).await?;
        ensure_eq!(
            rerun.iter().map(|j| j.id).collect::<Vec<_>>(),
            vec![dead_head[0].id],
            "hold: the retried head runs first"
        );
        ack(&b, &rerun[0], kill(), now).await?;
        ensure!(
            claim(&b, "hold", 10, now, secs(30)).await?.is_empty(),
            "hold: dead again, waiting again"
        );
        client
            .purge_dead(DeadJobs::Ids(vec![dead_head[0].id]))
            .await?;
        let next = claim(&b, "hold", 10, now, secs(30)).await?;
        ensure_eq!(next.len(), 1, "hold: purging the head releases the group");
        ensure_eq!(next[0].payload.as_str(), "1", "hold: the next job in order");
        Ok(())
    })
    .await
}

#[derive(Serialize, Deserialize)]
struct Outcome {
    kind: String,
}

/// A transport's errors map to the store: retryable spends an attempt and
/// backs off, rate limits and disconnections wait without spending one,
/// permanent failures go straight to dead. The transport handler makes a
/// message wait for a bridge that is down.
pub async fn transport_errors_are_classified<T: TestBackend>(t: &T) -> TestResult {
    with_backend(t, |b| async move {
        let (client, clock) = manual_client(&b);
        let policy = RetryPolicy {
            jitter: false,
            disconnected_delay: secs(5),
            ..RetryPolicy::default()
        };
        declare(&client, QueueConfig::new("edge").retry(policy.clone())).await?;
        declare(&client, QueueConfig::new("wa").retry(policy)).await?;
        let t0 = clock.now();
        let mut ids = Vec::new();
        for kind in ["retryable", "rate_limited", "disconnected", "permanent"] {
            let e = client
                .enqueue(Enqueue::new("edge", &Outcome { kind: kind.into() }))
                .await?;
            ids.push(e.job.id);
        }
        let msg = OutboundMessage::text("inst-1", "5511999998888", "olá")
            .map_err(|e| Failure(e.to_string()))?;
        let wa = client.enqueue(Enqueue::message("wa", &msg)).await?.job.id;
        let handler = |ctx: JobContext| async move {
            let o: Outcome = ctx.payload()?;
            Err(JobError::from(match o.kind.as_str() {
                "retryable" => TransportError::Retryable {
                    reason: "bridge timeout".into(),
                    after: Some(secs(30)),
                    maybe_sent: false,
                },
                "rate_limited" => TransportError::RateLimited {
                    retry_after: secs(60),
                    scope: RateScope::Contact,
                },
                "disconnected" => TransportError::Disconnected {
                    reason: "socket closed".into(),
                    permanent: false,
                },
                _ => TransportError::Permanent {
                    reason: "number not on WhatsApp".into(),
                    code: Some(131_026),
                },
            }))
        };
        let bridge = Arc::new(DownBridge::default());
        let worker = Worker::new(b.clone())
            .clock(clock.clone())
            .handle("edge", handler)
            .handle("wa", SendPipeline::new(bridge.clone(), b.clone()))
            .start()
            .await?;
        let settled = wait_until("every attempt to end", PATIENCE, || async {
            let edge = client.counts("edge").await?;
            let wa = client.counts("wa").await?;
            Ok(edge.running == 0 && edge.available == 0 && wa.scheduled == 1)
        })
        .await;
        let stopped = stop(worker).await;
        settled?;
        stopped?;
        let expect = [
            (JobState::Scheduled, 1, Some(t0 + secs(30))),
            (JobState::Scheduled, 0, Some(t0 + secs(60))),
            (JobState::Scheduled, 0, Some(t0 + secs(5))),
            (JobState::Dead, 1, None),
        ];
        for (id, (state, attempt, run_at)) in ids.iter().zip(expect) {
            let job = must_get(&b, *id).await?;
            ensure_eq!(
                (job.state, job.attempt),
                (state, attempt),
                "job {:?}",
                job.payload
            );
            if let Some(run_at) = run_at {
                ensure_eq!(job.run_at, run_at, "run_at of {:?}", job.payload);
            }
        }
        let waiting = must_get(&b, wa).await?;
        ensure_eq!(
            (waiting.state, waiting.attempt),
            (JobState::Scheduled, 0),
            "message while the bridge is down"
        );
        ensure_eq!(
            bridge.sent.load(Ordering::SeqCst),
            0,
            "nothing sent through a down bridge"
        );
        Ok(())
    })
    .await
}

/// A bridge that is disconnected.
#[derive(Debug, Default)]
struct DownBridge {
    sent: AtomicU32,
}

impl Transport for DownBridge {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            client_ids: true,
            accepted: AckLevel::Server,
        }
    }

    async fn send(
        &self,
        id: &MessageId,
        _msg: &OutboundMessage,
    ) -> Result<SendReceipt, TransportError> {
        self.sent.fetch_add(1, Ordering::SeqCst);
        Ok(SendReceipt::new(id.clone(), AckLevel::Server))
    }

    async fn presence(&self, _: &str, _: &Jid, _: Presence) -> Result<(), TransportError> {
        Ok(())
    }

    fn session_state(&self, _instance: &str) -> SessionState {
        SessionState::Disconnected
    }
}
