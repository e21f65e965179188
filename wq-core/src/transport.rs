//! The [`Transport`] trait: the edge to WhatsApp.
//!
//! A transport sends one message with a pre-assigned id, shows typing, and
//! reports its connection. Its errors are classified so the engine knows
//! what to do: back off, wait for the rate limit, wait for the bridge without
//! spending an attempt, or give up.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::ValidationError;
use crate::handler::{Handler, JobContext, JobError};
use crate::job::JobId;
use crate::name::GroupKey;

/// Longest text body WhatsApp accepts.
pub const MAX_TEXT_CHARS: usize = 4096;
/// Longest media caption and interactive body.
pub const MAX_CAPTION_CHARS: usize = 1024;

/// A WhatsApp address: a user (`5511999999999@s.whatsapp.net`), a group
/// (`...@g.us`), a LID (`...@lid`), a newsletter or the status broadcast.
///
/// [`Jid::parse`] also takes a bare phone number in any common notation
/// (`+55 (11) 99999-9999`) and makes it a user JID.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Jid(Arc<str>);

const USER_SERVERS: [&str; 2] = ["s.whatsapp.net", "c.us"];
const OTHER_SERVERS: [&str; 4] = ["g.us", "lid", "newsletter", "broadcast"];

impl Jid {
    /// Parses a JID or a phone number.
    pub fn parse(input: &str) -> Result<Self, ValidationError> {
        let s = input.trim();
        let bad = |why: &str| ValidationError::new("to", format!("`{input}` {why}"));
        match s.split_once('@') {
            None => {
                let digits = phone_digits(s).map_err(|why| bad(&why))?;
                Ok(Self(format!("{digits}@s.whatsapp.net").into()))
            }
            Some((user, server)) => {
                let user_only = user.split_once(':').map_or(user, |(u, _device)| u);
                if USER_SERVERS.contains(&server) {
                    phone_digits(user_only).map_err(|why| bad(&why))?;
                } else if OTHER_SERVERS.contains(&server) {
                    let ok = !user_only.is_empty()
                        && user_only.len() <= 64
                        && user_only
                            .chars()
                            .all(|c| c.is_ascii_digit() || c == '-' || c.is_ascii_alphabetic());
                    if !ok {
                        return Err(bad("has an invalid user part"));
                    }
                } else {
                    return Err(bad(
                        "has an unknown server (expected s.whatsapp.net, c.us, g.us, lid, newsletter or broadcast)",
                    ));
                }
                Ok(Self(format!("{user}@{server}").into()))
            }
        }
    }

    /// The JID as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part before `@` (the phone number for users), without a device suffix.
    pub fn user(&self) -> &str {
        let user = self.0.split_once('@').map_or(&*self.0, |(u, _)| u);
        user.split_once(':').map_or(user, |(u, _)| u)
    }

    /// The part after `@`.
    pub fn server(&self) -> &str {
        self.0.split_once('@').map_or("", |(_, s)| s)
    }

    /// Whether this is a group chat.
    pub fn is_group(&self) -> bool {
        self.server() == "g.us"
    }
}

/// Normalizes a phone number to E.164 digits (8 to 15, no leading zero).
fn phone_digits(s: &str) -> Result<String, String> {
    let mut digits = String::with_capacity(s.len());
    for (i, c) in s.chars().enumerate() {
        match c {
            '0'..='9' => digits.push(c),
            '+' if i == 0 => {}
            ' ' | '-' | '(' | ')' | '.' => {}
            _ => return Err(format!("is not a phone number (unexpected `{c}`)")),
        }
    }
    if !(8..=15).contains(&digits.len()) {
        return Err(format!(
            "is not a phone number ({} digits; E.164 allows 8 to 15)",
            digits.len()
        ));
    }
    if digits.starts_with('0') {
        return Err("is not a phone number in international form (leading 0)".into());
    }
    Ok(digits)
}

impl TryFrom<String> for Jid {
    type Error = ValidationError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Jid::parse(&s)
    }
}

impl From<Jid> for String {
    fn from(j: Jid) -> String {
        j.0.to_string()
    }
}

impl fmt::Display for Jid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Jid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

/// The WhatsApp message id a job sends under: derived from the job id, so
/// every attempt of a job uses the same one.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MessageId(String);

impl MessageId {
    /// `3EB0` followed by the job's UUID in upper-case hex: the shape of ids
    /// WhatsApp Web clients generate.
    pub fn for_job(id: JobId) -> Self {
        Self(format!("3EB0{}", id.as_uuid().simple()).to_ascii_uppercase())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// Kinds of media message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MediaKind {
    /// A picture.
    Image,
    /// A video.
    Video,
    /// A voice note or audio file.
    Audio,
    /// Any file.
    Document,
    /// A sticker.
    Sticker,
}

/// A reply button of an interactive message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Button {
    /// Returned when tapped.
    pub id: String,
    /// Shown (1 to 20 characters).
    pub title: String,
}

/// What a message says.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Content {
    /// Plain text.
    Text {
        /// The text (1 to 4096 characters).
        body: String,
    },
    /// An image, video, audio, document or sticker fetched from a URL.
    Media {
        /// Which kind.
        kind: MediaKind,
        /// Where the bridge fetches it (`http://` or `https://`).
        url: String,
        /// Optional caption.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        caption: Option<String>,
        /// Optional file name (documents).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        filename: Option<String>,
    },
    /// A pinned location.
    Location {
        /// Latitude in degrees.
        latitude: f64,
        /// Longitude in degrees.
        longitude: f64,
        /// Optional place name.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
    /// A contact card.
    Contact {
        /// Display name.
        name: String,
        /// Phone number.
        phone: String,
    },
    /// Text with reply buttons.
    Interactive {
        /// The text.
        body: String,
        /// One to three buttons.
        buttons: Vec<Button>,
    },
    /// A reaction to an earlier message (an empty emoji removes it).
    Reaction {
        /// The message reacted to.
        message_id: String,
        /// The emoji.
        emoji: String,
    },
}

impl Content {
    /// Checks the limits WhatsApp enforces, naming the field at fault.
    pub fn validate(&self) -> Result<(), ValidationError> {
        let bad = |field: &'static str, why: &str| Err(ValidationError::new(field, why));
        let len = |s: &str| s.chars().count();
        match self {
            Content::Text { body } => {
                if body.trim().is_empty() {
                    return bad("content.body", "is empty");
                }
                if len(body) > MAX_TEXT_CHARS {
                    return bad("content.body", "is longer than 4096 characters");
                }
            }
            Content::Media { url, caption, .. } => {
                if !(url.starts_with("https://") || url.starts_with("http://")) {
                    return bad("content.url", "must be an http(s) URL");
                }
                if caption
                    .as_deref()
                    .is_some_and(|c| len(c) > MAX_CAPTION_CHARS)
                {
                    return bad("content.caption", "is longer than 1024 characters");
                }
            }
            Content::Location {
                latitude,
                longitude,
                ..
            } => {
                if !(-90.0..=90.0).contains(latitude) {
                    return bad("content.latitude", "must be within -90..=90");
                }
                if !(-180.0..=180.0).contains(longitude) {
                    return bad("content.longitude", "must be within -180..=180");
                }
            }
            Content::Contact { name, phone } => {
                if name.trim().is_empty() {
                    return bad("content.name", "is empty");
                }
                phone_digits(phone).map_err(|why| {
                    ValidationError::new("content.phone", format!("`{phone}` {why}"))
                })?;
            }
            Content::Interactive { body, buttons } => {
                if body.trim().is_empty() || len(body) > MAX_CAPTION_CHARS {
                    return bad("content.body", "must have 1 to 1024 characters");
                }
                if !(1..=3).contains(&buttons.len()) {
                    return bad("content.buttons", "must have 1 to 3 buttons");
                }
                for (i, b) in buttons.iter().enumerate() {
                    if b.id.is_empty() || buttons[..i].iter().any(|o| o.id == b.id) {
                        return bad("content.buttons", "need unique, non-empty ids");
                    }
                    if !(1..=20).contains(&len(&b.title)) {
                        return bad("content.buttons", "titles must have 1 to 20 characters");
                    }
                }
            }
            Content::Reaction { message_id, emoji } => {
                if message_id.is_empty() {
                    return bad("content.message_id", "is empty");
                }
                if len(emoji) > 8 {
                    return bad("content.emoji", "is not one emoji");
                }
            }
        }
        Ok(())
    }
}

/// A message to send: the payload of a job that a [`TransportHandler`] runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutboundMessage {
    /// The sending number or session ("instance").
    pub instance: String,
    /// The recipient.
    pub to: Jid,
    /// What to send.
    pub content: Content,
    /// Show "typing…" for this long before sending, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub typing_ms: Option<u64>,
}

impl OutboundMessage {
    /// A text message from `instance` to `to` (a JID or a phone number).
    pub fn text(
        instance: impl Into<String>,
        to: &str,
        body: impl Into<String>,
    ) -> Result<Self, ValidationError> {
        let msg = Self {
            instance: instance.into(),
            to: Jid::parse(to)?,
            content: Content::Text { body: body.into() },
            typing_ms: None,
        };
        msg.validate()?;
        Ok(msg)
    }

    /// Shows typing for `d` before sending.
    pub fn with_typing(mut self, d: Duration) -> Self {
        self.typing_ms = Some(u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        self
    }

    /// Checks the instance, the content and the typing time.
    pub fn validate(&self) -> Result<(), ValidationError> {
        crate::validate::name_like("instance", &self.instance, 128)?;
        self.content.validate()?;
        if self.typing_ms.is_some_and(|ms| ms > 60_000) {
            return Err(ValidationError::new("typing_ms", "is longer than 60 s"));
        }
        Ok(())
    }

    /// The group key that keeps one contact's messages in order:
    /// `instance:user`.
    pub fn contact_group(&self) -> GroupKey {
        GroupKey::new(format!("{}:{}", self.instance, self.to.user()))
    }
}

/// What the bridge confirmed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SendReceipt {
    /// The id the message was sent under.
    pub message_id: MessageId,
}

/// A session's link to WhatsApp.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionState {
    /// Sending works.
    Connected,
    /// Coming up.
    Connecting,
    /// Down; messages wait.
    Disconnected,
    /// Logged out or banned: an operator must act.
    LoggedOut,
}

/// A transport's failure, classified exactly like a handler's: `Retryable`
/// backs off, `RateLimited` and `Disconnected` wait without spending an
/// attempt, `Permanent` goes straight to dead.
pub type TransportError = JobError;

/// The edge to WhatsApp: a bridge (Baileys, whatsmeow, the Cloud API) behind
/// one small trait.
pub trait Transport: Send + Sync + 'static {
    /// Sends `msg` under the pre-assigned `id`. A bridge that already sent a
    /// message with this id should answer with success and not send again.
    fn send(
        &self,
        id: &MessageId,
        msg: &OutboundMessage,
    ) -> impl Future<Output = Result<SendReceipt, TransportError>> + Send;

    /// Shows "typing…" to `to` for `duration` (returns when it is done).
    fn typing(
        &self,
        instance: &str,
        to: &Jid,
        duration: Duration,
    ) -> impl Future<Output = Result<(), TransportError>> + Send;

    /// The session's link state as last known.
    fn connection_state(&self, instance: &str) -> ConnectionState;
}

/// A [`Handler`] that sends each job's [`OutboundMessage`] through a transport.
///
/// A session that is not connected makes the job wait without spending an
/// attempt; typing is shown first when the message asks for it.
#[derive(Debug, Clone)]
pub struct TransportHandler<T> {
    transport: Arc<T>,
}

impl<T: Transport> TransportHandler<T> {
    /// Sends through `transport`.
    pub fn new(transport: Arc<T>) -> Self {
        Self { transport }
    }
}

impl<T: Transport> Handler for TransportHandler<T> {
    async fn handle(&self, ctx: JobContext) -> Result<(), JobError> {
        let msg: OutboundMessage = ctx.payload()?;
        match self.transport.connection_state(&msg.instance) {
            ConnectionState::Connected => {}
            other => {
                return Err(JobError::Disconnected {
                    reason: format!("session `{}` is {other:?}", msg.instance),
                });
            }
        }
        if let Some(ms) = msg.typing_ms.filter(|ms| *ms > 0) {
            self.transport
                .typing(&msg.instance, &msg.to, Duration::from_millis(ms))
                .await?;
        }
        self.transport.send(&ctx.message_id(), &msg).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phone_numbers_become_user_jids() {
        let j = Jid::parse("+55 (11) 99999-8888").unwrap();
        assert_eq!(j.as_str(), "5511999998888@s.whatsapp.net");
        assert_eq!(j.user(), "5511999998888");
        assert!(!j.is_group());
        assert_eq!(
            Jid::parse("5511999998888:12@s.whatsapp.net")
                .unwrap()
                .user(),
            "5511999998888"
        );
        assert!(Jid::parse("120363025246125486@g.us").unwrap().is_group());
    }

    #[test]
    fn bad_numbers_and_servers_name_the_field() {
        for bad in [
            "",
            "123",
            "0011999998888",
            "55119999x8888",
            "5511999998888@evil.com",
            "1234567890123456",
        ] {
            let e = Jid::parse(bad).unwrap_err();
            assert_eq!(e.field, "to", "{bad}");
        }
    }

    #[test]
    fn message_ids_are_stable_per_job() {
        let id = JobId::new();
        assert_eq!(MessageId::for_job(id), MessageId::for_job(id));
        assert_ne!(MessageId::for_job(id), MessageId::for_job(JobId::new()));
        assert!(MessageId::for_job(id).as_str().starts_with("3EB0"));
        assert_eq!(MessageId::for_job(id).as_str().len(), 36);
    }

    #[test]
    fn content_limits_name_the_field() {
        let long = "x".repeat(MAX_TEXT_CHARS + 1);
        let cases = [
            (Content::Text { body: " ".into() }, "content.body"),
            (Content::Text { body: long }, "content.body"),
            (
                Content::Media {
                    kind: MediaKind::Image,
                    url: "ftp://x".into(),
                    caption: None,
                    filename: None,
                },
                "content.url",
            ),
            (
                Content::Location {
                    latitude: 91.0,
                    longitude: 0.0,
                    name: None,
                },
                "content.latitude",
            ),
            (
                Content::Interactive {
                    body: "pick".into(),
                    buttons: vec![],
                },
                "content.buttons",
            ),
            (
                Content::Contact {
                    name: "Ana".into(),
                    phone: "12".into(),
                },
                "content.phone",
            ),
        ];
        for (content, field) in cases {
            assert_eq!(content.validate().unwrap_err().field, field);
        }
    }

    #[test]
    fn outbound_messages_serialize_with_a_type_tag() {
        let m = OutboundMessage::text("inst-1", "5511999998888", "olá")
            .unwrap()
            .with_typing(Duration::from_millis(800));
        let json = serde_json::to_value(&m).unwrap();
        assert_eq!(json["content"]["type"], "text");
        assert_eq!(json["to"], "5511999998888@s.whatsapp.net");
        assert_eq!(m.contact_group().as_str(), "inst-1:5511999998888");
        let back: OutboundMessage = serde_json::from_value(json).unwrap();
        assert_eq!(back, m);
        let bad =
            serde_json::json!({"instance":"i","to":"abc","content":{"type":"text","body":"x"}});
        assert!(serde_json::from_value::<OutboundMessage>(bad).is_err());
    }
}
