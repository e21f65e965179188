//! Attempt history and output: each run of a job leaves one record, kept
//! with the job, and a completion keeps the handler's output.

use wq_core::attempt::{LEASE_LAPSED, MAX_HISTORY};
use wq_core::{
    Ack, AckAction, AckOutcome, Admin, Attempt, AttemptOutcome, Clock as _, DeadJobs, Enqueue,
    JobState, Payload, QueueConfig, Store as _, Timestamp,
};

use crate::ensure_eq;
use crate::harness::{
    Failure, TestBackend, TestResult, ack, claim, declare, manual_client, must_get, secs,
    with_backend,
};

/// The worker the suite's claims name.
const WORKER: &str = "test-worker";

/// A record of a run by the suite's worker.
fn run(
    attempt: u32,
    (started_at, ended_at): (Timestamp, Timestamp),
    outcome: AttemptOutcome,
    error: Option<&str>,
) -> Attempt {
    Attempt::new(
        attempt,
        started_at,
        ended_at,
        WORKER,
        outcome,
        error.map(str::to_owned),
    )
}

/// A job that fails, waits, ends a step, loses its lease and then
/// succeeds keeps one record per run, in order, each with its attempt
/// number, its claim and end times, the worker, how it ended and its
/// message; the completion keeps the output and clears `last_error`. A
/// dead job keeps its history through a retry from the dead-letter queue,
/// a released or cancelled run is recorded as such, and a job never run
/// has none.
pub async fn attempts_are_recorded<T: TestBackend>(t: &T) -> TestResult {
    with_backend(t, |b| async move {
        let (client, clock) = manual_client(&b);
        declare(&client, QueueConfig::new("history").max_attempts(3)).await?;
        let job = client.enqueue(Enqueue::new("history", &1)).await?.job;
        let t0 = clock.now();
        let at = |s: u64| t0 + secs(s);
        let mut want = Vec::new();

        let got = claim(&b, "history", 1, at(0), secs(30)).await?;
        let retry = AckAction::Retry {
            run_at: at(2),
            error: "boom".into(),
        };
        ack(&b, &got[0], retry, at(1)).await?;
        want.push(run(
            1,
            (at(0), at(1)),
            AttemptOutcome::Retried,
            Some("boom"),
        ));
        let got = claim(&b, "history", 1, at(2), secs(30)).await?;
        let defer = AckAction::Defer {
            run_at: at(4),
            reason: "bridge down".into(),
        };
        ack(&b, &got[0], defer, at(3)).await?;
        want.push(run(
            2,
            (at(2), at(3)),
            AttemptOutcome::Deferred,
            Some("bridge down"),
        ));
        let got = claim(&b, "history", 1, at(4), secs(30)).await?;
        let step = AckAction::Continue {
            run_at: at(6),
            step: "typing".into(),
        };
        ack(&b, &got[0], step, at(5)).await?;
        want.push(run(2, (at(4), at(5)), AttemptOutcome::Continued, None));
        claim(&b, "history", 1, at(6), secs(10)).await?;
        let rescued = b.rescue(at(17), 10).await?;
        ensure_eq!(rescued.total(), 1, "the lapsed lease is rescued");
        want.push(run(
            2,
            (at(6), at(17)),
            AttemptOutcome::Lapsed,
            Some(LEASE_LAPSED),
        ));
        let mid = must_get(&b, job.id).await?;
        ensure_eq!(mid.history, want, "the history before the last run");
        ensure_eq!(mid.output, None, "no output before completion");

        let got = claim(&b, "history", 1, at(18), secs(30)).await?;
        ensure_eq!(got[0].attempt, 3, "the last attempt");
        let receipt = Payload::from_json(&serde_json::json!({"id": "wamid.1", "ack": "server"}))
            .map_err(|e| Failure::new(e.to_string()))?;
        let complete = AckAction::Complete {
            output: Some(receipt.clone()),
        };
        // Two callers at once with one acknowledgement (a retry racing a
        // reply on its way back), then a third: the run is recorded once.
        let acked = Ack::for_job(&got[0], complete).ok_or_else(|| Failure::new("no lease"))?;
        let acks = std::slice::from_ref(&acked);
        let (first, second) = tokio::join!(b.ack(acks, at(19)), b.ack(acks, at(19)));
        let again = b.ack(acks, at(20)).await?;
        for outcomes in [first?, second?, again] {
            ensure_eq!(
                outcomes,
                vec![AckOutcome::Applied(JobState::Completed)],
                "each copy of the completion answers applied"
            );
        }
        want.push(run(3, (at(18), at(19)), AttemptOutcome::Completed, None));
        let done = must_get(&b, job.id).await?;
        ensure_eq!(done.state, JobState::Completed, "the job's state");
        ensure_eq!(done.history, want, "the whole history");
        ensure_eq!(done.output, Some(receipt), "the output is kept");
        ensure_eq!(done.last_error, None, "a completed job keeps no error");
        let listed = client
            .list(wq_core::ListQuery::new().queue("history"))
            .await?;
        ensure_eq!(
            listed.iter().find(|j| j.id == job.id).map(|j| &j.history),
            Some(&want),
            "listing shows the history too"
        );

        // Dead, retried from the dead-letter queue, completed.
        let dead = client.enqueue(Enqueue::new("history", &2)).await?.job;
        let got = claim(&b, "history", 1, at(20), secs(30)).await?;
        let kill = AckAction::Kill {
            error: "bad input".into(),
        };
        ack(&b, &got[0], kill, at(21)).await?;
        let first = run(1, (at(20), at(21)), AttemptOutcome::Dead, Some("bad input"));
        ensure_eq!(
            b.retry_dead(&DeadJobs::Ids(vec![dead.id]), at(22)).await?,
            1,
            "revived"
        );
        let revived = must_get(&b, dead.id).await?;
        ensure_eq!(
            revived.history,
            vec![first.clone()],
            "a revived job keeps its history"
        );
        let got = claim(&b, "history", 1, at(22), secs(30)).await?;
        ack(&b, &got[0], AckAction::complete(), at(23)).await?;
        let done = must_get(&b, dead.id).await?;
        let second = run(1, (at(22), at(23)), AttemptOutcome::Completed, None);
        ensure_eq!(done.history, vec![first, second], "revived, then completed");
        ensure_eq!(done.output, None, "completed without output");

        // Released by a shutdown, then cancelled while running.
        let other = client.enqueue(Enqueue::new("history", &3)).await?.job;
        let never = client
            .enqueue(Enqueue::new("history", &4).delay(secs(3600)))
            .await?
            .job;
        let got = claim(&b, "history", 1, at(24), secs(30)).await?;
        ensure_eq!(got[0].id, other.id, "the third job");
        ensure_eq!(
            ack(&b, &got[0], AckAction::Release, at(25)).await?,
            AckOutcome::Applied(JobState::Available),
            "released"
        );
        let got = claim(&b, "history", 1, at(26), secs(30)).await?;
        b.cancel(other.id, at(27)).await?;
        let retry = AckAction::Retry {
            run_at: at(40),
            error: "stopped".into(),
        };
        ensure_eq!(
            ack(&b, &got[0], retry, at(28)).await?,
            AckOutcome::Applied(JobState::Cancelled),
            "cancelled while running"
        );
        let done = must_get(&b, other.id).await?;
        ensure_eq!(
            done.history,
            vec![
                run(1, (at(24), at(25)), AttemptOutcome::Released, None),
                run(
                    1,
                    (at(26), at(28)),
                    AttemptOutcome::Cancelled,
                    Some("stopped")
                ),
            ],
            "a release and a cancellation"
        );
        client.cancel(never.id).await?;
        let never = must_get(&b, never.id).await?;
        ensure_eq!(never.history, vec![], "a job never run has no history");
        Ok(())
    })
    .await
}

/// A job that runs more than [`MAX_HISTORY`] times keeps its latest
/// [`MAX_HISTORY`] runs.
pub async fn history_keeps_the_latest_runs<T: TestBackend>(t: &T) -> TestResult {
    with_backend(t, |b| async move {
        let (client, clock) = manual_client(&b);
        declare(&client, QueueConfig::new("history")).await?;
        let job = client.enqueue(Enqueue::new("history", &1)).await?.job;
        let t0 = clock.now();
        let runs = MAX_HISTORY as u64 + 3;
        for i in 0..runs {
            let now = t0 + secs(2 * i);
            let got = claim(&b, "history", 1, now, secs(30)).await?;
            let defer = AckAction::Defer {
                run_at: now + secs(1),
                reason: format!("wait {i}"),
            };
            ack(&b, &got[0], defer, now + secs(1)).await?;
        }
        let kept = must_get(&b, job.id).await?.history;
        let reasons: Vec<_> = kept.iter().filter_map(|a| a.error.clone()).collect();
        let want: Vec<_> = (runs - MAX_HISTORY as u64..runs)
            .map(|i| format!("wait {i}"))
            .collect();
        ensure_eq!(reasons, want, "the latest runs, oldest first");
        Ok(())
    })
    .await
}
