//! Wake-ups across processes: the scripts publish on the queue's channel
//! when work may have become claimable; one pub/sub connection per store
//! listens to every queue of its prefix and fires the local signals.
//! Missed messages (a dropped connection) only cost a wake-up of every
//! queue on reconnect; workers fall back to their slow poll meanwhile.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;
use wq_core::Wakeups;

use crate::keys::Keys;

/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// What the listener task needs; it holds no reference to the store, so
/// dropping the store (which cancels `stop`) ends it.
pub(crate) struct Listener {
    pub client: redis::Client,
    pub keys: Keys,
    pub origin: Arc<str>,
    pub wakeups: Arc<Wakeups>,
    pub stop: CancellationToken,
}

pub(crate) fn spawn(listener: Listener) {
    tokio::spawn(async move { listener.run().await });
}

impl Listener {
    async fn run(self) {
        let mut backoff = Duration::from_millis(50);
        loop {
            let result = tokio::select! {
                () = self.stop.cancelled() => return,
                r = self.session(&mut backoff) => r,
            };
            if let Err(e) = result {
                tracing::warn!(error = %e, "wake-up channel lost; reconnecting");
            }
            // Whatever was published while the connection was down is lost.
            self.wakeups.wake_all();
            tokio::select! {
                () = self.stop.cancelled() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Subscribes and relays messages until the connection ends.
    async fn session(&self, backoff: &mut Duration) -> redis::RedisResult<()> {
        let mut pubsub = self.client.get_async_pubsub().await?;
        pubsub.psubscribe(self.keys.wake_pattern()).await?;
        *backoff = Duration::from_millis(50);
        self.wakeups.wake_all();
        let mut messages = pubsub.on_message();
        while let Some(msg) = messages.next().await {
            let origin: String = msg.get_payload().unwrap_or_default();
            if origin == *self.origin {
                continue;
            }
            if let Some(queue) = self.keys.queue_of_channel(msg.get_channel_name()) {
                self.wakeups.wake(&queue);
            }
        }
        Ok(())
    }
}
