//! A worker process for the crash tests (`tests/crash.rs`,
//! `tests/restart.rs`): serves one queue of a prefix and records every start
//! and end of a handler in a ledger file, until it is killed.
//!
//! ```text
//! wq-redis-crash-worker <url> <prefix> <queue> <ledger-file>
//! ```
//!
//! The ledger is `wq_testkit::crash`'s: lines
//! `<micros> start|done <job id> <attempt> <group> <n> <pid>`, kept off the
//! server so that a restart cannot fail a write. Built only with the
//! `crash-worker` feature.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::RngExt;
use wq_core::{JobContext, JobError, Worker};
use wq_redis::RedisStore;

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, prefix, queue, ledger] = args.as_slice() else {
        eprintln!("usage: wq-redis-crash-worker <url> <prefix> <queue> <ledger-file>");
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
    // One unbuffered write per line: what a killed process wrote survives it.
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(ledger)
        .map_err(|e| format!("{ledger}: {e}"))?;
    let file = Arc::new(Mutex::new(file));
    let handler = move |ctx: JobContext| {
        let file = file.clone();
        async move { record(&file, &ctx).await }
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

fn micros() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros())
}

/// Records the start, works for a few milliseconds, records the end.
async fn record(file: &Mutex<File>, ctx: &JobContext) -> Result<(), JobError> {
    let step: serde_json::Value = ctx.payload()?;
    let pid = std::process::id();
    let (id, attempt, g, n) = (ctx.id(), ctx.attempt(), &step["g"], &step["n"]);
    append(
        file,
        &format!("{} start {id} {attempt} {g} {n} {pid}\n", micros()),
    )?;
    // Long enough that each kill cuts a few runs, whose rescue the restart
    // test times.
    let work = rand::rng().random_range(5_000..15_000);
    tokio::time::sleep(Duration::from_micros(work)).await;
    append(
        file,
        &format!("{} done {id} {attempt} {g} {n} {pid}\n", micros()),
    )
}

fn append(file: &Mutex<File>, line: &str) -> Result<(), JobError> {
    file.lock()
        .map_err(|_| JobError::permanent("ledger lock poisoned"))?
        .write_all(line.as_bytes())
        .map_err(|e| JobError::retry(format!("ledger: {e}")))
}
