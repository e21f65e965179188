//! Worker processes SIGKILLed mid-run: nothing is lost, nothing runs twice
//! at once within a group, groups start their jobs in order, and every run
//! cut short by a kill runs again. The ledger and its checks are
//! `wq_testkit::crash`'s, as in the Postgres crash test.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rand::RngExt;
use tokio::process::{Child, Command};
use wq_core::{Client, Enqueue, QueueConfig};
use wq_redis::RedisStore;
use wq_testkit::crash::{Kill, busy_workers, check_kills, micros, read_ledger};

const QUEUE: &str = "crash";
const JOBS: u32 = 20_000;
const GROUPS: u32 = 500;
const WORKERS: usize = 3;
const KILLS: usize = 6;
/// Longest a kill waits for a worker to have a run in flight.
const BUSY_WAIT: Duration = Duration::from_secs(30);
/// Longest the whole crash test may take before it fails.
const DEADLINE: Duration = Duration::from_secs(120);

/// Starts a worker process writing a ledger file of its own into `ledger`;
/// returns the name its lines carry (its pid) and the process.
fn spawn_worker(prefix: &str, ledger: &Path) -> Result<(String, Child), String> {
    static STARTED: AtomicUsize = AtomicUsize::new(0);
    let file = ledger.join(format!(
        "{}.ledger",
        STARTED.fetch_add(1, Ordering::Relaxed)
    ));
    let child = Command::new(env!("CARGO_BIN_EXE_wq-redis-crash-worker"))
        .args([&common::url(), prefix, QUEUE])
        .arg(&file)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start a worker: {e}"))?;
    let pid = child.id().ok_or("a worker exited at once")?;
    Ok((pid.to_string(), child))
}

/// Every few hundred milliseconds kills a random worker among those with a
/// run in flight and starts a replacement, `KILLS` times; returns the kills.
async fn kill_workers(
    workers: &mut [(String, Child)],
    prefix: &str,
    ledger: &Path,
) -> Result<Vec<Kill>, String> {
    let mut kills = Vec::new();
    for _ in 0..KILLS {
        let pause = rand::rng().random_range(200..500);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        let names: Vec<&str> = workers.iter().map(|(n, _)| n.as_str()).collect();
        let busy = busy_workers(ledger, &names, BUSY_WAIT).await?;
        let victim = &busy[rand::rng().random_range(0..busy.len())];
        let i = workers
            .iter()
            .position(|(n, _)| n == victim)
            .ok_or("a busy worker is not running")?;
        let (worker, child) = &mut workers[i];
        child
            .kill()
            .await
            .map_err(|e| format!("cannot kill a worker: {e}"))?;
        // Timed once the process is gone: every line it wrote is older.
        kills.push(Kill {
            worker: worker.clone(),
            at: micros(),
        });
        workers[i] = spawn_worker(prefix, ledger)?;
    }
    Ok(kills)
}

/// Three worker processes share one Redis and run 20,000 jobs over 500
/// groups while the test SIGKILLs workers mid-run and starts replacements.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_workers_lose_nothing() -> Result<(), String> {
    let store = common::store("crash").await?;
    let ledger = std::env::temp_dir().join(store.prefix());
    let result = match std::fs::create_dir_all(&ledger) {
        Ok(()) => crash_run(&store, &ledger).await,
        Err(e) => Err(format!("{ledger:?}: {e}")),
    };
    let _ = std::fs::remove_dir_all(&ledger);
    let _ = store.clear().await;
    result
}

async fn crash_run(store: &RedisStore, ledger: &Path) -> Result<(), String> {
    let started = Instant::now();
    let client = Client::new(store.clone());
    let config = QueueConfig::new(QUEUE)
        .lease(Duration::from_secs(1))
        .max_attempts(50);
    client
        .declare_queue(config)
        .await
        .map_err(|e| e.to_string())?;
    let steps: Vec<(u32, u32)> = (0..JOBS).map(|i| (i % GROUPS, i / GROUPS)).collect();
    for chunk in steps.chunks(2_000) {
        let jobs = chunk.iter().map(|&(g, n)| {
            Enqueue::new(QUEUE, &serde_json::json!({ "g": g, "n": n })).group(format!("g{g}"))
        });
        client.enqueue_many(jobs).await.map_err(|e| e.to_string())?;
    }
    let mut workers = (0..WORKERS)
        .map(|_| spawn_worker(store.prefix(), ledger))
        .collect::<Result<Vec<_>, _>>()?;
    let kills = kill_workers(&mut workers, store.prefix(), ledger).await?;
    let left = DEADLINE.saturating_sub(started.elapsed());
    let done = common::wait_for_completed(&client, QUEUE, u64::from(JOBS), left).await;
    for (_, w) in &mut workers {
        let _ = w.kill().await;
    }
    done?;
    let counts = client.counts(QUEUE).await.map_err(|e| e.to_string())?;
    if counts.total() != u64::from(JOBS) || counts.completed != u64::from(JOBS) {
        return Err(format!("jobs lost or duplicated: {counts:?}"));
    }
    let verdict = check_kills(&read_ledger(ledger)?, &kills, JOBS as usize)?;
    eprintln!(
        "crash test: {} runs for {JOBS} jobs, {} cut short by {} kills",
        verdict.runs,
        verdict.cut,
        kills.len()
    );
    Ok(())
}
