//! Gateways in front of Baileys or whatsmeow (Evolution API, wuzapi...),
//! in one documented dialect.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use reqwest::StatusCode;
use reqwest::header::{HeaderName, HeaderValue};
use serde_json::{Value, json};
use tokio::sync::broadcast;
use tokio::task::AbortHandle;

use super::{
    Answer, ConfigError, answer, base_url, first_str, media_word, no_answer, number, parse_ack,
    parse_state, positive, with_opt,
};
use crate::jid::Jid;
use crate::message::{Content, MessageId, OutboundMessage};
use crate::pipeline::BAN_CODES;
use crate::transport::{
    AckLevel, BridgeEvent, Capabilities, Presence, RateScope, SendReceipt, SessionState, Transport,
    TransportError,
};

/// The paths of a gateway's endpoints; `{instance}` and `{id}` are
/// replaced. [`Paths::default`] has Evolution API's, without lookup and
/// events feed; [`Paths::gateway`] has every endpoint of the dialect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Paths {
    /// Sends text.
    pub text: String,
    /// Sends media of every kind.
    pub media: String,
    /// Sends a location.
    pub location: String,
    /// Sends a contact card.
    pub contact: String,
    /// Sends text with reply buttons.
    pub interactive: String,
    /// Sends a reaction.
    pub reaction: String,
    /// Shows a presence.
    pub presence: String,
    /// Tells a session's state.
    pub status: String,
    /// Tells what became of a message id (`{id}`), if the gateway can.
    pub lookup: Option<String>,
    /// The events feed, if the gateway has one.
    pub events: Option<String>,
}

impl Default for Paths {
    fn default() -> Self {
        Self {
            text: "/message/sendText/{instance}".into(),
            media: "/message/sendMedia/{instance}".into(),
            location: "/message/sendLocation/{instance}".into(),
            contact: "/message/sendContact/{instance}".into(),
            interactive: "/message/sendButtons/{instance}".into(),
            reaction: "/message/sendReaction/{instance}".into(),
            presence: "/chat/sendPresence/{instance}".into(),
            status: "/instance/connectionState/{instance}".into(),
            lookup: None,
            events: None,
        }
    }
}

impl Paths {
    /// Every endpoint of the dialect: the defaults, the lookup at
    /// `/message/status/{id}` and the events feed at `/events`.
    pub fn gateway() -> Self {
        Self {
            lookup: Some("/message/status/{id}".into()),
            events: Some("/events".into()),
            ..Self::default()
        }
    }

    fn check(&self) -> Result<(), ConfigError> {
        let required = [
            ("paths.text", &self.text),
            ("paths.media", &self.media),
            ("paths.location", &self.location),
            ("paths.contact", &self.contact),
            ("paths.interactive", &self.interactive),
            ("paths.reaction", &self.reaction),
            ("paths.presence", &self.presence),
            ("paths.status", &self.status),
        ];
        let optional = [
            ("paths.lookup", &self.lookup),
            ("paths.events", &self.events),
        ];
        let all = required.into_iter().chain(
            optional
                .into_iter()
                .filter_map(|(f, p)| Some((f, p.as_ref()?))),
        );
        for (field, path) in all {
            if !path.starts_with('/') {
                return Err(ConfigError::field(field, "must start with `/`"));
            }
        }
        if self.lookup.as_ref().is_some_and(|p| !p.contains("{id}")) {
            return Err(ConfigError::field("paths.lookup", "must contain `{id}`"));
        }
        Ok(())
    }
}

/// How an [`HttpBridge`] reaches its gateway.
#[derive(Clone)]
pub struct HttpBridgeConfig {
    base_url: String,
    api_key: Option<String>,
    api_key_header: String,
    instance_keys: HashMap<String, String>,
    paths: Paths,
    client_id_field: Option<String>,
    accepted: AckLevel,
    timeout: Duration,
    connect_timeout: Duration,
    status_every: Duration,
    events_wait: Duration,
    instances: Vec<String>,
}

impl std::fmt::Debug for HttpBridgeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpBridgeConfig")
            .field("base_url", &self.base_url)
            .field("api_key_header", &self.api_key_header)
            .field("paths", &self.paths)
            .field("client_id_field", &self.client_id_field)
            .field("accepted", &self.accepted)
            .field("instances", &self.instances)
            .finish_non_exhaustive()
    }
}

impl HttpBridgeConfig {
    /// A gateway at `base_url` with [`Paths::default`], no API key and no
    /// client ids, whose sends mean [`AckLevel::Server`]; answers within
    /// 30 s, states polled every 5 s, feed requests held up to 25 s.
    pub fn new(base_url: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            api_key: None,
            api_key_header: "apikey".into(),
            instance_keys: HashMap::new(),
            paths: Paths::default(),
            client_id_field: None,
            accepted: AckLevel::Server,
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            status_every: Duration::from_secs(5),
            events_wait: Duration::from_secs(25),
            instances: Vec::new(),
        }
    }

    /// Sends `key` with every request.
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// Names the API key's header (`apikey` for Evolution, `token` for
    /// wuzapi).
    pub fn api_key_header(mut self, name: impl Into<String>) -> Self {
        self.api_key_header = name.into();
        self
    }

    /// Sends `key` instead of the API key with `instance`'s requests.
    pub fn instance_key(mut self, instance: impl Into<String>, key: impl Into<String>) -> Self {
        self.instance_keys.insert(instance.into(), key.into());
        self
    }

    /// Uses `paths`.
    pub fn paths(mut self, paths: Paths) -> Self {
        self.paths = paths;
        self
    }

    /// Sends the message's id in the body field `field` (wuzapi `Id`):
    /// the gateway sends under it, so a lost reply can be looked up.
    pub fn client_id_field(mut self, field: impl Into<String>) -> Self {
        self.client_id_field = Some(field.into());
        self
    }

    /// What a send's success means when the answer does not say:
    /// [`AckLevel::Written`] for a gateway that returns once Baileys wrote
    /// the message, or [`AckLevel::Server`].
    pub fn accepted(mut self, level: AckLevel) -> Self {
        self.accepted = level;
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

    /// Asks for the state of every known instance every `every`.
    pub fn status_every(mut self, every: Duration) -> Self {
        self.status_every = every;
        self
    }

    /// Lets the gateway hold a feed request up to `wait`.
    pub fn events_wait(mut self, wait: Duration) -> Self {
        self.events_wait = wait;
        self
    }

    /// Knows `instance` from the start: its state is asked before
    /// [`HttpBridge::start`] returns. Others are known from their first
    /// use.
    pub fn instance(mut self, instance: impl Into<String>) -> Self {
        self.instances.push(instance.into());
        self
    }

    /// Starts the transport ([`HttpBridge::start`]).
    pub async fn start(self) -> Result<HttpBridge, ConfigError> {
        HttpBridge::start(self).await
    }
}

/// A [`Transport`] over an HTTP gateway (Evolution API, wuzapi and the
/// like) speaking the dialect below.
///
/// It keeps each session's state as last seen: asked of the gateway for
/// every known instance in the background, changed by the events feed and
/// by what sends answer. An instance not asked yet counts as connected:
/// its first send tells. Receipts, failures, session changes and ban
/// signals from the feed are published to [`Transport::events`]; the
/// background tasks stop when the transport is dropped.
///
/// ```no_run
/// use std::sync::Arc;
/// use wq::{MemoryStore, SendPipeline};
/// use wq_whatsapp::http::{HttpBridgeConfig, Paths};
///
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let bridge = HttpBridgeConfig::new("http://localhost:8080")
///     .api_key(std::env::var("GATEWAY_KEY")?)
///     .paths(Paths::gateway())
///     .client_id_field("id")
///     .instance("shop")
///     .start()
///     .await?;
/// let pipeline = SendPipeline::new(Arc::new(bridge), MemoryStore::new());
/// tokio::spawn(pipeline.supervise());
/// # Ok(())
/// # }
/// ```
///
/// # The dialect
///
/// Every request carries the API key in a header (`apikey` unless
/// [`HttpBridgeConfig::api_key_header`] says otherwise; a key per instance,
/// as wuzapi's user tokens, with [`HttpBridgeConfig::instance_key`]).
/// Paths are [`Paths`]; `{instance}` and `{id}` in them are replaced. The
/// recipient is `number`: the phone number of a user, the whole JID of a
/// group. Sends are `POST`s with a JSON body by content type, plus the
/// client id field when [`HttpBridgeConfig::client_id_field`] names one:
///
/// | content | path | body |
/// |---|---|---|
/// | text | `/message/sendText/{instance}` | `{"number", "text"}` |
/// | media | `/message/sendMedia/{instance}` | `{"number", "mediatype": "image\|video\|audio\|document\|sticker", "media": url, "caption"?, "fileName"?}` |
/// | location | `/message/sendLocation/{instance}` | `{"number", "latitude", "longitude", "name"?}` |
/// | contact | `/message/sendContact/{instance}` | `{"number", "contact": [{"fullName", "phoneNumber"}]}` |
/// | buttons | `/message/sendButtons/{instance}` | `{"number", "text", "buttons": [{"id", "displayText"}]}` |
/// | reaction | `/message/sendReaction/{instance}` | `{"number", "key": {"id"}, "reaction"}` |
/// | presence | `/chat/sendPresence/{instance}` | `{"number", "presence": "composing\|recording\|paused"}` |
///
/// A send's 2xx answer names the message's id at `key.id` (Evolution),
/// `id` or `data.Id` (wuzapi), and may say how far it got in `status`
/// (`PENDING`, `SERVER_ACK`, `DELIVERY_ACK`, `READ`, `PLAYED`, or wq's
/// [`AckLevel`] names); without one, the send got as far as
/// [`HttpBridgeConfig::accepted`].
///
/// An error answer's body is `{"error": text, "code"?: WhatsApp's code,
/// "state"?: the session's state, "scope"?: "session|contact|new_chats"}`.
/// 429 is a rate limit (`Retry-After`, else 1 s; `scope`, else the
/// session); 401 and 403 are a session that only an operator can bring
/// back; a code in [`BAN_CODES`] is permanent with that code (a ban
/// signal); a `state` other than connected is a lost link (permanent when
/// logged out, replaced or banned); other 5xx are retried, maybe sent;
/// other 4xx are permanent, with the code if any.
///
/// `GET /instance/connectionState/{instance}` answers
/// `{"instance": {"state"}}` or `{"state"}` with `open`, `connecting`,
/// `close` or wq's [`SessionState`] names (or wuzapi's
/// `{"data": {"Connected", "LoggedIn"}}`). The optional lookup,
/// `GET /message/status/{id}`, answers 404 for an id never sent and else
/// `{"id", "status"}`. The optional events feed,
/// `GET /events?after=N&wait=MS`, holds the request until it has events
/// after sequence number `N` (or `MS` passed) and answers
/// `{"events": [...], "next": N}`; without `after` it answers at once with
/// no events and the `next` to ask after, which is where a transport
/// starts: what happened before is not replayed. Each event is one of
/// `{"type": "receipt", "instance", "id", "ack"}`,
/// `{"type": "failed", "instance", "id", "code"?}`,
/// `{"type": "session", "instance", "state"}`,
/// `{"type": "ban", "instance", "code"}`.
pub struct HttpBridge {
    shared: Arc<Shared>,
    tasks: Vec<AbortHandle>,
}

/// What the transport and its background tasks share.
pub(super) struct Shared {
    client: reqwest::Client,
    base: String,
    key_header: HeaderName,
    key: Option<HeaderValue>,
    instance_keys: HashMap<String, HeaderValue>,
    pub(super) paths: Paths,
    client_id_field: Option<String>,
    accepted: AckLevel,
    pub(super) timeout: Duration,
    pub(super) status_every: Duration,
    pub(super) events_wait: Duration,
    states: Mutex<HashMap<String, SessionState>>,
    pub(super) events: broadcast::Sender<BridgeEvent>,
}

impl HttpBridge {
    /// Checks `config`, asks the state of the instances it names, and
    /// starts polling states and following the events feed (when
    /// [`Paths::events`] is set) from where it is now, on the current tokio
    /// runtime.
    pub async fn start(config: HttpBridgeConfig) -> Result<Self, ConfigError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| ConfigError::NoRuntime)?;
        let instances = config.instances.clone();
        let shared = Arc::new(Shared::new(config)?);
        for instance in &instances {
            shared.refresh_state(instance).await;
        }
        let from = match &shared.paths.events {
            Some(path) => super::feed::position(&shared, path).await.ok(),
            None => None,
        };
        let tasks = super::feed::spawn(&runtime, &shared, from);
        Ok(Self { shared, tasks })
    }
}

impl Drop for HttpBridge {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Shared {
    fn new(config: HttpBridgeConfig) -> Result<Self, ConfigError> {
        config.paths.check()?;
        positive("timeout", config.timeout)?;
        positive("connect_timeout", config.connect_timeout)?;
        positive("status_every", config.status_every)?;
        positive("events_wait", config.events_wait)?;
        if config.accepted > AckLevel::Server {
            return Err(ConfigError::field("accepted", "must be Written or Server"));
        }
        if config
            .client_id_field
            .as_ref()
            .is_some_and(|f| f.is_empty())
        {
            return Err(ConfigError::field("client_id_field", "is empty"));
        }
        let key_header = HeaderName::from_bytes(config.api_key_header.as_bytes())
            .map_err(|e| ConfigError::field("api_key_header", e.to_string()))?;
        let key = config
            .api_key
            .as_deref()
            .map(|k| header_value("api_key", k))
            .transpose()?;
        let instance_keys = config
            .instance_keys
            .iter()
            .map(|(i, k)| Ok((i.clone(), header_value("instance_keys", k)?)))
            .collect::<Result<_, ConfigError>>()?;
        let states = config
            .instances
            .into_iter()
            .map(|i| (i, SessionState::Connected))
            .collect();
        Ok(Self {
            client: super::http_client(config.connect_timeout)?,
            base: base_url("base_url", &config.base_url)?,
            key_header,
            key,
            instance_keys,
            paths: config.paths,
            client_id_field: config.client_id_field,
            accepted: config.accepted,
            timeout: config.timeout,
            status_every: config.status_every,
            events_wait: config.events_wait,
            states: Mutex::new(states),
            events: broadcast::channel(4096).0,
        })
    }

    /// A request to `path` (placeholders replaced), with the key of
    /// `instance` or the API key.
    pub(super) fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        instance: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let url = format!("{}{}", self.base, path);
        let req = self.client.request(method, url).timeout(self.timeout);
        let key = instance
            .and_then(|i| self.instance_keys.get(i))
            .or(self.key.as_ref());
        match key {
            Some(key) => req.header(&self.key_header, key.clone()),
            None => req,
        }
    }

    pub(super) fn instances(&self) -> Vec<String> {
        self.states.lock().keys().cloned().collect()
    }

    /// Records `state` and tells it when it changed.
    pub(super) fn set_state(&self, instance: &str, state: SessionState) {
        let before = self.states.lock().insert(instance.to_owned(), state);
        if before != Some(state) {
            let _ = self.events.send(BridgeEvent::Session {
                instance: instance.to_owned(),
                state,
            });
        }
    }

    /// Asks the gateway for `instance`'s state; an unclear answer changes
    /// nothing.
    pub(super) async fn refresh_state(&self, instance: &str) {
        let path = self.paths.status.replace("{instance}", instance);
        let req = self.request(reqwest::Method::GET, &path, Some(instance));
        match answer(req).await {
            Ok(a) if a.status.is_success() => match state_of(&a.body) {
                Some(state) => self.set_state(instance, state),
                None => tracing::warn!(instance, body = %a.body, "unclear session state"),
            },
            Ok(a) => tracing::warn!(instance, status = %a.status, "session state refused"),
            Err(e) => tracing::debug!(instance, error = %e, "session state unknown"),
        }
    }

    /// The send's path and body.
    fn send_request(&self, id: &MessageId, msg: &OutboundMessage) -> (String, Value) {
        let (path, mut body) = content(&self.paths, &msg.content);
        body["number"] = number(&msg.to).into();
        if let Some(field) = &self.client_id_field {
            body[field.as_str()] = id.as_str().into();
        }
        (path.replace("{instance}", &msg.instance), body)
    }

    /// The receipt a send's success answer gives.
    fn receipt(&self, id: &MessageId, body: &Value) -> SendReceipt {
        let ack = first_str(body, &["/status", "/ack"])
            .and_then(parse_ack)
            .unwrap_or(self.accepted);
        let receipt = SendReceipt::new(id.clone(), ack);
        match first_str(body, &["/key/id", "/id", "/data/Id"]) {
            Some(server_id) if server_id != id.as_str() => receipt.server_id(server_id),
            _ => receipt,
        }
    }

    /// The class of an error answer; a state it names is recorded.
    fn refused(&self, instance: Option<&str>, a: &Answer) -> TransportError {
        let body = &a.body;
        // wuzapi repeats the HTTP status as `code`: that is no WhatsApp code.
        let code = body["code"]
            .as_i64()
            .filter(|c| *c != i64::from(a.status.as_u16()));
        let state = body["state"].as_str().and_then(parse_state);
        if let (Some(instance), Some(state)) = (instance, state) {
            self.set_state(instance, state);
        }
        let text = first_str(body, &["/error", "/message"]).unwrap_or_default();
        let reason = format!("bridge answered {}: {text}", a.status);
        match a.status {
            StatusCode::TOO_MANY_REQUESTS => TransportError::RateLimited {
                retry_after: super::retry_after(&a.headers).unwrap_or(Duration::from_secs(1)),
                scope: scope(body["scope"].as_str()),
            },
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => TransportError::Disconnected {
                reason,
                permanent: true,
            },
            _ if code.is_some_and(|c| BAN_CODES.contains(&c)) => {
                TransportError::Permanent { reason, code }
            }
            _ if state.is_some_and(|s| s != SessionState::Connected) => {
                let permanent = state.is_some_and(SessionState::is_final);
                TransportError::Disconnected { reason, permanent }
            }
            s if s.is_server_error() => TransportError::Retryable {
                reason,
                after: super::retry_after(&a.headers),
                maybe_sent: true,
            },
            _ => TransportError::Permanent { reason, code },
        }
    }
}

fn header_value(field: &'static str, value: &str) -> Result<HeaderValue, ConfigError> {
    let mut value =
        HeaderValue::from_str(value).map_err(|e| ConfigError::field(field, e.to_string()))?;
    value.set_sensitive(true);
    Ok(value)
}

fn scope(word: Option<&str>) -> RateScope {
    match word {
        Some("contact") => RateScope::Contact,
        Some("new_chats") => RateScope::NewChats,
        _ => RateScope::Session,
    }
}

/// A session state answer: Evolution's, the dialect's, or wuzapi's.
fn state_of(body: &Value) -> Option<SessionState> {
    if let Some(word) = first_str(body, &["/instance/state", "/state"]) {
        return parse_state(word);
    }
    let data = &body["data"];
    match (data["LoggedIn"].as_bool()?, data["Connected"].as_bool()?) {
        (false, _) => Some(SessionState::LoggedOut),
        (true, true) => Some(SessionState::Connected),
        (true, false) => Some(SessionState::Disconnected),
    }
}

/// The path and body (without recipient) for `content`.
fn content<'a>(paths: &'a Paths, content: &Content) -> (&'a str, Value) {
    match content {
        Content::Text { body } => (&paths.text, json!({ "text": body })),
        Content::Media {
            kind,
            url,
            caption,
            filename,
        } => {
            let media = json!({ "mediatype": media_word(*kind), "media": url });
            let media = with_opt(
                with_opt(media, "caption", caption.as_ref()),
                "fileName",
                filename.as_ref(),
            );
            (&paths.media, media)
        }
        Content::Location {
            latitude,
            longitude,
            name,
        } => {
            let location = json!({ "latitude": latitude, "longitude": longitude });
            (&paths.location, with_opt(location, "name", name.as_ref()))
        }
        Content::Contact { name, phone } => (
            &paths.contact,
            json!({ "contact": [{ "fullName": name, "phoneNumber": phone }] }),
        ),
        Content::Interactive { body, buttons } => {
            let buttons: Vec<Value> = buttons
                .iter()
                .map(|b| json!({ "id": b.id, "displayText": b.title }))
                .collect();
            (
                &paths.interactive,
                json!({ "text": body, "buttons": buttons }),
            )
        }
        Content::Reaction { message_id, emoji } => (
            &paths.reaction,
            json!({ "key": { "id": message_id }, "reaction": emoji }),
        ),
    }
}

fn presence_word(p: Presence) -> &'static str {
    match p {
        Presence::Composing => "composing",
        Presence::Recording => "recording",
        Presence::Paused => "paused",
    }
}

impl Transport for HttpBridge {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            client_ids: self.shared.client_id_field.is_some(),
            accepted: self.shared.accepted,
        }
    }

    async fn send(
        &self,
        id: &MessageId,
        msg: &OutboundMessage,
    ) -> Result<SendReceipt, TransportError> {
        let shared = &self.shared;
        let (path, body) = shared.send_request(id, msg);
        let req = shared.request(reqwest::Method::POST, &path, Some(&msg.instance));
        let a = answer(req.json(&body)).await.map_err(|e| no_answer(&e))?;
        if !a.status.is_success() {
            return Err(shared.refused(Some(&msg.instance), &a));
        }
        // A send that went through proves the link is up.
        shared.set_state(&msg.instance, SessionState::Connected);
        Ok(shared.receipt(id, &a.body))
    }

    async fn presence(
        &self,
        instance: &str,
        to: &Jid,
        presence: Presence,
    ) -> Result<(), TransportError> {
        let shared = &self.shared;
        let path = shared.paths.presence.replace("{instance}", instance);
        let body = json!({ "number": number(to), "presence": presence_word(presence) });
        let req = shared.request(reqwest::Method::POST, &path, Some(instance));
        let a = answer(req.json(&body))
            .await
            .map_err(|e| match no_answer(&e) {
                // A presence has nothing to look up.
                TransportError::Retryable { reason, .. } => TransportError::retry(reason),
                other => other,
            })?;
        if a.status.is_success() {
            return Ok(());
        }
        Err(shared.refused(Some(instance), &a))
    }

    fn session_state(&self, instance: &str) -> SessionState {
        let mut states = self.shared.states.lock();
        match states.get(instance) {
            Some(state) => *state,
            None => *states
                .entry(instance.to_owned())
                .or_insert(SessionState::Connected),
        }
    }

    async fn lookup(&self, id: &MessageId) -> Result<Option<SendReceipt>, TransportError> {
        let shared = &self.shared;
        let Some(path) = &shared.paths.lookup else {
            return Ok(None);
        };
        let path = path.replace("{id}", id.as_str());
        let req = shared.request(reqwest::Method::GET, &path, None);
        let a = answer(req)
            .await
            .map_err(|e| no_answer(&e))
            .map_err(still_maybe_sent)?;
        match a.status {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => Ok(Some(shared.receipt(id, &a.body))),
            _ => Err(still_maybe_sent(shared.refused(None, &a))),
        }
    }

    fn events(&self) -> Option<broadcast::Receiver<BridgeEvent>> {
        Some(self.shared.events.subscribe())
    }
}

/// A failed lookup leaves the message as unknown as before: the next
/// attempt must look again rather than send.
fn still_maybe_sent(e: TransportError) -> TransportError {
    match e {
        TransportError::Retryable { reason, after, .. } => TransportError::Retryable {
            reason,
            after,
            maybe_sent: true,
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderMap;

    fn shared() -> Shared {
        Shared::new(HttpBridgeConfig::new("http://127.0.0.1:9")).unwrap()
    }

    fn refused(status: u16, body: Value) -> TransportError {
        let a = Answer {
            status: StatusCode::from_u16(status).unwrap(),
            headers: HeaderMap::new(),
            body,
        };
        shared().refused(Some("i"), &a)
    }

    #[test]
    fn error_answers_map_to_classes() {
        assert!(matches!(
            refused(429, json!({ "scope": "contact" })),
            TransportError::RateLimited {
                scope: RateScope::Contact,
                ..
            }
        ));
        assert!(matches!(
            refused(401, Value::Null),
            TransportError::Disconnected {
                permanent: true,
                ..
            }
        ));
        assert!(matches!(
            refused(503, json!({ "state": "disconnected" })),
            TransportError::Disconnected {
                permanent: false,
                ..
            }
        ));
        assert!(matches!(
            refused(400, json!({ "code": 463, "state": "banned" })),
            TransportError::Permanent {
                code: Some(463),
                ..
            }
        ));
        assert!(matches!(
            refused(500, json!({ "code": 500 })),
            TransportError::Retryable {
                maybe_sent: true,
                ..
            }
        ));
        assert!(matches!(
            refused(400, json!({ "code": 400, "error": "bad number" })),
            TransportError::Permanent { code: None, .. }
        ));
    }

    #[test]
    fn bad_config_names_the_field() {
        let field = |c: HttpBridgeConfig| match Shared::new(c) {
            Err(ConfigError::Field { field, .. }) => field,
            _ => "",
        };
        let base = || HttpBridgeConfig::new("http://x");
        assert_eq!(field(HttpBridgeConfig::new("x")), "base_url");
        assert_eq!(field(base().api_key_header("bad header")), "api_key_header");
        assert_eq!(field(base().api_key("a\nb")), "api_key");
        assert_eq!(field(base().accepted(AckLevel::Read)), "accepted");
        assert_eq!(field(base().timeout(Duration::ZERO)), "timeout");
        let paths = Paths {
            lookup: Some("/message/status".into()),
            ..Paths::default()
        };
        assert_eq!(field(base().paths(paths)), "paths.lookup");
    }

    #[test]
    fn session_answers_of_each_gateway() {
        assert_eq!(
            state_of(&json!({ "instance": { "state": "open" } })),
            Some(SessionState::Connected)
        );
        assert_eq!(
            state_of(&json!({ "data": { "Connected": false, "LoggedIn": true } })),
            Some(SessionState::Disconnected)
        );
        assert_eq!(state_of(&json!({})), None);
    }
}
