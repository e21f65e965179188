//! A reply lost on the way back: Redis ran the call, the caller never heard.
//! Sending the same turn or acknowledgement again must answer what the
//! first try did (no `Stale` for applied acknowledgements, the same jobs
//! under the same leases, nothing claimed twice). Workers whose connections
//! drop mid-run are in `dropped_connections.rs`.

mod common;

use std::time::Duration;

use wq_core::{
    Ack, AckAction, AckOutcome, AckedAndClaimed, ClaimRequest, Client, Enqueue, Job, JobId,
    JobState, QueueConfig, Retention, Store, Timestamp,
};
use wq_redis::RedisStore;

fn err<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

fn request(queue: &str, limit: usize, now: Timestamp, worker: &str, turn: u64) -> ClaimRequest {
    ClaimRequest::new(queue, limit, now, now + Duration::from_secs(30), worker).turn(turn)
}

fn complete_all(jobs: &[Job]) -> Vec<Ack> {
    jobs.iter()
        .filter_map(|j| Ack::for_job(j, AckAction::complete()))
        .collect()
}

/// Id, token and attempt of each job, the part of a claim a repeat must
/// reproduce.
fn leases(jobs: &[Job]) -> Vec<(JobId, Option<u64>, u32)> {
    jobs.iter()
        .map(|j| (j.id, j.lease.as_ref().map(|l| l.token), j.attempt))
        .collect()
}

async fn with_store<F>(what: &str, test: impl FnOnce(RedisStore) -> F) -> Result<(), String>
where
    F: Future<Output = Result<(), String>>,
{
    let store = common::store(what).await?;
    let result = test(store.clone()).await;
    let _ = store.clear().await;
    result
}

/// Sends one turn twice, as a runner does when the first reply is lost,
/// and checks the repeat answers exactly what the first try did.
async fn turn_twice(
    store: &RedisStore,
    acks: &[Ack],
    req: &ClaimRequest,
) -> Result<AckedAndClaimed, String> {
    let first = store
        .ack_and_claim(acks, Some(req), req.now)
        .await
        .map_err(err)?;
    let again = store
        .ack_and_claim(acks, Some(req), req.now)
        .await
        .map_err(err)?;
    if again.acks != first.acks {
        return Err(format!(
            "repeated acks answered {:?}, first {:?}",
            again.acks, first.acks
        ));
    }
    if leases(&again.jobs) != leases(&first.jobs) {
        return Err(format!(
            "repeated claim got {:?}, first {:?}",
            leases(&again.jobs),
            leases(&first.jobs)
        ));
    }
    Ok(first)
}

/// A whole turn (acknowledgements and a claim) sent twice: the repeat
/// answers `Applied` as the first did and hands back the same jobs with
/// the same tokens and attempts; nothing more is claimed, and a new turn
/// claims new jobs.
#[tokio::test]
async fn a_repeated_turn_answers_what_the_first_did() -> Result<(), String> {
    with_store("lost-turn", |store| async move {
        let q = "turns";
        let client = Client::new(store.clone());
        client
            .declare_queue(QueueConfig::new(q))
            .await
            .map_err(err)?;
        let mut jobs = vec![
            Enqueue::new(q, &"a").group("g"),
            Enqueue::new(q, &"b").group("g"),
        ];
        jobs.extend((0..8).map(|i| Enqueue::new(q, &i)));
        client.enqueue_many(jobs).await.map_err(err)?;

        let now = Timestamp::now();
        let first = turn_twice(&store, &[], &request(q, 3, now, "w", 1)).await?;
        if first.jobs.len() != 3 {
            return Err(format!("first turn claimed {}", first.jobs.len()));
        }
        // Completing the group's head lets its second job through in the
        // same call: the repeat must not claim it, or anything, again.
        let acks = complete_all(&first.jobs);
        let second = turn_twice(&store, &acks, &request(q, 3, now, "w", 2)).await?;
        if second.acks != vec![AckOutcome::Applied(JobState::Completed); 3] {
            return Err(format!("second turn's acks: {:?}", second.acks));
        }
        let counts = client.counts(q).await.map_err(err)?;
        if counts.running != 3 || counts.completed != 3 || counts.available != 4 {
            return Err(format!("after the repeated turn: {counts:?}"));
        }
        let third = store
            .ack_and_claim(&[], Some(&request(q, 3, now, "w", 3)), now)
            .await
            .map_err(err)?;
        let before: Vec<JobId> = second.jobs.iter().map(|j| j.id).collect();
        if third.jobs.len() != 3 || third.jobs.iter().any(|j| before.contains(&j.id)) {
            return Err(format!(
                "a new turn claimed {:?} after {before:?}",
                leases(&third.jobs)
            ));
        }
        // The same turn number from another worker is another turn.
        let other = store
            .claim(&request(q, 3, now, "other", 3))
            .await
            .map_err(err)?;
        if other.len() != 1 {
            return Err(format!("another worker's claim got {}", other.len()));
        }
        Ok(())
    })
    .await
}

/// A repeated turn only hands back what still runs under the token the
/// first try gave it: a job rescued in between is not returned.
#[tokio::test]
async fn a_repeated_turn_leaves_out_what_no_longer_runs() -> Result<(), String> {
    with_store("lost-rescued", |store| async move {
        let q = "rescued";
        let client = Client::new(store.clone());
        client
            .declare_queue(QueueConfig::new(q))
            .await
            .map_err(err)?;
        client
            .enqueue_many((0..2).map(|i| Enqueue::new(q, &i)))
            .await
            .map_err(err)?;
        let now = Timestamp::now();
        let short = ClaimRequest::new(q, 2, now, now + Duration::from_secs(1), "w").turn(7);
        let first = store.claim(&short).await.map_err(err)?;
        let rescued = store
            .rescue(now + Duration::from_secs(2), 10)
            .await
            .map_err(err)?;
        if first.len() != 2 || rescued.retried != 2 {
            return Err(format!("claimed {}, rescued {rescued:?}", first.len()));
        }
        let again = store.claim(&short).await.map_err(err)?;
        if !again.is_empty() {
            return Err(format!("the repeat handed back {:?}", leases(&again)));
        }
        Ok(())
    })
    .await
}

/// On a queue that deletes finished jobs at once, a repeated turn still
/// answers `Applied(Completed)`: the turn remembers its outcomes.
#[tokio::test]
async fn a_repeated_turn_answers_for_deleted_jobs() -> Result<(), String> {
    with_store("lost-zero", |store| async move {
        let q = "zero";
        let client = Client::new(store.clone());
        let keep_nothing = Retention {
            completed: Duration::ZERO,
            ..Retention::default()
        };
        client
            .declare_queue(QueueConfig::new(q).retention(keep_nothing))
            .await
            .map_err(err)?;
        client
            .enqueue_many((0..4).map(|i| Enqueue::new(q, &i)))
            .await
            .map_err(err)?;
        let now = Timestamp::now();
        let claimed = store
            .claim(&request(q, 2, now, "w", 1))
            .await
            .map_err(err)?;
        let second =
            turn_twice(&store, &complete_all(&claimed), &request(q, 2, now, "w", 2)).await?;
        if second.acks != vec![AckOutcome::Applied(JobState::Completed); 2] {
            return Err(format!("acks: {:?}", second.acks));
        }
        Ok(())
    })
    .await
}

/// A lone acknowledgement sent again answers `Applied` with the job's
/// state, until the job is claimed again: then the old token is stale.
#[tokio::test]
async fn a_repeated_ack_answers_applied_until_the_job_runs_again() -> Result<(), String> {
    with_store("lost-ack", |store| async move {
        let q = "acks";
        let client = Client::new(store.clone());
        client
            .declare_queue(QueueConfig::new(q))
            .await
            .map_err(err)?;
        client.enqueue(Enqueue::new(q, &"x")).await.map_err(err)?;
        let now = Timestamp::now();
        let first = store
            .claim(&request(q, 1, now, "w", 1))
            .await
            .map_err(err)?;
        let retry = AckAction::Retry {
            run_at: now,
            error: "again".into(),
        };
        let acks: Vec<Ack> = first
            .iter()
            .filter_map(|j| Ack::for_job(j, retry.clone()))
            .collect();
        for _ in 0..2 {
            let out = store.ack(&acks, now).await.map_err(err)?;
            if out != vec![AckOutcome::Applied(JobState::Available)] {
                return Err(format!("retry ack answered {out:?}"));
            }
        }
        let second = store
            .claim(&request(q, 1, now, "w", 2))
            .await
            .map_err(err)?;
        if second.len() != 1 || second[0].attempt != 2 {
            return Err(format!("second claim: {:?}", leases(&second)));
        }
        let out = store.ack(&acks, now).await.map_err(err)?;
        if out != vec![AckOutcome::Stale] {
            return Err(format!("an old token after a new claim answered {out:?}"));
        }
        let done = complete_all(&second);
        for _ in 0..2 {
            let out = store.ack(&done, now).await.map_err(err)?;
            if out != vec![AckOutcome::Applied(JobState::Completed)] {
                return Err(format!("complete ack answered {out:?}"));
            }
        }
        Ok(())
    })
    .await
}
