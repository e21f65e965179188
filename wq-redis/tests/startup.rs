//! What the store checks when it connects: a server that may evict keys
//! gets a warning, since eviction loses jobs silently.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use wq_redis::RedisStore;

/// A throwaway server, killed when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn connect_and_log(url: &str) -> Result<String, String> {
    let captured = common::Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let mut last = String::new();
    for _ in 0..50 {
        match RedisStore::connect(url, "wq-startup").await {
            Ok(store) => {
                store.close();
                return Ok(captured.text());
            }
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("cannot connect to {url}: {last}"))
}

/// An evicting server is reported at connect; the usual one is not.
#[tokio::test(flavor = "current_thread")]
async fn eviction_is_warned_about() -> Result<(), String> {
    common::ensure_server().await?;
    let port = 6393;
    let _server = Server(
        Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(["--maxmemory-policy", "allkeys-lru"])
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start redis-server: {e}"))?,
    );
    let evicting = connect_and_log(&format!("redis://127.0.0.1:{port}")).await?;
    if !evicting.contains("maxmemory-policy is not noeviction") || !evicting.contains("allkeys-lru")
    {
        return Err(format!("no warning for allkeys-lru; logged: {evicting:?}"));
    }
    let usual = connect_and_log(&common::url()).await?;
    if usual.contains("maxmemory-policy") {
        return Err(format!("a warning for noeviction: {usual:?}"));
    }
    Ok(())
}
