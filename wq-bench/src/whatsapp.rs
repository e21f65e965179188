//! The `wa` workload: WhatsApp messages through the real send pipeline
//! (`SendPipeline` and its supervisor) over the HTTP gateway transport
//! (`HttpBridge`), against the fake bridge on a local port.
//!
//! 50 sessions × 400 contacts, each message typing 1–3 s (drawn per
//! message) before its send, every session at a preset's limits. Under the
//! unofficial preset 20,000 messages would take over half an hour, so each
//! preset runs for `--seconds` (or until every message is sent) and the
//! figure is messages/s against what the sessions' rates allow.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rand::RngExt;
use wq_core::{
    Allowance, Client, Enqueue, Handler, JobContext, JobError, JobId, QueueName, QueueOptions,
    Worker,
};
use wq_testkit::bridge::{FakeBridge, FakeConfig};
use wq_whatsapp::http::{HttpBridge, HttpBridgeConfig, Paths};
use wq_whatsapp::{EnqueueMessage, OutboundMessage, Preset, SendPipeline};

use crate::report::Report;
use crate::workloads::{Factory, Params};

const QUEUE: &str = "message";
const SESSIONS: u64 = 50;
const CONTACTS_PER_SESSION: u64 = 400;
/// The fake bridge's answer time for every request.
const BRIDGE_LATENCY: Duration = Duration::from_millis(5);
const TYPING_MS: std::ops::RangeInclusive<u64> = 1_000..=3_000;
/// One slot per session: if typing held a slot, every slot would be busy.
const SLOTS: usize = SESSIONS as usize;
const SAMPLE_EVERY: Duration = Duration::from_millis(10);
const TEXT: &str = "Olá! Seu pedido #48213 saiu para entrega e chega hoje entre 14h e 16h.";

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// What the handler wrapped around the pipeline saw: when each message's
/// first step started and how long it types, and, once sent, the time
/// from that start to the send minus the typing.
#[derive(Default)]
struct Probe {
    started: Mutex<HashMap<JobId, (Instant, u64)>>,
    overhead: Mutex<Vec<Duration>>,
    sent: AtomicU64,
}

/// `wa`: the unofficial preset (12 a minute per session) and the Cloud
/// API's limits (80/s and 16 at once per session) over the same gateway;
/// both type, since every message sets its own typing time.
pub async fn wa<F: Factory>(f: &F, p: &Params) -> Result<Vec<Report>, String> {
    let mut out = Vec::new();
    // A number at the Cloud API's 100K tier: 400 contacts per session
    // would pass the first tier's 250 new chats a day, and the workload
    // measures sending, not waiting for a quota.
    let mut cloud = Preset::cloud_api();
    cloud.new_chats = Allowance::new(100_000, Duration::from_secs(24 * 3600));
    for (name, preset) in [
        ("WA-unofficial", Preset::unofficial()),
        ("WA-cloud-limits", cloud),
    ] {
        out.push(run(f, p, name, &preset).await?);
    }
    Ok(out)
}

async fn run<F: Factory>(f: &F, p: &Params, name: &str, preset: &Preset) -> Result<Report, String> {
    let backend = f.fresh().await?;
    let client = Client::new(backend.clone());
    let queue = QueueName::from(QUEUE);
    client
        .declare_queue(preset.queue(QUEUE))
        .await
        .map_err(err)?;
    for s in 0..SESSIONS {
        preset
            .declare_session(&backend, &queue, &format!("s{s}"))
            .await
            .map_err(err)?;
    }
    let bridge = FakeBridge::start(FakeConfig {
        latency: BRIDGE_LATENCY,
        ..FakeConfig::default()
    })
    .await
    .map_err(err)?;
    let transport = HttpBridgeConfig::new(bridge.url())
        .paths(Paths::gateway())
        .client_id_field("id");
    let transport = (0..SESSIONS)
        .fold(transport, |c, s| c.instance(format!("s{s}")))
        .start()
        .await
        .map_err(err)?;
    enqueue(&client, p.jobs).await?;

    let rate = preset.session.rate.ok_or("the preset has no rate")?;
    let ideal = SESSIONS as f64 / rate.spacing().as_secs_f64();
    eprintln!(
        "{name}: {} messages over {SESSIONS} sessions × {CONTACTS_PER_SESSION} contacts, \
         typing 1-3 s, bridge latency {BRIDGE_LATENCY:?}, {SLOTS} slots, limits allow \
         {ideal:.0}/s, for up to {:?}",
        p.jobs, p.duration
    );
    let mut outcome = measure(&backend, transport, p, preset).await?;
    let sends = bridge.sends();
    drop(bridge);
    f.cleanup(backend).await;

    let steady = steady_rate(&sends);
    let mut r =
        Report::new(f.name(), name, outcome.sent, outcome.elapsed).latencies(&mut outcome.overhead);
    r.groups = Some(SESSIONS * CONTACTS_PER_SESSION);
    r.concurrency = Some(SLOTS);
    r.of_ideal = Some(steady / ideal);
    eprintln!(
        "{name}: {} sent in {:.1} s = {:.1}/s overall; steady {steady:.1}/s = {:.1}% of \
         {ideal:.0}/s; slots busy {:.2} avg ({} most) of {SLOTS} while {:.1} messages \
         were between first step and send; first step to send minus typing p50 {:.1} ms \
         p99 {:.1} ms; worker: {} claimed, {} stepped, {} completed",
        outcome.sent,
        r.seconds,
        r.jobs_per_sec,
        100.0 * steady / ideal,
        outcome.busy_avg,
        outcome.busy_most,
        outcome.typing_avg,
        r.p50_ms.unwrap_or(0.0),
        r.p99_ms.unwrap_or(0.0),
        outcome.claimed,
        outcome.stepped,
        outcome.completed,
    );
    Ok(r)
}

/// Message `i` goes from session `i % 50` to contact `(i / 50) % 400` of
/// it, so the sessions fill evenly and a contact's messages queue in order.
async fn enqueue<B: wq_core::Store>(client: &Client<B>, jobs: u64) -> Result<(), String> {
    let mut rng = rand::rng();
    let mut next = 0;
    while next < jobs {
        let end = (next + 5_000).min(jobs);
        let mut batch = Vec::with_capacity((end - next) as usize);
        for i in next..end {
            let s = i % SESSIONS;
            let c = (i / SESSIONS) % CONTACTS_PER_SESSION;
            let typing = Duration::from_millis(rng.random_range(TYPING_MS));
            let msg =
                OutboundMessage::text(format!("s{s}"), &format!("5511{:09}", s * 1_000 + c), TEXT)
                    .map_err(err)?
                    .with_typing(typing);
            batch.push(Enqueue::message(QUEUE, &msg));
        }
        client.enqueue_many(batch).await.map_err(err)?;
        next = end;
    }
    Ok(())
}

struct Outcome {
    sent: u64,
    elapsed: Duration,
    overhead: Vec<Duration>,
    busy_avg: f64,
    busy_most: usize,
    typing_avg: f64,
    claimed: u64,
    stepped: u64,
    completed: u64,
}

/// Runs the pipeline under a worker for `p.duration` or until `p.jobs`
/// are sent, sampling the busy slots and the messages under way.
async fn measure<B: wq_core::Backend>(
    backend: &B,
    transport: HttpBridge,
    p: &Params,
    preset: &Preset,
) -> Result<Outcome, String> {
    let pipeline = SendPipeline::with_config(
        Arc::new(transport),
        backend.clone(),
        preset.pipeline.clone(),
    );
    let supervisor = tokio::spawn(pipeline.supervise());
    let probe = Arc::new(Probe::default());
    let handler = {
        let probe = probe.clone();
        move |ctx: JobContext| {
            let (pipeline, probe) = (pipeline.clone(), probe.clone());
            async move {
                let id = ctx.id();
                if ctx.step().is_none() {
                    let typing = ctx.payload::<OutboundMessage>()?.typing_ms.unwrap_or(0);
                    probe.started.lock().insert(id, (Instant::now(), typing));
                }
                pipeline.handle(ctx).await?;
                if let Some((at, typing)) = probe.started.lock().remove(&id) {
                    let overhead = at.elapsed().saturating_sub(Duration::from_millis(typing));
                    probe.overhead.lock().push(overhead);
                }
                probe.sent.fetch_add(1, Ordering::Relaxed);
                Ok::<(), JobError>(())
            }
        }
    };
    let started = Instant::now();
    let worker = Worker::new(backend.clone())
        .handle_with(QUEUE, handler, QueueOptions::default().concurrency(SLOTS))
        .start()
        .await
        .map_err(err)?;
    let (mut samples, mut busy, mut busy_most, mut typing) = (0u64, 0usize, 0usize, 0usize);
    while started.elapsed() < p.duration && probe.sent.load(Ordering::Relaxed) < p.jobs {
        tokio::time::sleep(SAMPLE_EVERY).await;
        let running = worker.running();
        busy += running;
        busy_most = busy_most.max(running);
        typing += probe.started.lock().len();
        samples += 1;
    }
    let elapsed = started.elapsed();
    let stats = worker.stats();
    worker.shutdown(Duration::from_secs(10)).await;
    supervisor.abort();
    let samples = samples.max(1) as f64;
    Ok(Outcome {
        sent: probe.sent.load(Ordering::Relaxed),
        elapsed,
        overhead: std::mem::take(&mut *probe.overhead.lock()),
        busy_avg: busy as f64 / samples,
        busy_most,
        typing_avg: typing as f64 / samples,
        claimed: stats.claimed,
        stepped: stats.stepped,
        completed: stats.completed,
    })
}

/// The sessions' sending rates summed, each from its first send to its
/// last as the bridge received them: the first send of a session owes
/// nothing to its rate, so a count over the whole run would flatter short
/// runs.
fn steady_rate(sends: &[wq_testkit::bridge::SendRecord]) -> f64 {
    let mut per: HashMap<&str, (Instant, Instant, u64)> = HashMap::new();
    for s in sends.iter().filter(|s| s.sent()) {
        let e = per.entry(s.instance.as_str()).or_insert((s.at, s.at, 0));
        e.0 = e.0.min(s.at);
        e.1 = e.1.max(s.at);
        e.2 += 1;
    }
    per.values()
        .filter(|(first, last, n)| *n > 1 && last > first)
        .map(|(first, last, n)| (n - 1) as f64 / (*last - *first).as_secs_f64())
        // Not `sum`: an empty f64 sum is -0.0, printed as such.
        .fold(0.0, |a, b| a + b)
}
