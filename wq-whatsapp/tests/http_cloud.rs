//! `CloudApi` against the fake bridge's Cloud API dialect.
#![cfg(feature = "http")]

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wq_testkit::bridge::{FakeBridge, FakeConfig, Fault, Target};
use wq_whatsapp::http::{CloudApi, CloudApiConfig, ConfigError};
use wq_whatsapp::{
    AckLevel, BridgeEvent, Button, Content, Jid, MediaKind, MessageId, OutboundMessage, Presence,
    RateScope, SessionState, Transport, TransportError,
};

const TO: &str = "5511999998888";
const PHONE_ID: &str = "106540352242922";

async fn fake(config: FakeConfig) -> FakeBridge {
    FakeBridge::start(config).await.expect("fake bridge starts")
}

fn config(bridge: &FakeBridge) -> CloudApiConfig {
    CloudApiConfig::new("token")
        .base_url(bridge.cloud_url())
        .phone_number_id("shop", PHONE_ID)
        .timeout(Duration::from_millis(300))
}

fn msg(content: Content) -> OutboundMessage {
    OutboundMessage {
        instance: "shop".into(),
        to: Jid::parse(TO).unwrap(),
        content,
        typing_ms: None,
    }
}

fn text() -> OutboundMessage {
    msg(Content::Text { body: "hi".into() })
}

fn new_id() -> MessageId {
    MessageId::for_job(wq::JobId::new())
}

fn contents() -> Vec<(Content, &'static str, Value)> {
    let media = |kind, caption: Option<&str>, filename: Option<&str>| Content::Media {
        kind,
        url: "https://example.com/f".into(),
        caption: caption.map(Into::into),
        filename: filename.map(Into::into),
    };
    let link = "https://example.com/f";
    vec![
        (
            Content::Text { body: "hi".into() },
            "text",
            json!({ "body": "hi" }),
        ),
        (
            media(MediaKind::Image, Some("look"), None),
            "image",
            json!({ "link": link, "caption": "look" }),
        ),
        (
            media(MediaKind::Video, Some("watch"), None),
            "video",
            json!({ "link": link, "caption": "watch" }),
        ),
        (
            media(MediaKind::Document, Some("bill"), Some("a.pdf")),
            "document",
            json!({ "link": link, "caption": "bill", "filename": "a.pdf" }),
        ),
        (
            media(MediaKind::Audio, Some("dropped"), None),
            "audio",
            json!({ "link": link }),
        ),
        (
            media(MediaKind::Sticker, None, None),
            "sticker",
            json!({ "link": link }),
        ),
        (
            Content::Location {
                latitude: -23.5,
                longitude: -46.6,
                name: None,
            },
            "location",
            json!({ "latitude": -23.5, "longitude": -46.6 }),
        ),
        (
            Content::Contact {
                name: "Ana".into(),
                phone: "+55 11 98888-7777".into(),
            },
            "contacts",
            json!([{
                "name": { "formatted_name": "Ana", "first_name": "Ana" },
                "phones": [{ "phone": "+55 11 98888-7777", "type": "CELL" }],
            }]),
        ),
        (
            Content::Interactive {
                body: "pick".into(),
                buttons: vec![Button {
                    id: "y".into(),
                    title: "Yes".into(),
                }],
            },
            "interactive",
            json!({
                "type": "button",
                "body": { "text": "pick" },
                "action": { "buttons": [{ "type": "reply", "reply": { "id": "y", "title": "Yes" } }] },
            }),
        ),
        (
            Content::Reaction {
                message_id: "wamid.X".into(),
                emoji: "👍".into(),
            },
            "reaction",
            json!({ "message_id": "wamid.X", "emoji": "👍" }),
        ),
    ]
}

#[tokio::test]
async fn every_content_type_has_its_body() {
    let bridge = fake(FakeConfig::default()).await;
    let cloud = config(&bridge).build().unwrap();
    let caps = cloud.capabilities();
    assert!(!caps.client_ids);
    assert_eq!(caps.accepted, AckLevel::Server);
    for (content, kind, payload) in contents() {
        let id = new_id();
        let receipt = cloud.send(&id, &msg(content)).await.expect("sent");
        let sent = bridge.sends().pop().unwrap();
        assert_eq!(sent.instance, PHONE_ID);
        assert_eq!(receipt.message_id, id);
        assert_eq!(receipt.ack, AckLevel::Server);
        assert!(receipt.server_id.as_deref().unwrap().starts_with("wamid."));
        assert_eq!(receipt.server_id, sent.id);
        let expected = json!({
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": TO,
            "type": kind,
            kind: payload,
        });
        assert_eq!(sent.body, expected, "{kind}");
    }
}

#[tokio::test]
async fn an_instance_may_be_its_phone_number_id() {
    let bridge = fake(FakeConfig::default()).await;
    let cloud = config(&bridge).build().unwrap();
    let mut m = text();
    m.instance = "987654321".into();
    cloud.send(&new_id(), &m).await.unwrap();
    assert_eq!(bridge.sends()[0].instance, "987654321");
    m.instance = "unmapped".into();
    let e = cloud
        .send(&new_id(), &m)
        .await
        .expect_err("no phone number id");
    assert!(
        matches!(e, TransportError::Permanent { code: None, .. }),
        "{e:?}"
    );
}

#[tokio::test]
async fn typing_sends_nothing() {
    let bridge = fake(FakeConfig::default()).await;
    let cloud = config(&bridge).build().unwrap();
    let to = Jid::parse(TO).unwrap();
    cloud
        .presence("shop", &to, Presence::Composing)
        .await
        .unwrap();
    assert!(bridge.requests().is_empty());
}

async fn fails(cloud: &CloudApi) -> TransportError {
    cloud.send(&new_id(), &text()).await.expect_err("refused")
}

#[tokio::test]
async fn graph_errors_map_to_classes() {
    let bridge = fake(FakeConfig::default()).await;
    let cloud = config(&bridge).build().unwrap();
    let secs = Duration::from_secs;
    let session = |d| TransportError::RateLimited {
        retry_after: d,
        scope: RateScope::Session,
    };
    let contact = |d| TransportError::RateLimited {
        retry_after: d,
        scope: RateScope::Contact,
    };
    let limit = |s, contact| Fault::RateLimited {
        retry_after: secs(s),
        contact,
    };
    let cases = [
        (Fault::Code(130_429), session(secs(1))),
        (limit(2, false), session(secs(2))),
        (Fault::Code(131_056), contact(secs(6))),
        (limit(3, true), contact(secs(3))),
    ];
    for (fault, want) in cases {
        bridge.fail_next(Target::contact(PHONE_ID, TO), 1, fault.clone());
        assert_eq!(fails(&cloud).await, want, "{fault:?}");
    }
    for code in [131_048, 131_026, 131_047, 131_050, 100] {
        bridge.fail_next(Target::instance(PHONE_ID), 1, Fault::Code(code));
        let e = fails(&cloud).await;
        assert!(
            matches!(e, TransportError::Permanent { code: Some(c), .. } if c == code),
            "{e:?}"
        );
    }
    bridge.fail_next(Target::instance(PHONE_ID), 1, Fault::ServerError);
    let e = fails(&cloud).await;
    assert!(
        matches!(
            e,
            TransportError::Retryable {
                maybe_sent: true,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(cloud.session_state("shop"), SessionState::Connected);
}

#[tokio::test]
async fn a_lost_reply_is_maybe_sent() {
    let bridge = fake(FakeConfig::default()).await;
    let cloud = config(&bridge).build().unwrap();
    bridge.fail_next(Target::instance(PHONE_ID), 1, Fault::LoseReply);
    let e = fails(&cloud).await;
    assert!(
        matches!(
            e,
            TransportError::Retryable {
                maybe_sent: true,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(bridge.sends()[0].sent(), "the message went out");
}

#[tokio::test]
async fn a_refused_token_logs_every_instance_out() {
    let bridge = fake(FakeConfig {
        key: Some("right".into()),
        ..FakeConfig::default()
    })
    .await;
    let cloud = CloudApiConfig::new("wrong")
        .base_url(bridge.cloud_url())
        .phone_number_id("shop", PHONE_ID)
        .build()
        .unwrap();
    let mut rx = cloud.events().unwrap();
    let e = fails(&cloud).await;
    // The number's fault: the message waits for a new token.
    assert!(
        matches!(
            &e,
            TransportError::Disconnected {
                permanent: true,
                reason,
            } if reason.contains("code 190")
        ),
        "{e:?}"
    );
    assert_eq!(cloud.session_state("shop"), SessionState::LoggedOut);
    assert_eq!(cloud.session_state("other"), SessionState::LoggedOut);
    assert_eq!(
        rx.recv().await.unwrap(),
        BridgeEvent::Session {
            instance: "shop".into(),
            state: SessionState::LoggedOut
        }
    );
    cloud.set_access_token("right");
    assert_eq!(cloud.session_state("shop"), SessionState::Connected);
    assert!(cloud.send(&new_id(), &text()).await.is_ok());
}

#[tokio::test]
async fn webhook_statuses_become_events() {
    let bridge = fake(FakeConfig::default()).await;
    let cloud = config(&bridge).build().unwrap();
    let mut rx = cloud.events().unwrap();
    let receipt = cloud.send(&new_id(), &text()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while bridge.webhooks().len() < 3 {
        assert!(Instant::now() < deadline, "the statuses come");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for hook in bridge.webhooks() {
        assert_eq!(cloud.handle_webhook(&hook), 1);
    }
    let wamid = receipt.server_id.unwrap();
    for ack in [AckLevel::Server, AckLevel::Delivered, AckLevel::Read] {
        let want = BridgeEvent::Receipt {
            instance: "shop".into(),
            id: wamid.clone(),
            ack,
        };
        assert_eq!(rx.recv().await.unwrap(), want);
    }
}

#[tokio::test]
async fn failed_statuses_tell_their_code_and_ban_signals() {
    let bridge = fake(FakeConfig::default()).await;
    let cloud = config(&bridge).build().unwrap();
    let mut rx = cloud.events().unwrap();
    let status = json!({ "id": "wamid.F", "status": "failed", "errors": [{ "code": 131_048 }] });
    let hook = json!({ "entry": [{ "changes": [{
        "field": "messages",
        "value": { "metadata": { "phone_number_id": PHONE_ID }, "statuses": [status] },
    }] }] });
    assert_eq!(cloud.handle_webhook(&hook), 2);
    let failed = BridgeEvent::Failed {
        instance: "shop".into(),
        id: "wamid.F".into(),
        code: Some(131_048),
    };
    assert_eq!(rx.recv().await.unwrap(), failed);
    assert_eq!(
        rx.recv().await.unwrap(),
        BridgeEvent::Ban {
            instance: "shop".into(),
            code: 131_048
        }
    );
    assert_eq!(cloud.handle_webhook(&json!({ "object": "page" })), 0);
}

#[test]
fn bad_config_names_the_field() {
    let field = |c: CloudApiConfig| match c.build() {
        Err(ConfigError::Field { field, .. }) => field,
        other => panic!("expected a field error, got {:?}", other.err()),
    };
    assert_eq!(field(CloudApiConfig::new(" ")), "access_token");
    assert_eq!(
        field(CloudApiConfig::new("t").base_url("graph")),
        "base_url"
    );
    assert_eq!(
        field(CloudApiConfig::new("t").timeout(Duration::ZERO)),
        "timeout"
    );
    assert_eq!(
        field(CloudApiConfig::new("t").phone_number_id("shop", "+55 11")),
        "phone_number_ids"
    );
}
