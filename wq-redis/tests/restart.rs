//! Crash tests that restart the server: worker processes are SIGKILLed and
//! replaced, the test enqueues batches and single jobs into the groups the
//! workers are draining (so enqueues race acknowledgements), storms of
//! `CLIENT KILL` drop every connection, and the server is SIGKILLed and
//! started again on its append-only file mid-run.
//!
//! Pub/sub must recover (every store resubscribes after the restart, which
//! the server's client list shows) and so must the scripts (the restarted
//! server has none: jobs enqueued after it complete only if the store loads
//! them again on `NOSCRIPT`).
//!
//! The test runs a Redis of its own (`redis-server` on a free port, AOF
//! fsynced on every write), so the shared server never restarts; it is
//! ignored by a plain `cargo test` all the same, like the Postgres one, and
//! CI runs it alone: `cargo test -p wq-redis --test restart -- --ignored`.
//! `WQ_SOAK_SECONDS=600` repeats the rounds of kills, storms and restarts
//! for that long.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use wq_core::Client;
use wq_redis::RedisStore;
use wq_testkit::crash::{self, Cut, KILLS_PER_HALF, WORKERS, micros};

const QUEUE: &str = "restart";
/// `CLIENT KILL` storms per round, each a few bursts apart.
const STORMS: usize = 3;
const BURSTS: usize = 5;

/// A Redis of the test's own, its data in `dir`; killed when dropped.
struct Server {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Server {
    fn start(dir: &Path) -> Result<Self, String> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port: {e}"))?
            .port();
        let mut server = Self {
            port,
            dir: dir.to_owned(),
            child: None,
        };
        server.spawn()?;
        Ok(server)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) -> Result<(), String> {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start redis-server: {e}"))?;
        self.child = Some(child);
        Ok(())
    }

    async fn wait_until_up(&self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let answer = async {
                let mut conn = redis::Client::open(self.url())?
                    .get_multiplexed_async_connection()
                    .await?;
                redis::cmd("PING").query_async::<String>(&mut conn).await
            };
            match answer.await {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() > deadline => {
                    return Err(format!("redis-server on {} never answered: {e}", self.port));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGKILLs the server and starts it again on the same port and
    /// directory, where it reloads its append-only file; the cut ends when
    /// it answers.
    async fn restart(&mut self) -> Result<Cut, String> {
        let begin = micros();
        self.kill();
        self.spawn()?;
        self.wait_until_up().await?;
        Ok(Cut {
            begin,
            end: micros(),
        })
    }

    /// Waits until `n` connections subscribe to wake-ups; returns how long
    /// that took. After a restart the server has no subscriber left, so
    /// each one is a store that resubscribed.
    async fn wait_for_subscribers(&self, n: usize) -> Result<u64, String> {
        let begin = micros();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut seen = 0;
        while Instant::now() < deadline {
            let list = async {
                let mut conn = redis::Client::open(self.url())?
                    .get_multiplexed_async_connection()
                    .await?;
                redis::cmd("CLIENT")
                    .arg("LIST")
                    .arg("TYPE")
                    .arg("pubsub")
                    .query_async::<String>(&mut conn)
                    .await
            };
            if let Ok(list) = list.await {
                seen = list
                    .lines()
                    .filter(|l| {
                        l.split(' ')
                            .any(|f| f.starts_with("psub=") && f != "psub=0")
                    })
                    .count();
                if seen >= n {
                    return Ok((micros() - begin) / 1_000);
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(format!(
            "{seen} of {n} stores resubscribed to wake-ups after a restart"
        ))
    }

    /// Drops every client connection, commands and pub/sub, a few times in
    /// a row; returns the cut and how many connections went.
    async fn storm(&self) -> Result<(Cut, u64), String> {
        let begin = micros();
        let mut admin = redis::Client::open(self.url())
            .map_err(|e| e.to_string())?
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| e.to_string())?;
        let mut dropped = 0;
        for _ in 0..BURSTS {
            for kind in ["normal", "pubsub"] {
                let n: u64 = redis::cmd("CLIENT")
                    .arg("KILL")
                    .arg("TYPE")
                    .arg(kind)
                    .query_async(&mut admin)
                    .await
                    .map_err(|e| format!("CLIENT KILL TYPE {kind}: {e}"))?;
                dropped += n;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok((
            Cut {
                begin,
                end: micros(),
            },
            dropped,
        ))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Several worker processes under SIGKILL with replacements, batch and
/// single enqueues racing their acknowledgements in the same groups,
/// storms of dropped connections and a SIGKILLed server that restarts on
/// its append-only file: no stored job lost or duplicated, groups start in
/// enqueue order, re-runs only where a kill, a storm or the restart cut a
/// run, and kills are rescued within a few leases.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs and restarts a Redis of its own for a minute; run with --ignored"]
async fn restarts_storms_and_kills_lose_nothing() -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("wq-redis-restart-{:016x}", rand::random::<u64>()));
    let (data, ledger) = (dir.join("data"), dir.join("ledger"));
    for d in [&data, &ledger] {
        std::fs::create_dir_all(d).map_err(|e| format!("{d:?}: {e}"))?;
    }
    let result = restart_run(&data, &ledger).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn restart_run(data: &Path, ledger_dir: &Path) -> Result<(), String> {
    let started = Instant::now();
    let mut server = Server::start(data)?;
    server.wait_until_up().await?;
    let prefix = format!("wqt-restart-{:016x}", rand::random::<u64>());
    let store = RedisStore::connect(&server.url(), &prefix)
        .await
        .map_err(|e| format!("store: {e}"))?;
    let client = Client::new(store.clone());
    // Each worker is named by its pid in the ledger.
    let url = server.url();
    let spawn = |n: usize| {
        let ledger = ledger_dir.join(format!("{n}.ledger"));
        let child = Command::new(env!("CARGO_BIN_EXE_wq-redis-crash-worker"))
            .args([&url, &prefix, QUEUE])
            .arg(&ledger)
            .spawn()
            .map_err(|e| format!("cannot start a worker: {e}"))?;
        Ok((child.id().to_string(), child))
    };

    // Midway through each round: storms, then a restart.
    let (mut dropped, mut storms) = (0, 0);
    let (mut restarts, mut down_ms, mut resubscribed_ms) = (Vec::new(), Vec::new(), Vec::new());
    let midway = async || {
        let mut cuts = Vec::new();
        for _ in 0..STORMS {
            let (cut, n) = server.storm().await?;
            cuts.push(cut);
            dropped += n;
            storms += 1;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let cut = server.restart().await?;
        down_ms.push((cut.end - cut.begin) / 1_000);
        cuts.push(cut);
        restarts.push(cut);
        // The workers and the test's own store.
        resubscribed_ms.push(server.wait_for_subscribers(WORKERS + 1).await?);
        Ok(cuts)
    };
    let outcome = crash::run(&client, QUEUE, ledger_dir, started, spawn, midway).await;
    store.close();
    drop(server);
    let outcome = outcome?;
    let (live, kills, cuts) = (&outcome.enqueued, &outcome.kills, &outcome.cuts);

    let across = live.tries_across(&restarts);
    let server = format!(
        "\"storms\":{storms},\"connections_dropped\":{dropped},\"restarts\":{},\
         \"down_ms\":{down_ms:?},\"resubscribed_ms\":{resubscribed_ms:?}",
        cuts.len() - storms
    );
    eprintln!(
        "{}",
        outcome.figures("redis_restart", &server, across, started)
    );
    let rounds = cuts.len() / (STORMS + 1);
    if rounds == 0 || kills.len() != rounds * 2 * KILLS_PER_HALF {
        return Err(format!("{} kills and {} cuts", kills.len(), cuts.len()));
    }
    if dropped == 0 {
        return Err("the storms dropped no connection".into());
    }
    if live.failed_tries == 0 {
        return Err("no enqueue failed: the storms and the restart missed the enqueuer".into());
    }
    if across == 0 {
        return Err("no enqueue was under way while the server was down".into());
    }
    outcome.verdict.rescued_in_time()
}
