//! The store: connection, options, and what every operation shares
//! (running a script, routing job ids to their queue, local wake-ups).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Script, ScriptInvocation, Value};
use tokio_util::sync::CancellationToken;
use wq_core::{JobId, QueueName, StoreError, Timestamp, Wakeups};

use crate::error::{RedisStoreError, driver, for_queue};
use crate::keys::Keys;
use crate::scripts::SCRIPTS;
use crate::wake;

/// Routes kept for claimed jobs before the map is cleared (leases that
/// lapse under a crashed handler are never acknowledged, so entries can
/// linger; the fallback lookup still finds their queue).
const MAX_ROUTES: usize = 1 << 20;

/// The Redis backend: jobs, locks and wake-ups of one key prefix.
///
/// Cheap to clone; clones share one reconnecting connection, one pub/sub
/// connection for wake-ups, and what they know about job routes.
#[derive(Clone, Debug)]
pub struct RedisStore {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    conn: ConnectionManager,
    pub keys: Keys,
    /// Tags this store's wake-ups, so it skips its own on the channel.
    pub origin: Arc<str>,
    pub wakeups: Arc<Wakeups>,
    /// The queue of each job this store claimed: acknowledgements and
    /// lease extensions carry ids only.
    routes: Mutex<HashMap<JobId, QueueName>>,
    /// Declared queues as last read from the registry.
    queues: RwLock<Vec<QueueName>>,
    listener: CancellationToken,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.listener.cancel();
    }
}

/// Options of [`RedisStore`], from [`RedisStore::builder`].
#[derive(Clone, Debug)]
pub struct RedisStoreBuilder {
    url: String,
    prefix: String,
    response_timeout: Duration,
    connect_timeout: Duration,
}

impl RedisStoreBuilder {
    /// Puts every key under `prefix` (default `wq`): 1 to 64 characters of
    /// `[A-Za-z0-9_.-]`. Stores with different prefixes share nothing.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How long to wait for a reply before the call fails (default 10 s).
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// How long [`connect`](Self::connect) keeps trying while the server
    /// cannot be reached (default 30 s), so a worker may start before its
    /// Redis: refused or dropped connections, timeouts and a server still
    /// loading its data are tried again after 100 ms, doubling to 5 s, each
    /// failed try logged at `warn`. `Duration::ZERO` makes one try. What no
    /// retry can mend fails at once: a malformed URL or prefix, a refused
    /// password.
    pub fn connect_timeout(mut self, limit: Duration) -> Self {
        self.connect_timeout = limit;
        self
    }

    /// Connects, checks the server (Redis 7 or newer; warns unless
    /// `maxmemory-policy` is `noeviction`), loads the scripts and starts
    /// listening for wake-ups.
    pub async fn connect(self) -> Result<RedisStore, StoreError> {
        let keys = Keys::new(&self.prefix)?;
        let client = redis::Client::open(self.url.as_str()).map_err(driver)?;
        crate::reach(&client, self.connect_timeout).await?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(self.response_timeout))
            .set_connection_timeout(Some(Duration::from_secs(5)));
        let mut conn = ConnectionManager::new_with_config(client.clone(), config)
            .await
            .map_err(driver)?;
        check_server(&mut conn).await?;
        for script in SCRIPTS.all() {
            script.load_async(&mut conn).await.map_err(driver)?;
        }
        let origin: Arc<str> = format!("{:016x}", rand::random::<u64>()).into();
        let wakeups = Arc::new(Wakeups::new());
        let listener = CancellationToken::new();
        wake::spawn(wake::Listener {
            client,
            keys: keys.clone(),
            origin: origin.clone(),
            wakeups: wakeups.clone(),
            stop: listener.clone(),
        });
        Ok(RedisStore {
            inner: Arc::new(Inner {
                conn,
                keys,
                origin,
                wakeups,
                routes: Mutex::new(HashMap::new()),
                queues: RwLock::new(Vec::new()),
                listener,
            }),
        })
    }
}

/// Refuses servers without script flags; warns when eviction could drop jobs.
async fn check_server(conn: &mut ConnectionManager) -> Result<(), StoreError> {
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(conn)
        .await
        .map_err(driver)?;
    let version = info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .unwrap_or("unknown")
        .trim()
        .to_owned();
    let major = version
        .split('.')
        .next()
        .and_then(|m| m.parse::<u32>().ok());
    if major.is_none_or(|m| m < 7) {
        return Err(RedisStoreError::ServerTooOld(version).into());
    }
    let policy = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory-policy")
        .query_async::<Vec<String>>(conn)
        .await;
    match policy.as_deref().map(|p| p.get(1).map(String::as_str)) {
        Ok(Some("noeviction")) => {}
        Ok(other) => tracing::warn!(
            policy = other.unwrap_or("unknown"),
            "Redis maxmemory-policy is not noeviction: under memory pressure Redis deletes keys, and wq loses jobs silently; set maxmemory-policy noeviction"
        ),
        Err(e) => tracing::warn!(
            error = %e,
            "could not read Redis maxmemory-policy (CONFIG not allowed?); make sure it is noeviction, or jobs can be evicted silently"
        ),
    }
    Ok(())
}

impl RedisStore {
    /// Connects to `url` (e.g. `redis://127.0.0.1:6379`) with every key
    /// under `prefix`; see [`RedisStoreBuilder::connect`].
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, StoreError> {
        Self::builder(url).prefix(prefix).connect().await
    }

    /// Options, then [`RedisStoreBuilder::connect`].
    pub fn builder(url: impl Into<String>) -> RedisStoreBuilder {
        RedisStoreBuilder {
            url: url.into(),
            prefix: "wq".into(),
            response_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(30),
        }
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        self.inner.keys.prefix()
    }

    /// Stops listening for wake-ups from other processes (also done when
    /// the last clone is dropped). The store keeps working; idle workers
    /// then rely on their fallback poll.
    pub fn close(&self) {
        self.inner.listener.cancel();
    }

    pub(crate) fn conn(&self) -> ConnectionManager {
        self.inner.conn.clone()
    }

    pub(crate) fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    /// Runs a per-queue script with `KEYS[1]` the queue's base; `args`
    /// fills in ARGV. An undeclared queue is `UnknownQueue`.
    pub(crate) async fn run(
        &self,
        script: &Script,
        queue: &QueueName,
        args: impl FnOnce(&mut ScriptInvocation<'_>),
    ) -> Result<Value, StoreError> {
        let mut call = script.prepare_invoke();
        call.key(self.keys().base(queue));
        args(&mut call);
        call.invoke_async(&mut self.conn())
            .await
            .map_err(for_queue(queue))
    }

    /// Runs a writing script whose reply starts with the wake-up flag
    /// (the arguments after `now` and the origin come from `args`); wakes
    /// this process's workers of `queue` when it woke, and returns the rest.
    pub(crate) async fn write(
        &self,
        script: &Script,
        queue: &QueueName,
        now: Timestamp,
        args: impl FnOnce(&mut ScriptInvocation<'_>),
    ) -> Result<Vec<Value>, StoreError> {
        let reply = self
            .run(script, queue, |call| {
                call.arg(now.as_micros()).arg(&*self.inner.origin);
                args(call);
            })
            .await?;
        let mut items = crate::reply::array(reply)?.into_iter();
        let woke = items
            .next()
            .ok_or_else(|| crate::error::reply("empty reply"))?;
        if crate::reply::woke(&woke)? {
            self.inner.wakeups.wake(queue);
        }
        Ok(items.collect())
    }

    /// Remembers the queue of jobs this store claimed.
    pub(crate) fn remember(&self, jobs: &[wq_core::Job]) {
        let mut routes = self.inner.routes.lock();
        if routes.len() + jobs.len() > MAX_ROUTES {
            routes.clear();
        }
        for j in jobs {
            routes.insert(j.id, j.queue.clone());
        }
    }

    /// Forgets routes of acknowledged jobs.
    pub(crate) fn forget(&self, ids: impl IntoIterator<Item = JobId>) {
        let mut routes = self.inner.routes.lock();
        for id in ids {
            routes.remove(&id);
        }
    }

    /// Declared queues as last read, read afresh if none is known.
    pub(crate) async fn known_queues(&self) -> Result<Vec<QueueName>, StoreError> {
        let known = self.inner.queues.read().clone();
        if known.is_empty() {
            return self.queues().await;
        }
        Ok(known)
    }

    /// Declared queues, read from the registry.
    pub(crate) async fn queues(&self) -> Result<Vec<QueueName>, StoreError> {
        let mut names: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.keys().registry())
            .query_async(&mut self.conn())
            .await
            .map_err(driver)?;
        names.sort();
        let queues: Vec<QueueName> = names.into_iter().map(QueueName::from).collect();
        *self.inner.queues.write() = queues.clone();
        Ok(queues)
    }

    /// The queue of each job, `None` where no declared queue holds it:
    /// from this store's routes, else by looking in every declared queue.
    pub(crate) async fn locate(&self, ids: &[JobId]) -> Result<Vec<Option<QueueName>>, StoreError> {
        let mut found: Vec<Option<QueueName>> = {
            let routes = self.inner.routes.lock();
            ids.iter().map(|id| routes.get(id).cloned()).collect()
        };
        let mut probed: Vec<QueueName> = Vec::new();
        for fresh_registry in [false, true] {
            if found.iter().all(Option::is_some) {
                break;
            }
            let queues = if fresh_registry {
                self.queues().await?
            } else {
                self.known_queues().await?
            };
            let new: Vec<QueueName> = queues.into_iter().filter(|q| !probed.contains(q)).collect();
            self.probe(ids, &new, &mut found).await?;
            probed.extend(new);
        }
        Ok(found)
    }

    /// Fills in `found` for ids held by one of `queues`, in one round trip.
    async fn probe(
        &self,
        ids: &[JobId],
        queues: &[QueueName],
        found: &mut [Option<QueueName>],
    ) -> Result<(), StoreError> {
        let missing: Vec<usize> = (0..ids.len()).filter(|&i| found[i].is_none()).collect();
        if missing.is_empty() || queues.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for &i in &missing {
            for q in queues {
                pipe.cmd("EXISTS").arg(self.keys().job(q, ids[i]));
            }
        }
        let hits: Vec<bool> = pipe.query_async(&mut self.conn()).await.map_err(driver)?;
        for (row, &i) in hits.chunks(queues.len()).zip(&missing) {
            found[i] = row
                .iter()
                .zip(queues)
                .find_map(|(&hit, q)| hit.then(|| q.clone()));
        }
        Ok(())
    }
}
