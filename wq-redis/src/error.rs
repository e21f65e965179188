//! Errors of the Redis backend, carried inside [`StoreError::Backend`].

use wq_core::{QueueName, StoreError};

/// What can go wrong talking to Redis.
#[derive(Debug, thiserror::Error)]
pub enum RedisStoreError {
    /// The driver failed: connection lost, timeout, server error.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// A script answered something wq-redis does not understand (a server
    /// running another version of the scripts, or keys changed by hand).
    #[error("unexpected reply from Redis: {0}")]
    Reply(String),
    /// The server is older than the scripts need.
    #[error("wq-redis needs Redis 7.0 or newer; the server runs {0}")]
    ServerTooOld(String),
}

impl From<RedisStoreError> for StoreError {
    fn from(e: RedisStoreError) -> Self {
        StoreError::backend(e)
    }
}

/// The error code a script raises for an undeclared queue.
const UNKNOWN_QUEUE: &str = "WQUNKNOWN";

/// A driver error, or `UnknownQueue` when a script of `queue` says so.
pub(crate) fn for_queue(queue: &QueueName) -> impl Fn(redis::RedisError) -> StoreError + '_ {
    move |e| {
        if e.code() == Some(UNKNOWN_QUEUE) {
            StoreError::UnknownQueue(queue.clone())
        } else {
            RedisStoreError::Redis(e).into()
        }
    }
}

/// A driver error.
pub(crate) fn driver(e: redis::RedisError) -> StoreError {
    RedisStoreError::Redis(e).into()
}

/// A reply that does not have the expected shape.
pub(crate) fn reply(what: impl Into<String>) -> StoreError {
    RedisStoreError::Reply(what.into()).into()
}
