//! The WhatsApp send pipeline end to end on Redis: three worker processes
//! share one key prefix and send through the fake bridge over HTTP
//! (`wq_testkit::whatsapp_e2e`). The worker processes are this test binary
//! run again for the ignored test `worker`: no binary of its own to build.
#![cfg(feature = "whatsapp-e2e")]

mod common;

use wq_redis::RedisStore;
use wq_testkit::whatsapp_e2e::{self as e2e, Processes};

/// Where a worker process finds its key prefix.
const PREFIX_ENV: &str = "WQ_E2E_PREFIX";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_worker_processes_send_through_faults() {
    let store = common::store("wa-e2e").await.expect("Redis");
    let prefix = store.prefix().to_owned();
    let env = [(PREFIX_ENV, prefix.as_str())];
    let result = e2e::run(&store, |bridge| async move {
        Processes::spawn("worker", &bridge, &env)
    })
    .await;
    if let Err(e) = store.clear().await {
        eprintln!("could not delete the keys of {}: {e}", store.prefix());
    }
    store.close();
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
    let prefix = std::env::var(PREFIX_ENV).expect("the prefix in WQ_E2E_PREFIX");
    let store = RedisStore::connect(&common::url(), &prefix)
        .await
        .expect("the test's prefix");
    e2e::serve(store, &bridge).await.expect("the worker");
}
