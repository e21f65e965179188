//! The in-memory backend under the benchmark.

use wq_memory::MemoryStore;

use crate::workloads::Factory;

/// A fresh store per workload.
pub struct Memory;

impl Factory for Memory {
    type Backend = MemoryStore;

    fn name(&self) -> &'static str {
        "memory"
    }

    async fn fresh(&self) -> Result<MemoryStore, String> {
        Ok(MemoryStore::new())
    }

    async fn cleanup(&self, _: MemoryStore) {}
}
