//! Meta's WhatsApp Cloud API.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::RwLock;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::{Answer, ConfigError, answer, base_url, media_word, no_answer, positive, with_opt};
use crate::jid::Jid;
use crate::message::{Content, MediaKind, MessageId, OutboundMessage};
use crate::pipeline::BAN_CODES;
use crate::transport::{
    AckLevel, BridgeEvent, Capabilities, Presence, RateScope, SendReceipt, SessionState, Transport,
    TransportError,
};

/// The Graph API version [`CloudApiConfig`] speaks unless told otherwise.
pub const DEFAULT_GRAPH_URL: &str = "https://graph.facebook.com/v21.0";

/// Graph error codes that throttle the whole number: 4 (app calls),
/// 80007 (the account's rate limit), 130429 (the number's throughput).
const SESSION_LIMITS: [i64; 3] = [4, 80_007, 130_429];
/// Too many messages to one contact in a short time.
const CONTACT_LIMIT: i64 = 131_056;
/// Graph errors worth another try: 1 and 2 (unknown / service), 131000
/// (something went wrong), 131016 (service unavailable).
const TRANSIENT: [i64; 4] = [1, 2, 131_000, 131_016];
/// The access token is invalid or expired.
const TOKEN_REFUSED: i64 = 190;

/// How a [`CloudApi`] reaches the Graph API.
#[derive(Clone)]
pub struct CloudApiConfig {
    base_url: String,
    access_token: String,
    phone_number_ids: HashMap<String, String>,
    timeout: Duration,
    connect_timeout: Duration,
}

impl fmt::Debug for CloudApiConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CloudApiConfig")
            .field("base_url", &self.base_url)
            .field("access_token", &"<redacted>")
            .field("phone_number_ids", &self.phone_number_ids)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl CloudApiConfig {
    /// Calls [`DEFAULT_GRAPH_URL`] with `access_token` (a system user's
    /// token), waiting up to 30 s for an answer.
    pub fn new(access_token: impl Into<String>) -> Self {
        Self {
            base_url: DEFAULT_GRAPH_URL.into(),
            access_token: access_token.into(),
            phone_number_ids: HashMap::new(),
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
        }
    }

    /// Calls another base URL (another Graph version, a proxy, a fake in
    /// tests).
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = url.into();
        self
    }

    /// Sends `instance`'s messages from the phone number with id
    /// `phone_number_id`. An instance without one is taken as a phone
    /// number id itself.
    pub fn phone_number_id(
        mut self,
        instance: impl Into<String>,
        phone_number_id: impl Into<String>,
    ) -> Self {
        self.phone_number_ids
            .insert(instance.into(), phone_number_id.into());
        self
    }

    /// Waits up to `timeout` for an answer; past it, a send counts as
    /// maybe sent.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Gives up connecting after `timeout` (the send did not leave).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The transport, or the first field that cannot work.
    pub fn build(self) -> Result<CloudApi, ConfigError> {
        CloudApi::new(self)
    }
}

/// A [`Transport`] over Meta's WhatsApp Cloud API.
///
/// Each instance is a business phone number: a send is a
/// `POST {base}/{phone-number-id}/messages` with a Bearer token, and the
/// message's id is the `wamid` the API returns (the API takes no client
/// ids, so [`Capabilities::client_ids`] is false and a reply lost in
/// transit cannot be looked up). A success means the server took the
/// message ([`AckLevel::Server`]).
///
/// Errors map by the Graph error code: 130429, 80007 and 4 throttle the
/// number ([`RateScope::Session`], for `Retry-After` or 1 s); 131056
/// throttles the contact (6 s); 131048 and the other codes of a refused
/// request are permanent with their code (131048 is a ban signal to the
/// pipeline); 5xx answers, 131000, 131016 and requests that got no answer
/// are retried, maybe sent unless the connection never opened. A 190
/// (token refused) makes every instance [`SessionState::LoggedOut`] until
/// [`CloudApi::set_access_token`], and the send that met it
/// `Disconnected { permanent: true }`: the message waits in its paused
/// session for a new token instead of dying.
///
/// There is no socket to watch and typing needs the id of a received
/// message, so [`Transport::presence`] does nothing; statuses (delivered,
/// read, failed) come by webhook: hand them to [`CloudApi::handle_webhook`]
/// and they reach [`Transport::events`].
///
/// ```no_run
/// use std::sync::Arc;
/// use wq::{MemoryStore, SendPipeline};
/// use wq_whatsapp::http::CloudApiConfig;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let cloud = CloudApiConfig::new(std::env::var("WHATSAPP_TOKEN")?)
///     .phone_number_id("shop", "106540352242922")
///     .build()?;
/// let pipeline = SendPipeline::new(Arc::new(cloud), MemoryStore::new());
/// # let _ = pipeline;
/// # Ok(())
/// # }
/// ```
pub struct CloudApi {
    client: reqwest::Client,
    base: String,
    token: RwLock<String>,
    phone_number_ids: HashMap<String, String>,
    timeout: Duration,
    /// A send met a refused token, which every instance shares.
    logged_out: AtomicBool,
    events: broadcast::Sender<BridgeEvent>,
}

impl CloudApi {
    /// The transport, or the first field of `config` that cannot work.
    pub fn new(config: CloudApiConfig) -> Result<Self, ConfigError> {
        let base = base_url("base_url", &config.base_url)?;
        if config.access_token.trim().is_empty() {
            return Err(ConfigError::field("access_token", "is empty"));
        }
        positive("timeout", config.timeout)?;
        positive("connect_timeout", config.connect_timeout)?;
        if let Some((instance, _)) = config
            .phone_number_ids
            .iter()
            .find(|(_, id)| !is_phone_number_id(id))
        {
            let reason = format!("`{instance}`'s id is not a phone number id (digits)");
            return Err(ConfigError::field("phone_number_ids", reason));
        }
        Ok(Self {
            client: super::http_client(config.connect_timeout)?,
            base,
            token: RwLock::new(config.access_token),
            phone_number_ids: config.phone_number_ids,
            timeout: config.timeout,
            logged_out: AtomicBool::new(false),
            events: broadcast::channel(1024).0,
        })
    }

    /// Sends with a new access token from now on; instances logged out by
    /// a refused token count as connected again.
    pub fn set_access_token(&self, token: impl Into<String>) {
        *self.token.write() = token.into();
        self.logged_out.store(false, Ordering::Relaxed);
    }

    /// Publishes the statuses of a webhook notification (the JSON Meta
    /// POSTs to the application) as [`BridgeEvent`]s: `sent`, `delivered`,
    /// `read` and `played` as receipts of the `wamid`, `failed` as a
    /// failure with its code, and a ban signal too when that code is one of
    /// [`BAN_CODES`]. Returns how many events it published; anything that
    /// is not a status (incoming messages) is left alone.
    pub fn handle_webhook(&self, notification: &Value) -> usize {
        let changes = notification["entry"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|entry| entry["changes"].as_array().into_iter().flatten());
        let mut published = 0;
        for change in changes.filter(|c| c["field"] == "messages") {
            let value = &change["value"];
            let instance = self.instance_of(value["metadata"]["phone_number_id"].as_str());
            for status in value["statuses"].as_array().into_iter().flatten() {
                for event in status_events(&instance, status) {
                    // Nobody listening is not an error: events are advice.
                    let _ = self.events.send(event);
                    published += 1;
                }
            }
        }
        published
    }

    fn phone_number_id<'a>(&'a self, instance: &'a str) -> Result<&'a str, TransportError> {
        match self.phone_number_ids.get(instance) {
            Some(id) => Ok(id),
            None if is_phone_number_id(instance) => Ok(instance),
            None => Err(TransportError::permanent(format!(
                "instance `{instance}` has no phone number id"
            ))),
        }
    }

    /// The instance that sends from `phone_number_id`.
    fn instance_of(&self, phone_number_id: Option<&str>) -> String {
        let id = phone_number_id.unwrap_or_default();
        self.phone_number_ids
            .iter()
            .find(|(_, pid)| pid.as_str() == id)
            .map_or(id, |(instance, _)| instance.as_str())
            .to_owned()
    }

    /// The error for a refused send, noting a refused token.
    fn refused(&self, instance: &str, answer: &Answer) -> TransportError {
        let e = classify(answer);
        let token_refused = matches!(
            e,
            TransportError::Permanent {
                code: Some(TOKEN_REFUSED),
                ..
            }
        );
        if !token_refused {
            return e;
        }
        if !self.logged_out.swap(true, Ordering::Relaxed) {
            let _ = self.events.send(BridgeEvent::Session {
                instance: instance.to_owned(),
                state: SessionState::LoggedOut,
            });
        }
        // The number's fault, not the message's: it waits, paused, for a
        // new token rather than dying.
        TransportError::Disconnected {
            reason: e.to_string(),
            permanent: true,
        }
    }
}

impl Transport for CloudApi {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            client_ids: false,
            accepted: AckLevel::Server,
        }
    }

    async fn send(
        &self,
        id: &MessageId,
        msg: &OutboundMessage,
    ) -> Result<SendReceipt, TransportError> {
        let url = format!(
            "{}/{}/messages",
            self.base,
            self.phone_number_id(&msg.instance)?
        );
        let token = self.token.read().clone();
        let req = self
            .client
            .post(url)
            .bearer_auth(token)
            .timeout(self.timeout)
            .json(&body(msg));
        let answer = answer(req).await.map_err(|e| no_answer(&e))?;
        if !answer.status.is_success() {
            return Err(self.refused(&msg.instance, &answer));
        }
        let receipt = SendReceipt::new(id.clone(), AckLevel::Server);
        Ok(match answer.body["messages"][0]["id"].as_str() {
            Some(wamid) => receipt.server_id(wamid),
            None => receipt,
        })
    }

    /// Does nothing: the Cloud API shows typing only while marking a
    /// received message read, by that message's id.
    async fn presence(&self, _: &str, _: &Jid, _: Presence) -> Result<(), TransportError> {
        Ok(())
    }

    fn session_state(&self, _instance: &str) -> SessionState {
        if self.logged_out.load(Ordering::Relaxed) {
            SessionState::LoggedOut
        } else {
            SessionState::Connected
        }
    }

    fn events(&self) -> Option<broadcast::Receiver<BridgeEvent>> {
        Some(self.events.subscribe())
    }
}

fn is_phone_number_id(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// The request body for `msg`.
fn body(msg: &OutboundMessage) -> Value {
    let (kind, payload) = content(&msg.content);
    let mut body = json!({
        "messaging_product": "whatsapp",
        "recipient_type": if msg.to.is_group() { "group" } else { "individual" },
        "to": msg.to.user(),
        "type": kind,
    });
    body[kind] = payload;
    body
}

/// The message's `type` and the object under that name.
fn content(content: &Content) -> (&'static str, Value) {
    match content {
        Content::Text { body } => ("text", json!({ "body": body })),
        Content::Media {
            kind,
            url,
            caption,
            filename,
        } => (
            media_word(*kind),
            media(*kind, url, caption.as_ref(), filename.as_ref()),
        ),
        Content::Location {
            latitude,
            longitude,
            name,
        } => {
            let location = json!({ "latitude": latitude, "longitude": longitude });
            ("location", with_opt(location, "name", name.as_ref()))
        }
        Content::Contact { name, phone } => {
            let card = json!({
                "name": { "formatted_name": name, "first_name": name },
                "phones": [{ "phone": phone, "type": "CELL" }],
            });
            ("contacts", json!([card]))
        }
        Content::Interactive { body, buttons } => {
            let buttons: Vec<Value> = buttons
                .iter()
                .map(|b| json!({ "type": "reply", "reply": { "id": b.id, "title": b.title } }))
                .collect();
            let interactive = json!({
                "type": "button",
                "body": { "text": body },
                "action": { "buttons": buttons },
            });
            ("interactive", interactive)
        }
        Content::Reaction { message_id, emoji } => (
            "reaction",
            json!({ "message_id": message_id, "emoji": emoji }),
        ),
    }
}

/// A media object by link; the API refuses captions on audio and stickers
/// and file names on anything but documents.
fn media(kind: MediaKind, url: &str, caption: Option<&String>, filename: Option<&String>) -> Value {
    let media = json!({ "link": url });
    match kind {
        MediaKind::Image | MediaKind::Video => with_opt(media, "caption", caption),
        MediaKind::Document => with_opt(with_opt(media, "caption", caption), "filename", filename),
        MediaKind::Audio | MediaKind::Sticker => media,
    }
}

/// The class of a Graph API error answer.
fn classify(answer: &Answer) -> TransportError {
    let error = &answer.body["error"];
    let code = error["code"].as_i64();
    let message = error["message"].as_str().unwrap_or_default();
    let reason = format!("cloud api answered {}: {message}", answer.status);
    let wait = super::retry_after(&answer.headers);
    let limited = |scope, default| TransportError::RateLimited {
        retry_after: wait.unwrap_or(Duration::from_secs(default)),
        scope,
    };
    match code {
        Some(c) if SESSION_LIMITS.contains(&c) => limited(RateScope::Session, 1),
        Some(CONTACT_LIMIT) => limited(RateScope::Contact, 6),
        None if answer.status == StatusCode::TOO_MANY_REQUESTS => limited(RateScope::Session, 1),
        Some(c) if TRANSIENT.contains(&c) => TransportError::Retryable {
            reason,
            after: wait,
            maybe_sent: answer.status.is_server_error(),
        },
        _ if answer.status.is_server_error() => TransportError::Retryable {
            reason,
            after: wait,
            maybe_sent: true,
        },
        code => TransportError::Permanent { reason, code },
    }
}

/// The events one webhook status tells.
fn status_events(instance: &str, status: &Value) -> Vec<BridgeEvent> {
    let Some(id) = status["id"].as_str() else {
        return Vec::new();
    };
    let (instance, id) = (instance.to_owned(), id.to_owned());
    let word = status["status"].as_str().unwrap_or_default();
    if word == "failed" {
        let code = status["errors"][0]["code"].as_i64();
        let ban = code
            .filter(|c| BAN_CODES.contains(c))
            .map(|code| BridgeEvent::Ban {
                instance: instance.clone(),
                code,
            });
        return std::iter::once(BridgeEvent::Failed { instance, id, code })
            .chain(ban)
            .collect();
    }
    super::parse_ack(word)
        .map(|ack| BridgeEvent::Receipt { instance, id, ack })
        .into_iter()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderMap;

    fn answer(status: u16, body: Value) -> Answer {
        Answer {
            status: StatusCode::from_u16(status).unwrap(),
            headers: HeaderMap::new(),
            body,
        }
    }

    fn graph_error(status: u16, code: i64) -> TransportError {
        classify(&answer(
            status,
            json!({ "error": { "code": code, "message": "m" } }),
        ))
    }

    #[test]
    fn graph_codes_map_to_classes() {
        let secs = Duration::from_secs;
        assert_eq!(
            graph_error(400, 130_429),
            TransportError::RateLimited {
                retry_after: secs(1),
                scope: RateScope::Session
            }
        );
        assert_eq!(
            graph_error(400, 131_056),
            TransportError::RateLimited {
                retry_after: secs(6),
                scope: RateScope::Contact
            }
        );
        for code in [131_048, 131_026, 131_047, 131_050, 100, 190] {
            assert!(matches!(
                graph_error(400, code),
                TransportError::Permanent { code: Some(c), .. } if c == code
            ));
        }
        assert!(matches!(
            graph_error(500, 1),
            TransportError::Retryable {
                maybe_sent: true,
                ..
            }
        ));
        assert!(matches!(
            classify(&answer(429, Value::Null)),
            TransportError::RateLimited {
                scope: RateScope::Session,
                ..
            }
        ));
        assert!(matches!(
            classify(&answer(502, Value::Null)),
            TransportError::Retryable {
                maybe_sent: true,
                ..
            }
        ));
    }

    #[test]
    fn failed_statuses_with_ban_codes_signal_a_ban() {
        let status =
            json!({ "id": "wamid.X", "status": "failed", "errors": [{ "code": 131_048 }] });
        let events = status_events("shop", &status);
        assert_eq!(events.len(), 2);
        assert!(matches!(&events[1], BridgeEvent::Ban { code: 131_048, .. }));
    }
}
