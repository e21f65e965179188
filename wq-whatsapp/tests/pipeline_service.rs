//! `SendPipeline` as a shared, cloneable tower service, on the memory
//! backend.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tower::ServiceBuilder;
use wq::{
    AckLevel, AttemptOutcome, Capabilities, Client, Enqueue, EnqueueMessage, Jid, JobError,
    JobState, MemoryStore, MessageId, OutboundMessage, Presence, QueueConfig, RetryPolicy,
    SendPipeline, SendReceipt, SessionState, Transport, TransportError, Worker,
};

/// A bridge that is not `Clone`, whose first send hangs (a stuck socket)
/// and whose later sends are recorded.
#[derive(Default)]
struct StuckOnce {
    attempts: AtomicUsize,
    sent: Mutex<Vec<MessageId>>,
}

impl Transport for StuckOnce {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            client_ids: true,
            accepted: AckLevel::Server,
        }
    }

    async fn send(
        &self,
        id: &MessageId,
        _msg: &OutboundMessage,
    ) -> Result<SendReceipt, TransportError> {
        if self.attempts.fetch_add(1, Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_secs(60)).await;
        }
        self.sent.lock().expect("lock").push(id.clone());
        Ok(SendReceipt::new(id.clone(), AckLevel::Server))
    }

    async fn presence(&self, _: &str, _: &Jid, _: Presence) -> Result<(), TransportError> {
        Ok(())
    }

    fn session_state(&self, _: &str) -> SessionState {
        SessionState::Connected
    }
}

#[test]
fn pipelines_clone_without_a_clone_transport() {
    let bridge = Arc::new(StuckOnce::default());
    let handler = SendPipeline::new(bridge.clone(), MemoryStore::new());
    let copy = handler.clone();
    // Clones share one pipeline, which holds the bridge once.
    assert_eq!(
        Arc::strong_count(&bridge),
        2,
        "both pipelines share the one bridge"
    );
    drop((handler, copy));
    assert_eq!(Arc::strong_count(&bridge), 1);
}

#[tokio::test]
async fn the_pipeline_runs_under_a_tower_timeout() {
    let store = MemoryStore::new();
    let client = Client::new(store.clone());
    client
        .declare_queue(QueueConfig::new("message").retry(RetryPolicy {
            base: Duration::from_millis(10),
            cap: Duration::from_millis(10),
            jitter: false,
            ..RetryPolicy::default()
        }))
        .await
        .expect("declare");
    let msg = OutboundMessage::text("inst-1", "+55 11 99999-8888", "Olá!")
        .expect("valid")
        .with_typing(Duration::ZERO);
    let id = client
        .enqueue(Enqueue::message("message", &msg))
        .await
        .expect("enqueue")
        .job
        .id;

    let bridge = Arc::new(StuckOnce::default());
    let sender = ServiceBuilder::new()
        .map_err(JobError::from)
        .timeout(Duration::from_millis(250))
        .service(SendPipeline::new(bridge.clone(), store.clone()));
    let worker = Worker::new(store)
        .service("message", sender)
        .start()
        .await
        .expect("start");
    let job = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let job = client.get(id).await.expect("get").expect("exists");
            if job.state.is_terminal() {
                return job;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the job ends within 10 s");
    worker.shutdown(Duration::from_secs(5)).await;

    // The queue's own timeout is 5 minutes: the layer cut the stuck send.
    assert_eq!((job.state, job.attempt), (JobState::Completed, 2));
    assert_eq!(bridge.attempts.load(Ordering::SeqCst), 2);
    assert_eq!(*bridge.sent.lock().expect("lock"), [MessageId::for_job(id)]);
    // The receipt is kept with the job; the timed-out run is in its history.
    let receipt: SendReceipt = job.output.expect("an output").decode().expect("a receipt");
    assert_eq!(receipt.message_id, MessageId::for_job(id));
    let outcomes: Vec<_> = job.history.iter().map(|a| a.outcome).collect();
    assert_eq!(
        outcomes,
        [AttemptOutcome::Retried, AttemptOutcome::Completed]
    );
}
