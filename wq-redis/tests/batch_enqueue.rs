//! A batch over several queues is one script call: refused or stored
//! whole, with each queue's results, order and wake-ups as if it had been
//! sent alone. The conformance suite's `batch_enqueue_is_atomic` cuts a
//! batch off between calls; these tests make the call itself fail.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use futures_util::StreamExt as _;
use redis::AsyncCommands as _;
use redis::aio::MultiplexedConnection;
use wq_core::{
    Client, Enqueue, GroupKey, JobId, JobState, NewJob, Payload, QueueConfig, QueueName, RunAt,
    Store, StoreError, Timestamp,
};
use wq_redis::RedisStore;

const QUEUES: [&str; 3] = ["first", "second", "third"];

/// A store with the three queues declared, a client and a raw connection.
struct Fixture {
    store: RedisStore,
    client: Client<RedisStore>,
    raw: MultiplexedConnection,
}

impl Fixture {
    async fn new(what: &str) -> Result<Self, String> {
        let store = common::store(what).await?;
        let raw = common::raw().await?;
        let client = Client::new(store.clone());
        for q in QUEUES {
            client
                .declare_queue(QueueConfig::new(q))
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(Self { store, client, raw })
    }

    /// A key of `queue`, e.g. `idem`.
    fn key(&self, queue: &str, name: &str) -> String {
        format!("{{{}:{queue}}}:{name}", self.store.prefix())
    }

    async fn stored(&self) -> Result<Vec<u64>, String> {
        let mut out = Vec::new();
        for q in QUEUES {
            out.push(
                self.client
                    .counts(q)
                    .await
                    .map_err(|e| e.to_string())?
                    .total(),
            );
        }
        Ok(out)
    }
}

async fn run<F>(what: &str, test: impl FnOnce(Fixture) -> F) -> Result<(), String>
where
    F: Future<Output = Result<(), String>>,
{
    let fixture = Fixture::new(what).await?;
    let store = fixture.store.clone();
    let result = test(fixture).await;
    let _ = store.clear().await;
    store.close();
    result
}

fn job(queue: &str, group: Option<&str>, key: Option<&str>) -> NewJob {
    NewJob {
        id: JobId::new(),
        queue: QueueName::from(queue),
        tenant: None,
        group: group.map(GroupKey::from),
        session: None,
        priority: 0,
        run_at: RunAt::At(Timestamp::now()),
        max_attempts: 3,
        idempotency_key: key.map(Into::into),
        payload: Payload::from_trusted("1"),
    }
}

/// A later queue whose keys cannot be read (its idempotency index is a
/// string) fails the batch before the first queue's jobs are written:
/// Redis does not undo a script that stops half way, so every queue is
/// read before any is written.
#[tokio::test]
async fn a_later_queue_that_fails_stores_nothing() -> Result<(), String> {
    run("batch-fail", |mut f| async move {
        let idem = f.key("third", "idem");
        let () = f
            .raw
            .set(&idem, "not a hash")
            .await
            .map_err(|e| e.to_string())?;
        let batch = vec![
            job("first", Some("g"), None),
            job("second", None, None),
            job("third", None, Some("wamid.1")),
            job("first", None, None),
        ];
        let result = f.store.enqueue(batch, Timestamp::now()).await;
        if result.is_ok() {
            return Err(format!(
                "a batch over a broken queue was stored: {result:?}"
            ));
        }
        let stored = f.stored().await?;
        if stored != [0, 0, 0] {
            return Err(format!(
                "jobs stored per queue after the failure: {stored:?}"
            ));
        }
        let line: u64 = f
            .raw
            .llen(f.key("first", "g:g"))
            .await
            .map_err(|e| e.to_string())?;
        if line != 0 {
            return Err(format!("the first queue's group line holds {line} jobs"));
        }
        Ok(())
    })
    .await
}

/// An undeclared queue anywhere in the batch refuses it whole, naming that
/// queue, and nothing of the declared ones is stored.
#[tokio::test]
async fn an_undeclared_queue_is_named_and_nothing_stored() -> Result<(), String> {
    run("batch-unknown", |f| async move {
        let batches = [
            vec![job("nope", None, None), job("first", None, None)],
            vec![job("first", None, None), job("nope", None, None)],
            vec![
                job("first", None, None),
                job("second", Some("g"), None),
                job("third", None, None),
                job("nope", None, None),
                job("first", None, None),
            ],
        ];
        for batch in batches {
            let result = f.store.enqueue(batch, Timestamp::now()).await;
            match &result {
                Err(StoreError::UnknownQueue(q)) if q.as_str() == "nope" => {}
                other => return Err(format!("a batch naming `nope`: {other:?}")),
            }
        }
        let stored = f.stored().await?;
        if stored != [0, 0, 0] {
            return Err(format!("jobs stored per queue after refusals: {stored:?}"));
        }
        Ok(())
    })
    .await
}

/// Jobs of interleaved queues come back in input order, each with its own
/// queue's sequence and idempotency keys, as separate batches would store
/// them; every queue that got work is woken once.
#[tokio::test]
async fn interleaved_queues_keep_order_keys_and_wakeups() -> Result<(), String> {
    run("batch-mixed", |f| async move {
        let known = f
            .client
            .enqueue(Enqueue::new("second", &0).idempotency_key("k"))
            .await
            .map_err(|e| e.to_string())?;
        let client = redis::Client::open(common::url()).map_err(|e| e.to_string())?;
        let mut pubsub = client.get_async_pubsub().await.map_err(|e| e.to_string())?;
        pubsub
            .psubscribe(format!("{{{}:*}}:wake", f.store.prefix()))
            .await
            .map_err(|e| e.to_string())?;
        let batch = vec![
            job("first", Some("g"), None),
            job("second", Some("g"), None),
            job("first", Some("g"), None),
            job("second", None, Some("k")),
            job("first", None, Some("k")),
            job("second", Some("g"), None),
        ];
        let ids: Vec<JobId> = batch.iter().map(|j| j.id).collect();
        let out = f
            .store
            .enqueue(batch, Timestamp::now())
            .await
            .map_err(|e| e.to_string())?;

        let queues: Vec<&str> = out.iter().map(|e| e.job.queue.as_str()).collect();
        if queues != ["first", "second", "first", "second", "first", "second"] {
            return Err(format!("queues of the results: {queues:?}"));
        }
        let created: Vec<bool> = out.iter().map(|e| e.created).collect();
        if created != [true, true, true, false, true, true] {
            return Err(format!("created: {created:?}"));
        }
        if out[3].job.id != known.job.id {
            return Err("a known key of the second queue returns its job".into());
        }
        for k in [0, 1, 2, 4, 5] {
            if out[k].job.id != ids[k] {
                return Err(format!("result {k} is job {}", out[k].job.id));
            }
        }
        if !(out[0].job.seq < out[2].job.seq && out[1].job.seq < out[5].job.seq) {
            return Err("sequence follows input order within each queue".into());
        }
        let states: Vec<JobState> = [0, 2, 1, 5].iter().map(|&k| out[k].job.state).collect();
        if states != [JobState::Available; 4] {
            return Err(format!("states of the group's jobs: {states:?}"));
        }
        for e in &out {
            let read = f.store.get(e.job.id).await.map_err(|e| e.to_string())?;
            if read.as_ref() != Some(&e.job) {
                return Err(format!("a read of {} differs: {read:?}", e.job.id));
            }
        }

        let mut woken = BTreeSet::new();
        let mut messages = pubsub.on_message();
        while woken.len() < 2 {
            match tokio::time::timeout(Duration::from_secs(2), messages.next()).await {
                Ok(Some(m)) => {
                    woken.insert(m.get_channel_name().to_owned());
                }
                _ => break,
            }
        }
        let want: BTreeSet<String> = ["first", "second"]
            .iter()
            .map(|q| f.key(q, "wake"))
            .collect();
        if woken != want {
            return Err(format!("wake-up channels: {woken:?}, want {want:?}"));
        }
        Ok(())
    })
    .await
}
