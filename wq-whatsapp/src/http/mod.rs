//! Ready [`Transport`](crate::Transport)s over HTTP (feature `http`):
//!
//! - [`CloudApi`]: Meta's WhatsApp Cloud API (`POST /{phone-number-id}/messages`
//!   on the Graph API), with its webhooks' statuses turned into
//!   [`BridgeEvent`](crate::BridgeEvent)s by [`CloudApi::handle_webhook`];
//! - [`HttpBridge`]: a gateway in front of Baileys or whatsmeow
//!   (Evolution API, wuzapi and the like), spoken in the dialect its module
//!   documents, with a cached session state, message lookups and an events
//!   feed long-polled in the background.
//!
//! Both classify failures the way the [`SendPipeline`](crate::SendPipeline)
//! expects: rate limits and lost links wait without spending an attempt, a
//! reply lost after the request left is `maybe_sent` (looked up before the
//! next attempt), and what can never succeed is permanent, with the
//! server's code so that ban signals trip the pipeline's breaker.
//!
//! TLS is rustls with the `ring` provider and the platform's certificate
//! verifier; no process-wide crypto provider is installed.

mod bridge;
mod cloud;
mod feed;

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use serde_json::Value;

use crate::jid::Jid;
use crate::message::MediaKind;
use crate::transport::{AckLevel, SessionState, TransportError};

pub use bridge::{HttpBridge, HttpBridgeConfig, Paths};
pub use cloud::{CloudApi, CloudApiConfig, DEFAULT_GRAPH_URL};

/// A transport configuration that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A field's value is unusable.
    #[error("bad `{field}`: {reason}")]
    Field {
        /// The configuration field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// The HTTP client could not be built (TLS setup).
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
    /// A transport with background tasks was started outside a tokio
    /// runtime.
    #[error("the transport must be started inside a tokio runtime")]
    NoRuntime,
}

impl ConfigError {
    fn field(field: &'static str, reason: impl Into<String>) -> Self {
        ConfigError::Field {
            field,
            reason: reason.into(),
        }
    }
}

/// An HTTP/1.1 client over rustls with `ring`: reqwest's own choice would
/// be aws-lc-rs, or a process-wide provider the application may set
/// differently.
fn http_client(connect_timeout: Duration) -> Result<reqwest::Client, ConfigError> {
    use rustls_platform_verifier::BuilderVerifierExt;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_platform_verifier())
        .map_err(|e| ConfigError::Client(e.to_string()))?
        .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .connect_timeout(connect_timeout)
        .build()
        .map_err(|e| ConfigError::Client(e.to_string()))
}

/// What a bridge answered: status, headers and the body as JSON (`Null`
/// when it is not JSON).
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

/// Sends `req` and reads the whole answer.
async fn answer(req: reqwest::RequestBuilder) -> Result<Answer, reqwest::Error> {
    let resp = req.send().await?;
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await?;
    Ok(Answer {
        status,
        headers,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    })
}

/// `url` without a trailing slash, if it is an absolute http(s) URL.
fn base_url(field: &'static str, url: &str) -> Result<String, ConfigError> {
    let parsed = reqwest::Url::parse(url).map_err(|e| ConfigError::field(field, e.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(ConfigError::field(field, "must be an http(s) URL"));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

fn positive(field: &'static str, d: Duration) -> Result<(), ConfigError> {
    if d.is_zero() {
        return Err(ConfigError::field(field, "must be longer than zero"));
    }
    Ok(())
}

/// The wait a `Retry-After` header asks for, in its delta-seconds form
/// (gateways and the Graph API do not send HTTP dates).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let secs: f64 = headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs))
}

/// A request that got no HTTP answer. Only a failed connect proves the
/// request never left: after that, the server may have acted on it.
fn no_answer(e: &reqwest::Error) -> TransportError {
    let what = if e.is_connect() {
        "cannot connect"
    } else if e.is_timeout() {
        "timed out"
    } else {
        "no answer"
    };
    TransportError::Retryable {
        reason: format!("{what}: {e}"),
        after: None,
        maybe_sent: !e.is_connect() && !e.is_builder(),
    }
}

/// How a recipient is written in a request: the phone number of a user,
/// the whole JID of anything else (groups, LIDs, newsletters).
fn number(to: &Jid) -> String {
    match to.server() {
        "s.whatsapp.net" | "c.us" => to.user().to_owned(),
        _ => to.as_str().to_owned(),
    }
}

/// The word both APIs use for a kind of media.
fn media_word(kind: MediaKind) -> &'static str {
    match kind {
        MediaKind::Image => "image",
        MediaKind::Video => "video",
        MediaKind::Audio => "audio",
        MediaKind::Document => "document",
        MediaKind::Sticker => "sticker",
    }
}

/// `v` with `key` set to `value` when there is one.
fn with_opt(mut v: Value, key: &str, value: Option<&String>) -> Value {
    if let Some(value) = value {
        v[key] = Value::from(value.as_str());
    }
    v
}

/// An acknowledgement level named by a bridge: wq's names, Baileys' and
/// Evolution's statuses, or the Cloud API's.
fn parse_ack(s: &str) -> Option<AckLevel> {
    Some(match s.to_ascii_lowercase().as_str() {
        "written" | "pending" => AckLevel::Written,
        "server" | "server_ack" | "sent" => AckLevel::Server,
        "delivered" | "delivery_ack" => AckLevel::Delivered,
        "read" => AckLevel::Read,
        "played" => AckLevel::Played,
        _ => return None,
    })
}

/// A session state named by a bridge: wq's names, or Evolution's and
/// whatsmeow's words for them.
fn parse_state(s: &str) -> Option<SessionState> {
    Some(match s.to_ascii_lowercase().as_str() {
        "connected" | "open" => SessionState::Connected,
        "connecting" => SessionState::Connecting,
        "disconnected" | "close" | "closed" => SessionState::Disconnected,
        "logged_out" | "loggedout" => SessionState::LoggedOut,
        "replaced" | "conflict" => SessionState::Replaced,
        "banned" => SessionState::Banned,
        _ => return None,
    })
}

/// The first string found at one of `pointers` in `v`.
fn first_str<'a>(v: &'a Value, pointers: &[&str]) -> Option<&'a str> {
    pointers.iter().find_map(|p| v.pointer(p)?.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(
            RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn base_urls_must_be_http() {
        assert_eq!(base_url("b", "http://x/v1/").unwrap(), "http://x/v1");
        assert!(matches!(
            base_url("base_url", "ftp://x"),
            Err(ConfigError::Field {
                field: "base_url",
                ..
            })
        ));
        assert!(base_url("base_url", "not a url").is_err());
    }

    #[test]
    fn numbers_are_digits_for_users_only() {
        let user = Jid::parse("+55 11 99999-8888").unwrap();
        assert_eq!(number(&user), "5511999998888");
        let group = Jid::parse("120363000000000000@g.us").unwrap();
        assert_eq!(number(&group), "120363000000000000@g.us");
    }

    #[test]
    fn bridge_words_map_to_levels_and_states() {
        assert_eq!(parse_ack("DELIVERY_ACK"), Some(AckLevel::Delivered));
        assert_eq!(parse_ack("sent"), Some(AckLevel::Server));
        assert_eq!(parse_ack("nope"), None);
        assert_eq!(parse_state("open"), Some(SessionState::Connected));
        assert_eq!(parse_state("close"), Some(SessionState::Disconnected));
        assert_eq!(parse_state("banned"), Some(SessionState::Banned));
    }
}
