//! WhatsApp messages through Redis: three instances send three messages
//! to each of 100 contacts; two workers (as two processes would) share the
//! queue, each contact's messages arrive in order, and a number that does
//! not exist ends in the dead-letter queue.
//!
//! Needs a Redis 7 server: `WQ_REDIS_URL`, else `redis://127.0.0.1:6379`.
//! Everything lives under a random key prefix, deleted at the end.
//!
//! Run it with `cargo run --release -p wq --features redis --example redis`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wq::{
    Client, Content, Enqueue, EnqueueMessage as _, JobContext, JobError, OutboundMessage,
    QueueConfig, RedisStore, Worker,
};

const INSTANCES: usize = 3;
const CONTACTS: usize = 100;
const MESSAGES: usize = 3;
/// A number the handler refuses for good.
const INVALID: &str = "5511000000000";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("WQ_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let prefix = format!("wq-example-{:08x}", rand::random::<u32>());
    let store = RedisStore::connect(&url, &prefix).await?;
    let result = run(&store).await;
    store.clear().await?;
    result
}

async fn run(store: &RedisStore) -> Result<(), Box<dyn std::error::Error>> {
    let client = Client::new(store.clone());
    client
        .declare_queue(QueueConfig::new("message").max_attempts(3))
        .await?;
    let mut batch = Vec::new();
    for i in 0..INSTANCES {
        for c in 0..CONTACTS {
            let to = if c == 0 {
                INVALID.to_owned()
            } else {
                format!("55119{c:08}")
            };
            for n in 0..MESSAGES {
                let text = format!("message {n} from inst-{i}");
                batch.push(Enqueue::message(
                    "message",
                    &OutboundMessage::text(format!("inst-{i}"), &to, &text)?,
                ));
            }
        }
    }
    let total = batch.len() as u64;
    let started = Instant::now();
    client.enqueue_many(batch).await?;

    // Per contact, the message numbers in the order handlers saw them.
    let seen: Arc<Mutex<HashMap<String, Vec<usize>>>> = Arc::default();
    let handler = |seen: Arc<Mutex<HashMap<String, Vec<usize>>>>| {
        move |job: JobContext| {
            let seen = seen.clone();
            async move {
                let msg: OutboundMessage = job.payload()?;
                if msg.to.user() == INVALID {
                    return Err(JobError::permanent(format!(
                        "{} is not on WhatsApp",
                        msg.to
                    )));
                }
                let Content::Text { body } = &msg.content else {
                    return Err(JobError::permanent("only text here"));
                };
                // "message {n} from ...": the position among the contact's messages.
                let n = body
                    .split(' ')
                    .nth(1)
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
                let contact = format!("{}:{}", msg.instance, msg.to);
                seen.lock()
                    .map_err(|_| JobError::permanent("poisoned"))?
                    .entry(contact)
                    .or_default()
                    .push(n);
                Ok(())
            }
        }
    };
    let a = Worker::new(store.clone())
        .handle("message", handler(seen.clone()))
        .start()
        .await?;
    let b = Worker::new(store.clone())
        .handle("message", handler(seen.clone()))
        .start()
        .await?;
    loop {
        let c = client.counts("message").await?;
        if c.completed + c.dead == total {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    a.shutdown(Duration::from_secs(5)).await;
    b.shutdown(Duration::from_secs(5)).await;

    let in_order = seen.lock().map_or(0, |s| {
        s.values()
            .filter(|v| v.windows(2).all(|w| w[0] < w[1]))
            .count()
    });
    let contacts = seen.lock().map_or(0, |s| s.len());
    let c = client.counts("message").await?;
    println!(
        "{total} messages in {elapsed:.2?}: {} sent, {} dead-lettered",
        c.completed, c.dead
    );
    println!("{in_order} of {contacts} contacts received their messages in order");
    for job in client.dead("message", 3).await? {
        println!("dead: {} ({})", job.id, job.last_error.unwrap_or_default());
    }
    Ok(())
}
