//! wq-memory against the whole conformance suite, the property tests and
//! the concurrent tests.

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

wq_testkit::conformance_tests!(Memory);
wq_testkit::concurrency_tests!(Memory);
wq_testkit::property_tests!(Memory, 256);
