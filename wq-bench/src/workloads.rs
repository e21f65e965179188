//! The design's workloads, generic over the backend.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::RngExt;
use serde::{Deserialize, Serialize};
use wq_core::{
    Ack, AckAction, Admin, Backend, ClaimRequest, Client, Enqueue, Events, Handler, JobContext,
    JobError, QueueConfig, QueueOptions, Store, Worker, WorkerHandle,
};

use crate::report::Report;

/// Makes a fresh, empty backend for each workload and cleans it up.
pub trait Factory {
    /// The backend.
    type Backend: Backend;
    /// The name printed in reports.
    fn name(&self) -> &'static str;
    /// A fresh backend.
    fn fresh(&self) -> impl Future<Output = Result<Self::Backend, String>>;
    /// Removes what `fresh` made.
    fn cleanup(&self, backend: Self::Backend) -> impl Future<Output = ()>;
}

/// Sizes of a run.
#[derive(Debug, Clone)]
pub struct Params {
    pub jobs: u64,
    pub groups: u64,
    pub concurrency: usize,
    pub batch: usize,
    pub rate: u64,
    pub duration: Duration,
    pub backlog: u64,
}

pub const QUEUE: &str = "bench";

/// The payload every job carries: a realistic outbound message.
#[derive(Serialize, Deserialize)]
pub struct Msg {
    pub g: u64,
    pub n: u64,
    instance: String,
    to: String,
    text: String,
}

pub fn msg(g: u64, n: u64) -> Msg {
    Msg {
        g,
        n,
        instance: "inst-1".into(),
        to: format!("55119{g:08}@s.whatsapp.net"),
        text: "Olá! Seu pedido #48213 saiu para entrega e chega hoje entre 14h e 16h.".into(),
    }
}

fn job(g: u64, n: u64, grouped: bool) -> Enqueue {
    let e = Enqueue::new(QUEUE, &msg(g, n));
    if grouped {
        e.group(format!("inst-1:{g}"))
    } else {
        e
    }
}

pub async fn setup<F: Factory>(f: &F) -> Result<(Client<F::Backend>, F::Backend), String> {
    let backend = f.fresh().await?;
    let client = Client::new(backend.clone());
    client
        .declare_queue(QueueConfig::new(QUEUE))
        .await
        .map_err(|e| e.to_string())?;
    Ok((client, backend))
}

async fn fill<B: Store>(
    client: &Client<B>,
    jobs: u64,
    groups: u64,
    batch: usize,
) -> Result<(), String> {
    let mut next = 0;
    while next < jobs {
        let end = (next + batch as u64).min(jobs);
        let chunk = (next..end).map(|i| job(i % groups.max(1), i / groups.max(1), groups > 0));
        client
            .enqueue_many(chunk)
            .await
            .map_err(|e| e.to_string())?;
        next = end;
        if next % 200_000 == 0 {
            eprintln!("  filled {next}/{jobs}");
        }
    }
    Ok(())
}

/// W1: enqueue one at a time, then in batches.
pub async fn w1<F: Factory>(f: &F, p: &Params) -> Result<Vec<Report>, String> {
    let (client, backend) = setup(f).await?;
    eprintln!("W1: {} single enqueues", p.jobs);
    let mut lat = Vec::with_capacity(p.jobs as usize);
    let started = Instant::now();
    for i in 0..p.jobs {
        let t = Instant::now();
        client
            .enqueue(job(i, 0, false))
            .await
            .map_err(|e| e.to_string())?;
        lat.push(t.elapsed());
    }
    let single = Report::new(f.name(), "W1", p.jobs, started.elapsed()).latencies(&mut lat);
    f.cleanup(backend).await;

    let (client, backend) = setup(f).await?;
    eprintln!("W1-batch: {} jobs in batches of {}", p.jobs, p.batch);
    let started = Instant::now();
    fill(&client, p.jobs, 0, p.batch).await?;
    let batch = Report::new(f.name(), "W1-batch", p.jobs, started.elapsed());
    f.cleanup(backend).await;
    Ok(vec![single, batch])
}

/// Waits until `done` reaches `total`, then until the store shows every job completed.
async fn drained<B: Store + Admin>(
    client: &Client<B>,
    done: &AtomicU64,
    total: u64,
) -> Result<(), String> {
    while done.load(Ordering::Relaxed) < total {
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    loop {
        let c = client.counts(QUEUE).await.map_err(|e| e.to_string())?;
        if c.completed >= total {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

/// Starts a worker running `handler` on the bench queue, telling `events`
/// if given.
async fn start<B: Backend>(
    backend: &B,
    handler: impl Handler,
    concurrency: usize,
    events: Option<Events>,
) -> Result<WorkerHandle, String> {
    let worker = Worker::new(backend.clone());
    let worker = match events {
        Some(events) => worker.events(events),
        None => worker,
    };
    worker
        .handle_with(
            QUEUE,
            handler,
            QueueOptions::default().concurrency(concurrency),
        )
        .start()
        .await
        .map_err(|e| e.to_string())
}

/// Starts a worker, waits until it has completed `total` jobs, and stops
/// it; returns how long the jobs took.
pub async fn drain<B: Backend>(
    client: &Client<B>,
    backend: &B,
    handler: impl Handler,
    done: &AtomicU64,
    total: u64,
    concurrency: usize,
    events: Option<Events>,
) -> Result<Duration, String> {
    let started = Instant::now();
    let worker = start(backend, handler, concurrency, events).await?;
    drained(client, done, total).await?;
    let elapsed = started.elapsed();
    worker.shutdown(Duration::from_secs(30)).await;
    Ok(elapsed)
}

/// W2: drain a full queue with a no-op handler.
pub async fn w2<F: Factory>(f: &F, p: &Params) -> Result<Vec<Report>, String> {
    Ok(vec![w2_run(f, p, "W2", None).await?])
}

/// One W2 run named `name`, its worker telling `events` if given.
pub async fn w2_run<F: Factory>(
    f: &F,
    p: &Params,
    name: &str,
    events: Option<Events>,
) -> Result<Report, String> {
    let (client, backend) = setup(f).await?;
    eprintln!(
        "{name}: drain {} jobs, concurrency {}",
        p.jobs, p.concurrency
    );
    fill(&client, p.jobs, 0, 5_000).await?;
    let done = Arc::new(AtomicU64::new(0));
    let handler = {
        let done = done.clone();
        move |_: JobContext| {
            done.fetch_add(1, Ordering::Relaxed);
            std::future::ready(Ok::<(), JobError>(()))
        }
    };
    let elapsed = drain(
        &client,
        &backend,
        handler,
        &done,
        p.jobs,
        p.concurrency,
        events,
    )
    .await?;
    f.cleanup(backend).await;
    let mut r = Report::new(f.name(), name, p.jobs, elapsed);
    r.concurrency = Some(p.concurrency);
    Ok(r)
}

/// W3: grouped FIFO with one in flight per group; the handler yields a
/// random 0–3 times so interleavings happen, and checks order and overlap.
pub async fn w3<F: Factory>(f: &F, p: &Params) -> Result<Vec<Report>, String> {
    let (client, backend) = setup(f).await?;
    eprintln!(
        "W3: {} jobs over {} groups, concurrency {}",
        p.jobs, p.groups, p.concurrency
    );
    fill(&client, p.jobs, p.groups, 5_000).await?;
    let last: Arc<Vec<AtomicI64>> = Arc::new((0..p.groups).map(|_| AtomicI64::new(-1)).collect());
    let running: Arc<Vec<AtomicU64>> = Arc::new((0..p.groups).map(|_| AtomicU64::new(0)).collect());
    let violations = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let handler = {
        let (last, running, violations, done) = (
            last.clone(),
            running.clone(),
            violations.clone(),
            done.clone(),
        );
        move |ctx: JobContext| {
            let (last, running, violations, done) = (
                last.clone(),
                running.clone(),
                violations.clone(),
                done.clone(),
            );
            async move {
                let m: Msg = ctx.payload()?;
                let g = m.g as usize;
                if running[g].fetch_add(1, Ordering::SeqCst) != 0 {
                    violations.fetch_add(1, Ordering::Relaxed);
                }
                let prev = last[g].swap(m.n as i64, Ordering::SeqCst);
                if prev + 1 != m.n as i64 {
                    violations.fetch_add(1, Ordering::Relaxed);
                }
                let yields = rand::rng().random_range(0..4);
                for _ in 0..yields {
                    tokio::task::yield_now().await;
                }
                running[g].fetch_sub(1, Ordering::SeqCst);
                done.fetch_add(1, Ordering::Relaxed);
                Ok::<(), JobError>(())
            }
        }
    };
    let elapsed = drain(
        &client,
        &backend,
        handler,
        &done,
        p.jobs,
        p.concurrency,
        None,
    )
    .await?;
    f.cleanup(backend).await;
    let mut r = Report::new(f.name(), "W3", p.jobs, elapsed);
    r.groups = Some(p.groups);
    r.concurrency = Some(p.concurrency);
    r.order_violations = Some(violations.load(Ordering::Relaxed));
    Ok(vec![r])
}

/// W4: a steady `rate` of jobs into idle workers; enqueue→start latency.
pub async fn w4<F: Factory>(f: &F, p: &Params) -> Result<Vec<Report>, String> {
    let (client, backend) = setup(f).await?;
    let total = p.rate * p.duration.as_secs().max(1);
    eprintln!("W4: {} jobs/s for {:?} ({total} jobs)", p.rate, p.duration);
    let origin = Instant::now();
    let enqueued_at: Arc<Vec<AtomicU64>> =
        Arc::new((0..total).map(|_| AtomicU64::new(0)).collect());
    let latency: Arc<Vec<AtomicU64>> = Arc::new((0..total).map(|_| AtomicU64::new(0)).collect());
    let done = Arc::new(AtomicU64::new(0));
    let handler = {
        let (enqueued_at, latency, done) = (enqueued_at.clone(), latency.clone(), done.clone());
        move |ctx: JobContext| {
            let started = origin.elapsed().as_nanos() as u64;
            let result = ctx.payload::<Msg>().map(|m| {
                let i = m.n as usize;
                let sent = enqueued_at[i].load(Ordering::SeqCst);
                latency[i].store(started.saturating_sub(sent).max(1), Ordering::SeqCst);
                done.fetch_add(1, Ordering::Relaxed);
            });
            std::future::ready(result)
        }
    };
    let worker = start(&backend, handler, p.concurrency, None).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let every = Duration::from_secs_f64(1.0 / p.rate as f64);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    for i in 0..total {
        tick.tick().await;
        enqueued_at[i as usize].store(origin.elapsed().as_nanos() as u64, Ordering::SeqCst);
        client
            .enqueue(job(0, i, false))
            .await
            .map_err(|e| e.to_string())?;
    }
    drained(&client, &done, total).await?;
    let elapsed = started.elapsed();
    worker.shutdown(Duration::from_secs(30)).await;
    f.cleanup(backend).await;
    let mut samples: Vec<Duration> = latency
        .iter()
        .map(|l| Duration::from_nanos(l.load(Ordering::SeqCst)))
        .collect();
    let mut r = Report::new(f.name(), "W4", total, elapsed).latencies(&mut samples);
    r.concurrency = Some(p.concurrency);
    Ok(vec![r])
}

/// One round of W5: claims up to `limit` jobs and completes them in a
/// second call; how many it claimed.
pub async fn claim_and_complete<B: Store>(
    client: &Client<B>,
    backend: &B,
    limit: usize,
) -> Result<usize, String> {
    let now = client.clock().now();
    let req = ClaimRequest::new(QUEUE, limit, now, now + Duration::from_secs(30), "bench");
    let jobs = backend.claim(&req).await.map_err(|e| e.to_string())?;
    let acks: Vec<Ack> = jobs
        .iter()
        .filter_map(|j| Ack::for_job(j, AckAction::complete()))
        .collect();
    backend.ack(&acks, now).await.map_err(|e| e.to_string())?;
    Ok(jobs.len())
}

/// Claims and completes 10 jobs at a time until `sample` are done; the
/// report's percentiles are per round.
pub async fn claim_rounds<F: Factory>(
    f: &F,
    client: &Client<F::Backend>,
    backend: &F::Backend,
    name: &str,
    sample: u64,
) -> Result<Report, String> {
    let mut lat = Vec::new();
    let started = Instant::now();
    let mut claimed = 0;
    while claimed < sample {
        let t = Instant::now();
        let n = claim_and_complete(client, backend, 10).await?;
        lat.push(t.elapsed());
        if n == 0 {
            return Err(format!("{name}: the queue ran dry after {claimed} jobs"));
        }
        claimed += n as u64;
    }
    let mut r = Report::new(f.name(), name, claimed, started.elapsed()).latencies(&mut lat);
    r.concurrency = Some(1);
    Ok(r)
}

/// W5: the cost of claim + acknowledge with a large backlog waiting,
/// against the same measurement with only the sample waiting.
pub async fn w5<F: Factory>(f: &F, p: &Params) -> Result<Vec<Report>, String> {
    let sample = p.jobs.min(p.backlog);
    let mut out = Vec::new();
    for (name, backlog) in [("W5-empty", sample), ("W5", p.backlog)] {
        let (client, backend) = setup(f).await?;
        eprintln!(
            "{name}: claim {sample} jobs with {backlog} waiting over {} groups",
            p.groups
        );
        fill(&client, backlog, p.groups, 10_000).await?;
        let mut r = claim_rounds(f, &client, &backend, name, sample).await?;
        r.groups = Some(p.groups);
        out.push(r);
        f.cleanup(backend).await;
    }
    if let [empty, full] = &out[..] {
        eprintln!(
            "W5: claim+ack p50 {:.4} ms with {} waiting vs {:.4} ms with {} (ratio {:.2})",
            full.p50_ms.unwrap_or(0.0),
            p.backlog,
            empty.p50_ms.unwrap_or(0.0),
            sample,
            full.p50_ms.unwrap_or(0.0) / empty.p50_ms.unwrap_or(1.0).max(1e-9)
        );
    }
    Ok(out)
}
