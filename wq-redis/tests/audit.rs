//! The audit against stores corrupted on purpose through raw Redis
//! commands: each corruption is reported with its kind, repaired when
//! asked, and gone at the next audit; a clean, busy store reports nothing.

mod common;

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use wq_core::{
    Ack, AckAction, AckOutcome, AnomalyKind, Audit, AuditReport, ClaimRequest, Client, Enqueue,
    Job, JobId, QueueConfig, QueueName, Store, Timestamp,
};
use wq_redis::RedisStore;

const QUEUE: &str = "audit";

/// A store under a fresh prefix, a client, and a raw connection to corrupt
/// the store's keys with.
struct Fixture {
    store: RedisStore,
    client: Client<RedisStore>,
    raw: MultiplexedConnection,
}

impl Fixture {
    async fn new(what: &str) -> Result<Self, String> {
        let store = common::store(what).await?;
        let raw = common::raw().await?;
        let client = Client::new(store.clone());
        client
            .declare_queue(QueueConfig::new(QUEUE))
            .await
            .map_err(|e| e.to_string())?;
        Ok(Self { store, client, raw })
    }

    /// A key of the queue, e.g. `ready`.
    fn key(&self, name: &str) -> String {
        format!("{{{}:{QUEUE}}}:{name}", self.store.prefix())
    }

    async fn enqueue(&self, group: Option<&str>) -> Result<Job, String> {
        let mut e = Enqueue::new(QUEUE, &"x");
        if let Some(g) = group {
            e = e.group(g);
        }
        Ok(self.client.enqueue(e).await.map_err(|e| e.to_string())?.job)
    }

    async fn claim(&self, limit: usize) -> Result<Vec<Job>, String> {
        let now = Timestamp::now();
        let req = ClaimRequest::new(QUEUE, limit, now, now + Duration::from_secs(30), "w");
        self.store.claim(&req).await.map_err(|e| e.to_string())
    }

    async fn audit(&self, repair: bool) -> Result<AuditReport, String> {
        self.store
            .audit(&QueueName::from(QUEUE), Timestamp::now(), repair)
            .await
            .map_err(|e| e.to_string())
    }

    /// The member a waiting job has in `wait` (and, when claimable, in `ready`).
    async fn member(&mut self, id: JobId) -> Result<String, String> {
        let members: Vec<String> = redis::cmd("ZRANGE")
            .arg(self.key("wait"))
            .arg(0)
            .arg(-1)
            .query_async(&mut self.raw)
            .await
            .map_err(|e| e.to_string())?;
        let id = id.to_string();
        members
            .into_iter()
            .find(|m| m.ends_with(&id))
            .ok_or_else(|| format!("job {id} is not waiting"))
    }

    /// Runs a raw command on `key` and checks it changed one member.
    async fn corrupt(&mut self, cmd: &str, key: &str, args: &[&str]) -> Result<(), String> {
        let n: i64 = redis::cmd(cmd)
            .arg(self.key(key))
            .arg(args)
            .query_async(&mut self.raw)
            .await
            .map_err(|e| e.to_string())?;
        if n != 1 {
            return Err(format!("{cmd} {key} {args:?} changed {n} members"));
        }
        Ok(())
    }
}

/// The findings as (kind, job, group, repaired), sorted.
fn findings(report: &AuditReport) -> Vec<(String, JobId, Option<String>, bool)> {
    let mut out: Vec<_> = report
        .anomalies
        .iter()
        .map(|a| {
            (
                format!("{:?}", a.kind),
                a.job,
                a.group.as_ref().map(|g| g.as_str().to_owned()),
                a.repaired,
            )
        })
        .collect();
    out.sort();
    out
}

fn expect(
    found: &AuditReport,
    mut want: Vec<(AnomalyKind, JobId, Option<&str>, bool)>,
) -> Result<(), String> {
    want.sort_by_key(|w| (format!("{:?}", w.0), w.1));
    let want: Vec<_> = want
        .into_iter()
        .map(|(k, j, g, r)| (format!("{k:?}"), j, g.map(str::to_owned), r))
        .collect();
    let got = findings(found);
    if got != want {
        return Err(format!("audit found {got:?}, expected {want:?}"));
    }
    Ok(())
}

async fn run<F>(what: &str, test: impl FnOnce(Fixture) -> F) -> Result<(), String>
where
    F: Future<Output = Result<(), String>>,
{
    let f = Fixture::new(what).await?;
    let store = f.store.clone();
    let result = test(f).await;
    let _ = store.clear().await;
    result
}

/// Thousands of waiting jobs (several pages), delayed ones, running ones,
/// finished and retried ones: nothing to report, and every unfinished job
/// looked at.
#[tokio::test]
async fn a_clean_busy_store_reports_nothing() -> Result<(), String> {
    run("audit-clean", |f| async move {
        let mut jobs = Vec::new();
        for i in 0..2_600u32 {
            let mut e = Enqueue::new(QUEUE, &i);
            if i % 5 != 0 {
                e = e.group(format!("g{}", i % 120));
            }
            if i % 13 == 0 {
                e = e.delay(Duration::from_secs(3_600));
            }
            jobs.push(e);
        }
        for chunk in jobs.chunks(1_000) {
            f.client
                .enqueue_many(chunk.to_vec())
                .await
                .map_err(|e| e.to_string())?;
        }
        let claimed = f.claim(200).await?;
        let now = Timestamp::now();
        let acks: Vec<Ack> = claimed
            .iter()
            .take(90)
            .enumerate()
            .filter_map(|(i, j)| {
                let action = if i % 3 == 0 {
                    AckAction::Retry {
                        run_at: now,
                        error: "again".into(),
                    }
                } else {
                    AckAction::complete()
                };
                Ack::for_job(j, action)
            })
            .collect();
        let outcomes = f.store.ack(&acks, now).await.map_err(|e| e.to_string())?;
        if outcomes
            .iter()
            .any(|o| !matches!(o, AckOutcome::Applied(_)))
        {
            return Err(format!("acks refused: {outcomes:?}"));
        }
        let counts = f.client.counts(QUEUE).await.map_err(|e| e.to_string())?;
        for repair in [false, true] {
            let report = f.audit(repair).await?;
            expect(&report, vec![])?;
            if report.checked != counts.pending() {
                return Err(format!(
                    "checked {} jobs, {} are unfinished ({counts:?})",
                    report.checked,
                    counts.pending()
                ));
            }
        }
        let after = f.client.counts(QUEUE).await.map_err(|e| e.to_string())?;
        if after != counts {
            return Err(format!(
                "a clean audit changed counts: {counts:?} -> {after:?}"
            ));
        }
        Ok(())
    })
    .await
}

/// A group head and an ungrouped job taken out of `ready`: no claim could
/// reach them. The audit reports both, repairs them, and a claim then gets
/// exactly those two.
#[tokio::test]
async fn headless_groups_and_jobs_are_found_and_repaired() -> Result<(), String> {
    run("audit-headless", |mut f| async move {
        let a = f.enqueue(Some("g")).await?;
        let _b = f.enqueue(Some("g")).await?;
        let u = f.enqueue(None).await?;
        for id in [a.id, u.id] {
            let m = f.member(id).await?;
            f.corrupt("ZREM", "ready", &[&m]).await?;
        }
        let want = |repaired| {
            vec![
                (AnomalyKind::Headless, a.id, Some("g"), repaired),
                (AnomalyKind::Headless, u.id, None, repaired),
            ]
        };
        expect(&f.audit(false).await?, want(false))?;
        expect(&f.audit(false).await?, want(false))?;
        expect(&f.audit(true).await?, want(true))?;
        expect(&f.audit(false).await?, vec![])?;
        let mut got: Vec<JobId> = f.claim(10).await?.iter().map(|j| j.id).collect();
        got.sort();
        let mut want = vec![a.id, u.id];
        want.sort();
        if got != want {
            return Err(format!(
                "claimed {got:?} after the repair, expected {want:?}"
            ));
        }
        Ok(())
    })
    .await
}

/// A group's second job made claimable beside its waiting head, and in
/// another group beside its running head: both reported as misplaced and
/// taken out of `ready`; only the true head is claimed.
#[tokio::test]
async fn misplaced_heads_are_found_and_repaired() -> Result<(), String> {
    run("audit-misplaced", |mut f| async move {
        let r1 = f.enqueue(Some("r")).await?;
        let r2 = f.enqueue(Some("r")).await?;
        let running = f.claim(1).await?;
        if running.first().map(|j| j.id) != Some(r1.id) {
            return Err(format!("expected to claim {}, got {running:?}", r1.id));
        }
        let a = f.enqueue(Some("g")).await?;
        let b = f.enqueue(Some("g")).await?;
        for id in [b.id, r2.id] {
            let m = f.member(id).await?;
            f.corrupt("ZADD", "ready", &["0", &m]).await?;
        }
        let want = |repaired| {
            vec![
                (AnomalyKind::MisplacedHead, b.id, Some("g"), repaired),
                (AnomalyKind::MisplacedHead, r2.id, Some("r"), repaired),
            ]
        };
        expect(&f.audit(false).await?, want(false))?;
        expect(&f.audit(true).await?, want(true))?;
        expect(&f.audit(false).await?, vec![])?;
        let got: Vec<JobId> = f.claim(10).await?.iter().map(|j| j.id).collect();
        if got != vec![a.id] {
            return Err(format!(
                "claimed {got:?} after the repair, expected [{}]",
                a.id
            ));
        }
        Ok(())
    })
    .await
}

/// Running jobs taken out of `leases` would never be rescued. The audit
/// reports them, gives them a lapsed lease, and the next rescue takes them
/// back.
#[tokio::test]
async fn unleased_running_jobs_are_found_and_repaired() -> Result<(), String> {
    run("audit-unleased", |mut f| async move {
        f.enqueue(Some("g")).await?;
        f.enqueue(None).await?;
        let claimed = f.claim(10).await?;
        if claimed.len() != 2 {
            return Err(format!("claimed {claimed:?}"));
        }
        for j in &claimed {
            f.corrupt("ZREM", "leases", &[&j.id.to_string()]).await?;
        }
        let group = |j: &Job| j.group.as_ref().map(|g| g.as_str().to_owned());
        let groups: Vec<Option<String>> = claimed.iter().map(group).collect();
        let want = |repaired| {
            claimed
                .iter()
                .zip(&groups)
                .map(|(j, g)| (AnomalyKind::Unleased, j.id, g.as_deref(), repaired))
                .collect::<Vec<_>>()
        };
        let report = f.audit(false).await?;
        expect(&report, want(false))?;
        if report.checked != 2 {
            return Err(format!("checked {} jobs, 2 are running", report.checked));
        }
        expect(&f.audit(true).await?, want(true))?;
        expect(&f.audit(false).await?, vec![])?;
        let rescued = f
            .store
            .rescue(Timestamp::now(), 10)
            .await
            .map_err(|e| e.to_string())?;
        if rescued.retried != 2 {
            return Err(format!("rescue after the repair: {rescued:?}"));
        }
        Ok(())
    })
    .await
}

/// An undeclared queue is an error, as in every other call.
#[tokio::test]
async fn unknown_queues_are_refused() -> Result<(), String> {
    run("audit-unknown", |f| async move {
        match f
            .store
            .audit(&QueueName::from("nope"), Timestamp::now(), false)
            .await
        {
            Err(wq_core::StoreError::UnknownQueue(q)) if q.as_str() == "nope" => Ok(()),
            other => Err(format!("expected UnknownQueue, got {other:?}")),
        }
    })
    .await
}
