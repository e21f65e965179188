//! An [`HttpBridge`](super::HttpBridge)'s background tasks: session
//! states asked of the gateway, and its events feed followed.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::runtime::Handle;
use tokio::task::AbortHandle;

use super::bridge::Shared;
use super::{Answer, answer, parse_ack, parse_state};
use crate::transport::BridgeEvent;

/// How long the feed waits after a failed request before the next.
const FEED_BACKOFF: Duration = Duration::from_secs(1);

/// Starts the tasks on `runtime`; they run until aborted. The feed is
/// followed after `from`, or from where it is once it answers.
pub(super) fn spawn(runtime: &Handle, shared: &Arc<Shared>, from: Option<u64>) -> Vec<AbortHandle> {
    let mut tasks = vec![runtime.spawn(poll_states(shared.clone())).abort_handle()];
    if let Some(path) = shared.paths.events.clone() {
        let follow = follow(shared.clone(), path, from);
        tasks.push(runtime.spawn(follow).abort_handle());
    }
    tasks
}

async fn poll_states(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(shared.status_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is at once, and start() has just asked.
    tick.tick().await;
    loop {
        tick.tick().await;
        for instance in shared.instances() {
            shared.refresh_state(&instance).await;
        }
    }
}

/// Long-polls the feed, publishing what it tells.
async fn follow(shared: Arc<Shared>, path: String, mut after: Option<u64>) {
    loop {
        let batch = match after {
            Some(after) => next_batch(&shared, &path, after).await,
            None => position(&shared, &path)
                .await
                .map(|next| (Vec::new(), next)),
        };
        match batch {
            Ok((events, next)) => {
                for event in events.iter().filter_map(parse_event) {
                    publish(&shared, event);
                }
                after = Some(next);
            }
            Err(why) => {
                tracing::warn!(error = %why, "the bridge's events feed failed");
                tokio::time::sleep(FEED_BACKOFF).await;
            }
        }
    }
}

/// Where the feed is now: a request without `after` answers no events and
/// the sequence number to ask after. Events from before the transport
/// started are not replayed: a ban signal of an earlier run would pause
/// a session an operator may have resumed since.
pub(super) async fn position(shared: &Shared, path: &str) -> Result<u64, String> {
    let a = get(shared, path, "wait=0", Duration::ZERO).await?;
    a.body["next"]
        .as_u64()
        .ok_or_else(|| format!("no `next` in {}", a.body))
}

/// The events after `after` and the sequence number to ask after next
/// (the gateway's word: it goes back when the gateway restarted).
async fn next_batch(shared: &Shared, path: &str, after: u64) -> Result<(Vec<Value>, u64), String> {
    let wait = shared.events_wait;
    let query = format!("after={after}&wait={}", wait.as_millis());
    let a = get(shared, path, &query, wait).await?;
    let events = a.body["events"].as_array().cloned().unwrap_or_default();
    let last = events.iter().filter_map(|e| e["seq"].as_u64()).max();
    let next = a.body["next"].as_u64().or(last).unwrap_or(after);
    Ok((events, next))
}

/// A successful answer of the feed at `path` with `query`, which the
/// gateway may hold for `wait`.
async fn get(shared: &Shared, path: &str, query: &str, wait: Duration) -> Result<Answer, String> {
    let join = if path.contains('?') { '&' } else { '?' };
    let req = shared
        .request(reqwest::Method::GET, &format!("{path}{join}{query}"), None)
        .timeout(wait + shared.timeout);
    let a = answer(req).await.map_err(|e| e.to_string())?;
    if !a.status.is_success() {
        return Err(format!("answered {}", a.status));
    }
    Ok(a)
}

/// Session changes go through the cache, which tells them once.
fn publish(shared: &Shared, event: BridgeEvent) {
    match event {
        BridgeEvent::Session { instance, state } => shared.set_state(&instance, state),
        other => {
            let _ = shared.events.send(other);
        }
    }
}

fn parse_event(v: &Value) -> Option<BridgeEvent> {
    let instance = v["instance"].as_str()?.to_owned();
    let id = || v["id"].as_str().map(str::to_owned);
    Some(match v["type"].as_str()? {
        "receipt" => BridgeEvent::Receipt {
            instance,
            id: id()?,
            ack: parse_ack(v["ack"].as_str()?)?,
        },
        "failed" => BridgeEvent::Failed {
            instance,
            id: id()?,
            code: v["code"].as_i64(),
        },
        "session" => BridgeEvent::Session {
            instance,
            state: parse_state(v["state"].as_str()?)?,
        },
        "ban" => BridgeEvent::Ban {
            instance,
            code: v["code"].as_i64()?,
        },
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::{AckLevel, SessionState};
    use serde_json::json;

    #[test]
    fn feed_events_parse() {
        let receipt =
            json!({ "type": "receipt", "instance": "i", "id": "X", "ack": "DELIVERY_ACK" });
        assert_eq!(
            parse_event(&receipt),
            Some(BridgeEvent::Receipt {
                instance: "i".into(),
                id: "X".into(),
                ack: AckLevel::Delivered
            })
        );
        let session = json!({ "type": "session", "instance": "i", "state": "close" });
        assert_eq!(
            parse_event(&session),
            Some(BridgeEvent::Session {
                instance: "i".into(),
                state: SessionState::Disconnected
            })
        );
        assert_eq!(
            parse_event(&json!({ "type": "ban", "instance": "i" })),
            None
        );
        assert_eq!(
            parse_event(&json!({ "type": "other", "instance": "i" })),
            None
        );
    }
}
