//! Measurements behind `docs/redis.md`.
//!
//! ```text
//! cargo run --release -p wq-redis --example measure -- memory [url]
//! cargo run --release -p wq-redis --example measure -- durability
//! cargo run --release -p wq-redis --example measure -- cost [url]
//! ```
//!
//! `cost` reports the server's CPU time per job (`INFO cpu` deltas) for
//! single and batch enqueues and for claim + complete in rounds of ten,
//! a figure that noise from other processes on the machine barely moves.
//!
//! `memory` enqueues 100,000 jobs on the server at `url` (default the local
//! one) under a fresh prefix and reports `used_memory` per job: waiting
//! (ungrouped, and over 1,000 groups) and finished (completed, kept for
//! retention). Nothing else should write to that server meanwhile.
//!
//! `durability` starts its own `redis-server`s on ports 6390-6392 (data in
//! /tmp) with `appendonly no`, `appendfsync everysec` and `appendfsync
//! always`, enqueues continuously from eight tasks, SIGKILLs the server,
//! restarts it on the same directory and counts the acknowledged jobs
//! that are gone.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use parking_lot::Mutex;
use wq_core::{AckAction, ClaimRequest, Client, Enqueue, JobId, QueueConfig, Store, Timestamp};
use wq_redis::RedisStore;

type Error = Box<dyn std::error::Error + Send + Sync>;

const JOBS: u64 = 100_000;
const QUEUE: &str = "message";

/// The benchmark's payload: a realistic outbound message.
fn payload(i: u64) -> serde_json::Value {
    serde_json::json!({
        "g": i % 1_000, "n": i / 1_000, "instance": "inst-1",
        "to": format!("55119{:08}@s.whatsapp.net", i % 1_000),
        "text": "Olá! Seu pedido #48213 saiu para entrega e chega hoje entre 14h e 16h.",
    })
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let url = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "redis://127.0.0.1:6379".into());
    match args.first().map(String::as_str) {
        Some("memory") => memory(&url).await,
        Some("durability") => durability().await,
        Some("cost") => cost(&url).await,
        _ => Err("usage: measure memory [url] | measure durability | measure cost [url]".into()),
    }
}

async fn used_memory(url: &str) -> Result<i64, Error> {
    let mut conn = redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await?;
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(&mut conn)
        .await?;
    let used = info
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .ok_or("no used_memory in INFO")?;
    Ok(used.trim().parse()?)
}

async fn fill(client: &Client<RedisStore>, groups: Option<u64>) -> Result<(), Error> {
    for start in (0..JOBS).step_by(10_000) {
        let jobs = (start..start + 10_000).map(|i| {
            let e = Enqueue::new(QUEUE, &payload(i));
            match groups {
                Some(g) => e.group(format!("inst-1:55119{:08}", i % g)),
                None => e,
            }
        });
        client.enqueue_many(jobs).await?;
    }
    Ok(())
}

async fn complete_all(store: &RedisStore) -> Result<(), Error> {
    loop {
        let now = Timestamp::now();
        let req = ClaimRequest::new(QUEUE, 1_000, now, now + Duration::from_secs(60), "measure");
        let jobs = store.claim(&req).await?;
        if jobs.is_empty() {
            return Ok(());
        }
        let acks: Vec<_> = jobs
            .iter()
            .filter_map(|j| wq_core::Ack::for_job(j, AckAction::complete()))
            .collect();
        store.ack(&acks, now).await?;
    }
}

async fn memory(url: &str) -> Result<(), Error> {
    for (what, groups) in [("ungrouped", None), ("over 1,000 groups", Some(1_000))] {
        let prefix = format!("wq-measure-{:08x}", rand::random::<u32>());
        let store = RedisStore::connect(url, &prefix).await?;
        let client = Client::new(store.clone());
        client.declare_queue(QueueConfig::new(QUEUE)).await?;
        let empty = used_memory(url).await?;
        fill(&client, groups).await?;
        let waiting = used_memory(url).await?;
        complete_all(&store).await?;
        let finished = used_memory(url).await?;
        let per = |bytes: i64| bytes / JOBS as i64;
        println!(
            "{what}: {} bytes per waiting job, {} bytes per finished job (payload {} bytes)",
            per(waiting - empty),
            per(finished - empty),
            payload(1).to_string().len()
        );
        store.clear().await?;
    }
    Ok(())
}

async fn server_cpu(url: &str) -> Result<f64, Error> {
    let mut conn = redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await?;
    let info: String = redis::cmd("INFO").arg("cpu").query_async(&mut conn).await?;
    Ok(info
        .lines()
        .filter_map(|l| {
            let v = l
                .strip_prefix("used_cpu_user:")
                .or_else(|| l.strip_prefix("used_cpu_sys:"))?;
            v.trim().parse::<f64>().ok()
        })
        .sum())
}

/// Claims ten and completes them in the same call, as a worker does,
/// until the queue is empty.
async fn drain_in_rounds(store: &RedisStore) -> Result<(), Error> {
    let mut acks = Vec::new();
    loop {
        let now = Timestamp::now();
        let req = ClaimRequest::new(QUEUE, 10, now, now + Duration::from_secs(60), "measure");
        let done = store.ack_and_claim(&acks, Some(&req), now).await?;
        if done.jobs.is_empty() {
            return Ok(());
        }
        acks = done
            .jobs
            .iter()
            .filter_map(|j| wq_core::Ack::for_job(j, AckAction::complete()))
            .collect();
    }
}

async fn cost(url: &str) -> Result<(), Error> {
    const N: u64 = 20_000;
    let per_job = |a: f64, b: f64| (b - a) * 1e6 / N as f64;
    for (what, groups) in [("ungrouped", None), ("over 1,000 groups", Some(1_000))] {
        let prefix = format!("wq-measure-{:08x}", rand::random::<u32>());
        let store = RedisStore::connect(url, &prefix).await?;
        let client = Client::new(store.clone());
        client.declare_queue(QueueConfig::new(QUEUE)).await?;
        let group = |e: Enqueue, i: u64| match groups {
            Some(g) => e.group(format!("g{}", i % g)),
            None => e,
        };
        let t0 = server_cpu(url).await?;
        for i in 0..N {
            client
                .enqueue(group(Enqueue::new(QUEUE, &payload(i)), i))
                .await?;
        }
        let t1 = server_cpu(url).await?;
        drain_in_rounds(&store).await?;
        let t2 = server_cpu(url).await?;
        for start in (0..N).step_by(1_000) {
            let jobs = (start..start + 1_000).map(|i| group(Enqueue::new(QUEUE, &payload(i)), i));
            client.enqueue_many(jobs).await?;
        }
        let t3 = server_cpu(url).await?;
        println!(
            "{what}: server CPU per job: {:.1} µs single enqueue, {:.1} µs batch enqueue (1,000), {:.1} µs claim + complete (rounds of 10)",
            per_job(t0, t1),
            per_job(t2, t3),
            per_job(t1, t2)
        );
        store.clear().await?;
    }
    Ok(())
}

/// One throwaway server.
struct Server {
    port: u16,
    dir: String,
    args: Vec<&'static str>,
    pid: Option<u32>,
}

impl Server {
    fn start(&mut self) -> Result<(), Error> {
        std::fs::create_dir_all(&self.dir)?;
        let port = self.port.to_string();
        let child = Command::new("redis-server")
            .args(["--port", &port, "--dir", &self.dir, "--save", ""])
            .args(&self.args)
            .stdout(std::process::Stdio::null())
            .spawn()?;
        self.pid = Some(child.id());
        Ok(())
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn kill(&mut self) -> Result<(), Error> {
        if let Some(pid) = self.pid.take() {
            Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status()?;
        }
        Ok(())
    }

    async fn wait_ready(&self) -> Result<(), Error> {
        for _ in 0..100 {
            if let Ok(c) = redis::Client::open(self.url())
                && let Ok(mut conn) = c.get_multiplexed_async_connection().await
                && redis::cmd("PING")
                    .query_async::<String>(&mut conn)
                    .await
                    .is_ok()
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(format!("redis-server on port {} did not start", self.port).into())
    }
}

async fn durability() -> Result<(), Error> {
    let modes: [(&str, Vec<&'static str>); 3] = [
        ("appendonly no", vec!["--appendonly", "no"]),
        (
            "appendfsync everysec",
            vec!["--appendonly", "yes", "--appendfsync", "everysec"],
        ),
        (
            "appendfsync always",
            vec!["--appendonly", "yes", "--appendfsync", "always"],
        ),
    ];
    for (i, (name, args)) in modes.into_iter().enumerate() {
        let mut server = Server {
            port: 6390 + i as u16,
            dir: format!("/tmp/wq-durability-{}", 6390 + i),
            args,
            pid: None,
        };
        let _ = std::fs::remove_dir_all(&server.dir);
        server.start()?;
        server.wait_ready().await?;
        let result = crash_once(&mut server).await;
        server.kill()?;
        let (acked, missing, rate) = result?;
        println!(
            "{name}: {acked} enqueues acknowledged ({rate:.0}/s), {missing} missing after SIGKILL and restart"
        );
    }
    Ok(())
}

/// Enqueues from eight tasks, kills the server after two seconds,
/// restarts it; returns (acknowledged, missing, enqueues per second).
async fn crash_once(server: &mut Server) -> Result<(u64, u64, f64), Error> {
    let store = RedisStore::connect(&server.url(), "wq").await?;
    let client = Client::new(store.clone());
    client.declare_queue(QueueConfig::new(QUEUE)).await?;
    let acked: Arc<Mutex<Vec<JobId>>> = Arc::default();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..8u64 {
        let (client, acked) = (client.clone(), acked.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = t;
            while let Ok(e) = client.enqueue(Enqueue::new(QUEUE, &payload(i))).await {
                acked.lock().push(e.job.id);
                i += 8;
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    server.kill()?;
    let elapsed = started.elapsed();
    for t in tasks {
        t.await?;
    }
    drop((client, store));
    server.start()?;
    server.wait_ready().await?;
    let store = RedisStore::connect(&server.url(), "wq").await?;
    let ids = acked.lock().clone();
    let found: Vec<bool> = futures_util::stream::iter(ids.iter().map(|&id| {
        let store = store.clone();
        async move { store.get(id).await.map(|j| j.is_some()) }
    }))
    .buffer_unordered(64)
    .collect::<Vec<_>>()
    .await
    .into_iter()
    .collect::<Result<_, _>>()?;
    let missing = found.iter().filter(|f| !**f).count() as u64;
    let n = ids.len() as u64;
    Ok((n, missing, n as f64 / elapsed.as_secs_f64()))
}
