//! Guarantee 10: cancel, pause and resume, retention, counts, positions,
//! listing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use wq_core::{
    AckAction, AckOutcome, Admin as _, Client, Clock as _, Counts, Enqueue, Error, ExtendOutcome,
    JobContext, JobError, JobState, LeaseRef, ListQuery, QueueConfig, Retention, Scheduler,
    Store as _, StoreError, Worker,
};

use crate::harness::{
    Failure, PATIENCE, TestBackend, TestResult, ack, claim, claim_with_next_due, complete_all,
    declare, manual_client, must_get, secs, stop, token, wait_until, with_backend,
};
use crate::{ensure, ensure_eq};

/// A waiting job is cancelled at once and its group moves on; a running job
/// is asked to stop, ends cancelled (or completed if it finished), and holds
/// its group until then; a finished job cannot be cancelled.
pub async fn cancel_waiting_and_running<T: TestBackend>(t: &T) -> TestResult {
    with_backend(t, |b| async move {
        let (client, clock) = manual_client(&b);
        declare(&client, QueueConfig::new("cancel")).await?;
        let now = clock.now();
        let ids: Vec<_> = client
            .enqueue_many((0..4).map(|i| Enqueue::new("cancel", &i).group("g")))
            .await?
            .into_iter()
            .map(|e| e.job.id)
            .collect();
        let cancelled = client.cancel(ids[1]).await?;
        ensure_eq!(
            cancelled.state,
            JobState::Cancelled,
            "a waiting job in the middle of its group"
        );
        let head = claim(&b, "cancel", 5, now, secs(30)).await?;
        ensure_eq!(
            head.iter().map(|j| j.id).collect::<Vec<_>>(),
            vec![ids[0]],
            "the head runs"
        );
        let asked = client.cancel(ids[0]).await?;
        ensure!(
            asked.state == JobState::Running && asked.cancel_requested,
            "a running job is asked to stop: {asked:?}"
        );
        let refs = [LeaseRef {
            id: ids[0],
            token: token(&head[0])?,
        }];
        ensure_eq!(
            b.extend(&refs, now + secs(30), now).await?,
            vec![ExtendOutcome::CancelRequested],
            "the heartbeat learns of it"
        );
        ensure!(
            claim(&b, "cancel", 5, now, secs(30)).await?.is_empty(),
            "the group waits for the running job"
        );
        let retry = AckAction::Retry {
            run_at: now,
            error: "stopped".into(),
        };
        ensure_eq!(
            ack(&b, &head[0], retry, now).await?,
            AckOutcome::Applied(JobState::Cancelled),
            "a failing cancelled job is not retried"
        );
        let next = claim(&b, "cancel", 5, now, secs(30)).await?;
        ensure_eq!(
            next.iter().map(|j| j.id).collect::<Vec<_>>(),
            vec![ids[2]],
            "the group skips the cancelled job"
        );
        client.cancel(ids[2]).await?;
        ensure_eq!(
            ack(&b, &next[0], AckAction::complete(), now).await?,
            AckOutcome::Applied(JobState::Completed),
            "a job that finished anyway is completed"
        );
        let finished = client.cancel(ids[2]).await;
        ensure!(
            matches!(
                finished,
                Err(Error::Store(StoreError::InvalidState {
                    state: JobState::Completed,
                    ..
                }))
            ),
            "cancelling a completed job: {finished:?}"
        );
        let last = claim(&b, "cancel", 5, now, secs(30)).await?;
        ensure_eq!(
            last.iter().map(|j| j.id).collect::<Vec<_>>(),
            vec![ids[3]],
            "the last job"
        );
        Ok(())
    })
    .await
}

/// Cancelling a running job stops its handler at the next heartbeat and the
/// job ends cancelled.
pub async fn cancel_stops_a_running_handler<T: TestBackend>(t: &T) -> TestResult {
    with_backend(t, |b| async move {
        let client = Client::new(b.clone());
        declare(
            &client,
            QueueConfig::new("stop").lease(Duration::from_millis(300)),
        )
        .await?;
        let id = client.enqueue(Enqueue::new("stop", &1)).await?.job.id;
        let stopped = Arc::new(AtomicBool::new(false));
        let handler = {
            let stopped = stopped.clone();
            move |ctx: JobContext| {
                let stopped = stopped.clone();
                async move {
                    let _ = tokio::time::timeout(PATIENCE, ctx.cancelled()).await;
                    stopped.store(true, Ordering::SeqCst);
                    Err::<(), _>(JobError::retry("stopped"))
                }
            }
        };
        let worker = Worker::new(b.clone())
            .handle("stop", handler)
            .start()
            .await?;
        let result = async {
            wait_until("the job to run", PATIENCE, || async {
                Ok(client.counts("stop").await?.running == 1)
            })
            .await?;
            client.cancel(id).await?;
            wait_until("the job to end cancelled", PATIENCE, || async {
                Ok(must_get(&b, id).await?.state == JobState::Cancelled)
            })
            .await?;
            ensure!(
                stopped.load(Ordering::SeqCst),
                "the handler saw the cancellation"
            );
            Ok(())
        }
        .await;
        let stopped = stop(worker).await;
        result.and(stopped.map(drop))
    })
    .await
}

/// A paused queue hands out nothing but still takes jobs; resuming wakes an
/// idle worker at once.
pub async fn pause_and_resume<T: TestBackend>(t: &T) -> TestResult {
    with_backend(t, |b| async move {
        let client = Client::new(b.clone());
        declare(&client, QueueConfig::new("pausable")).await?;
        client.pause("pausable").await?;
        let info = client
            .queue("pausable")
            .await?
            .ok_or_else(|| Failure::new("queue vanished"))?;
        ensure!(info.paused, "the queue reports paused");
        let id = client.enqueue(Enqueue::new("pausable", &1)).await?.job.id;
        let now = client.clock().now();
        ensure!(
            claim_with_next_due(&b, "pausable", 5, now, secs(30))
                .await?
                .is_empty(),
            "a paused queue hands out nothing"
        );
        ensure_eq!(
            b.next_due(&"pausable".into(), now).await?,
            None,
            "a paused queue has nothing due"
        );
        let worker = Worker::new(b.clone())
            .poll_interval(Duration::from_secs(3600))
            .handle("pausable", |_: JobContext| async { Ok::<(), JobError>(()) })
            .start()
            .await?;
        tokio::time::sleep(Duration::from_millis(150)).await;
        let waited = must_get(&b, id).await?.state;
        client.resume("pausable").await?;
        let done = wait_until("the job to run after resume", PATIENCE, || async {
            Ok(must_get(&b, id).await?.state == JobState::Completed)
        })
        .await;
        let stopped = stop(worker).await;
        ensure_eq!(waited, JobState::Available, "state while paused");
        done?;
        stopped?;
        ensure!(
            !client.queue("pausable").await?.is_some_and(|q| q.paused),
            "resumed"
        );
        Ok(())
    })
    .await
}

/// Finished jobs are pruned after their queue's retention (dead jobs after
/// theirs), with their idempotency keys; zero retention drops completed
/// jobs at once.
pub async fn retention_prunes_finished_jobs<T: TestBackend>(t: &T) -> TestResult {
    with_backend(t, |b| async move {
        let (client, clock) = manual_client(&b);
        let keep = Retention {
            completed: secs(3600),
            dead: secs(7200),
        };
        declare(&client, QueueConfig::new("keep").retention(keep)).await?;
        let drop_at_once = Retention {
            completed: Duration::ZERO,
            dead: secs(7200),
        };
        declare(
            &client,
            QueueConfig::new("ephemeral").retention(drop_at_once),
        )
        .await?;
        let t0 = clock.now();
        let done = client
            .enqueue(Enqueue::new("keep", &1).idempotency_key("k"))
            .await?
            .job;
        let dead = client.enqueue(Enqueue::new("keep", &2)).await?.job;
        let waiting = client
            .enqueue(Enqueue::new("keep", &3).delay(secs(100_000)))
            .await?
            .job;
        for j in claim(&b, "keep", 5, t0, secs(30)).await? {
            let action = if j.id == done.id {
                AckAction::complete()
            } else {
                AckAction::Kill { error: "x".into() }
            };
            ack(&b, &j, action, t0).await?;
        }
        ensure_eq!(
            b.prune(t0 + secs(3599), 100).await?,
            0,
            "pruned before retention"
        );
        ensure_eq!(
            b.prune(t0 + secs(3600), 100).await?,
            1,
            "pruned after the completed retention"
        );
        ensure!(b.get(done.id).await?.is_none(), "the completed job is gone");
        let counts = client.counts("keep").await?;
        ensure!(
            counts.completed == 0 && counts.dead == 1,
            "counts follow the prune: {counts:?}"
        );
        ensure!(
            b.get(dead.id).await?.is_some(),
            "the dead job is kept longer"
        );
        let reused = client
            .enqueue(Enqueue::new("keep", &4).idempotency_key("k"))
            .await?;
        ensure!(reused.created, "a pruned job's key is free again");
        ensure_eq!(
            b.prune(t0 + secs(7200), 100).await?,
            1,
            "pruned after the dead retention"
        );
        ensure!(b.get(dead.id).await?.is_none(), "the dead job is gone");
        ensure_eq!(client.counts("keep").await?.dead, 0, "no dead job counted");
        ensure!(
            b.get(waiting.id).await?.is_some(),
            "waiting jobs are never pruned"
        );

        let gone = client.enqueue(Enqueue::new("ephemeral", &1)).await?.job;
        let got = claim(&b, "ephemeral", 1, t0, secs(30)).await?;
        ensure_eq!(got.len(), 1, "claimed");
        ensure_eq!(
            ack(&b, &got[0], AckAction::complete(), t0).await?,
            AckOutcome::Applied(JobState::Completed),
            "completed"
        );
        ensure!(
            b.get(gone.id).await?.is_none(),
            "zero retention drops a completed job at once"
        );
        ensure_eq!(
            client.counts("ephemeral").await?.total(),
            0,
            "nothing counted"
        );
        Ok(())
    })
    .await
}

/// The maintenance leader prunes at the interval its worker was given.
pub async fn the_leader_prunes_at_its_interval<T: TestBackend>(t: &T) -> TestResult {
    with_backend(t, |b| async move {
        let client = Client::new(b.clone());
        let brief = Retention {
            completed: Duration::from_millis(1),
            dead: secs(3600),
        };
        declare(&client, QueueConfig::new("pr").retention(brief)).await?;
        let worker = Worker::new(b.clone())
            .prune_every(secs(1))
            .handle("pr", |_job: JobContext| async { Ok::<(), JobError>(()) })
            .start()
            .await?;
        let result = async {
            // A first job gone shows a prune has run; a second one, stored
            // after it, needs another prune, within the interval.
            for (n, within) in [(1, PATIENCE), (2, secs(5))] {
                let job = client.enqueue(Enqueue::new("pr", &n)).await?.job;
                wait_until(&format!("job {n} pruned"), within, || async {
                    Ok(client.get(job.id).await?.is_none())
                })
                .await?;
            }
            ensure_eq!(client.counts("pr").await?.completed, 0, "uncounted");
            Ok(())
        }
        .await;
        let _ = stop(worker).await;
        result
    })
    .await
}

/// Counts by state follow every transition.
pub async fn counts_by_state<T: TestBackend>(t: &T) -> TestResult {
    with_backend(t, |b| async move {
        let (client, clock) = manual_client(&b);
        declare(&client, QueueConfig::new("counted").max_attempts(1)).await?;
        let t0 = clock.now();
        client
            .enqueue_many((0..6).map(|i| Enqueue::new("counted", &i)))
            .await?;
        client
            .enqueue(Enqueue::new("counted", &6).delay(secs(60)))
            .await?;
        let cancel_me = client
            .enqueue(Enqueue::new("counted", &7).delay(secs(60)))
            .await?
            .job;
        client.cancel(cancel_me.id).await?;
        let got = claim(&b, "counted", 4, t0, secs(30)).await?;
        ensure_eq!(got.len(), 4, "claimed");
        ack(&b, &got[0], AckAction::complete(), t0).await?;
        ack(&b, &got[1], AckAction::Kill { error: "x".into() }, t0).await?;
        let c = client.counts("counted").await?;
        let expected = Counts {
            scheduled: 1,
            available: 2,
            running: 2,
            completed: 1,
            dead: 1,
            cancelled: 1,
            finished: 3,
        };
        ensure_eq!(c, expected, "counts");
        ensure_eq!(c.total(), 8, "total");
        // Finished only grows: a revived dead job and a pruned one leave
        // it as it was, and a queue that keeps nothing counts its own.
        client
            .retry_dead(wq_core::DeadJobs::All("counted".into()))
            .await?;
        ensure_eq!(
            client.counts("counted").await?.finished,
            3,
            "after a revival"
        );
        let drop_at_once = Retention {
            completed: Duration::ZERO,
            dead: secs(60),
        };
        declare(
            &client,
            QueueConfig::new("kept-none").retention(drop_at_once),
        )
        .await?;
        client.enqueue(Enqueue::new("kept-none", &1)).await?;
        let one = claim(&b, "kept-none", 1, t0, secs(30)).await?;
        complete_all(&b, &one, t0).await?;
        let c = client.counts("kept-none").await?;
        ensure!(
            c.completed == 0 && c.finished == 1,
            "dropped but counted: {c:?}"
        );
        b.prune(t0 + secs(3600), 100).await?;
        ensure_eq!(client.counts("counted").await?.finished, 3, "after a prune");
        Ok(())
    })
    .await
}

/// A waiting job's position counts the jobs of its group that must finish
/// before it starts, and the waiting jobs of its queue that start before
/// it; a running or finished job has none.
pub async fn positions_in_group_and_queue<T: TestBackend>(t: &T) -> TestResult {
    with_backend(t, |b| async move {
        let (client, clock) = manual_client(&b);
        declare(&client, QueueConfig::new("pos")).await?;
        let t0 = clock.now();
        let g: Vec<_> = client
            .enqueue_many((0..3).map(|i| Enqueue::new("pos", &i).group("contact")))
            .await?
            .into_iter()
            .map(|e| e.job.id)
            .collect();
        let urgent = client
            .enqueue(Enqueue::new("pos", &"urgent").priority(-1))
            .await?
            .job
            .id;
        for (i, id) in g.iter().enumerate() {
            let p = client
                .position(*id)
                .await?
                .ok_or_else(|| Failure::new("no position"))?;
            ensure_eq!(p.in_group, Some(i as u64), "position in group of job {i}");
            ensure_eq!(p.in_queue, i as u64 + 1, "position in queue of job {i}");
        }
        let p = client
            .position(urgent)
            .await?
            .ok_or_else(|| Failure::new("no position"))?;
        ensure_eq!(
            (p.in_group, p.in_queue),
            (None, 0),
            "an urgent ungrouped job"
        );
        let got = claim(&b, "pos", 1, t0, secs(30)).await?;
        ensure_eq!(got[0].id, urgent, "the urgent job first");
        let head = claim(&b, "pos", 1, t0, secs(30)).await?;
        ensure!(
            client.position(head[0].id).await?.is_none(),
            "a running job has no position"
        );
        let p = client
            .position(g[2])
            .await?
            .ok_or_else(|| Failure::new("no position"))?;
        ensure_eq!(
            (p.in_group, p.in_queue),
            (Some(2), 1),
            "the last job while the head runs"
        );
        Ok(())
    })
    .await
}

/// Listing filters by queue, state and group, and pages by id.
pub async fn listing_filters_and_pages<T: TestBackend>(t: &T) -> TestResult {
    with_backend(t, |b| async move {
        let (client, clock) = manual_client(&b);
        declare(&client, QueueConfig::new("l1")).await?;
        declare(&client, QueueConfig::new("l2")).await?;
        let mut ids: Vec<_> = client
            .enqueue_many(
                (0..25)
                    .map(|i| Enqueue::new("l1", &i).group(if i % 2 == 0 { "even" } else { "odd" })),
            )
            .await?
            .into_iter()
            .map(|e| e.job.id)
            .collect();
        client
            .enqueue(Enqueue::new("l2", &0).delay(secs(60)))
            .await?;
        ids.sort();
        let mut paged = Vec::new();
        let mut query = ListQuery::new().queue("l1").limit(10);
        loop {
            // A store that ignores the cursor must not page forever.
            ensure!(paged.len() <= ids.len(), "more jobs paged than stored");
            let page = client.list(query.clone()).await?;
            let Some(last) = page.last() else { break };
            query = query.after(last.id);
            paged.extend(page.iter().map(|j| j.id));
        }
        ensure_eq!(paged, ids, "pages of l1 in id order");
        let even = client
            .list(ListQuery::new().queue("l1").group("even").limit(100))
            .await?;
        ensure_eq!(even.len(), 13, "jobs of one group");
        let scheduled = client
            .list(ListQuery::new().state(JobState::Scheduled))
            .await?;
        ensure!(
            scheduled.len() == 1 && scheduled[0].queue.as_str() == "l2",
            "jobs by state across queues"
        );

        // Tenants, keys, and a group's finished jobs beside its waiting ones.
        let tenants = client
            .enqueue_many((0..6).map(|i| {
                Enqueue::new("l2", &i)
                    .tenant(if i < 4 { "acme" } else { "other" })
                    .group("shared")
                    .idempotency_key(format!("key-{i}"))
            }))
            .await?;
        let acme: Vec<_> = client
            .list(ListQuery::new().tenant("acme"))
            .await?
            .iter()
            .map(|j| j.id)
            .collect();
        let mut want: Vec<_> = tenants[..4].iter().map(|e| e.job.id).collect();
        want.sort();
        ensure_eq!(acme, want, "a tenant's jobs across queues, in id order");
        let keyed = client
            .list(ListQuery::new().queue("l2").idempotency_key("key-5"))
            .await?;
        ensure!(
            keyed.len() == 1 && keyed[0].id == tenants[5].job.id,
            "the job an idempotency key names: {keyed:?}"
        );
        let none = client
            .list(ListQuery::new().queue("l1").idempotency_key("key-5"))
            .await?;
        ensure!(none.is_empty(), "a key is looked up in its own queue only");
        for _ in 0..2 {
            let now = clock.now();
            let jobs = claim(&b, "l2", 10, now, secs(30)).await?;
            ensure_eq!(jobs.len(), 1, "the group's head alone");
            complete_all(&b, &jobs, now).await?;
        }
        let done = client
            .list(ListQuery::new().queue("l2").group("shared"))
            .await?;
        ensure_eq!(done.len(), 6, "a group's finished and waiting jobs");
        ensure!(
            done.iter()
                .filter(|j| j.state == JobState::Completed)
                .count()
                == 2,
            "two of the group's jobs completed: {:?}",
            done.iter().map(|j| j.state).collect::<Vec<_>>()
        );
        let finished = client
            .list(
                ListQuery::new()
                    .queue("l2")
                    .group("shared")
                    .state(JobState::Completed)
                    .tenant("acme"),
            )
            .await?;
        ensure_eq!(finished.len(), 2, "filters combine");

        // Groups and keys belong to a queue: naming none is refused.
        for query in [
            ListQuery::new().group("shared"),
            ListQuery::new().idempotency_key("key-1"),
        ] {
            match client.list(query).await {
                Err(Error::Invalid(e)) if e.field == "queue" => {}
                other => {
                    return Err(Failure::new(format!(
                        "a group or key without its queue: {other:?}"
                    )));
                }
            }
        }
        Ok(())
    })
    .await
}

/// The front of a queue's line: how long the job next in line has been
/// due, at constant cost; a delayed job counts once due, a running one no
/// more.
pub async fn the_front_of_the_line_is_timed<T: TestBackend>(t: &T) -> TestResult {
    with_backend(t, |b| async move {
        let (client, clock) = manual_client(&b);
        declare(&client, QueueConfig::new("front")).await?;
        ensure_eq!(client.oldest_wait("front").await?, None, "nothing waits");
        let start = clock.now();
        client.enqueue(Enqueue::new("front", &1)).await?;
        client
            .enqueue(Enqueue::new("front", &2).delay(secs(10)))
            .await?;
        clock.advance(secs(4));
        ensure_eq!(
            client.oldest_wait("front").await?,
            Some(secs(4)),
            "the due job has waited 4 s"
        );
        let jobs = claim(&b, "front", 1, clock.now(), secs(60)).await?;
        ensure_eq!(jobs.len(), 1, "the due job claimed");
        ensure_eq!(
            client.oldest_wait("front").await?,
            None,
            "a running job waits no more"
        );
        clock.advance(secs(9));
        ensure_eq!(
            b.next_in_line(&"front".into(), clock.now()).await?,
            Some(start + secs(10)),
            "the delayed job, due 3 s ago and not yet promoted"
        );
        match client.oldest_wait("nope").await {
            Err(Error::Invalid(e)) if e.field == "queue" => Ok(()),
            other => Err(Failure::new(format!("an unknown queue: {other:?}"))),
        }
    })
    .await
}
