//! Steps: a handler ends an attempt with "continue at `step` after a
//! while", which spends no attempt, keeps its group blocked, frees the
//! worker's slot at once, and is seen by the next run.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use wq_core::{
    AckAction, AckOutcome, Admin, Clock as _, DeadJobs, Enqueue, JobContext, JobError, JobState,
    ListQuery, QueueConfig, QueueOptions, Store as _, Worker,
};

use crate::harness::{
    PATIENCE, TestBackend, TestResult, ack, claim, declare, manual_client, must_get, quick_retry,
    secs, stop, wait_until, with_backend,
};
use crate::{ensure, ensure_eq};

/// A `Continue` gives the attempt back, sets the step (leaving
/// `last_error` alone), schedules the job at its time and keeps it its
/// group's head; the next claim sees the step, a retry and a rescue keep
/// it, a repeat answers applied, a lapsed lease is stale, a requested
/// cancellation wins, and reviving a dead job clears the step.
pub async fn steps_continue_without_spending_attempts<T: TestBackend>(t: &T) -> TestResult {
    with_backend(t, |b| async move {
        let (client, clock) = manual_client(&b);
        declare(&client, QueueConfig::new("steps").retry(quick_retry(3))).await?;
        let t0 = clock.now();
        let head = client
            .enqueue(Enqueue::new("steps", &1).group("chat"))
            .await?
            .job;
        let behind = client
            .enqueue(Enqueue::new("steps", &2).group("chat"))
            .await?
            .job;

        let got = claim(&b, "steps", 5, t0, secs(30)).await?;
        ensure_eq!(got.len(), 1, "one head of one group");
        ensure_eq!(got[0].step, None, "a new job's step");
        let to_b = AckAction::Continue {
            run_at: t0 + secs(10),
            step: "b".into(),
        };
        ensure_eq!(
            ack(&b, &got[0], to_b.clone(), t0).await?,
            AckOutcome::Applied(JobState::Scheduled),
            "a continue later"
        );
        ensure_eq!(
            ack(&b, &got[0], to_b, t0).await?,
            AckOutcome::Applied(JobState::Scheduled),
            "the same continue sent again"
        );
        let stored = must_get(&b, head.id).await?;
        ensure_eq!(
            (
                stored.state,
                stored.attempt,
                stored.step.as_deref(),
                stored.run_at
            ),
            (JobState::Scheduled, 0, Some("b"), t0 + secs(10)),
            "after the continue: state, attempt, step, run_at"
        );
        ensure_eq!(stored.last_error, None, "a continue is no failure");
        ensure!(
            claim(&b, "steps", 5, t0 + secs(5), secs(30))
                .await?
                .is_empty(),
            "the job behind the head started while the head waited between steps"
        );

        let now = t0 + secs(10);
        let again = claim(&b, "steps", 5, now, secs(30)).await?;
        ensure_eq!(
            again.iter().map(|j| j.id).collect::<Vec<_>>(),
            vec![head.id],
            "the head runs again at its time, alone"
        );
        ensure_eq!(
            (again[0].attempt, again[0].step.as_deref()),
            (1, Some("b")),
            "the next claim's attempt and step"
        );
        let retry = AckAction::Retry {
            run_at: now,
            error: "boom".into(),
        };
        ack(&b, &again[0], retry, now).await?;
        let failed = must_get(&b, head.id).await?;
        ensure_eq!(
            (failed.step.as_deref(), failed.last_error.as_deref()),
            (Some("b"), Some("boom")),
            "a retry at step b keeps the step"
        );
        let retried = claim(&b, "steps", 5, now, secs(30)).await?;
        ensure_eq!(
            retried
                .iter()
                .map(|j| (j.id, j.attempt, j.step.clone()))
                .collect::<Vec<_>>(),
            vec![(head.id, 2, Some("b".to_owned()))],
            "the retry runs at step b"
        );
        ensure_eq!(
            ack(
                &b,
                &retried[0],
                AckAction::Continue {
                    run_at: now,
                    step: "c".into(),
                },
                now,
            )
            .await?,
            AckOutcome::Applied(JobState::Available),
            "a continue due at once"
        );
        let stepped = must_get(&b, head.id).await?;
        ensure_eq!(
            (
                stepped.attempt,
                stepped.step.as_deref(),
                stepped.last_error.as_deref()
            ),
            (1, Some("c"), Some("boom")),
            "a continue keeps last_error"
        );
        let last = claim(&b, "steps", 5, now, secs(30)).await?;
        ensure_eq!(
            last.iter().map(|j| j.id).collect::<Vec<_>>(),
            vec![head.id],
            "the head again, still ahead of its group"
        );
        ack(&b, &last[0], AckAction::complete(), now).await?;

        // The job behind: a continue under a lapsed lease, then one with
        // its cancellation requested.
        let next = claim(&b, "steps", 5, now, secs(30)).await?;
        ensure_eq!(
            next.iter()
                .map(|j| (j.id, j.step.clone()))
                .collect::<Vec<_>>(),
            vec![(behind.id, None)],
            "the next job of the group, at no step"
        );
        let late = now + secs(31);
        ensure_eq!(
            ack(
                &b,
                &next[0],
                AckAction::Continue {
                    run_at: late,
                    step: "b".into(),
                },
                late,
            )
            .await?,
            AckOutcome::Stale,
            "a continue under a lapsed lease"
        );
        b.rescue(late, 100).await?;
        let rescued = claim(&b, "steps", 5, late, secs(30)).await?;
        ensure_eq!(rescued.len(), 1, "the rescued job runs again");
        b.cancel(behind.id, late).await?;
        ensure_eq!(
            ack(
                &b,
                &rescued[0],
                AckAction::Continue {
                    run_at: late + secs(10),
                    step: "b".into(),
                },
                late,
            )
            .await?,
            AckOutcome::Applied(JobState::Cancelled),
            "a continue of a job whose cancellation was requested"
        );

        // A dead job revived starts again from its first step.
        let lone = client.enqueue(Enqueue::new("steps", &3)).await?.job;
        let got = claim(&b, "steps", 5, late, secs(30)).await?;
        ensure_eq!(got.len(), 1, "the lone job");
        ack(
            &b,
            &got[0],
            AckAction::Continue {
                run_at: late,
                step: "send".into(),
            },
            late,
        )
        .await?;
        let got = claim(&b, "steps", 5, late, secs(30)).await?;
        ensure_eq!(got.len(), 1, "the lone job at its step");
        // Its worker crashes: the rescued job runs again at the same step.
        let lapsed = late + secs(31);
        b.rescue(lapsed, 100).await?;
        let got = claim(&b, "steps", 5, lapsed, secs(30)).await?;
        ensure_eq!(
            got.iter().map(|j| j.step.clone()).collect::<Vec<_>>(),
            vec![Some("send".to_owned())],
            "the rescued job's step"
        );
        ack(&b, &got[0], AckAction::Kill { error: "x".into() }, lapsed).await?;
        let dead = must_get(&b, lone.id).await?;
        ensure_eq!(
            (dead.state, dead.step.as_deref()),
            (JobState::Dead, Some("send")),
            "a dead job keeps its step"
        );
        b.retry_dead(&DeadJobs::Ids(vec![lone.id]), lapsed).await?;
        let revived = must_get(&b, lone.id).await?;
        ensure_eq!(
            (revived.state, revived.step),
            (JobState::Available, None),
            "a revived job's step"
        );
        Ok(())
    })
    .await
}

/// A worker with 10 slots takes 1,000 jobs through a first step that waits
/// an hour: all of them wait between steps at once, holding no slot, and
/// all complete at their second step once the hour has passed.
pub async fn steps_free_the_slot<T: TestBackend>(t: &T) -> TestResult {
    const JOBS: usize = 1_000;
    const SLOTS: usize = 10;
    let hour = Duration::from_secs(3600);
    with_backend(t, |b| async move {
        let (client, clock) = manual_client(&b);
        declare(&client, QueueConfig::new("typing")).await?;
        client
            .enqueue_many((0..JOBS).map(|i| Enqueue::new("typing", &i).group(format!("chat-{i}"))))
            .await?;
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let (now_running, peak) = (running.clone(), most.clone());
        let handler = move |ctx: JobContext| {
            let (running, most) = (now_running.clone(), peak.clone());
            async move {
                let at_once = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(at_once, Ordering::SeqCst);
                let result = match ctx.step() {
                    None => Err(JobError::continue_at("b", hour)),
                    Some("b") => Ok(()),
                    Some(other) => Err(JobError::permanent(format!("unknown step {other}"))),
                };
                running.fetch_sub(1, Ordering::SeqCst);
                result
            }
        };
        let worker = Worker::new(b.clone())
            .clock(clock.clone())
            .handle_with(
                "typing",
                handler,
                QueueOptions::default().concurrency(SLOTS),
            )
            .start()
            .await?;
        let waiting = wait_until("every job to wait at step b", PATIENCE, || async {
            let c = client.counts("typing").await?;
            Ok(c.scheduled == JOBS as u64 && c.running == 0 && c.completed == 0)
        })
        .await;
        let listed = client
            .list(ListQuery::new().queue("typing").limit(JOBS + 1))
            .await;
        let stepped = worker.stats().stepped;
        let finished = match waiting {
            Ok(()) => {
                clock.advance(hour + secs(1));
                // The worker counts an attempt once the store's answer is
                // back, a moment after the store counts the job.
                wait_until("every job to complete", PATIENCE, || async {
                    Ok(client.counts("typing").await?.completed == JOBS as u64
                        && worker.stats().completed == JOBS as u64)
                })
                .await
            }
            Err(e) => Err(e),
        };
        let stats = worker.stats();
        let stopped = stop(worker).await;
        finished?;
        stopped?;
        let listed = listed?;
        ensure_eq!(listed.len(), JOBS, "jobs listed while waiting");
        ensure!(
            listed
                .iter()
                .all(|j| j.step.as_deref() == Some("b") && j.attempt == 0),
            "a job waited at another step or with its attempt spent: {:?}",
            listed
                .iter()
                .find(|j| j.step.as_deref() != Some("b") || j.attempt != 0)
        );
        ensure_eq!(stepped, JOBS as u64, "stepped attempts while waiting");
        ensure_eq!(
            (stats.stepped, stats.completed),
            (JOBS as u64, JOBS as u64),
            "stepped and completed attempts"
        );
        ensure!(
            most.load(Ordering::SeqCst) <= SLOTS,
            "more handlers at once than slots: {}",
            most.load(Ordering::SeqCst)
        );
        Ok(())
    })
    .await
}
