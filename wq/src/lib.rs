//! # wq
//!
//! Durable message queues for WhatsApp bots and APIs. Every message is
//! stored before `enqueue` returns; messages to one contact run in order,
//! one at a time, while different contacts run in parallel; failures retry
//! with backoff and end in a dead-letter queue; delays, time chaining and
//! priorities shape when messages go out. The same guarantees hold on every
//! backend, proven by one conformance suite.
//!
//! ```toml
//! [dependencies]
//! wq = { version = "0.1", features = ["postgres"] } # memory and whatsapp are on by default
//! tokio = { version = "1", features = ["macros", "rt-multi-thread", "signal"] }
//! ```
//!
//! ## What each feature brings
//!
//! Everything lives at the crate root, whatever the features: a user
//! writes `wq::Client` and `wq::PgStore` alike.
//!
//! | feature | brings | from |
//! |---|---|---|
//! | (always) | [`Client`], [`Enqueue`], [`Worker`], [`JobContext`], [`QueueConfig`], [`RetryPolicy`], [`SessionLimits`], [`Repeat`], [`Error`], and the traits a backend implements ([`Store`], [`Sessions`], [`Lock`], [`Scheduler`], [`Audit`]) | `wq-core` |
//! | `memory` (default) | `MemoryStore`: in-process, for tests, demos and single-process apps | `wq-memory` |
//! | `whatsapp` (default) | `OutboundMessage`, `Jid`, `Content`, `MessageId`, `EnqueueMessage` (adds `Enqueue::message`), `JobMessageId` (adds `JobContext::message_id`), the `Transport` trait a bridge implements and the `SendPipeline` that sends through it | `wq-whatsapp` |
//! | `whatsapp-http` | `http::CloudApi` and `http::HttpBridge`, transports over HTTP | `wq-whatsapp` (feature `http`) |
//! | `postgres` | `PgStore`, `PgStoreBuilder`: many worker processes on one database | `wq-postgres` |
//! | `redis` | `RedisStore`, `RedisStoreBuilder`, and `RedisStoreError` (inside a `StoreError::Backend`) | `wq-redis` |
//!
//! Handler code does not change between backends. Without `whatsapp`, `wq`
//! is a generic durable job queue: `Enqueue::new` takes any serializable
//! payload and `job.id()` is the stable key. Running `wq` in production
//! (migrations, pool sizes, leases, shutdown, retention, monitoring):
//! `docs/production.md` in the repository.
//!
//! ## Example
//!
//! ```
//! use std::time::Duration;
//! use wq::{Client, Enqueue, JobContext, JobError, MemoryStore, QueueConfig, Worker};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), wq::Error> {
//! let store = MemoryStore::new();
//! let client = Client::new(store.clone());
//! client.declare_queue(QueueConfig::new("message").max_attempts(5)).await?;
//!
//! // Per-contact order: one group per instance and contact.
//! for (n, text) in ["Olá!", "Seu pedido saiu para entrega."].iter().enumerate() {
//!     client
//!         .enqueue(
//!             Enqueue::new("message", text)
//!                 .group("inst-1:5511999998888")
//!                 .idempotency_key(format!("order-42-{n}")),
//!         )
//!         .await?;
//! }
//!
//! let worker = Worker::new(store)
//!     .handle("message", |job: JobContext| async move {
//!         let text: String = job.payload()?;
//!         // Key the effect by job.id() (the same on every attempt), so a
//!         // retry after a lost acknowledgement does not repeat it.
//!         let _ = (text, job.id());
//!         Ok::<(), JobError>(())
//!     })
//!     .start()
//!     .await?;
//! # while client.counts("message").await?.completed < 2 {
//! #     tokio::time::sleep(Duration::from_millis(5)).await;
//! # }
//! worker.shutdown(Duration::from_secs(10)).await;
//! # Ok(())
//! # }
//! ```

// The re-exports carry no comments of their own: rustdoc would show them
// before the item's own summary. Which feature brings what is in the crate
// docs above.
pub use wq_core::*;

#[cfg(feature = "whatsapp")]
pub use wq_whatsapp::*;

#[cfg(feature = "memory")]
pub use wq_memory::MemoryStore;

#[cfg(feature = "postgres")]
pub use wq_postgres::{PgStore, PgStoreBuilder};

#[cfg(feature = "redis")]
pub use wq_redis::{RedisStore, RedisStoreBuilder, RedisStoreError};

/// The README's examples, compiled as doctests so they cannot rot.
#[cfg(all(doctest, feature = "memory", feature = "whatsapp"))]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
