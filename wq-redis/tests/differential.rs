//! wq-redis against the reference, the memory backend: the testkit's
//! differential tests, each case under its own key prefix on the real server.

mod common;

use wq_redis::RedisStore;
use wq_testkit::{Failure, TestBackend};

/// A store under a fresh prefix per case; destroying it deletes every key.
struct Redis;

impl TestBackend for Redis {
    type Backend = RedisStore;

    async fn create(&self) -> Result<RedisStore, Failure> {
        common::store("diff").await.map_err(Failure::new)
    }

    async fn destroy(&self, store: RedisStore) {
        if let Err(e) = store.clear().await {
            eprintln!("could not delete the keys of {}: {e}", store.prefix());
        }
        store.close();
    }
}

wq_testkit::differential_tests!(Redis, 64);
