//! The Redis backend under the benchmark: a fresh key prefix per workload,
//! deleted afterwards.

use wq_redis::RedisStore;

use crate::workloads::Factory;

/// Stores on one server, each under its own prefix.
pub struct Redis {
    url: String,
}

impl Redis {
    /// Stores on the server at `url`.
    pub fn new(url: String) -> Self {
        Self { url }
    }
}

impl Factory for Redis {
    type Backend = RedisStore;

    fn name(&self) -> &'static str {
        "redis"
    }

    async fn fresh(&self) -> Result<RedisStore, String> {
        let prefix = format!("wq-bench-{:08x}", rand::random::<u32>());
        RedisStore::connect(&self.url, &prefix)
            .await
            .map_err(|e| format!("cannot connect to Redis at {}: {e}", self.url))
    }

    async fn cleanup(&self, store: RedisStore) {
        if let Err(e) = store.clear().await {
            eprintln!("could not delete the keys of {}: {e}", store.prefix());
        }
        store.close();
    }
}
