//! What the Redis tests share: the server's address, starting it when it
//! is not running, and fresh prefixes.

// Each test binary uses a part of this module.
#![allow(dead_code)]

use std::time::Duration;

use wq_core::Client;
use wq_redis::RedisStore;

/// The server under test: `WQ_REDIS_URL`, else the local default.
pub fn url() -> String {
    std::env::var("WQ_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A prefix no other test uses.
pub fn fresh_prefix(what: &str) -> String {
    format!("wqt-{what}-{:016x}", rand::random::<u64>())
}

async fn reachable(url: &str) -> bool {
    let Ok(client) = redis::Client::open(url) else {
        return false;
    };
    match client.get_multiplexed_async_connection().await {
        Ok(mut conn) => redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .is_ok(),
        Err(_) => false,
    }
}

/// Makes sure the server answers, starting a local one if it does not;
/// the error says how to start it by hand.
pub async fn ensure_server() -> Result<(), String> {
    let url = url();
    if reachable(&url).await {
        return Ok(());
    }
    let _ = std::fs::create_dir_all("/var/lib/redis");
    let _ = std::fs::create_dir_all("/var/log/redis");
    let started = std::process::Command::new("redis-server")
        .args([
            "--daemonize",
            "yes",
            "--bind",
            "127.0.0.1 -::1",
            "--port",
            "6379",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            "/var/lib/redis",
            "--logfile",
            "/var/log/redis/ci.log",
        ])
        .status();
    for _ in 0..50 {
        if reachable(&url).await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!(
        "Redis is not reachable at {url} (starting it gave {started:?}). Start it with \
         `redis-server --daemonize yes --port 6379 --save '' --appendonly no`, or point \
         WQ_REDIS_URL at a running server"
    ))
}

/// A store under a fresh prefix.
pub async fn store(what: &str) -> Result<RedisStore, String> {
    ensure_server().await?;
    RedisStore::connect(&url(), &fresh_prefix(what))
        .await
        .map_err(|e| format!("cannot connect to Redis at {}: {e}", url()))
}

/// Waits until `queue` counts `total` completed jobs; a failing call (a
/// connection being dropped on purpose) is tried again until the deadline.
pub async fn wait_for_completed(
    client: &Client<RedisStore>,
    queue: &str,
    total: u64,
    within: Duration,
) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + within;
    let mut last = String::new();
    while tokio::time::Instant::now() < deadline {
        match client.counts(queue).await {
            Ok(c) if c.completed >= total => return Ok(()),
            Ok(c) => last = format!("{c:?}"),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!(
        "timed out waiting for {total} completed jobs; last saw {last}"
    ))
}

/// A plain connection to the server under test, beside the store's: to
/// corrupt keys or drop other clients with.
pub async fn raw() -> Result<redis::aio::MultiplexedConnection, String> {
    redis::Client::open(url())
        .map_err(|e| e.to_string())?
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| e.to_string())
}

/// The ids of the server's clients connected after `after`.
pub async fn clients_since(
    admin: &mut redis::aio::MultiplexedConnection,
    after: i64,
) -> Result<Vec<i64>, String> {
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(admin)
        .await
        .map_err(|e| e.to_string())?;
    Ok(list
        .lines()
        .filter_map(|l| l.strip_prefix("id=")?.split(' ').next()?.parse().ok())
        .filter(|&id| id > after)
        .collect())
}

/// Log lines written by the code under test, for a `tracing` writer.
#[derive(Clone, Default)]
pub struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut b) = self.0.lock() {
            b.extend_from_slice(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// What was written so far.
    pub fn text(&self) -> String {
        let bytes = self.0.lock().map(|b| b.clone()).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}
