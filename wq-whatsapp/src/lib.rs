//! # wq-whatsapp
//!
//! The WhatsApp layer of wq, on top of the generic `wq-core`: addresses
//! ([`Jid`], phone numbers normalized to E.164), what a message says
//! ([`Content`], checked against WhatsApp's limits), the [`OutboundMessage`]
//! a job carries and the [`MessageId`] it is sent under, and the
//! [`Transport`] trait a bridge (Baileys, whatsmeow, the Cloud API)
//! implements, run by a [`TransportHandler`].
//!
//! Two extension traits connect it to the core's types:
//! [`EnqueueMessage`] adds `Enqueue::message` (a checked message job,
//! ordered per contact) and [`JobMessageId`] adds `JobContext::message_id`
//! (the same id on every attempt, so a retry after a lost acknowledgement
//! is not sent twice). A transport's [`TransportError`] converts into the
//! core's `JobError`: rate limits and lost connections wait without
//! spending an attempt.
//!
//! The `wq` facade re-exports all of this under its `whatsapp` feature.
//!
//! ## Example
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use wq::{
//!     Client, ConnectionState, Enqueue, EnqueueMessage, Jid, MemoryStore, MessageId, OutboundMessage,
//!     QueueConfig, SendReceipt, Transport, TransportError, TransportHandler, Worker,
//! };
//!
//! /// A bridge that prints instead of sending.
//! struct Print;
//!
//! impl Transport for Print {
//!     async fn send(&self, id: &MessageId, msg: &OutboundMessage) -> Result<SendReceipt, TransportError> {
//!         println!("{id} to {}: {:?}", msg.to, msg.content);
//!         Ok(SendReceipt { message_id: id.clone() })
//!     }
//!
//!     async fn typing(&self, _instance: &str, _to: &Jid, d: Duration) -> Result<(), TransportError> {
//!         tokio::time::sleep(d).await;
//!         Ok(())
//!     }
//!
//!     fn connection_state(&self, _instance: &str) -> ConnectionState {
//!         ConnectionState::Connected
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = MemoryStore::new();
//! let client = Client::new(store.clone());
//! client.declare_queue(QueueConfig::new("message")).await?;
//!
//! // Grouped per contact ("inst-1:5511999998888"), so these go out in order.
//! for text in ["Olá!", "Seu pedido saiu para entrega."] {
//!     let msg = OutboundMessage::text("inst-1", "+55 11 99999-8888", text)?
//!         .with_typing(Duration::from_millis(20));
//!     client.enqueue(Enqueue::message("message", &msg)).await?;
//! }
//!
//! let worker = Worker::new(store)
//!     .handle("message", TransportHandler::new(Arc::new(Print)))
//!     .start()
//!     .await?;
//! # while client.counts("message").await?.completed < 2 {
//! #     tokio::time::sleep(Duration::from_millis(5)).await;
//! # }
//! worker.shutdown(Duration::from_secs(5)).await;
//! # Ok(())
//! # }
//! ```
#![cfg_attr(
    not(test),
    warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

mod jid;
mod job;
mod message;
mod transport;

pub use jid::Jid;
pub use job::{EnqueueMessage, JobMessageId};
pub use message::{
    Button, Content, MAX_CAPTION_CHARS, MAX_TEXT_CHARS, MediaKind, MessageId, OutboundMessage,
};
pub use transport::{ConnectionState, SendReceipt, Transport, TransportError, TransportHandler};
