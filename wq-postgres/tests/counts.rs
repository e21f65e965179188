//! Counts of finished jobs on Postgres: kept as rows of changes, which a
//! count that reads many folds into one per state, so the next count reads
//! a few rows whatever was finished since the last prune.

mod support;

use sqlx::{AssertSqlSafe, Connection, PgConnection};
use wq_core::{Ack, AckAction, Admin as _, ClaimRequest, Client, Enqueue, QueueConfig, Store as _};
use wq_testkit::with_backend;

/// The queue's rows of changes.
async fn change_rows(schema: &str) -> i64 {
    let mut conn = PgConnection::connect(&support::url())
        .await
        .expect("connect");
    let sql = format!("SELECT count(*) FROM \"{schema}\".finished_counts WHERE queue = 'c'");
    sqlx::query_scalar(AssertSqlSafe(sql))
        .fetch_one(&mut conn)
        .await
        .expect("count rows")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_count_folds_many_changes() {
    let result = with_backend(&support::Postgres, |b| async move {
        let client = Client::new(b.clone());
        client.declare_queue(QueueConfig::new("c")).await?;
        client
            .enqueue_many((0..300).map(|i| Enqueue::new("c", &i)))
            .await?;
        // One acknowledgement per job: a row of changes each (two: its
        // state and `finished`).
        for _ in 0..300 {
            let now = client.clock().now();
            let req = ClaimRequest::new("c", 1, now, now + std::time::Duration::from_secs(30), "t");
            let jobs = b.claim(&req).await?;
            let acks: Vec<Ack> = jobs
                .iter()
                .filter_map(|j| Ack::for_job(j, AckAction::complete()))
                .collect();
            b.ack(&acks, now).await?;
        }
        let before = change_rows(b.schema()).await;
        assert!(before > 256, "{before} rows of changes");
        let counts = b.counts(&"c".into()).await?;
        assert_eq!(
            (counts.completed, counts.finished),
            (300, 300),
            "{counts:?}"
        );
        let after = change_rows(b.schema()).await;
        assert!(after <= 2, "folded to a row per state, not {after}");
        let counts = b.counts(&"c".into()).await?;
        assert_eq!(
            (counts.completed, counts.finished),
            (300, 300),
            "the same after"
        );
        Ok(())
    })
    .await;
    if let Err(e) = result {
        panic!("{e}");
    }
}
