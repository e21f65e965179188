//! `/health` and `/ready`: what a load balancer and an alert ask.
//!
//! `/ready` answers 200 once the store answers. `/health` judges the
//! service: unhealthy when the store does not answer or the backlog (jobs
//! due and not yet started, over every queue) passes the unhealthy mark,
//! or a worker this process watches has stopped; degraded past the
//! degraded mark; healthy otherwise. Unhealthy answers 503.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;
use wq::Backend;

use crate::state::AppState;

/// How long the store may take to answer a health check.
const STORE_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether a worker is alive, as the process that runs it tells.
pub type WorkerProbe = Arc<dyn Fn() -> bool + Send + Sync>;

/// What `/health` judges by.
#[derive(Clone)]
pub struct HealthPolicy {
    /// A backlog above this many due jobs is degraded.
    pub degraded_backlog: u64,
    /// A backlog above this many due jobs is unhealthy.
    pub unhealthy_backlog: u64,
    /// The workers this process runs, if any.
    pub workers: Vec<WorkerProbe>,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        Self {
            degraded_backlog: 10_000,
            unhealthy_backlog: 100_000,
            workers: Vec::new(),
        }
    }
}

/// The service's health.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `healthy`, `degraded` or `unhealthy`.
    pub status: &'static str,
    /// Whether the store answered, and how fast.
    pub store: StoreHealth,
    /// Jobs due and not yet started, over every queue.
    pub backlog: Option<u64>,
    /// Workers of this process alive, of those it watches.
    pub workers: Option<WorkersHealth>,
}

/// The store's part of the health.
#[derive(Debug, Serialize, ToSchema)]
pub struct StoreHealth {
    /// Whether it answered in time.
    pub reachable: bool,
    /// How long it took, in milliseconds.
    pub latency_ms: f64,
}

/// The workers' part of the health.
#[derive(Debug, Serialize, ToSchema)]
pub struct WorkersHealth {
    /// Alive.
    pub alive: usize,
    /// Watched.
    pub watched: usize,
}

/// The service's health: 200 when healthy or degraded, 503 when unhealthy.
#[utoipa::path(get, path = "/health", tag = "service",
    responses((status = 200, body = Health), (status = 503, body = Health)))]
pub async fn health<B: Backend>(State(st): State<AppState<B>>) -> (StatusCode, axum::Json<Health>) {
    let started = Instant::now();
    let backlog = tokio::time::timeout(STORE_TIMEOUT, backlog(&st)).await;
    let latency_ms = started.elapsed().as_secs_f64() * 1_000.0;
    let backlog = backlog.ok().and_then(Result::ok);
    let workers = (!st.health.workers.is_empty()).then(|| WorkersHealth {
        alive: st.health.workers.iter().filter(|w| w()).count(),
        watched: st.health.workers.len(),
    });
    let policy = &st.health;
    let status = match (backlog, &workers) {
        (None, _) => "unhealthy",
        (_, Some(w)) if w.alive < w.watched => "unhealthy",
        (Some(b), _) if b > policy.unhealthy_backlog => "unhealthy",
        (Some(b), _) if b > policy.degraded_backlog => "degraded",
        _ => "healthy",
    };
    let code = if status == "unhealthy" {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (
        code,
        axum::Json(Health {
            status,
            store: StoreHealth {
                reachable: backlog.is_some(),
                latency_ms,
            },
            backlog,
            workers,
        }),
    )
}

/// 200 once the store answers, else 503.
#[utoipa::path(get, path = "/ready", tag = "service",
    responses((status = 200), (status = 503)))]
pub async fn ready<B: Backend>(State(st): State<AppState<B>>) -> StatusCode {
    match tokio::time::timeout(STORE_TIMEOUT, st.client().queues()).await {
        Ok(Ok(_)) => StatusCode::OK,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// Due jobs not yet started, over every queue.
async fn backlog<B: Backend>(st: &AppState<B>) -> Result<u64, wq::Error> {
    let mut total = 0;
    for q in st.client().queues().await? {
        total += st.client().counts(q.config.name.as_str()).await?.available;
    }
    Ok(total)
}
