//! The race that once stranded jobs on Postgres: batch enqueues into groups
//! whose heads a worker is acknowledging at the same moment. A new job must
//! end up claimable (made a head by the enqueue or by the acknowledgement),
//! never by neither.

mod support;

use std::time::Duration;

use rand::RngExt;
use wq_core::{
    Audit, Client, Clock, Enqueue, JobContext, JobError, QueueConfig, SystemClock, Worker,
};
use wq_postgres::PgStore;
use wq_testkit::{Failure, PATIENCE, wait_until};

const GROUPS: usize = 200;
const ROUNDS: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_enqueues_racing_acks_strand_nothing() -> Result<(), Failure> {
    support::server().await?;
    let schema = support::schema();
    let result = run(&schema).await;
    support::drop_schema(&schema).await;
    result
}

async fn run(schema: &str) -> Result<(), Failure> {
    let store = PgStore::builder(&support::url(), schema)
        .max_connections(8)
        .connect()
        .await?;
    let client = Client::new(store.clone());
    client
        .declare_queue(QueueConfig::new("message").concurrency(50))
        .await?;
    let worker = Worker::new(store.clone())
        .handle("message", |_job: JobContext| async move {
            let pause = rand::rng().random_range(0..=2);
            tokio::time::sleep(Duration::from_millis(pause)).await;
            Ok::<(), JobError>(())
        })
        .start()
        .await?;
    for round in 0..ROUNDS {
        let batch = (0..GROUPS)
            .map(|g| Enqueue::new("message", &round).group(format!("inst-1:{g}")))
            .collect::<Vec<_>>();
        client.enqueue_many(batch).await?;
        let gap = rand::rng().random_range(0..=10);
        tokio::time::sleep(Duration::from_millis(gap)).await;
    }
    let total = (GROUPS * ROUNDS) as u64;
    let drained = wait_until("every job to complete", PATIENCE, || async {
        Ok(client.counts("message").await?.completed == total)
    })
    .await;
    worker.shutdown(Duration::from_secs(5)).await;
    let report = store
        .audit(&"message".into(), SystemClock.now(), false)
        .await?;
    let counts = client.counts("message").await?;
    drained.map_err(|e| Failure::new(format!("{e}: {counts:?}, audit: {report:?}")))?;
    if !report.is_clean() {
        return Err(Failure::new(format!("audit found {:?}", report.anomalies)));
    }
    Ok(())
}
