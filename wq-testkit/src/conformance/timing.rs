//! Guarantees 8 and 9: delays, time chaining under concurrent enqueuers,
//! priorities among due group heads; and repeatable jobs.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use wq_core::{
    Ack, AckAction, ClaimRequest, Clock as _, Enqueue, JobState, ListQuery, QueueConfig, Repeat,
    Scheduler, Store as _, Worker,
};

use super::ledger::counting_handler;
use crate::harness::{
    PATIENCE, TestBackend, TestResult, claim, claim_with_next_due, crash, declare, join,
    manual_client, secs, stop, wait_until, with_backend,
};
use crate::{ensure, ensure_eq};

/// A delayed job is scheduled, not claimable before its time, reported by
/// `next_due`, and claimable once due.
pub async fn delayed_jobs_wait<T: TestBackend>(t: &T) -> TestResult {
    with_backend(t, |b| async move {
        let (client, clock) = manual_client(&b);
        declare(&client, QueueConfig::new("later")).await?;
        let t0 = clock.now();
        let job = client
            .enqueue(Enqueue::new("later", &1).delay(secs(10)))
            .await?
            .job;
        ensure_eq!(
            (job.state, job.run_at),
            (JobState::Scheduled, t0 + secs(10)),
            "a delayed job"
        );
        ensure!(
            claim(&b, "later", 5, t0, secs(30)).await?.is_empty(),
            "not claimable now"
        );
        ensure!(
            claim_with_next_due(&b, "later", 5, t0 + secs(9), secs(30))
                .await?
                .is_empty(),
            "not claimable early"
        );
        ensure_eq!(
            b.next_due(&"later".into(), t0).await?,
            Some(t0 + secs(10)),
            "next due"
        );
        let moved = b.promote_due(&"later".into(), t0 + secs(10)).await?;
        ensure_eq!(moved, 1, "promoted when due");
        ensure_eq!(
            client.counts("later").await?.available,
            1,
            "available once due"
        );
        let got = claim(&b, "later", 5, t0 + secs(10), secs(30)).await?;
        ensure_eq!(got.len(), 1, "claimable when due");
        let past = client
            .enqueue(Enqueue::new("later", &2).run_at(t0 - secs(60)))
            .await?
            .job;
        ensure_eq!(
            past.state,
            JobState::Available,
            "a run_at in the past means now"
        );
        Ok(())
    })
    .await
}

/// A delayed job alone in its queue becomes claimable once its time has
/// come, by a plain claim and by `ack_and_claim`, with or without
/// acknowledgements in the call, though nothing calls `promote_due`: a
/// claim finds due scheduled jobs itself, whether or not other work is due.
pub async fn a_lone_delayed_job_becomes_claimable<T: TestBackend>(t: &T) -> TestResult {
    with_backend(t, |b| async move {
        let (client, clock) = manual_client(&b);
        for q in ["alone", "grouped", "paired"] {
            declare(&client, QueueConfig::new(q)).await?;
        }
        let t0 = clock.now();
        let due = t0 + secs(10);
        let alone = client
            .enqueue(Enqueue::new("alone", &1).delay(secs(10)))
            .await?
            .job;
        let grouped = client
            .enqueue(Enqueue::new("grouped", &1).group("contact").delay(secs(10)))
            .await?
            .job;
        ensure!(
            claim(&b, "alone", 5, due - Duration::from_millis(1), secs(30))
                .await?
                .is_empty(),
            "claimable before its time"
        );
        let got = claim(&b, "alone", 5, due, secs(30)).await?;
        ensure_eq!(
            got.iter().map(|j| j.id).collect::<Vec<_>>(),
            vec![alone.id],
            "a plain claim once the delay ended, with no promotion"
        );
        let got = claim_with_next_due(&b, "grouped", 5, due, secs(30)).await?;
        ensure_eq!(
            got.iter().map(|j| j.id).collect::<Vec<_>>(),
            vec![grouped.id],
            "ack_and_claim once the delay ended, with no promotion"
        );

        // The only other job is running, so nothing else is due when the
        // acknowledgement and the claim arrive together.
        let first = client.enqueue(Enqueue::new("paired", &1)).await?.job;
        let later = client
            .enqueue(Enqueue::new("paired", &2).delay(secs(10)))
            .await?
            .job;
        let running = claim(&b, "paired", 5, t0, secs(60)).await?;
        ensure_eq!(
            running.iter().map(|j| j.id).collect::<Vec<_>>(),
            vec![first.id],
            "the due job runs"
        );
        let acks: Vec<_> = Ack::for_job(&running[0], AckAction::complete())
            .into_iter()
            .collect();
        let req = ClaimRequest::new("paired", 5, due, due + secs(30), "test-worker");
        let done = b.ack_and_claim(&acks, Some(&req), due).await?;
        ensure_eq!(
            done.jobs.iter().map(|j| j.id).collect::<Vec<_>>(),
            vec![later.id],
            "ack_and_claim with an acknowledgement, once the delay ended"
        );
        ensure_eq!(
            done.jobs[0].state,
            JobState::Running,
            "the delayed job as claimed"
        );
        Ok(())
    })
    .await
}

/// A worker sleeps until a delayed job is due and starts it then, without
/// polling: time here only moves when the test moves it.
pub async fn worker_wakes_when_delay_ends<T: TestBackend>(t: &T) -> TestResult {
    with_backend(t, |b| async move {
        let (client, clock) = manual_client(&b);
        declare(&client, QueueConfig::new("timer")).await?;
        client
            .enqueue(Enqueue::new("timer", &1).delay(secs(30)))
            .await?;
        let ran = Arc::new(AtomicU32::new(0));
        let handler = counting_handler(ran.clone());
        let worker = Worker::new(b.clone())
            .clock(clock.clone())
            .poll_interval(Duration::from_secs(3600))
            .handle("timer", handler)
            .start()
            .await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let early = ran.load(Ordering::SeqCst);
        clock.advance(secs(30));
        let started = wait_until("the delayed job to run", PATIENCE, || async {
            Ok(ran.load(Ordering::SeqCst) == 1)
        })
        .await;
        let stopped = stop(worker).await;
        ensure_eq!(early, 0, "runs before the delay ended");
        started.and(stopped.map(drop))
    })
    .await
}

/// Chained jobs keep their spacing even when four tasks enqueue into one
/// group at once, and chain after a group's latest job when it is later
/// than now.
pub async fn chaining_keeps_spacing<T: TestBackend>(t: &T) -> TestResult {
    with_backend(t, |b| async move {
        let (client, clock) = manual_client(&b);
        declare(&client, QueueConfig::new("chain")).await?;
        let t0 = clock.now();
        let mut tasks = Vec::new();
        for task in 0..4 {
            let client = client.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..25 {
                    client
                        .enqueue(
                            Enqueue::new("chain", &(task * 100 + i))
                                .group("contact")
                                .chained(secs(1), Duration::ZERO),
                        )
                        .await?;
                }
                Ok::<(), wq_core::Error>(())
            }));
        }
        for task in tasks {
            join("an enqueuer", task).await??;
        }
        let mut jobs = client
            .list(
                ListQuery::new()
                    .queue("chain")
                    .group("contact")
                    .limit(1_000),
            )
            .await?;
        jobs.sort_by_key(|j| j.seq);
        let run_ats: Vec<_> = jobs.iter().map(|j| j.run_at).collect();
        let expected: Vec<_> = (1..=100).map(|k| t0 + secs(k)).collect();
        ensure_eq!(run_ats, expected, "chained run_at values in sequence order");

        let mut jittered = Vec::new();
        for i in 0..20 {
            let e = client
                .enqueue(
                    Enqueue::new("chain", &i)
                        .group("jitter")
                        .chained(secs(2), Duration::from_millis(500)),
                )
                .await?;
            jittered.push(e.job.run_at);
        }
        let mut prev = t0;
        for at in jittered {
            let gap = at.duration_since(prev);
            ensure!(
                (secs(2)..=Duration::from_millis(2_500)).contains(&gap),
                "jittered gap {gap:?} outside 2 s..=2.5 s"
            );
            prev = at;
        }

        let far = client
            .enqueue(Enqueue::new("chain", &0).group("far").delay(secs(3600)))
            .await?
            .job;
        let next = client
            .enqueue(
                Enqueue::new("chain", &1)
                    .group("far")
                    .chained(secs(1), Duration::ZERO),
            )
            .await?
            .job;
        ensure_eq!(
            next.run_at,
            far.run_at + secs(1),
            "chained after a later job"
        );
        Ok(())
    })
    .await
}

/// Among due heads a lower priority number runs first; within a group,
/// order is never broken by priority.
pub async fn priorities_order_due_heads<T: TestBackend>(t: &T) -> TestResult {
    with_backend(t, |b| async move {
        let (client, clock) = manual_client(&b);
        declare(&client, QueueConfig::new("prio")).await?;
        declare(&client, QueueConfig::new("defaults").default_priority(7)).await?;
        let t0 = clock.now();
        client
            .enqueue_many([
                Enqueue::new("prio", &"A").group("a").priority(5),
                Enqueue::new("prio", &"B").group("b").priority(1),
                Enqueue::new("prio", &"C").group("c").priority(3),
                Enqueue::new("prio", &"U").priority(2),
                Enqueue::new("prio", &"G1").group("g").priority(9),
                Enqueue::new("prio", &"G2").group("g").priority(0),
            ])
            .await?;
        let mut order = Vec::new();
        loop {
            // A store that hands a completed job out again must not loop forever.
            ensure!(
                order.len() <= 6,
                "more jobs claimed than enqueued: {order:?}"
            );
            let got = claim(&b, "prio", 1, t0, secs(30)).await?;
            let Some(job) = got.into_iter().next() else {
                break;
            };
            order.push(job.payload.decode::<String>().unwrap_or_default());
            crate::harness::ack(&b, &job, wq_core::AckAction::complete(), t0).await?;
        }
        ensure_eq!(order, ["B", "U", "C", "A", "G1", "G2"], "claim order");
        let d = client.enqueue(Enqueue::new("defaults", &1)).await?.job;
        ensure_eq!(d.priority, 7, "the queue's default priority");
        Ok(())
    })
    .await
}

/// A repeatable job runs once per slot, also when the maintenance leader
/// dies within a slot and another worker takes over: a fixed period of
/// 10 s, then a cron schedule of 09:00 every day in São Paulo (12:00 UTC,
/// no daylight saving) on a clock moved a day at a time.
pub async fn repeated_jobs_run_once_per_slot<T: TestBackend>(t: &T) -> TestResult {
    with_backend(t, |b| async move {
        let (client, clock) = manual_client(&b);
        let period = secs(10);
        let micros = period.as_micros() as i64;
        let first = clock.now().as_micros().div_euclid(micros) * micros;
        let every = Repeat::every("tick", period, Enqueue::new("every", &"tick"));
        let slots = Slots {
            first: wq_core::Timestamp::from_micros(first),
            step: period,
        };
        once_per_slot(&b, &client, &clock, every, "every", slots).await?;

        let day = secs(24 * 3600);
        let noon = secs(12 * 3600).as_micros() as i64;
        let day_micros = day.as_micros() as i64;
        let now = clock.now().as_micros();
        let first = (now - noon).div_euclid(day_micros) * day_micros + noon + day_micros;
        let daily = Repeat::cron(
            "nine",
            "0 9 * * *",
            "America/Sao_Paulo",
            Enqueue::new("cron", &"nine"),
        )
        .map_err(wq_core::Error::from)?;
        let slots = Slots {
            first: wq_core::Timestamp::from_micros(first),
            step: day,
        };
        once_per_slot(&b, &client, &clock, daily, "cron", slots).await
    })
    .await
}

/// Where the slots of a schedule fall: `first`, then every `step`.
#[derive(Clone, Copy)]
struct Slots {
    first: wq_core::Timestamp,
    step: Duration,
}

/// Runs `repeat`, whose job goes to `queue`, through four slots from
/// `slots.first` (at least the clock's time): three under one leader that
/// then crashes within the third, a takeover within that slot, and a fourth
/// slot under the successor.
async fn once_per_slot<B: wq_core::Backend>(
    b: &B,
    client: &wq_core::Client<B>,
    clock: &Arc<wq_core::ManualClock>,
    repeat: Repeat,
    queue: &str,
    slots: Slots,
) -> TestResult {
    // One second into the slot, so a two-second step stays within it.
    clock.set(slots.first + secs(1));
    declare(
        client,
        QueueConfig::new(queue).lease(Duration::from_millis(300)),
    )
    .await?;
    let ran = Arc::new(AtomicU32::new(0));
    let start = || {
        Worker::new(b.clone())
            .clock(clock.clone())
            .repeat(repeat.clone())
            .handle(queue, counting_handler(ran.clone()))
            .start()
    };
    let completed = |n: u64| async move {
        wait_until(
            &format!("{n} slots of {queue} to run"),
            PATIENCE,
            || async { Ok(client.counts(queue).await?.completed >= n) },
        )
        .await
    };
    let leader = start().await?;
    let mut result = completed(1).await;
    for n in 2..=3 {
        if result.is_ok() {
            clock.advance(slots.step);
            result = completed(n).await;
        }
    }
    let crashed = crash(leader).await;
    result?;
    crashed?;
    // The dead leader's lock lapses; the slot has not changed. The new
    // leader must not enqueue this slot again.
    clock.advance(secs(2));
    let successor = start().await?;
    let result = async {
        tokio::time::sleep(Duration::from_millis(600)).await;
        let jobs = client.list(ListQuery::new().queue(queue)).await?;
        ensure_eq!(jobs.len(), 3, "jobs after the takeover within a slot");
        clock.advance(slots.step);
        completed(4).await
    }
    .await;
    let stopped = stop(successor).await;
    result?;
    stopped?;
    let jobs = client.list(ListQuery::new().queue(queue)).await?;
    ensure_eq!(jobs.len(), 4, "jobs enqueued for four slots");
    ensure_eq!(ran.load(Ordering::SeqCst), 4, "runs");
    let mut runs_at: Vec<_> = jobs.iter().map(|j| j.run_at).collect();
    runs_at.sort();
    let expected: Vec<_> = (0..4u32).map(|k| slots.first + slots.step * k).collect();
    ensure_eq!(runs_at, expected, "each job due at its slot");
    Ok(())
}
