//! W2-events: what lifecycle events cost a worker, as W2 with an
//! [`Events`] hub that a subscriber drains, against plain W2.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::RecvError;
use wq_core::{Events, JobEvent};

use crate::report::Report;
use crate::workloads::{Factory, Params, w2_run};

/// Rounds of each run, alternated so that the machine's drift falls on
/// both alike.
const ROUNDS: usize = 2;

/// Plain W2 and W2 with a subscribed hub, alternated; each report of the
/// second kind carries its ratio to the plain run before it.
pub async fn w2_events<F: Factory>(f: &F, p: &Params) -> Result<Vec<Report>, String> {
    let mut out = Vec::new();
    for _ in 0..ROUNDS {
        let plain = w2_run(f, p, "W2", None).await?;
        let events = Events::new(4096);
        let (heard, lost) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let listener = tokio::spawn(listen(events.subscribe(), heard.clone(), lost.clone()));
        let mut with = w2_run(f, p, "W2-events", Some(events)).await?;
        listener.abort();
        with.vs_w2 = Some(plain.jobs_per_sec / with.jobs_per_sec.max(1e-9));
        eprintln!(
            "W2-events: {:.0} jobs/s against {:.0} plain ({:.3}x the time), {} events heard, {} lost to lag",
            with.jobs_per_sec,
            plain.jobs_per_sec,
            with.vs_w2.unwrap_or(0.0),
            heard.load(Ordering::Relaxed),
            lost.load(Ordering::Relaxed)
        );
        out.push(plain);
        out.push(with);
    }
    Ok(out)
}

/// Counts the events heard, and those lost by falling behind, until the
/// hub is gone.
async fn listen(mut rx: Receiver<JobEvent>, heard: Arc<AtomicU64>, lost: Arc<AtomicU64>) {
    loop {
        match rx.recv().await {
            Ok(_) => heard.fetch_add(1, Ordering::Relaxed),
            Err(RecvError::Lagged(n)) => lost.fetch_add(n, Ordering::Relaxed),
            Err(RecvError::Closed) => return,
        };
    }
}
