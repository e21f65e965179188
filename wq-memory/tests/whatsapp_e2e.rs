//! The WhatsApp send pipeline end to end on the memory backend: three
//! workers in this process (a `MemoryStore` is not shared across
//! processes), each with its own pipeline and HTTP transport, send through
//! the fake bridge (`wq_testkit::whatsapp_e2e`).
#![cfg(feature = "whatsapp-e2e")]

use wq_memory::MemoryStore;
use wq_testkit::whatsapp_e2e::{self as e2e, InProcess};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_send_through_faults() {
    let store = MemoryStore::new();
    let result = e2e::run(&store, |bridge| InProcess::start(store.clone(), bridge)).await;
    if let Err(failure) = result {
        panic!("{failure}");
    }
}
