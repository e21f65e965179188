//! Guarantees 3 and 6: per-group FIFO with one job in flight, and
//! parallelism across groups.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use wq_core::{
    Ack, AckAction, AckOutcome, Admin, ClaimRequest, Client, Clock as _, Enqueue, GroupKey,
    JobContext, JobError, JobState, QueueConfig, Store, Timestamp,
};

use super::ledger::{Ledger, Step, recording_handler, start_worker};
use crate::harness::{
    Failure, PATIENCE, TestBackend, TestResult, ack, claim, claim_with_next_due, complete_all,
    declare, join, manual_client, secs, stop, wait_until, with_backend,
};
use crate::{ensure, ensure_eq};

/// Jobs of one group start in enqueue order and never overlap, with two
/// workers of eight slots each racing over 30 groups.
pub async fn fifo_per_group<T: TestBackend>(t: &T) -> TestResult {
    with_backend(t, |b| async move {
        let client = Client::new(b.clone());
        declare(&client, QueueConfig::new("fifo")).await?;
        let (groups, per_group) = (30u32, 20u32);
        // Each group's jobs back to back: a store that ignored groups would
        // hand several of one group to one claim, and they would overlap.
        let jobs = (0..groups).flat_map(|g| {
            (0..per_group).map(move |n| {
                let g = format!("g{g}");
                Enqueue::new("fifo", &Step::ok(g.clone(), n)).group(g)
            })
        });
        client.enqueue_many(jobs).await?;
        let ledger = Arc::new(Ledger::default());
        let w1 = start_worker(&b, "fifo", recording_handler(ledger.clone()), 8).await?;
        let w2 = start_worker(&b, "fifo", recording_handler(ledger.clone()), 8).await?;
        let total = u64::from(groups * per_group);
        let done = wait_until("every job completed", PATIENCE, || async {
            Ok(client.counts("fifo").await?.completed == total)
        })
        .await;
        let stopped = (stop(w1).await, stop(w2).await);
        done?;
        stopped.0?;
        stopped.1?;
        ledger.check_fifo()?;
        for (g, starts) in ledger.starts() {
            ensure_eq!(
                starts,
                (0..per_group).collect::<Vec<_>>(),
                "starts of group {g}"
            );
        }
        Ok(())
    })
    .await
}

/// A claim hands out at most one job per group, and concurrent claimers
/// never hold two jobs of one group at once.
pub async fn one_in_flight_per_group<T: TestBackend>(t: &T) -> TestResult {
    with_backend(t, |b| async move {
        let (client, clock) = manual_client(&b);
        declare(&client, QueueConfig::new("one")).await?;
        let burst = (0..5).map(|n| Enqueue::new("one", &n).group("burst"));
        client.enqueue_many(burst).await?;
        let now = clock.now();
        let got = claim(&b, "one", 10, now, secs(30)).await?;
        ensure_eq!(got.len(), 1, "jobs claimed from one group of five");
        ack(&b, &got[0], AckAction::complete(), now).await?;

        let (groups, per_group) = (40u32, 10u32);
        let jobs = (0..per_group)
            .flat_map(|n| (0..groups).map(move |g| Enqueue::new("one", &n).group(format!("g{g}"))));
        client.enqueue_many(jobs).await?;
        let held: Arc<Mutex<HashSet<GroupKey>>> = Arc::default();
        let order: Arc<Mutex<HashMap<GroupKey, Vec<u64>>>> = Arc::default();
        let mut tasks = Vec::new();
        let now = clock.now();
        for _ in 0..4 {
            let (b, client, held, order) = (b.clone(), client.clone(), held.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                claimer(&b, &client, now, &held, &order).await
            }));
        }
        for task in tasks {
            join("a claimer", task).await??;
        }
        for (g, seqs) in order.lock().iter() {
            ensure!(
                seqs.windows(2).all(|w| w[0] < w[1]),
                "group {g} claimed out of order: {seqs:?}"
            );
            let expected = if g.as_str() == "burst" {
                4
            } else {
                per_group as usize
            };
            ensure_eq!(seqs.len(), expected, "jobs claimed in group {g}");
        }
        Ok(())
    })
    .await
}

/// A job enqueued into a group while the group's head runs, alone or in a
/// batch, waits: no claim (plain or with an acknowledgement) hands it out
/// while the head runs or retries, and the next claim does once the head is
/// terminal. The group keeps one head throughout.
pub async fn enqueue_behind_a_running_head_waits<T: TestBackend>(t: &T) -> TestResult {
    with_backend(t, |b| async move {
        let (client, clock) = manual_client(&b);
        declare(&client, QueueConfig::new("behind")).await?;
        let now = clock.now();
        let head = client
            .enqueue(Enqueue::new("behind", &"head").group("contact"))
            .await?
            .job;
        let running = claim(&b, "behind", 10, now, secs(30)).await?;
        ensure_eq!(
            running.iter().map(|j| j.id).collect::<Vec<_>>(),
            vec![head.id],
            "the head runs"
        );
        let single = client
            .enqueue(Enqueue::new("behind", &"single").group("contact"))
            .await?
            .job;
        let batch = client
            .enqueue_many([
                Enqueue::new("behind", &"batched").group("contact"),
                Enqueue::new("behind", &"other").group("other"),
            ])
            .await?;
        let (batched, other) = (batch[0].job.id, batch[1].job.id);
        for (id, what) in [(single.id, "single"), (batched, "batched")] {
            let p = client
                .position(id)
                .await?
                .ok_or_else(|| Failure(format!("the {what} job has no position")))?;
            ensure!(
                p.in_group.is_some_and(|n| n > 0),
                "the {what} job heads its group while the head runs: {p:?}"
            );
        }
        let got = claim(&b, "behind", 10, now, secs(30)).await?;
        ensure_eq!(
            got.iter().map(|j| j.id).collect::<Vec<_>>(),
            vec![other],
            "while the head runs, only the other group's job"
        );
        ack(&b, &got[0], AckAction::complete(), now).await?;
        ensure!(
            claim_with_next_due(&b, "behind", 10, now, secs(30))
                .await?
                .is_empty(),
            "a claim through ack_and_claim hands out the group's next job"
        );

        // A retry keeps the head in place: it runs again, not the next job.
        let retry = AckAction::Retry {
            run_at: now,
            error: "bridge timeout".into(),
        };
        ack(&b, &running[0], retry, now).await?;
        let again = claim(&b, "behind", 10, now, secs(30)).await?;
        ensure_eq!(
            again.iter().map(|j| j.id).collect::<Vec<_>>(),
            vec![head.id],
            "after a retry, the head runs again"
        );
        let late = client
            .enqueue(Enqueue::new("behind", &"late").group("contact"))
            .await?
            .job;
        let acks: Vec<_> = Ack::for_job(&again[0], AckAction::complete())
            .into_iter()
            .collect();
        let req = ClaimRequest::new("behind", 10, now, now + secs(30), "test-worker");
        let done = b.ack_and_claim(&acks, Some(&req), now).await?;
        ensure_eq!(
            done.acks,
            vec![AckOutcome::Applied(JobState::Completed)],
            "the head completes"
        );
        ensure_eq!(
            done.jobs.iter().map(|j| j.id).collect::<Vec<_>>(),
            vec![single.id],
            "once the head is terminal, the job enqueued behind it"
        );
        let mut holder = done.jobs[0].clone();
        for (id, what) in [(batched, "batched"), (late.id, "late")] {
            let got = claim(&b, "behind", 10, now, secs(30)).await?;
            ensure!(
                got.is_empty(),
                "the {what} job became a second head of its group"
            );
            ack(&b, &holder, AckAction::complete(), now).await?;
            let next = claim(&b, "behind", 10, now, secs(30)).await?;
            ensure_eq!(
                next.iter().map(|j| j.id).collect::<Vec<_>>(),
                vec![id],
                "the {what} job once the one before it completed"
            );
            holder = next[0].clone();
        }
        Ok(())
    })
    .await
}

async fn claimer<B: Store + Admin>(
    b: &B,
    client: &Client<B>,
    now: Timestamp,
    held: &Mutex<HashSet<GroupKey>>,
    order: &Mutex<HashMap<GroupKey, Vec<u64>>>,
) -> TestResult {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while client.counts("one").await?.pending() > 0 {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "claimers did not drain the queue"
        );
        let jobs = claim(b, "one", 7, now, secs(600)).await?;
        if jobs.is_empty() {
            tokio::time::sleep(Duration::from_millis(1)).await;
            continue;
        }
        for j in &jobs {
            let g = j
                .group
                .clone()
                .ok_or_else(|| Failure::new("grouped job lost its group"))?;
            ensure!(
                held.lock().insert(g.clone()),
                "group {g} handed out twice at once (job {})",
                j.id
            );
            order.lock().entry(g).or_default().push(j.seq);
        }
        tokio::task::yield_now().await;
        for j in &jobs {
            if let Some(g) = &j.group {
                held.lock().remove(g);
            }
        }
        complete_all(b, &jobs, now).await?;
    }
    Ok(())
}

/// A blocked group and a retrying group do not stall the others.
pub async fn parallel_across_groups<T: TestBackend>(t: &T) -> TestResult {
    with_backend(t, |b| async move {
        let client = Client::new(b.clone());
        declare(&client, QueueConfig::new("par")).await?;
        let step = |g: &str, n, kind: &str| Step {
            g: g.into(),
            n,
            kind: kind.into(),
        };
        let mut jobs = vec![
            Enqueue::new("par", &step("slow", 0, "block")).group("slow"),
            Enqueue::new("par", &step("slow", 1, "after")).group("slow"),
            Enqueue::new("par", &step("flaky", 0, "fail"))
                .group("flaky")
                .max_attempts(1_000),
            Enqueue::new("par", &step("flaky", 1, "after")).group("flaky"),
        ];
        for g in 0..20 {
            for n in 0..3 {
                jobs.push(
                    Enqueue::new("par", &step(&format!("g{g}"), n, "ok")).group(format!("g{g}")),
                );
            }
        }
        let stored = client.enqueue_many(jobs).await?;
        let flaky_head = stored[2].job.id;
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let after_started = Arc::new(AtomicBool::new(false));
        let handler = {
            let (gate, after_started) = (gate.clone(), after_started.clone());
            move |ctx: JobContext| {
                let (gate, after_started) = (gate.clone(), after_started.clone());
                async move {
                    let s: Step = ctx.payload()?;
                    match s.kind.as_str() {
                        "block" => {
                            let _ = gate.acquire().await;
                            Ok(())
                        }
                        "fail" => Err(JobError::retry_after(
                            "flaky bridge",
                            Duration::from_millis(20),
                        )),
                        "after" => {
                            after_started.store(true, Ordering::SeqCst);
                            Ok(())
                        }
                        _ => Ok(()),
                    }
                }
            }
        };
        let worker = start_worker(&b, "par", handler, 4).await?;
        let result = async {
            wait_until("the other groups to finish", PATIENCE, || async {
                Ok(client.counts("par").await?.completed >= 60)
            })
            .await?;
            ensure!(
                !after_started.load(Ordering::SeqCst),
                "a job ran while the head of its group was blocked or retrying"
            );
            gate.add_permits(1);
            client.cancel(flaky_head).await?;
            wait_until("the held-back jobs to finish", PATIENCE, || async {
                Ok(client.counts("par").await?.completed >= 63)
            })
            .await
        }
        .await;
        gate.add_permits(10);
        let stopped = stop(worker).await;
        result.and(stopped.map(drop))
    })
    .await
}

/// A claim picks one head per group before it applies its limit: a group
/// with a long backlog, or whose head is retrying, never hides other work.
pub async fn claim_skips_blocked_groups<T: TestBackend>(t: &T) -> TestResult {
    with_backend(t, |b| async move {
        let (client, clock) = manual_client(&b);
        declare(&client, QueueConfig::new("skip")).await?;
        let mut jobs: Vec<_> = (0..100)
            .map(|n| Enqueue::new("skip", &n).group("big"))
            .collect();
        jobs.push(Enqueue::new("skip", &"b").group("small"));
        jobs.push(Enqueue::new("skip", &"u"));
        let stored = client.enqueue_many(jobs).await?;
        let now = clock.now();
        let first = claim(&b, "skip", 1, now, secs(30)).await?;
        ensure_eq!(first.len(), 1, "first claim");
        ensure_eq!(first[0].id, stored[0].job.id, "the oldest head comes first");
        let second = claim(&b, "skip", 1, now, secs(30)).await?;
        ensure_eq!(second.len(), 1, "a claim while the big group is busy");
        let rest = claim(&b, "skip", 5, now, secs(30)).await?;
        ensure_eq!(rest.len(), 1, "jobs left that may run");
        let mut others: Vec<_> = second.iter().chain(&rest).map(|j| j.id).collect();
        others.sort();
        let mut expected = vec![stored[100].job.id, stored[101].job.id];
        expected.sort();
        ensure_eq!(
            others,
            expected,
            "the other group's head and the ungrouped job"
        );

        let retry = AckAction::Retry {
            run_at: now + secs(3600),
            error: "try later".into(),
        };
        ack(&b, &first[0], retry, now).await?;
        let late = client
            .enqueue(Enqueue::new("skip", &"c").group("late"))
            .await?;
        let after = claim(&b, "skip", 5, now + secs(60), secs(30)).await?;
        let ids: Vec<_> = after.iter().map(|j| j.id).collect();
        ensure_eq!(
            ids,
            vec![late.job.id],
            "only the new group's head while big retries"
        );
        Ok(())
    })
    .await
}

/// Thousands of groups are ordinary: one claim returns many distinct groups
/// and the queue drains completely.
pub async fn many_groups<T: TestBackend>(t: &T) -> TestResult {
    with_backend(t, |b| async move {
        let (client, clock) = manual_client(&b);
        declare(&client, QueueConfig::new("many")).await?;
        let total = 5_000u32;
        for chunk in (0..total).collect::<Vec<_>>().chunks(1_000) {
            let jobs = chunk
                .iter()
                .map(|i| Enqueue::new("many", &i).group(format!("contact-{i}")));
            client.enqueue_many(jobs).await?;
        }
        let now = clock.now();
        let mut seen = HashSet::new();
        loop {
            let jobs = claim(&b, "many", 500, now, secs(60)).await?;
            if jobs.is_empty() {
                break;
            }
            for j in &jobs {
                ensure!(seen.insert(j.id), "job {} claimed twice", j.id);
            }
            complete_all(&b, &jobs, now).await?;
        }
        ensure_eq!(seen.len(), total as usize, "jobs drained");
        ensure_eq!(
            client.counts("many").await?.completed,
            u64::from(total),
            "completed"
        );
        Ok(())
    })
    .await
}
