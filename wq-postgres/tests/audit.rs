//! The audit finds each kind of broken invariant, repairs it, and finds a
//! healthy store clean. The store is corrupted with plain SQL, as a bug in
//! a function would leave it.

mod support;

use std::time::Duration;

use sqlx::AssertSqlSafe;
use wq_core::{AnomalyKind, Audit, Client, Clock, Enqueue, Job, QueueConfig, Store};
use wq_postgres::PgStore;
use wq_testkit::{Failure, claim, ensure, ensure_eq, manual_client};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_finds_and_repairs_broken_invariants() -> Result<(), Failure> {
    support::server().await?;
    let schema = support::schema();
    let result = run(&schema).await;
    support::drop_schema(&schema).await;
    result
}

async fn exec(store: &PgStore, sql: &str) -> Result<(), Failure> {
    let sql = sql.replace("$S", &format!("\"{}\"", store.schema()));
    sqlx::query(AssertSqlSafe(sql))
        .execute(store.pool())
        .await
        .map_err(|e| Failure::new(format!("corrupting the store: {e}")))?;
    Ok(())
}

async fn enqueue(client: &Client<PgStore>, group: Option<&str>) -> Result<Job, Failure> {
    let e = Enqueue::new("q", &"x");
    let e = match group {
        Some(g) => e.group(g),
        None => e,
    };
    Ok(client.enqueue(e).await?.job)
}

async fn run(schema: &str) -> Result<(), Failure> {
    let store = PgStore::connect(&support::url(), schema).await?;
    let (client, clock) = manual_client(&store);
    client.declare_queue(QueueConfig::new("q")).await?;
    let q = "q".into();

    // A healthy store: a running head with jobs behind it, a waiting group,
    // ungrouped jobs.
    let running_head = enqueue(&client, Some("a")).await?;
    let behind = enqueue(&client, Some("a")).await?;
    let waiting_head = enqueue(&client, Some("b")).await?;
    enqueue(&client, Some("b")).await?;
    let loose = enqueue(&client, None).await?;
    let c_head = enqueue(&client, Some("c")).await?;
    let c_second = enqueue(&client, Some("c")).await?;
    let claimed = claim(&store, "q", 1, clock.now(), Duration::from_secs(30)).await?;
    ensure_eq!(claimed.len(), 1, "one job claimed");
    ensure_eq!(claimed[0].id, running_head.id, "group a's head runs");
    let clean = store.audit(&q, clock.now(), false).await?;
    ensure!(
        clean.is_clean(),
        "a healthy store is clean: {:?}",
        clean.anomalies
    );
    ensure_eq!(clean.checked, 7, "unfinished jobs checked");

    // Break each invariant once.
    let id = |j: &Job| j.id.to_string();
    exec(
        &store,
        &format!("DELETE FROM $S.heads WHERE id = '{}'", id(&waiting_head)),
    )
    .await?;
    exec(
        &store,
        &format!("DELETE FROM $S.heads WHERE id = '{}'", id(&loose)),
    )
    .await?;
    // Group c's head swapped for the job behind it.
    exec(
        &store,
        &format!(
            "UPDATE $S.heads SET id = '{}', seq = (SELECT seq FROM $S.jobs WHERE id = '{}') \
             WHERE id = '{}'",
            id(&c_second),
            id(&c_second),
            id(&c_head)
        ),
    )
    .await?;
    exec(
        &store,
        &format!(
            "INSERT INTO $S.heads (id, queue, group_key, priority, run_at, seq, ready) \
             SELECT id, queue, NULL, priority, run_at, seq, true FROM $S.jobs WHERE id = '{}'",
            id(&behind)
        ),
    )
    .await?;
    exec(
        &store,
        &format!(
            "UPDATE $S.jobs SET lease_expires_at = NULL WHERE id = '{}'",
            id(&running_head)
        ),
    )
    .await?;

    let found = store.audit(&q, clock.now(), false).await?;
    let mut kinds: Vec<_> = found.anomalies.iter().map(|a| (a.kind, a.job)).collect();
    kinds.sort_by_key(|(k, j)| (format!("{k:?}"), *j));
    let mut expected = vec![
        (AnomalyKind::Headless, waiting_head.id),
        (AnomalyKind::Headless, loose.id),
        (AnomalyKind::Headless, c_head.id),
        (AnomalyKind::MisplacedHead, behind.id),
        (AnomalyKind::MisplacedHead, c_second.id),
        (AnomalyKind::Unleased, running_head.id),
    ];
    expected.sort_by_key(|(k, j)| (format!("{k:?}"), *j));
    ensure_eq!(kinds, expected, "what the audit found");
    ensure!(
        found.anomalies.iter().all(|a| !a.repaired),
        "nothing repaired without repair"
    );

    let repaired = store.audit(&q, clock.now(), true).await?;
    ensure!(
        repaired.anomalies.iter().all(|a| a.repaired),
        "every finding repaired: {:?}",
        repaired.anomalies
    );
    let after = store.audit(&q, clock.now(), false).await?;
    ensure!(
        after.is_clean(),
        "clean after the repair: {:?}",
        after.anomalies
    );

    // The repairs put things where they belong: group b's head and the loose
    // job are claimable again, the job behind a's running head is not, and
    // the unleased job is rescued.
    let mut next = claim(&store, "q", 10, clock.now(), Duration::from_secs(30)).await?;
    next.sort_by_key(|j| j.seq);
    let ids: Vec<_> = next.iter().map(|j| j.id).collect();
    ensure_eq!(
        ids,
        vec![waiting_head.id, loose.id, c_head.id],
        "claimable after the repair"
    );
    let rescued = store.rescue(clock.now(), 10).await?;
    ensure_eq!(rescued.retried, 1, "the unleased job is rescued");
    Ok(())
}
