//! The [`Transport`] trait: the edge to WhatsApp.
//!
//! A transport sends one message with a pre-assigned id, shows typing, and
//! reports its connection. Its errors are classified so the engine knows
//! what to do: back off, wait for the rate limit, wait for the bridge without
//! spending an attempt, or give up.

use std::future::Future;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use wq_core::{JobError, WaitCause};

use crate::jid::Jid;
use crate::message::{MessageId, OutboundMessage};

/// How far a message got, as the bridge or a receipt tells it. Levels only
/// move forward: `Written < Server < Delivered < Read < Played`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AckLevel {
    /// Written to the bridge's socket; the server has not confirmed it.
    Written,
    /// Accepted by WhatsApp's server (one grey tick).
    Server,
    /// Delivered to the recipient's device (two grey ticks).
    Delivered,
    /// Read (two blue ticks).
    Read,
    /// A voice note or video played.
    Played,
}

/// What the bridge confirmed; the send pipeline stores it as the job's
/// output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendReceipt {
    /// The id wq chose and sent the message under.
    pub message_id: MessageId,
    /// The id the server or the bridge gave the message (the Cloud API's
    /// `wamid`), when it is not `message_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_id: Option<String>,
    /// How far the message got when the send returned.
    pub ack: AckLevel,
}

impl SendReceipt {
    /// A receipt for a message sent under `id` that got as far as `ack`.
    pub fn new(id: MessageId, ack: AckLevel) -> Self {
        Self {
            message_id: id,
            server_id: None,
            ack,
        }
    }

    /// The same receipt with the id the server gave the message.
    pub fn server_id(mut self, id: impl Into<String>) -> Self {
        self.server_id = Some(id.into());
        self
    }
}

/// What a bridge can do, which decides how the pipeline sends through it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// The bridge sends under an id the client chooses (Baileys
    /// `messageId`, whatsmeow `SendRequestExtra.ID`, wuzapi `Id`), so a
    /// send repeated after a lost reply can be recognized by that id.
    pub client_ids: bool,
    /// What a successful `send` means: [`AckLevel::Written`] (Baileys
    /// returns once the stanza is written; the pipeline then waits for the
    /// server's acknowledgement) or [`AckLevel::Server`].
    pub accepted: AckLevel,
}

/// A presence shown to a contact.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Presence {
    /// "typing…"
    Composing,
    /// "recording audio…"
    Recording,
    /// Stopped typing.
    Paused,
}

/// A session's link to WhatsApp.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionState {
    /// Sending works.
    Connected,
    /// Coming up.
    Connecting,
    /// Down for now; it comes back by itself.
    Disconnected,
    /// Logged out from the phone: an operator must pair it again.
    LoggedOut,
    /// Another client took the session over.
    Replaced,
    /// WhatsApp banned the number.
    Banned,
}

impl SessionState {
    /// Whether only an operator can bring the session back.
    pub const fn is_final(self) -> bool {
        matches!(
            self,
            SessionState::LoggedOut | SessionState::Replaced | SessionState::Banned
        )
    }
}

/// Who a rate limit applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RateScope {
    /// The whole sending number.
    Session,
    /// This contact only (the Cloud API's 131056).
    Contact,
    /// Messages to contacts the number never talked to.
    NewChats,
}

/// Something the bridge saw, told to whoever listens
/// ([`Transport::events`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BridgeEvent {
    /// A message reached `ack` (receipts may come late, twice, or out of
    /// order; the level only moves forward).
    Receipt {
        /// The sending session.
        instance: String,
        /// The message: its [`MessageId`] or its server id.
        id: String,
        /// How far it got.
        ack: AckLevel,
    },
    /// A message the server took but later refused to deliver.
    Failed {
        /// The sending session.
        instance: String,
        /// The message: its [`MessageId`] or its server id.
        id: String,
        /// The server's error code, if any.
        code: Option<i64>,
    },
    /// A session's link changed.
    Session {
        /// The session.
        instance: String,
        /// Its state now.
        state: SessionState,
    },
    /// WhatsApp signalled a ban or a temporary restriction.
    Ban {
        /// The session.
        instance: String,
        /// The code it came with (463, 101 to 106, 131048...).
        code: i64,
    },
    /// The server told how many new people the number may reach (the
    /// Cloud API's messaging limit tier, say 1,000 per 24 hours): the
    /// pipeline makes it the session's allowance of new chats.
    Quota {
        /// The session.
        instance: String,
        /// New chats allowed per `per`.
        new_chats: u32,
        /// The window.
        per: Duration,
    },
}

/// A transport's failure, in the classes a bridge reports.
///
/// Each becomes a [`JobError`] (`?` converts it in a handler), which tells
/// the engine what happens next: `Retryable` spends an attempt and backs
/// off, `RateLimited` and `Disconnected` become [`JobError::Wait`] and spend
/// none, `Permanent` sends the job straight to dead. The send pipeline
/// does more with them (pauses sessions, trips its breaker).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// A failure worth another attempt: after `after`, or after the queue's
    /// backoff. `maybe_sent` says the message may have gone out (the reply
    /// was lost after the request left): the next attempt looks it up
    /// before sending again.
    #[error("{}{reason}", if *maybe_sent { MAYBE_SENT } else { "" })]
    Retryable {
        /// What went wrong.
        reason: String,
        /// A wait chosen by the bridge instead of the queue's backoff.
        after: Option<Duration>,
        /// Whether the message may have been sent.
        maybe_sent: bool,
    },
    /// WhatsApp or the bridge is throttling.
    #[error("rate limited ({scope:?}) for {retry_after:?}")]
    RateLimited {
        /// How long to wait.
        retry_after: Duration,
        /// Who the limit applies to.
        scope: RateScope,
    },
    /// The session is not connected.
    #[error("disconnected: {reason}")]
    Disconnected {
        /// What the bridge said.
        reason: String,
        /// Only an operator can bring it back (logged out, replaced, banned).
        permanent: bool,
    },
    /// Will never succeed (number not on WhatsApp, media refused), or a ban.
    #[error("{reason}{}", code.map(|c| format!(" (code {c})")).unwrap_or_default())]
    Permanent {
        /// What went wrong.
        reason: String,
        /// The server's error code, if any.
        code: Option<i64>,
    },
}

/// How a retryable failure that may have sent the message starts its
/// message, so that the next attempt knows to look the message up first.
pub const MAYBE_SENT: &str = "maybe sent: ";

impl TransportError {
    /// A retryable failure with the queue's backoff, known not to have sent.
    pub fn retry(reason: impl Into<String>) -> Self {
        TransportError::Retryable {
            reason: reason.into(),
            after: None,
            maybe_sent: false,
        }
    }

    /// A permanent failure without a code.
    pub fn permanent(reason: impl Into<String>) -> Self {
        TransportError::Permanent {
            reason: reason.into(),
            code: None,
        }
    }
}

impl From<TransportError> for JobError {
    fn from(e: TransportError) -> Self {
        let reason = e.to_string();
        match e {
            TransportError::Retryable { after, .. } => JobError::Retryable { reason, after },
            TransportError::RateLimited { retry_after, .. } => {
                JobError::wait_because(WaitCause::RateLimited, reason, Some(retry_after))
            }
            TransportError::Disconnected { .. } => {
                JobError::wait_because(WaitCause::Disconnected, reason, None)
            }
            TransportError::Permanent { .. } => JobError::permanent(reason),
        }
    }
}

/// The edge to WhatsApp: a bridge (Baileys, whatsmeow, the Cloud API, an
/// HTTP gateway) behind one small trait, run by a
/// [`SendPipeline`](crate::SendPipeline).
///
/// A bridge maps its client's failures onto [`TransportError`]'s classes,
/// says what it can do ([`Capabilities`]) and, where it can, remembers the
/// ids it sent so that [`Transport::lookup`] finds a message whose reply
/// was lost. See `docs/whatsapp.md` for a whole one.
pub trait Transport: Send + Sync + 'static {
    /// What the bridge can do.
    fn capabilities(&self) -> Capabilities;

    /// Sends `msg` under the pre-assigned `id` (where the bridge takes
    /// client ids; others ignore it and return the server's id).
    fn send(
        &self,
        id: &MessageId,
        msg: &OutboundMessage,
    ) -> impl Future<Output = Result<SendReceipt, TransportError>> + Send;

    /// Shows `presence` to `to` from `instance`.
    fn presence(
        &self,
        instance: &str,
        to: &Jid,
        presence: Presence,
    ) -> impl Future<Output = Result<(), TransportError>> + Send;

    /// The session's link state as last known.
    fn session_state(&self, instance: &str) -> SessionState;

    /// What the bridge knows of a message sent under `id`: `None` when it
    /// never sent one, or cannot tell (the default).
    fn lookup(
        &self,
        id: &MessageId,
    ) -> impl Future<Output = Result<Option<SendReceipt>, TransportError>> + Send {
        let _ = id;
        async { Ok(None) }
    }

    /// A stream of what the bridge sees (receipts, session changes, ban
    /// signals), or `None` when it tells nothing; each call subscribes
    /// anew.
    fn events(&self) -> Option<broadcast::Receiver<BridgeEvent>> {
        None
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
                    maybe_sent: false,
                },
                JobError::retry_after("bridge timeout", secs(30)),
            ),
            (
                TransportError::Retryable {
                    reason: "reply lost".into(),
                    after: None,
                    maybe_sent: true,
                },
                JobError::retry("maybe sent: reply lost"),
            ),
            (
                TransportError::RateLimited {
                    retry_after: secs(60),
                    scope: RateScope::Contact,
                },
                JobError::wait_because(
                    WaitCause::RateLimited,
                    "rate limited (Contact) for 60s",
                    Some(secs(60)),
                ),
            ),
            (
                TransportError::Disconnected {
                    reason: "socket closed".into(),
                    permanent: false,
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
                    code: Some(131026),
                },
                JobError::permanent("not on WhatsApp (code 131026)"),
            ),
        ];
        for (transport, job) in cases {
            assert_eq!(JobError::from(transport), job);
        }
    }
}
