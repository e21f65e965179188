//! The gateway dialect of `wq_whatsapp::http::HttpBridge`, on Evolution
//! API's paths.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Path, Query, State as Shared};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use wq_whatsapp::{Presence, SessionState};

use super::state::{Incoming, State, Verdict, refusal_status, session_word};
use super::{Dialect, Fault, PresenceRecord, Request};

/// The longest a feed request is held.
const MAX_WAIT: Duration = Duration::from_secs(30);

pub(super) fn routes() -> axum::Router<Arc<State>> {
    axum::Router::new()
        .route("/message/{kind}/{instance}", post(send))
        .route("/chat/sendPresence/{instance}", post(presence))
        .route("/instance/connectionState/{instance}", get(status))
        .route("/message/status/{id}", get(lookup))
        .route("/events", get(events))
}

/// Whether the request carries the key, when one is required.
fn authorized(state: &State, headers: &HeaderMap) -> bool {
    state.config.key.as_ref().is_none_or(|key| {
        headers
            .get("apikey")
            .is_some_and(|v| v.as_bytes() == key.as_bytes())
    })
}

fn unauthorized() -> Response {
    let body = json!({ "error": "unauthorized" });
    (StatusCode::UNAUTHORIZED, Json(body)).into_response()
}

/// The content type a send path and body stand for.
fn content_type(kind: &str, body: &Value) -> Option<String> {
    let name = match kind {
        "sendText" => "text",
        "sendMedia" => body["mediatype"].as_str()?,
        "sendLocation" => "location",
        "sendContact" => "contact",
        "sendButtons" => "interactive",
        "sendReaction" => "reaction",
        _ => return None,
    };
    Some(name.to_owned())
}

async fn send(
    Shared(state): Shared<Arc<State>>,
    Path((kind, instance)): Path<(String, String)>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let at = Instant::now();
    if !authorized(&state, &headers) {
        return unauthorized();
    }
    let Some(content_type) = content_type(&kind, &body) else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({ "error": "no such send" })),
        )
            .into_response();
    };
    let to = body["number"].as_str().unwrap_or_default().to_owned();
    let incoming = Incoming {
        at,
        dialect: Dialect::Gateway,
        instance,
        client_id: body["id"].as_str().map(str::to_owned),
        to: to.clone(),
        content_type,
        body,
    };
    let verdict = state.take(incoming);
    let lost = matches!(verdict, Verdict::Sent { lost: true, .. });
    if !state.delay(lost).await {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    match verdict {
        Verdict::Sent { id, .. } => {
            let key =
                json!({ "id": id, "remoteJid": format!("{to}@s.whatsapp.net"), "fromMe": true });
            (
                StatusCode::CREATED,
                Json(json!({ "key": key, "status": "SERVER_ACK" })),
            )
                .into_response()
        }
        Verdict::Disconnected => disconnected(),
        Verdict::Banned(code) => banned(code),
        Verdict::Refused(fault) => refused(&fault),
    }
}

fn disconnected() -> Response {
    let body = json!({ "error": "session disconnected", "state": "disconnected" });
    (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
}

fn banned(code: i64) -> Response {
    let body = json!({ "error": "banned", "code": code, "state": "banned" });
    (StatusCode::BAD_REQUEST, Json(body)).into_response()
}

fn refused(fault: &Fault) -> Response {
    let status = StatusCode::from_u16(refusal_status(fault)).unwrap_or(StatusCode::BAD_REQUEST);
    match fault {
        Fault::RateLimited {
            retry_after,
            contact,
        } => {
            let scope = if *contact { "contact" } else { "session" };
            let body = json!({ "error": "rate limited", "scope": scope });
            let wait = [("retry-after", retry_after.as_secs_f64().to_string())];
            (status, wait, Json(body)).into_response()
        }
        Fault::Code(code) => {
            (status, Json(json!({ "error": "refused", "code": code }))).into_response()
        }
        Fault::ServerError | Fault::LoseReply => {
            (status, Json(json!({ "error": "internal error" }))).into_response()
        }
    }
}

fn parse_presence(word: &str) -> Option<Presence> {
    match word {
        "composing" => Some(Presence::Composing),
        "recording" => Some(Presence::Recording),
        "paused" => Some(Presence::Paused),
        _ => None,
    }
}

async fn presence(
    Shared(state): Shared<Arc<State>>,
    Path(instance): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let at = Instant::now();
    if !authorized(&state, &headers) {
        return unauthorized();
    }
    let Some(presence) = body["presence"].as_str().and_then(parse_presence) else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": "bad presence" })),
        )
            .into_response();
    };
    let (session, ban) = state.session(&instance);
    let answer = match (session, ban) {
        (SessionState::Connected, _) => (
            StatusCode::OK,
            Json(json!({ "presence": body["presence"] })),
        )
            .into_response(),
        (_, Some(code)) => banned(code),
        _ => disconnected(),
    };
    let record = PresenceRecord {
        at,
        instance,
        to: body["number"].as_str().unwrap_or_default().to_owned(),
        presence,
        status: answer.status().as_u16(),
    };
    state.book.lock().requests.push(Request::Presence(record));
    state.delay(false).await;
    answer
}

async fn status(
    Shared(state): Shared<Arc<State>>,
    Path(instance): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&state, &headers) {
        return unauthorized();
    }
    let word = session_word(state.session(&instance).0);
    let body = json!({ "instance": { "instanceName": instance, "state": word } });
    Json(body).into_response()
}

async fn lookup(
    Shared(state): Shared<Arc<State>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&state, &headers) {
        return unauthorized();
    }
    let ack = state.book.lock().acks.get(&id).copied();
    match ack {
        Some(ack) => Json(json!({ "id": id, "status": ack })).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({ "error": "unknown id" })),
        )
            .into_response(),
    }
}

#[derive(Deserialize)]
struct FeedQuery {
    /// Without it, the answer is only where the feed is.
    after: Option<u64>,
    #[serde(default)]
    wait: u64,
}

async fn events(
    Shared(state): Shared<Arc<State>>,
    Query(q): Query<FeedQuery>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&state, &headers) {
        return unauthorized();
    }
    let (events, next) = match q.after {
        Some(after) => {
            let wait = Duration::from_millis(q.wait).min(MAX_WAIT);
            state.feed_after(after, wait).await
        }
        None => (Vec::new(), state.feed_len()),
    };
    Json(json!({ "events": events, "next": next })).into_response()
}
