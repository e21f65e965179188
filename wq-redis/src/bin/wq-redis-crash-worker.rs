//! A worker process for the crash tests (`tests/crash.rs`,
//! `tests/restart.rs`): serves one queue of a prefix and records every start
//! and end of a handler in a ledger, until it is killed.
//!
//! ```text
//! wq-redis-crash-worker <url> <prefix> <queue> <ledger>
//! ```
//!
//! A ledger named `file:<path>` is a file of lines
//! `<micros> start|done <job id> <attempt> <group> <n> <pid>`: tests that
//! restart the server keep their ledger off it, where a restart cannot
//! fail a write. Any other ledger is a Redis list of entries
//! `s <job id> <group> <n> <attempt> <pid>` when a handler starts and
//! `e <job id> <attempt> <pid>` when it ends.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::RngExt;
use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use wq_core::{JobContext, JobError, Worker};
use wq_redis::RedisStore;

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, prefix, queue, ledger] = args.as_slice() else {
        eprintln!("usage: wq-redis-crash-worker <url> <prefix> <queue> <ledger>");
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

/// Where the handler records its runs.
#[derive(Clone)]
enum Ledger {
    List(ConnectionManager, Arc<str>),
    File(Arc<Mutex<File>>),
}

async fn run(url: &str, prefix: &str, queue: &str, ledger: &str) -> Result<(), String> {
    let store = RedisStore::connect(url, prefix)
        .await
        .map_err(|e| e.to_string())?;
    let ledger = match ledger.strip_prefix("file:") {
        Some(path) => {
            // One unbuffered write per line: what a killed process wrote
            // survives it.
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| format!("{path}: {e}"))?;
            Ledger::File(Arc::new(Mutex::new(file)))
        }
        None => {
            let client = redis::Client::open(url).map_err(|e| e.to_string())?;
            let conn = ConnectionManager::new(client)
                .await
                .map_err(|e| e.to_string())?;
            Ledger::List(conn, ledger.into())
        }
    };
    let handler = move |ctx: JobContext| {
        let mut ledger = ledger.clone();
        async move { record(&mut ledger, &ctx).await }
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

/// Records the start, works for a few milliseconds (so that kills land
/// mid-run), records the end.
async fn record(ledger: &mut Ledger, ctx: &JobContext) -> Result<(), JobError> {
    let step: serde_json::Value = ctx.payload()?;
    let pid = std::process::id();
    let (id, attempt, g, n) = (ctx.id(), ctx.attempt(), &step["g"], &step["n"]);
    match ledger {
        Ledger::List(conn, key) => {
            let start = format!("s {id} {g} {n} {attempt} {pid}");
            let _: () = conn
                .rpush(&**key, start)
                .await
                .map_err(|e| JobError::retry(e.to_string()))?;
        }
        Ledger::File(file) => {
            let line = format!("{} start {id} {attempt} {g} {n} {pid}\n", micros());
            append(file, &line)?;
        }
    }
    // The restart test times the rescue of runs a kill cut: longer runs
    // give each kill a few to cut.
    let work = match ledger {
        Ledger::List(..) => rand::rng().random_range(0..2_000),
        Ledger::File(_) => rand::rng().random_range(5_000..15_000),
    };
    tokio::time::sleep(Duration::from_micros(work)).await;
    match ledger {
        Ledger::List(conn, key) => {
            let end = format!("e {id} {attempt} {pid}");
            let _: () = conn
                .rpush(&**key, end)
                .await
                .map_err(|e| JobError::retry(e.to_string()))?;
        }
        Ledger::File(file) => {
            let line = format!("{} done {id} {attempt} {g} {n} {pid}\n", micros());
            append(file, &line)?;
        }
    }
    Ok(())
}

fn append(file: &Mutex<File>, line: &str) -> Result<(), JobError> {
    file.lock()
        .map_err(|_| JobError::permanent("ledger lock poisoned"))?
        .write_all(line.as_bytes())
        .map_err(|e| JobError::retry(format!("ledger: {e}")))
}
