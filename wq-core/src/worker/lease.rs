//! Heartbeats: while handlers run, their leases are extended in one batch
//! per queue. A lease the store refuses is lost: the handler is stopped and
//! nothing is acknowledged, since another worker may hold the job now.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::time::MissedTickBehavior;

use super::{Interrupt, QueueRuntime, Shared};
use crate::Backend;
use crate::job::JobId;
use crate::store::{ExtendOutcome, LeaseRef};

pub(crate) async fn run<B: Backend>(shared: Arc<Shared<B>>, queues: Vec<Arc<QueueRuntime>>) {
    let Some(period) = queues.iter().map(|q| q.config.heartbeat()).min() else {
        return;
    };
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            biased;
            () = shared.control.done.cancelled() => return,
            _ = tick.tick() => {}
        }
        for q in &queues {
            extend_queue(&shared, q).await;
        }
    }
}

async fn extend_queue<B: Backend>(shared: &Shared<B>, queue: &QueueRuntime) {
    let leases: Vec<LeaseRef> = shared
        .control
        .inflight
        .lock()
        .iter()
        .filter(|(_, f)| f.queue == queue.index && f.interrupt.is_none())
        .map(|(id, f)| LeaseRef {
            id: *id,
            token: f.token,
        })
        .collect();
    if leases.is_empty() {
        return;
    }
    let now = shared.clock.now();
    let until = now + queue.config.lease;
    match shared.backend.extend(&leases, until, now).await {
        Ok(outcomes) => interrupt_lost(shared, &leases, &outcomes),
        Err(e) => {
            tracing::warn!(error = %e, queue = %queue.name, jobs = leases.len(), "lease extension failed; retrying at the next heartbeat");
        }
    }
}

fn interrupt_lost<B: Backend>(shared: &Shared<B>, leases: &[LeaseRef], outcomes: &[ExtendOutcome]) {
    let stops: HashMap<JobId, Interrupt> = leases
        .iter()
        .zip(outcomes)
        .filter_map(|(l, o)| match o {
            ExtendOutcome::Extended => None,
            ExtendOutcome::Lost => Some((l.id, Interrupt::LeaseLost)),
            ExtendOutcome::CancelRequested => Some((l.id, Interrupt::CancelRequested)),
        })
        .collect();
    if stops.is_empty() {
        return;
    }
    let mut inflight = shared.control.inflight.lock();
    for (id, why) in stops {
        if let Some(f) = inflight.get_mut(&id) {
            f.interrupt = Some(why);
            f.cancel.cancel();
        }
    }
}
