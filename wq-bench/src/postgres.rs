//! The Postgres backend under the benchmark: a fresh schema per workload.

use wq_postgres::PgStore;

use crate::workloads::Factory;

/// Stores in fresh schemas of one server.
pub struct Postgres {
    /// The server.
    pub url: String,
}

impl Postgres {
    /// `--url`, else `WQ_POSTGRES_URL`, else the local server.
    pub fn new(url: Option<String>) -> Self {
        let url = url
            .or_else(|| std::env::var("WQ_POSTGRES_URL").ok())
            .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
        Self { url }
    }
}

impl Factory for Postgres {
    type Backend = PgStore;

    fn name(&self) -> &'static str {
        "postgres"
    }

    async fn fresh(&self) -> Result<PgStore, String> {
        let schema = format!("wq_bench_{:08x}", rand::random::<u32>());
        PgStore::builder(&self.url, &schema)
            .max_connections(16)
            .connect()
            .await
            .map_err(|e| format!("cannot connect to Postgres at {}: {e}", self.url))
    }

    async fn cleanup(&self, store: PgStore) {
        let drop = format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", store.schema());
        // The schema name is ours, made above.
        let _ = sqlx::query(sqlx::AssertSqlSafe(drop))
            .execute(store.pool())
            .await;
        store.close().await;
    }
}
