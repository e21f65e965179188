//! What a message says ([`Content`]), the [`OutboundMessage`] a job
//! carries, and the [`MessageId`] it is sent under.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use wq_core::{GroupKey, JobId, ValidationError};

use crate::jid::{Jid, phone_digits};

/// Longest text body WhatsApp accepts.
pub const MAX_TEXT_CHARS: usize = 4096;
/// Longest media caption and interactive body.
pub const MAX_CAPTION_CHARS: usize = 1024;

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

/// A message to send: the payload of a job that a
/// [`SendPipeline`](crate::SendPipeline) runs.
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
        wq_core::validate::name_like("instance", &self.instance, 128)?;
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

#[cfg(test)]
mod tests {
    use super::*;

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
