//! The engine over a backend: graceful shutdown, wake-ups without polling,
//! timeouts, panics, and no loss under random failures.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use rand::RngExt;
use wq_core::{
    Client, Enqueue, JobContext, JobError, JobState, QueueConfig, QueueOptions, Worker,
    WorkerHandle,
};
use wq_whatsapp::{JobMessageId as _, MessageId};

use super::ledger::{Ledger, Step, counting_handler, recording_handler, start_worker};
use crate::harness::{
    PATIENCE, TestBackend, TestResult, claim, declare, must_get, quick_retry, secs, stop,
    stop_within, wait_until, with_backend,
};
use crate::{ensure, ensure_eq};

/// Shutdown lets short handlers finish, then releases the job still running
/// at the deadline: available at once, no attempt spent.
pub async fn shutdown_finishes_or_releases<T: TestBackend>(t: &T) -> TestResult {
    with_backend(t, |b| async move {
        let client = Client::new(b.clone());
        declare(&client, QueueConfig::new("bye")).await?;
        let quick = client.enqueue(Enqueue::new("bye", &"quick")).await?.job.id;
        let stuck = client.enqueue(Enqueue::new("bye", &"stuck")).await?.job.id;
        let started = Arc::new(AtomicU32::new(0));
        let handler = {
            let started = started.clone();
            move |ctx: JobContext| {
                let started = started.clone();
                async move {
                    started.fetch_add(1, Ordering::SeqCst);
                    let kind: String = ctx.payload()?;
                    if kind == "stuck" {
                        tokio::time::sleep(PATIENCE).await;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    Ok::<(), JobError>(())
                }
            }
        };
        let worker = start_worker(&b, "bye", handler, 4).await?;
        wait_until("both jobs to start", PATIENCE, || async {
            Ok(started.load(Ordering::SeqCst) == 2)
        })
        .await?;
        let report = stop_within(worker, Duration::from_millis(600)).await?;
        ensure_eq!(
            (report.finished, report.released),
            (1, 1),
            "shutdown report"
        );
        ensure_eq!(
            must_get(&b, quick).await?.state,
            JobState::Completed,
            "the short job"
        );
        let released = must_get(&b, stuck).await?;
        ensure_eq!(
            (released.state, released.attempt),
            (JobState::Available, 0),
            "the released job"
        );
        ensure!(released.lease.is_none(), "a released job holds no lease");
        let now = client.clock().now();
        let again = claim(&b, "bye", 5, now, secs(30)).await?;
        ensure_eq!(
            again.iter().map(|j| j.id).collect::<Vec<_>>(),
            vec![stuck],
            "released jobs are claimable at once"
        );
        Ok(())
    })
    .await
}

/// An idle worker starts new work as soon as it is enqueued, though its
/// fallback poll is an hour.
pub async fn idle_workers_wake_on_enqueue<T: TestBackend>(t: &T) -> TestResult {
    with_backend(t, |b| async move {
        let client = Client::new(b.clone());
        declare(&client, QueueConfig::new("wake")).await?;
        let ran = Arc::new(AtomicU32::new(0));
        let handler = counting_handler(ran.clone());
        let worker = Worker::new(b.clone())
            .poll_interval(Duration::from_secs(3600))
            .handle("wake", handler)
            .start()
            .await?;
        let mut result = Ok(());
        for round in 1..=3 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            client.enqueue(Enqueue::new("wake", &round)).await?;
            result = wait_until("the worker to wake", PATIENCE, || async {
                Ok(ran.load(Ordering::SeqCst) == round)
            })
            .await;
            if result.is_err() {
                break;
            }
        }
        let stopped = stop(worker).await;
        result.and(stopped.map(drop))
    })
    .await
}

/// The maintenance leader audits each queue it serves on its timer while
/// work runs, and a sound store shows no anomaly: the audits happen (they
/// are counted) and find nothing on a busy run of retries, groups and
/// concurrent claims.
pub async fn the_leader_audits_its_queues<T: TestBackend>(t: &T) -> TestResult {
    with_backend(t, |b| async move {
        let client = Client::new(b.clone());
        declare(&client, QueueConfig::new("audited").retry(quick_retry(3))).await?;
        let jobs = (0..300u32).map(|i| {
            let g = format!("g{}", i % 30);
            let kind = if i % 7 == 0 { "fail" } else { "ok" };
            let step = Step {
                g: g.clone(),
                n: i / 30,
                kind: kind.into(),
            };
            Enqueue::new("audited", &step).group(g)
        });
        client.enqueue_many(jobs).await?;
        let ledger = Arc::new(Ledger::default());
        let opts = QueueOptions::default().concurrency(6);
        let start = || {
            Worker::new(b.clone())
                .audit_every(Duration::from_millis(20))
                .handle_with("audited", recording_handler(ledger.clone()), opts)
                .start()
        };
        let (w1, w2) = (start().await?, start().await?);
        let audited = |w1: &WorkerHandle, w2: &WorkerHandle| w1.stats().audits + w2.stats().audits;
        let done = wait_until("every job to end, audited along the way", PATIENCE, || {
            let audits = audited(&w1, &w2);
            let client = client.clone();
            async move { Ok(audits >= 3 && client.counts("audited").await?.pending() == 0) }
        })
        .await;
        let stats = (w1.stats(), w2.stats());
        let stopped = (stop(w1).await, stop(w2).await);
        done?;
        stopped.0?;
        stopped.1?;
        ensure!(
            stats.0.audits + stats.1.audits >= 3,
            "audits run: {} and {}",
            stats.0.audits,
            stats.1.audits
        );
        ensure_eq!(
            stats.0.anomalies + stats.1.anomalies,
            0,
            "anomalies found on a sound store"
        );
        let c = client.counts("audited").await?;
        ensure_eq!(c.completed + c.dead, 300, "jobs finished");
        ledger.check_fifo()
    })
    .await
}

/// An attempt that runs past the queue's timeout fails; a handler that
/// panics fails too, and the worker goes on.
pub async fn timeouts_and_panics_fail_the_attempt<T: TestBackend>(t: &T) -> TestResult {
    with_backend(t, |b| async move {
        let client = Client::new(b.clone());
        let config = QueueConfig::new("harsh")
            .timeout(Duration::from_millis(100))
            .retry(quick_retry(2));
        declare(&client, config).await?;
        let slow = client.enqueue(Enqueue::new("harsh", &"slow")).await?.job.id;
        let panics = client
            .enqueue(Enqueue::new("harsh", &"panic"))
            .await?
            .job
            .id;
        let fine = client.enqueue(Enqueue::new("harsh", &"fine")).await?.job.id;
        let handler = |ctx: JobContext| async move {
            let kind: String = ctx.payload()?;
            match kind.as_str() {
                "slow" => tokio::time::sleep(Duration::from_secs(30)).await,
                "panic" => panic!("bad data in handler"),
                _ => {}
            }
            Ok::<(), JobError>(())
        };
        let worker = start_worker(&b, "harsh", handler, 4).await?;
        let done = wait_until("all three to finish", PATIENCE, || async {
            let c = client.counts("harsh").await?;
            Ok(c.dead == 2 && c.completed == 1)
        })
        .await;
        let stopped = stop(worker).await;
        done?;
        stopped?;
        let slow = must_get(&b, slow).await?;
        ensure!(
            slow.last_error
                .as_deref()
                .is_some_and(|e| e.contains("timed out")),
            "timeout error: {:?}",
            slow.last_error
        );
        ensure_eq!(slow.attempt, 2, "attempts of the slow job");
        let panics = must_get(&b, panics).await?;
        ensure!(
            panics
                .last_error
                .as_deref()
                .is_some_and(|e| e.contains("bad data")),
            "panic error: {:?}",
            panics.last_error
        );
        ensure_eq!(
            must_get(&b, fine).await?.state,
            JobState::Completed,
            "the healthy job"
        );
        Ok(())
    })
    .await
}

/// Under random retryable and permanent failures across two workers, every
/// job ends in exactly one terminal state, groups keep their order, and
/// nothing is lost or duplicated.
pub async fn no_loss_under_failures<T: TestBackend>(t: &T) -> TestResult {
    with_backend(t, |b| async move {
        let client = Client::new(b.clone());
        declare(&client, QueueConfig::new("chaos").retry(quick_retry(4))).await?;
        let mut rng = rand::rng();
        let mut jobs = Vec::new();
        for i in 0..500u32 {
            let roll = rng.random_range(0..100);
            let kind = match roll {
                0..5 => "die",
                5..25 => "fail",
                _ => "ok",
            };
            let (g, n) = if i < 400 {
                (format!("g{}", i % 40), i / 40)
            } else {
                (format!("solo{i}"), 0)
            };
            let step = Step {
                g: g.clone(),
                n,
                kind: kind.into(),
            };
            let e = Enqueue::new("chaos", &step);
            jobs.push(if i < 400 { e.group(g) } else { e });
        }
        let stored = client.enqueue_many(jobs).await?;
        let ids: Vec<_> = stored.iter().map(|e| e.job.id).collect();
        let ledger = Arc::new(Ledger::default());
        let opts = QueueOptions::default().concurrency(6);
        let w1 = Worker::new(b.clone())
            .handle_with("chaos", recording_handler(ledger.clone()), opts)
            .start()
            .await?;
        let w2 = Worker::new(b.clone())
            .handle_with("chaos", recording_handler(ledger.clone()), opts)
            .start()
            .await?;
        let done = wait_until("every job to end", PATIENCE, || async {
            Ok(client.counts("chaos").await?.pending() == 0)
        })
        .await;
        let stopped = (stop(w1).await, stop(w2).await);
        done?;
        stopped.0?;
        stopped.1?;
        let mut states: HashMap<JobState, u64> = HashMap::new();
        for id in &ids {
            let job = must_get(&b, *id).await?;
            ensure!(job.state.is_terminal(), "job {id} ended {:?}", job.state);
            ensure!(job.finished_at.is_some(), "job {id} has no finished_at");
            ensure!(
                job.attempt <= job.max_attempts,
                "job {id} ran {} times",
                job.attempt
            );
            *states.entry(job.state).or_default() += 1;
        }
        let counts = client.counts("chaos").await?;
        ensure_eq!(counts.total(), ids.len() as u64, "jobs stored");
        ensure_eq!(
            counts.completed + counts.dead,
            ids.len() as u64,
            "terminal jobs"
        );
        ensure_eq!(
            states.get(&JobState::Completed).copied().unwrap_or(0),
            counts.completed,
            "completed"
        );
        ledger.check_fifo()?;
        Ok(())
    })
    .await
}

/// Every attempt of a job sees the same job id and the same pre-assigned
/// WhatsApp message id, so a bridge can drop a resend after a lost
/// acknowledgement.
pub async fn message_id_is_stable_across_attempts<T: TestBackend>(t: &T) -> TestResult {
    with_backend(t, |b| async move {
        let client = Client::new(b.clone());
        declare(&client, QueueConfig::new("ids").retry(quick_retry(3))).await?;
        let id = client.enqueue(Enqueue::new("ids", &"hi")).await?.job.id;
        let seen: Arc<parking_lot::Mutex<Vec<(wq_core::JobId, MessageId)>>> = Arc::default();
        let handler = {
            let seen = seen.clone();
            move |ctx: JobContext| {
                let seen = seen.clone();
                async move {
                    seen.lock().push((ctx.id(), ctx.message_id()));
                    if ctx.attempt() < 3 {
                        return Err(JobError::retry("acknowledgement lost"));
                    }
                    Ok(())
                }
            }
        };
        let worker = start_worker(&b, "ids", handler, 2).await?;
        let done = wait_until("the third attempt to succeed", PATIENCE, || async {
            Ok(must_get(&b, id).await?.state == JobState::Completed)
        })
        .await;
        let stopped = stop(worker).await;
        done?;
        stopped?;
        let seen = seen.lock().clone();
        ensure_eq!(seen.len(), 3, "attempts");
        ensure!(
            seen.iter().all(|s| *s == seen[0]),
            "ids changed between attempts: {seen:?}"
        );
        ensure_eq!(seen[0].0, id, "the job id");
        ensure_eq!(seen[0].1, MessageId::for_job(id), "the message id");
        Ok(())
    })
    .await
}
