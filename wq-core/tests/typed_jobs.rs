//! Typed jobs on the memory backend: enqueue without a queue string, the
//! type's default options and per-call overrides, refusals naming their
//! field, and handlers that receive the decoded value.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tower::ServiceBuilder;
use wq_core::{
    Client, Counts, Enqueue, Error, Job, JobContext, JobError, JobId, JobState, QueueConfig,
    RetryPolicy, TypedHandler, TypedJob, ValidationError, Worker,
};
use wq_memory::MemoryStore;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct SendText {
    instance: String,
    to: String,
    text: String,
}

impl SendText {
    fn new(to: &str, text: &str) -> Self {
        Self {
            instance: "inst-1".into(),
            to: to.into(),
            text: text.into(),
        }
    }
}

impl TypedJob for SendText {
    const QUEUE: &'static str = "message";

    fn options(&self, job: Enqueue) -> Enqueue {
        job.group(format!("{}:{}", self.instance, self.to))
            .session(self.instance.as_str())
            .priority(5)
    }

    fn validate(&self) -> Result<(), ValidationError> {
        if self.text.trim().is_empty() {
            return Err(ValidationError::new("text", "is blank"));
        }
        Ok(())
    }
}

/// A payload serde_json cannot write: map keys must be strings.
#[derive(Serialize, Deserialize)]
struct PairKeyed(HashMap<(u8, u8), u8>);

impl TypedJob for PairKeyed {
    const QUEUE: &'static str = "message";
}

async fn client_with(queues: &[&str]) -> (MemoryStore, Client<MemoryStore>) {
    let store = MemoryStore::new();
    let client = Client::new(store.clone());
    for q in queues {
        client
            .declare_queue(QueueConfig::new(*q))
            .await
            .expect("declare");
    }
    (store, client)
}

async fn until_terminal(client: &Client<MemoryStore>, id: JobId) -> Job {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let job = client.get(id).await.expect("get").expect("job exists");
            if job.state.is_terminal() {
                return job;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("job ends within 10 s")
}

#[tokio::test]
async fn typed_enqueue_lands_in_its_queue_with_its_defaults() {
    let (_, client) = client_with(&["message", "other"]).await;
    let one = client
        .enqueue(SendText::new("5511999998888", "Olá!"))
        .await
        .expect("typed enqueue");
    let many = client
        .enqueue_many([
            SendText::new("5511999990001", "a"),
            SendText::new("5511999990002", "b"),
        ])
        .await
        .expect("typed batch");

    for (stored, to) in
        [one]
            .iter()
            .chain(&many)
            .zip(["5511999998888", "5511999990001", "5511999990002"])
    {
        let job = &stored.job;
        assert_eq!(job.queue.as_str(), "message");
        assert_eq!(
            job.group.as_ref().map(|g| g.as_str().to_owned()),
            Some(format!("inst-1:{to}"))
        );
        assert_eq!(job.session.as_ref().map(|s| s.as_str()), Some("inst-1"));
        assert_eq!(job.priority, 5);
        assert_eq!(job.payload.decode::<SendText>().expect("decodes").to, to);
    }
    assert_eq!(
        client.counts("other").await.expect("counts"),
        Counts::default()
    );
}

#[tokio::test]
async fn per_call_options_override_the_defaults() {
    let (_, client) = client_with(&["message"]).await;
    let send = SendText::new("5511999998888", "Olá!");
    let stored = client
        .enqueue(
            Enqueue::of(&send)
                .priority(-1)
                .delay(Duration::from_secs(60))
                .idempotency_key("order-42"),
        )
        .await
        .expect("enqueue")
        .job;
    assert_eq!(stored.queue.as_str(), "message");
    assert_eq!(stored.priority, -1, "the call's priority wins");
    assert_eq!(
        stored.group.as_ref().map(|g| g.as_str()),
        Some("inst-1:5511999998888"),
        "defaults the call left alone stay"
    );
    assert_eq!(
        stored.state,
        JobState::Scheduled,
        "the call's delay applies"
    );
    assert_eq!(stored.idempotency_key.as_deref(), Some("order-42"));
}

#[tokio::test]
async fn typed_values_that_do_not_serialize_or_validate_are_refused_naming_the_field() {
    let (_, client) = client_with(&["message"]).await;
    let unserializable = PairKeyed(HashMap::from([((1, 2), 3)]));
    match client.enqueue(unserializable).await {
        Err(Error::Invalid(e)) => assert_eq!(e.field, "payload"),
        other => panic!("expected a refusal of the payload, got {other:?}"),
    }
    match client.enqueue(SendText::new("5511999998888", "  ")).await {
        Err(Error::Invalid(e)) => assert_eq!(e.field, "text"),
        other => panic!("expected a refusal of the text, got {other:?}"),
    }
    let batch = [
        SendText::new("5511999998888", "fine"),
        SendText::new("5511999998888", ""),
    ];
    match client.enqueue_many(batch).await {
        Err(Error::Invalid(e)) => assert_eq!((e.field, e.index), ("text", Some(1))),
        other => panic!("expected a refusal of job #1, got {other:?}"),
    }
    assert_eq!(
        client.counts("message").await.expect("counts"),
        Counts::default(),
        "nothing is stored"
    );
}

#[tokio::test]
async fn typed_handler_receives_the_decoded_value() {
    let (store, client) = client_with(&["message"]).await;
    let sent = vec![
        SendText::new("5511999990001", "first"),
        SendText::new("5511999990001", "second"),
        SendText::new("5511999990002", "third"),
    ];
    let mut ids = Vec::new();
    for s in &sent {
        ids.push(client.enqueue(s.clone()).await.expect("enqueue").job.id);
    }
    let received = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let seen = received.clone();
    let worker = Worker::new(store)
        .handle_typed::<SendText, _>(move |job: SendText, ctx: JobContext| {
            let seen = seen.clone();
            async move {
                seen.lock().push((ctx.id(), job));
                Ok::<(), JobError>(())
            }
        })
        .start()
        .await
        .expect("start");
    for id in &ids {
        assert_eq!(
            until_terminal(&client, *id).await.state,
            JobState::Completed
        );
    }
    worker.shutdown(Duration::from_secs(5)).await;

    let mut received = received.lock().clone();
    received.sort_by_key(|(id, _)| *id);
    let expected: Vec<_> = ids.into_iter().zip(sent).collect();
    assert_eq!(received, expected);
}

#[tokio::test]
async fn a_bad_payload_under_a_typed_handler_goes_where_the_untyped_path_sends_it() {
    let (store, client) = client_with(&["message", "untyped"]).await;
    let typed = client
        .enqueue(Enqueue::new("message", &42))
        .await
        .expect("enqueue")
        .job
        .id;
    let untyped = client
        .enqueue(Enqueue::new("untyped", &42))
        .await
        .expect("enqueue")
        .job
        .id;
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let worker = Worker::new(store)
        .handle_typed::<SendText, _>(move |_job, _ctx| {
            counted.fetch_add(1, Ordering::SeqCst);
            async { Ok::<(), JobError>(()) }
        })
        .handle("untyped", |ctx: JobContext| async move {
            let _: SendText = ctx.payload()?;
            Ok::<(), JobError>(())
        })
        .start()
        .await
        .expect("start");
    let typed = until_terminal(&client, typed).await;
    let untyped = until_terminal(&client, untyped).await;
    worker.shutdown(Duration::from_secs(5)).await;

    assert_eq!(typed.state, JobState::Dead);
    assert_eq!(
        (typed.state, typed.attempt, &typed.last_error),
        (untyped.state, untyped.attempt, &untyped.last_error),
        "the typed path ends a bad payload as the untyped one does"
    );
    assert_eq!(typed.attempt, 1, "a bad payload is not retried");
    assert_eq!(calls.load(Ordering::SeqCst), 0, "the handler never sees it");
}

#[tokio::test]
async fn typed_handlers_take_tower_layers() {
    let store = MemoryStore::new();
    let client = Client::new(store.clone());
    let quick = RetryPolicy {
        base: Duration::from_millis(10),
        cap: Duration::from_millis(10),
        jitter: false,
        ..RetryPolicy::default()
    };
    client
        .declare_queue(QueueConfig::new("message").retry(quick))
        .await
        .expect("declare");
    let send = SendText::new("5511999998888", "Olá!");
    let id = client.enqueue(send.clone()).await.expect("enqueue").job.id;
    let received = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let seen = received.clone();
    // The first attempt hangs; only the layer's timeout can end it.
    let handler = TypedHandler::new(move |job: SendText, ctx: JobContext| {
        let seen = seen.clone();
        async move {
            if ctx.attempt() == 1 {
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
            seen.lock().push(job);
            Ok::<(), JobError>(())
        }
    });
    let service = ServiceBuilder::new()
        .map_err(JobError::from)
        .timeout(Duration::from_millis(250))
        .service(handler);
    let worker = Worker::new(store)
        .service(SendText::QUEUE, service)
        .start()
        .await
        .expect("start");
    let job = until_terminal(&client, id).await;
    worker.shutdown(Duration::from_secs(5)).await;
    assert_eq!((job.state, job.attempt), (JobState::Completed, 2));
    assert_eq!(*received.lock(), [send]);
}
