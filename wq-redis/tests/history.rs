//! How Redis keeps a job's history and output: the scripts write each
//! record as JSON by hand and trim the oldest by splitting the text, so
//! messages made to look like record boundaries, and timestamps with every
//! microsecond, must read back exactly; and neither may leave the job's
//! hash out of Redis's compact encoding.

mod common;

use std::time::Duration;

use wq_core::attempt::MAX_HISTORY;
use wq_core::{
    Ack, AckAction, AttemptOutcome, ClaimRequest, Client, Enqueue, Job, Payload, QueueConfig,
    Store, Timestamp,
};
use wq_redis::RedisStore;

const QUEUE: &str = "history";
/// A worker id that needs escaping in JSON.
const WORKER: &str = "w\"orker/ü";

fn err<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

/// A failure message that holds what separates two records, quotes,
/// backslashes, a line break and characters beyond ASCII.
fn message(i: usize) -> String {
    format!("boom {i} }},{{\"attempt\":9,\"x\":\"\\\"}}]\nnão 🚀 </tag>")
}

async fn claim(store: &RedisStore, now: Timestamp) -> Result<Job, String> {
    let req = ClaimRequest::new(QUEUE, 1, now, now + Duration::from_secs(30), WORKER);
    let mut jobs = store.claim(&req).await.map_err(err)?;
    jobs.pop().ok_or_else(|| "nothing claimed".to_owned())
}

async fn ack(
    store: &RedisStore,
    job: &Job,
    action: AckAction,
    now: Timestamp,
) -> Result<(), String> {
    let ack = Ack::for_job(job, action).ok_or("no lease")?;
    store.ack(&[ack], now).await.map_err(err).map(drop)
}

async fn encoding(store: &RedisStore, job: &Job) -> Result<String, String> {
    let key = format!("{{{}:{QUEUE}}}:j:{}", store.prefix(), job.id);
    redis::cmd("OBJECT")
        .arg("ENCODING")
        .arg(key)
        .query_async(&mut common::raw().await?)
        .await
        .map_err(err)
}

/// Fails a job more times than its history keeps, then completes it with
/// an output: the latest records read back byte for byte, in order, with
/// their exact times, and the output as it was sent.
async fn runs_read_back_exactly(store: &RedisStore) -> Result<(), String> {
    let client = Client::new(store.clone());
    let config = QueueConfig::new(QUEUE).max_attempts(100);
    client.declare_queue(config).await.map_err(err)?;
    let id = client
        .enqueue(Enqueue::new(QUEUE, &1))
        .await
        .map_err(err)?
        .job
        .id;
    // Odd microseconds: Lua's own number formatting keeps only 14 digits.
    let t0 = Timestamp::from_micros(1_764_000_000_123_457);
    let at = |i: usize| t0 + Duration::from_micros(1_000_003 * i as u64);
    let runs = MAX_HISTORY + 3;
    for i in 0..runs {
        let job = claim(store, at(2 * i)).await?;
        let ls = job.lease.as_ref().map(|l| l.started_at);
        if ls != Some(at(2 * i)) {
            return Err(format!("run {i}: the lease started at {ls:?}"));
        }
        let retry = AckAction::Retry {
            run_at: at(2 * i + 1),
            error: message(i),
        };
        ack(store, &job, retry, at(2 * i + 1)).await?;
    }
    let job = claim(store, at(2 * runs)).await?;
    let output = Payload::from_raw(r#"{"id": "wamid.1",  "n": [1, 2.50]}"#).map_err(err)?;
    let complete = AckAction::Complete {
        output: Some(output.clone()),
    };
    ack(store, &job, complete, at(2 * runs + 1)).await?;

    let done = store.get(id).await.map_err(err)?.ok_or("job gone")?;
    if done.output.as_ref().map(Payload::as_str) != Some(output.as_str()) {
        return Err(format!("output {:?}, sent {output:?}", done.output));
    }
    if done.history.len() != MAX_HISTORY {
        return Err(format!("{} records kept", done.history.len()));
    }
    let first = runs + 1 - MAX_HISTORY;
    for (n, a) in done.history.iter().enumerate() {
        let i = first + n;
        let (outcome, error) = match i {
            i if i == runs => (AttemptOutcome::Completed, None),
            i => (AttemptOutcome::Retried, Some(message(i))),
        };
        let want = (
            i as u32 + 1,
            at(2 * i),
            at(2 * i + 1),
            WORKER,
            outcome,
            error,
        );
        let got = (
            a.attempt,
            a.started_at,
            a.ended_at,
            &*a.worker,
            a.outcome,
            a.error.clone(),
        );
        if got != want {
            return Err(format!("record {n}: {got:?}, want {want:?}"));
        }
    }
    Ok(())
}

/// A job completed on its first run with an output keeps a compact hash:
/// neither its record nor its output is in it.
async fn completed_jobs_stay_compact(store: &RedisStore) -> Result<(), String> {
    let client = Client::new(store.clone());
    let id = client
        .enqueue(Enqueue::new(QUEUE, &2))
        .await
        .map_err(err)?
        .job
        .id;
    let now = Timestamp::now();
    let job = claim(store, now).await?;
    let receipt = format!(r#"{{"id":"wamid.{}"}}"#, "x".repeat(100));
    let complete = AckAction::Complete {
        output: Some(Payload::from_raw(receipt).map_err(err)?),
    };
    ack(store, &job, complete, now).await?;
    let done = store.get(id).await.map_err(err)?.ok_or("job gone")?;
    if done.history.len() != 1 || done.output.is_none() {
        return Err(format!(
            "history {:?}, output {:?}",
            done.history, done.output
        ));
    }
    match encoding(store, &done).await? {
        enc if enc == "listpack" => Ok(()),
        enc => Err(format!("the completed job's hash is {enc}")),
    }
}

#[tokio::test]
async fn history_and_output_read_back_exactly() -> Result<(), String> {
    let store = common::store("history").await?;
    let mut result = runs_read_back_exactly(&store).await;
    if result.is_ok() {
        result = completed_jobs_stay_compact(&store).await;
    }
    let _ = store.clear().await;
    result
}
