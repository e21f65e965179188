//! Guarantees 2 and 3: lapsed leases are rescued and their jobs run again,
//! a stale worker can change nothing, heartbeats keep long jobs, and named
//! locks exclude.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use wq_core::{
    Ack, AckAction, AckOutcome, Client, Clock as _, Enqueue, ExtendOutcome, JobContext, JobError,
    JobState, LeaseRef, Lock, QueueConfig, RescuedJob, Store,
};

use super::ledger::start_worker;
use crate::harness::{
    Failure, PATIENCE, TestBackend, TestResult, ack, claim, crash, declare, manual_client,
    must_get, secs, stop, token, wait_until, with_backend,
};
use crate::{ensure, ensure_eq};

/// A lapsed lease is rescued: the job runs again with the attempt spent, or
/// is dead when none is left, or cancelled when that was asked. Unexpired
/// leases and finished jobs are left alone.
pub async fn lapsed_leases_are_rescued<T: TestBackend>(t: &T) -> TestResult {
    with_backend(t, |b| async move {
        let (client, clock) = manual_client(&b);
        declare(&client, QueueConfig::new("rescue")).await?;
        declare(&client, QueueConfig::new("once").max_attempts(1)).await?;
        declare(&client, QueueConfig::new("doomed")).await?;
        let t0 = clock.now();
        let job = client
            .enqueue(Enqueue::new("rescue", &1).group("g"))
            .await?
            .job;
        let done = client.enqueue(Enqueue::new("rescue", &2)).await?.job;
        let claimed = claim(&b, "rescue", 10, t0, secs(5)).await?;
        ensure_eq!(claimed.len(), 2, "claimed");
        let first = claimed
            .iter()
            .find(|j| j.id == job.id)
            .ok_or_else(|| Failure::new("grouped job not claimed"))?;
        let finished = claimed
            .iter()
            .find(|j| j.id == done.id)
            .ok_or_else(|| Failure::new("job not claimed"))?;
        ack(&b, finished, AckAction::complete(), t0 + secs(1)).await?;

        ensure_eq!(
            b.rescue(t0 + secs(4), 100).await?.total(),
            0,
            "rescued before expiry"
        );
        let report = b.rescue(t0 + secs(6), 100).await?;
        ensure_eq!(report.retried, 1, "rescued for another attempt");
        ensure_eq!(
            report.jobs,
            vec![RescuedJob {
                id: job.id,
                queue: "rescue".into(),
                state: JobState::Available,
            }],
            "the report names the job rescued and its state"
        );
        ensure_eq!(
            report.total(),
            1,
            "rescued in all (a completed job is left alone)"
        );
        ensure_eq!(
            must_get(&b, done.id).await?.state,
            JobState::Completed,
            "the completed job"
        );
        let back = must_get(&b, job.id).await?;
        ensure_eq!(
            (back.state, back.attempt),
            (JobState::Available, 1),
            "a rescued job"
        );
        ensure!(back.lease.is_none(), "a rescued job holds no lease");
        ensure!(
            back.last_error
                .as_deref()
                .is_some_and(|e| e.contains("lease")),
            "rescue says why: {:?}",
            back.last_error
        );
        let again = claim(&b, "rescue", 10, t0 + secs(6), secs(5)).await?;
        ensure_eq!(again.len(), 1, "the rescued job is claimable");
        ensure_eq!(again[0].attempt, 2, "second attempt");
        ensure!(
            token(&again[0])? > token(first)?,
            "a new claim gets a larger token"
        );

        let once = client.enqueue(Enqueue::new("once", &1)).await?.job;
        claim(&b, "once", 1, t0, secs(5)).await?;
        let report = b.rescue(t0 + secs(60), 100).await?;
        ensure_eq!(report.dead, 1, "no attempts left: dead");
        ensure_eq!(
            report
                .jobs
                .iter()
                .filter(|j| j.state == JobState::Dead)
                .map(|j| (j.id, j.queue.as_str()))
                .collect::<Vec<_>>(),
            vec![(once.id, "once")],
            "the report names the dead job"
        );
        ensure_eq!(
            must_get(&b, once.id).await?.state,
            JobState::Dead,
            "the exhausted job"
        );

        let doomed = client.enqueue(Enqueue::new("doomed", &3)).await?.job;
        let t1 = t0 + secs(100);
        claim(&b, "doomed", 1, t1, secs(5)).await?;
        client.cancel(doomed.id).await?;
        let report = b.rescue(t1 + secs(6), 100).await?;
        ensure_eq!(report.cancelled, 1, "a lapsed job whose cancel was asked");
        ensure_eq!(
            must_get(&b, doomed.id).await?.state,
            JobState::Cancelled,
            "cancelled on rescue"
        );
        Ok(())
    })
    .await
}

/// A worker whose lease lapsed can neither complete, fail, release nor
/// extend the job, before or after the job is claimed again; the new holder
/// can; a second acknowledgement changes nothing.
pub async fn stale_workers_are_fenced<T: TestBackend>(t: &T) -> TestResult {
    with_backend(t, |b| async move {
        let (client, clock) = manual_client(&b);
        declare(&client, QueueConfig::new("fence")).await?;
        let t0 = clock.now();
        let id = client.enqueue(Enqueue::new("fence", &1)).await?.job.id;
        let stale = claim(&b, "fence", 1, t0, secs(5)).await?;
        let stale = stale
            .first()
            .ok_or_else(|| Failure::new("nothing claimed"))?
            .clone();
        let late = t0 + secs(6);
        let actions = [
            AckAction::complete(),
            AckAction::Retry {
                run_at: late,
                error: "x".into(),
            },
            AckAction::Defer {
                run_at: late,
                reason: "x".into(),
            },
            AckAction::Kill { error: "x".into() },
            AckAction::Release,
        ];
        for action in actions.iter().cloned() {
            ensure_eq!(
                ack(&b, &stale, action, late).await?,
                AckOutcome::Stale,
                "ack after the lease lapsed"
            );
        }
        let refs = [LeaseRef {
            id,
            token: token(&stale)?,
        }];
        ensure_eq!(
            b.extend(&refs, late + secs(30), late).await?,
            vec![ExtendOutcome::Lost],
            "extend after the lease lapsed"
        );
        ensure_eq!(
            must_get(&b, id).await?.state,
            JobState::Running,
            "state unchanged by a stale worker"
        );

        b.rescue(late, 10).await?;
        let fresh = claim(&b, "fence", 1, late, secs(5)).await?;
        let fresh = fresh
            .first()
            .ok_or_else(|| Failure::new("rescued job not claimed"))?
            .clone();
        for action in actions.iter().cloned() {
            ensure_eq!(
                ack(&b, &stale, action, late).await?,
                AckOutcome::Stale,
                "ack by the old holder"
            );
        }
        ensure_eq!(
            b.extend(&refs, late + secs(30), late).await?,
            vec![ExtendOutcome::Lost],
            "extend by the old holder"
        );
        let fresh_ref = [LeaseRef {
            id,
            token: token(&fresh)?,
        }];
        ensure_eq!(
            b.extend(&fresh_ref, late + secs(30), late).await?,
            vec![ExtendOutcome::Extended],
            "extend by the holder"
        );
        let extended = must_get(&b, id).await?;
        ensure_eq!(
            extended.lease.map(|l| l.expires_at),
            Some(late + secs(30)),
            "lease after extend"
        );
        ensure_eq!(
            ack(&b, &fresh, AckAction::complete(), late + secs(20)).await?,
            AckOutcome::Applied(JobState::Completed),
            "ack by the holder, within the extended lease"
        );
        // The same acknowledgement again (its reply was lost) answers as
        // applied and changes nothing.
        ensure_eq!(
            ack(&b, &fresh, AckAction::complete(), late + secs(20)).await?,
            AckOutcome::Applied(JobState::Completed),
            "the holder's acknowledgement sent again"
        );
        ensure_eq!(
            must_get(&b, id).await?.state,
            JobState::Completed,
            "state after a second ack"
        );
        let unknown = Ack {
            id: wq_core::JobId::new(),
            token: 1,
            action: AckAction::complete(),
        };
        ensure_eq!(
            b.ack(&[unknown], late).await?,
            vec![AckOutcome::NotFound],
            "ack of an unknown job"
        );
        ensure_eq!(
            must_get(&b, id).await?.state,
            JobState::Completed,
            "final state"
        );
        Ok(())
    })
    .await
}

/// An acknowledgement sent again with the same token (its reply was lost)
/// answers `Applied` with the job's state now and changes nothing, until
/// the job is claimed again or rescued: then the old token is stale.
pub async fn repeated_acks_answer_applied<T: TestBackend>(t: &T) -> TestResult {
    with_backend(t, |b| async move {
        let (client, clock) = manual_client(&b);
        declare(&client, QueueConfig::new("q").max_attempts(5)).await?;
        client.enqueue(Enqueue::new("q", &1).group("g")).await?;
        client.enqueue(Enqueue::new("q", &2).group("g")).await?;
        let now = clock.now();
        let first = claim(&b, "q", 1, now, secs(30)).await?;
        let job = first
            .first()
            .ok_or_else(|| Failure::new("nothing claimed"))?;
        let retry = AckAction::Retry {
            run_at: now,
            error: "boom".into(),
        };
        ensure_eq!(
            ack(&b, job, retry.clone(), now).await?,
            AckOutcome::Applied(JobState::Available),
            "the retry"
        );
        ensure_eq!(
            ack(&b, job, retry.clone(), now).await?,
            AckOutcome::Applied(JobState::Available),
            "the retry sent again"
        );
        let stored = must_get(&b, job.id).await?;
        ensure_eq!(stored.attempt, 1, "the repeat spent no attempt");
        ensure_eq!(
            stored.state,
            JobState::Available,
            "the repeat changed nothing"
        );

        // Claimed again: the old token is stale, the new one acknowledges.
        let second = claim(&b, "q", 1, now, secs(30)).await?;
        let again = second
            .first()
            .ok_or_else(|| Failure::new("nothing claimed again"))?;
        ensure_eq!(again.id, job.id, "the retried head runs again");
        ensure_eq!(
            ack(&b, job, retry, now).await?,
            AckOutcome::Stale,
            "the first attempt's retry after the job was claimed again"
        );
        ensure_eq!(
            ack(&b, again, AckAction::complete(), now).await?,
            AckOutcome::Applied(JobState::Completed),
            "the second attempt completes"
        );
        ensure_eq!(
            ack(&b, again, AckAction::complete(), now).await?,
            AckOutcome::Applied(JobState::Completed),
            "the completion sent again"
        );
        let next = claim(&b, "q", 5, now, secs(30)).await?;
        ensure_eq!(next.len(), 1, "the group moved on once, not twice");

        // Rescued: a lapsed holder's token is stale, never a repeat.
        let lapsed = &next[0];
        let later = now + secs(31);
        ensure_eq!(b.rescue(later, 10).await?.retried, 1, "rescued");
        ensure_eq!(
            ack(&b, lapsed, AckAction::complete(), later).await?,
            AckOutcome::Stale,
            "the lapsed holder's acknowledgement after the rescue"
        );
        Ok(())
    })
    .await
}

/// A handler that runs three times longer than its lease keeps the job:
/// the heartbeat extends the lease, so no other worker runs it again. (The
/// lease is long enough that a loaded test machine, whose every round trip
/// the heartbeat waits for, does not let it lapse between two beats.)
pub async fn heartbeats_keep_long_jobs<T: TestBackend>(t: &T) -> TestResult {
    with_backend(t, |b| async move {
        let client = Client::new(b.clone());
        declare(
            &client,
            QueueConfig::new("long").lease(Duration::from_millis(1_000)),
        )
        .await?;
        let id = client.enqueue(Enqueue::new("long", &1)).await?.job.id;
        let starts = Arc::new(AtomicU32::new(0));
        let handler = |starts: Arc<AtomicU32>| {
            move |_: JobContext| {
                let starts = starts.clone();
                async move {
                    starts.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(3_000)).await;
                    Ok::<(), JobError>(())
                }
            }
        };
        let w1 = start_worker(&b, "long", handler(starts.clone()), 1).await?;
        let w2 = start_worker(&b, "long", handler(starts.clone()), 1).await?;
        let done = wait_until("the long job to complete", PATIENCE, || async {
            Ok(client.counts("long").await?.completed == 1)
        })
        .await;
        let stopped = (stop(w1).await, stop(w2).await);
        done?;
        stopped.0?;
        stopped.1?;
        ensure_eq!(starts.load(Ordering::SeqCst), 1, "starts of the long job");
        ensure_eq!(
            must_get(&b, id).await?.attempt,
            1,
            "attempts of the long job"
        );
        Ok(())
    })
    .await
}

/// Jobs held by a worker that dies run again on another worker once their
/// leases lapse; none is lost.
pub async fn crashed_workers_jobs_run_again<T: TestBackend>(t: &T) -> TestResult {
    with_backend(t, |b| async move {
        let client = Client::new(b.clone());
        declare(
            &client,
            QueueConfig::new("crash").lease(Duration::from_millis(300)),
        )
        .await?;
        let ids: Vec<_> = client
            .enqueue_many((0..5).map(|i| Enqueue::new("crash", &i).group(format!("g{i}"))))
            .await?
            .into_iter()
            .map(|e| e.job.id)
            .collect();
        let stuck = |ctx: JobContext| async move {
            let _ = tokio::time::timeout(PATIENCE, ctx.cancelled()).await;
            Ok::<(), JobError>(())
        };
        let doomed = start_worker(&b, "crash", stuck, 5).await?;
        wait_until("the doomed worker to hold every job", PATIENCE, || async {
            Ok(client.counts("crash").await?.running == 5)
        })
        .await?;
        crash(doomed).await?;
        let healthy = start_worker(
            &b,
            "crash",
            |_: JobContext| async { Ok::<(), JobError>(()) },
            5,
        )
        .await?;
        let done = wait_until(
            "every job to complete after the crash",
            PATIENCE,
            || async { Ok(client.counts("crash").await?.completed == 5) },
        )
        .await;
        let stopped = stop(healthy).await;
        done?;
        stopped?;
        for id in ids {
            let job = must_get(&b, id).await?;
            ensure_eq!(
                (job.state, job.attempt),
                (JobState::Completed, 2),
                "job {id} after the crash"
            );
        }
        Ok(())
    })
    .await
}

/// When the worker that leads maintenance dies holding jobs, a standby
/// worker takes the lead and runs them again within about two job leases:
/// the leader lock lapses no later than the job leases do, so rescue waits
/// for nothing longer. (A timing property with a generous bound, not a
/// speed claim: a lock ten rounds long took over three leases.)
pub async fn a_crashed_leaders_jobs_run_again_within_two_leases<T: TestBackend>(
    t: &T,
) -> TestResult {
    with_backend(t, |b| async move {
        let client = Client::new(b.clone());
        let lease = Duration::from_secs(2);
        declare(&client, QueueConfig::new("leader").lease(lease)).await?;
        client
            .enqueue_many((0..4).map(|i| Enqueue::new("leader", &i).group(format!("g{i}"))))
            .await?;
        let stuck = |ctx: JobContext| async move {
            let _ = tokio::time::timeout(PATIENCE, ctx.cancelled()).await;
            Ok::<(), JobError>(())
        };
        // Started alone, the doomed worker takes the leader lock at once.
        let leader = start_worker(&b, "leader", stuck, 4).await?;
        wait_until("the leader to hold every job", PATIENCE, || async {
            Ok(client.counts("leader").await?.running == 4)
        })
        .await?;
        let standby = start_worker(
            &b,
            "leader",
            |_: JobContext| async { Ok::<(), JobError>(()) },
            4,
        )
        .await?;
        let crashed_at = tokio::time::Instant::now();
        let result = async {
            crash(leader).await?;
            wait_until("the crashed leader's jobs to complete", PATIENCE, || async {
                Ok(client.counts("leader").await?.completed == 4)
            })
            .await?;
            let took = crashed_at.elapsed();
            ensure!(
                took <= lease * 2,
                "the crashed leader's jobs ran again {took:?} after the crash, more than two leases of {lease:?}"
            );
            Ok(())
        }
        .await;
        let stopped = stop(standby).await;
        result?;
        stopped?;
        Ok(())
    })
    .await
}

/// Named locks: one holder at a time, renewals only by the holder, takeover
/// after expiry with a larger token, release only by the holder.
pub async fn locks_exclude<T: TestBackend>(t: &T) -> TestResult {
    with_backend(t, |b| async move {
        let (_, clock) = manual_client(&b);
        let t0 = clock.now();
        let ttl = secs(10);
        let a = b.acquire_lock("contact:5511", "worker-a", ttl, t0).await?;
        let a = a.ok_or_else(|| Failure::new("a free lock was refused"))?;
        ensure!(
            b.acquire_lock("contact:5511", "worker-b", ttl, t0 + secs(1))
                .await?
                .is_none(),
            "a held lock was granted"
        );
        ensure!(
            b.acquire_lock("contact:5522", "worker-b", ttl, t0)
                .await?
                .is_some(),
            "another name is independent"
        );
        let renewed = b.renew_lock(&a, ttl, t0 + secs(5)).await?;
        let renewed = renewed.ok_or_else(|| Failure::new("the holder could not renew"))?;
        ensure_eq!(renewed.expires_at, t0 + secs(15), "renewed expiry");
        ensure!(
            b.acquire_lock("contact:5511", "worker-b", ttl, t0 + secs(12))
                .await?
                .is_none(),
            "granted before the renewed expiry"
        );
        let b_lease = b
            .acquire_lock("contact:5511", "worker-b", ttl, t0 + secs(16))
            .await?;
        let b_lease = b_lease.ok_or_else(|| Failure::new("no takeover after expiry"))?;
        ensure!(b_lease.token > a.token, "a takeover gets a larger token");
        ensure!(
            b.renew_lock(&a, ttl, t0 + secs(17)).await?.is_none(),
            "the old holder renewed"
        );
        ensure!(!b.release_lock(&a).await?, "the old holder released");
        ensure!(
            b.release_lock(&b_lease).await?,
            "the holder could not release"
        );
        ensure!(
            b.acquire_lock("contact:5511", "worker-a", ttl, t0 + secs(18))
                .await?
                .is_some(),
            "not free after release"
        );
        Ok(())
    })
    .await
}
