//! The WhatsApp send pipeline on each backend: typing before sends, order
//! per contact and one send at a time per session, sessions paused while
//! their link is down and resumed after, a lookup instead of a resend after
//! a lost reply, a breaker that stops only the banned session, and sends
//! the bridge only wrote waiting for the server's acknowledgement.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::broadcast;
use wq_core::{
    Admission, Allowance, AttemptOutcome, Backend, Client, Enqueue, JobId, JobState, PauseChange,
    QueueConfig, QueueName, RetryPolicy, SessionKey, SessionLimits, Sessions as _, Worker,
    WorkerHandle,
};
use wq_whatsapp::{
    AckLevel, BridgeEvent, Capabilities, EnqueueMessage as _, Jid, MessageId, OutboundMessage,
    PauseReason, PipelineConfig, PipelineEvent, Presence, SendPipeline, SendReceipt, SessionState,
    Transport, TransportError,
};

use crate::harness::{
    Failure, PATIENCE, TestBackend, TestResult, declare, stop, wait_until, with_backend,
};
use crate::{ensure, ensure_eq};

const QUEUE: &str = "wa";

/// What the scripted bridge did, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Did {
    Presence(Presence),
    Send(MessageId),
    ServerAck(MessageId),
}

/// A failure the bridge gives its next send of an instance.
#[derive(Debug)]
enum Fault {
    /// Sends, then answers as if the reply was lost.
    LoseReply,
    /// Fails without sending.
    Fail(TransportError),
}

/// What the bridge did: when, to which contact (its user part), what.
type Log = Arc<Mutex<Vec<(Instant, String, Did)>>>;

/// An in-process bridge the test scripts: per-instance link states and
/// faults, a log of what it did, and receipts on its event stream.
struct ScriptedBridge {
    accepted: AckLevel,
    log: Log,
    states: Mutex<HashMap<String, SessionState>>,
    faults: Mutex<HashMap<String, VecDeque<Fault>>>,
    sent: Mutex<HashMap<MessageId, u32>>,
    /// How far each message sent got.
    levels: Arc<Mutex<HashMap<MessageId, AckLevel>>>,
    in_flight: Mutex<HashMap<String, usize>>,
    most_in_flight: Mutex<usize>,
    events: broadcast::Sender<BridgeEvent>,
}

impl ScriptedBridge {
    fn new(accepted: AckLevel) -> Arc<Self> {
        Arc::new(Self {
            accepted,
            log: Log::default(),
            states: Mutex::default(),
            faults: Mutex::default(),
            sent: Mutex::default(),
            levels: Arc::default(),
            in_flight: Mutex::default(),
            most_in_flight: Mutex::new(0),
            events: broadcast::channel(1024).0,
        })
    }

    fn set_state(&self, instance: &str, state: SessionState) {
        self.states.lock().insert(instance.to_owned(), state);
    }

    fn fault(&self, instance: &str, fault: Fault) {
        self.faults
            .lock()
            .entry(instance.to_owned())
            .or_default()
            .push_back(fault);
    }

    fn note(&self, to: &Jid, did: Did) {
        note(&self.log, to, did);
    }

    fn sends_of(&self, id: &MessageId) -> u32 {
        self.sent.lock().get(id).copied().unwrap_or(0)
    }

    /// The send itself, with the instance's send counted as in flight.
    async fn deliver(
        &self,
        id: &MessageId,
        msg: &OutboundMessage,
    ) -> Result<SendReceipt, TransportError> {
        let fault = self
            .faults
            .lock()
            .get_mut(&msg.instance)
            .and_then(VecDeque::pop_front);
        if let Some(Fault::Fail(e)) = fault {
            return Err(e);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
        *self.sent.lock().entry(id.clone()).or_default() += 1;
        self.levels
            .lock()
            .entry(id.clone())
            .or_insert(self.accepted);
        self.note(&msg.to, Did::Send(id.clone()));
        if matches!(fault, Some(Fault::LoseReply)) {
            return Err(TransportError::Retryable {
                reason: "reply lost".into(),
                after: Some(Duration::ZERO),
                maybe_sent: true,
            });
        }
        if self.accepted == AckLevel::Written {
            self.ack_later(id.clone(), msg.clone());
        }
        Ok(SendReceipt::new(id.clone(), self.accepted))
    }

    /// The server's acknowledgement of a written send, 30 ms later.
    fn ack_later(&self, id: MessageId, msg: OutboundMessage) {
        let events = self.events.clone();
        let log = self.log.clone();
        let levels = self.levels.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            levels.lock().insert(id.clone(), AckLevel::Server);
            note(&log, &msg.to, Did::ServerAck(id.clone()));
            let _ = events.send(BridgeEvent::Receipt {
                instance: msg.instance,
                id: id.as_str().to_owned(),
                ack: AckLevel::Server,
            });
        });
    }
}

fn note(log: &Log, to: &Jid, did: Did) {
    log.lock().push((Instant::now(), to.user().to_owned(), did));
}

impl Transport for ScriptedBridge {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            client_ids: true,
            accepted: self.accepted,
        }
    }

    async fn send(
        &self,
        id: &MessageId,
        msg: &OutboundMessage,
    ) -> Result<SendReceipt, TransportError> {
        if self.session_state(&msg.instance) != SessionState::Connected {
            return Err(TransportError::Disconnected {
                reason: "not connected".into(),
                permanent: false,
            });
        }
        let now = {
            let mut in_flight = self.in_flight.lock();
            let n = in_flight.entry(msg.instance.clone()).or_default();
            *n += 1;
            *n
        };
        {
            let mut most = self.most_in_flight.lock();
            *most = (*most).max(now);
        }
        let result = self.deliver(id, msg).await;
        if let Some(n) = self.in_flight.lock().get_mut(&msg.instance) {
            *n -= 1;
        }
        result
    }

    async fn presence(
        &self,
        _instance: &str,
        to: &Jid,
        presence: Presence,
    ) -> Result<(), TransportError> {
        self.note(to, Did::Presence(presence));
        Ok(())
    }

    fn session_state(&self, instance: &str) -> SessionState {
        self.states
            .lock()
            .get(instance)
            .copied()
            .unwrap_or(SessionState::Connected)
    }

    async fn lookup(&self, id: &MessageId) -> Result<Option<SendReceipt>, TransportError> {
        let level = self.levels.lock().get(id).copied();
        Ok(level.map(|ack| SendReceipt::new(id.clone(), ack)))
    }

    fn events(&self) -> Option<broadcast::Receiver<BridgeEvent>> {
        Some(self.events.subscribe())
    }
}

/// A worker running the pipeline over `bridge` on queue `wa`, its
/// supervisor, and the pipeline's event subscription.
struct Running {
    worker: WorkerHandle,
    supervisor: tokio::task::JoinHandle<()>,
    heard: broadcast::Receiver<PipelineEvent>,
}

impl Running {
    async fn stop(self) -> TestResult {
        self.supervisor.abort();
        stop(self.worker).await.map(drop)
    }

    /// Waits for the pipeline to tell `want`.
    async fn hear(&mut self, want: &PipelineEvent) -> TestResult {
        tokio::time::timeout(PATIENCE, async {
            loop {
                match self.heard.recv().await {
                    Ok(e) if &e == want => return Ok(()),
                    Ok(_) => {}
                    Err(e) => return Err(Failure::new(format!("pipeline events: {e}"))),
                }
            }
        })
        .await
        .map_err(|_| Failure::new(format!("never heard {want:?}")))?
    }
}

async fn start<B: Backend>(
    b: &B,
    bridge: &Arc<ScriptedBridge>,
    config: PipelineConfig,
) -> Result<Running, Failure> {
    start_pipeline(
        b,
        SendPipeline::with_config(bridge.clone(), b.clone(), config),
    )
    .await
}

/// A worker running `pipeline` on queue `wa`, and its supervisor.
async fn start_pipeline<B: Backend>(
    b: &B,
    pipeline: SendPipeline<ScriptedBridge, B>,
) -> Result<Running, Failure> {
    let heard = pipeline.subscribe();
    let supervisor = tokio::spawn(pipeline.supervise());
    let worker = Worker::new(b.clone())
        .handle(QUEUE, pipeline)
        .start()
        .await?;
    Ok(Running {
        worker,
        supervisor,
        heard,
    })
}

/// A queue whose waits and retries come back within milliseconds.
async fn declare_quick<B: Backend>(client: &Client<B>) -> TestResult {
    let retry = RetryPolicy {
        base: Duration::from_millis(10),
        cap: Duration::from_millis(10),
        jitter: false,
        disconnected_delay: Duration::from_millis(20),
        ..RetryPolicy::default()
    };
    declare(client, QueueConfig::new(QUEUE).retry(retry)).await
}

fn config() -> PipelineConfig {
    PipelineConfig::default()
        .resume_poll(Duration::from_millis(20))
        .ack_wait(Duration::from_secs(5), Duration::from_millis(10))
}

/// Enqueues `n` messages from `instance` to each of `contacts`, round
/// robin, typing `typing_ms` each; returns each id's (contact, place).
async fn enqueue<B: Backend>(
    client: &Client<B>,
    instance: &str,
    contacts: &[&str],
    n: u32,
    typing_ms: u64,
) -> Result<HashMap<MessageId, (String, u32)>, Failure> {
    let mut plan = HashMap::new();
    for i in 0..n {
        for to in contacts {
            let msg = OutboundMessage::text(instance, to, format!("message {i}"))
                .map_err(|e| Failure::new(e.to_string()))?
                .with_typing(Duration::from_millis(typing_ms));
            let id = JobId::new();
            client.enqueue(Enqueue::message(QUEUE, &msg).id(id)).await?;
            plan.insert(MessageId::for_job(id), (msg.to.user().to_owned(), i));
        }
    }
    Ok(plan)
}

/// The send receipt a completed message job keeps as its output.
fn receipt_of(job: &wq_core::Job) -> Result<SendReceipt, Failure> {
    job.output
        .as_ref()
        .ok_or_else(|| Failure::new(format!("job {} has no output", job.id)))?
        .decode()
        .map_err(|e| Failure::new(e.to_string()))
}

async fn wait_completed<B: Backend>(client: &Client<B>, n: u64) -> TestResult {
    wait_until("every message sent", PATIENCE, || async {
        Ok(client.counts(QUEUE).await?.completed == n)
    })
    .await
}

/// Three contacts, four messages each, typing first: each contact's
/// messages go out in order, each after a "typing…" to that contact and
/// followed by "paused", one send at a time on the session; each job's
/// history is a typing step then the send, its output the receipt.
pub async fn pipeline_types_and_sends_in_order<T: TestBackend>(t: &T) -> TestResult {
    with_backend(t, |b| async move {
        let client = Client::new(b.clone());
        declare_quick(&client).await?;
        let one = SessionLimits::new().max_running(1);
        b.set_session_limits(&QueueName::new(QUEUE), &SessionKey::new("inst-1"), &one)
            .await?;
        let contacts = ["5511900000001", "5511900000002", "5511900000003"];
        let plan = enqueue(&client, "inst-1", &contacts, 4, 30).await?;
        let bridge = ScriptedBridge::new(AckLevel::Server);
        let running = start(&b, &bridge, config()).await?;
        let done = wait_completed(&client, 12).await;
        running.stop().await?;
        done?;

        let log = bridge.log.lock().clone();
        for to in contacts {
            let mine: Vec<&Did> = log
                .iter()
                .filter(|(_, c, _)| c == to)
                .map(|(_, _, d)| d)
                .collect();
            let mut expected_n = 0;
            for (i, did) in mine.iter().enumerate() {
                let Did::Send(id) = did else { continue };
                ensure_eq!(plan[id].1, expected_n, "{to}: the messages' order");
                expected_n += 1;
                ensure!(
                    i > 0 && *mine[i - 1] == Did::Presence(Presence::Composing),
                    "{to}: typing right before send {expected_n}: {mine:?}"
                );
                ensure!(
                    mine.get(i + 1) == Some(&&Did::Presence(Presence::Paused)),
                    "{to}: paused right after send {expected_n}: {mine:?}"
                );
            }
            ensure_eq!(expected_n, 4, "{to}: messages sent");
        }
        ensure_eq!(
            *bridge.most_in_flight.lock(),
            1,
            "sends at once on the session"
        );
        for (id, (to, n)) in &plan {
            ensure_eq!(bridge.sends_of(id), 1, "{to} #{n}: times sent");
        }
        let jobs = client.list(wq_core::ListQuery::new().queue(QUEUE)).await?;
        for job in jobs {
            let outcomes: Vec<_> = job.history.iter().map(|a| a.outcome).collect();
            ensure_eq!(
                outcomes,
                vec![AttemptOutcome::Continued, AttemptOutcome::Completed],
                "a job's runs: typing, then the send"
            );
            let receipt = receipt_of(&job)?;
            ensure_eq!(receipt.ack, AckLevel::Server, "the receipt kept");
        }
        Ok(())
    })
    .await
}

/// Typing inside the send under a session rate: each message is one run
/// (one of the session's starts), its "typing…" right before its send and
/// "paused" right after, the contacts' messages in order, one send at a
/// time.
pub async fn inline_typing_sends_under_a_rate<T: TestBackend>(t: &T) -> TestResult {
    with_backend(t, |b| async move {
        let client = Client::new(b.clone());
        declare_quick(&client).await?;
        let limits = SessionLimits::new()
            .max_running(1)
            .rate(wq_core::Rate::new(50, Duration::from_secs(1)));
        b.set_session_limits(&QueueName::new(QUEUE), &SessionKey::new("inst-1"), &limits)
            .await?;
        let contacts = ["5511900000001", "5511900000002"];
        let plan = enqueue(&client, "inst-1", &contacts, 3, 20).await?;
        let bridge = ScriptedBridge::new(AckLevel::Server);
        let running = start(&b, &bridge, config().steps(false)).await?;
        let done = wait_completed(&client, 6).await;
        running.stop().await?;
        done?;
        let log: Vec<Did> = bridge
            .log
            .lock()
            .iter()
            .map(|(_, _, d)| d.clone())
            .collect();
        let mut sent = Vec::new();
        for (i, did) in log.iter().enumerate() {
            let Did::Send(id) = did else { continue };
            ensure!(
                i > 0 && log[i - 1] == Did::Presence(Presence::Composing),
                "typing right before each send, on the session: {log:?}"
            );
            ensure!(
                log.get(i + 1) == Some(&Did::Presence(Presence::Paused)),
                "paused right after each send: {log:?}"
            );
            sent.push(plan[id].clone());
        }
        for to in contacts {
            let order: Vec<u32> = sent
                .iter()
                .filter(|(c, _)| c == to)
                .map(|(_, n)| *n)
                .collect();
            ensure_eq!(order, vec![0, 1, 2], "{to}: in order");
        }
        ensure_eq!(
            *bridge.most_in_flight.lock(),
            1,
            "sends at once on the session"
        );
        for job in client.list(wq_core::ListQuery::new().queue(QUEUE)).await? {
            let outcomes: Vec<_> = job.history.iter().map(|a| a.outcome).collect();
            ensure_eq!(
                outcomes,
                vec![AttemptOutcome::Completed],
                "one run per message"
            );
        }
        Ok(())
    })
    .await
}

/// Typing in steps under a session rate with a backlog: a message between
/// steps takes no start and goes before the messages that have not
/// started, so each one sends when its typing ends, while the rate spaces
/// the starts of the others. Twenty contacts, typing 400 ms each, 20 starts
/// a second: at most 400 / 50 + 1 other messages can begin typing between a
/// message's "typing…" and its send. Were steps starts that queue behind
/// the backlog, the first message would wait for all 19 others to start.
pub async fn stepped_typing_sends_under_a_rate<T: TestBackend>(t: &T) -> TestResult {
    with_backend(t, |b| async move {
        let client = Client::new(b.clone());
        declare_quick(&client).await?;
        let limits = SessionLimits::new()
            .max_running(1)
            .rate(wq_core::Rate::new(20, Duration::from_secs(1)));
        b.set_session_limits(&QueueName::new(QUEUE), &SessionKey::new("inst-1"), &limits)
            .await?;
        let contacts: Vec<String> = (0..20).map(|n| format!("55119000001{n:02}")).collect();
        let contacts: Vec<&str> = contacts.iter().map(String::as_str).collect();
        enqueue(&client, "inst-1", &contacts, 1, 400).await?;
        let bridge = ScriptedBridge::new(AckLevel::Server);
        let running = start(&b, &bridge, config()).await?;
        let done = wait_completed(&client, 20).await;
        running.stop().await?;
        done?;
        let log: Vec<(String, Did)> = bridge
            .log
            .lock()
            .iter()
            .map(|(_, to, d)| (to.clone(), d.clone()))
            .collect();
        for (i, (to, did)) in log.iter().enumerate() {
            if did != &Did::Presence(Presence::Composing) {
                continue;
            }
            let send = log[i..]
                .iter()
                .position(|(t, d)| t == to && matches!(d, Did::Send(_)))
                .ok_or_else(|| Failure::new(format!("{to}: typing without a send")))?;
            let started_meanwhile = log[i + 1..i + send]
                .iter()
                .filter(|(_, d)| d == &Did::Presence(Presence::Composing))
                .count();
            ensure!(
                started_meanwhile <= 9,
                "{to}: {started_meanwhile} messages began typing between its typing and its \
                 send: {log:?}"
            );
        }
        for job in client.list(wq_core::ListQuery::new().queue(QUEUE)).await? {
            let outcomes: Vec<_> = job.history.iter().map(|a| a.outcome).collect();
            ensure_eq!(
                outcomes,
                vec![AttemptOutcome::Continued, AttemptOutcome::Completed],
                "a typing step, then the send"
            );
        }
        Ok(())
    })
    .await
}

/// The pause of a lost link is the store's, not the process's: a pipeline
/// pauses a session whose link is down and its process dies; a new
/// pipeline watching the queue, which never ran one of its messages,
/// resumes it once the link is back, and the messages go out. It leaves
/// an operator's pause alone.
pub async fn another_process_resumes_a_lost_links_pause<T: TestBackend>(t: &T) -> TestResult {
    with_backend(t, |b| async move {
        let client = Client::new(b.clone());
        declare_quick(&client).await?;
        let queue = QueueName::new(QUEUE);
        enqueue(&client, "inst-1", &["5511900000001"], 2, 0).await?;
        enqueue(&client, "inst-2", &["5511900000002"], 1, 0).await?;
        client.pause_session(QUEUE, "inst-2").await?;
        let bridge = ScriptedBridge::new(AckLevel::Server);
        bridge.set_state("inst-1", SessionState::Disconnected);
        let mut first = start(&b, &bridge, config()).await?;
        let paused = PipelineEvent::SessionPaused {
            queue: queue.clone(),
            instance: "inst-1".into(),
            reason: PauseReason::Disconnected,
        };
        let heard = first.hear(&paused).await;
        let settled = wait_until("the message to wait", PATIENCE, || async {
            Ok(client.counts(QUEUE).await?.running == 0)
        })
        .await;
        first.stop().await?;
        heard?;
        settled?;
        let reason = |name: &'static str| {
            let (b, queue) = (b.clone(), queue.clone());
            async move {
                let info = b.session_info(&queue, &SessionKey::new(name)).await?;
                Ok::<_, Failure>(info.and_then(|i| i.pause_reason))
            }
        };
        let stored = reason("inst-1").await?;
        ensure!(
            stored
                .as_deref()
                .is_some_and(|r| r.starts_with(wq_whatsapp::PAUSE_PREFIX)),
            "the store keeps why: {stored:?}"
        );

        bridge.set_state("inst-1", SessionState::Connected);
        let pipeline = SendPipeline::with_config(bridge.clone(), b.clone(), config()).watch(QUEUE);
        let second = start_pipeline(&b, pipeline).await?;
        let done = wait_completed(&client, 2).await;
        // Several looks at the paused sessions later, the operator's stays.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let operator = reason("inst-2").await;
        second.stop().await?;
        done?;
        ensure_eq!(
            reason("inst-1").await?,
            None,
            "the lost link's pause lifted"
        );
        ensure_eq!(
            operator?,
            Some(wq_core::OPERATOR_PAUSE.to_owned()),
            "the operator's pause kept"
        );
        ensure_eq!(
            client.counts(QUEUE).await?.completed,
            2,
            "only the resumed session sent"
        );
        Ok(())
    })
    .await
}

/// A session's allowance of new chats: with room for two contacts it never
/// wrote to, the messages to those two go out (a second message to one of
/// them too: it is known by then), and the third contact's waits for a
/// place, spending no attempt. A quota event from the bridge becomes the
/// session's allowance.
pub async fn new_contacts_wait_for_the_allowance<T: TestBackend>(t: &T) -> TestResult {
    with_backend(t, |b| async move {
        let client = Client::new(b.clone());
        declare_quick(&client).await?;
        let hour = Duration::from_secs(3600);
        client
            .set_allowance(QUEUE, "inst-1", Some(Allowance::new(2, hour)))
            .await?;
        // One at a time, so the contacts come in enqueue order.
        let one = SessionLimits::new().max_running(1);
        client.set_session_limits(QUEUE, "inst-1", one).await?;
        let contacts = ["5511900000001", "5511900000002", "5511900000003"];
        enqueue(&client, "inst-1", &contacts, 1, 0).await?;
        let again = enqueue(&client, "inst-1", &contacts[..1], 1, 0).await?;
        let bridge = ScriptedBridge::new(AckLevel::Server);
        let running = start(&b, &bridge, config()).await?;
        let sent = wait_completed(&client, 3).await;
        let third = wait_until("the third contact's message to wait", PATIENCE, || async {
            let jobs = client.list(wq_core::ListQuery::new().queue(QUEUE)).await?;
            Ok(jobs.iter().any(|j| {
                j.state == JobState::Scheduled
                    && j.last_error
                        .as_deref()
                        .is_some_and(|e| e.contains("new chat"))
            }))
        })
        .await;
        let refused = client.admit(QUEUE, "inst-1", "probe").await?;
        let _ = bridge.events.send(BridgeEvent::Quota {
            instance: "inst-1".into(),
            new_chats: 4,
            per: hour,
        });
        let raised = wait_until("the quota to become the allowance", PATIENCE, || async {
            Ok(client.admit(QUEUE, "inst-1", "probe").await? == Admission::Admitted)
        })
        .await;
        running.stop().await?;
        sent?;
        third?;
        raised?;
        ensure!(
            matches!(refused, Admission::Refused { .. }),
            "the allowance was spent: {refused:?}"
        );
        let jobs = client.list(wq_core::ListQuery::new().queue(QUEUE)).await?;
        let mut to_third = jobs.iter().filter(|j| {
            j.group
                .as_ref()
                .is_some_and(|g| g.as_str().ends_with(contacts[2]))
        });
        let job = to_third
            .next()
            .ok_or_else(|| Failure::new("no message to the third contact"))?;
        ensure_eq!(
            job.state,
            JobState::Scheduled,
            "the third contact's message waits"
        );
        ensure_eq!(job.attempt, 0, "waiting spent no attempt");
        ensure_eq!(
            bridge.sends_of(&MessageId::for_job(job.id)),
            0,
            "and sent nothing"
        );
        let second = again
            .keys()
            .next()
            .ok_or_else(|| Failure::new("no second message"))?;
        ensure_eq!(
            bridge.sends_of(second),
            1,
            "a known contact's next message went out"
        );
        Ok(())
    })
    .await
}

/// A session whose link is down is paused: its messages wait, spending no
/// attempt and sending nothing, until the link is back; then the pipeline
/// resumes it and they go out in order.
pub async fn disconnected_sessions_pause_and_resume<T: TestBackend>(t: &T) -> TestResult {
    with_backend(t, |b| async move {
        let client = Client::new(b.clone());
        declare_quick(&client).await?;
        let plan = enqueue(&client, "inst-1", &["5511900000001"], 3, 0).await?;
        let bridge = ScriptedBridge::new(AckLevel::Server);
        bridge.set_state("inst-1", SessionState::Disconnected);
        let mut running = start(&b, &bridge, config()).await?;
        let queue = QueueName::new(QUEUE);
        let paused = PipelineEvent::SessionPaused {
            queue: queue.clone(),
            instance: "inst-1".into(),
            reason: PauseReason::Disconnected,
        };
        let heard = running.hear(&paused).await;
        // The pause is told before the run that found the link down is
        // acknowledged: wait for it to be back in line.
        let settled = wait_until("the messages to wait", PATIENCE, || async {
            Ok(client.counts(QUEUE).await?.running == 0)
        })
        .await;
        let info = b.session_info(&queue, &SessionKey::new("inst-1")).await?;
        let attempts: Vec<u32> = client
            .list(wq_core::ListQuery::new().queue(QUEUE))
            .await?
            .iter()
            .map(|j| j.attempt)
            .collect();
        let sent_while_down = bridge.log.lock().len();
        bridge.set_state("inst-1", SessionState::Connected);
        let resumed = PipelineEvent::SessionResumed {
            queue: queue.clone(),
            instance: "inst-1".into(),
        };
        let heard_resume = running.hear(&resumed).await;
        let done = wait_completed(&client, 3).await;
        running.stop().await?;
        heard?;
        settled?;
        heard_resume?;
        done?;
        ensure!(
            info.is_some_and(|i| i.paused),
            "the session was paused in the store"
        );
        ensure_eq!(attempts, vec![0, 0, 0], "waiting spent no attempt");
        ensure_eq!(sent_while_down, 0, "nothing reached a bridge that was down");
        let info = b.session_info(&queue, &SessionKey::new("inst-1")).await?;
        ensure!(info.is_some_and(|i| !i.paused), "the session was resumed");
        let order: Vec<u32> = bridge
            .log
            .lock()
            .iter()
            .filter_map(|(_, _, d)| match d {
                Did::Send(id) => Some(plan[id].1),
                _ => None,
            })
            .collect();
        ensure_eq!(order, vec![0, 1, 2], "sent in order once resumed");
        Ok(())
    })
    .await
}

/// A send whose reply was lost is looked up, not sent again: the message
/// goes out once, and the job completes on its second attempt with the
/// receipt the lookup found.
pub async fn lost_replies_are_looked_up_not_resent<T: TestBackend>(t: &T) -> TestResult {
    with_backend(t, |b| async move {
        let client = Client::new(b.clone());
        declare_quick(&client).await?;
        let plan = enqueue(&client, "inst-1", &["5511900000001"], 1, 0).await?;
        let bridge = ScriptedBridge::new(AckLevel::Server);
        bridge.fault("inst-1", Fault::LoseReply);
        let running = start(&b, &bridge, config()).await?;
        let done = wait_completed(&client, 1).await;
        running.stop().await?;
        done?;
        let (id, _) = plan
            .iter()
            .next()
            .ok_or_else(|| Failure::new("no message"))?;
        ensure_eq!(bridge.sends_of(id), 1, "times the message was sent");
        let job = client.list(wq_core::ListQuery::new().queue(QUEUE)).await?;
        let job = job.first().ok_or_else(|| Failure::new("no job"))?;
        ensure_eq!(job.attempt, 2, "completed on the second attempt");
        let first = job
            .history
            .first()
            .ok_or_else(|| Failure::new("no history"))?;
        ensure_eq!(
            first.outcome,
            AttemptOutcome::Retried,
            "the lost reply's run"
        );
        ensure!(
            first
                .error
                .as_deref()
                .is_some_and(|e| e.starts_with(wq_whatsapp::MAYBE_SENT)),
            "the run says it may have sent: {first:?}"
        );
        ensure!(job.output.is_some(), "the receipt the lookup found is kept");
        Ok(())
    })
    .await
}

/// A ban signal pauses its session until an operator resumes it, without
/// killing its messages; another session goes on meanwhile.
pub async fn ban_signals_pause_only_their_session<T: TestBackend>(t: &T) -> TestResult {
    with_backend(t, |b| async move {
        let client = Client::new(b.clone());
        declare_quick(&client).await?;
        let banned = enqueue(&client, "inst-1", &["5511900000001"], 2, 0).await?;
        enqueue(&client, "inst-2", &["5511900000002"], 2, 0).await?;
        let bridge = ScriptedBridge::new(AckLevel::Server);
        bridge.fault(
            "inst-1",
            Fault::Fail(TransportError::Permanent {
                reason: "reachout timelock".into(),
                code: Some(463),
            }),
        );
        let mut running = start(&b, &bridge, config()).await?;
        let queue = QueueName::new(QUEUE);
        let paused = PipelineEvent::SessionPaused {
            queue: queue.clone(),
            instance: "inst-1".into(),
            reason: PauseReason::BanSignal(463),
        };
        let heard = running.hear(&paused).await;
        let others = wait_completed(&client, 2).await;
        // Several supervisor rounds: a ban is not resumed by the pipeline.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let still = b.session_info(&queue, &SessionKey::new("inst-1")).await?;
        let jobs = client.list(wq_core::ListQuery::new().queue(QUEUE)).await?;
        let held: Vec<_> = jobs
            .iter()
            .filter(|j| banned.contains_key(&MessageId::for_job(j.id)))
            .map(|j| (j.state.is_waiting(), j.attempt))
            .collect();
        b.set_session_paused(&queue, &SessionKey::new("inst-1"), &PauseChange::Resume)
            .await?;
        let all = wait_completed(&client, 4).await;
        running.stop().await?;
        heard?;
        others?;
        all?;
        ensure!(
            still.is_some_and(|i| i.paused),
            "the banned session stays paused"
        );
        ensure_eq!(
            held,
            vec![(true, 0), (true, 0)],
            "its messages wait, no attempt spent"
        );
        let dead = client.counts(QUEUE).await?.get(JobState::Dead);
        ensure_eq!(dead, 0, "nothing killed by the ban");
        Ok(())
    })
    .await
}

/// Through a bridge whose sends are only written, each job waits for the
/// server's acknowledgement before it completes, so a contact's next
/// message starts only after the previous one was accepted.
pub async fn written_sends_wait_for_the_server<T: TestBackend>(t: &T) -> TestResult {
    written_sends_wait(t, true).await
}

/// The same, waiting inside the run that sent (`PipelineConfig::steps`
/// off): one run per message.
pub async fn written_sends_wait_inline<T: TestBackend>(t: &T) -> TestResult {
    written_sends_wait(t, false).await
}

async fn written_sends_wait<T: TestBackend>(t: &T, steps: bool) -> TestResult {
    with_backend(t, |b| async move {
        let client = Client::new(b.clone());
        declare_quick(&client).await?;
        enqueue(&client, "inst-1", &["5511900000001"], 3, 0).await?;
        let bridge = ScriptedBridge::new(AckLevel::Written);
        let running = start(&b, &bridge, config().steps(steps)).await?;
        let done = wait_completed(&client, 3).await;
        running.stop().await?;
        done?;
        let log: Vec<Did> = bridge
            .log
            .lock()
            .iter()
            .map(|(_, _, d)| d.clone())
            .collect();
        let kinds: Vec<&str> = log
            .iter()
            .filter_map(|d| match d {
                Did::Send(_) => Some("send"),
                Did::ServerAck(_) => Some("ack"),
                Did::Presence(_) => None,
            })
            .collect();
        ensure_eq!(
            kinds,
            vec!["send", "ack", "send", "ack", "send", "ack"],
            "each send accepted before the next starts"
        );
        for job in client.list(wq_core::ListQuery::new().queue(QUEUE)).await? {
            let receipt = receipt_of(&job)?;
            ensure_eq!(receipt.ack, AckLevel::Server, "the receipt says accepted");
            if !steps {
                ensure_eq!(
                    job.history.len(),
                    1,
                    "one run per message: {:?}",
                    job.history
                );
            }
        }
        Ok(())
    })
    .await
}
