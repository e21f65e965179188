//! A worker that died in the middle of a send: its run lapses, and the next
//! run looks the message up before sending it again, on the memory backend.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wq::{
    AckLevel, AttemptOutcome, Capabilities, ClaimRequest, Client, Enqueue, EnqueueMessage, Jid,
    JobState, MemoryStore, MessageId, OutboundMessage, Presence, QueueConfig, SendPipeline,
    SendReceipt, SessionState, Store, Timestamp, Transport, TransportError, Worker,
};

/// A bridge that records its sends; `reached` holds the messages the
/// server has (a send of a worker that died after writing it included).
#[derive(Default)]
struct Recording {
    sent: Mutex<Vec<MessageId>>,
    reached: Mutex<HashSet<MessageId>>,
}

impl Transport for Recording {
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
        self.sent.lock().expect("lock").push(id.clone());
        self.reached.lock().expect("lock").insert(id.clone());
        Ok(SendReceipt::new(id.clone(), AckLevel::Server))
    }

    async fn presence(&self, _: &str, _: &Jid, _: Presence) -> Result<(), TransportError> {
        Ok(())
    }

    fn session_state(&self, _: &str) -> SessionState {
        SessionState::Connected
    }

    async fn lookup(&self, id: &MessageId) -> Result<Option<SendReceipt>, TransportError> {
        let reached = self.reached.lock().expect("lock").contains(id);
        Ok(reached.then(|| SendReceipt::new(id.clone(), AckLevel::Server)))
    }
}

/// Runs one message whose first run lapsed (claimed, never acknowledged,
/// rescued), with the server holding it or not; returns the sends the
/// bridge made afterwards and the job's run outcomes.
async fn after_a_lapsed_run(server_has_it: bool) -> (usize, Vec<AttemptOutcome>) {
    let store = MemoryStore::new();
    let client = Client::new(store.clone());
    client
        .declare_queue(QueueConfig::new("message"))
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
    let bridge = Arc::new(Recording::default());
    if server_has_it {
        bridge
            .reached
            .lock()
            .expect("lock")
            .insert(MessageId::for_job(id));
    }

    // A worker claims it and dies mid-send; its lease lapses.
    let now = Timestamp::now();
    let lease = Duration::from_millis(50);
    let claimed = store
        .claim(&ClaimRequest::new("message", 1, now, now + lease, "dead"))
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1);
    tokio::time::sleep(lease * 2).await;
    store.rescue(Timestamp::now(), 10).await.expect("rescue");

    let worker = Worker::new(store)
        .handle(
            "message",
            SendPipeline::new(bridge.clone(), client.store().clone()),
        )
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
    assert_eq!(job.state, JobState::Completed);
    let sends = bridge.sent.lock().expect("lock").len();
    (sends, job.history.iter().map(|a| a.outcome).collect())
}

#[tokio::test]
async fn a_lapsed_send_is_looked_up_not_resent() {
    let (sends, outcomes) = after_a_lapsed_run(true).await;
    assert_eq!(
        sends, 0,
        "the server had it: found by lookup, not sent again"
    );
    assert_eq!(
        outcomes,
        [AttemptOutcome::Lapsed, AttemptOutcome::Completed]
    );
}

#[tokio::test]
async fn a_lapsed_run_that_never_sent_sends_once() {
    let (sends, _) = after_a_lapsed_run(false).await;
    assert_eq!(sends, 1, "the lookup found nothing: sent once");
}
