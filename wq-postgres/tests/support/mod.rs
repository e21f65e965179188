//! What the Postgres tests share: the server, and a schema per test.

#![allow(dead_code)]

use std::time::Duration;

use sqlx::{AssertSqlSafe, Connection, PgConnection};
use tokio::sync::OnceCell;
use wq_postgres::PgStore;
use wq_testkit::{Failure, TestBackend};

/// The server the tests use: `WQ_POSTGRES_URL`, or the local one.
pub fn url() -> String {
    std::env::var("WQ_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

const START: &str = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start";

static REACHABLE: OnceCell<Result<(), String>> = OnceCell::const_new();

/// Succeeds once the server answers, starting the local cluster if it does
/// not; fails (never skips) with how to start it otherwise.
pub async fn server() -> Result<(), Failure> {
    REACHABLE
        .get_or_init(|| async {
            if PgConnection::connect(&url()).await.is_ok() {
                return Ok(());
            }
            let _ = std::process::Command::new("sh")
                .arg("-c")
                .arg(START)
                .status();
            let mut last = String::new();
            for _ in 0..30 {
                match PgConnection::connect(&url()).await {
                    Ok(_) => return Ok(()),
                    Err(e) => last = e.to_string(),
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(format!(
                "Postgres is not reachable at {} ({last}). Start it with `{START}` \
                 or point WQ_POSTGRES_URL at a server.",
                url()
            ))
        })
        .await
        .clone()
        .map_err(Failure)
}

/// A fresh schema name.
pub fn schema() -> String {
    format!("wq_test_{:016x}", rand::random::<u64>())
}

/// Drops a test's schema.
pub async fn drop_schema(schema: &str) {
    if let Ok(mut conn) = PgConnection::connect(&url()).await {
        let sql = format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE");
        let _ = sqlx::query(AssertSqlSafe(sql)).execute(&mut conn).await;
    }
}

/// A store in its own schema per test.
pub struct Postgres;

impl TestBackend for Postgres {
    type Backend = PgStore;

    async fn create(&self) -> Result<PgStore, Failure> {
        server().await?;
        PgStore::builder(&url(), &schema())
            .max_connections(6)
            .connect()
            .await
            .map_err(|e| Failure(format!("cannot create a test schema: {e}")))
    }

    async fn destroy(&self, store: PgStore) {
        let schema = store.schema().to_owned();
        if let Err(e) = store.drop_schema().await {
            eprintln!("could not drop schema {schema}: {e}");
        }
    }
}
