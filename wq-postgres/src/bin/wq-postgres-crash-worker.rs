//! A worker process for wq-postgres's crash tests: runs the queue `crash` of
//! a schema and appends one line per handler start and end to a ledger file,
//! so that a test can kill it at any moment and still see what it did.
//!
//! Usage: `wq-postgres-crash-worker <url> <schema> <ledger-file> <worker-name>`

use std::fs::OpenOptions;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use wq_core::{JobContext, JobError, QueueOptions, Worker};
use wq_postgres::PgStore;

#[derive(Deserialize)]
struct Step {
    g: u32,
    n: u32,
}

fn micros() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, schema, ledger, name] = args.as_slice() else {
        return Err(
            "usage: wq-postgres-crash-worker <url> <schema> <ledger-file> <worker-name>".into(),
        );
    };
    // One unbuffered write per line: what a killed process wrote survives it.
    let file = OpenOptions::new().create(true).append(true).open(ledger)?;
    let file = Arc::new(Mutex::new(file));
    let store = PgStore::builder(url, schema)
        .migrate(false)
        .max_connections(4)
        .connect()
        .await?;
    let handler = {
        let name = name.clone();
        move |ctx: JobContext| {
            let (file, name) = (file.clone(), name.clone());
            async move {
                let step: Step = ctx.payload()?;
                let line = |event: &str| {
                    format!(
                        "{} {} {} {} {} {} {name}\n",
                        micros(),
                        event,
                        ctx.id(),
                        ctx.attempt(),
                        step.g,
                        step.n
                    )
                };
                let write = |text: String| {
                    file.lock()
                        .map_err(|_| JobError::permanent("ledger lock poisoned"))?
                        .write_all(text.as_bytes())
                        .map_err(|e| JobError::retry(format!("ledger: {e}")))
                };
                write(line("start"))?;
                // Long enough that a kill nearly always finds handlers running.
                let pause = 5 + rand::random::<u64>() % 11;
                tokio::time::sleep(Duration::from_millis(pause)).await;
                write(line("done"))?;
                Ok(())
            }
        }
    };
    // Runs until killed: that is the point.
    let _worker = Worker::new(store)
        .id(name.as_str())
        .poll_interval(Duration::from_secs(1))
        .handle_with("crash", handler, QueueOptions::default().concurrency(10))
        .start()
        .await?;
    std::future::pending::<()>().await;
    Ok(())
}
