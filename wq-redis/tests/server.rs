//! The HTTP service (`wq-server`) on Redis, each test under its own key
//! prefix: its API, tokens and tenants, health, metrics and malformed
//! requests.
#![cfg(feature = "server")]

mod common;

use wq_redis::RedisStore;
use wq_testkit::{Failure, TestBackend};

/// A store under a fresh prefix per test; destroying it deletes every key.
struct Redis;

impl TestBackend for Redis {
    type Backend = RedisStore;

    async fn create(&self) -> Result<RedisStore, Failure> {
        common::store("http").await.map_err(Failure::new)
    }

    async fn destroy(&self, store: RedisStore) {
        if let Err(e) = store.clear().await {
            eprintln!("could not delete the keys of {}: {e}", store.prefix());
        }
        store.close();
    }
}

wq_testkit::server_tests!(Redis);
