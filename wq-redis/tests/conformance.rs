//! wq-redis against the whole conformance suite and the property tests,
//! each test under its own key prefix on the real server.

mod common;

use wq_redis::RedisStore;
use wq_testkit::{Failure, TestBackend};

/// A store under a fresh prefix per test; destroying it deletes every key.
struct Redis;

impl TestBackend for Redis {
    type Backend = RedisStore;

    async fn create(&self) -> Result<RedisStore, Failure> {
        common::store("conf").await.map_err(Failure::new)
    }

    async fn destroy(&self, store: RedisStore) {
        if let Err(e) = store.clear().await {
            eprintln!("could not delete the keys of {}: {e}", store.prefix());
        }
        store.close();
    }
}

wq_testkit::conformance_tests!(Redis);
wq_testkit::concurrency_tests!(Redis);
wq_testkit::property_tests!(Redis, 64);
