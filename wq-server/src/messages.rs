//! WhatsApp messages through the send pipeline: the job a
//! `wq_whatsapp::SendPipeline` runs, checked (recipient, content limits),
//! grouped by contact and keyed by the sending instance, whose limits and
//! pause apply. The instance is also the job's tenant, so a tenant's token
//! sends from the instance named like its tenant only.

use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::value::RawValue;
use utoipa::ToSchema;
use wq::{Backend, Enqueue, EnqueueMessage as _, OutboundMessage};

use crate::auth::Caller;
use crate::error::{ApiError, Json};
use crate::jobs::{answer, idempotency_header};
use crate::state::AppState;
use crate::view::EnqueuedView;

/// A message to send.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MessageBody {
    /// The queue a send pipeline serves.
    pub queue: String,
    /// The message: `{"instance", "to", "content": {"type": "text", "body"}, "typing_ms"}`.
    #[schema(value_type = Object)]
    pub message: Box<RawValue>,
    /// Lower runs first (default 0).
    pub priority: Option<i16>,
    /// Send no earlier than this many milliseconds from now.
    pub delay_ms: Option<u64>,
}

/// Stores a WhatsApp message for the send pipeline (an `Idempotency-Key`
/// header stores it once).
#[utoipa::path(post, path = "/api/messages", tag = "whatsapp", request_body = MessageBody,
    params(("Idempotency-Key" = Option<String>, Header, description = "The message's idempotency key")),
    responses((status = 201, body = EnqueuedView, description = "Stored"),
               (status = 200, body = EnqueuedView, description = "Its idempotency key named a message stored before"),
               (status = 403, body = crate::error::ErrorBody, description = "Another tenant's instance"),
               (status = 404, body = crate::error::ErrorBody, description = "Unknown queue"),
               (status = 422, body = crate::error::ErrorBody, description = "A field refused")))]
pub async fn send<B: Backend>(
    State(st): State<AppState<B>>,
    Caller(scope): Caller,
    headers: HeaderMap,
    Json(body): Json<MessageBody>,
) -> Result<(StatusCode, axum::Json<EnqueuedView>), ApiError> {
    let msg: OutboundMessage = serde_json::from_str(body.message.get())
        .map_err(|e| ApiError::invalid("message", e.to_string()))?;
    if scope.tenant().is_some_and(|own| own != msg.instance) {
        return Err(ApiError::forbidden(
            "a tenant's token sends from its own instance only",
        ));
    }
    let mut job = Enqueue::message(body.queue.as_str(), &msg);
    if let Some(v) = body.priority {
        job = job.priority(v);
    }
    if let Some(v) = body.delay_ms {
        job = job.delay(Duration::from_millis(v));
    }
    if let Some(key) = idempotency_header(&headers)? {
        job = job.idempotency_key(key);
    }
    Ok(answer(&st.client().enqueue(job).await?))
}
