//! Wake-ups across processes: a worker on one store (its fallback poll an
//! hour) starts jobs enqueued through another store of the same schema
//! within moments, through LISTEN/NOTIFY alone. The enqueuing store tags
//! its notifications with its origin; this shows another store still acts
//! on them.

mod support;

use wq_postgres::PgStore;
use wq_testkit::Failure;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_process_wakes_idle_workers() -> Result<(), Failure> {
    support::server().await?;
    let schema = support::schema();
    let result = run(&schema).await;
    support::drop_schema(&schema).await;
    result
}

async fn run(schema: &str) -> Result<(), Failure> {
    let producer = PgStore::connect(&support::url(), schema).await?;
    let consumer = PgStore::connect(&support::url(), schema).await?;
    wq_testkit::wakeups::wakes_across_stores(&producer, &consumer).await
}
