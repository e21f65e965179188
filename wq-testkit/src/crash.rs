//! Crash tests with real worker processes, shared by the backends' restart
//! tests: worker processes are SIGKILLed and replaced, the test enqueues
//! batches and single jobs into the groups the workers are draining (so
//! enqueues race acknowledgements), and in the middle of each round the
//! backend's own test cuts the server off (restarts it, drops its
//! connections). What is specific to a server stays in its test: how to
//! start a worker process and what to do midway; [`run`] does the rest.
//!
//! A round is [`KILLS_PER_HALF`] kills a second apart, a pause long enough
//! for their rescues, the test's midway step, and [`KILLS_PER_HALF`] more
//! kills; kills never overlap a midway step, so their rescue times measure
//! rescue alone. Rounds repeat for `WQ_SOAK_SECONDS` (one round without it).
//!
//! ## The ledger
//!
//! Each worker process appends one line per handler start and end to a
//! file of its own in the ledger directory, one unbuffered write per line:
//!
//! ```text
//! <unix micros> <start|done> <job id> <attempt> <group> <n> <worker>
//! ```
//!
//! where the job's payload is `{"g": <group>, "n": <n>}` as [`run`]
//! enqueues it and `<worker>` is the name the test gave the process when it
//! started it (see [`run`]). [`read_ledger`] reads the directory back.
//!
//! ## The checks
//!
//! After the run drains, [`check`] holds the ledger and the store to:
//! every job stored exactly once and completed, none lost; first runs per
//! group in enqueue order; one run in flight per group unless the other
//! run's process was dead; re-runs only of runs a kill or a [`Cut`] cut
//! short; and every run a kill cut short ran again, which gives the rescue
//! latencies that [`Verdict::rescued_in_time`] bounds. Crash tests that
//! only kill workers, over jobs stored beforehand, hold the same ledger to
//! [`check_kills`].

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::Child;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use wq_core::{Backend, Client, Enqueue, Job, JobId, JobState, ListQuery, QueueConfig};

/// The job lease of the queue [`run`] declares.
pub const LEASE: Duration = Duration::from_secs(1);
/// The maintenance leader's lock follows the shortest job lease: a killed
/// leader holds rescue up for that long on top of the job's own lease.
pub const LEADER_LEASE: Duration = LEASE;
/// How long a run cut short by a kill may wait to run again; also the pause
/// after a round's first kills, so that their rescues end before the
/// midway step and are timed.
pub const RESCUE_BOUND: Duration = LEASE.saturating_mul(4).saturating_add(LEADER_LEASE);
/// Worker processes running at once.
pub const WORKERS: usize = 3;
/// Kills in each half of a round, around its midway step.
pub const KILLS_PER_HALF: usize = 3;
const GROUPS: u32 = 200;
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
/// A run starting this close to a cut may have lost its claim or its
/// acknowledgement to it.
const CUT_SLACK: u64 = 1_000_000;
/// Longest a kill waits for a worker to have a run in flight.
const BUSY_WAIT: Duration = Duration::from_secs(30);
/// Attempts per job: enough that no run of kills and cuts kills a job.
const MAX_ATTEMPTS: u32 = 50;

/// Microseconds since the Unix epoch: the ledger's clock, which the worker
/// processes share with the test.
pub fn micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// One handler event from a worker's ledger file.
#[derive(Debug, Clone)]
pub struct Event {
    /// When it happened, in [`micros`].
    pub at: u64,
    /// The handler ended (`done`) rather than started.
    pub done: bool,
    /// The job's id, as the handler saw it.
    pub job: String,
    /// The attempt the handler ran.
    pub attempt: u32,
    /// The payload's group number.
    pub group: u32,
    /// The payload's place in its group's enqueue order.
    pub n: u32,
    /// The worker process, as the test named it.
    pub worker: String,
}

/// Every event of every ledger file in `dir`, in time order.
pub fn read_ledger(dir: &Path) -> Result<Vec<Event>, String> {
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

/// The workers among `names` whose ledger in `dir` shows a run started
/// and not ended: the ones a kill now would cut short. Waits up to
/// `timeout` for one, so that a kill never lands on a process that has not
/// begun to work (a fresh replacement, a slow start on a loaded machine).
pub async fn busy_workers(
    dir: &Path,
    names: &[&str],
    timeout: Duration,
) -> Result<Vec<String>, String> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut open: HashMap<String, i64> = HashMap::new();
        for e in read_ledger(dir)? {
            *open.entry(e.worker).or_default() += if e.done { -1 } else { 1 };
        }
        let busy: Vec<String> = names
            .iter()
            .filter(|n| open.get(**n).is_some_and(|&k| k > 0))
            .map(|n| (*n).to_owned())
            .collect();
        if !busy.is_empty() {
            return Ok(busy);
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "no worker of {names:?} ran a job within {timeout:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// One job the test asked to store, as the store answered.
#[derive(Debug)]
pub struct Sent {
    /// The payload's group number.
    pub group: u32,
    /// The payload's place in its group's enqueue order.
    pub n: u32,
    /// The job's idempotency key.
    pub key: String,
    /// The id the store answered with.
    pub id: JobId,
}

/// What the enqueuer did.
#[derive(Debug, Default)]
pub struct EnqueueLog {
    /// Every job stored, in the order the store answered.
    pub sent: Vec<Sent>,
    /// Enqueue calls, retries included.
    pub calls: u64,
    /// Calls that failed and were retried.
    pub failed_tries: u64,
    /// When each try began and ended, in [`micros`].
    pub spans: Vec<(u64, u64)>,
    /// Retries answered with the job an earlier, failed try had stored.
    pub lost_replies: u64,
}

impl EnqueueLog {
    /// How many tries were under way during one of `cuts`: each failed, or
    /// waited for the server to come back.
    pub fn tries_across(&self, cuts: &[Cut]) -> usize {
        self.spans
            .iter()
            .filter(|&&(b, e)| cuts.iter().any(|c| b <= c.end && e >= c.begin))
            .count()
    }
}

/// Stores each group's jobs in order: a call into a group returns before
/// the next one into it starts, so `n` is the enqueue order of the group.
struct Enqueuer<B> {
    client: Client<B>,
    queue: String,
    next: Vec<u32>,
    done: EnqueueLog,
}

fn key(group: u32, n: u32) -> String {
    format!("g{group}-n{n}")
}

impl<B: Backend> Enqueuer<B> {
    fn new(client: Client<B>, queue: &str) -> Self {
        Self {
            client,
            queue: queue.to_owned(),
            next: vec![0; GROUPS as usize],
            done: EnqueueLog::default(),
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
                Enqueue::new(self.queue.as_str(), &serde_json::json!({ "g": g, "n": n }))
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

    /// Enqueues at `RATE` jobs per second, a batch then single jobs into
    /// the same groups, until `stop`.
    async fn live(mut self, stop: Arc<AtomicBool>) -> Result<EnqueueLog, String> {
        let started = Instant::now();
        let mut stored = 0u64;
        while !stop.load(Ordering::Relaxed) {
            if stored as f64 >= started.elapsed().as_secs_f64() * RATE {
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
            let groups: Vec<u32> = (0..BATCH).map(|_| rand::random::<u32>() % GROUPS).collect();
            self.store(&groups).await?;
            for g in &groups[..SINGLES] {
                self.store(std::slice::from_ref(g)).await?;
            }
            stored += (BATCH + SINGLES) as u64;
        }
        Ok(self.done)
    }
}

/// Enqueue failures are expected while the server is cut off; the first
/// few say what they looked like.
fn note_failure(line: &str) {
    static SHOWN: AtomicU32 = AtomicU32::new(0);
    if SHOWN.fetch_add(1, Ordering::Relaxed) < 3 {
        eprintln!("{line}");
    }
}

/// A SIGKILL: which worker, when.
#[derive(Debug)]
pub struct Kill {
    /// The worker process, as the test named it.
    pub worker: String,
    /// When, in [`micros`].
    pub at: u64,
}

/// A span in which the server was down or dropped connections.
#[derive(Debug, Clone, Copy)]
pub struct Cut {
    /// When the cut began, in [`micros`].
    pub begin: u64,
    /// When the server answered again, in [`micros`].
    pub end: u64,
}

impl Cut {
    /// Whether a run starting at `at` may have lost its claim or its
    /// acknowledgement to this cut.
    pub fn covers(&self, at: u64) -> bool {
        self.begin.saturating_sub(CUT_SLACK) <= at && at <= self.end + CUT_SLACK
    }
}

/// Starts worker process number `n` (counting from 0, replacements
/// included); returns the name its ledger lines carry and the process.
type Spawn<'a> = Box<dyn FnMut(usize) -> Result<(String, Child), String> + 'a>;

/// The worker processes, killed and replaced one at a time.
struct Workers<'a> {
    spawn: Spawn<'a>,
    running: Vec<(String, Child)>,
    started: usize,
    kills: Vec<Kill>,
}

impl<'a> Workers<'a> {
    fn start(spawn: Spawn<'a>) -> Result<Self, String> {
        let mut workers = Self {
            spawn,
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
        let worker = (self.spawn)(self.started)?;
        self.started += 1;
        self.running.push(worker);
        Ok(())
    }

    /// SIGKILLs the oldest worker with a run in flight and starts a
    /// replacement.
    async fn kill_one(&mut self, ledger: &Path) -> Result<(), String> {
        let names: Vec<&str> = self.running.iter().map(|(n, _)| n.as_str()).collect();
        let busy = busy_workers(ledger, &names, BUSY_WAIT).await?;
        let i = self
            .running
            .iter()
            .position(|(n, _)| busy.contains(n))
            .ok_or("a busy worker is not running")?;
        let (worker, mut child) = self.running.remove(i);
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

impl Drop for Workers<'_> {
    fn drop(&mut self) {
        for (_, child) in &mut self.running {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Waits until no job is pending; fails if completions stop.
async fn drain<B: Backend>(client: &Client<B>, queue: &str) -> Result<(), String> {
    let mut progress = (0, Instant::now());
    loop {
        match client.counts(queue).await {
            Ok(c) if c.pending() == 0 => return Ok(()),
            Ok(c) if c.completed > progress.0 => progress = (c.completed, Instant::now()),
            Ok(c) if progress.1.elapsed() > STALL => {
                let stuck = client
                    .list(
                        ListQuery::new()
                            .queue(queue)
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
async fn stored_jobs<B: Backend>(
    client: &Client<B>,
    queue: &str,
) -> Result<HashMap<JobId, Job>, String> {
    let mut jobs = HashMap::new();
    let mut after = None;
    loop {
        let mut query = ListQuery::new().queue(queue).limit(500);
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
pub struct Verdict {
    /// Handler runs the ledger shows.
    pub runs: usize,
    /// Runs after a job's first, each explained by a kill or a cut.
    pub reruns: usize,
    /// Milliseconds from a kill to the next start of each run it cut,
    /// sorted.
    pub rescues: Vec<u64>,
    /// Cut runs whose rescue a [`Cut`] delayed: not timed.
    pub untimed: usize,
}

/// The smallest, median and largest of a [`Verdict`]'s rescue times, in
/// milliseconds (0 where there were none).
#[derive(Debug, Clone, Copy)]
struct RescueMs {
    /// The quickest rescue.
    min: u64,
    /// The median rescue.
    median: u64,
    /// The slowest rescue.
    max: u64,
}

impl Verdict {
    /// The spread of the rescue times.
    fn rescue_ms(&self) -> RescueMs {
        let ms = |p: usize| self.rescues.get(p).copied().unwrap_or(0);
        RescueMs {
            min: ms(0),
            median: ms(self.rescues.len() / 2),
            max: ms(self.rescues.len().saturating_sub(1)),
        }
    }

    /// Fails unless some kill cut a run short and every such run ran again
    /// within [`RESCUE_BOUND`].
    pub fn rescued_in_time(&self) -> Result<(), String> {
        if self.rescues.is_empty() {
            return Err("no kill cut a run: the kills tested nothing".into());
        }
        let max = self.rescue_ms().max;
        if Duration::from_millis(max) >= RESCUE_BOUND {
            return Err(format!(
                "a killed run waited {max} ms to run again (bound {RESCUE_BOUND:?})"
            ));
        }
        Ok(())
    }
}

/// The ledger checks: every stored job completed exactly once in the
/// store, first runs per group in enqueue order, one run in flight per
/// group, and re-runs only of runs a kill or a cut cut short.
pub fn check(
    sent: &[Sent],
    stored: &HashMap<JobId, Job>,
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
    let killed_at = kill_times(kills);
    let mut open = InFlight::default();
    for e in ledger {
        open.see(e, &killed_at)?;
    }

    // Re-runs only of runs a kill or a cut cut short.
    let was_cut = |run: &Event| {
        killed_at
            .get(run.worker.as_str())
            .is_some_and(|&k| run.at < k)
            || cuts.iter().any(|c| c.covers(run.at))
    };
    let bound = RESCUE_BOUND.as_micros() as u64;
    let mut reruns = 0;
    for runs in starts.values() {
        for (i, run) in runs.iter().enumerate() {
            let explained = match i.checked_sub(1).map(|p| runs[p]) {
                Some(previous) => was_cut(previous),
                // The first try left no line: its claim went to a process
                // that died before writing, or was lost to a cut.
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
                    "job ran again with no kill or cut to explain it: {run:?}"
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

/// What [`check_kills`] found.
#[derive(Debug)]
pub struct KillVerdict {
    /// Handler runs the ledger shows.
    pub runs: usize,
    /// Runs a kill cut short; each ran again.
    pub cut: usize,
}

/// The ledger checks of a crash test that only kills worker processes,
/// over jobs stored before the workers started, `n` counting from 0 in
/// each group: `jobs` distinct jobs ran and each ran to its end; first runs
/// per group in enqueue order; one run in flight per group unless the other
/// run's process was dead; a run that never ended was cut by a kill of its
/// process and ran again in a later attempt; and some kill cut a run.
pub fn check_kills(ledger: &[Event], kills: &[Kill], jobs: usize) -> Result<KillVerdict, String> {
    let killed_at = kill_times(kills);
    let done: HashSet<(&str, u32)> = ledger
        .iter()
        .filter(|e| e.done)
        .map(|e| (e.job.as_str(), e.attempt))
        .collect();
    let mut starts: HashMap<&str, Vec<&Event>> = HashMap::new();
    let mut next: HashMap<u32, u32> = HashMap::new();
    let mut open = InFlight::default();
    for e in ledger {
        open.see(e, &killed_at)?;
        if e.done {
            continue;
        }
        let runs = starts.entry(e.job.as_str()).or_default();
        if runs.is_empty() {
            let expected = next.entry(e.group).or_insert(0);
            if e.n != *expected {
                return Err(format!(
                    "group {} first ran job {} before job {expected}",
                    e.group, e.n
                ));
            }
            *expected += 1;
        }
        runs.push(e);
    }
    if starts.len() != jobs {
        return Err(format!("{} distinct jobs ran, {jobs} stored", starts.len()));
    }
    let mut cut = 0;
    for (job, runs) in &starts {
        if !runs.iter().any(|r| done.contains(&(*job, r.attempt))) {
            return Err(format!("job {job} never ran to its end"));
        }
        for run in runs.iter().filter(|r| !done.contains(&(*job, r.attempt))) {
            if killed_at
                .get(run.worker.as_str())
                .is_none_or(|&k| k < run.at)
            {
                return Err(format!("a run never ended in a live process: {run:?}"));
            }
            if !runs.iter().any(|o| o.attempt > run.attempt) {
                return Err(format!(
                    "job {job} was cut short by a kill and never ran again"
                ));
            }
            cut += 1;
        }
    }
    if cut == 0 {
        return Err("no kill cut a run: the kills tested nothing".into());
    }
    Ok(KillVerdict {
        runs: starts.values().map(Vec::len).sum(),
        cut,
    })
}

/// What a [`run`] did and what its checks found.
#[derive(Debug)]
pub struct Outcome {
    /// The enqueuer's record, initial jobs included.
    pub enqueued: EnqueueLog,
    /// Every SIGKILL, in order.
    pub kills: Vec<Kill>,
    /// Every cut the midway steps returned, in order.
    pub cuts: Vec<Cut>,
    /// The checks' figures.
    pub verdict: Verdict,
}

impl Outcome {
    /// The run's figures as one line of JSON, for a test to print:
    /// `test` names it, `server` holds the server's own fields (already
    /// JSON, without braces), and `across` counts the enqueue tries under
    /// way while the server was down (see [`EnqueueLog::tries_across`]).
    pub fn figures(&self, test: &str, server: &str, across: usize, started: Instant) -> String {
        let (live, verdict) = (&self.enqueued, &self.verdict);
        let rescue = verdict.rescue_ms();
        format!(
            "{{\"test\":\"{test}\",\"jobs\":{},\"runs\":{},\"reruns\":{},\"kills\":{},{server},\
             \"enqueue_calls\":{},\"failed_enqueue_tries\":{},\"enqueue_tries_across_restarts\":{across},\
             \"lost_replies\":{},\"cut_runs_timed\":{},\"cut_runs_untimed\":{},\
             \"rescue_ms\":{{\"min\":{},\"median\":{},\"max\":{}}},\
             \"lease_ms\":{},\"leader_lease_ms\":{},\"seconds\":{:.1}}}",
            live.sent.len(),
            verdict.runs,
            verdict.reruns,
            self.kills.len(),
            live.calls,
            live.failed_tries,
            live.lost_replies,
            verdict.rescues.len(),
            verdict.untimed,
            rescue.min,
            rescue.median,
            rescue.max,
            LEASE.as_millis(),
            LEADER_LEASE.as_millis(),
            started.elapsed().as_secs_f64(),
        )
    }
}

/// Runs a crash test on `client`'s backend, in the queue `queue`.
///
/// Declares the queue, stores the first jobs, starts [`WORKERS`] worker
/// processes with `spawn`, then runs rounds of kills around `midway` while
/// jobs are enqueued live, for `WQ_SOAK_SECONDS` counted from `started`
/// (one round without it). Then it waits for the queue to drain, stops the
/// workers, reads the ledger files in `ledger` and [`check`]s them.
///
/// `spawn(n)` starts worker process number `n` (replacements continue the
/// count), writing its ledger file into `ledger`; it returns the name that
/// process's ledger lines carry, and the process. `midway` cuts the server
/// off and returns the [`Cut`]s it made, each ending when the server
/// answers again.
pub async fn run<B: Backend>(
    client: &Client<B>,
    queue: &str,
    ledger: &Path,
    started: Instant,
    spawn: impl FnMut(usize) -> Result<(String, Child), String>,
    mut midway: impl AsyncFnMut() -> Result<Vec<Cut>, String>,
) -> Result<Outcome, String> {
    let soak = std::env::var("WQ_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(Duration::ZERO, Duration::from_secs);
    client
        .declare_queue(
            QueueConfig::new(queue)
                .lease(LEASE)
                .max_attempts(MAX_ATTEMPTS),
        )
        .await
        .map_err(|e| format!("declare: {e}"))?;
    let mut enqueuer = Enqueuer::new(client.clone(), queue);
    let initial: Vec<u32> = (0..INITIAL).map(|i| i % GROUPS).collect();
    for chunk in initial.chunks(1_000) {
        enqueuer.store(chunk).await?;
    }
    let mut workers = Workers::start(Box::new(spawn))?;
    let stop = Arc::new(AtomicBool::new(false));
    let live = tokio::spawn(enqueuer.live(stop.clone()));

    let mut cuts = Vec::new();
    let chaos = async {
        loop {
            for half in 0..2 {
                for _ in 0..KILLS_PER_HALF {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    workers.kill_one(ledger).await?;
                }
                if half == 0 {
                    tokio::time::sleep(RESCUE_BOUND).await;
                    cuts.extend(midway().await?);
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
        (Ok(()), Ok(Ok(_))) => drain(client, queue).await,
        _ => Ok(()),
    };
    let kills = workers.stop();
    chaos?;
    let enqueued = enqueued??;
    drained?;

    let stored = stored_jobs(client, queue).await?;
    let events = read_ledger(ledger)?;
    let verdict = check(&enqueued.sent, &stored, &events, &kills, &cuts)?;
    Ok(Outcome {
        enqueued,
        kills,
        cuts,
        verdict,
    })
}

/// When each worker process was killed, by its ledger name.
fn kill_times(kills: &[Kill]) -> HashMap<&str, u64> {
    kills.iter().map(|k| (k.worker.as_str(), k.at)).collect()
}

/// The run each group has in flight, as a ledger is read in order.
#[derive(Default)]
struct InFlight<'a> {
    open: HashMap<u32, &'a Event>,
}

impl<'a> InFlight<'a> {
    /// Takes one ledger line: a start while the group has a run in flight
    /// whose process was still alive is two runs of one group at once.
    fn see(&mut self, e: &'a Event, killed_at: &HashMap<&str, u64>) -> Result<(), String> {
        if e.done {
            if self
                .open
                .get(&e.group)
                .is_some_and(|o| o.job == e.job && o.attempt == e.attempt)
            {
                self.open.remove(&e.group);
            }
            return Ok(());
        }
        if let Some(o) = self.open.get(&e.group)
            && killed_at.get(o.worker.as_str()).is_none_or(|&k| k > e.at)
        {
            return Err(format!(
                "group {} ran two jobs at once: {o:?} and {e:?}",
                e.group
            ));
        }
        self.open.insert(e.group, e);
        Ok(())
    }
}
