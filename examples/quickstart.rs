//! The quickstart: a busy WhatsApp operation on the in-memory backend.
//!
//! Four instances send five messages each to 250 contacts (5,000 messages)
//! through wq's send pipeline and a demo bridge that fails transiently 5%
//! of the time (sometimes after the message went out, losing the reply)
//! and refuses one invalid number for good. Each instance is a session
//! sending one message at a time; each message shows "typing…" first, as
//! a step that holds no worker slot. wq keeps every contact's messages in
//! order, retries with backoff, looks a message up by its stable id before
//! sending it again, and dead-letters what cannot be sent.
//!
//! Run it with `cargo run --release --example quickstart`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::RngExt;
use wq::{
    AckLevel, Capabilities, Client, Content, Enqueue, EnqueueMessage as _, Jid, JobId, MemoryStore,
    MessageId, OutboundMessage, Presence, QueueConfig, QueueName, QueueOptions, RetryPolicy,
    SendPipeline, SendReceipt, SessionKey, SessionLimits, SessionState, Sessions as _, Transport,
    TransportError, Worker,
};

const INSTANCES: usize = 4;
const CONTACTS_PER_INSTANCE: usize = 250;
const MESSAGES_PER_CONTACT: u32 = 5;
/// A number the bridge refuses: its messages end in the dead-letter queue.
const INVALID_NUMBER: &str = "5511000000000";

/// A stand-in for Baileys or whatsmeow: it sends under the id it is given,
/// shows presences, fails now and then, and answers lookups of the ids it
/// sent.
#[derive(Default)]
struct DemoBridge {
    /// Which contact and position each message id is, to check order.
    plan: HashMap<MessageId, (String, u32)>,
    delivered: Mutex<HashSet<MessageId>>,
    last_sent: Mutex<HashMap<String, u32>>,
    /// Instances sending right now, to check one send at a time each.
    sending: Mutex<HashSet<String>>,
    sent: AtomicU64,
    duplicates: AtomicU64,
    found_by_lookup: AtomicU64,
    order_violations: AtomicU64,
    overlapping_sends: AtomicU64,
    typing_shown: AtomicU64,
}

impl Transport for DemoBridge {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            client_ids: true,
            accepted: AckLevel::Server,
        }
    }

    async fn send(
        &self,
        id: &MessageId,
        msg: &OutboundMessage,
    ) -> Result<SendReceipt, TransportError> {
        if msg.to.user() == INVALID_NUMBER {
            return Err(TransportError::Permanent {
                reason: format!("{} is not on WhatsApp", msg.to),
                code: Some(131_026),
            });
        }
        if !self
            .sending
            .lock()
            .expect("bridge lock")
            .insert(msg.instance.clone())
        {
            self.overlapping_sends.fetch_add(1, Ordering::Relaxed);
        }
        let result = self.deliver(id);
        self.sending
            .lock()
            .expect("bridge lock")
            .remove(&msg.instance);
        result
    }

    async fn presence(&self, _: &str, _: &Jid, presence: Presence) -> Result<(), TransportError> {
        if presence == Presence::Composing {
            self.typing_shown.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    fn session_state(&self, _instance: &str) -> SessionState {
        SessionState::Connected
    }

    async fn lookup(&self, id: &MessageId) -> Result<Option<SendReceipt>, TransportError> {
        let sent = self.delivered.lock().expect("bridge lock").contains(id);
        if sent {
            self.found_by_lookup.fetch_add(1, Ordering::Relaxed);
        }
        Ok(sent.then(|| SendReceipt::new(id.clone(), AckLevel::Server)))
    }
}

impl DemoBridge {
    fn deliver(&self, id: &MessageId) -> Result<SendReceipt, TransportError> {
        let roll = rand::rng().random_range(0..100);
        if roll < 3 {
            return Err(TransportError::retry("bridge timed out before sending"));
        }
        let receipt = SendReceipt::new(id.clone(), AckLevel::Server);
        if !self
            .delivered
            .lock()
            .expect("bridge lock")
            .insert(id.clone())
        {
            // The pipeline looks a message up before sending it again: a
            // second send of one id would be a bug.
            self.duplicates.fetch_add(1, Ordering::Relaxed);
            return Ok(receipt);
        }
        if let Some((contact, n)) = self.plan.get(id) {
            let mut last = self.last_sent.lock().expect("bridge lock");
            if last.get(contact).is_some_and(|prev| *prev >= *n) {
                self.order_violations.fetch_add(1, Ordering::Relaxed);
            }
            last.insert(contact.clone(), *n);
        }
        self.sent.fetch_add(1, Ordering::Relaxed);
        if roll < 5 {
            // Sent, but the reply is lost: wq retries, and looks the
            // message up by its id before sending again.
            return Err(TransportError::Retryable {
                reason: "reply lost".into(),
                after: None,
                maybe_sent: true,
            });
        }
        Ok(receipt)
    }
}

fn contact_number(instance: usize, contact: usize) -> String {
    if instance == 0 && contact == 0 {
        INVALID_NUMBER.to_owned()
    } else {
        format!("55119{:02}{:06}", instance, contact)
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let store = MemoryStore::new();
    let client = Client::new(store.clone());
    let retry = RetryPolicy {
        max_attempts: 5,
        base: Duration::from_millis(5),
        cap: Duration::from_millis(100),
        ..RetryPolicy::default()
    };
    client
        .declare_queue(QueueConfig::new("message").retry(retry))
        .await?;
    // One send at a time per sending number, across every worker.
    for instance in 0..INSTANCES {
        let session = SessionKey::new(format!("inst-{instance}"));
        let one = SessionLimits::new().max_running(1);
        store
            .set_session_limits(&QueueName::new("message"), &session, &one)
            .await?;
    }

    // Every job gets its id up front, so the bridge knows each message's
    // place in its contact's conversation.
    let mut bridge = DemoBridge::default();
    let mut jobs = Vec::new();
    for n in 0..MESSAGES_PER_CONTACT {
        for instance in 0..INSTANCES {
            for contact in 0..CONTACTS_PER_INSTANCE {
                let number = contact_number(instance, contact);
                let msg = OutboundMessage {
                    instance: format!("inst-{instance}"),
                    to: Jid::parse(&number)?,
                    content: Content::Text {
                        body: format!(
                            "Mensagem {} de {MESSAGES_PER_CONTACT} sobre seu pedido",
                            n + 1
                        ),
                    },
                    typing_ms: Some(2),
                };
                let id = JobId::new();
                bridge
                    .plan
                    .insert(MessageId::for_job(id), (msg.contact_group().to_string(), n));
                jobs.push(Enqueue::message("message", &msg).id(id));
            }
        }
    }
    let total = jobs.len() as u64;
    let bridge = Arc::new(bridge);

    let started = Instant::now();
    for batch in jobs.chunks(500) {
        client.enqueue_many(batch.iter().cloned()).await?;
    }
    let pipeline = SendPipeline::new(bridge.clone(), store.clone()).watch("message");
    let supervisor = tokio::spawn(pipeline.supervise());
    let worker = Worker::new(store)
        .handle_with("message", pipeline, QueueOptions::default().concurrency(64))
        .start()
        .await?;

    loop {
        let counts = client.counts("message").await?;
        let stats = worker.stats();
        eprint!(
            "\r  progress: sent {:>5}/{total} · retried {:>4} · dead {:>2} ",
            bridge.sent.load(Ordering::Relaxed),
            stats.retried,
            counts.dead
        );
        if counts.pending() == 0 {
            eprintln!();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let elapsed = started.elapsed();
    let stats = worker.stats();
    worker.shutdown(Duration::from_secs(10)).await;
    supervisor.abort();

    let counts = client.counts("message").await?;
    let sent = bridge.sent.load(Ordering::Relaxed);
    let violations = bridge.order_violations.load(Ordering::Relaxed);
    println!(
        "wq quickstart: {total} messages from {INSTANCES} instances to {} contacts (memory backend)",
        INSTANCES * CONTACTS_PER_INSTANCE
    );
    println!("sent:               {sent}");
    println!(
        "retried:            {} (transient bridge failures, backed off)",
        stats.retried
    );
    println!(
        "found, not resent:  {} (reply lost after sending; looked up by message id)",
        bridge.found_by_lookup.load(Ordering::Relaxed)
    );
    println!(
        "dead:               {} (number {INVALID_NUMBER} refused for good)",
        counts.dead
    );
    println!(
        "typing shown:       {}",
        bridge.typing_shown.load(Ordering::Relaxed)
    );
    println!("elapsed:            {:.2} s", elapsed.as_secs_f64());
    let duplicates = bridge.duplicates.load(Ordering::Relaxed);
    let overlapping = bridge.overlapping_sends.load(Ordering::Relaxed);
    println!("sent twice:         {duplicates}");
    println!("overlapping sends:  {overlapping} (one at a time per instance)");
    println!("order violations:   {violations}");

    if violations + duplicates + overlapping > 0
        || sent + counts.dead != total
        || counts.completed != sent
    {
        return Err(format!("inconsistent run: {counts:?}, sent {sent}").into());
    }
    Ok(())
}
