//! Crash tests that restart the server: worker processes are SIGKILLed and
//! replaced, the test enqueues batches and single jobs into the groups the
//! workers are draining (so enqueues race acknowledgements), and Postgres
//! itself restarts mid-run.
//!
//! Ignored by a plain `cargo test`: a restart cuts every other test's
//! connections. CI runs them alone, after the suite:
//! `cargo test -p wq-postgres --test restart -- --ignored --test-threads=1`.
//! `WQ_SOAK_SECONDS=600` repeats the rounds of kills and restarts for that
//! long.

mod support;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sqlx::{Connection, PgConnection};
use wq_core::{Client, Enqueue, JobId, JobState, ListQuery, QueueConfig, RetryPolicy};
use wq_postgres::PgStore;

/// The queue the crash-worker binary serves.
const QUEUE: &str = "crash";
const LEASE: Duration = Duration::from_secs(1);
/// The maintenance leader's lock follows the shortest job lease: a killed
/// leader holds rescue up for that long on top of the job's own lease.
const LEADER_LEASE: Duration = LEASE;
const GROUPS: u32 = 200;
const WORKERS: usize = 3;
/// Kills in each half of a round, around its restart.
const KILLS_PER_HALF: usize = 3;
/// Jobs stored before the workers start.
const INITIAL: u32 = 2_000;
/// Jobs per second the test enqueues while the workers run; few enough
/// that groups drain and enqueues land next to the acknowledgements of
/// their group's head.
const RATE: f64 = 500.0;
/// One batch, then single enqueues into the first few of its groups.
const BATCH: usize = 16;
const SINGLES: usize = 4;
/// How long a failing enqueue is retried before the test gives up.
const RETRY_FOR: Duration = Duration::from_secs(60);
/// Without a completion for this long, the jobs left are stranded.
const STALL: Duration = Duration::from_secs(20);
/// A run starting this close to a restart may have lost its claim or its
/// acknowledgement to it.
const CUT_SLACK: u64 = 1_000_000;

const RESTART: &str = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main restart";
const START: &str = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start";

fn micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// One handler event from a worker's ledger file.
#[derive(Debug, Clone)]
struct Event {
    at: u64,
    done: bool,
    job: String,
    attempt: u32,
    group: u32,
    n: u32,
    worker: String,
}

fn read_ledger(dir: &Path) -> Result<Vec<Event>, String> {
    let mut events = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| format!("ledger dir: {e}"))? {
        let path = entry.map_err(|e| e.to_string())?.path();
        let text = std::fs::read_to_string(&path).map_err(|e| format!("{path:?}: {e}"))?;
        for line in text.lines() {
            let f: Vec<&str> = line.split(' ').collect();
            // A process killed mid-write leaves at most a torn last line.
            let parsed = (|| {
                let [at, event, job, attempt, group, n, worker] = f.as_slice() else {
                    return None;
                };
                Some(Event {
                    at: at.parse().ok()?,
                    done: *event == "done",
                    job: (*job).to_owned(),
                    attempt: attempt.parse().ok()?,
                    group: group.parse().ok()?,
                    n: n.parse().ok()?,
                    worker: (*worker).to_owned(),
                })
            })();
            events.extend(parsed);
        }
    }
    events.sort_by_key(|e| e.at);
    Ok(events)
}

/// One job the test asked to store, as the store answered.
#[derive(Debug)]
struct Sent {
    group: u32,
    n: u32,
    key: String,
    id: JobId,
}

/// What the enqueuer did.
#[derive(Debug, Default)]
struct Enqueued {
    sent: Vec<Sent>,
    calls: u64,
    failed_tries: u64,
    /// When each try began and ended.
    spans: Vec<(u64, u64)>,
    /// Retries answered with the job an earlier, failed try had stored.
    lost_replies: u64,
}

/// Stores each group's jobs in order: a call into a group returns before
/// the next one into it starts, so `n` is the enqueue order of the group.
struct Enqueuer {
    client: Client<PgStore>,
    next: Vec<u32>,
    done: Enqueued,
}

fn key(group: u32, n: u32) -> String {
    format!("g{group}-n{n}")
}

impl Enqueuer {
    fn new(client: Client<PgStore>) -> Self {
        Self {
            client,
            next: vec![0; GROUPS as usize],
            done: Enqueued::default(),
        }
    }

    /// Stores the next job of each of `groups` in one call (a batch when
    /// there are several). A failed call is retried with fresh job ids and
    /// the same idempotency keys until it returns Ok: a try whose reply was
    /// lost may have stored the jobs, and then the key returns them.
    async fn store(&mut self, groups: &[u32]) -> Result<(), String> {
        let steps: Vec<(u32, u32)> = groups
            .iter()
            .map(|&g| {
                let n = self.next[g as usize];
                self.next[g as usize] += 1;
                (g, n)
            })
            .collect();
        let deadline = Instant::now() + RETRY_FOR;
        let mut tries = 0;
        loop {
            tries += 1;
            self.done.calls += 1;
            let mut jobs = steps.iter().map(|&(g, n)| {
                Enqueue::new(QUEUE, &serde_json::json!({ "g": g, "n": n }))
                    .group(format!("g{g}"))
                    .idempotency_key(key(g, n))
                    .id(JobId::new())
            });
            let begin = micros();
            let result = match jobs.next() {
                Some(one) if steps.len() == 1 => self.client.enqueue(one).await.map(|e| vec![e]),
                Some(first) => {
                    self.client
                        .enqueue_many(std::iter::once(first).chain(jobs))
                        .await
                }
                None => return Ok(()),
            };
            self.done.spans.push((begin, micros()));
            let stored = match result {
                Ok(stored) => stored,
                Err(e) if Instant::now() < deadline => {
                    self.done.failed_tries += 1;
                    note_failure(&format!("enqueue try {tries} failed: {e}"));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                Err(e) => return Err(format!("enqueue failed for {RETRY_FOR:?}: {e}")),
            };
            if stored.len() != steps.len() {
                return Err(format!("{} jobs stored of {}", stored.len(), steps.len()));
            }
            for (&(group, n), e) in steps.iter().zip(stored) {
                let key = key(group, n);
                if e.job.idempotency_key.as_deref() != Some(key.as_str()) {
                    return Err(format!("enqueue of {key} answered {:?}", e.job));
                }
                if !e.created {
                    if tries == 1 {
                        return Err(format!("a fresh key {key} was already known"));
                    }
                    self.done.lost_replies += 1;
                }
                self.done.sent.push(Sent {
                    group,
                    n,
                    key,
                    id: e.job.id,
                });
            }
            return Ok(());
        }
    }
}

/// Enqueue failures are expected during the restart; the first few say
/// what they looked like.
fn note_failure(line: &str) {
    use std::sync::atomic::AtomicU32;
    static SHOWN: AtomicU32 = AtomicU32::new(0);
    if SHOWN.fetch_add(1, Ordering::Relaxed) < 3 {
        eprintln!("{line}");
    }
}

/// Enqueues at `RATE` jobs per second, a batch then single jobs into the
/// same groups, until `stop`.
async fn enqueue_live(mut enqueuer: Enqueuer, stop: Arc<AtomicBool>) -> Result<Enqueued, String> {
    let started = Instant::now();
    let mut stored = 0u64;
    while !stop.load(Ordering::Relaxed) {
        if stored as f64 >= started.elapsed().as_secs_f64() * RATE {
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        }
        let groups: Vec<u32> = (0..BATCH).map(|_| rand::random::<u32>() % GROUPS).collect();
        enqueuer.store(&groups).await?;
        for g in &groups[..SINGLES] {
            enqueuer.store(std::slice::from_ref(g)).await?;
        }
        stored += (BATCH + SINGLES) as u64;
    }
    Ok(enqueuer.done)
}

/// A SIGKILL: which worker, when.
#[derive(Debug)]
struct Kill {
    worker: String,
    at: u64,
}

/// A span in which the server was down or dropped connections.
#[derive(Debug, Clone, Copy)]
struct Cut {
    begin: u64,
    end: u64,
}

impl Cut {
    fn covers(&self, at: u64) -> bool {
        self.begin.saturating_sub(CUT_SLACK) <= at && at <= self.end + CUT_SLACK
    }
}

/// The worker processes, killed and replaced one at a time.
struct Workers {
    schema: String,
    dir: PathBuf,
    running: Vec<(String, Child)>,
    started: usize,
    kills: Vec<Kill>,
}

impl Workers {
    fn start(schema: &str, dir: &Path) -> Result<Self, String> {
        let mut workers = Self {
            schema: schema.to_owned(),
            dir: dir.to_owned(),
            running: Vec::new(),
            started: 0,
            kills: Vec::new(),
        };
        for _ in 0..WORKERS {
            workers.spawn()?;
        }
        Ok(workers)
    }

    fn spawn(&mut self) -> Result<(), String> {
        let name = format!("w{}", self.started);
        self.started += 1;
        let ledger = self.dir.join(format!("{name}.ledger"));
        let child = Command::new(env!("CARGO_BIN_EXE_wq-postgres-crash-worker"))
            .args([
                support::url(),
                self.schema.clone(),
                ledger.display().to_string(),
                name.clone(),
            ])
            .spawn()
            .map_err(|e| format!("cannot start a worker: {e}"))?;
        self.running.push((name, child));
        Ok(())
    }

    /// SIGKILLs the oldest worker and starts a replacement.
    fn kill_one(&mut self) -> Result<(), String> {
        let (worker, mut child) = self.running.remove(0);
        let at = micros();
        child
            .kill()
            .map_err(|e| format!("cannot kill {worker}: {e}"))?;
        let _ = child.wait();
        self.kills.push(Kill { worker, at });
        self.spawn()
    }

    fn stop(mut self) -> Vec<Kill> {
        for (_, child) in &mut self.running {
            let _ = child.kill();
            let _ = child.wait();
        }
        std::mem::take(&mut self.kills)
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for (_, child) in &mut self.running {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

async fn reachable() -> bool {
    PgConnection::connect(&support::url()).await.is_ok()
}

async fn wait_until_reachable(within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if reachable().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

async fn shell(command: &'static str) -> Result<(), String> {
    let status =
        tokio::task::spawn_blocking(move || Command::new("sh").arg("-c").arg(command).status())
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("`{command}`: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{command}` exited with {status}"))
    }
}

/// Restarts the local cluster; the cut ends when a new connection answers.
async fn restart_postgres() -> Result<Cut, String> {
    let begin = micros();
    let restarted = shell(RESTART).await;
    if !wait_until_reachable(Duration::from_secs(60)).await {
        return Err(format!(
            "Postgres did not come back after a restart ({restarted:?})"
        ));
    }
    restarted?;
    Ok(Cut {
        begin,
        end: micros(),
    })
}

/// Later tests and sessions expect the server up, whatever happened here.
async fn leave_postgres_up() {
    if !reachable().await {
        let _ = shell(START).await;
        wait_until_reachable(Duration::from_secs(30)).await;
    }
}

/// Waits until no job is pending; fails if completions stop.
async fn drain(client: &Client<PgStore>) -> Result<(), String> {
    let mut progress = (0, Instant::now());
    loop {
        match client.counts(QUEUE).await {
            Ok(c) if c.pending() == 0 => return Ok(()),
            Ok(c) if c.completed > progress.0 => progress = (c.completed, Instant::now()),
            Ok(c) if progress.1.elapsed() > STALL => {
                let stuck = client
                    .list(
                        ListQuery::new()
                            .queue(QUEUE)
                            .limit(5)
                            .state(JobState::Available),
                    )
                    .await
                    .map(|jobs| {
                        jobs.iter()
                            .map(|j| format!("{} {:?} seq {}", j.id, j.group, j.seq))
                            .collect::<Vec<_>>()
                    });
                return Err(format!(
                    "{} jobs stranded: no completion for {STALL:?} ({c:?}; available ones: {stuck:?})",
                    c.pending()
                ));
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every job the store holds for the queue, by id.
async fn stored_jobs(client: &Client<PgStore>) -> Result<HashMap<JobId, wq_core::Job>, String> {
    let mut jobs = HashMap::new();
    let mut after = None;
    loop {
        let mut query = ListQuery::new().queue(QUEUE).limit(500);
        if let Some(id) = after {
            query = query.after(id);
        }
        let page = client.list(query).await.map_err(|e| e.to_string())?;
        let Some(last) = page.last() else {
            return Ok(jobs);
        };
        after = Some(last.id);
        for job in page {
            jobs.insert(job.id, job);
        }
    }
}

/// What the ledger and the store showed.
#[derive(Debug)]
struct Verdict {
    runs: usize,
    reruns: usize,
    /// Milliseconds from a kill to the next start of each run it cut.
    rescues: Vec<u64>,
    /// Cut runs whose rescue a restart delayed: not timed.
    untimed: usize,
}

/// The ledger checks: every stored job completed exactly once in the
/// store, first runs per group in enqueue order, one run in flight per
/// group, and re-runs only of runs a kill or a restart cut.
fn check(
    sent: &[Sent],
    stored: &HashMap<JobId, wq_core::Job>,
    ledger: &[Event],
    kills: &[Kill],
    cuts: &[Cut],
) -> Result<Verdict, String> {
    // Nothing lost, nothing duplicated.
    let keys: HashSet<&str> = sent.iter().map(|s| s.key.as_str()).collect();
    if keys.len() != sent.len() {
        return Err("the enqueuer reused a key".into());
    }
    let mut stored_keys = HashSet::new();
    for job in stored.values() {
        let key = job.idempotency_key.as_deref().unwrap_or("");
        if !keys.contains(key) || !stored_keys.insert(key) {
            return Err(format!("duplicate or unknown job stored: {job:?}"));
        }
    }
    for s in sent {
        match stored.get(&s.id) {
            Some(job) if job.state == JobState::Completed => {}
            Some(job) => {
                return Err(format!(
                    "job {} ended {:?}, not completed",
                    s.key, job.state
                ));
            }
            None => return Err(format!("job {} ({}) was stored and is gone", s.key, s.id)),
        }
    }
    if stored.len() != sent.len() {
        return Err(format!(
            "{} jobs stored for {} enqueued",
            stored.len(),
            sent.len()
        ));
    }

    let ids: HashMap<String, &Sent> = sent.iter().map(|s| (s.id.to_string(), s)).collect();
    let mut starts: HashMap<&str, Vec<&Event>> = HashMap::new();
    for e in ledger.iter().filter(|e| !e.done) {
        let Some(s) = ids.get(&e.job) else {
            return Err(format!("a job that was never enqueued ran: {e:?}"));
        };
        if (s.group, s.n) != (e.group, e.n) {
            return Err(format!(
                "job {} ran with the payload of another: {e:?}",
                s.key
            ));
        }
        starts.entry(e.job.as_str()).or_default().push(e);
    }
    if starts.len() != sent.len() {
        return Err(format!(
            "{} jobs ran of {} stored",
            starts.len(),
            sent.len()
        ));
    }

    // First runs per group in enqueue order.
    let mut by_group: HashMap<u32, Vec<&Event>> = HashMap::new();
    for runs in starts.values() {
        by_group.entry(runs[0].group).or_default().push(runs[0]);
    }
    for (g, mut firsts) in by_group {
        firsts.sort_by_key(|e| e.at);
        let order: Vec<u32> = firsts.iter().map(|e| e.n).collect();
        if let Some(w) = order.windows(2).find(|w| w[0] > w[1]) {
            return Err(format!(
                "group {g} first ran job {} before job {}",
                w[0], w[1]
            ));
        }
    }

    // One run in flight per group, unless the other one's process was dead.
    let killed_at: HashMap<&str, u64> = kills.iter().map(|k| (k.worker.as_str(), k.at)).collect();
    let mut open: HashMap<u32, &Event> = HashMap::new();
    for e in ledger {
        if e.done {
            if open
                .get(&e.group)
                .is_some_and(|o| o.job == e.job && o.attempt == e.attempt)
            {
                open.remove(&e.group);
            }
            continue;
        }
        if let Some(o) = open.get(&e.group)
            && killed_at.get(o.worker.as_str()).is_none_or(|&k| k > e.at)
        {
            return Err(format!(
                "group {} ran two jobs at once: {o:?} and {e:?}",
                e.group
            ));
        }
        open.insert(e.group, e);
    }

    // Re-runs only of runs a kill or a restart cut.
    let was_cut = |run: &Event| {
        killed_at
            .get(run.worker.as_str())
            .is_some_and(|&k| run.at < k)
            || cuts.iter().any(|c| c.covers(run.at))
    };
    let bound = (4 * LEASE + LEADER_LEASE).as_micros() as u64;
    let mut reruns = 0;
    for runs in starts.values() {
        for (i, run) in runs.iter().enumerate() {
            let explained = match i.checked_sub(1).map(|p| runs[p]) {
                Some(previous) => was_cut(previous),
                // The first try left no line: its claim went to a process
                // that died before writing, or was lost to the restart.
                None if run.attempt > 1 => {
                    kills.iter().any(|k| k.at < run.at && run.at - k.at < bound)
                        || cuts
                            .iter()
                            .any(|c| c.begin < run.at && run.at < c.end + bound)
                }
                None => continue,
            };
            reruns += 1;
            if !explained {
                return Err(format!(
                    "job ran again with no kill or restart to explain it: {run:?}"
                ));
            }
        }
    }

    // Rescue latency: from each kill to the next start of the runs it cut.
    let done: HashSet<(&str, u32)> = ledger
        .iter()
        .filter(|e| e.done)
        .map(|e| (e.job.as_str(), e.attempt))
        .collect();
    let (mut rescues, mut untimed) = (Vec::new(), 0);
    for kill in kills {
        for run in ledger.iter().filter(|e| {
            !e.done && e.worker == kill.worker && !done.contains(&(e.job.as_str(), e.attempt))
        }) {
            let next = starts[run.job.as_str()].iter().find(|o| o.at > kill.at);
            let Some(next) = next else {
                return Err(format!(
                    "job {} was cut by a kill and never ran again",
                    run.job
                ));
            };
            if cuts.iter().any(|c| c.begin < next.at && c.end > kill.at) {
                untimed += 1;
            } else {
                rescues.push((next.at - kill.at) / 1_000);
            }
        }
    }
    rescues.sort_unstable();
    Ok(Verdict {
        runs: starts.values().map(Vec::len).sum(),
        reruns,
        rescues,
        untimed,
    })
}

/// Several worker processes under SIGKILL with replacements, batch and
/// single enqueues racing their acknowledgements in the same groups, and
/// Postgres restarted mid-run: no stored job lost or duplicated, groups
/// start in enqueue order, re-runs only where a kill or the restart cut a
/// run, and kills are rescued within a few leases.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "restarts the Postgres server; run alone with --ignored"]
async fn restarts_and_kills_lose_nothing() {
    support::server().await.expect("Postgres");
    let schema = support::schema();
    let dir = std::env::temp_dir().join(&schema);
    let result = restart_run(&schema, &dir).await;
    leave_postgres_up().await;
    let _ = std::fs::remove_dir_all(&dir);
    support::drop_schema(&schema).await;
    if let Err(e) = result {
        panic!("{e}");
    }
}

async fn restart_run(schema: &str, dir: &Path) -> Result<(), String> {
    let started = Instant::now();
    let soak = std::env::var("WQ_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(Duration::ZERO, Duration::from_secs);
    let store = PgStore::builder(&support::url(), schema)
        .max_connections(4)
        .connect()
        .await
        .map_err(|e| format!("store: {e}"))?;
    let client = Client::new(store.clone());
    client
        .declare_queue(QueueConfig::new(QUEUE).lease(LEASE).retry(RetryPolicy {
            max_attempts: 50,
            ..RetryPolicy::default()
        }))
        .await
        .map_err(|e| format!("declare: {e}"))?;
    let mut enqueuer = Enqueuer::new(client.clone());
    let initial: Vec<u32> = (0..INITIAL).map(|i| i % GROUPS).collect();
    for chunk in initial.chunks(1_000) {
        enqueuer.store(chunk).await?;
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("ledger dir: {e}"))?;
    let mut workers = Workers::start(schema, dir)?;
    let stop = Arc::new(AtomicBool::new(false));
    let live = tokio::spawn(enqueue_live(enqueuer, stop.clone()));

    // Rounds of three kills, a pause long enough for their rescues, a
    // restart, and three more kills; kills never overlap a restart, so
    // their rescue times measure rescue alone.
    let mut cuts = Vec::new();
    let chaos = async {
        loop {
            for half in 0..2 {
                for _ in 0..KILLS_PER_HALF {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    workers.kill_one()?;
                }
                if half == 0 {
                    tokio::time::sleep(4 * LEASE + LEADER_LEASE).await;
                    cuts.push(restart_postgres().await?);
                }
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
            if started.elapsed() >= soak {
                return Ok::<(), String>(());
            }
        }
    };
    let chaos = chaos.await;
    stop.store(true, Ordering::Relaxed);
    let enqueued = live.await.map_err(|e| format!("enqueuer: {e}"));
    let drained = match (&chaos, &enqueued) {
        (Ok(()), Ok(Ok(_))) => drain(&client).await,
        _ => Ok(()),
    };
    let kills = workers.stop();
    chaos?;
    let live = enqueued??;
    drained?;

    let stored = stored_jobs(&client).await?;
    store.close().await;
    let ledger = read_ledger(dir)?;
    let verdict = check(&live.sent, &stored, &ledger, &kills, &cuts)?;
    // Tries under way while the server was down: each failed, or waited
    // for it to come back.
    let across = live
        .spans
        .iter()
        .filter(|&&(b, e)| cuts.iter().any(|c| b <= c.end && e >= c.begin))
        .count();
    let down_ms: Vec<u64> = cuts.iter().map(|c| (c.end - c.begin) / 1_000).collect();
    let ms = |p: usize| verdict.rescues.get(p).copied().unwrap_or(0);
    let median = ms(verdict.rescues.len() / 2);
    let max = ms(verdict.rescues.len().saturating_sub(1));
    eprintln!(
        "{{\"test\":\"postgres_restart\",\"jobs\":{},\"runs\":{},\"reruns\":{},\
         \"kills\":{},\"restarts\":{},\"down_ms\":{down_ms:?},\"enqueue_calls\":{},\"failed_enqueue_tries\":{},\"enqueue_tries_across_restarts\":{across},\
         \"lost_replies\":{},\"cut_runs_timed\":{},\"cut_runs_untimed\":{},\
         \"rescue_ms\":{{\"min\":{},\"median\":{median},\"max\":{max}}},\
         \"lease_ms\":{},\"leader_lease_ms\":{},\"seconds\":{:.1}}}",
        live.sent.len(),
        verdict.runs,
        verdict.reruns,
        kills.len(),
        cuts.len(),
        live.calls,
        live.failed_tries,
        live.lost_replies,
        verdict.rescues.len(),
        verdict.untimed,
        ms(0),
        LEASE.as_millis(),
        LEADER_LEASE.as_millis(),
        started.elapsed().as_secs_f64(),
    );
    let rounds = cuts.len();
    if rounds == 0 || kills.len() != rounds * 2 * KILLS_PER_HALF {
        return Err(format!("{} kills and {rounds} restarts", kills.len()));
    }
    if across == 0 {
        return Err("no enqueue was under way while the server was down".into());
    }
    if verdict.rescues.is_empty() {
        return Err("no kill cut a run: the kills tested nothing".into());
    }
    let bound = 4 * LEASE + LEADER_LEASE;
    if Duration::from_millis(max) >= bound {
        return Err(format!(
            "a killed run waited {max} ms to run again (bound {bound:?})"
        ));
    }
    Ok(())
}
