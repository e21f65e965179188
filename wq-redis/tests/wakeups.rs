//! Wake-ups across processes: a worker on one store (its fallback poll an
//! hour) starts jobs enqueued through another store of the same prefix
//! within moments, through Redis pub/sub alone.

mod common;

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
    let result = wq_testkit::wakeups::wakes_across_stores(&producer, &consumer).await;
    let _ = producer.clear().await;
    result.map_err(|e| e.to_string())
}
