//! `SendPipeline` on the memory backend over `HttpBridge`, end to end
//! against the fake bridge.
#![cfg(feature = "http")]

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::broadcast;
use wq::{
    Client, Enqueue, EnqueueMessage, MemoryStore, OutboundMessage, PauseReason, PipelineConfig,
    PipelineEvent, Presence, QueueConfig, RetryPolicy, SendPipeline, Worker,
};
use wq_testkit::bridge::{FakeBridge, FakeConfig, Fault, Request, SendRecord, Target};
use wq_whatsapp::http::{HttpBridge, HttpBridgeConfig, Paths};

type Error = Box<dyn std::error::Error>;

const CONTACTS: [&str; 3] = ["5511900000001", "5511900000002", "5511900000003"];
const PER_CONTACT: usize = 5;

async fn transport(bridge: &FakeBridge, timeout: Duration) -> Result<Arc<HttpBridge>, Error> {
    let t = HttpBridgeConfig::new(bridge.url())
        .paths(Paths::gateway())
        .client_id_field("id")
        .status_every(Duration::from_millis(20))
        .events_wait(Duration::from_millis(500))
        .timeout(timeout)
        .instance("shop")
        .start()
        .await?;
    Ok(Arc::new(t))
}

/// A queue whose waits and retries are short enough for a test.
async fn queue(store: &MemoryStore) -> Result<Client<MemoryStore>, Error> {
    let client = Client::new(store.clone());
    let retry = RetryPolicy {
        base: Duration::from_millis(50),
        cap: Duration::from_millis(200),
        disconnected_delay: Duration::from_millis(50),
        ..RetryPolicy::default()
    };
    let config = QueueConfig::new("message").retry(retry).max_attempts(5);
    client.declare_queue(config).await?;
    Ok(client)
}

async fn until(what: &str, within: Duration, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn completed(client: &Client<MemoryStore>) -> u64 {
    client.counts("message").await.map_or(0, |c| c.completed)
}

/// The next pipeline event about the session, within 10 s.
async fn session_event(rx: &mut broadcast::Receiver<PipelineEvent>) -> PipelineEvent {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("the pipeline acts on the session")
        .expect("pipeline events flow")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_sends_through_a_session_drop() -> Result<(), Error> {
    let bridge = FakeBridge::start(FakeConfig::default()).await?;
    let store = MemoryStore::new();
    let client = queue(&store).await?;
    for n in 0..PER_CONTACT {
        for to in CONTACTS {
            let msg = OutboundMessage::text("shop", to, format!("{to} #{n}"))?
                .with_typing(Duration::from_millis(50));
            client.enqueue(Enqueue::message("message", &msg)).await?;
        }
    }
    let config = PipelineConfig::default().resume_poll(Duration::from_millis(50));
    let transport = transport(&bridge, Duration::from_secs(2)).await?;
    let pipeline = SendPipeline::with_config(transport, store.clone(), config);
    let mut events = pipeline.subscribe();
    let supervisor = tokio::spawn(pipeline.supervise());
    let worker = Worker::new(store)
        .handle("message", pipeline)
        .start()
        .await?;

    let sent = || bridge.sends().iter().filter(|s| s.sent()).count();
    until("six sends", Duration::from_secs(10), async || sent() >= 6).await;
    bridge.drop_session("shop");
    let paused = session_event(&mut events).await;
    assert!(
        matches!(&paused, PipelineEvent::SessionPaused { instance, reason: PauseReason::Disconnected, .. } if instance == "shop"),
        "{paused:?}"
    );
    let sent_while_down = sent();
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(
        sent(),
        sent_while_down,
        "nothing goes out while the link is down"
    );
    bridge.restore_session("shop");
    let resumed = session_event(&mut events).await;
    assert!(
        matches!(&resumed, PipelineEvent::SessionResumed { instance, .. } if instance == "shop"),
        "{resumed:?}"
    );
    until("all sent", Duration::from_secs(20), async || {
        completed(&client).await == 15
    })
    .await;
    worker.shutdown(Duration::from_secs(5)).await;
    supervisor.abort();

    let requests = bridge.requests();
    let sends: Vec<&SendRecord> = bridge_sends(&requests).filter(|s| s.sent()).collect();
    assert_eq!(
        sends.len(),
        CONTACTS.len() * PER_CONTACT,
        "every message once"
    );
    let ids: HashSet<_> = sends.iter().map(|s| s.id.clone()).collect();
    assert_eq!(ids.len(), sends.len(), "no id sent twice");
    assert!(
        sends.iter().all(|s| s.id == s.client_id),
        "sent under wq's ids"
    );
    for to in CONTACTS {
        check_contact(&requests, to);
    }
    Ok(())
}

fn bridge_sends(requests: &[Request]) -> impl Iterator<Item = &SendRecord> {
    requests.iter().filter_map(|r| match r {
        Request::Send(s) => Some(s),
        Request::Presence(_) => None,
    })
}

/// In order, and typed: each send that went out follows a composing shown
/// since the contact's previous send, and the next presence is paused.
fn check_contact(requests: &[Request], to: &str) {
    let mine: Vec<&Request> = requests
        .iter()
        .filter(|r| match r {
            Request::Send(s) => s.to == to,
            Request::Presence(p) => p.to == to,
        })
        .collect();
    let mut texts = Vec::new();
    let mut composed = false;
    let mut awaiting_pause = false;
    for r in mine {
        match r {
            Request::Presence(p) if awaiting_pause => {
                assert_eq!(p.presence, Presence::Paused, "{to}: paused after a send");
                awaiting_pause = false;
            }
            Request::Presence(p) => {
                assert_ne!(p.presence, Presence::Paused, "{to}: paused before a send");
                composed |= p.presence == Presence::Composing && p.status == 200;
            }
            Request::Send(s) if s.sent() => {
                assert!(composed, "{to}: typing before {:?}", s.body["text"]);
                assert!(!awaiting_pause, "{to}: two sends without a pause");
                texts.push(s.body["text"].as_str().unwrap_or_default().to_owned());
                composed = false;
                awaiting_pause = true;
            }
            Request::Send(_) => {}
        }
    }
    let want: Vec<String> = (0..PER_CONTACT).map(|n| format!("{to} #{n}")).collect();
    assert_eq!(texts, want, "{to}: in order");
}

/// Runs one message through the pipeline with the next send's reply
/// lost, and with the session dropped for a while once it went out if
/// `drop`; returns the sends that went out.
async fn lose_one_reply(typing: Duration, drop: bool) -> Result<Vec<SendRecord>, Error> {
    let bridge = FakeBridge::start(FakeConfig::default()).await?;
    bridge.fail_next(Target::instance("shop"), 1, Fault::LoseReply);
    let store = MemoryStore::new();
    let client = queue(&store).await?;
    let msg = OutboundMessage::text("shop", CONTACTS[0], "once")?.with_typing(typing);
    client.enqueue(Enqueue::message("message", &msg)).await?;
    let transport = transport(&bridge, Duration::from_millis(200)).await?;
    let config = PipelineConfig::default().resume_poll(Duration::from_millis(50));
    let pipeline = SendPipeline::with_config(transport, store.clone(), config);
    let supervisor = tokio::spawn(pipeline.supervise());
    let worker = Worker::new(store)
        .handle("message", pipeline)
        .start()
        .await?;
    if drop {
        until("the send", Duration::from_secs(10), async || {
            !bridge.sends().is_empty()
        })
        .await;
        bridge.drop_session("shop");
        // Past the client's timeout, the retry's backoff and a look at
        // the session.
        tokio::time::sleep(Duration::from_millis(600)).await;
        bridge.restore_session("shop");
    }
    until("the message", Duration::from_secs(10), async || {
        completed(&client).await == 1
    })
    .await;
    supervisor.abort();
    worker.shutdown(Duration::from_secs(5)).await;
    Ok(bridge
        .sends()
        .into_iter()
        .filter(SendRecord::sent)
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_reply_is_looked_up_not_sent_again() -> Result<(), Error> {
    let sent = lose_one_reply(Duration::ZERO, false).await?;
    assert_eq!(sent.len(), 1, "{sent:#?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_reply_after_typing_is_not_sent_again() -> Result<(), Error> {
    let sent = lose_one_reply(Duration::from_millis(50), false).await?;
    assert_eq!(sent.len(), 1, "{sent:#?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_reply_then_a_drop_is_not_sent_again() -> Result<(), Error> {
    let sent = lose_one_reply(Duration::ZERO, true).await?;
    assert_eq!(sent.len(), 1, "{sent:#?}");
    Ok(())
}
