//! # wq-postgres
//!
//! The Postgres backend of wq, on sqlx. Everything the engine promises holds
//! across many worker processes sharing one database:
//!
//! - every operation is one function call, one round trip, one transaction
//!   (`migrations/0002_functions.sql`);
//! - a claim reads only `heads`, the table of jobs that may run next (ungrouped
//!   jobs and group heads), with `FOR UPDATE SKIP LOCKED`, so its cost does not
//!   grow with the backlog and claimers never wait for each other;
//! - one job in flight per group is enforced by a unique index;
//! - enqueues into one group serialize on the group's row, which makes
//!   sequences, time chaining and idempotency keys atomic;
//! - sessions keep their limits and pause in the store, checked inside the
//!   claim, which reaches a session's jobs only while it may start one;
//! - idle workers wake on `LISTEN`/`NOTIFY`.
//!
//! Tables live in a schema the application names, so several applications
//! (and parallel tests) share one database.
//!
//! ```no_run
//! # // The facade's paths, through a stand-in for `wq`: a dev-dependency on
//! # // `wq` would turn its `postgres` feature on in every build of the workspace.
//! # mod wq { pub use wq_core::*; pub use wq_postgres::{PgStore, PgStoreBuilder}; }
//! use wq::{Client, Enqueue, PgStore, QueueConfig};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = PgStore::connect("postgres://postgres@127.0.0.1:5432/postgres", "wq").await?;
//! let client = Client::new(store.clone());
//! client.declare_queue(QueueConfig::new("message")).await?;
//! client.enqueue(Enqueue::new("message", &"hi").group("inst-1:5511999998888")).await?;
//! # Ok(())
//! # }
//! ```
//!
//! This one runs against the local Postgres in a schema of its own and
//! drops it at the end:
//!
//! ```
//! # // The facade's paths, through a stand-in for `wq`: a dev-dependency on
//! # // `wq` would turn its `postgres` feature on in every build of the workspace.
//! # mod wq { pub use wq_core::*; pub use wq_postgres::{PgStore, PgStoreBuilder}; }
//! use wq::{Client, Enqueue, PgStore, QueueConfig};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), wq::Error> {
//! let url = std::env::var("WQ_POSTGRES_URL")
//!     .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
//! let schema = format!("wq_doc_{:08x}", rand::random::<u32>());
//! let store = PgStore::connect(&url, &schema).await?;
//! let client = Client::new(store.clone());
//! client.declare_queue(QueueConfig::new("message")).await?;
//! let contact = "inst-1:5511999998888";
//! client.enqueue(Enqueue::new("message", &"Olá!").group(contact)).await?;
//! let second = client.enqueue(Enqueue::new("message", &"Tudo bem?").group(contact)).await?;
//! // The second message waits for the first: one job in flight per contact.
//! let position = client.position(second.job.id).await?.map(|p| p.in_group);
//! assert_eq!(position, Some(Some(1)));
//! store.drop_schema().await?;
//! # Ok(())
//! # }
//! ```
#![cfg_attr(
    not(test),
    warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

mod admission;
mod audit;
mod codec;
mod error;
mod list;
mod listen;
mod lock;
mod sessions;
mod sql;
mod store;

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::AtomicI64;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection, PgConnection, PgPool};
use tokio::task::AbortHandle;
use wq_core::connect::Unreached;
use wq_core::{StoreError, ValidationError, Wakeups};

use sql::Sql;

/// The schema's migrations, embedded in the crate.
static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// The Postgres backend. Clones share one pool.
#[derive(Clone, Debug)]
pub struct PgStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    pool: PgPool,
    schema: String,
    sql: Sql,
    wakeups: Arc<Wakeups>,
    listener: AbortHandle,
    /// When `heads` was last vacuumed (µs), see `PgStore::vacuum_heads`.
    heads_vacuumed: AtomicI64,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

/// Options for connecting a [`PgStore`].
#[derive(Clone, Debug)]
pub struct PgStoreBuilder {
    url: String,
    schema: String,
    max_connections: u32,
    migrate: bool,
    application_name: String,
    connect_timeout: Duration,
}

impl PgStoreBuilder {
    /// Most connections in the pool (default 10).
    pub fn max_connections(mut self, n: u32) -> Self {
        self.max_connections = n;
        self
    }

    /// The `application_name` its connections show in `pg_stat_activity`
    /// (default `wq`).
    pub fn application_name(mut self, name: impl Into<String>) -> Self {
        self.application_name = name.into();
        self
    }

    /// Whether to apply the migrations on connect (default yes).
    pub fn migrate(mut self, yes: bool) -> Self {
        self.migrate = yes;
        self
    }

    /// How long [`connect`](Self::connect) keeps trying while the server
    /// cannot be reached (default 30 s), so a worker may start before its
    /// database: refused or dropped connections, a server still starting or
    /// out of connection slots are tried again after 100 ms, doubling to
    /// 5 s, each failed try logged at `warn`. `Duration::ZERO` makes one
    /// try. What no retry can mend fails at once: a malformed URL or schema
    /// name, a refused password, a missing database, a failed migration.
    pub fn connect_timeout(mut self, limit: Duration) -> Self {
        self.connect_timeout = limit;
        self
    }

    /// Connects, migrates and starts listening for wake-ups; see
    /// [`connect_timeout`](Self::connect_timeout) for a server that is not
    /// up yet.
    pub async fn connect(self) -> Result<PgStore, StoreError> {
        check_schema(&self.schema)?;
        // The functions resolve names through the search_path: every
        // connection starts with the schema as its search_path. Their
        // statements look rows up by key, so one generic plan fits every
        // call; without this, array arguments keep plpgsql re-planning each
        // statement on every call, which costs more than running it. That
        // plan is made from the statistics of the moment, and a connection
        // opened while `jobs` was empty would keep scanning it whole as it
        // fills: sequential scans are off, since every statement has an
        // index to go by.
        // Enqueues tag their notifications with this store's origin: its own
        // listener skips them, as the enqueue already woke its workers.
        let origin = uuid::Uuid::now_v7().simple().to_string();
        let options = PgConnectOptions::from_str(&self.url)
            .map_err(error::store)?
            .application_name(&self.application_name)
            .options([
                ("search_path", self.schema.as_str()),
                ("plan_cache_mode", "force_generic_plan"),
                ("enable_seqscan", "off"),
                (listen::ORIGIN_SETTING, origin.as_str()),
            ]);
        reach(&options, &self.schema, self.migrate, self.connect_timeout).await?;
        // No ping before each use: it would double the round trips, and a
        // dead connection fails its statement anyway (callers retry).
        let pool = PgPoolOptions::new()
            .max_connections(self.max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .test_before_acquire(false)
            .connect_with(options)
            .await
            .map_err(error::store)?;
        let wakeups = Arc::new(Wakeups::new());
        let listener = tokio::spawn(listen::run(
            pool.clone(),
            listen::channel(&self.schema),
            origin,
            wakeups.clone(),
        ))
        .abort_handle();
        Ok(PgStore {
            inner: Arc::new(Inner {
                sql: Sql::new(&self.schema),
                pool,
                schema: self.schema,
                wakeups,
                listener,
                heads_vacuumed: AtomicI64::new(0),
            }),
        })
    }
}

impl PgStore {
    /// Connects to `url`, keeping wq's tables in `schema` (created and
    /// migrated if needed).
    pub async fn connect(url: &str, schema: &str) -> Result<Self, StoreError> {
        Self::builder(url, schema).connect().await
    }

    /// Options for a store in `schema` at `url`.
    pub fn builder(url: &str, schema: &str) -> PgStoreBuilder {
        PgStoreBuilder {
            url: url.to_owned(),
            schema: schema.to_owned(),
            max_connections: 10,
            migrate: true,
            application_name: "wq".to_owned(),
            connect_timeout: Duration::from_secs(30),
        }
    }

    /// The connection pool, for health checks and the application's own use.
    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// The schema holding wq's tables.
    pub fn schema(&self) -> &str {
        &self.inner.schema
    }

    /// Closes the pool; workers must be shut down first.
    pub async fn close(&self) {
        self.inner.listener.abort();
        self.inner.pool.close().await;
    }

    /// Drops the store's schema and everything in it (jobs, queues, locks,
    /// functions, migration history), then closes the pool every clone
    /// shares. For tests, benchmarks and tearing down a deployment: stop
    /// the workers and clients of the schema first, or the drop waits for
    /// their transactions. Connecting again creates the schema afresh.
    pub async fn drop_schema(self) -> Result<(), StoreError> {
        self.inner.listener.abort();
        // `check_schema` made the name a plain identifier.
        let sql = format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.inner.schema);
        let dropped = sqlx::query(AssertSqlSafe(sql))
            .execute(&self.inner.pool)
            .await
            .map_err(error::store);
        self.inner.pool.close().await;
        dropped.map(drop)
    }
}

/// A schema name: a plain lower-case identifier, so it never needs escaping.
fn check_schema(schema: &str) -> Result<(), ValidationError> {
    let ok = (1..=48).contains(&schema.len())
        && schema.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && schema
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(ValidationError::new(
            "schema",
            format!(
                "`{schema}` must be 1 to 48 characters of a-z, 0-9 and _, not starting with a digit"
            ),
        ))
    }
}

/// Why a try to reach the server failed.
#[derive(Debug)]
enum Contact {
    Sql(sqlx::Error),
    Migrate(sqlx::migrate::MigrateError),
    TimedOut(Duration),
}

impl Contact {
    /// Whether trying again may help: the server is down, starting, out of
    /// connection slots, or dropped the connection. Refused credentials, a
    /// missing database or a broken migration stay what they are.
    fn transient(&self) -> bool {
        let sql = match self {
            Contact::Sql(e) => e,
            Contact::Migrate(
                sqlx::migrate::MigrateError::Execute(e)
                | sqlx::migrate::MigrateError::ExecuteMigration(e, _),
            ) => e,
            Contact::Migrate(_) => return false,
            Contact::TimedOut(_) => return true,
        };
        match sql {
            sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut => true,
            // Connection exceptions, insufficient resources (too many
            // connections), shutdown or startup in progress.
            sqlx::Error::Database(db) => db.code().is_some_and(|c| {
                c.starts_with("08") || c.starts_with("53") || c.starts_with("57P")
            }),
            _ => false,
        }
    }

    fn into_store_error(self) -> StoreError {
        match self {
            Contact::Sql(e) => error::store(e),
            Contact::Migrate(e) => StoreError::backend(e),
            Contact::TimedOut(_) => StoreError::backend(self.to_string()),
        }
    }
}

impl std::fmt::Display for Contact {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Contact::Sql(e) => e.fmt(f),
            Contact::Migrate(e) => e.fmt(f),
            Contact::TimedOut(d) => write!(f, "no connection within {d:?}"),
        }
    }
}

/// Opens a first connection, and migrates over it if asked, trying again
/// with backoff while the failure is one that time may mend and `limit` has
/// not passed. The pool is built only once this succeeds: its own retries
/// would wait silently.
async fn reach(
    options: &PgConnectOptions,
    schema: &str,
    migrate: bool,
    limit: Duration,
) -> Result<(), StoreError> {
    let server = format!("{}:{}", options.get_host(), options.get_port());
    let tried = wq_core::connect::keep_trying(
        "Postgres",
        &server,
        limit,
        |within| first_contact(options, schema, migrate, within),
        Contact::transient,
    )
    .await;
    match tried {
        Ok(()) => Ok(()),
        Err(Unreached::Refused(e)) => Err(e.into_store_error()),
        Err(Unreached::GaveUp(e)) => Err(e),
    }
}

/// One try: a connection of its own (whose search_path is the schema, from
/// `options`) opened within `within`; then, if asked, the schema created and
/// migrated. The probe fails fast where a pool would retry a refused
/// connection silently until its acquire timeout.
async fn first_contact(
    options: &PgConnectOptions,
    schema: &str,
    migrate: bool,
    within: Duration,
) -> Result<(), Contact> {
    let conn = tokio::time::timeout(within, PgConnection::connect_with(options))
        .await
        .map_err(|_| Contact::TimedOut(within))?
        .map_err(Contact::Sql)?;
    let _ = conn.close().await;
    if migrate {
        run_migrations(options.clone(), schema, within).await?;
    }
    Ok(())
}

/// Applies the migrations inside `schema`, creating it if needed, over a
/// pool of one connection (the migrator's future is `Send` over a pool).
async fn run_migrations(
    options: PgConnectOptions,
    schema: &str,
    within: Duration,
) -> Result<(), Contact> {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(within)
        .connect_with(options)
        .await
        .map_err(Contact::Sql)?;
    // `check_schema` made the name a plain identifier.
    let create = format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\"");
    let created = sqlx::query(AssertSqlSafe(create)).execute(&pool).await;
    let migrated = match created {
        Ok(_) => MIGRATOR.run(&pool).await.map_err(Contact::Migrate),
        Err(e) => Err(Contact::Sql(e)),
    };
    pool.close().await;
    migrated
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_plain_identifiers() {
        assert!(check_schema("wq").is_ok());
        assert!(check_schema("wq_test_01").is_ok());
        for bad in ["", "Wq", "1wq", "wq-x", "wq\"; drop", &"s".repeat(49)] {
            assert_eq!(check_schema(bad).unwrap_err().field, "schema", "{bad}");
        }
    }
}
