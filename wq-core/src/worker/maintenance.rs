//! Once-per-cluster work under a leader lock: rescue of lapsed leases,
//! promotion of due jobs, pruning past retention. Every worker runs this
//! loop; only the one holding the lock does the work.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::time::MissedTickBehavior;

use super::{QueueRuntime, Shared};
use crate::lock::LockLease;
use crate::repeat::Repeat;
use crate::time::Timestamp;
use crate::{Backend, Client};

/// The lock that elects the maintenance leader.
pub const LEADER_LOCK: &str = "wq:maintenance";

/// Jobs rescued or pruned per round trip.
const BATCH: usize = 1_000;

/// How often the leader prunes.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

pub(crate) async fn run<B: Backend>(
    shared: Arc<Shared<B>>,
    queues: Vec<Arc<QueueRuntime>>,
    repeats: Vec<Repeat>,
    period: Duration,
) {
    let client = Client::with_clock(shared.backend.clone(), shared.clock.clone());
    let mut enqueued: HashMap<Arc<str>, Timestamp> = HashMap::new();
    let ttl = period * 10;
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut leader: Option<LockLease> = None;
    let mut last_prune: Option<Instant> = None;
    loop {
        tokio::select! {
            biased;
            () = shared.control.done.cancelled() => break,
            _ = tick.tick() => {}
        }
        leader = lead(&shared, leader, ttl).await;
        if leader.is_none() {
            continue;
        }
        rescue(&shared).await;
        for q in &queues {
            if let Err(e) = shared
                .backend
                .promote_due(&q.name, shared.clock.now())
                .await
            {
                tracing::warn!(error = %e, queue = %q.name, "promotion failed");
            }
        }
        enqueue_repeats(&client, &repeats, &mut enqueued).await;
        if last_prune.is_none_or(|t| t.elapsed() >= PRUNE_EVERY) {
            prune(&shared).await;
            last_prune = Some(Instant::now());
        }
    }
    if let Some(lease) = leader
        && !shared.control.is_crashed()
    {
        let _ = shared.backend.release_lock(&lease).await;
    }
}

/// Enqueues each schedule's latest slot, once: `enqueued` remembers what
/// this leader did, the idempotency key covers what an earlier leader did.
async fn enqueue_repeats<B: Backend>(
    client: &Client<B>,
    repeats: &[Repeat],
    enqueued: &mut HashMap<Arc<str>, Timestamp>,
) {
    let now = client.clock().now();
    for r in repeats {
        let slot = r.slot(now);
        if enqueued.get(r.name()) == Some(&slot) {
            continue;
        }
        match client.enqueue(r.occurrence(slot)).await {
            Ok(_) => {
                enqueued.insert(r.name().into(), slot);
            }
            Err(e) => tracing::warn!(error = %e, repeat = r.name(), "repeatable job not enqueued"),
        }
    }
}

async fn lead<B: Backend>(
    shared: &Shared<B>,
    held: Option<LockLease>,
    ttl: Duration,
) -> Option<LockLease> {
    let now = shared.clock.now();
    let result = match &held {
        Some(lease) => shared.backend.renew_lock(lease, ttl, now).await,
        None => {
            shared
                .backend
                .acquire_lock(LEADER_LOCK, &shared.worker_id, ttl, now)
                .await
        }
    };
    match result {
        Ok(lease) => lease,
        Err(e) => {
            tracing::warn!(error = %e, "leader lock failed");
            None
        }
    }
}

async fn rescue<B: Backend>(shared: &Shared<B>) {
    loop {
        match shared.backend.rescue(shared.clock.now(), BATCH).await {
            Ok(report) => {
                if report.total() > 0 {
                    tracing::info!(
                        retried = report.retried,
                        dead = report.dead,
                        cancelled = report.cancelled,
                        "rescued jobs whose lease lapsed"
                    );
                }
                if report.total() < BATCH as u64 {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "rescue failed");
                return;
            }
        }
    }
}

async fn prune<B: Backend>(shared: &Shared<B>) {
    loop {
        match shared.backend.prune(shared.clock.now(), BATCH).await {
            Ok(n) if n < BATCH as u64 => return,
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "prune failed");
                return;
            }
        }
    }
}
