//! # wq-redis
//!
//! The Redis backend of wq: every guarantee of the design across many
//! worker processes sharing one Redis (7.0 or newer).
//!
//! - Every operation that touches several keys is one Lua script, called
//!   by SHA: enqueue (a whole batch), claim, acknowledge (with the next
//!   claim in the same call), extend, rescue, cancel, retry, purge, prune.
//! - One queue's keys share the hash tag `{prefix:queue}`, so a queue
//!   works on Redis Cluster.
//! - A claim pops due group heads from a sorted set: only ungrouped jobs
//!   and the head of each group are ever in it, so its cost does not grow
//!   with the backlog behind them.
//! - Sessions (`wq::Sessions`) keep their due heads in an index of
//!   their own; the claim reaches them through an index of the sessions
//!   that may start a job now, so a paused, full or rate-limited session
//!   costs it nothing.
//! - Scripts publish on the queue's channel when work may have become
//!   claimable; a pub/sub connection per store wakes idle workers.
//! - `wq::Audit` checks a queue's invariants page by page (a script
//!   call per 1,000 jobs) and repairs what it finds.
//! - Time comes from the caller, never from Redis.
//!
//! Durability is Redis's: with `appendonly yes` and `appendfsync always`
//! an acknowledged enqueue survives a crash of the server; see
//! `docs/redis.md` for what each setting loses. Keep `maxmemory-policy`
//! at `noeviction` (the store warns at connect otherwise): eviction
//! deletes jobs silently.
//!
//! ```no_run
//! # // The facade's paths, through a stand-in for `wq`: a dev-dependency on
//! # // `wq` would turn its `redis` feature on in every build of the workspace.
//! # mod wq { pub use wq_core::*; pub use wq_redis::{RedisStore, RedisStoreBuilder, RedisStoreError}; }
//! use wq::{Client, Enqueue, QueueConfig, RedisStore};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), wq::Error> {
//! let store = RedisStore::connect("redis://127.0.0.1:6379", "wq").await?;
//! let client = Client::new(store.clone());
//! client.declare_queue(QueueConfig::new("message")).await?;
//! client
//!     .enqueue(Enqueue::new("message", &"Olá!").group("inst-1:5511999998888"))
//!     .await?;
//! # Ok(())
//! # }
//! ```
//!
//! This one runs against the local Redis under a random prefix and cleans
//! up after itself:
//!
//! ```
//! # // The facade's paths, through a stand-in for `wq`: a dev-dependency on
//! # // `wq` would turn its `redis` feature on in every build of the workspace.
//! # mod wq { pub use wq_core::*; pub use wq_redis::{RedisStore, RedisStoreBuilder, RedisStoreError}; }
//! use wq::{Client, Enqueue, JobState, QueueConfig, RedisStore};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), wq::Error> {
//! let url = std::env::var("WQ_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
//! let prefix = format!("wq-doc-{:08x}", rand::random::<u32>());
//! let store = RedisStore::connect(&url, &prefix).await?;
//! let client = Client::new(store.clone());
//! client.declare_queue(QueueConfig::new("inbound")).await?;
//! let first = client.enqueue(Enqueue::new("inbound", &"hi").idempotency_key("wamid.1")).await?;
//! let again = client.enqueue(Enqueue::new("inbound", &"hi").idempotency_key("wamid.1")).await?;
//! assert!(first.created && !again.created);
//! assert_eq!(again.job.id, first.job.id);
//! assert_eq!(client.get(first.job.id).await?.map(|j| j.state), Some(JobState::Available));
//! store.clear().await?;
//! # Ok(())
//! # }
//! ```
#![cfg_attr(
    not(test),
    warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

mod admission;
mod audit;
mod enqueue;
mod error;
mod keys;
mod lock;
mod ops;
mod reply;
mod scripts;
mod sessions;
mod store;
mod wake;
mod work;

pub use error::RedisStoreError;
pub use store::{RedisStore, RedisStoreBuilder};

use wq_core::{
    Ack, AckOutcome, AckedAndClaimed, Admin, ClaimRequest, Counts, DeadJobs, Enqueued,
    ExtendOutcome, Job, JobId, LeaseRef, ListQuery, NewJob, Position, QueueConfig, QueueInfo,
    QueueName, RescueReport, Scheduler, Store, StoreError, Timestamp, WakeSignal,
};

use std::time::Duration;

use crate::error::driver;
use crate::scripts::SCRIPTS;
use wq_core::connect::Unreached;

/// Whether time may mend a failure to reach the server: it is down,
/// restarting, loading its data set or failing over. A refused password or
/// a malformed address stays what it is.
fn transient(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || matches!(
            e.code(),
            Some("LOADING" | "TRYAGAIN" | "CLUSTERDOWN" | "MASTERDOWN")
        )
}

/// Waits until the server answers a PING, trying again with backoff while
/// the failure is one that time may mend and `limit` has not passed. Runs
/// before the store's connections are made, whose own reconnection would
/// retry a few times and silently.
pub(crate) async fn reach(client: &redis::Client, limit: Duration) -> Result<(), StoreError> {
    let server = client.get_connection_info().addr().to_string();
    let tried = wq_core::connect::keep_trying(
        "Redis",
        &server,
        limit,
        |within| ping(client, within),
        transient,
    )
    .await;
    match tried {
        Ok(()) => Ok(()),
        Err(Unreached::Refused(e)) => Err(driver(e)),
        Err(Unreached::GaveUp(e)) => Err(e),
    }
}

/// One try: a connection of its own, opened and answering within `within`.
async fn ping(client: &redis::Client, within: Duration) -> Result<(), redis::RedisError> {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(within))
        .set_response_timeout(Some(within));
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    redis::cmd("PING").query_async::<()>(&mut conn).await
}

impl RedisStore {
    /// Deletes every key under this store's prefix: queues, jobs, locks.
    /// For tests, benchmarks and tearing down a deployment.
    pub async fn clear(&self) -> Result<u64, StoreError> {
        let mut conn = self.conn();
        let mut deleted = 0;
        for pattern in self.keys().patterns() {
            let mut cursor = 0u64;
            loop {
                let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1_000)
                    .query_async(&mut conn)
                    .await
                    .map_err(driver)?;
                if !keys.is_empty() {
                    deleted += redis::cmd("UNLINK")
                        .arg(&keys)
                        .query_async::<u64>(&mut conn)
                        .await
                        .map_err(driver)?;
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(deleted)
    }
}

impl Store for RedisStore {
    async fn declare_queue(&self, config: &QueueConfig) -> Result<(), StoreError> {
        self.declare(config).await
    }

    async fn queue_info(&self, queue: &QueueName) -> Result<Option<QueueInfo>, StoreError> {
        self.info(queue).await
    }

    async fn enqueue(
        &self,
        jobs: Vec<NewJob>,
        now: Timestamp,
    ) -> Result<Vec<Enqueued>, StoreError> {
        self.enqueue_jobs(jobs, now).await
    }

    async fn claim(&self, req: &ClaimRequest) -> Result<Vec<Job>, StoreError> {
        self.claim_jobs(req).await
    }

    async fn ack(&self, acks: &[Ack], now: Timestamp) -> Result<Vec<AckOutcome>, StoreError> {
        if acks.is_empty() {
            return Ok(Vec::new());
        }
        self.ack_jobs(acks, now).await
    }

    async fn ack_and_claim(
        &self,
        acks: &[Ack],
        claim: Option<&ClaimRequest>,
        now: Timestamp,
    ) -> Result<AckedAndClaimed, StoreError> {
        self.ack_then_claim(acks, claim, now).await
    }

    async fn extend(
        &self,
        leases: &[LeaseRef],
        until: Timestamp,
        now: Timestamp,
    ) -> Result<Vec<ExtendOutcome>, StoreError> {
        self.extend_leases(leases, until, now).await
    }

    async fn rescue(&self, now: Timestamp, limit: usize) -> Result<RescueReport, StoreError> {
        self.rescue_leases(now, limit).await
    }

    async fn get(&self, id: JobId) -> Result<Option<Job>, StoreError> {
        self.get_job(id).await
    }

    async fn prune(&self, now: Timestamp, limit: usize) -> Result<u64, StoreError> {
        self.prune_jobs(now, limit).await
    }
}

impl Admin for RedisStore {
    async fn list_queues(&self) -> Result<Vec<QueueInfo>, StoreError> {
        self.all_info().await
    }

    async fn set_paused(&self, queue: &QueueName, paused: bool) -> Result<(), StoreError> {
        self.pause(queue, paused).await
    }

    async fn cancel(&self, id: JobId, now: Timestamp) -> Result<Job, StoreError> {
        self.cancel_job(id, now).await
    }

    async fn list(&self, query: &ListQuery) -> Result<Vec<Job>, StoreError> {
        self.list_jobs(query).await
    }

    async fn counts(&self, queue: &QueueName) -> Result<Counts, StoreError> {
        self.queue_counts(queue).await
    }

    async fn next_in_line(
        &self,
        queue: &QueueName,
        now: Timestamp,
    ) -> Result<Option<Timestamp>, StoreError> {
        self.front_due(queue, now).await
    }

    async fn position(&self, id: JobId) -> Result<Option<Position>, StoreError> {
        self.job_position(id).await
    }

    async fn retry_dead(&self, which: &DeadJobs, now: Timestamp) -> Result<u64, StoreError> {
        self.dead_jobs(&SCRIPTS.retry_dead, which, now).await
    }

    async fn purge_dead(&self, which: &DeadJobs, now: Timestamp) -> Result<u64, StoreError> {
        self.dead_jobs(&SCRIPTS.purge_dead, which, now).await
    }
}

impl Scheduler for RedisStore {
    fn subscribe(&self, queue: &QueueName) -> WakeSignal {
        self.inner.wakeups.subscribe(queue)
    }

    async fn next_due(
        &self,
        queue: &QueueName,
        now: Timestamp,
    ) -> Result<Option<Timestamp>, StoreError> {
        self.due(queue, now).await
    }

    async fn promote_due(&self, queue: &QueueName, now: Timestamp) -> Result<u64, StoreError> {
        self.promote(queue, now).await
    }
}
