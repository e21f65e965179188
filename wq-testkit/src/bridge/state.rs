//! What both dialects share: the record, the faults, the sessions, the
//! ids sent and the receipts.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use wq_whatsapp::{AckLevel, SessionState};

use super::{Dialect, FakeConfig, Fault, Request, SendRecord, Target};

/// A fault armed for the next sends its target hits.
struct Armed {
    target: Target,
    fault: Fault,
    left: usize,
}

/// The mutable part of the bridge.
#[derive(Default)]
pub(super) struct Book {
    pub(super) requests: Vec<Request>,
    armed: Vec<Armed>,
    /// Sessions not connected, with the code of a ban.
    sessions: HashMap<String, (SessionState, Option<i64>)>,
    pub(super) acks: HashMap<String, AckLevel>,
    /// The gateway's events feed; an event's `seq` is its index + 1.
    feed: Vec<Value>,
    pub(super) webhooks: Vec<Value>,
    ids_given: u64,
}

pub(super) struct State {
    pub(super) config: FakeConfig,
    pub(super) book: Mutex<Book>,
    /// Woken when the feed grows.
    fed: Notify,
    pub(super) stop: CancellationToken,
}

/// A send as the dialect parsed it.
pub(super) struct Incoming {
    pub(super) at: Instant,
    pub(super) dialect: Dialect,
    pub(super) instance: String,
    pub(super) to: String,
    pub(super) content_type: String,
    pub(super) client_id: Option<String>,
    pub(super) body: Value,
}

/// What the bridge does with a send.
pub(super) enum Verdict {
    /// It went out under `id`; `lost` holds the reply back.
    Sent { id: String, lost: bool },
    /// The session's link is down.
    Disconnected,
    /// The session is banned, with this code.
    Banned(i64),
    /// Refused by a fault or a ban.
    Refused(Fault),
}

impl State {
    pub(super) fn new(config: FakeConfig) -> Self {
        Self {
            config,
            book: Mutex::default(),
            fed: Notify::new(),
            stop: CancellationToken::new(),
        }
    }

    pub(super) fn arm(&self, target: Target, left: usize, fault: Fault) {
        let armed = Armed {
            target,
            fault,
            left,
        };
        self.book.lock().armed.push(armed);
    }

    /// `instance`'s state and the code of its ban.
    pub(super) fn session(&self, instance: &str) -> (SessionState, Option<i64>) {
        let book = self.book.lock();
        let state = book.sessions.get(instance).copied();
        state.unwrap_or((SessionState::Connected, None))
    }

    pub(super) fn set_session(&self, instance: &str, state: SessionState, ban: Option<i64>) {
        let mut book = self.book.lock();
        book.sessions.insert(instance.to_owned(), (state, ban));
        let word = session_word(state);
        push_feed(
            &mut book,
            json!({ "type": "session", "instance": instance, "state": word }),
        );
        if let Some(code) = ban {
            push_feed(
                &mut book,
                json!({ "type": "ban", "instance": instance, "code": code }),
            );
        }
        drop(book);
        self.fed.notify_waiters();
    }

    /// Decides what becomes of `send`, records it, and starts its
    /// receipts when it went out.
    pub(super) fn take(self: &Arc<Self>, send: Incoming) -> Verdict {
        let verdict = self.judge(&send);
        let (id, lost, status) = match &verdict {
            Verdict::Sent { id, lost } => (Some(id.clone()), *lost, 200),
            Verdict::Disconnected => (None, false, 503),
            Verdict::Banned(_) => (None, false, 400),
            Verdict::Refused(fault) => (None, false, refusal_status(fault)),
        };
        if let Some(id) = &id {
            self.receipts(&send, id);
        }
        let record = SendRecord {
            at: send.at,
            dialect: send.dialect,
            instance: send.instance,
            to: send.to,
            content_type: send.content_type,
            client_id: send.client_id,
            id,
            status,
            reply_lost: lost,
            body: send.body,
        };
        self.book.lock().requests.push(Request::Send(record));
        verdict
    }

    fn judge(&self, send: &Incoming) -> Verdict {
        match self.session(&send.instance) {
            (SessionState::Connected, _) => {}
            (_, Some(code)) => return Verdict::Banned(code),
            _ => return Verdict::Disconnected,
        }
        let lost = match self.next_fault(&send.instance, &send.to) {
            Some(Fault::LoseReply) => true,
            Some(fault) => return Verdict::Refused(fault),
            None => false,
        };
        let id = send
            .client_id
            .clone()
            .unwrap_or_else(|| self.new_id(send.dialect));
        Verdict::Sent { id, lost }
    }

    fn next_fault(&self, instance: &str, to: &str) -> Option<Fault> {
        let mut book = self.book.lock();
        let armed = book
            .armed
            .iter_mut()
            .find(|a| a.left > 0 && a.target.hits(instance, to))?;
        armed.left -= 1;
        Some(armed.fault.clone())
    }

    fn new_id(&self, dialect: Dialect) -> String {
        let mut book = self.book.lock();
        book.ids_given += 1;
        match dialect {
            Dialect::Cloud => format!("wamid.HBgM{:020X}", book.ids_given),
            Dialect::Gateway => format!("BAE5{:012X}", book.ids_given),
        }
    }

    /// The server's receipt now, the later ones from a task.
    fn receipts(self: &Arc<Self>, send: &Incoming, id: &str) {
        let to = Receipt {
            dialect: send.dialect,
            instance: send.instance.clone(),
            to: send.to.clone(),
            id: id.to_owned(),
        };
        self.receipt(&to, AckLevel::Server);
        let plan = &self.config.receipts;
        let mut later: Vec<(Duration, AckLevel)> = [
            (plan.delivered_after, AckLevel::Delivered),
            (plan.read_after, AckLevel::Read),
            (plan.late_server_ack, AckLevel::Server),
        ]
        .into_iter()
        .filter_map(|(after, ack)| Some((after?, ack)))
        .collect();
        later.sort_by_key(|(after, _)| *after);
        let this = self.clone();
        let start = send.at;
        tokio::spawn(async move {
            for (after, ack) in later {
                let due = tokio::time::Instant::from_std(start + after);
                tokio::select! {
                    () = tokio::time::sleep_until(due) => this.receipt(&to, ack),
                    () = this.stop.cancelled() => return,
                }
            }
        });
    }

    /// Tells `ack` for a message, as often as the plan says.
    fn receipt(&self, r: &Receipt, ack: AckLevel) {
        let mut book = self.book.lock();
        let level = book.acks.entry(r.id.clone()).or_insert(ack);
        *level = (*level).max(ack);
        for _ in 0..=self.config.receipts.duplicates {
            match r.dialect {
                Dialect::Gateway => push_feed(
                    &mut book,
                    json!({ "type": "receipt", "instance": r.instance, "id": r.id, "ack": ack }),
                ),
                Dialect::Cloud => book.webhooks.push(super::cloud::status_webhook(r, ack)),
            }
        }
        drop(book);
        self.fed.notify_waiters();
    }

    /// The feed after `after` and the next sequence number, waiting up to
    /// `wait` for one.
    pub(super) async fn feed_after(&self, after: u64, wait: Duration) -> (Vec<Value>, u64) {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let fed = self.fed.notified();
            tokio::pin!(fed);
            fed.as_mut().enable();
            let (events, next) = self.feed_now(after);
            if !events.is_empty() || tokio::time::Instant::now() >= deadline {
                return (events, next);
            }
            tokio::select! {
                () = fed => {}
                () = tokio::time::sleep_until(deadline) => {}
                () = self.stop.cancelled() => return (events, next),
            }
        }
    }

    pub(super) fn feed_len(&self) -> u64 {
        self.book.lock().feed.len() as u64
    }

    fn feed_now(&self, after: u64) -> (Vec<Value>, u64) {
        let book = self.book.lock();
        let from = usize::try_from(after)
            .unwrap_or(usize::MAX)
            .min(book.feed.len());
        (book.feed[from..].to_vec(), book.feed.len() as u64)
    }

    /// Waits out the answer's latency, or a lost reply's hold; `false`
    /// when the bridge stops meanwhile.
    pub(super) async fn delay(&self, lost: bool) -> bool {
        let wait = if lost {
            self.config.hold
        } else {
            self.config.latency
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => true,
            () = self.stop.cancelled() => false,
        }
    }
}

/// Where a message's receipts go.
pub(super) struct Receipt {
    pub(super) dialect: Dialect,
    pub(super) instance: String,
    pub(super) to: String,
    pub(super) id: String,
}

fn push_feed(book: &mut Book, mut event: Value) {
    event["seq"] = (book.feed.len() as u64 + 1).into();
    book.feed.push(event);
}

/// The HTTP status of a refusal (the dialects agree on these).
pub(super) fn refusal_status(fault: &Fault) -> u16 {
    match fault {
        Fault::RateLimited { .. } => 429,
        Fault::Code(_) => 400,
        Fault::ServerError => 500,
        // Never a refusal: the send went out.
        Fault::LoseReply => 200,
    }
}

/// A state as the gateway's status endpoint names it (Evolution's words
/// where it has them).
pub(super) fn session_word(state: SessionState) -> &'static str {
    match state {
        SessionState::Connected => "open",
        SessionState::Connecting => "connecting",
        SessionState::Disconnected => "close",
        SessionState::LoggedOut => "logged_out",
        SessionState::Replaced => "replaced",
        SessionState::Banned => "banned",
    }
}
