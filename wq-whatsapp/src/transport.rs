//! The [`Transport`] trait: the edge to WhatsApp.
//!
//! A transport sends one message with a pre-assigned id, shows typing, and
//! reports its connection. Its errors are classified so the engine knows
//! what to do: back off, wait for the rate limit, wait for the bridge without
//! spending an attempt, or give up.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use wq_core::{Handler, JobContext, JobError};

use crate::jid::Jid;
use crate::job::JobMessageId;
use crate::message::{MessageId, OutboundMessage};

/// What the bridge confirmed.
#[derive(Clone, Debug, PartialEq, Eq)]
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
            TransportError::RateLimited { retry_after } => JobError::wait_for(reason, retry_after),
            TransportError::Disconnected { .. } => JobError::wait(reason),
            TransportError::Permanent { .. } => JobError::permanent(reason),
        }
    }
}

/// The edge to WhatsApp: a bridge (Baileys, whatsmeow, the Cloud API) behind
/// one small trait.
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
#[derive(Debug, Clone)]
pub struct TransportHandler<T> {
    transport: Arc<T>,
}

impl<T: Transport> TransportHandler<T> {
    /// Sends through `transport`.
    pub fn new(transport: Arc<T>) -> Self {
        Self { transport }
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
        self.transport.send(&ctx.message_id(), &msg).await?;
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
                JobError::wait_for("rate limited for 60s", secs(60)),
            ),
            (
                TransportError::Disconnected {
                    reason: "socket closed".into(),
                },
                JobError::wait("disconnected: socket closed"),
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
