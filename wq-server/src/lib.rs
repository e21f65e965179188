//! # wq-server
//!
//! The service an operator runs around wq's queues: an HTTP API that
//! stores jobs for the application and lets an operator see and fix them,
//! Prometheus metrics, health checks, and the `wq` command (`wq serve`,
//! `wq stats`, `wq dead retry`, ...). Everything goes through
//! [`wq::Client`], so it works the same on every backend.
//!
//! [`Server::router`] is an axum [`Router`] an application can serve on its
//! own or mount in its own axum server:
//!
//! | path | what |
//! |---|---|
//! | `POST /api/jobs`, `POST /api/jobs/batch` | store a job (`Idempotency-Key` header) or a batch, all or none |
//! | `POST /api/messages` | a WhatsApp message for the send pipeline (feature `whatsapp`) |
//! | `GET /api/jobs?queue&state&group&tenant&idempotency_key&after&limit` | list, a page at a time |
//! | `GET /api/jobs/{id}`, `.../position`, `POST .../cancel` | one job with its runs; where it stands; cancel |
//! | `GET /api/queues`, `GET /api/queues/{queue}` | queues with counts by state |
//! | `POST /api/queues/{queue}/pause`, `.../resume` | stop and start claiming |
//! | `POST /api/queues/{queue}/dead/retry`, `.../dead/purge` | the dead-letter queue, by ids or whole |
//! | `GET /api/queues/{queue}/sessions`, `POST .../sessions/{session}/pause`, `.../resume` | sending numbers |
//! | `GET /api/queues/{queue}/groups/blocked`, `POST .../groups/{group}/unblock`, `.../skip` | contacts held by a dead or retrying head |
//! | `GET /api/openapi.json` | the OpenAPI document |
//! | `GET /health`, `GET /ready`, `GET /metrics` | health, readiness, Prometheus |
//! | `GET /ui/` (and `GET /` to it) | the dashboard: queues, throughput, jobs, dead letters, sessions, blocked groups |
//!
//! `/api/` requires `Authorization: Bearer <token>` (see [`Auth`]); a token
//! scoped to a tenant sees and touches that tenant's jobs only. Errors are
//! JSON, `{"error": {"code", "message", "field"}}`: 422 for a value refused,
//! 404 for an unknown queue or job, 401 and 403 for tokens.
//!
//! ```
//! use wq::{Client, MemoryStore, QueueConfig};
//! use wq_server::{Auth, Server};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let client = Client::new(MemoryStore::new());
//! client.declare_queue(QueueConfig::new("message")).await?;
//! let app = Server::new(client, Auth::tokens().admin("secret")).router();
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! println!("listening on {}", listener.local_addr()?);
//! // A real server runs until a signal; this one stops at once.
//! axum::serve(listener, app)
//!     .with_graceful_shutdown(async {})
//!     .await?;
//! # Ok(())
//! # }
//! ```

mod auth;
mod dashboard;
mod error;
mod health;
mod jobs;
#[cfg(feature = "whatsapp")]
mod messages;
pub mod metrics;
mod openapi;
mod queues;
mod state;
pub mod view;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use wq::{Backend, Client};

pub use auth::{Auth, Caller, Scope};
pub use error::{ApiError, ErrorBody};
pub use health::{Health, HealthPolicy, WorkerProbe};
pub use openapi::{ApiDoc, document as openapi_document};
pub use state::AppState;

/// The largest request body: a batch of up to 10,000 jobs.
const MAX_BODY: usize = 16 * 1024 * 1024;

/// The HTTP service over one client.
pub struct Server<B> {
    state: AppState<B>,
}

impl<B: Backend> Server<B> {
    /// A service acting through `client`, accepting `auth`'s tokens.
    pub fn new(client: Client<B>, auth: Auth) -> Self {
        Self {
            state: AppState {
                client,
                auth,
                health: Arc::new(HealthPolicy::default()),
                throughput: Arc::default(),
            },
        }
    }

    /// What `/health` judges by.
    pub fn health(mut self, policy: HealthPolicy) -> Self {
        self.state.health = Arc::new(policy);
        self
    }

    /// The router: the API under `/api/`, health and metrics at the root.
    pub fn router(self) -> Router {
        let api = Router::new()
            .route("/jobs", post(jobs::enqueue::<B>).get(jobs::list::<B>))
            .route("/jobs/batch", post(jobs::enqueue_batch::<B>))
            .route("/jobs/{id}", get(jobs::get::<B>))
            .route("/jobs/{id}/position", get(jobs::position::<B>))
            .route("/jobs/{id}/cancel", post(jobs::cancel::<B>))
            .route("/queues", get(queues::list::<B>))
            .route("/queues/{queue}", get(queues::get::<B>))
            .route("/queues/{queue}/pause", post(queues::pause::<B>))
            .route("/queues/{queue}/resume", post(queues::resume::<B>))
            .route("/queues/{queue}/dead/retry", post(queues::retry_dead::<B>))
            .route("/queues/{queue}/dead/purge", post(queues::purge_dead::<B>))
            .route("/queues/{queue}/sessions", get(queues::sessions::<B>))
            .route(
                "/queues/{queue}/sessions/{session}/pause",
                post(queues::pause_session::<B>),
            )
            .route(
                "/queues/{queue}/sessions/{session}/resume",
                post(queues::resume_session::<B>),
            )
            .route("/queues/{queue}/groups/blocked", get(queues::blocked::<B>))
            .route(
                "/queues/{queue}/groups/{group}/unblock",
                post(queues::unblock::<B>),
            )
            .route(
                "/queues/{queue}/groups/{group}/skip",
                post(queues::skip::<B>),
            )
            .route("/openapi.json", get(openapi_json));
        #[cfg(feature = "whatsapp")]
        let api = api.route("/messages", post(messages::send::<B>));
        Router::new()
            .nest("/api", api)
            .route("/health", get(health::health::<B>))
            .route("/ready", get(health::ready::<B>))
            .route("/metrics", get(metrics::scrape::<B>))
            .merge(dashboard::routes())
            .fallback(not_found)
            .method_not_allowed_fallback(method_not_allowed)
            .layer(DefaultBodyLimit::max(MAX_BODY))
            .with_state(self.state)
    }
}

async fn openapi_json() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(openapi::document())
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such path")
}

async fn method_not_allowed() -> ApiError {
    ApiError::method_not_allowed()
}
