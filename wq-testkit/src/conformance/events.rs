//! Lifecycle events: each transition of a job is told once the store has
//! applied it, in the order it happened.

use std::collections::HashMap;
use std::time::Duration;

use wq_core::attempt::LEASE_LAPSED;
use wq_core::{
    AttemptOutcome, Backend, Clock as _, Deferral, Enqueue, EventKind, Events, JobContext,
    JobError, JobId, JobState, Payload, QueueConfig, WaitCause, Worker,
};

use crate::harness::{
    PATIENCE, TestBackend, TestResult, claim, declare, manual_client, must_get, quick_retry, secs,
    stop, with_backend,
};
use crate::{Failure, ensure, ensure_eq};

/// What the test job does, by its payload: lose its first lease (claimed
/// outside the worker), then succeed; succeed; fail once, then succeed;
/// end a step, then succeed; wait once, then succeed; fail for good; or
/// wait an hour, to be cancelled.
const KINDS: [&str; 7] = ["lapsed", "ok", "flaky", "step", "wait", "bad", "later"];

/// One job of each kind under a client and a worker sharing one hub: the
/// subscriber hears, per job, enqueued, each attempt's start and how it
/// ended (completed, retried with the error, deferred with the reason kept
/// apart, dead, cancelled, rescued from a lapsed lease), in order (but for
/// a rescue and the next start, told by two tasks), with the attempt
/// numbers the store kept.
pub async fn events_tell_each_transition<T: TestBackend>(t: &T) -> TestResult {
    with_backend(t, |b| async move {
        let (client, clock) = manual_client(&b);
        let events = Events::new(1024);
        let mut heard = events.subscribe();
        let client = client.with_events(events.clone());
        declare(&client, QueueConfig::new("events").retry(quick_retry(3))).await?;
        let mut ids: HashMap<JobId, &str> = HashMap::new();
        for kind in KINDS {
            let mut e = Enqueue::new("events", &kind).group(kind);
            if kind == "later" {
                e = e.delay(Duration::from_secs(3600));
            }
            ids.insert(client.enqueue(e).await?.job.id, kind);
        }
        let later = ids.iter().find(|(_, k)| **k == "later").map(|(id, _)| *id);
        if let Some(id) = later {
            client.cancel(id).await?;
        }
        // The first job enqueued is the first claimed; its lease lapses
        // before the worker starts, whose maintenance leader rescues it.
        let lost = claim(&b, "events", 1, clock.now(), secs(1)).await?;
        ensure_eq!(
            lost.iter().map(|j| ids[&j.id]).collect::<Vec<_>>(),
            vec!["lapsed"],
            "the job claimed outside the worker"
        );
        clock.advance(secs(2));
        let worker = Worker::new(b.clone())
            .clock(clock.clone())
            .events(events.clone())
            .id("events-worker")
            .handle("events", |ctx: JobContext| async move {
                let kind: String = ctx.payload()?;
                match (kind.as_str(), ctx.attempt(), ctx.step()) {
                    ("flaky", 1, _) => Err(JobError::retry_after("flaky", Duration::ZERO)),
                    ("step", _, None) => Err(JobError::continue_at("b", Duration::ZERO)),
                    ("wait", _, _) if ctx.job().last_error.is_none() => {
                        Err(JobError::wait_because(
                            WaitCause::RateLimited,
                            "busy",
                            Some(Duration::ZERO),
                        ))
                    }
                    ("bad", _, _) => Err(JobError::permanent("bad")),
                    ("ok", _, _) => {
                        ctx.set_output(&serde_json::json!({ "id": "wamid.ok" }))?;
                        Ok(())
                    }
                    ("flaky", _, _) => {
                        // Set, then replaced: the last value is kept.
                        ctx.set_output(&1)?;
                        ctx.set_output(&2)?;
                        Ok(())
                    }
                    _ => Ok(()),
                }
            })
            .start()
            .await?;

        let mut told: HashMap<&str, Vec<EventKind>> = HashMap::new();
        let heard_all = tokio::time::timeout(PATIENCE, async {
            while told.values().filter(|k| k.last().is_some_and(ends)).count() < KINDS.len() {
                let event = heard
                    .recv()
                    .await
                    .map_err(|e| Failure::new(format!("the subscription broke: {e}")))?;
                ensure_eq!(event.queue.as_str(), "events", "the event's queue");
                if let Some(kind) = ids.get(&event.id) {
                    told.entry(kind).or_default().push(event.kind);
                }
            }
            Ok::<(), Failure>(())
        })
        .await;
        stop(worker).await?;
        heard_all.map_err(|_| Failure::new(format!("not every job ended: {told:?}")))??;

        let worker: std::sync::Arc<str> = "events-worker".into();
        let started = |attempt| EventKind::Started {
            attempt,
            worker: worker.clone(),
        };
        let done = |attempt, output: Option<&str>| EventKind::Completed {
            attempt,
            output: output.map(Payload::from_trusted),
        };
        let enqueued = |kind: &str| {
            told[kind]
                .first()
                .is_some_and(|e| matches!(e, EventKind::Enqueued { .. }))
        };
        for kind in KINDS {
            ensure!(enqueued(kind), "`{kind}` starts enqueued: {:?}", told[kind]);
        }
        let rest = |kind: &str| told[kind][1..].to_vec();
        // The rescue is told by the maintenance task, the next start by the
        // runner: a subscriber may hear those two in either order.
        let mut lapsed = rest("lapsed");
        if lapsed.first() == Some(&started(2)) {
            lapsed.swap(0, 1);
        }
        ensure_eq!(
            lapsed,
            vec![
                EventKind::Rescued {
                    state: JobState::Available
                },
                started(2),
                done(2, None)
            ],
            "a job rescued from a lapsed lease"
        );
        ensure_eq!(
            rest("ok"),
            vec![started(1), done(1, Some(r#"{"id":"wamid.ok"}"#))],
            "a job that succeeds, with the output its handler set"
        );
        let flaky = rest("flaky");
        ensure_eq!(flaky.len(), 4, "a job that fails once: {flaky:?}");
        ensure!(
            matches!(&flaky[1], EventKind::Retried { attempt: 1, error, .. } if error.contains("flaky")),
            "the failure is told as a retry with its error: {flaky:?}"
        );
        ensure_eq!(
            (flaky[0].clone(), flaky[2].clone(), flaky[3].clone()),
            (started(1), started(2), done(2, Some("2"))),
            "a job that fails once: its attempts"
        );
        let step = rest("step");
        ensure_eq!(step.len(), 4, "a job with a step: {step:?}");
        ensure!(
            matches!(&step[1], EventKind::Deferred { reason: Deferral::Step { step }, .. } if step == "b"),
            "a step is told as deferred at the step: {step:?}"
        );
        ensure_eq!(
            (step[0].clone(), step[2].clone(), step[3].clone()),
            (started(1), started(1), done(1, None)),
            "a step spends no attempt"
        );
        let wait = rest("wait");
        ensure_eq!(wait.len(), 4, "a job that waits: {wait:?}");
        ensure!(
            matches!(&wait[1], EventKind::Deferred { reason: Deferral::Wait { cause: WaitCause::RateLimited, reason }, .. } if reason.contains("busy")),
            "a wait is told as deferred with its cause and reason: {wait:?}"
        );
        ensure_eq!(
            (wait[0].clone(), wait[2].clone(), wait[3].clone()),
            (started(1), started(1), done(1, None)),
            "a wait spends no attempt"
        );
        let bad = rest("bad");
        ensure_eq!(bad.len(), 2, "a job that fails for good: {bad:?}");
        ensure!(
            matches!(&bad[1], EventKind::Dead { attempt: 1, error } if error.contains("bad")),
            "a permanent failure is told as dead with its error: {bad:?}"
        );
        ensure_eq!(
            rest("later"),
            vec![EventKind::Cancelled],
            "a waiting job cancelled by the client"
        );
        histories_match_the_events(&b, &ids).await
    })
    .await
}

/// Each job's stored history, as the events told it: one record per run,
/// by the worker that ran it, with how it ended and its message.
async fn histories_match_the_events<B: Backend>(b: &B, ids: &HashMap<JobId, &str>) -> TestResult {
    use AttemptOutcome::{Completed, Continued, Dead, Deferred, Lapsed, Retried};
    for (id, kind) in ids {
        let job = must_get(b, *id).await?;
        let runs: Vec<_> = job
            .history
            .iter()
            .map(|a| (a.attempt, a.outcome, a.worker.to_string(), a.error.clone()))
            .collect();
        let w = |n, outcome, error: Option<&str>| {
            let worker = if outcome == Lapsed {
                "test-worker"
            } else {
                "events-worker"
            };
            (n, outcome, worker.to_owned(), error.map(str::to_owned))
        };
        let expected = match *kind {
            "lapsed" => vec![w(1, Lapsed, Some(LEASE_LAPSED)), w(2, Completed, None)],
            "ok" => vec![w(1, Completed, None)],
            "flaky" => vec![w(1, Retried, Some("flaky")), w(2, Completed, None)],
            "step" => vec![w(1, Continued, None), w(1, Completed, None)],
            "wait" => vec![w(1, Deferred, Some("busy")), w(1, Completed, None)],
            "bad" => vec![w(1, Dead, Some("bad"))],
            _ => vec![],
        };
        ensure_eq!(runs, expected, "the history of `{kind}`");
        for a in &job.history {
            ensure!(
                a.started_at <= a.ended_at,
                "`{kind}`: a run ends before it starts: {a:?}"
            );
        }
        let output = job.output.as_ref().map(|o| o.as_str().to_owned());
        let want = match *kind {
            "ok" => Some(r#"{"id":"wamid.ok"}"#.to_owned()),
            "flaky" => Some("2".to_owned()),
            _ => None,
        };
        ensure_eq!(output, want, "the output of `{kind}`");
        if job.state == JobState::Completed {
            ensure_eq!(job.last_error, None, "`{kind}` completed keeps no error");
        }
    }
    Ok(())
}

/// The last event a job can get in this test.
fn ends(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::Completed { .. } | EventKind::Dead { .. } | EventKind::Cancelled
    )
}
