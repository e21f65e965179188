//! A worker process for the crash test (`tests/crash.rs`): serves one
//! queue of a prefix and records every start and end of a handler in a
//! ledger list, until it is killed.
//!
//! ```text
//! wq-redis-crash-worker <url> <prefix> <queue> <ledger-key>
//! ```
//!
//! Ledger entries: `s <job id> <group> <n> <attempt> <pid>` when a handler
//! starts, `e <job id> <attempt> <pid>` when it ends.

use std::process::ExitCode;
use std::time::Duration;

use rand::RngExt;
use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use wq_core::{JobContext, JobError, Worker};
use wq_redis::RedisStore;

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, prefix, queue, ledger] = args.as_slice() else {
        eprintln!("usage: wq-redis-crash-worker <url> <prefix> <queue> <ledger-key>");
        return ExitCode::FAILURE;
    };
    match run(url, prefix, queue, ledger).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wq-redis-crash-worker: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(url: &str, prefix: &str, queue: &str, ledger: &str) -> Result<(), String> {
    let store = RedisStore::connect(url, prefix)
        .await
        .map_err(|e| e.to_string())?;
    let client = redis::Client::open(url).map_err(|e| e.to_string())?;
    let conn = ConnectionManager::new(client)
        .await
        .map_err(|e| e.to_string())?;
    let ledger: std::sync::Arc<str> = ledger.into();
    let handler = move |ctx: JobContext| {
        let (mut conn, ledger) = (conn.clone(), ledger.clone());
        async move { record(&mut conn, &ledger, &ctx).await }
    };
    let _worker = Worker::new(store)
        .handle(queue, handler)
        .start()
        .await
        .map_err(|e| e.to_string())?;
    // Runs until the test kills the process.
    std::future::pending::<()>().await;
    Ok(())
}

/// Records the start, works for up to two milliseconds (so that kills land
/// mid-run), records the end.
async fn record(
    conn: &mut ConnectionManager,
    ledger: &str,
    ctx: &JobContext,
) -> Result<(), JobError> {
    let step: serde_json::Value = ctx.payload()?;
    let pid = std::process::id();
    let start = format!(
        "s {} {} {} {} {pid}",
        ctx.id(),
        step["g"],
        step["n"],
        ctx.attempt()
    );
    let _: () = conn
        .rpush(ledger, start)
        .await
        .map_err(|e| JobError::retry(e.to_string()))?;
    let work = rand::rng().random_range(0..2_000);
    tokio::time::sleep(Duration::from_micros(work)).await;
    let end = format!("e {} {} {pid}", ctx.id(), ctx.attempt());
    let _: () = conn
        .rpush(ledger, end)
        .await
        .map_err(|e| JobError::retry(e.to_string()))?;
    Ok(())
}
