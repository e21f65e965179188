//! # wq-whatsapp
//!
//! The WhatsApp layer of wq, on top of the generic `wq-core`: addresses
//! ([`Jid`], phone numbers normalized to E.164), what a message says
//! ([`Content`], checked against WhatsApp's limits), the [`OutboundMessage`]
//! a job carries and the [`MessageId`] it is sent under, the [`Transport`]
//! trait a bridge (Baileys, whatsmeow, the Cloud API, an HTTP gateway)
//! implements, and the [`SendPipeline`] that sends through it: typing as
//! steps that hold no worker slot, one send at a time per session and in
//! order per contact, sessions paused while their link is down and by a
//! breaker on ban signals (see `docs/whatsapp.md`).
//!
//! Two extension traits connect it to the core's types:
//! [`EnqueueMessage`] adds `Enqueue::message` (a checked message job,
//! ordered per contact, limited per session) and [`JobMessageId`] adds
//! `JobContext::message_id` (the same id on every attempt, so a retry after
//! a lost acknowledgement is not sent twice).
//!
//! The `wq` facade re-exports all of this under its `whatsapp` feature.
//!
//! ## Example
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use wq::{
//!     AckLevel, Capabilities, Client, Enqueue, EnqueueMessage, Jid, MemoryStore, MessageId,
//!     OutboundMessage, Presence, QueueConfig, SendPipeline, SendReceipt, SessionState,
//!     Transport, TransportError, Worker,
//! };
//!
//! /// A bridge that prints instead of sending.
//! struct Print;
//!
//! impl Transport for Print {
//!     fn capabilities(&self) -> Capabilities {
//!         Capabilities { client_ids: true, accepted: AckLevel::Server }
//!     }
//!
//!     async fn send(&self, id: &MessageId, msg: &OutboundMessage) -> Result<SendReceipt, TransportError> {
//!         println!("{id} to {}: {:?}", msg.to, msg.content);
//!         Ok(SendReceipt::new(id.clone(), AckLevel::Server))
//!     }
//!
//!     async fn presence(&self, _: &str, to: &Jid, p: Presence) -> Result<(), TransportError> {
//!         println!("{p:?} to {to}");
//!         Ok(())
//!     }
//!
//!     fn session_state(&self, _instance: &str) -> SessionState {
//!         SessionState::Connected
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = MemoryStore::new();
//! let client = Client::new(store.clone());
//! client.declare_queue(QueueConfig::new("message")).await?;
//!
//! // Grouped per contact ("inst-1:5511999998888"), so these go out in
//! // order, each after a short "typing…".
//! for text in ["Olá!", "Seu pedido saiu para entrega."] {
//!     let msg = OutboundMessage::text("inst-1", "+55 11 99999-8888", text)?
//!         .with_typing(Duration::from_millis(20));
//!     client.enqueue(Enqueue::message("message", &msg)).await?;
//! }
//!
//! let pipeline = SendPipeline::new(Arc::new(Print), store.clone());
//! let supervisor = tokio::spawn(pipeline.supervise());
//! let worker = Worker::new(store).handle("message", pipeline).start().await?;
//! # while client.counts("message").await?.completed < 2 {
//! #     tokio::time::sleep(Duration::from_millis(5)).await;
//! # }
//! worker.shutdown(Duration::from_secs(5)).await;
//! supervisor.abort();
//! # Ok(())
//! # }
//! ```
#![cfg_attr(
    not(test),
    warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

#[cfg(feature = "http")]
pub mod http;
mod jid;
mod job;
mod message;
mod pause;
mod pipeline;
mod preset;
mod transport;

pub use jid::Jid;
pub use job::{EnqueueMessage, JobMessageId};
pub use message::{
    Button, Content, MAX_CAPTION_CHARS, MAX_TEXT_CHARS, MediaKind, MessageId, OutboundMessage,
};
pub use pause::{PAUSE_PREFIX, PauseReason};
pub use pipeline::{BAN_CODES, Breaker, PipelineConfig, PipelineEvent, SendPipeline, Typing};
pub use preset::Preset;
pub use transport::{
    AckLevel, BridgeEvent, Capabilities, MAYBE_SENT, Presence, RateScope, SendReceipt,
    SessionState, Transport, TransportError,
};
