//! Connections dropped by the server (`CLIENT KILL`) mid-run: the workers
//! reconnect and finish. In a test binary of its own, since it drops every
//! connection opened after it started.

mod common;

use std::time::Duration;

use wq_core::{Client, Enqueue, QueueConfig, Worker};
use wq_redis::RedisStore;
use wq_testkit::conformance::{Ledger, Step, recording_handler};

const QUEUE: &str = "reconnect";

/// Two workers whose connections (commands and pub/sub) the server drops
/// twice mid-run reconnect and finish every job, in order per group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connections_reconnect() -> Result<(), String> {
    common::ensure_server().await?;
    let mut admin = common::raw().await?;
    let admin_id: i64 = redis::cmd("CLIENT")
        .arg("ID")
        .query_async(&mut admin)
        .await
        .map_err(|e| e.to_string())?;
    let prefix = common::fresh_prefix("reconnect");
    let url = common::url();
    let connect = || RedisStore::connect(&url, &prefix);
    let (a, b) = (
        connect().await.map_err(|e| e.to_string())?,
        connect().await.map_err(|e| e.to_string())?,
    );
    let result = reconnect_run(&a, &b, &mut admin, admin_id).await;
    let _ = a.clear().await;
    result
}

async fn reconnect_run(
    a: &RedisStore,
    b: &RedisStore,
    admin: &mut redis::aio::MultiplexedConnection,
    admin_id: i64,
) -> Result<(), String> {
    let total = 5_000u32;
    let client = Client::new(a.clone());
    let config = QueueConfig::new(QUEUE).lease(Duration::from_secs(2));
    client
        .declare_queue(config)
        .await
        .map_err(|e| e.to_string())?;
    for chunk in (0..total).collect::<Vec<_>>().chunks(1_000) {
        let jobs = chunk.iter().map(|&i| {
            let g = format!("g{}", i % 50);
            Enqueue::new(QUEUE, &Step::ok(g.clone(), i / 50)).group(g)
        });
        client.enqueue_many(jobs).await.map_err(|e| e.to_string())?;
    }
    let ledger = std::sync::Arc::new(Ledger::default());
    let start = |s: &RedisStore| {
        Worker::new(s.clone())
            .handle(QUEUE, recording_handler(ledger.clone()))
            .start()
    };
    let wa = start(a).await.map_err(|e| e.to_string())?;
    let wb = start(b).await.map_err(|e| e.to_string())?;
    let mut dropped = 0;
    for (i, at) in [500u64, 2_500].into_iter().enumerate() {
        common::wait_for_completed(&client, QUEUE, at, Duration::from_secs(60)).await?;
        for id in common::clients_since(admin, admin_id).await? {
            let n: i64 = redis::cmd("CLIENT")
                .arg("KILL")
                .arg("ID")
                .arg(id)
                .query_async(admin)
                .await
                .map_err(|e| e.to_string())?;
            dropped += n;
        }
        if dropped < 2 * (i as i64 + 1) {
            return Err(format!("only {dropped} connections dropped"));
        }
    }
    let done =
        common::wait_for_completed(&client, QUEUE, u64::from(total), Duration::from_secs(60)).await;
    wa.shutdown(Duration::from_secs(5)).await;
    wb.shutdown(Duration::from_secs(5)).await;
    done?;
    ledger.check_fifo().map_err(|f| f.to_string())?;
    let counts = client.counts(QUEUE).await.map_err(|e| e.to_string())?;
    if counts.total() != u64::from(total) {
        return Err(format!("jobs lost or duplicated: {counts:?}"));
    }
    Ok(())
}
