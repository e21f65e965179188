//! Worker processes SIGKILLed mid-run: nothing is lost, nothing runs twice
//! at once within a group, groups start their jobs in order, and every run
//! cut short by a kill runs again.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use rand::RngExt;
use redis::AsyncCommands;
use tokio::process::{Child, Command};
use wq_core::{Client, Enqueue, QueueConfig};
use wq_redis::RedisStore;

const QUEUE: &str = "crash";
const JOBS: u32 = 20_000;
const GROUPS: u32 = 500;
const WORKERS: usize = 3;
const KILLS: usize = 6;
/// Longest the whole crash test may take before it fails.
const DEADLINE: Duration = Duration::from_secs(120);

fn spawn_worker(prefix: &str, ledger: &str) -> Result<Child, String> {
    Command::new(env!("CARGO_BIN_EXE_wq-redis-crash-worker"))
        .args([&common::url(), prefix, QUEUE, ledger])
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start a worker: {e}"))
}

/// One handler run as the ledger shows it.
#[derive(Debug, Default)]
struct Run {
    job: String,
    group: u32,
    n: u32,
    attempt: u32,
    pid: u32,
    ended: bool,
}

/// Reads the ledger: runs in start order, and overlapping starts per group
/// (a run of a group starting while another one of it had not ended, in a
/// process that was still alive).
fn parse(entries: &[String], killed: &HashSet<u32>) -> Result<(Vec<Run>, u64), String> {
    let mut runs: Vec<Run> = Vec::new();
    let mut open: HashMap<(String, u32), usize> = HashMap::new();
    let mut running: HashMap<u32, usize> = HashMap::new();
    let mut overlaps = 0;
    for e in entries {
        let f: Vec<&str> = e.split(' ').collect();
        let num = |i: usize| -> Result<u32, String> {
            f.get(i)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| format!("bad ledger entry `{e}`"))
        };
        match f.first() {
            Some(&"s") => {
                let run = Run {
                    job: f.get(1).map_or_else(String::new, |s| (*s).to_owned()),
                    group: num(2)?,
                    n: num(3)?,
                    attempt: num(4)?,
                    pid: num(5)?,
                    ended: false,
                };
                if let Some(&other) = running.get(&run.group)
                    && !killed.contains(&runs[other].pid)
                {
                    overlaps += 1;
                }
                running.insert(run.group, runs.len());
                open.insert((run.job.clone(), run.attempt), runs.len());
                runs.push(run);
            }
            Some(&"e") => {
                let key = (
                    f.get(1).map_or_else(String::new, |s| (*s).to_owned()),
                    num(2)?,
                );
                let i = open
                    .remove(&key)
                    .ok_or_else(|| format!("end without a start: `{e}`"))?;
                runs[i].ended = true;
                if running.get(&runs[i].group) == Some(&i) {
                    running.remove(&runs[i].group);
                }
            }
            _ => return Err(format!("bad ledger entry `{e}`")),
        }
    }
    Ok((runs, overlaps))
}

/// Kills a random worker every few hundred milliseconds and starts a
/// replacement, `KILLS` times; returns the killed process ids.
async fn kill_workers(
    workers: &mut [Child],
    prefix: &str,
    ledger: &str,
) -> Result<HashSet<u32>, String> {
    let mut killed = HashSet::new();
    for _ in 0..KILLS {
        let pause = rand::rng().random_range(200..500);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        let i = rand::rng().random_range(0..workers.len());
        killed.extend(workers[i].id());
        workers[i]
            .kill()
            .await
            .map_err(|e| format!("cannot kill a worker: {e}"))?;
        workers[i] = spawn_worker(prefix, ledger)?;
    }
    Ok(killed)
}

/// Three worker processes share one Redis and run 20,000 jobs over 500
/// groups while the test SIGKILLs workers mid-run and starts replacements.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_workers_lose_nothing() -> Result<(), String> {
    let store = common::store("crash").await?;
    let result = crash_run(&store).await;
    let _ = store.clear().await;
    result
}

async fn crash_run(store: &RedisStore) -> Result<(), String> {
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
    let ledger = format!("{{{}}}:test-ledger", store.prefix());
    let mut workers = (0..WORKERS)
        .map(|_| spawn_worker(store.prefix(), &ledger))
        .collect::<Result<Vec<_>, _>>()?;
    let killed = kill_workers(&mut workers, store.prefix(), &ledger).await?;
    let left = DEADLINE.saturating_sub(started.elapsed());
    let done = common::wait_for_completed(&client, QUEUE, u64::from(JOBS), left).await;
    for w in &mut workers {
        let _ = w.kill().await;
    }
    done?;
    let counts = client.counts(QUEUE).await.map_err(|e| e.to_string())?;
    if counts.total() != u64::from(JOBS) || counts.completed != u64::from(JOBS) {
        return Err(format!("jobs lost or duplicated: {counts:?}"));
    }
    let mut conn = redis::Client::open(common::url())
        .map_err(|e| e.to_string())?
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| e.to_string())?;
    let entries: Vec<String> = conn
        .lrange(&ledger, 0, -1)
        .await
        .map_err(|e| e.to_string())?;
    check_ledger(&entries, &killed)
}

fn check_ledger(entries: &[String], killed: &HashSet<u32>) -> Result<(), String> {
    let (runs, overlaps) = parse(entries, killed)?;
    if overlaps > 0 {
        return Err(format!(
            "{overlaps} runs started while another run of their group was live"
        ));
    }
    // Per group, first runs start in enqueue order.
    let mut first: HashSet<&str> = HashSet::new();
    let mut next: HashMap<u32, u32> = HashMap::new();
    for r in &runs {
        if first.insert(&r.job) {
            let expected = next.entry(r.group).or_insert(0);
            if r.n != *expected {
                return Err(format!(
                    "group {} started job {} before job {}",
                    r.group, r.n, expected
                ));
            }
            *expected += 1;
        }
    }
    if first.len() != JOBS as usize {
        return Err(format!(
            "{} distinct jobs ran, {JOBS} enqueued",
            first.len()
        ));
    }
    // Every run cut short by a kill ran again, and finished.
    let mut cut = 0;
    for r in runs.iter().filter(|r| !r.ended) {
        if !killed.contains(&r.pid) {
            return Err(format!("a run of {} never ended in a live process", r.job));
        }
        cut += 1;
        let rerun = runs
            .iter()
            .any(|o| o.job == r.job && o.attempt > r.attempt && o.ended);
        if !rerun {
            return Err(format!(
                "job {} was cut short by a kill and never ran again",
                r.job
            ));
        }
    }
    if cut == 0 {
        return Err("no kill landed mid-run: the test tested nothing".into());
    }
    eprintln!(
        "crash test: {} runs for {JOBS} jobs, {cut} cut short by {} kills",
        runs.len(),
        killed.len()
    );
    Ok(())
}
