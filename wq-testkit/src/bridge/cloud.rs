//! The Cloud API's messages endpoint, and the webhook statuses Meta would
//! POST for it.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::{Path, State as Shared};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use wq_whatsapp::AckLevel;

use super::state::{Incoming, Receipt, State, Verdict, refusal_status};
use super::{Dialect, Fault};

pub(super) fn routes() -> axum::Router<Arc<State>> {
    axum::Router::new().route("/{phone_number_id}/messages", post(send))
}

/// A Graph API error answer.
fn graph_error(status: StatusCode, code: Option<i64>, message: &str) -> Response {
    let body = json!({ "error": { "message": message, "type": "OAuthException", "code": code } });
    (status, Json(body)).into_response()
}

fn authorized(state: &State, headers: &HeaderMap) -> bool {
    let Some(token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    state.config.key.as_ref().is_none_or(|key| key == token)
}

/// The message's type, named as the gateway dialect names it.
fn content_type(body: &Value) -> Option<String> {
    let kind = body["type"].as_str()?;
    body.get(kind)?;
    Some(if kind == "contacts" { "contact" } else { kind }.to_owned())
}

async fn send(
    Shared(state): Shared<Arc<State>>,
    Path(phone_number_id): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let at = Instant::now();
    if !authorized(&state, &headers) {
        let message = "Invalid OAuth access token";
        return graph_error(StatusCode::UNAUTHORIZED, Some(190), message);
    }
    let content_type = content_type(&body).filter(|_| body["messaging_product"] == "whatsapp");
    let Some(content_type) = content_type else {
        return graph_error(StatusCode::BAD_REQUEST, Some(100), "Invalid parameter");
    };
    let to = body["to"].as_str().unwrap_or_default().to_owned();
    let incoming = Incoming {
        at,
        dialect: Dialect::Cloud,
        instance: phone_number_id,
        to: to.clone(),
        content_type,
        client_id: None,
        body,
    };
    let verdict = state.take(incoming);
    let lost = matches!(verdict, Verdict::Sent { lost: true, .. });
    if !state.delay(lost).await {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    match verdict {
        Verdict::Sent { id, .. } => {
            let body = json!({
                "messaging_product": "whatsapp",
                "contacts": [{ "input": to, "wa_id": to }],
                "messages": [{ "id": id }],
            });
            Json(body).into_response()
        }
        Verdict::Disconnected => graph_error(
            StatusCode::SERVICE_UNAVAILABLE,
            Some(131_016),
            "Service unavailable",
        ),
        Verdict::Banned(code) => graph_error(StatusCode::BAD_REQUEST, Some(code), "Restricted"),
        Verdict::Refused(fault) => refused(&fault),
    }
}

fn refused(fault: &Fault) -> Response {
    let status = StatusCode::from_u16(refusal_status(fault)).unwrap_or(StatusCode::BAD_REQUEST);
    match fault {
        Fault::RateLimited {
            retry_after,
            contact,
        } => {
            let code = contact.then_some(131_056);
            let mut answer = graph_error(status, code, "Rate limit hit");
            if let Ok(wait) = retry_after.as_secs_f64().to_string().parse() {
                answer.headers_mut().insert(header::RETRY_AFTER, wait);
            }
            answer
        }
        Fault::Code(code) => graph_error(status, Some(*code), "Refused"),
        Fault::ServerError | Fault::LoseReply => {
            graph_error(status, Some(131_000), "Something went wrong")
        }
    }
}

/// The webhook notification telling `ack` for a Cloud send.
pub(super) fn status_webhook(r: &Receipt, ack: AckLevel) -> Value {
    let word = match ack {
        AckLevel::Written | AckLevel::Server => "sent",
        AckLevel::Delivered => "delivered",
        AckLevel::Read => "read",
        AckLevel::Played => "played",
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let status = json!({
        "id": r.id,
        "status": word,
        "timestamp": now.as_secs().to_string(),
        "recipient_id": r.to,
    });
    let value = json!({
        "messaging_product": "whatsapp",
        "metadata": { "display_phone_number": r.instance, "phone_number_id": r.instance },
        "statuses": [status],
    });
    json!({
        "object": "whatsapp_business_account",
        "entry": [{ "id": "0", "changes": [{ "field": "messages", "value": value }] }],
    })
}
