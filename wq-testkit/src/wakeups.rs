//! Wake-ups across processes: what a backend's notification path must do
//! when the enqueuer and the worker are different stores (as two processes
//! are) on the same namespace.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use wq_core::{Backend, Client, Enqueue, JobContext, JobError, QueueConfig, Worker};

use crate::{Failure, TestResult};

/// A worker on `consumer`, its fallback poll an hour, starts jobs enqueued
/// through `producer` within a second (five rounds, each after the worker
/// went idle), so only the backend's wake-ups can have started them.
pub async fn wakes_across_stores<B: Backend>(producer: &B, consumer: &B) -> TestResult {
    let client = Client::new(producer.clone());
    client.declare_queue(QueueConfig::new("wake")).await?;
    let ran = Arc::new(AtomicU32::new(0));
    let handler = {
        let ran = ran.clone();
        move |_: JobContext| {
            ran.fetch_add(1, Ordering::SeqCst);
            std::future::ready(Ok::<(), JobError>(()))
        }
    };
    let worker = Worker::new(consumer.clone())
        .poll_interval(Duration::from_secs(3_600))
        .handle("wake", handler)
        .start()
        .await?;
    // Bounded: a store call that hangs fails the check instead of hanging it.
    let result = crate::harness::within("the wake-up rounds", rounds(&client, &ran)).await;
    let stopped = crate::harness::stop(worker).await;
    let slowest = result??;
    stopped?;
    // Generous for a loaded machine; the fallback poll would take an hour.
    if slowest > Duration::from_secs(1) {
        return Err(Failure(format!("slowest start {slowest:?} after enqueue")));
    }
    eprintln!("cross-store wake-up: slowest start {slowest:?} after enqueue");
    Ok(())
}

async fn rounds<B: Backend>(client: &Client<B>, ran: &AtomicU32) -> Result<Duration, Failure> {
    let mut slowest = Duration::ZERO;
    for round in 1..=5 {
        // Let the worker go idle, so only a wake-up can start the job.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let sent = Instant::now();
        client.enqueue(Enqueue::new("wake", &round)).await?;
        while ran.load(Ordering::SeqCst) < round && sent.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        slowest = slowest.max(sent.elapsed());
        if ran.load(Ordering::SeqCst) < round {
            return Err(Failure(format!(
                "job {round} did not start within 10 s: no wake-up"
            )));
        }
    }
    Ok(slowest)
}
