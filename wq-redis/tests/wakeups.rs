//! Wake-ups across processes: a worker on one store (its fallback poll an
//! hour) starts jobs enqueued through another store of the same prefix
//! within moments, through Redis pub/sub alone.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use wq_core::{Client, Enqueue, JobContext, JobError, QueueConfig, Worker};
use wq_redis::RedisStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_process_wakes_idle_workers() -> Result<(), String> {
    common::ensure_server().await?;
    let prefix = common::fresh_prefix("wake");
    let url = common::url();
    let producer = RedisStore::connect(&url, &prefix)
        .await
        .map_err(|e| e.to_string())?;
    let consumer = RedisStore::connect(&url, &prefix)
        .await
        .map_err(|e| e.to_string())?;
    let result = wake_run(&producer, &consumer).await;
    let _ = producer.clear().await;
    result
}

async fn wake_run(producer: &RedisStore, consumer: &RedisStore) -> Result<(), String> {
    let client = Client::new(producer.clone());
    client
        .declare_queue(QueueConfig::new("wake"))
        .await
        .map_err(|e| e.to_string())?;
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
        .await
        .map_err(|e| e.to_string())?;
    let mut slowest = Duration::ZERO;
    let mut result = Ok(());
    for round in 1..=5 {
        // Let the worker go idle, so only a wake-up can start the job.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let sent = Instant::now();
        if let Err(e) = client.enqueue(Enqueue::new("wake", &round)).await {
            result = Err(e.to_string());
            break;
        }
        while ran.load(Ordering::SeqCst) < round && sent.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        slowest = slowest.max(sent.elapsed());
        if ran.load(Ordering::SeqCst) < round {
            result = Err(format!("job {round} did not start within 10 s: no wake-up"));
            break;
        }
    }
    worker.shutdown(Duration::from_secs(5)).await;
    result?;
    // Generous for a loaded machine; the fallback poll would take an hour.
    if slowest > Duration::from_secs(1) {
        return Err(format!("slowest start {slowest:?} after enqueue"));
    }
    eprintln!("cross-process wake-up: slowest start {slowest:?} after enqueue");
    Ok(())
}
