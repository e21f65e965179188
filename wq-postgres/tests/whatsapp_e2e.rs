//! The WhatsApp send pipeline end to end on Postgres: three worker
//! processes share one schema and send through the fake bridge over HTTP
//! (`wq_testkit::whatsapp_e2e`). The worker processes are this test binary
//! run again for the ignored test `worker`: no binary of its own to build.
#![cfg(feature = "whatsapp-e2e")]

mod support;

use wq_postgres::PgStore;
use wq_testkit::whatsapp_e2e::{self as e2e, Processes};

/// Where a worker process finds its schema.
const SCHEMA_ENV: &str = "WQ_E2E_SCHEMA";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_worker_processes_send_through_faults() {
    support::server().await.expect("Postgres");
    let schema = support::schema();
    let store = PgStore::connect(&support::url(), &schema)
        .await
        .expect("a store in a fresh schema");
    let env = [(SCHEMA_ENV, schema.as_str())];
    let result = e2e::run(&store, |bridge| async move {
        Processes::spawn("worker", &bridge, &env)
    })
    .await;
    store.close().await;
    support::drop_schema(&schema).await;
    if let Err(failure) = result {
        panic!("{failure}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a worker process of `three_worker_processes_send_through_faults`, which starts it"]
async fn worker() {
    // Run by hand, it has no bridge to send to.
    let Some(bridge) = e2e::bridge_url() else {
        return;
    };
    let schema = std::env::var(SCHEMA_ENV).expect("the schema in WQ_E2E_SCHEMA");
    let store = PgStore::builder(&support::url(), &schema)
        .max_connections(4)
        .connect()
        .await
        .expect("the test's schema");
    e2e::serve(store, &bridge).await.expect("the worker");
}
