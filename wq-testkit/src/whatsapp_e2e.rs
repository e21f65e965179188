//! The WhatsApp send pipeline end to end (feature `whatsapp-e2e`): three
//! workers share one backend, each with its own [`SendPipeline`] over an
//! [`HttpBridge`] and its supervisor, and send through the [`FakeBridge`]
//! while the bridge loses replies and answers 429s, one session's link
//! drops and comes back, and another session is banned until an operator
//! resumes it.
//!
//! A backend's test only says how its three workers start: worker
//! processes ([`Processes`], its own test binary run again for an ignored
//! test that calls [`serve`]) when the store is shared across processes,
//! else [`InProcess`]. [`run`] does the rest and checks, from the bridge's
//! timestamped record and the store:
//!
//! - every message sent, nothing dead, and a message id sent again only
//!   after a send whose reply was lost;
//! - each contact's first sends in enqueue order;
//! - per session one request at a time (max running 1) and sends spaced
//!   by its rate;
//! - each first send after a composing presence to its contact, each
//!   answered send followed by paused;
//! - nothing asked of the banned session while banned, its messages
//!   waiting with the session paused.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use wq_core::{
    Backend, Client, Enqueue, ListQuery, QueueConfig, Rate, RetryPolicy, SessionInfo,
    SessionLimits, Worker, WorkerHandle,
};
use wq_whatsapp::http::{HttpBridge, HttpBridgeConfig, Paths};
use wq_whatsapp::{
    EnqueueMessage as _, MessageId, OutboundMessage, PipelineConfig, Presence, SendPipeline, Typing,
};

use crate::bridge::{FakeBridge, FakeConfig, Fault, Request, SendRecord, Target};
use crate::harness::{Failure, TestResult, stop_within, wait_until};
use crate::{ensure, ensure_eq};

/// The queue the scenario sends on.
pub const QUEUE: &str = "wa";
/// Where a worker process finds the fake bridge.
pub const BRIDGE_ENV: &str = "WQ_E2E_BRIDGE";
/// Workers sharing the backend.
pub const WORKERS: usize = 3;

/// `inst-a` gets the faults, `inst-b` the ban, `inst-c` the dropped link
/// and a fault or two.
const SESSIONS: [&str; 3] = ["inst-a", "inst-b", "inst-c"];
const FAULTY: &str = "inst-a";
const BANNED: &str = "inst-b";
const DROPPED: &str = "inst-c";
const BAN_CODE: i64 = 463;
const CONTACTS: usize = 20;
const PER_CONTACT: usize = 5;
const PER_SESSION: usize = CONTACTS * PER_CONTACT;
const TOTAL: usize = SESSIONS.len() * PER_SESSION;
/// Starts per second per session.
const RATE: u32 = 50;
const LATENCY: Duration = Duration::from_millis(3);
/// Past the bridge's latency, short of its hold of a lost reply.
const CLIENT_TIMEOUT: Duration = Duration::from_millis(400);
const HOLD: Duration = Duration::from_secs(1);
const RETRY_AFTER: Duration = Duration::from_millis(100);
/// Lost replies and 429s injected in all.
const LOST: usize = 3;
const LIMITED: usize = 3;
/// The store spaces a session's claims by the claiming worker's clock; the
/// bridge times their requests, which leave after the claim's reply, the
/// handler's start and a step of the pipeline, delays that vary by tens of
/// milliseconds on a loaded two-core machine.
const RATE_TOLERANCE: Duration = Duration::from_millis(50);
/// After a ban, the step under way and the feed's news reaching every
/// worker may still ask the bridge something.
const BAN_GRACE: Duration = Duration::from_millis(500);
/// How long the dropped session stays down.
const OUTAGE: Duration = Duration::from_millis(300);
/// Long enough for every worker's transport to see a session's new state
/// (it asks every 50 ms and follows the feed).
const STATE_SEEN: Duration = Duration::from_millis(300);
/// Bound of each wait of the scenario, met only when something is broken.
const WAIT: Duration = Duration::from_secs(30);

/// The workers a backend's test started: stopped once everything is sent.
pub trait Workers {
    /// Stops them; a worker that failed or would not stop fails the test.
    fn stop(self) -> impl Future<Output = TestResult>;
}

/// Runs the scenario on `store` with the workers `start` starts, given
/// the bridge's URL, and checks it. The store must be empty.
pub async fn run<B, W, F, Fut>(store: &B, start: F) -> TestResult
where
    B: Backend,
    W: Workers,
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = Result<W, Failure>>,
{
    let started = Instant::now();
    let bridge = FakeBridge::start(fake_config())
        .await
        .map_err(|e| Failure::new(format!("cannot start the fake bridge: {e}")))?;
    let client = Client::new(store.clone());
    let expected = prepare(&client).await?;
    arm_faults(&bridge, &[FAULTY, DROPPED]);
    let workers = start(bridge.url().to_owned()).await?;
    let timeline = scenario(&client, &bridge).await;
    let stopped = workers.stop().await;
    let timeline = timeline?;
    stopped?;
    let counts = client.counts(QUEUE).await?;
    ensure_eq!(
        (counts.completed, counts.total()),
        (TOTAL as u64, TOTAL as u64),
        "jobs completed, and in all"
    );
    check_shared(&client).await?;
    let requests = bridge.requests();
    check(&requests, &expected, &timeline)?;
    let sends = requests.iter().filter_map(as_send).count();
    eprintln!(
        "whatsapp e2e: {TOTAL} messages, {sends} send requests, took {:?}",
        started.elapsed()
    );
    Ok(())
}

fn fake_config() -> FakeConfig {
    FakeConfig {
        latency: LATENCY,
        hold: HOLD,
        ..FakeConfig::default()
    }
}

/// The ids enqueued, and each contact's in enqueue order.
struct Expected {
    ids: HashSet<String>,
    by_contact: HashMap<String, Vec<String>>,
}

/// A contact's number: distinct across sessions.
fn contact(session: usize, c: usize) -> String {
    format!("551190{session}{c:06}")
}

/// Declares the queue, limits the sessions and enqueues every message,
/// contacts interleaved so that each session's sends alternate between
/// them.
async fn prepare<B: Backend>(client: &Client<B>) -> Result<Expected, Failure> {
    let retry = RetryPolicy {
        max_attempts: 10,
        base: Duration::from_millis(20),
        cap: Duration::from_millis(100),
        jitter: false,
        disconnected_delay: Duration::from_millis(50),
    };
    client
        .declare_queue(QueueConfig::new(QUEUE).retry(retry))
        .await?;
    let limits = SessionLimits::new()
        .max_running(1)
        .rate(Rate::new(RATE, Duration::from_secs(1)));
    for session in SESSIONS {
        client.set_session_limits(QUEUE, session, limits).await?;
    }
    let mut messages = Vec::with_capacity(TOTAL);
    for n in 0..PER_CONTACT {
        for (s, session) in SESSIONS.iter().enumerate() {
            for c in 0..CONTACTS {
                let to = contact(s, c);
                let typing = Duration::from_millis(rand::random_range(20..=50));
                let msg = OutboundMessage::text(*session, &to, format!("{to} #{n}"))
                    .map_err(|e| Failure::new(format!("a bad message: {e}")))?
                    .with_typing(typing);
                messages.push((to, Enqueue::message(QUEUE, &msg)));
            }
        }
    }
    let (contacts, jobs): (Vec<String>, Vec<Enqueue>) = messages.into_iter().unzip();
    let stored = client.enqueue_many(jobs).await?;
    let mut expected = Expected {
        ids: HashSet::new(),
        by_contact: HashMap::new(),
    };
    for (to, e) in contacts.into_iter().zip(stored) {
        let id = MessageId::for_job(e.job.id).as_str().to_owned();
        expected.ids.insert(id.clone());
        expected.by_contact.entry(to).or_default().push(id);
    }
    Ok(expected)
}

/// A lost reply, then a 429, for each session's next sends.
fn arm_faults(bridge: &FakeBridge, sessions: &[&str]) {
    let limited = Fault::RateLimited {
        retry_after: RETRY_AFTER,
        contact: false,
    };
    for session in sessions {
        bridge.fail_next(Target::instance(*session), 1, Fault::LoseReply);
        bridge.fail_next(Target::instance(*session), 1, limited.clone());
    }
}

/// When the ban began and ended, and the banned session as the store kept
/// it once the others were done.
struct Timeline {
    ban_at: Instant,
    unban_at: Instant,
    held: SessionInfo,
    dead_while_banned: u64,
}

async fn scenario<B: Backend>(
    client: &Client<B>,
    bridge: &FakeBridge,
) -> Result<Timeline, Failure> {
    sent_at_least(bridge, DROPPED, 10).await?;
    bridge.drop_session(DROPPED);
    tokio::time::sleep(OUTAGE).await;
    bridge.restore_session(DROPPED);
    arm_faults(bridge, &[FAULTY]);
    sent_at_least(bridge, BANNED, 30).await?;
    bridge.ban_session(BANNED, BAN_CODE);
    let ban_at = Instant::now();
    for session in [FAULTY, DROPPED] {
        drained(client, session).await?;
    }
    let held = client
        .session(QUEUE, BANNED)
        .await?
        .ok_or_else(|| Failure::new(format!("the store forgot session {BANNED}")))?;
    let dead_while_banned = client.counts(QUEUE).await?.dead;
    let unban_at = Instant::now();
    bridge.restore_session(BANNED);
    // A worker whose transport still saw the ban would pause the session
    // again, for an operator to resume.
    tokio::time::sleep(STATE_SEEN).await;
    client.resume_session(QUEUE, BANNED).await?;
    all_completed(client).await?;
    Ok(Timeline {
        ban_at,
        unban_at,
        held,
        dead_while_banned,
    })
}

async fn sent_at_least(bridge: &FakeBridge, session: &str, n: usize) -> TestResult {
    wait_until(&format!("{n} sends of {session}"), WAIT, || async {
        let sent = bridge
            .sends()
            .iter()
            .filter(|s| s.instance == session && s.sent())
            .count();
        Ok(sent >= n)
    })
    .await
}

async fn drained<B: Backend>(client: &Client<B>, session: &str) -> TestResult {
    wait_until(
        &format!("every message of {session} sent"),
        WAIT,
        || async {
            let info = client.session(QUEUE, session).await?;
            Ok(info.is_some_and(|i| i.waiting == 0 && i.running == 0))
        },
    )
    .await
}

async fn all_completed<B: Backend>(client: &Client<B>) -> TestResult {
    wait_until("every message completed", WAIT, || async {
        let counts = client.counts(QUEUE).await?;
        ensure_eq!(counts.dead, 0, "dead messages");
        Ok(counts.completed == TOTAL as u64)
    })
    .await
}

/// Every worker ran some of the steps, by the jobs' histories.
async fn check_shared<B: Backend>(client: &Client<B>) -> TestResult {
    let mut query = ListQuery::new().queue(QUEUE);
    query.limit = TOTAL;
    let jobs = client.list(query).await?;
    let workers: HashSet<&str> = jobs
        .iter()
        .flat_map(|j| &j.history)
        .map(|a| &*a.worker)
        .collect();
    ensure_eq!(workers.len(), WORKERS, "workers that ran steps");
    Ok(())
}

fn as_send(r: &Request) -> Option<&SendRecord> {
    match r {
        Request::Send(s) => Some(s),
        Request::Presence(_) => None,
    }
}

/// A request's session, contact and arrival.
fn about(r: &Request) -> (&str, &str, Instant) {
    match r {
        Request::Send(s) => (&s.instance, &s.to, s.at),
        Request::Presence(p) => (&p.instance, &p.to, p.at),
    }
}

fn check(requests: &[Request], expected: &Expected, t: &Timeline) -> TestResult {
    let sends: Vec<&SendRecord> = requests.iter().filter_map(as_send).collect();
    check_sent_once(&sends, expected)?;
    check_order(&sends, expected)?;
    for session in SESSIONS {
        check_one_at_a_time(requests, session)?;
        check_rate(&sends, session)?;
    }
    for to in expected.by_contact.keys() {
        check_typing(requests, to)?;
    }
    check_ban(requests, &sends, t)?;
    let lost = sends.iter().filter(|s| s.reply_lost).count();
    let limited = sends.iter().filter(|s| s.status == 429).count();
    ensure_eq!((lost, limited), (LOST, LIMITED), "lost replies and 429s");
    Ok(())
}

/// Every message went out; one went out again only after a send of it
/// whose reply was lost.
fn check_sent_once(sends: &[&SendRecord], expected: &Expected) -> TestResult {
    let mut lost_before: HashMap<&str, bool> = HashMap::new();
    for s in sends.iter().filter(|s| s.sent()) {
        let id = s.id.as_deref().unwrap_or_default();
        ensure!(
            expected.ids.contains(id),
            "the bridge sent {id}, no job's id"
        );
        if let Some(lost) = lost_before.get(id) {
            ensure!(*lost, "{id} sent again though its send was answered");
        }
        *lost_before.entry(id).or_default() |= s.reply_lost;
    }
    ensure_eq!(lost_before.len(), expected.ids.len(), "messages sent");
    Ok(())
}

/// Each contact's messages first went out in enqueue order.
fn check_order(sends: &[&SendRecord], expected: &Expected) -> TestResult {
    let mut seen = HashSet::new();
    let mut firsts: HashMap<&str, Vec<&str>> = HashMap::new();
    for s in sends.iter().filter(|s| s.sent()) {
        let id = s.id.as_deref().unwrap_or_default();
        if seen.insert(id) {
            firsts.entry(&s.to).or_default().push(id);
        }
    }
    for (to, want) in &expected.by_contact {
        let got = firsts.remove(to.as_str()).unwrap_or_default();
        ensure_eq!(got, *want, "{to}: first sends in enqueue order");
    }
    Ok(())
}

/// The bridge answers each request after its latency, so with one step of
/// a session at a time its requests arrive at least that far apart.
fn check_one_at_a_time(requests: &[Request], session: &str) -> TestResult {
    let mut arrivals: Vec<Instant> = requests
        .iter()
        .map(about)
        .filter(|(i, _, _)| *i == session)
        .map(|(_, _, at)| at)
        .collect();
    arrivals.sort();
    for pair in arrivals.windows(2) {
        let gap = pair[1] - pair[0];
        ensure!(
            gap >= LATENCY,
            "{session}: two requests {gap:?} apart, under the bridge's latency: two steps at once"
        );
    }
    Ok(())
}

/// Any two of a session's sends, k sends apart, are at least k spacings
/// apart, less [`RATE_TOLERANCE`].
fn check_rate(sends: &[&SendRecord], session: &str) -> TestResult {
    let spacing = Rate::new(RATE, Duration::from_secs(1)).spacing();
    let mut arrivals: Vec<Instant> = sends
        .iter()
        .filter(|s| s.instance == session)
        .map(|s| s.at)
        .collect();
    arrivals.sort();
    for (i, first) in arrivals.iter().enumerate() {
        for (k, later) in arrivals[i + 1..].iter().enumerate() {
            let want = spacing * (k as u32 + 1);
            let apart = *later - *first;
            ensure!(
                apart + RATE_TOLERANCE >= want,
                "{session}: {} sends within {apart:?}, under its rate of {RATE}/s",
                k + 2
            );
        }
    }
    Ok(())
}

/// Each first send to `to` follows a composing shown since the contact's
/// previous send, and the next presence after an answered send is paused.
fn check_typing(requests: &[Request], to: &str) -> TestResult {
    let mut sent = HashSet::new();
    let mut composed = false;
    let mut awaiting_pause = false;
    for r in requests.iter().filter(|r| about(r).1 == to) {
        match r {
            Request::Presence(p) if awaiting_pause => {
                ensure_eq!(
                    p.presence,
                    Presence::Paused,
                    "{to}: the presence after a send"
                );
                awaiting_pause = false;
            }
            Request::Presence(p) => {
                ensure!(
                    p.presence != Presence::Paused,
                    "{to}: paused with no send before"
                );
                composed |= p.presence == Presence::Composing && p.status == 200;
            }
            Request::Send(s) if s.sent() => {
                ensure!(!awaiting_pause, "{to}: two sends without a paused between");
                let id = s.id.clone().unwrap_or_default();
                ensure!(
                    composed || sent.contains(&id),
                    "{to}: {id} sent without typing"
                );
                sent.insert(id);
                composed = false;
                awaiting_pause = !s.reply_lost;
            }
            Request::Send(_) => {}
        }
    }
    ensure!(
        !awaiting_pause,
        "{to}: the last send not followed by paused"
    );
    Ok(())
}

/// Nothing asked of the banned session while banned, past the grace; its
/// messages waited, none running or dead, the session paused.
fn check_ban(requests: &[Request], sends: &[&SendRecord], t: &Timeline) -> TestResult {
    let quiet = t.ban_at + BAN_GRACE..t.unban_at;
    let asked = requests
        .iter()
        .map(about)
        .filter(|(i, _, at)| *i == BANNED && quiet.contains(at))
        .count();
    ensure_eq!(asked, 0, "{BANNED}: requests while banned");
    let sent_before: HashSet<&str> = sends
        .iter()
        .filter(|s| s.instance == BANNED && s.sent() && s.at < t.unban_at)
        .filter_map(|s| s.id.as_deref())
        .collect();
    let h = &t.held;
    let waiting = (PER_SESSION - sent_before.len()) as u64;
    ensure!(waiting > 0, "{BANNED}: every message sent before the ban");
    ensure_eq!(
        (h.paused, h.running, h.waiting),
        (true, 0, waiting),
        "{BANNED} while banned: paused, running, waiting"
    );
    ensure_eq!(t.dead_while_banned, 0, "dead messages during the ban");
    Ok(())
}

/// One worker as each process (or task) runs it: a pipeline over its own
/// HTTP transport, its supervisor, and a worker on the queue.
pub struct Running {
    worker: WorkerHandle,
    supervisor: JoinHandle<()>,
}

/// Starts one worker on `store` sending through the bridge at `bridge`.
pub async fn start_worker<B: Backend>(store: B, bridge: &str) -> Result<Running, Failure> {
    let mut config = HttpBridgeConfig::new(bridge)
        .paths(Paths::gateway())
        .client_id_field("id")
        .status_every(Duration::from_millis(50))
        .events_wait(Duration::from_millis(500))
        .timeout(CLIENT_TIMEOUT);
    for session in SESSIONS {
        config = config.instance(session);
    }
    let transport: HttpBridge = config
        .start()
        .await
        .map_err(|e| Failure::new(format!("cannot start the HTTP transport: {e}")))?;
    let pipeline_config = PipelineConfig::default()
        .typing(Typing::Off)
        .resume_poll(Duration::from_millis(50));
    let pipeline =
        SendPipeline::with_config(Arc::new(transport), store.clone(), pipeline_config).watch(QUEUE);
    let supervisor = tokio::spawn(pipeline.supervise());
    let worker = Worker::new(store).handle(QUEUE, pipeline).start().await;
    match worker {
        Ok(worker) => Ok(Running { worker, supervisor }),
        Err(e) => {
            supervisor.abort();
            Err(e.into())
        }
    }
}

impl Running {
    /// Shuts the worker down, then the supervisor.
    pub async fn stop(self) -> TestResult {
        let stopped = stop_within(self.worker, Duration::from_secs(5)).await;
        self.supervisor.abort();
        stopped.map(drop)
    }
}

/// [`WORKERS`] workers in this process, for a store that cannot be shared
/// across processes.
pub struct InProcess(Vec<Running>);

impl InProcess {
    /// Starts them on `store`, sending through the bridge at `bridge`.
    pub async fn start<B: Backend>(store: B, bridge: String) -> Result<Self, Failure> {
        let mut running = Vec::with_capacity(WORKERS);
        for _ in 0..WORKERS {
            running.push(start_worker(store.clone(), &bridge).await?);
        }
        Ok(Self(running))
    }
}

impl Workers for InProcess {
    async fn stop(self) -> TestResult {
        let mut result = Ok(());
        for running in self.0 {
            let stopped = running.stop().await;
            result = result.and(stopped);
        }
        result
    }
}

/// [`WORKERS`] worker processes: this test binary run again for one
/// ignored test that calls [`serve`]. A process serves until its stdin
/// closes, which also happens when the test dies: none outlives it.
pub struct Processes(Vec<Child>);

impl Processes {
    /// Starts them, running only `worker_test`, with the bridge's URL in
    /// [`BRIDGE_ENV`] and `env` (where the store is) in their environment.
    pub fn spawn(worker_test: &str, bridge: &str, env: &[(&str, &str)]) -> Result<Self, Failure> {
        let exe = std::env::current_exe()
            .map_err(|e| Failure::new(format!("cannot find the test binary: {e}")))?;
        let mut children = Vec::with_capacity(WORKERS);
        for _ in 0..WORKERS {
            let child = Command::new(&exe)
                .args([worker_test, "--exact", "--ignored", "--nocapture"])
                .env(BRIDGE_ENV, bridge)
                .envs(env.iter().copied())
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .spawn()
                .map_err(|e| Failure::new(format!("cannot start a worker process: {e}")))?;
            children.push(child);
        }
        Ok(Self(children))
    }
}

impl Workers for Processes {
    async fn stop(mut self) -> TestResult {
        let mut children = std::mem::take(&mut self.0);
        // All at once: they shut down side by side.
        for child in &mut children {
            drop(child.stdin.take());
        }
        let mut result = Ok(());
        for mut child in children {
            let exited = match exit_within(&mut child, Duration::from_secs(15)).await {
                Some(status) if status.success() => Ok(()),
                Some(status) => Err(Failure::new(format!("a worker process failed: {status}"))),
                None => Err(Failure::new("a worker process did not stop; killed")),
            };
            result = result.and(exited);
        }
        result
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The child's exit status once it exits within `within`; else it is
/// killed and `None`.
async fn exit_within(child: &mut Child, within: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// In a worker process: the bridge's URL [`Processes::spawn`] passed, or
/// `None` when the worker test was run by hand.
pub fn bridge_url() -> Option<String> {
    std::env::var(BRIDGE_ENV).ok()
}

/// In a worker process: runs a worker on `store` until stdin closes.
pub async fn serve<B: Backend>(store: B, bridge: &str) -> TestResult {
    let running = start_worker(store, bridge).await?;
    let (closed, on_close) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        let _ = closed.send(());
    });
    let _ = on_close.await;
    running.stop().await
}
