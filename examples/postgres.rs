//! WhatsApp messages through Postgres: two instances send four messages
//! each to 200 contacts, spaced per contact by time chaining; two workers
//! (as two processes would) share the queue, and every contact's messages
//! arrive in order.
//!
//! Needs a Postgres server: `WQ_POSTGRES_URL`, else
//! `postgres://postgres@127.0.0.1:5432/postgres`. Everything lives in a
//! fresh schema, dropped at the end.
//!
//! Run it with `cargo run --release -p wq --features postgres --example postgres`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wq::{
    Client, Enqueue, EnqueueMessage as _, JobContext, JobError, OutboundMessage, PgStore,
    QueueConfig, Worker,
};

const INSTANCES: usize = 2;
const CONTACTS: usize = 200;
const MESSAGES: usize = 4;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("WQ_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let schema = format!("wq_example_{:08x}", rand::random::<u32>());
    let store = PgStore::connect(&url, &schema).await?;
    let result = run(&store).await;
    store.drop_schema().await?;
    result
}

async fn run(store: &PgStore) -> Result<(), Box<dyn std::error::Error>> {
    let client = Client::new(store.clone());
    client.declare_queue(QueueConfig::new("message")).await?;

    // Messages to one contact leave 20-40 ms apart (a real bot would use
    // seconds), in order, while contacts run in parallel.
    let mut jobs = Vec::new();
    for n in 0..MESSAGES {
        for i in 0..INSTANCES {
            for c in 0..CONTACTS {
                let msg = OutboundMessage::text(
                    format!("inst-{i}"),
                    &format!("55119{i:02}{c:06}"),
                    format!("Mensagem {} de {MESSAGES}", n + 1),
                )?;
                jobs.push(
                    Enqueue::message("message", &msg)
                        .chained(Duration::from_millis(20), Duration::from_millis(20)),
                );
            }
        }
    }
    let total = jobs.len();
    let started = Instant::now();
    for batch in jobs.chunks(400) {
        client.enqueue_many(batch.to_vec()).await?;
    }

    // What each contact received, in arrival order.
    let received: Arc<Mutex<HashMap<String, Vec<String>>>> = Arc::default();
    let handler = {
        let received = received.clone();
        move |job: JobContext| {
            let received = received.clone();
            async move {
                let msg: OutboundMessage = job.payload()?;
                let contact = msg.contact_group().to_string();
                let wq::Content::Text { body } = msg.content else {
                    return Err(JobError::permanent("only text here"));
                };
                let mut r = received.lock().map_err(|_| JobError::retry("poisoned"))?;
                r.entry(contact).or_default().push(body);
                Ok(())
            }
        }
    };
    let w1 = Worker::new(store.clone())
        .handle("message", handler.clone())
        .start()
        .await?;
    let w2 = Worker::new(store.clone())
        .handle("message", handler)
        .start()
        .await?;
    while client.counts("message").await?.completed < total as u64 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = started.elapsed();
    w1.shutdown(Duration::from_secs(5)).await;
    w2.shutdown(Duration::from_secs(5)).await;

    let received = received.lock().map_err(|_| "poisoned")?.clone();
    let in_order = received.values().all(|bodies| {
        bodies
            .iter()
            .enumerate()
            .all(|(k, b)| *b == format!("Mensagem {} de {MESSAGES}", k + 1))
    });
    println!(
        "postgres example: {total} messages to {} contacts in {:.2} s",
        received.len(),
        elapsed.as_secs_f64()
    );
    println!("every contact's messages in order: {in_order}");
    if in_order {
        Ok(())
    } else {
        Err("messages out of order".into())
    }
}
