//! Once-per-cluster work under a leader lock: rescue of lapsed leases,
//! promotion of due jobs, pruning past retention, audits of the store's
//! invariants. Every worker runs this loop; only the one holding the lock
//! does the work.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::time::MissedTickBehavior;

use super::stats::Stats;
use super::{QueueRuntime, Shared};
use crate::events::{EventKind, JobEvent, listening};
use crate::lock::LockLease;
use crate::repeat::Repeat;
use crate::store::RescueReport;
use crate::time::Timestamp;
use crate::{Backend, Client};

/// The lock that elects the maintenance leader.
pub const LEADER_LOCK: &str = "wq:maintenance";

/// Jobs rescued or pruned per round trip.
const BATCH: usize = 1_000;

/// How often the leader prunes unless told otherwise.
pub(crate) const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// The shortest leader lock a worker accepts: renewed three times per
/// lifetime, a shorter one would lapse under a few slow round trips.
pub(crate) const MIN_LEADER_LEASE: Duration = Duration::from_millis(100);

/// The bounds of the default leader lock, which follows the shortest job
/// lease: below 500 ms leadership would change hands on a loaded machine
/// for nothing; above 10 s a crashed leader would hold up rescue longer than
/// the job leases do.
const DEFAULT_LEADER_LEASE: (Duration, Duration) =
    (Duration::from_millis(500), Duration::from_secs(10));

/// When the maintenance loop runs, and how long its leader lock lasts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Timing {
    /// Between two rounds (rescue, promotion, lock renewal).
    pub period: Duration,
    /// The leader lock's time to live.
    pub ttl: Duration,
    /// Between two audits of each queue; `None`: never.
    pub audit_every: Option<Duration>,
    /// Between two prunes.
    pub prune_every: Duration,
}

impl Timing {
    /// The timing of a worker whose queues' shortest job lease is
    /// `shortest_lease`, with the leader lock set to `leader_lease` if given.
    ///
    /// A crashed leader's jobs wait for both their leases and its lock to
    /// lapse, and then for the next round of whoever leads next; a lock no
    /// longer than the job lease and a round a third of it keep that near
    /// one lease.
    pub fn new(shortest_lease: Option<Duration>, leader_lease: Option<Duration>) -> Self {
        let (low, high) = DEFAULT_LEADER_LEASE;
        let ttl = leader_lease.unwrap_or_else(|| shortest_lease.unwrap_or(high).clamp(low, high));
        // The lock is renewed each round: three rounds per lifetime.
        let period = shortest_lease
            .map_or(Duration::from_secs(1), |l| l / 3)
            .min(ttl / 3)
            .clamp(Duration::from_millis(20), Duration::from_secs(1));
        Self {
            period,
            ttl,
            audit_every: None,
            prune_every: PRUNE_EVERY,
        }
    }

    /// Prunes every `every`.
    pub fn prune_every(self, every: Duration) -> Self {
        Self {
            prune_every: every,
            ..self
        }
    }

    /// Audits each queue every `every`, or never.
    pub fn audit_every(self, every: Option<Duration>) -> Self {
        Self {
            audit_every: every,
            ..self
        }
    }
}

pub(crate) async fn run<B: Backend>(
    shared: Arc<Shared<B>>,
    queues: Vec<Arc<QueueRuntime>>,
    repeats: Vec<Repeat>,
    timing: Timing,
) {
    let client = Client::with_clock(shared.backend.clone(), shared.clock.clone());
    let mut enqueued: HashMap<Arc<str>, Timestamp> = HashMap::new();
    let Timing {
        period,
        ttl,
        audit_every,
        prune_every,
    } = timing;
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut leader: Option<LockLease> = None;
    let mut last_prune: Option<Instant> = None;
    let mut last_audit: Option<Instant> = None;
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
        if last_prune.is_none_or(|t| t.elapsed() >= prune_every) {
            prune(&shared).await;
            last_prune = Some(Instant::now());
        }
        if audit_every.is_some_and(|every| last_audit.is_none_or(|t| t.elapsed() >= every)) {
            audit(&shared, &queues).await;
            last_audit = Some(Instant::now());
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
        let Some(slot) = r.slot(now) else {
            continue;
        };
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
                tell_rescued(shared, &report);
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

/// Tells the worker's events of each job a rescue took back.
fn tell_rescued<B: Backend>(shared: &Shared<B>, report: &RescueReport) {
    let Some(events) = listening(&shared.events) else {
        return;
    };
    let at = shared.clock.now();
    for job in &report.jobs {
        events.send(JobEvent {
            id: job.id,
            queue: job.queue.clone(),
            at,
            kind: EventKind::Rescued { state: job.state },
        });
    }
}

/// Audits and repairs each served queue. An anomaly is a bug in the store,
/// so it is logged at `error`, not `warn`: it means jobs that would have
/// waited forever, run out of order or never been rescued.
async fn audit<B: Backend>(shared: &Shared<B>, queues: &[Arc<QueueRuntime>]) {
    let stats = &shared.control.stats;
    for q in queues {
        match shared
            .backend
            .audit(&q.name, shared.clock.now(), true)
            .await
        {
            Ok(report) => {
                Stats::bump(&stats.audits, 1);
                Stats::bump(&stats.anomalies, report.anomalies.len() as u64);
                for a in &report.anomalies {
                    tracing::error!(
                        queue = %a.queue,
                        job = %a.job,
                        group = a.group.as_ref().map(|g| g.as_str()),
                        kind = ?a.kind,
                        repaired = a.repaired,
                        "store invariant broken: {a}"
                    );
                }
            }
            Err(e) => tracing::warn!(error = %e, queue = %q.name, "audit failed"),
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

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn the_leader_lock_follows_the_shortest_job_lease() {
        let t = |lease: Option<u64>, leader: Option<u64>| {
            let t = Timing::new(lease.map(MS), leader.map(MS));
            (t.period.as_millis(), t.ttl.as_millis())
        };
        assert_eq!(t(Some(5_000), None), (1_000, 5_000), "a 5 s job lease");
        assert_eq!(
            t(Some(30_000), None),
            (1_000, 10_000),
            "the default 30 s lease"
        );
        assert_eq!(
            t(Some(300), None),
            (100, 500),
            "a lease shorter than the floor"
        );
        assert_eq!(
            t(Some(30), None),
            (20, 500),
            "rounds never faster than 20 ms"
        );
        assert_eq!(t(None, None), (1_000, 10_000), "no queues");
        assert_eq!(
            t(Some(5_000), Some(1_200)),
            (400, 1_200),
            "a set lock renews thrice"
        );
        assert_eq!(
            t(Some(5_000), Some(60_000)),
            (1_000, 60_000),
            "a long set lock"
        );
    }
}
