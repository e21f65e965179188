//! `counts`: what `Client::counts` and `Client::oldest_wait` cost with many
//! completed jobs retained, against the same calls on a store that retains
//! none. Both stores hold the same few waiting jobs. The jobs are stored
//! through the store's API (`enqueue_many`, `claim`, `ack`); on Postgres the
//! bench also vacuums, and times the calls again after a prune and with the
//! dead rows that autovacuum would leave.

use std::any::Any;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use wq_core::{
    Ack, AckAction, Backend, ClaimRequest, Client, Enqueue, QueueConfig, Retention, Store,
};
use wq_postgres::PgStore;

use crate::report::Report;
use crate::workloads::{Factory, QUEUE, msg};

/// Jobs per `enqueue_many` while filling.
const FILL_BATCH: u64 = 10_000;
/// Most jobs per claim, all acknowledged in one call, while filling. The
/// Postgres acknowledgement's cost grows with the square of its batch
/// (a generic plan joins the batch to its locked jobs by a nested loop):
/// 10,000 at once took seconds; 500 filled fastest here.
const CLAIM_BATCH: u64 = 500;
/// Postgres: completed jobs between two `VACUUM (ANALYZE)`s during the
/// fill, standing in for autovacuum, which this machine's server runs
/// without (`autovacuum = off`). The first ones come after 10,000 and
/// 100,000 jobs: until the jobs table is analyzed, the connections keep the
/// plans they made when it was empty, with which an acknowledgement reads
/// every entry of an index that grows with the jobs run (the fill ran at
/// 600 jobs/s until its first `VACUUM`).
const VACUUM_EVERY: u64 = 500_000;
const VACUUM_FIRST: [u64; 2] = [10_000, 100_000];
/// Postgres: the jobs passed through the full store without a `VACUUM`
/// after the first timing, as a share of those retained: autovacuum
/// vacuums the jobs table once 2% of its rows are dead, and each job
/// leaves two dead rows (claimed, then completed).
const CHURN_SHARE: u64 = 100;
/// Fillers at once: each enqueues a batch, then claims and completes as
/// many jobs as it enqueued.
const FILLERS: usize = 2;
/// Jobs waiting in both stores while the calls are timed.
const LIVE: u64 = 1_000;
/// Timed calls of each kind on each store.
const CALLS: usize = 200;
/// Calls per store before switching to the other one: the two stores are
/// measured in alternating rounds, so a change in the machine's load falls
/// on both.
const ROUND: usize = 20;
/// Untimed calls of each kind on each store first.
const WARMUP: usize = 20;

/// A store whose queue keeps completed jobs for 30 days.
async fn setup<F: Factory>(f: &F) -> Result<(Client<F::Backend>, F::Backend), String> {
    let backend = f.fresh().await?;
    let client = Client::new(backend.clone());
    let keep = Duration::from_secs(30 * 24 * 3600);
    let config = QueueConfig::new(QUEUE).retention(Retention {
        completed: keep,
        dead: keep,
    });
    client
        .declare_queue(config)
        .await
        .map_err(|e| e.to_string())?;
    Ok((client, backend))
}

fn batch(from: u64, n: u64) -> impl Iterator<Item = Enqueue> {
    (from..from + n).map(|i| Enqueue::new(QUEUE, &msg(i, 0)))
}

/// Nanoseconds spent in each call of the fill, summed over the fillers.
#[derive(Default)]
struct Phases {
    enqueue: AtomicU64,
    claim: AtomicU64,
    ack: AtomicU64,
    vacuum: AtomicU64,
}

impl Phases {
    fn add(counter: &AtomicU64, since: Instant) {
        counter.fetch_add(since.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }

    fn secs(counter: &AtomicU64) -> f64 {
        counter.load(Ordering::Relaxed) as f64 / 1e9
    }
}

/// Claims and completes jobs until `n` are done: up to `CLAIM_BATCH` per
/// claim, all of a claim acknowledged in one call.
async fn complete<B: Backend>(
    client: &Client<B>,
    backend: &B,
    n: u64,
    phases: &Phases,
) -> Result<(), String> {
    let mut left = n;
    let mut empty = 0;
    while left > 0 {
        let now = client.clock().now();
        let req = ClaimRequest::new(
            QUEUE,
            left.min(CLAIM_BATCH) as usize,
            now,
            now + Duration::from_secs(600),
            "bench-fill",
        );
        let t = Instant::now();
        let jobs = backend.claim(&req).await.map_err(|e| e.to_string())?;
        Phases::add(&phases.claim, t);
        if jobs.is_empty() {
            empty += 1;
            if empty > 1_000 {
                return Err(format!("fill: nothing to claim with {left} to complete"));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
            continue;
        }
        let acks: Vec<Ack> = jobs
            .iter()
            .filter_map(|j| Ack::for_job(j, AckAction::complete()))
            .collect();
        let t = Instant::now();
        backend.ack(&acks, now).await.map_err(|e| e.to_string())?;
        Phases::add(&phases.ack, t);
        left = left.saturating_sub(jobs.len() as u64);
    }
    Ok(())
}

/// Stores `n` completed jobs through the store's API: `FILLERS` tasks each
/// enqueue `FILL_BATCH` jobs, then claim and complete as many. Their
/// payloads are numbered from `first`. With `vacuum`, a Postgres store is
/// vacuumed every `VACUUM_EVERY` jobs.
async fn fill<B: Backend>(
    client: &Client<B>,
    backend: &B,
    first: u64,
    n: u64,
    vacuum: bool,
) -> Result<Duration, String> {
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let phases = Arc::new(Phases::default());
    let mut tasks = Vec::new();
    for _ in 0..FILLERS {
        let (client, backend, next, done, phases) = (
            client.clone(),
            backend.clone(),
            next.clone(),
            done.clone(),
            phases.clone(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let from = next.fetch_add(FILL_BATCH, Ordering::Relaxed);
                if from >= n {
                    return Ok::<(), String>(());
                }
                let k = FILL_BATCH.min(n - from);
                let t = Instant::now();
                client
                    .enqueue_many(batch(first + from, k))
                    .await
                    .map_err(|e| e.to_string())?;
                Phases::add(&phases.enqueue, t);
                complete(&client, &backend, k, &phases).await?;
                let total = done.fetch_add(k, Ordering::Relaxed) + k;
                let crossed = |at: u64| total >= at && total - k < at;
                if vacuum && (total % VACUUM_EVERY < k || VACUUM_FIRST.into_iter().any(crossed)) {
                    let t = Instant::now();
                    if pg_vacuum(&backend).await? {
                        Phases::add(&phases.vacuum, t);
                    }
                }
                if total % 500_000 < k {
                    let s = started.elapsed().as_secs_f64();
                    eprintln!(
                        "  {total}/{n} completed in {s:.0} s ({:.0} jobs/s)",
                        total as f64 / s
                    );
                }
            }
        }));
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    eprintln!(
        "  time in calls, summed over {FILLERS} fillers: enqueue_many {:.1} s, claim {:.1} s, \
         ack {:.1} s, VACUUM {:.1} s",
        Phases::secs(&phases.enqueue),
        Phases::secs(&phases.claim),
        Phases::secs(&phases.ack),
        Phases::secs(&phases.vacuum)
    );
    Ok(started.elapsed())
}

/// Times `ROUND` calls of `counts`, then `ROUND` of `oldest_wait`.
async fn round<B: Backend>(client: &Client<B>, into: &mut Timings) -> Result<(), String> {
    for _ in 0..ROUND {
        let t = Instant::now();
        std::hint::black_box(client.counts(QUEUE).await.map_err(|e| e.to_string())?);
        into.counts.push(t.elapsed());
    }
    for _ in 0..ROUND {
        let t = Instant::now();
        std::hint::black_box(client.oldest_wait(QUEUE).await.map_err(|e| e.to_string())?);
        into.waits.push(t.elapsed());
    }
    Ok(())
}

/// The timings of one store.
#[derive(Default)]
struct Timings {
    counts: Vec<Duration>,
    waits: Vec<Duration>,
}

impl Timings {
    /// Warms both stores up, then times `CALLS` calls of each kind on each,
    /// alternating between them every `ROUND` calls.
    async fn measure<B: Backend>(
        empty: &Client<B>,
        full: &Client<B>,
    ) -> Result<(Self, Self), String> {
        let mut scratch = Timings::default();
        for client in [empty, full] {
            for _ in 0..WARMUP.div_ceil(ROUND) {
                round(client, &mut scratch).await?;
            }
        }
        let (mut e, mut f) = (Timings::default(), Timings::default());
        for _ in 0..CALLS / ROUND {
            round(empty, &mut e).await?;
            round(full, &mut f).await?;
        }
        Ok((e, f))
    }

    fn reports(mut self, backend: &str, retained: u64, suffix: &str) -> [Report; 2] {
        let total = |v: &[Duration]| v.iter().sum::<Duration>();
        let (tc, tw) = (total(&self.counts), total(&self.waits));
        let c = Report::new(
            backend,
            &format!("counts-{retained}{suffix}"),
            self.counts.len() as u64,
            tc,
        )
        .latencies(&mut self.counts);
        let w = Report::new(
            backend,
            &format!("oldest-wait-{retained}{suffix}"),
            self.waits.len() as u64,
            tw,
        )
        .latencies(&mut self.waits);
        [c, w]
    }
}

/// Prints the comparison of the `full` store's reports against `empty`'s.
fn summary(retained: u64, when: &str, empty: &[Report; 2], full: &[Report; 2]) {
    // Microseconds: the memory backend answers in a fraction of one.
    let us = |ms: Option<f64>| ms.unwrap_or(0.0) * 1_000.0;
    for (what, e, r) in [
        ("counts", &empty[0], &full[0]),
        ("oldest_wait", &empty[1], &full[1]),
    ] {
        let (e50, e99, r50, r99) = (us(e.p50_ms), us(e.p99_ms), us(r.p50_ms), us(r.p99_ms));
        eprintln!(
            "{what}{when}: p50 {r50:.2} µs, p99 {r99:.2} µs with {retained} completed retained \
             vs p50 {e50:.2} µs, p99 {e99:.2} µs with none (p50 ratio {:.2}, p99 ratio {:.2})",
            r50 / e50.max(1e-9),
            r99 / e99.max(1e-9)
        );
    }
}

/// Checks that a store holds what was put in it.
async fn check<B: Backend>(client: &Client<B>, completed: u64) -> Result<(), String> {
    let c = client.counts(QUEUE).await.map_err(|e| e.to_string())?;
    if c.completed != completed || c.available + c.scheduled != LIVE {
        return Err(format!(
            "counts: expected {completed} completed and {LIVE} waiting, got {c:?}"
        ));
    }
    if client
        .oldest_wait(QUEUE)
        .await
        .map_err(|e| e.to_string())?
        .is_none()
    {
        return Err("oldest_wait: nothing due with jobs waiting".into());
    }
    Ok(())
}

/// Postgres only: the dead row versions of the jobs table as its statistics
/// say (updated about once a second), and the rows of `finished_counts`.
async fn pg_state(backend: &(dyn Any + Send + Sync)) -> Option<(i64, i64)> {
    let pg = backend.downcast_ref::<PgStore>()?;
    let dead = sqlx::query_scalar::<_, i64>(
        "SELECT n_dead_tup FROM pg_stat_user_tables WHERE schemaname = $1 AND relname = 'jobs'",
    )
    .bind(pg.schema())
    .fetch_one(pg.pool())
    .await
    .ok()?;
    let rows = format!("SELECT count(*) FROM \"{}\".finished_counts", pg.schema());
    // The schema name is the bench's own.
    let rows = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(rows))
        .fetch_one(pg.pool())
        .await
        .ok()?;
    Some((dead, rows))
}

/// Postgres only: `VACUUM (ANALYZE)` of the tables a count and a wait read,
/// as autovacuum would in time; whether it ran.
async fn pg_vacuum(backend: &(dyn Any + Send + Sync)) -> Result<bool, String> {
    let Some(pg) = backend.downcast_ref::<PgStore>() else {
        return Ok(false);
    };
    let s = pg.schema();
    let sql = format!("VACUUM (ANALYZE) \"{s}\".jobs, \"{s}\".heads, \"{s}\".finished_counts");
    // The schema name is the bench's own.
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .execute(pg.pool())
        .await
        .map_err(|e| format!("vacuum: {e}"))?;
    Ok(true)
}

async fn print_pg_state(backend: &(dyn Any + Send + Sync), when: &str) {
    if let Some((dead, rows)) = pg_state(backend).await {
        eprintln!("counts: {when}: jobs has {dead} dead row versions, finished_counts {rows} rows");
    }
}

/// `counts`: `retained` completed jobs against none, `LIVE` waiting in both.
/// On Postgres both stores are vacuumed before the timing, and the calls are
/// timed again after a prune folded the finished counts, and again after
/// `retained / CHURN_SHARE` more jobs passed through the full store without
/// a `VACUUM`.
pub async fn counts<F: Factory>(f: &F, retained: u64) -> Result<Vec<Report>, String> {
    let (empty_client, empty_backend) = setup(f).await?;
    let (full_client, full_backend) = setup(f).await?;
    eprintln!("counts: filling {retained} completed jobs through the store API");
    let took = fill(&full_client, &full_backend, 0, retained, true).await?;
    eprintln!(
        "counts: filled {retained} in {:.1} s ({:.0} jobs/s)",
        took.as_secs_f64(),
        retained as f64 / took.as_secs_f64().max(1e-9)
    );
    let mut fill_report = Report::new(f.name(), "counts-fill", retained, took);
    fill_report.concurrency = Some(FILLERS);
    for client in [&empty_client, &full_client] {
        client
            .enqueue_many(batch(retained, LIVE))
            .await
            .map_err(|e| e.to_string())?;
    }
    check(&empty_client, 0).await?;
    check(&full_client, retained).await?;
    let postgres = pg_vacuum(&empty_backend).await? && pg_vacuum(&full_backend).await?;

    let mut out = vec![fill_report];
    print_pg_state(&full_backend, "before timing").await;
    let (e, r) = Timings::measure(&empty_client, &full_client).await?;
    let (e, r) = (
        e.reports(f.name(), 0, ""),
        r.reports(f.name(), retained, ""),
    );
    summary(retained, "", &e, &r);
    out.extend(e.into_iter().zip(r).flat_map(|(e, r)| [e, r]));

    if postgres {
        // Postgres counts finished jobs from one row per acknowledgement
        // call and state until a prune folds them: fold them, as a worker's
        // prune does every minute.
        for backend in [&empty_backend, &full_backend] {
            let now = full_client.clock().now();
            backend.prune(now, 1_000).await.map_err(|e| e.to_string())?;
        }
        print_pg_state(&full_backend, "after prune").await;
        let (e, r) = Timings::measure(&empty_client, &full_client).await?;
        let (e, r) = (
            e.reports(f.name(), 0, "-folded"),
            r.reports(f.name(), retained, "-folded"),
        );
        summary(retained, " after a prune", &e, &r);
        out.extend(e.into_iter().zip(r).flat_map(|(e, r)| [e, r]));

        let churn = retained / CHURN_SHARE;
        eprintln!("counts: {churn} more jobs through the full store, no VACUUM");
        fill(&full_client, &full_backend, retained + LIVE, churn, false).await?;
        check(&full_client, retained + churn).await?;
        print_pg_state(&full_backend, "before timing").await;
        let (e, r) = Timings::measure(&empty_client, &full_client).await?;
        let (e, r) = (
            e.reports(f.name(), 0, "-after-churn"),
            r.reports(f.name(), retained + churn, "-after-churn"),
        );
        summary(
            retained + churn,
            &format!(" after {churn} jobs without VACUUM"),
            &e,
            &r,
        );
        out.extend(e.into_iter().zip(r).flat_map(|(e, r)| [e, r]));
    }
    f.cleanup(full_backend).await;
    f.cleanup(empty_backend).await;
    Ok(out)
}
