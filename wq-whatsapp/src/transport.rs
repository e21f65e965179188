//! The [`Transport`] trait: the edge to WhatsApp.
//!
//! A transport sends one message with a pre-assigned id, shows typing, and
//! reports its connection. Its errors are classified so the engine knows
//! what to do: back off, wait for the rate limit, wait for the bridge without
//! spending an attempt, or give up.

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tower::Service;
use wq_core::{Handler, HandlerFuture, JobContext, JobError, WaitCause};

use crate::jid::Jid;
use crate::job::JobMessageId;
use crate::message::{MessageId, OutboundMessage};

/// What the bridge confirmed; [`TransportHandler`] stores it as the job's
/// output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendReceipt {
    /// The id the message was sent under.
    pub message_id: MessageId,
}

/// A session's link to WhatsApp.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionState {
    /// Sending works.
    Connected,
    /// Coming up.
    Connecting,
    /// Down; messages wait.
    Disconnected,
    /// Logged out or banned: an operator must act.
    LoggedOut,
}

/// A transport's failure, in the classes a bridge reports.
///
/// Each becomes a [`JobError`] (`?` converts it in a handler), which tells
/// the engine what happens next: `Retryable` spends an attempt and backs
/// off, `RateLimited` and `Disconnected` become [`JobError::Wait`] and spend
/// none, `Permanent` sends the job straight to dead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// A failure worth another attempt: after `after`, or after the queue's
    /// backoff.
    #[error("{reason}")]
    Retryable {
        /// What went wrong.
        reason: String,
        /// A wait chosen by the bridge instead of the queue's backoff.
        after: Option<Duration>,
    },
    /// WhatsApp or the bridge is throttling this session.
    #[error("rate limited for {retry_after:?}")]
    RateLimited {
        /// How long to wait.
        retry_after: Duration,
    },
    /// The session is not connected; the job waits the queue's
    /// [`RetryPolicy::disconnected_delay`](wq_core::RetryPolicy::disconnected_delay).
    #[error("disconnected: {reason}")]
    Disconnected {
        /// What the bridge said.
        reason: String,
    },
    /// Will never succeed (number not on WhatsApp, media refused).
    #[error("{reason}")]
    Permanent {
        /// What went wrong.
        reason: String,
    },
}

impl From<TransportError> for JobError {
    fn from(e: TransportError) -> Self {
        let reason = e.to_string();
        match e {
            TransportError::Retryable { after, .. } => JobError::Retryable { reason, after },
            TransportError::RateLimited { retry_after } => {
                JobError::wait_because(WaitCause::RateLimited, reason, Some(retry_after))
            }
            TransportError::Disconnected { .. } => {
                JobError::wait_because(WaitCause::Disconnected, reason, None)
            }
            TransportError::Permanent { .. } => JobError::permanent(reason),
        }
    }
}

/// The edge to WhatsApp: a bridge (Baileys, whatsmeow, the Cloud API) behind
/// one small trait.
///
/// A bridge maps its client's failures onto [`TransportError`]'s classes
/// and remembers the ids it sent, so a resend after a lost acknowledgement
/// is answered without sending twice. A small one, recording what it sends:
///
/// ```
/// use std::collections::HashSet;
/// use std::sync::{Arc, Mutex};
/// use std::time::Duration;
/// use wq::{
///     Client, ConnectionState, Enqueue, EnqueueMessage, Jid, MemoryStore, MessageId,
///     OutboundMessage, QueueConfig, SendReceipt, Transport, TransportError, TransportHandler,
///     Worker,
/// };
///
/// #[derive(Default)]
/// struct Recorder {
///     sent: Mutex<Vec<(MessageId, Jid)>>,
///     seen: Mutex<HashSet<MessageId>>,
/// }
///
/// impl Transport for Recorder {
///     async fn send(&self, id: &MessageId, msg: &OutboundMessage) -> Result<SendReceipt, TransportError> {
///         if self.seen.lock().unwrap().insert(id.clone()) {
///             // A real bridge calls its client here, under `id`.
///             self.sent.lock().unwrap().push((id.clone(), msg.to.clone()));
///         }
///         Ok(SendReceipt { message_id: id.clone() })
///     }
///
///     async fn typing(&self, _instance: &str, _to: &Jid, d: Duration) -> Result<(), TransportError> {
///         tokio::time::sleep(d).await;
///         Ok(())
///     }
///
///     fn connection_state(&self, _instance: &str) -> ConnectionState {
///         ConnectionState::Connected
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = MemoryStore::new();
/// let client = Client::new(store.clone());
/// client.declare_queue(QueueConfig::new("message")).await?;
/// let msg = OutboundMessage::text("inst-1", "+55 11 99999-8888", "Olá!")?;
/// let job = client.enqueue(Enqueue::message("message", &msg)).await?;
///
/// let bridge = Arc::new(Recorder::default());
/// let worker = Worker::new(store)
///     .handle("message", TransportHandler::new(bridge.clone()))
///     .start()
///     .await?;
/// # while client.counts("message").await?.completed < 1 {
/// #     tokio::time::sleep(Duration::from_millis(5)).await;
/// # }
/// worker.shutdown(Duration::from_secs(5)).await;
/// let sent = bridge.sent.lock().unwrap().clone();
/// assert_eq!(sent, [(MessageId::for_job(job.job.id), msg.to)]);
/// # Ok(())
/// # }
/// ```
pub trait Transport: Send + Sync + 'static {
    /// Sends `msg` under the pre-assigned `id`. A bridge that already sent a
    /// message with this id should answer with success and not send again.
    fn send(
        &self,
        id: &MessageId,
        msg: &OutboundMessage,
    ) -> impl Future<Output = Result<SendReceipt, TransportError>> + Send;

    /// Shows "typing…" to `to` for `duration` (returns when it is done).
    fn typing(
        &self,
        instance: &str,
        to: &Jid,
        duration: Duration,
    ) -> impl Future<Output = Result<(), TransportError>> + Send;

    /// The session's link state as last known.
    fn connection_state(&self, instance: &str) -> ConnectionState;
}

/// A [`Handler`] that sends each job's [`OutboundMessage`] through a
/// transport, under the job's [`MessageId`].
///
/// A session that is not connected makes the job wait without spending an
/// attempt; typing is shown first when the message asks for it.
///
/// Cheap to clone whatever the transport is (clones share it), and a tower
/// `Service` too, so the layers that wrap any handler wrap it:
///
/// ```
/// # use std::sync::Arc;
/// # use std::time::Duration;
/// # use wq::{ConnectionState, Jid, MessageId, OutboundMessage, SendReceipt, Transport, TransportError};
/// # struct Bridge;
/// # impl Transport for Bridge {
/// #     async fn send(&self, id: &MessageId, _: &OutboundMessage) -> Result<SendReceipt, TransportError> {
/// #         Ok(SendReceipt { message_id: id.clone() })
/// #     }
/// #     async fn typing(&self, _: &str, _: &Jid, _: Duration) -> Result<(), TransportError> { Ok(()) }
/// #     fn connection_state(&self, _: &str) -> ConnectionState { ConnectionState::Connected }
/// # }
/// use tower::ServiceBuilder;
/// use wq::{JobError, MemoryStore, TransportHandler, Worker};
///
/// let sender = ServiceBuilder::new()
///     .map_err(JobError::from) // a timeout retries with the queue's backoff
///     .timeout(Duration::from_secs(20))
///     .service(TransportHandler::new(Arc::new(Bridge)));
/// let worker = Worker::new(MemoryStore::new()).service("message", sender);
/// # let _ = worker;
/// ```
#[derive(Debug)]
pub struct TransportHandler<T> {
    transport: Arc<T>,
}

impl<T> Clone for TransportHandler<T> {
    fn clone(&self) -> Self {
        Self {
            transport: self.transport.clone(),
        }
    }
}

impl<T: Transport> TransportHandler<T> {
    /// Sends through `transport`.
    pub fn new(transport: Arc<T>) -> Self {
        Self { transport }
    }
}

impl<T: Transport> Service<JobContext> for TransportHandler<T> {
    type Response = ();
    type Error = JobError;
    type Future = HandlerFuture;

    /// Always ready: the session's connection is checked per message, so a
    /// disconnected session defers its own jobs, not the whole queue.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), JobError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, ctx: JobContext) -> HandlerFuture {
        let this = self.clone();
        Box::pin(async move { this.handle(ctx).await })
    }
}

impl<T: Transport> Handler for TransportHandler<T> {
    async fn handle(&self, ctx: JobContext) -> Result<(), JobError> {
        let msg: OutboundMessage = ctx.payload()?;
        match self.transport.connection_state(&msg.instance) {
            ConnectionState::Connected => {}
            other => {
                return Err(TransportError::Disconnected {
                    reason: format!("session `{}` is {other:?}", msg.instance),
                }
                .into());
            }
        }
        if let Some(ms) = msg.typing_ms.filter(|ms| *ms > 0) {
            self.transport
                .typing(&msg.instance, &msg.to, Duration::from_millis(ms))
                .await?;
        }
        let receipt = self.transport.send(&ctx.message_id(), &msg).await?;
        ctx.set_output(&receipt)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_errors_map_to_job_errors() {
        let secs = Duration::from_secs;
        let cases = [
            (
                TransportError::Retryable {
                    reason: "bridge timeout".into(),
                    after: Some(secs(30)),
                },
                JobError::retry_after("bridge timeout", secs(30)),
            ),
            (
                TransportError::RateLimited {
                    retry_after: secs(60),
                },
                JobError::wait_because(
                    WaitCause::RateLimited,
                    "rate limited for 60s",
                    Some(secs(60)),
                ),
            ),
            (
                TransportError::Disconnected {
                    reason: "socket closed".into(),
                },
                JobError::wait_because(
                    WaitCause::Disconnected,
                    "disconnected: socket closed",
                    None,
                ),
            ),
            (
                TransportError::Permanent {
                    reason: "not on WhatsApp".into(),
                },
                JobError::permanent("not on WhatsApp"),
            ),
        ];
        for (transport, job) in cases {
            assert_eq!(JobError::from(transport), job);
        }
    }
}
