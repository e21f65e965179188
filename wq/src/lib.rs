//! # wq
//!
//! Durable message queues for WhatsApp bots and APIs. Every message is
//! stored before `enqueue` returns; messages to one contact run in order,
//! one at a time, while different contacts run in parallel; failures retry
//! with backoff and end in a dead-letter queue; delays, time chaining and
//! priorities shape when messages go out. The same guarantees hold on every
//! backend, proven by one conformance suite.
//!
//! Pick a backend with a cargo feature: `memory` (default, in-process),
//! `postgres` (`PgStore` on sqlx) or `redis` (`RedisStore` on redis-rs).
//! Handler code does not change between them.
//!
//! The `whatsapp` feature (default) re-exports the WhatsApp layer of
//! `wq-whatsapp`: `OutboundMessage`, `Jid`, `Content`, `Enqueue::message`
//! (bring `EnqueueMessage` into scope), `JobContext::message_id` (bring
//! `JobMessageId` into scope), and the `Transport` trait a bridge
//! implements, run by a `TransportHandler`. Without it, `wq` is a generic
//! durable job queue.
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

pub use wq_core::*;

#[cfg(feature = "whatsapp")]
pub use wq_whatsapp::*;

/// The in-process backend.
#[cfg(feature = "memory")]
pub use wq_memory::MemoryStore;

/// The Postgres backend.
#[cfg(feature = "postgres")]
pub use wq_postgres::{PgStore, PgStoreBuilder};

/// The Redis backend.
#[cfg(feature = "redis")]
pub use wq_redis::{RedisStore, RedisStoreBuilder};

/// The README's examples, compiled as doctests so they cannot rot.
#[cfg(all(doctest, feature = "memory", feature = "whatsapp"))]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
