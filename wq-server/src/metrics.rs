//! Prometheus metrics at `/metrics`.
//!
//! Counters and the attempt-duration histogram come from the lifecycle
//! events of this process's client and workers ([`record_events`]); each
//! process exports its own and Prometheus sums them. Queue depth by state
//! is read from the store at each scrape, so every process shows the same.
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `wq_jobs_enqueued_total` | counter | queue |
//! | `wq_jobs_completed_total`, `wq_jobs_retried_total`, `wq_jobs_dead_total`, `wq_jobs_cancelled_total` | counter | queue |
//! | `wq_jobs_waited_total` (rate limits, pauses, lost links, steps) | counter | queue, cause |
//! | `wq_lease_rescues_total` | counter | queue |
//! | `wq_events_missed_total` (events this process fell behind on) | counter | |
//! | `wq_attempt_duration_seconds` | histogram | queue, outcome |
//! | `wq_queue_jobs` | gauge | queue, state |
//! | `wq_queue_paused` | gauge | queue |
//! | `wq_queue_finished` (jobs ever finished, from the store: `rate()` of it is the queue's throughput over every process) | gauge | queue |
//! | `wq_queue_oldest_wait_seconds` (how long the job next in line has been due; 0 when none is) | gauge | queue |

use std::collections::HashMap;
use std::sync::OnceLock;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;
use wq::{Backend, Deferral, EventKind, Events, JobId, JobState, Timestamp, WaitCause};

use crate::state::AppState;

/// Attempt durations' buckets, in seconds: a send takes tens of
/// milliseconds, a typing step seconds.
const BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Starts remembered for durations, at most: a process that never sees
/// its runs end (they end elsewhere) must not grow without bound.
const MAX_STARTS: usize = 100_000;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process's Prometheus recorder, installed on first use. Should the
/// application have installed a recorder of its own, wq's metrics go there
/// and `/metrics` renders nothing: a warning says so.
pub fn handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full("wq_attempt_duration_seconds".into()), BUCKETS)
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was installed before wq's: /metrics shows nothing");
        }
        handle
    })
}

/// Records `events` (a client's and its workers') into the metrics until
/// the hub closes.
pub fn record_events(events: &Events) -> JoinHandle<()> {
    handle();
    let mut rx = events.subscribe();
    tokio::spawn(async move {
        let mut starts: HashMap<JobId, Timestamp> = HashMap::new();
        loop {
            match rx.recv().await {
                Ok(e) => observe(&mut starts, e.id, e.queue.as_str(), e.at, &e.kind),
                Err(RecvError::Lagged(n)) => {
                    metrics::counter!("wq_events_missed_total").increment(n);
                }
                Err(RecvError::Closed) => return,
            }
        }
    })
}

fn observe(
    starts: &mut HashMap<JobId, Timestamp>,
    id: JobId,
    queue: &str,
    at: Timestamp,
    kind: &EventKind,
) {
    let q = queue.to_owned();
    let ended = |starts: &mut HashMap<JobId, Timestamp>, outcome: &'static str| {
        if let Some(start) = starts.remove(&id) {
            metrics::histogram!("wq_attempt_duration_seconds", "queue" => q.clone(), "outcome" => outcome)
                .record(at.duration_since(start).as_secs_f64());
        }
    };
    match kind {
        EventKind::Enqueued { .. } => {
            metrics::counter!("wq_jobs_enqueued_total", "queue" => q.clone()).increment(1);
        }
        EventKind::Started { .. } => {
            if starts.len() >= MAX_STARTS {
                starts.clear();
            }
            starts.insert(id, at);
        }
        EventKind::Completed { .. } => {
            ended(starts, "completed");
            metrics::counter!("wq_jobs_completed_total", "queue" => q.clone()).increment(1);
        }
        EventKind::Retried { .. } => {
            ended(starts, "retried");
            metrics::counter!("wq_jobs_retried_total", "queue" => q.clone()).increment(1);
        }
        EventKind::Dead { .. } => {
            ended(starts, "dead");
            metrics::counter!("wq_jobs_dead_total", "queue" => q.clone()).increment(1);
        }
        EventKind::Cancelled => {
            ended(starts, "cancelled");
            metrics::counter!("wq_jobs_cancelled_total", "queue" => q.clone()).increment(1);
        }
        EventKind::Deferred { reason, .. } => {
            ended(starts, "waited");
            metrics::counter!("wq_jobs_waited_total", "queue" => q.clone(), "cause" => cause(reason))
                .increment(1);
        }
        EventKind::Rescued { .. } => {
            starts.remove(&id);
            metrics::counter!("wq_lease_rescues_total", "queue" => q.clone()).increment(1);
        }
        _ => {}
    }
}

/// Why a job waited, as a label.
fn cause(reason: &Deferral) -> &'static str {
    match reason {
        Deferral::Wait { cause, .. } => match cause {
            WaitCause::RateLimited => "rate_limited",
            WaitCause::Disconnected => "disconnected",
            WaitCause::Paused => "paused",
            _ => "other",
        },
        Deferral::Step { .. } => "step",
        Deferral::Released => "released",
        _ => "other",
    }
}

/// The metrics in Prometheus' text format, the queue gauges read now.
#[utoipa::path(get, path = "/metrics", tag = "service",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn scrape<B: Backend>(State(st): State<AppState<B>>) -> impl IntoResponse {
    let handle = handle();
    match st.client().queues().await {
        Ok(queues) => {
            for info in queues {
                let name = info.config.name.to_string();
                metrics::gauge!("wq_queue_paused", "queue" => name.clone()).set(if info.paused {
                    1.0
                } else {
                    0.0
                });
                if let Ok(wait) = st.client().oldest_wait(&name).await {
                    metrics::gauge!("wq_queue_oldest_wait_seconds", "queue" => name.clone())
                        .set(wait.map_or(0.0, |d| d.as_secs_f64()));
                }
                if let Ok(counts) = st.client().counts(&name).await {
                    metrics::gauge!("wq_queue_finished", "queue" => name.clone())
                        .set(counts.finished as f64);
                    for state in JobState::ALL {
                        metrics::gauge!("wq_queue_jobs", "queue" => name.clone(), "state" => state.as_str())
                            .set(counts.get(state) as f64);
                    }
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "metrics: the store did not list its queues"),
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        handle.render(),
    )
}
