//! What every handler shares.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use wq::{Backend, Client};

use crate::auth::Auth;
use crate::health::HealthPolicy;

/// The state of one router: the client it acts through, its tokens, and
/// what `/health` judges by.
pub struct AppState<B> {
    /// The client every call goes through.
    pub client: Client<B>,
    /// The tokens accepted.
    pub auth: Auth,
    /// When the backlog makes the service degraded or unhealthy.
    pub health: Arc<HealthPolicy>,
    /// The last reading of each queue's finished count, for its rate.
    pub throughput: Arc<Throughput>,
}

/// Each queue's throughput, from successive readings of its finished count
/// (which only grows) at least a second apart, as this process saw them.
#[derive(Debug, Default)]
pub struct Throughput {
    readings: Mutex<HashMap<String, Reading>>,
}

#[derive(Clone, Copy, Debug)]
struct Reading {
    at: Instant,
    finished: u64,
    rate: Option<f64>,
}

impl Throughput {
    /// Jobs finished per second in `queue` between the reading before and
    /// this one; `None` until two readings a second apart exist.
    pub fn rate(&self, queue: &str, finished: u64) -> Option<f64> {
        let now = Instant::now();
        let mut readings = self.readings.lock().unwrap_or_else(|e| e.into_inner());
        let next = match readings.get(queue) {
            Some(prev) if now.duration_since(prev.at).as_secs_f64() < 1.0 => return prev.rate,
            Some(prev) => Reading {
                at: now,
                finished,
                rate: Some(
                    finished.saturating_sub(prev.finished) as f64
                        / now.duration_since(prev.at).as_secs_f64(),
                ),
            },
            None => Reading {
                at: now,
                finished,
                rate: None,
            },
        };
        readings.insert(queue.to_owned(), next);
        next.rate
    }
}

impl<B> Clone for AppState<B> {
    fn clone(&self) -> Self {
        Self {
            client: self.client.clone(),
            auth: self.auth.clone(),
            health: self.health.clone(),
            throughput: self.throughput.clone(),
        }
    }
}

impl<B: Backend> AppState<B> {
    /// The client.
    pub fn client(&self) -> &Client<B> {
        &self.client
    }
}
