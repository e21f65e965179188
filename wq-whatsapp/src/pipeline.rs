//! The send pipeline: what happens to a message job between "the app
//! enqueued it" and "WhatsApp's server accepted it" (see `docs/whatsapp.md`).
//!
//! Each run of a job is one step: show typing for a piece of its time and
//! free the worker slot until the next piece ([`JobError::Continue`]),
//! send under the job's fixed [`MessageId`], or wait for the server's
//! acknowledgement of a send the bridge only wrote. A session whose link
//! is down is paused in the store, so its messages wait without running,
//! and resumed when the link is back; a ban signal or too many rejected
//! sends trip a breaker that pauses the session until an operator resumes
//! it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use parking_lot::Mutex;
use rand::RngExt;
use tokio::sync::broadcast;
use tower::Service;
use wq_core::{
    Admission, Admissions, Allowance, AttemptOutcome, GroupKey, Handler, HandlerFuture, JobContext,
    JobError, PauseChange, QueueName, SessionKey, Sessions, Timestamp, WaitCause,
};

use crate::job::JobMessageId;
use crate::message::{Content, MessageId, OutboundMessage};
use crate::pause::{PauseReason, Resumable};
use crate::transport::{
    AckLevel, BridgeEvent, MAYBE_SENT, Presence, RateScope, SendReceipt, SessionState, Transport,
    TransportError,
};

/// Error codes that mean WhatsApp is restricting or banning the number:
/// 463 (reachout timelock), 101 to 106 (temporary bans), 131048 (the Cloud
/// API's spam rate limit).
pub const BAN_CODES: [i64; 8] = [463, 101, 102, 103, 104, 105, 106, 131_048];

/// Step names: `typing:<ms left>` while typing, `ack:<polls left>` while
/// waiting for the server to acknowledge a written send.
const TYPING: &str = "typing:";
const AWAIT_ACK: &str = "ack:";
/// Receipts remembered for lookups after a lost reply.
const RECEIPTS_KEPT: usize = 100_000;
/// Contacts remembered as admitted (the store keeps them all; this only
/// saves a round trip per message to a contact written to before).
const ADMITTED_KEPT: usize = 100_000;

/// Typing shown before a message whose `typing_ms` does not say.
#[derive(Clone, Debug, PartialEq)]
pub enum Typing {
    /// None.
    Off,
    /// Sized to the message: `per_char` for each character of its text (or
    /// caption), within `min` and `max`, varied by up to `jitter` (a share,
    /// 0.2 = ±20%) so that no two messages type alike.
    Auto {
        /// Time per character.
        per_char: Duration,
        /// Shortest typing.
        min: Duration,
        /// Longest typing.
        max: Duration,
        /// Share by which the time varies.
        jitter: f64,
    },
}

/// When the breaker pauses a session for its rejected sends.
#[derive(Clone, Debug, PartialEq)]
pub struct Breaker {
    /// Sends looked at: the session's latest ones.
    pub window: usize,
    /// Fewest sends in the window before it judges.
    pub min_sends: usize,
    /// Share of rejected sends above which it trips.
    pub max_rejected: f64,
}

/// How the pipeline sends; [`PipelineConfig::default`] suits an unofficial
/// number.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct PipelineConfig {
    /// Typing before messages that do not set their own.
    pub typing: Typing,
    /// Longest piece of typing in one step: WhatsApp stops showing
    /// "typing…" after about 25 s without a new presence.
    pub typing_piece: Duration,
    /// Whether the pipeline's waits (typing, and a written send's wait for
    /// the server's acknowledgement) run as steps that free the worker's
    /// slot (the default) or inside the run that sends, holding a slot
    /// meanwhile. A message between steps takes no start from its session's
    /// rate and, once due, runs before the messages that have not started,
    /// so under a rate the typing of one message never costs the next its
    /// turn (see `docs/sessions.md`).
    pub steps: bool,
    /// How long a send the bridge only wrote ([`AckLevel::Written`]) waits
    /// for the server's acknowledgement before it counts as maybe sent.
    pub ack_wait: Duration,
    /// How often that wait looks.
    pub ack_poll: Duration,
    /// The breaker.
    pub breaker: Breaker,
    /// How often a session paused for a lost link or a rate limit is
    /// looked at again.
    pub resume_poll: Duration,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            typing: Typing::Auto {
                per_char: Duration::from_millis(50),
                min: Duration::from_secs(1),
                max: Duration::from_secs(8),
                jitter: 0.2,
            },
            typing_piece: Duration::from_secs(20),
            steps: true,
            ack_wait: Duration::from_secs(30),
            ack_poll: Duration::from_millis(500),
            breaker: Breaker {
                window: 50,
                min_sends: 20,
                max_rejected: 0.2,
            },
            resume_poll: Duration::from_secs(5),
        }
    }
}

impl PipelineConfig {
    /// The same configuration with `typing`.
    pub fn typing(mut self, typing: Typing) -> Self {
        self.typing = typing;
        self
    }

    /// The same configuration waiting in steps (`true`) or inside the run
    /// that sends (`false`).
    pub fn steps(mut self, steps: bool) -> Self {
        self.steps = steps;
        self
    }

    /// The same configuration waiting up to `wait` for server
    /// acknowledgements, looking every `poll`.
    pub fn ack_wait(mut self, wait: Duration, poll: Duration) -> Self {
        self.ack_wait = wait;
        self.ack_poll = poll;
        self
    }

    /// The same configuration with `breaker`.
    pub fn breaker(mut self, breaker: Breaker) -> Self {
        self.breaker = breaker;
        self
    }

    /// The same configuration looking at paused sessions every `poll`.
    pub fn resume_poll(mut self, poll: Duration) -> Self {
        self.resume_poll = poll;
        self
    }
}

/// What the pipeline did to a session, for operators.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PipelineEvent {
    /// It paused the session's jobs.
    SessionPaused {
        /// The queue.
        queue: QueueName,
        /// The session (the message's instance).
        instance: String,
        /// Why.
        reason: PauseReason,
    },
    /// It resumed them.
    SessionResumed {
        /// The queue.
        queue: QueueName,
        /// The session.
        instance: String,
    },
}

/// The sessions' latest send outcomes, `true` for rejected.
#[derive(Debug, Default)]
struct Outcomes(HashMap<String, VecDeque<bool>>);

/// Receipts seen, by message or server id, oldest forgotten first.
#[derive(Debug, Default)]
struct Receipts {
    levels: HashMap<String, AckLevel>,
    order: VecDeque<String>,
}

impl Receipts {
    /// Raises `id` to `ack`; a level never moves back.
    fn raise(&mut self, id: String, ack: AckLevel) {
        if let Some(level) = self.levels.get_mut(&id) {
            *level = (*level).max(ack);
            return;
        }
        if self.order.len() >= RECEIPTS_KEPT
            && let Some(old) = self.order.pop_front()
        {
            self.levels.remove(&old);
        }
        self.order.push_back(id.clone());
        self.levels.insert(id, ack);
    }

    fn level(&self, id: &str) -> Option<AckLevel> {
        self.levels.get(id).copied()
    }
}

struct Inner<T, S> {
    transport: Arc<T>,
    sessions: S,
    config: PipelineConfig,
    receipts: Mutex<Receipts>,
    outcomes: Mutex<Outcomes>,
    /// The sessions it has run messages of, by queue, and the queues it was
    /// told to watch ([`SendPipeline::watch`]) with the sessions seen there:
    /// where its supervisor looks for pauses to lift.
    known: Mutex<HashMap<QueueName, HashSet<String>>>,
    /// Contacts (groups) their sessions were admitted to.
    admitted: Mutex<HashSet<(QueueName, GroupKey)>>,
    events: broadcast::Sender<PipelineEvent>,
}

/// The WhatsApp send pipeline: a [`Handler`] (and tower `Service`) for
/// queues of [`OutboundMessage`] jobs, over a [`Transport`] and the
/// store's [`Sessions`].
///
/// Enqueue messages with [`EnqueueMessage::message`](crate::EnqueueMessage):
/// each contact's messages form a group (one at a time, in order) and each
/// instance is a session (its limits apply across every worker). Run
/// [`SendPipeline::supervise`] beside the worker: it resumes paused
/// sessions and feeds the bridge's receipts and signals to the pipeline.
pub struct SendPipeline<T, S> {
    inner: Arc<Inner<T, S>>,
}

impl<T, S> Clone for SendPipeline<T, S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<T: Transport, S: Sessions + Admissions> SendPipeline<T, S> {
    /// A pipeline sending through `transport`, pausing sessions in
    /// `sessions` (the worker's backend), with the default configuration.
    pub fn new(transport: Arc<T>, sessions: S) -> Self {
        Self::with_config(transport, sessions, PipelineConfig::default())
    }

    /// A pipeline with `config`.
    pub fn with_config(transport: Arc<T>, sessions: S, config: PipelineConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                transport,
                sessions,
                config,
                receipts: Mutex::default(),
                outcomes: Mutex::default(),
                known: Mutex::default(),
                admitted: Mutex::default(),
                events: broadcast::channel(256).0,
            }),
        }
    }

    /// The same pipeline, its supervisor also looking after the paused
    /// sessions of `queue`, which it would otherwise learn of only once it
    /// runs one of the queue's messages: a process started while every
    /// session of the queue is paused (its link was down when another
    /// process died) resumes them when their links are back.
    pub fn watch(self, queue: impl Into<QueueName>) -> Self {
        self.inner.known.lock().entry(queue.into()).or_default();
        self
    }

    /// What the pipeline does to sessions, as it does it.
    pub fn subscribe(&self) -> broadcast::Receiver<PipelineEvent> {
        self.inner.events.subscribe()
    }

    /// Listens to the bridge and looks at paused sessions every
    /// [`PipelineConfig::resume_poll`], until dropped: spawn it beside the
    /// worker.
    pub fn supervise(&self) -> impl Future<Output = ()> + Send + 'static {
        let this = self.clone();
        async move {
            let mut bridge = this.inner.transport.events();
            let mut tick = tokio::time::interval(this.inner.config.resume_poll);
            loop {
                tokio::select! {
                    event = next_event(&mut bridge) => match event {
                        Some(event) => this.on_bridge_event(event).await,
                        None => bridge = None,
                    },
                    _ = tick.tick() => this.resume_due().await,
                }
            }
        }
    }

    /// Runs one step of a message job.
    async fn run(&self, ctx: &JobContext) -> Result<(), JobError> {
        let msg: OutboundMessage = ctx.payload()?;
        let queue = ctx.job().queue.clone();
        let instance = msg.instance.clone();
        self.remember(&queue, &instance);
        let state = self.inner.transport.session_state(&instance);
        if state != SessionState::Connected {
            return Err(self.session_down(&queue, &instance, state).await);
        }
        let id = ctx.message_id();
        if let Some(polls) = ctx.step().and_then(|s| s.strip_prefix(AWAIT_ACK)) {
            return self.await_ack(ctx, &id, polls.parse().unwrap_or(0)).await;
        }
        if maybe_sent_before(ctx)
            && let Some(receipt) = self.already_sent(&id).await?
        {
            ctx.set_output(&receipt)?;
            return Ok(());
        }
        self.admit(ctx, &queue, &instance).await?;
        let typing_left = match ctx.step().and_then(|s| s.strip_prefix(TYPING)) {
            Some(ms) => Duration::from_millis(ms.parse().unwrap_or(0)),
            None => self.typing_for(&msg),
        };
        let typed_before = ctx.step().is_some_and(|s| s.starts_with(TYPING));
        if typing_left.is_zero() {
            return self.send(ctx, &queue, &msg, &id, typed_before).await;
        }
        if self.inner.config.steps {
            return self.type_piece(ctx, &queue, &msg, typing_left).await;
        }
        self.type_inline(ctx, &queue, &msg, typing_left).await?;
        self.send(ctx, &queue, &msg, &id, true).await
    }

    /// Shows typing for `left` within this run, renewing the presence every
    /// piece. A run asked to stop is dropped by the worker meanwhile.
    async fn type_inline(
        &self,
        ctx: &JobContext,
        queue: &QueueName,
        msg: &OutboundMessage,
        mut left: Duration,
    ) -> Result<(), JobError> {
        while !left.is_zero() {
            self.show_typing(ctx, queue, msg).await?;
            let piece = left.min(self.inner.config.typing_piece);
            tokio::time::sleep(piece).await;
            left = left.saturating_sub(piece);
        }
        Ok(())
    }

    /// Shows typing for the next piece of `left` and continues after it.
    async fn type_piece(
        &self,
        ctx: &JobContext,
        queue: &QueueName,
        msg: &OutboundMessage,
        left: Duration,
    ) -> Result<(), JobError> {
        self.show_typing(ctx, queue, msg).await?;
        let piece = left.min(self.inner.config.typing_piece);
        let rest = left.saturating_sub(piece);
        Err(JobError::continue_at(
            format!("{TYPING}{}", rest.as_millis()),
            piece,
        ))
    }

    /// Shows "typing…" (or "recording…" before audio) to the contact.
    async fn show_typing(
        &self,
        ctx: &JobContext,
        queue: &QueueName,
        msg: &OutboundMessage,
    ) -> Result<(), JobError> {
        let presence = match &msg.content {
            Content::Media {
                kind: crate::message::MediaKind::Audio,
                ..
            } => Presence::Recording,
            _ => Presence::Composing,
        };
        let shown = self
            .inner
            .transport
            .presence(&msg.instance, &msg.to, presence)
            .await;
        match shown {
            Ok(()) => Ok(()),
            // A link lost while typing pauses the session as a send would.
            Err(e) => Err(self.failed(ctx, queue, &msg.instance, e).await),
        }
    }

    /// Sends, records the outcome for the breaker, stops the typing, and
    /// completes or waits for the server's acknowledgement.
    async fn send(
        &self,
        ctx: &JobContext,
        queue: &QueueName,
        msg: &OutboundMessage,
        id: &MessageId,
        typed: bool,
    ) -> Result<(), JobError> {
        let sent = self.inner.transport.send(id, msg).await;
        let receipt = match sent {
            Ok(receipt) => receipt,
            Err(e) => return Err(self.failed(ctx, queue, &msg.instance, e).await),
        };
        self.record(queue, &msg.instance, false).await;
        if typed {
            // Typing was shown: stop it. A lost presence costs nothing.
            let _ = self
                .inner
                .transport
                .presence(&msg.instance, &msg.to, Presence::Paused)
                .await;
        }
        self.raise(&receipt);
        if receipt.ack >= AckLevel::Server {
            ctx.set_output(&receipt)?;
            return Ok(());
        }
        let polls = self.ack_polls();
        if self.inner.config.steps {
            return Err(JobError::continue_at(
                format!("{AWAIT_ACK}{polls}"),
                self.inner.config.ack_poll,
            ));
        }
        for left in (0..=polls).rev() {
            if let Some(receipt) = self.already_sent(id).await? {
                ctx.set_output(&receipt)?;
                return Ok(());
            }
            if left > 0 {
                tokio::time::sleep(self.inner.config.ack_poll).await;
            }
        }
        Err(never_acknowledged())
    }

    /// One look for the server's acknowledgement of a written send.
    async fn await_ack(
        &self,
        ctx: &JobContext,
        id: &MessageId,
        polls: u64,
    ) -> Result<(), JobError> {
        if let Some(receipt) = self.already_sent(id).await? {
            ctx.set_output(&receipt)?;
            return Ok(());
        }
        if polls == 0 {
            return Err(never_acknowledged());
        }
        Err(JobError::continue_at(
            format!("{AWAIT_ACK}{}", polls - 1),
            self.inner.config.ack_poll,
        ))
    }

    /// The receipt of a message the server accepted under `id`, from the
    /// receipts seen or the bridge's lookup; `None` if neither knows one.
    async fn already_sent(&self, id: &MessageId) -> Result<Option<SendReceipt>, JobError> {
        if let Some(ack) = self.inner.receipts.lock().level(id.as_str())
            && ack >= AckLevel::Server
        {
            return Ok(Some(SendReceipt::new(id.clone(), ack)));
        }
        let found = self.inner.transport.lookup(id).await?;
        Ok(found.filter(|r| r.ack >= AckLevel::Server))
    }

    fn ack_polls(&self) -> u64 {
        let c = &self.inner.config;
        let polls = c.ack_wait.as_millis() / c.ack_poll.as_millis().max(1);
        u64::try_from(polls).unwrap_or(u64::MAX)
    }

    fn raise(&self, receipt: &SendReceipt) {
        let mut receipts = self.inner.receipts.lock();
        receipts.raise(receipt.message_id.as_str().to_owned(), receipt.ack);
        if let Some(server_id) = &receipt.server_id {
            receipts.raise(server_id.clone(), receipt.ack);
        }
    }

    /// How long to type before `msg`, drawn once per message.
    fn typing_for(&self, msg: &OutboundMessage) -> Duration {
        if let Some(ms) = msg.typing_ms {
            return Duration::from_millis(ms);
        }
        let Typing::Auto {
            per_char,
            min,
            max,
            jitter,
        } = &self.inner.config.typing
        else {
            return Duration::ZERO;
        };
        let chars = u32::try_from(text_len(&msg.content)).unwrap_or(u32::MAX);
        let base = per_char.saturating_mul(chars).clamp(*min, *max);
        let share = jitter.clamp(0.0, 1.0);
        let factor = if share > 0.0 {
            rand::rng().random_range(1.0 - share..=1.0 + share)
        } else {
            1.0
        };
        base.mul_f64(factor)
    }

    /// What a failed send does to its session, and the job's error.
    async fn failed(
        &self,
        ctx: &JobContext,
        queue: &QueueName,
        instance: &str,
        e: TransportError,
    ) -> JobError {
        match &e {
            TransportError::Disconnected { permanent, .. } => {
                let state = if *permanent {
                    SessionState::LoggedOut
                } else {
                    SessionState::Disconnected
                };
                return self.session_down(queue, instance, state).await;
            }
            TransportError::RateLimited {
                retry_after,
                scope: RateScope::Session,
            } => {
                self.pause(queue, instance, PauseReason::RateLimited, *retry_after)
                    .await;
            }
            TransportError::RateLimited {
                retry_after,
                scope: RateScope::NewChats,
            } => {
                let until = Timestamp::now() + *retry_after;
                let session = SessionKey::new(instance);
                if let Err(e) = self
                    .inner
                    .sessions
                    .hold_admissions(queue, &session, until)
                    .await
                {
                    tracing::warn!(%queue, instance, error = %e, "could not hold new chats");
                }
            }
            TransportError::RateLimited {
                retry_after,
                scope: RateScope::Contact,
            } => {
                let wait = contact_backoff(ctx).max(*retry_after);
                return JobError::wait_because(WaitCause::RateLimited, e.to_string(), Some(wait));
            }
            TransportError::Permanent {
                code: Some(code), ..
            } if BAN_CODES.contains(code) => {
                self.pause(
                    queue,
                    instance,
                    PauseReason::BanSignal(*code),
                    Duration::ZERO,
                )
                .await;
                // Not the message's fault: it waits for the session.
                let after = Some(self.inner.config.resume_poll);
                return JobError::wait_because(WaitCause::Paused, e.to_string(), after);
            }
            TransportError::Permanent { .. } => self.record(queue, instance, true).await,
            _ => {}
        }
        e.into()
    }

    /// Pauses a session whose link is not up, and the job's error: a wait
    /// that spends no attempt.
    async fn session_down(
        &self,
        queue: &QueueName,
        instance: &str,
        state: SessionState,
    ) -> JobError {
        let reason = if state.is_final() {
            PauseReason::Stopped(state)
        } else {
            PauseReason::Disconnected
        };
        self.pause(queue, instance, reason, Duration::ZERO).await;
        // The pause holds the job; a short wait only keeps it from running
        // again at once should the pause not have been stored.
        JobError::wait_because(
            WaitCause::Disconnected,
            format!("session `{instance}` is {state:?}"),
            Some(self.inner.config.resume_poll),
        )
    }

    /// Records a send's outcome and trips the breaker when too many of the
    /// session's latest sends were rejected.
    async fn record(&self, queue: &QueueName, instance: &str, rejected: bool) {
        let b = &self.inner.config.breaker;
        let tripped = {
            let mut outcomes = self.inner.outcomes.lock();
            let window = outcomes.0.entry(instance.to_owned()).or_default();
            window.push_back(rejected);
            while window.len() > b.window {
                window.pop_front();
            }
            let bad = window.iter().filter(|r| **r).count();
            let trip =
                window.len() >= b.min_sends && bad as f64 > b.max_rejected * window.len() as f64;
            let seen = window.len();
            if trip {
                window.clear();
            }
            trip.then_some((bad, seen))
        };
        if let Some((rejected, of)) = tripped {
            let reason = PauseReason::Rejections { rejected, of };
            self.pause(queue, instance, reason, Duration::ZERO).await;
        }
    }

    /// Pauses the session in the store for `reason` (a rate limit's for
    /// `wait`) and tells it, if that changed the store: a pause the
    /// pipeline resumes from keeps a pause in force (an operator's, a
    /// ban's), one that needs an operator replaces it.
    async fn pause(&self, queue: &QueueName, instance: &str, reason: PauseReason, wait: Duration) {
        let change = reason.change(Timestamp::now(), wait);
        let session = SessionKey::new(instance);
        match self
            .inner
            .sessions
            .set_session_paused(queue, &session, &change)
            .await
        {
            Ok(true) => {
                tracing::warn!(%queue, instance, ?reason, "session paused");
                let _ = self.inner.events.send(PipelineEvent::SessionPaused {
                    queue: queue.clone(),
                    instance: instance.to_owned(),
                    reason,
                });
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(%queue, instance, error = %e, "could not pause the session"),
        }
    }

    /// Resumes a session paused for exactly `stored`, and tells it if it
    /// did: a pause taken since for another reason stays.
    async fn resume_if(&self, queue: &QueueName, instance: &str, stored: &str) {
        let session = SessionKey::new(instance);
        let change = PauseChange::ResumeIf(stored.to_owned());
        match self
            .inner
            .sessions
            .set_session_paused(queue, &session, &change)
            .await
        {
            Ok(true) => {
                tracing::info!(%queue, instance, "session resumed");
                let _ = self.inner.events.send(PipelineEvent::SessionResumed {
                    queue: queue.clone(),
                    instance: instance.to_owned(),
                });
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(%queue, instance, error = %e, "could not resume the session"),
        }
    }

    /// Resumes the sessions of the queues it knows whose link is back or
    /// whose rate limit is over, whichever process paused them.
    async fn resume_due(&self) {
        let queues: Vec<QueueName> = self.inner.known.lock().keys().cloned().collect();
        for queue in queues {
            if let Err(e) = self.resume_due_in(&queue).await {
                tracing::warn!(%queue, error = %e, "could not look at paused sessions");
            }
        }
    }

    async fn resume_due_in(&self, queue: &QueueName) -> Result<(), wq_core::StoreError> {
        const PAGE: usize = 500;
        let now = Timestamp::now();
        let mut after = None;
        loop {
            let page = self
                .inner
                .sessions
                .paused_sessions(queue, after.as_ref(), PAGE)
                .await?;
            for info in &page {
                let Some(stored) = info.pause_reason.as_deref() else {
                    continue;
                };
                let due = match Resumable::of(stored) {
                    Some(Resumable::LinkDown) => {
                        self.inner.transport.session_state(info.session.as_str())
                            == SessionState::Connected
                    }
                    Some(Resumable::After(at)) => at <= now,
                    None => false,
                };
                if due {
                    self.resume_if(queue, info.session.as_str(), stored).await;
                }
            }
            if page.len() < PAGE {
                return Ok(());
            }
            after = page.last().map(|i| i.session.clone());
        }
    }

    async fn on_bridge_event(&self, event: BridgeEvent) {
        match event {
            BridgeEvent::Receipt { id, ack, .. } => self.inner.receipts.lock().raise(id, ack),
            BridgeEvent::Failed { instance, .. } => {
                for queue in self.queues_of(&instance) {
                    self.record(&queue, &instance, true).await;
                }
            }
            BridgeEvent::Session { instance, state } => {
                for queue in self.queues_of(&instance) {
                    if state == SessionState::Connected {
                        self.resume_if(&queue, &instance, Resumable::link_down())
                            .await;
                    } else if state.is_final() {
                        let reason = PauseReason::Stopped(state);
                        self.pause(&queue, &instance, reason, Duration::ZERO).await;
                    }
                }
            }
            BridgeEvent::Ban { instance, code } => {
                for queue in self.queues_of(&instance) {
                    let reason = PauseReason::BanSignal(code);
                    self.pause(&queue, &instance, reason, Duration::ZERO).await;
                }
            }
            BridgeEvent::Quota {
                instance,
                new_chats,
                per,
            } => {
                let allowance = Allowance::new(new_chats, per);
                if allowance.validate().is_err() {
                    tracing::warn!(instance, new_chats, ?per, "a quota that is no allowance");
                    return;
                }
                let session = SessionKey::new(instance.as_str());
                for queue in self.queues_of(&instance) {
                    let set = self
                        .inner
                        .sessions
                        .set_allowance(&queue, &session, Some(&allowance));
                    if let Err(e) = set.await {
                        tracing::warn!(%queue, instance, error = %e, "could not set the quota");
                    }
                }
            }
        }
    }

    /// Admits the message's session to its contact: a contact the number
    /// never wrote to takes a place in the session's allowance of new chats
    /// (`Preset::declare_session` sets it; quota events change it). Without
    /// a place the message waits for one, spending no attempt; its contact's
    /// later messages wait behind it, other contacts' go on.
    async fn admit(
        &self,
        ctx: &JobContext,
        queue: &QueueName,
        instance: &str,
    ) -> Result<(), JobError> {
        let Some(group) = ctx.job().group.clone() else {
            return Ok(());
        };
        let key = (queue.clone(), group);
        if self.inner.admitted.lock().contains(&key) {
            return Ok(());
        }
        let now = Timestamp::now();
        let session = SessionKey::new(instance);
        let admission = self
            .inner
            .sessions
            .admit(queue, &session, &key.1, now)
            .await
            .map_err(|e| JobError::retry(format!("cannot admit the contact: {e}")))?;
        match admission {
            Admission::Known | Admission::Admitted => {
                let mut admitted = self.inner.admitted.lock();
                if admitted.len() >= ADMITTED_KEPT {
                    admitted.clear();
                }
                admitted.insert(key);
                Ok(())
            }
            Admission::Refused { until } => Err(JobError::wait_because(
                WaitCause::RateLimited,
                format!("session `{instance}` may start no new chat before {until:?}"),
                Some(until.duration_since(now)),
            )),
        }
    }

    /// Notes that the pipeline runs `instance`'s messages of `queue`
    /// (allocating only the first time).
    fn remember(&self, queue: &QueueName, instance: &str) {
        let mut known = self.inner.known.lock();
        if known.get(queue).is_some_and(|s| s.contains(instance)) {
            return;
        }
        known
            .entry(queue.clone())
            .or_default()
            .insert(instance.to_owned());
    }

    /// The queues the pipeline has run `instance`'s messages of.
    fn queues_of(&self, instance: &str) -> Vec<QueueName> {
        self.inner
            .known
            .lock()
            .iter()
            .filter(|(_, sessions)| sessions.contains(instance))
            .map(|(q, _)| q.clone())
            .collect()
    }
}

/// A written send the server did not acknowledge in time: maybe sent, so
/// the next attempt looks it up first.
fn never_acknowledged() -> JobError {
    TransportError::Retryable {
        reason: "the server never acknowledged the send".into(),
        after: None,
        maybe_sent: true,
    }
    .into()
}

/// 4^n seconds after the job's n-th refusal in a row for writing to one
/// user too often (the Cloud API's advice for 131056), up to an hour.
fn contact_backoff(ctx: &JobContext) -> Duration {
    let limited = TransportError::RateLimited {
        retry_after: Duration::ZERO,
        scope: RateScope::Contact,
    }
    .to_string();
    let prefix = limited.split(" for ").next().unwrap_or_default();
    let n = ctx
        .job()
        .history
        .iter()
        .rev()
        .take_while(|a| a.error.as_deref().is_some_and(|e| e.starts_with(prefix)))
        .count();
    let secs = 4u64.saturating_pow(u32::try_from(n + 1).unwrap_or(u32::MAX));
    Duration::from_secs(secs.min(3_600))
}

/// Whether an earlier run ended in a failure that may have sent the
/// message: the last one, or any the history keeps (a wait for a lost link
/// or a rate limit may have come between, and replaced `last_error`), or a
/// run that lapsed: its worker died or stalled, maybe in the middle of the
/// send.
fn maybe_sent_before(ctx: &JobContext) -> bool {
    let job = ctx.job();
    let maybe = |e: Option<&str>| e.is_some_and(|e| e.starts_with(MAYBE_SENT));
    maybe(job.last_error.as_deref())
        || job
            .history
            .iter()
            .any(|a| a.outcome == AttemptOutcome::Lapsed || maybe(a.error.as_deref()))
}

/// The characters a person would type for `content`.
fn text_len(content: &Content) -> usize {
    match content {
        Content::Text { body } | Content::Interactive { body, .. } => body.chars().count(),
        Content::Media { caption, .. } => caption.as_deref().map_or(0, |c| c.chars().count()),
        _ => 0,
    }
}

/// The next event of a subscription; pending forever without one, `None`
/// once it closed.
async fn next_event(rx: &mut Option<broadcast::Receiver<BridgeEvent>>) -> Option<BridgeEvent> {
    let Some(rx) = rx else {
        return std::future::pending().await;
    };
    loop {
        match rx.recv().await {
            Ok(event) => return Some(event),
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(missed = n, "the pipeline fell behind the bridge's events");
            }
            Err(broadcast::error::RecvError::Closed) => return None,
        }
    }
}

impl<T: Transport, S: Sessions + Admissions> Handler for SendPipeline<T, S> {
    async fn handle(&self, ctx: JobContext) -> Result<(), JobError> {
        self.run(&ctx).await
    }
}

impl<T: Transport, S: Sessions + Admissions> Service<JobContext> for SendPipeline<T, S> {
    type Response = ();
    type Error = JobError;
    type Future = HandlerFuture;

    /// Always ready: sessions are checked per message, so a session that is
    /// down pauses its own jobs, not the queue.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), JobError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, ctx: JobContext) -> HandlerFuture {
        let this = self.clone();
        Box::pin(async move { this.run(&ctx).await })
    }
}
