//! A transport for a Baileys bridge, and why it waits for the server.
//!
//! Baileys (the Node library behind most unofficial WhatsApp gateways)
//! returns from `sock.sendMessage(jid, content, { messageId })` once the
//! stanza is written to its socket; WhatsApp's server acknowledges it later,
//! as a `messages.update` event with `status: 2` (SERVER_ACK; 3 is delivered,
//! 4 read, 5 played). A queue that counts the message sent when
//! `sendMessage` returns may start the contact's next message before the
//! server has the first, and media (slow to upload) is overtaken by the text
//! after it. So this transport says `accepted: AckLevel::Written`, and the
//! send pipeline holds the contact's next message until the receipt comes.
//!
//! The Node side is a few lines around a socket: call `sendMessage` with
//! the `messageId` wq gives, forward `messages.update` and
//! `connection.update` events, answer lookups from Baileys' message store.
//! Here an in-process `Sidecar` plays it, with the same timing, so the
//! example runs anywhere: `cargo run --example baileys`.
//!
//! whatsmeow (Go) needs no such wait: `client.SendMessage(ctx, jid, msg,
//! whatsmeow.SendRequestExtra{ID: id})` returns after the server's
//! acknowledgement, so its transport says `accepted: AckLevel::Server`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::broadcast;
use wq::{
    AckLevel, BridgeEvent, Capabilities, Client, Content, Enqueue, EnqueueMessage as _, Jid,
    MediaKind, MemoryStore, MessageId, OutboundMessage, PipelineConfig, Presence, QueueConfig,
    SendPipeline, SendReceipt, SessionState, Transport, TransportError, Typing, Worker,
};

/// What the Node side would do with its Baileys socket.
struct Sidecar {
    /// Baileys' message store: the status each id reached.
    statuses: Mutex<HashMap<String, u8>>,
    /// `messages.update` and `connection.update`, as wq's events.
    events: broadcast::Sender<BridgeEvent>,
    /// When each message was written and acknowledged, for the printout.
    timeline: Mutex<Vec<(Instant, String)>>,
}

impl Sidecar {
    /// `sock.sendMessage`: returns once written; the server's
    /// acknowledgement (status 2) comes 40 ms later as an update.
    fn send_message(self: &Arc<Self>, instance: &str, id: &str, to: &Jid) {
        self.statuses.lock().expect("lock").insert(id.to_owned(), 1);
        self.note(format!("written   {id} to {to}"));
        let (this, instance, id) = (self.clone(), instance.to_owned(), id.to_owned());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(40)).await;
            this.statuses.lock().expect("lock").insert(id.clone(), 2);
            this.note(format!("server ack {id}"));
            let _ = this.events.send(BridgeEvent::Receipt {
                instance,
                id,
                ack: ack_level(2),
            });
        });
    }

    fn note(&self, what: String) {
        self.timeline
            .lock()
            .expect("lock")
            .push((Instant::now(), what));
    }
}

/// Baileys' `WAMessageStatus` as wq's acknowledgement level.
fn ack_level(status: u8) -> AckLevel {
    match status {
        0 | 1 => AckLevel::Written,
        2 => AckLevel::Server,
        3 => AckLevel::Delivered,
        4 => AckLevel::Read,
        _ => AckLevel::Played,
    }
}

/// The transport wq runs: every call goes to the sidecar.
struct Baileys {
    sidecar: Arc<Sidecar>,
}

impl Transport for Baileys {
    fn capabilities(&self) -> Capabilities {
        // Baileys sends under the id we choose, and returns once written.
        Capabilities {
            client_ids: true,
            accepted: AckLevel::Written,
        }
    }

    async fn send(
        &self,
        id: &MessageId,
        msg: &OutboundMessage,
    ) -> Result<SendReceipt, TransportError> {
        self.sidecar
            .send_message(&msg.instance, id.as_str(), &msg.to);
        Ok(SendReceipt::new(id.clone(), AckLevel::Written))
    }

    async fn presence(&self, _: &str, to: &Jid, presence: Presence) -> Result<(), TransportError> {
        // `sock.sendPresenceUpdate('composing' | 'recording' | 'paused', jid)`.
        self.sidecar.note(format!("{presence:?} to {to}"));
        Ok(())
    }

    fn session_state(&self, _instance: &str) -> SessionState {
        // Kept from `connection.update` (`open`, `connecting`, `close`, with
        // `DisconnectReason.loggedOut` as LoggedOut) in a real sidecar.
        SessionState::Connected
    }

    async fn lookup(&self, id: &MessageId) -> Result<Option<SendReceipt>, TransportError> {
        let status = self
            .sidecar
            .statuses
            .lock()
            .expect("lock")
            .get(id.as_str())
            .copied();
        Ok(status.map(|s| SendReceipt::new(id.clone(), ack_level(s))))
    }

    fn events(&self) -> Option<broadcast::Receiver<BridgeEvent>> {
        Some(self.sidecar.events.subscribe())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let store = MemoryStore::new();
    let client = Client::new(store.clone());
    client.declare_queue(QueueConfig::new("message")).await?;
    let sidecar = Arc::new(Sidecar {
        statuses: Mutex::default(),
        events: broadcast::channel(256).0,
        timeline: Mutex::default(),
    });
    // A photo, then its caption's follow-up text, to one contact.
    let to = "+55 11 99999-8888";
    let photo = OutboundMessage {
        instance: "inst-1".into(),
        to: Jid::parse(to)?,
        content: Content::Media {
            kind: MediaKind::Image,
            url: "https://example.com/order-42.jpg".into(),
            caption: None,
            filename: None,
        },
        typing_ms: None,
    };
    let text = OutboundMessage::text("inst-1", to, "Here is your order, shipped today.")?;
    for msg in [photo, text] {
        client.enqueue(Enqueue::message("message", &msg)).await?;
    }

    let config = PipelineConfig::default()
        .typing(Typing::Off)
        .ack_wait(Duration::from_secs(10), Duration::from_millis(10));
    let bridge = Arc::new(Baileys {
        sidecar: sidecar.clone(),
    });
    let pipeline = SendPipeline::with_config(bridge, store.clone(), config).watch("message");
    let supervisor = tokio::spawn(pipeline.supervise());
    let worker = Worker::new(store)
        .handle("message", pipeline)
        .start()
        .await?;
    while client.counts("message").await?.completed < 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    worker.shutdown(Duration::from_secs(5)).await;
    supervisor.abort();

    let timeline = sidecar.timeline.lock().expect("lock").clone();
    let start = timeline
        .first()
        .map(|(at, _)| *at)
        .unwrap_or_else(Instant::now);
    for (at, what) in &timeline {
        println!("{:>4} ms  {what}", at.duration_since(start).as_millis());
    }
    // The text is written only after the photo's server acknowledgement.
    let kinds: Vec<&str> = timeline
        .iter()
        .filter_map(|(_, w)| w.split_whitespace().next())
        .filter(|w| *w == "written" || *w == "server")
        .collect();
    if kinds != ["written", "server", "written", "server"] {
        return Err(format!("the text overtook the photo: {kinds:?}").into());
    }
    Ok(())
}
