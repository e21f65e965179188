//! The HTTP service (`wq-server`) on the memory backend: its API, tokens
//! and tenants, health, metrics and malformed requests.
#![cfg(feature = "server")]

use wq_memory::MemoryStore;
use wq_testkit::{Failure, TestBackend};

/// A fresh store per test.
struct Memory;

impl TestBackend for Memory {
    type Backend = MemoryStore;

    async fn create(&self) -> Result<MemoryStore, Failure> {
        Ok(MemoryStore::new())
    }

    async fn destroy(&self, _: MemoryStore) {}
}

wq_testkit::server_tests!(Memory);
