//! `HttpBridge` against the fake bridge's gateway dialect.
#![cfg(feature = "http")]

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::broadcast;
use wq_testkit::bridge::{FakeBridge, FakeConfig, Fault, ReceiptPlan, Target};
use wq_whatsapp::http::{HttpBridge, HttpBridgeConfig, Paths};
use wq_whatsapp::{
    AckLevel, BridgeEvent, Button, Content, Jid, MediaKind, MessageId, OutboundMessage, Presence,
    RateScope, SessionState, Transport, TransportError,
};

const TO: &str = "5511999998888";

async fn fake(config: FakeConfig) -> FakeBridge {
    FakeBridge::start(config).await.expect("fake bridge starts")
}

fn config(bridge: &FakeBridge) -> HttpBridgeConfig {
    HttpBridgeConfig::new(bridge.url())
        .paths(Paths::gateway())
        .client_id_field("id")
        .status_every(Duration::from_millis(20))
        .events_wait(Duration::from_millis(500))
        .timeout(Duration::from_millis(500))
        .instance("shop")
}

async fn transport(bridge: &FakeBridge) -> HttpBridge {
    config(bridge).start().await.expect("transport starts")
}

fn msg(content: Content) -> OutboundMessage {
    OutboundMessage {
        instance: "shop".into(),
        to: Jid::parse(TO).unwrap(),
        content,
        typing_ms: None,
    }
}

fn text(body: &str) -> OutboundMessage {
    msg(Content::Text { body: body.into() })
}

fn new_id() -> MessageId {
    MessageId::for_job(wq::JobId::new())
}

/// Waits up to 5 s for `check`.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The next event matching `keep`, within 5 s.
async fn next_event(
    rx: &mut broadcast::Receiver<BridgeEvent>,
    keep: impl Fn(&BridgeEvent) -> bool,
) -> BridgeEvent {
    let wait = async {
        loop {
            let event = rx.recv().await.expect("events flow");
            if keep(&event) {
                return event;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), wait)
        .await
        .expect("the event comes")
}

fn contents() -> Vec<(Content, &'static str, Value)> {
    let media = |kind, caption: Option<&str>, filename: Option<&str>| Content::Media {
        kind,
        url: "https://example.com/f".into(),
        caption: caption.map(Into::into),
        filename: filename.map(Into::into),
    };
    vec![
        (
            Content::Text { body: "hi".into() },
            "text",
            json!({ "text": "hi" }),
        ),
        (
            media(MediaKind::Image, Some("look"), None),
            "image",
            json!({ "mediatype": "image", "media": "https://example.com/f", "caption": "look" }),
        ),
        (
            media(MediaKind::Document, None, Some("a.pdf")),
            "document",
            json!({ "mediatype": "document", "media": "https://example.com/f", "fileName": "a.pdf" }),
        ),
        (
            media(MediaKind::Audio, None, None),
            "audio",
            json!({ "mediatype": "audio", "media": "https://example.com/f" }),
        ),
        (
            media(MediaKind::Video, None, None),
            "video",
            json!({ "mediatype": "video", "media": "https://example.com/f" }),
        ),
        (
            media(MediaKind::Sticker, None, None),
            "sticker",
            json!({ "mediatype": "sticker", "media": "https://example.com/f" }),
        ),
        (
            Content::Location {
                latitude: -23.5,
                longitude: -46.6,
                name: Some("Sé".into()),
            },
            "location",
            json!({ "latitude": -23.5, "longitude": -46.6, "name": "Sé" }),
        ),
        (
            Content::Contact {
                name: "Ana".into(),
                phone: "+55 11 98888-7777".into(),
            },
            "contact",
            json!({ "contact": [{ "fullName": "Ana", "phoneNumber": "+55 11 98888-7777" }] }),
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
            json!({ "text": "pick", "buttons": [{ "id": "y", "displayText": "Yes" }] }),
        ),
        (
            Content::Reaction {
                message_id: "ABC".into(),
                emoji: "👍".into(),
            },
            "reaction",
            json!({ "key": { "id": "ABC" }, "reaction": "👍" }),
        ),
    ]
}

#[tokio::test]
async fn every_content_type_has_its_body() {
    let bridge = fake(FakeConfig::default()).await;
    let t = transport(&bridge).await;
    assert!(t.capabilities().client_ids);
    for (content, kind, mut expected) in contents() {
        let id = new_id();
        let receipt = t.send(&id, &msg(content)).await.expect("sent");
        assert_eq!(receipt.message_id, id);
        assert_eq!(receipt.server_id, None, "the gateway sent under our id");
        assert_eq!(receipt.ack, AckLevel::Server);
        let sent = bridge.sends().pop().unwrap();
        assert_eq!(sent.content_type, kind);
        assert_eq!(sent.client_id.as_deref(), Some(id.as_str()));
        expected["number"] = TO.into();
        expected["id"] = id.as_str().into();
        assert_eq!(sent.body, expected, "{kind}");
    }
}

#[tokio::test]
async fn without_a_client_id_field_the_gateway_names_the_message() {
    let bridge = fake(FakeConfig::default()).await;
    let t = HttpBridgeConfig::new(bridge.url()).start().await.unwrap();
    assert!(!t.capabilities().client_ids);
    let receipt = t.send(&new_id(), &text("hi")).await.unwrap();
    let sent = bridge.sends().pop().unwrap();
    assert_eq!(sent.client_id, None);
    assert_eq!(receipt.server_id, sent.id);
}

#[tokio::test]
async fn presences_are_posted() {
    let bridge = fake(FakeConfig::default()).await;
    let t = transport(&bridge).await;
    let to = Jid::parse(TO).unwrap();
    for p in [Presence::Composing, Presence::Recording, Presence::Paused] {
        t.presence("shop", &to, p).await.expect("shown");
    }
    let seen: Vec<_> = bridge
        .presences()
        .iter()
        .map(|p| (p.to.clone(), p.presence))
        .collect();
    let want =
        [Presence::Composing, Presence::Recording, Presence::Paused].map(|p| (TO.to_owned(), p));
    assert_eq!(seen, want);
}

async fn fails(t: &HttpBridge) -> TransportError {
    t.send(&new_id(), &text("x")).await.expect_err("refused")
}

#[tokio::test]
async fn error_answers_map_to_classes() {
    let bridge = fake(FakeConfig::default()).await;
    let t = transport(&bridge).await;
    let shop = || Target::instance("shop");
    let limit = |secs, contact| Fault::RateLimited {
        retry_after: Duration::from_secs(secs),
        contact,
    };
    bridge.fail_next(shop(), 1, limit(2, false));
    bridge.fail_next(Target::contact("shop", TO), 1, limit(3, true));
    bridge.fail_next(shop(), 1, Fault::Code(131_026));
    bridge.fail_next(shop(), 1, Fault::ServerError);
    let secs = Duration::from_secs;
    assert_eq!(
        fails(&t).await,
        TransportError::RateLimited {
            retry_after: secs(2),
            scope: RateScope::Session
        }
    );
    assert_eq!(
        fails(&t).await,
        TransportError::RateLimited {
            retry_after: secs(3),
            scope: RateScope::Contact
        }
    );
    assert!(matches!(
        fails(&t).await,
        TransportError::Permanent {
            code: Some(131_026),
            ..
        }
    ));
    assert!(matches!(
        fails(&t).await,
        TransportError::Retryable {
            maybe_sent: true,
            ..
        }
    ));
    assert!(
        t.send(&new_id(), &text("x")).await.is_ok(),
        "faults are used up"
    );
    let statuses: Vec<u16> = bridge.sends().iter().map(|s| s.status).collect();
    assert_eq!(statuses, [429, 429, 400, 500, 200]);
}

#[tokio::test]
async fn a_wrong_key_is_a_stopped_session() {
    let bridge = fake(FakeConfig {
        key: Some("right".into()),
        ..FakeConfig::default()
    })
    .await;
    let t = config(&bridge).api_key("wrong").start().await.unwrap();
    assert!(matches!(
        fails(&t).await,
        TransportError::Disconnected {
            permanent: true,
            ..
        }
    ));
    let t = config(&bridge).api_key("right").start().await.unwrap();
    assert!(t.send(&new_id(), &text("x")).await.is_ok());
}

#[tokio::test]
async fn a_lost_reply_is_maybe_sent_and_found_by_lookup() {
    let bridge = fake(FakeConfig::default()).await;
    let t = config(&bridge)
        .timeout(Duration::from_millis(150))
        .start()
        .await
        .unwrap();
    bridge.fail_next(Target::instance("shop"), 1, Fault::LoseReply);
    let id = new_id();
    let e = t.send(&id, &text("x")).await.expect_err("no reply");
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
    assert!(e.to_string().starts_with(wq_whatsapp::MAYBE_SENT));
    let found = t.lookup(&id).await.unwrap().expect("the bridge knows it");
    assert_eq!(found.message_id, id);
    assert!(found.ack >= AckLevel::Server);
    assert_eq!(t.lookup(&new_id()).await.unwrap(), None, "an id never sent");
}

#[tokio::test]
async fn without_a_lookup_path_nothing_is_found() {
    let bridge = fake(FakeConfig::default()).await;
    let t = HttpBridgeConfig::new(bridge.url())
        .client_id_field("id")
        .start()
        .await
        .unwrap();
    let id = new_id();
    t.send(&id, &text("x")).await.unwrap();
    assert_eq!(t.lookup(&id).await.unwrap(), None);
}

#[tokio::test]
async fn an_unreachable_bridge_did_not_send() {
    let bridge = fake(FakeConfig::default()).await;
    let url = bridge.url().to_owned();
    drop(bridge);
    // The port is free again: the connection is refused.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let t = HttpBridgeConfig::new(url).start().await.unwrap();
    let e = fails(&t).await;
    assert!(
        matches!(
            e,
            TransportError::Retryable {
                maybe_sent: false,
                ..
            }
        ),
        "{e:?}"
    );
}

#[tokio::test]
async fn receipts_arrive_as_events() {
    let plan = ReceiptPlan {
        late_server_ack: Some(Duration::from_millis(80)),
        duplicates: 1,
        ..ReceiptPlan::default()
    };
    let bridge = fake(FakeConfig {
        receipts: plan,
        ..FakeConfig::default()
    })
    .await;
    let t = transport(&bridge).await;
    let mut rx = t.events().expect("a feed");
    let id = new_id();
    t.send(&id, &text("x")).await.unwrap();
    let mut acks = Vec::new();
    while acks.len() < 8 {
        let event = next_event(&mut rx, |e| matches!(e, BridgeEvent::Receipt { .. })).await;
        if let BridgeEvent::Receipt {
            instance,
            id: of,
            ack,
        } = event
        {
            assert_eq!((instance.as_str(), of.as_str()), ("shop", id.as_str()));
            acks.push(ack);
        }
    }
    use AckLevel::*;
    assert_eq!(
        acks,
        [
            Server, Server, Delivered, Delivered, Read, Read, Server, Server
        ]
    );
    assert_eq!(
        bridge.ack_of(id.as_str()),
        Some(Read),
        "a late copy moves nothing back"
    );
}

#[tokio::test]
async fn session_drop_and_restore_show_in_the_state() {
    let bridge = fake(FakeConfig::default()).await;
    let t = transport(&bridge).await;
    let mut rx = t.events().unwrap();
    assert_eq!(t.session_state("shop"), SessionState::Connected);
    bridge.drop_session("shop");
    let is_session = |e: &BridgeEvent| matches!(e, BridgeEvent::Session { .. });
    let event = next_event(&mut rx, is_session).await;
    assert_eq!(
        event,
        BridgeEvent::Session {
            instance: "shop".into(),
            state: SessionState::Disconnected
        }
    );
    assert_eq!(t.session_state("shop"), SessionState::Disconnected);
    let e = fails(&t).await;
    assert!(
        matches!(
            e,
            TransportError::Disconnected {
                permanent: false,
                ..
            }
        ),
        "{e:?}"
    );
    bridge.restore_session("shop");
    eventually("the link back", || {
        t.session_state("shop") == SessionState::Connected
    })
    .await;
    assert!(t.send(&new_id(), &text("x")).await.is_ok());
}

#[tokio::test]
async fn states_are_polled_without_a_feed() {
    let bridge = fake(FakeConfig::default()).await;
    let t = config(&bridge)
        .paths(Paths::default())
        .start()
        .await
        .unwrap();
    bridge.drop_session("shop");
    eventually("the poll", || {
        t.session_state("shop") == SessionState::Disconnected
    })
    .await;
    bridge.restore_session("shop");
    eventually("the poll", || {
        t.session_state("shop") == SessionState::Connected
    })
    .await;
}

#[tokio::test]
async fn a_ban_is_permanent_with_its_code() {
    let bridge = fake(FakeConfig::default()).await;
    let t = transport(&bridge).await;
    let mut rx = t.events().unwrap();
    bridge.ban_session("shop", 463);
    let ban = next_event(&mut rx, |e| matches!(e, BridgeEvent::Ban { .. })).await;
    assert_eq!(
        ban,
        BridgeEvent::Ban {
            instance: "shop".into(),
            code: 463
        }
    );
    assert!(matches!(
        fails(&t).await,
        TransportError::Permanent {
            code: Some(463),
            ..
        }
    ));
    assert_eq!(t.session_state("shop"), SessionState::Banned);
    let to = Jid::parse(TO).unwrap();
    let e = t
        .presence("shop", &to, Presence::Composing)
        .await
        .expect_err("banned");
    assert!(
        matches!(
            e,
            TransportError::Permanent {
                code: Some(463),
                ..
            }
        ),
        "{e:?}"
    );
}

#[tokio::test]
async fn the_feed_is_followed_from_where_it_is() {
    let bridge = fake(FakeConfig::default()).await;
    bridge.ban_session("old", 463);
    let t = transport(&bridge).await;
    let mut rx = t.events().unwrap();
    bridge.drop_session("shop");
    let first = next_event(&mut rx, |_| true).await;
    assert_eq!(
        first,
        BridgeEvent::Session {
            instance: "shop".into(),
            state: SessionState::Disconnected
        },
        "the earlier ban is not replayed"
    );
}
