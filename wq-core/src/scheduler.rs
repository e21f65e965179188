//! The [`Scheduler`] trait: time and wake-ups.
//!
//! Idle workers wait on a [`WakeSignal`] that a backend fires when work may
//! have arrived (in-process notify, LISTEN/NOTIFY, pub/sub) and sleep until
//! the next due job; polling is only a slow fallback.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::watch;

use crate::error::StoreError;
use crate::name::QueueName;
use crate::time::Timestamp;

/// Time chaining: the `run_at` of a job enqueued into a group whose latest
/// job runs at `last`, so that jobs keep at least `offset` between them.
pub fn chained_run_at(last: Option<Timestamp>, now: Timestamp, offset: Duration) -> Timestamp {
    last.map_or(now, |l| l.max(now)) + offset
}

/// Fires when work may have arrived in a queue.
///
/// A signal remembers what it has seen: [`WakeSignal::changed`] returns at
/// once if something arrived since the last [`WakeSignal::mark_seen`], so a
/// worker that marks before it claims never misses a wake-up.
#[derive(Debug, Clone)]
pub struct WakeSignal {
    rx: watch::Receiver<u64>,
}

impl WakeSignal {
    /// Marks everything so far as seen.
    pub fn mark_seen(&mut self) {
        self.rx.mark_unchanged();
    }

    /// Waits until something arrives after the last [`WakeSignal::mark_seen`].
    /// Never returns if the backend is gone.
    pub async fn changed(&mut self) {
        if self.rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// The sending side of one queue's wake-ups, cheap to clone.
#[derive(Debug, Clone)]
pub struct WakeSender(watch::Sender<u64>);

impl WakeSender {
    /// Wakes every worker waiting on this queue.
    pub fn wake(&self) {
        self.0.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Whether both send on the same channel.
    pub fn same_channel(&self, other: &WakeSender) -> bool {
        self.0.same_channel(&other.0)
    }

    /// A new signal for this queue.
    pub fn subscribe(&self) -> WakeSignal {
        WakeSignal {
            rx: self.0.subscribe(),
        }
    }
}

/// Per-queue wake-up channels, for backends to embed.
#[derive(Debug, Default)]
pub struct Wakeups {
    queues: Mutex<HashMap<QueueName, WakeSender>>,
}

impl Wakeups {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// The sender of `queue`'s wake-ups (created on first use).
    pub fn sender(&self, queue: &QueueName) -> WakeSender {
        self.queues
            .lock()
            .entry(queue.clone())
            .or_insert_with(|| WakeSender(watch::Sender::new(0)))
            .clone()
    }

    /// A signal for `queue`.
    pub fn subscribe(&self, queue: &QueueName) -> WakeSignal {
        self.sender(queue).subscribe()
    }

    /// Wakes the workers of `queue`.
    pub fn wake(&self, queue: &QueueName) {
        if let Some(s) = self.queues.lock().get(queue) {
            s.wake();
        }
    }

    /// Wakes the workers of every queue.
    pub fn wake_all(&self) {
        for s in self.queues.lock().values() {
            s.wake();
        }
    }
}

/// Time and wake-ups: what lets idle workers sleep instead of poll.
pub trait Scheduler: Send + Sync + 'static {
    /// A signal that fires when work may have arrived in `queue`: an enqueue,
    /// a group's next job becoming its head, a rescue, a resume.
    fn subscribe(&self, queue: &QueueName) -> WakeSignal;

    /// The earliest time a job of `queue` may become claimable: `now` or
    /// earlier if one is due already, `None` if nothing waits (or the queue
    /// is paused).
    fn next_due(
        &self,
        queue: &QueueName,
        now: Timestamp,
    ) -> impl Future<Output = Result<Option<Timestamp>, StoreError>> + Send;

    /// Moves jobs of `queue` whose `run_at` has come from `scheduled` to
    /// `available`, waking workers; returns how many moved.
    fn promote_due(
        &self,
        queue: &QueueName,
        now: Timestamp,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chaining_spaces_after_the_later_of_last_and_now() {
        let now = Timestamp::from_millis(10_000);
        let gap = Duration::from_secs(2);
        assert_eq!(chained_run_at(None, now, gap), now + gap);
        let past = Timestamp::from_millis(1_000);
        assert_eq!(chained_run_at(Some(past), now, gap), now + gap);
        let future = Timestamp::from_millis(60_000);
        assert_eq!(chained_run_at(Some(future), now, gap), future + gap);
    }

    #[tokio::test]
    async fn a_signal_marked_before_a_wake_sees_it() {
        let wakeups = Wakeups::new();
        let q = QueueName::from("message");
        let mut signal = wakeups.subscribe(&q);
        signal.mark_seen();
        wakeups.wake(&q);
        tokio::time::timeout(Duration::from_secs(1), signal.changed())
            .await
            .expect("wake-up seen");
        signal.mark_seen();
        let idle = tokio::time::timeout(Duration::from_millis(20), signal.changed()).await;
        assert!(idle.is_err(), "no second wake-up without a new event");
    }
}
