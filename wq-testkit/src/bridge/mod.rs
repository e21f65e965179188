//! A fake WhatsApp bridge (feature `bridge`): a real HTTP server on
//! `127.0.0.1`, for the tests and benches of HTTP transports.
//!
//! It speaks two dialects at once:
//!
//! - the Cloud API under [`FakeBridge::cloud_url`]:
//!   `POST /{phone-number-id}/messages` answering `wamid.` ids, Graph error
//!   bodies, and the statuses Meta would POST to a webhook, kept for the
//!   test ([`FakeBridge::webhooks`]);
//! - the gateway dialect of `wq_whatsapp::http::HttpBridge` (Evolution API
//!   paths, `Paths::gateway()`) under [`FakeBridge::url`]: sends,
//!   presences, session states, lookups of sent ids and the long-polled
//!   events feed. Client ids come in the body's `id` field.
//!
//! Every send and presence is recorded with the instant it arrived
//! ([`FakeBridge::requests`]), so a test can check order per contact,
//! duplicates, spacing per session and typing around each send. Faults are
//! set through the handle: rate limits and error codes for the next sends
//! ([`FakeBridge::fail_next`]), sessions dropped, restored or banned, and
//! replies lost after the send went out. Accepted sends get a server
//! receipt at once and delivered / read receipts later ([`ReceiptPlan`]).
//!
//! ```
//! use wq_testkit::bridge::{Fault, FakeBridge, FakeConfig, Target};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! let bridge = FakeBridge::start(FakeConfig::default()).await?;
//! // Point the transport at bridge.url() (gateway) or bridge.cloud_url().
//! bridge.fail_next(Target::instance("shop"), 2, Fault::ServerError);
//! bridge.drop_session("shop");
//! assert!(bridge.sends().is_empty());
//! # Ok(())
//! # }
//! ```

mod cloud;
mod gateway;
mod state;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use wq_whatsapp::{AckLevel, Presence, SessionState};

use state::State;

/// How the fake bridge behaves unless a fault says otherwise.
#[derive(Clone, Debug)]
pub struct FakeConfig {
    /// How long it takes to answer each request.
    pub latency: Duration,
    /// The receipts an accepted send gets.
    pub receipts: ReceiptPlan,
    /// How long a send whose reply is lost ([`Fault::LoseReply`]) is held
    /// before it is answered after all: longer than the client waits.
    pub hold: Duration,
    /// The key every request must carry (the gateway's `apikey` header,
    /// the Cloud API's Bearer token); `None` takes any.
    pub key: Option<String>,
}

impl Default for FakeConfig {
    /// Answers in 5 ms, holds lost replies 10 s, takes any key.
    fn default() -> Self {
        Self {
            latency: Duration::from_millis(5),
            receipts: ReceiptPlan::default(),
            hold: Duration::from_secs(10),
            key: None,
        }
    }
}

/// The receipts of an accepted send: the server's at once, the others
/// after their delays (from the send), each told `1 + duplicates` times.
#[derive(Clone, Debug)]
pub struct ReceiptPlan {
    /// When the message is delivered, if ever.
    pub delivered_after: Option<Duration>,
    /// When it is read, if ever.
    pub read_after: Option<Duration>,
    /// When a late copy of the server's receipt comes, if ever (after the
    /// others, to test that levels do not move back).
    pub late_server_ack: Option<Duration>,
    /// Extra copies of every receipt.
    pub duplicates: usize,
}

impl Default for ReceiptPlan {
    /// Delivered after 20 ms, read after 50 ms, no late or duplicate copy.
    fn default() -> Self {
        Self {
            delivered_after: Some(Duration::from_millis(20)),
            read_after: Some(Duration::from_millis(50)),
            late_server_ack: None,
            duplicates: 0,
        }
    }
}

/// Whose sends a fault hits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// Every send of a session (the gateway's instance, the Cloud API's
    /// phone number id).
    Instance(String),
    /// A session's sends to one recipient (as the request names it: the
    /// phone number's digits).
    Contact {
        /// The session.
        instance: String,
        /// The recipient.
        to: String,
    },
}

impl Target {
    /// Every send of `instance`.
    pub fn instance(instance: impl Into<String>) -> Self {
        Target::Instance(instance.into())
    }

    /// `instance`'s sends to `to`.
    pub fn contact(instance: impl Into<String>, to: impl Into<String>) -> Self {
        Target::Contact {
            instance: instance.into(),
            to: to.into(),
        }
    }

    fn hits(&self, instance: &str, to: &str) -> bool {
        match self {
            Target::Instance(i) => i == instance,
            Target::Contact { instance: i, to: t } => i == instance && t == to,
        }
    }
}

/// What a faulty send gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// A rate limit with `Retry-After`: the gateway answers 429 (with
    /// `"scope": "contact"` for a contact); the Cloud API answers 429
    /// without a code, or 131056 for a contact.
    RateLimited {
        /// The `Retry-After` asked for.
        retry_after: Duration,
        /// Whether it throttles the contact rather than the session.
        contact: bool,
    },
    /// A refusal with this WhatsApp / Graph error code (HTTP 400).
    Code(i64),
    /// HTTP 500.
    ServerError,
    /// The send goes out (it is recorded and its id remembered) but its
    /// reply is held for [`FakeConfig::hold`], past the client's timeout.
    LoseReply,
}

/// Which dialect a request came in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// The Cloud API.
    Cloud,
    /// The gateway dialect.
    Gateway,
}

/// A send the bridge received.
#[derive(Clone, Debug)]
pub struct SendRecord {
    /// When it arrived.
    pub at: Instant,
    /// In which dialect.
    pub dialect: Dialect,
    /// The session (instance, or phone number id).
    pub instance: String,
    /// The recipient as the request named it.
    pub to: String,
    /// `text`, `image`, `video`, `audio`, `document`, `sticker`,
    /// `location`, `contact`, `interactive` or `reaction`.
    pub content_type: String,
    /// The client id the request carried, if any.
    pub client_id: Option<String>,
    /// The id the message went out under; `None` when refused.
    pub id: Option<String>,
    /// The HTTP status answered (held ones included).
    pub status: u16,
    /// Whether the reply was held back ([`Fault::LoseReply`]).
    pub reply_lost: bool,
    /// The request body.
    pub body: Value,
}

impl SendRecord {
    /// Whether the message went out.
    pub fn sent(&self) -> bool {
        self.id.is_some()
    }
}

/// A presence the bridge received (gateway dialect only).
#[derive(Clone, Debug)]
pub struct PresenceRecord {
    /// When it arrived.
    pub at: Instant,
    /// The session.
    pub instance: String,
    /// The recipient as the request named it.
    pub to: String,
    /// What it showed.
    pub presence: Presence,
    /// The HTTP status answered.
    pub status: u16,
}

/// A request the bridge received, in arrival order.
#[derive(Clone, Debug)]
pub enum Request {
    /// A send.
    Send(SendRecord),
    /// A presence.
    Presence(PresenceRecord),
}

/// A running fake bridge; it shuts down when dropped.
pub struct FakeBridge {
    url: String,
    state: Arc<State>,
}

impl FakeBridge {
    /// Starts one on a free port of `127.0.0.1`.
    pub async fn start(config: FakeConfig) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let state = Arc::new(State::new(config));
        let app = gateway::routes()
            .nest("/cloud", cloud::routes())
            .with_state(state.clone());
        let stop = state.stop.clone();
        tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned());
            if let Err(e) = serve.await {
                eprintln!("fake bridge stopped: {e}");
            }
        });
        Ok(Self { url, state })
    }

    /// The gateway dialect's base URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The Cloud API's base URL (in place of
    /// `https://graph.facebook.com/v21.0`).
    pub fn cloud_url(&self) -> String {
        format!("{}/cloud", self.url)
    }

    /// Every send and presence received, in arrival order.
    pub fn requests(&self) -> Vec<Request> {
        self.state.book.lock().requests.clone()
    }

    /// The sends received, in arrival order.
    pub fn sends(&self) -> Vec<SendRecord> {
        let book = self.state.book.lock();
        let sends = book.requests.iter().filter_map(|r| match r {
            Request::Send(s) => Some(s.clone()),
            Request::Presence(_) => None,
        });
        sends.collect()
    }

    /// The presences received, in arrival order.
    pub fn presences(&self) -> Vec<PresenceRecord> {
        let book = self.state.book.lock();
        let presences = book.requests.iter().filter_map(|r| match r {
            Request::Presence(p) => Some(p.clone()),
            Request::Send(_) => None,
        });
        presences.collect()
    }

    /// The webhook notifications the Cloud API would have POSTed for the
    /// receipts of Cloud sends so far, in order.
    pub fn webhooks(&self) -> Vec<Value> {
        self.state.book.lock().webhooks.clone()
    }

    /// How far the message `id` got, if it was sent.
    pub fn ack_of(&self, id: &str) -> Option<AckLevel> {
        self.state.book.lock().acks.get(id).copied()
    }

    /// The next `times` sends that `target` hits get `fault` (after the
    /// faults set before).
    pub fn fail_next(&self, target: Target, times: usize, fault: Fault) {
        self.state.arm(target, times, fault);
    }

    /// Drops `instance`'s link: its state becomes disconnected and its
    /// sends and presences are refused as such, until
    /// [`FakeBridge::restore_session`].
    pub fn drop_session(&self, instance: &str) {
        self.state
            .set_session(instance, SessionState::Disconnected, None);
    }

    /// Brings `instance`'s link back.
    pub fn restore_session(&self, instance: &str) {
        self.state
            .set_session(instance, SessionState::Connected, None);
    }

    /// Bans `instance`: its state becomes banned, a ban signal with `code`
    /// goes on the feed, and its sends are refused with `code`.
    pub fn ban_session(&self, instance: &str, code: i64) {
        self.state
            .set_session(instance, SessionState::Banned, Some(code));
    }
}

impl Drop for FakeBridge {
    fn drop(&mut self) {
        self.state.stop.cancel();
    }
}
