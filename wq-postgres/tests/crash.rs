//! Crash tests: worker processes SIGKILLed mid-run, and connections
//! terminated by the server, lose nothing and break no order.

mod support;

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use wq_core::{Client, Enqueue, QueueConfig, RetryPolicy};
use wq_postgres::PgStore;
use wq_testkit::crash::{Kill, busy_workers, check_kills, micros, read_ledger};

const JOBS: u32 = 20_000;
const GROUPS: u32 = 500;

fn spawn(schema: &str, dir: &Path, name: &str) -> Child {
    let ledger = dir.join(format!("{name}.ledger"));
    Command::new(env!("CARGO_BIN_EXE_wq-postgres-crash-worker"))
        .args([
            support::url(),
            schema.to_owned(),
            ledger.display().to_string(),
            name.to_owned(),
        ])
        .spawn()
        .expect("start a worker process")
}

async fn enqueue_all(client: &Client<PgStore>) {
    client
        .declare_queue(
            QueueConfig::new("crash")
                .lease(Duration::from_secs(1))
                .retry(RetryPolicy {
                    max_attempts: 50,
                    ..RetryPolicy::default()
                }),
        )
        .await
        .expect("declare");
    let all: Vec<u32> = (0..JOBS).collect();
    for chunk in all.chunks(2_000) {
        let jobs = chunk.iter().map(|i| {
            let (g, n) = (i % GROUPS, i / GROUPS);
            Enqueue::new("crash", &serde_json::json!({ "g": g, "n": n })).group(format!("g{g}"))
        });
        client.enqueue_many(jobs).await.expect("enqueue");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_worker_processes_lose_nothing() {
    support::server().await.expect("Postgres");
    let schema = support::schema();
    let store = PgStore::connect(&support::url(), &schema)
        .await
        .expect("store");
    let client = Client::new(store.clone());
    enqueue_all(&client).await;
    let dir = std::env::temp_dir().join(&schema);
    std::fs::create_dir_all(&dir).expect("ledger dir");

    let mut workers: Vec<(String, Child)> = (0..3)
        .map(|i| {
            let name = format!("w{i}");
            (name.clone(), spawn(&schema, &dir, &name))
        })
        .collect();
    let mut kills: Vec<Kill> = Vec::new();
    let mut next = 3;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(240);
    let mut last_kill: Option<Instant> = None;
    loop {
        let counts = client.counts("crash").await.expect("counts");
        if counts.pending() == 0 || Instant::now() > deadline {
            break;
        }
        // Once work is under way, kill one worker every 600 ms, six times.
        let due = last_kill.is_none_or(|t| t.elapsed() > Duration::from_millis(600));
        if kills.len() < 6 && counts.completed >= 1_000 && due {
            last_kill = Some(Instant::now());
            let names: Vec<&str> = workers.iter().map(|(n, _)| n.as_str()).collect();
            let busy = busy_workers(&dir, &names, Duration::from_secs(30))
                .await
                .expect("a worker at work");
            let victim = &busy[kills.len() % busy.len()];
            let i = workers
                .iter()
                .position(|(n, _)| n == victim)
                .expect("running");
            let (worker, mut child) = workers.remove(i);
            child.kill().expect("SIGKILL a worker");
            let _ = child.wait();
            // Timed once the process is gone: every line it wrote is older.
            kills.push(Kill {
                worker,
                at: micros(),
            });
            let name = format!("w{next}");
            next += 1;
            workers.push((name.clone(), spawn(&schema, &dir, &name)));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (_, mut child) in workers {
        let _ = child.kill();
        let _ = child.wait();
    }
    let counts = client.counts("crash").await.expect("counts");
    let ledger = read_ledger(&dir).expect("ledger");
    let _ = std::fs::remove_dir_all(&dir);
    let attempts: Vec<u32> = sqlx::query_scalar::<_, i32>(sqlx::AssertSqlSafe(format!(
        "SELECT attempt FROM \"{schema}\".jobs"
    )))
    .fetch_all(store.pool())
    .await
    .expect("attempts")
    .into_iter()
    .map(|a| a as u32)
    .collect();
    store.close().await;
    support::drop_schema(&schema).await;

    eprintln!(
        "killed {:?}; took {:?}",
        kills.iter().map(|k| &k.worker).collect::<Vec<_>>(),
        started.elapsed()
    );
    assert_eq!(kills.len(), 6, "workers killed mid-run");
    assert_eq!(counts.completed, u64::from(JOBS), "no job lost: {counts:?}");
    assert_eq!(
        counts.total(),
        u64::from(JOBS),
        "no duplicate job: {counts:?}"
    );
    assert_eq!(attempts.len(), JOBS as usize, "rows stored");
    let verdict = check_kills(&ledger, &kills, JOBS as usize).expect("the ledger");
    eprintln!(
        "{} runs for {JOBS} jobs, {} cut short by a kill",
        verdict.runs, verdict.cut
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_connections_reconnect_and_finish() {
    use sqlx::Connection;
    use std::sync::Arc;
    use wq_testkit::conformance::{Ledger, Step, recording_handler, start_worker};

    support::server().await.expect("Postgres");
    let schema = support::schema();
    let app = format!("wq-{schema}");
    let store = PgStore::builder(&support::url(), &schema)
        .application_name(app.clone())
        .connect()
        .await
        .expect("store");
    let client = Client::new(store.clone());
    client
        .declare_queue(
            QueueConfig::new("cut")
                .lease(Duration::from_secs(1))
                .max_attempts(50),
        )
        .await
        .expect("declare");
    let (jobs, groups) = (10_000u32, 100u32);
    let all: Vec<u32> = (0..jobs).collect();
    for chunk in all.chunks(1_000) {
        let batch = chunk.iter().map(|i| {
            let g = format!("g{}", i % groups);
            Enqueue::new("cut", &Step::ok(g.clone(), i / groups)).group(g)
        });
        client.enqueue_many(batch).await.expect("enqueue");
    }
    let ledger = Arc::new(Ledger::default());
    let w1 = start_worker(&store, "cut", recording_handler(ledger.clone()), 8)
        .await
        .expect("worker");
    let w2 = start_worker(&store, "cut", recording_handler(ledger.clone()), 8)
        .await
        .expect("worker");

    let mut admin = sqlx::PgConnection::connect(&support::url())
        .await
        .expect("admin connection");
    let mut rounds = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        // The client's own connections are cut too: its errors are expected.
        let pending = client.counts("cut").await.map(|c| c.pending()).unwrap_or(1);
        if pending == 0 || Instant::now() > deadline {
            break;
        }
        if rounds < 5 {
            let cut: Vec<bool> = sqlx::query_scalar(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            )
            .bind(&app)
            .fetch_all(&mut admin)
            .await
            .expect("terminate");
            if !cut.is_empty() {
                rounds += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    w1.shutdown(Duration::from_secs(5)).await;
    w2.shutdown(Duration::from_secs(5)).await;
    let counts = client.counts("cut").await.expect("counts after the cuts");
    store.close().await;
    support::drop_schema(&schema).await;

    assert_eq!(
        rounds, 5,
        "rounds of terminated connections while work was left"
    );
    assert_eq!(counts.completed, u64::from(jobs), "no job lost: {counts:?}");
    assert_eq!(
        counts.total(),
        u64::from(jobs),
        "no duplicate job: {counts:?}"
    );
    ledger
        .check_fifo()
        .expect("per-group order and one in flight");
}
