//! Workers whose connections the server drops every few milliseconds: a
//! reply lost mid-turn must cost no attempt and read as no stale
//! acknowledgement. In a test binary of its own, since it drops every
//! connection opened after it started, a sibling test's included.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use wq_core::{Client, Enqueue, JobContext, JobError, JobId, ListQuery, QueueConfig, Worker};
use wq_redis::RedisStore;

fn err<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

/// Two workers whose connections the server drops every few milliseconds
/// while jobs keep coming for two seconds and more: replies get lost
/// mid-turn, and still every job runs once, with its first attempt, and no
/// acknowledgement comes back stale.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connections_cost_no_attempt() -> Result<(), String> {
    common::ensure_server().await?;
    let _ = tracing_subscriber::fmt()
        .with_env_filter("warn")
        .with_test_writer()
        .try_init();
    let prefix = common::fresh_prefix("lost-workers");
    let url = common::url();
    // The feeder connects before the admin: its connections are spared.
    let feeder = RedisStore::connect(&url, &prefix).await.map_err(err)?;
    let mut admin = common::raw().await?;
    let admin_id: i64 = redis::cmd("CLIENT")
        .arg("ID")
        .query_async(&mut admin)
        .await
        .map_err(err)?;
    let a = RedisStore::connect(&url, &prefix).await.map_err(err)?;
    let b = RedisStore::connect(&url, &prefix).await.map_err(err)?;
    let result = drop_while_running(&feeder, [&a, &b], &mut admin, admin_id).await;
    let _ = feeder.clear().await;
    result
}

/// How often the connections are dropped: often enough that replies get
/// lost, seldom enough that a turn sent again soon finds a connection that
/// lives long enough to answer (dropped every few milliseconds, the store
/// is down rather than flaky, and leases lapse whatever the runner does).
const DROP_EVERY: Duration = Duration::from_millis(40);

/// Drops every connection opened after the admin's; returns how many.
async fn drop_all(
    admin: &mut redis::aio::MultiplexedConnection,
    admin_id: i64,
) -> Result<i64, String> {
    let mut dropped = 0;
    for id in common::clients_since(admin, admin_id).await? {
        dropped += redis::cmd("CLIENT")
            .arg("KILL")
            .arg("ID")
            .arg(id)
            .query_async::<i64>(admin)
            .await
            .map_err(err)?;
    }
    Ok(dropped)
}

async fn drop_while_running(
    feeder: &RedisStore,
    workers: [&RedisStore; 2],
    admin: &mut redis::aio::MultiplexedConnection,
    admin_id: i64,
) -> Result<(), String> {
    let q = "dropped";
    let (rounds, per_round) = (20u64, 150u64);
    let total = rounds * per_round;
    let client = Client::new(feeder.clone());
    client
        .declare_queue(QueueConfig::new(q).lease(Duration::from_secs(2)))
        .await
        .map_err(err)?;
    let runs: Arc<Mutex<HashMap<JobId, u32>>> = Arc::default();
    let start = |s: &RedisStore| {
        let runs = runs.clone();
        Worker::new(s.clone())
            .handle(q, move |job: JobContext| {
                let runs = runs.clone();
                async move {
                    *runs.lock().entry(job.id()).or_default() += 1;
                    tokio::time::sleep(Duration::from_micros(200)).await;
                    Ok::<(), JobError>(())
                }
            })
            .start()
    };
    let wa = start(workers[0]).await.map_err(err)?;
    let wb = start(workers[1]).await.map_err(err)?;
    let mut dropped = 0i64;
    for round in 0..rounds {
        let jobs = (0..per_round).map(|i| {
            let n = round * per_round + i;
            Enqueue::new(q, &n).group(format!("g{}", n % 40))
        });
        client.enqueue_many(jobs).await.map_err(err)?;
        for _ in 0..3 {
            dropped += drop_all(admin, admin_id).await?;
            tokio::time::sleep(DROP_EVERY).await;
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while tokio::time::Instant::now() < deadline {
        let counts = client.counts(q).await.map_err(err)?;
        if counts.completed >= total {
            break;
        }
        dropped += drop_all(admin, admin_id).await?;
        tokio::time::sleep(DROP_EVERY).await;
    }
    let finished = common::wait_for_completed(&client, q, total, Duration::from_secs(30)).await;
    let stats = [wa.stats(), wb.stats()];
    wa.shutdown(Duration::from_secs(5)).await;
    wb.shutdown(Duration::from_secs(5)).await;
    finished?;
    if dropped < 100 {
        return Err(format!("only {dropped} connections dropped"));
    }
    let listed = client
        .list(ListQuery::new().queue(q).limit(total as usize + 1))
        .await
        .map_err(err)?;
    let again: Vec<(JobId, u32)> = listed
        .iter()
        .filter(|j| j.attempt != 1)
        .map(|j| (j.id, j.attempt))
        .collect();
    let twice = runs.lock().values().filter(|&&n| n > 1).count();
    let stale: u64 = stats.iter().map(|s| s.stale).sum();
    if listed.len() as u64 != total || !again.is_empty() || twice > 0 || stale > 0 {
        return Err(format!(
            "{} jobs listed of {total}; {} ran with a later attempt ({:?}...); {twice} handlers ran twice; {stale} stale acks; {dropped} connections dropped; stats {stats:?}",
            listed.len(),
            again.len(),
            &again[..again.len().min(3)]
        ));
    }
    Ok(())
}
