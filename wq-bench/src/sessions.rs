//! The session workloads: W6 (rate-limited sessions drained by one worker)
//! and W5-sessions (the claim's cost when most sessions are blocked).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use wq_core::{Client, Enqueue, JobContext, JobError, Rate, SessionLimits, Sessions, Store};

use crate::report::Report;
use crate::workloads::{
    Factory, Params, QUEUE, claim_and_complete, claim_rounds, drain, msg, setup,
};

/// W6's shape: 50 sessions × 400 groups, each session at most 1 running
/// and 20 starts a second, so the ideal is 1,000 jobs/s.
const W6_SESSIONS: u64 = 50;
const W6_GROUPS_PER_SESSION: u64 = 400;
const W6_STARTS_PER_SEC: u32 = 20;
const W6_HANDLER: Duration = Duration::from_millis(5);

/// W5-sessions' shape: of 10,000 sessions, 4,500 paused and 4,500 held by
/// their rate; each session's jobs in one group (a number with one long
/// conversation queued), so the queue has 10,000 group heads against plain
/// W5's 1,000 and the comparison is of sessions, not of head counts.
const W5S_SESSIONS: u64 = 10_000;
const W5S_PAUSED: u64 = 4_500;
const W5S_LIMITED: u64 = 4_500;

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// What W6's handlers saw per session: how many ran at once, and when the
/// last one started.
struct Seen {
    running: Vec<AtomicU64>,
    last_start: Vec<AtomicU64>,
    most_at_once: AtomicU64,
    closest_starts: AtomicU64,
    done: AtomicU64,
}

impl Seen {
    fn new(sessions: u64) -> Self {
        Self {
            running: (0..sessions).map(|_| AtomicU64::new(0)).collect(),
            last_start: (0..sessions).map(|_| AtomicU64::new(0)).collect(),
            most_at_once: AtomicU64::new(0),
            closest_starts: AtomicU64::new(u64::MAX),
            done: AtomicU64::new(0),
        }
    }

    fn start(&self, s: usize, at_micros: u64) {
        let now = self.running[s].fetch_add(1, Ordering::SeqCst) + 1;
        self.most_at_once.fetch_max(now, Ordering::Relaxed);
        let prev = self.last_start[s].swap(at_micros, Ordering::SeqCst);
        if prev != 0 {
            self.closest_starts
                .fetch_min(at_micros.saturating_sub(prev), Ordering::Relaxed);
        }
    }

    fn end(&self, s: usize) {
        self.running[s].fetch_sub(1, Ordering::SeqCst);
        self.done.fetch_add(1, Ordering::Relaxed);
    }
}

/// W6: `p.jobs` jobs over 50 sessions × 400 groups, each session limited
/// to 1 running and 20 starts/s, a 5 ms handler; jobs/s against the sum of
/// the limits (1,000/s).
pub async fn w6<F: Factory>(f: &F, p: &Params) -> Result<Vec<Report>, String> {
    let (client, backend) = setup(f).await?;
    let concurrency = W6_SESSIONS as usize;
    eprintln!(
        "W6: {} jobs over {W6_SESSIONS} sessions × {W6_GROUPS_PER_SESSION} groups, \
         {W6_STARTS_PER_SEC} starts/s and 1 running each, concurrency {concurrency}",
        p.jobs
    );
    let limits = SessionLimits::new()
        .max_running(1)
        .rate(Rate::new(W6_STARTS_PER_SEC, Duration::from_secs(1)));
    for s in 0..W6_SESSIONS {
        client
            .set_session_limits(QUEUE, &format!("s{s}"), limits)
            .await
            .map_err(err)?;
    }
    let mut next = 0;
    while next < p.jobs {
        let end = (next + 5_000).min(p.jobs);
        let batch = (next..end).map(|i| {
            let s = i % W6_SESSIONS;
            let g = (i / W6_SESSIONS) % W6_GROUPS_PER_SESSION;
            Enqueue::new(QUEUE, &msg(s, i))
                .session(format!("s{s}"))
                .group(format!("s{s}:g{g}"))
        });
        client.enqueue_many(batch).await.map_err(err)?;
        next = end;
    }
    let origin = Instant::now();
    let seen = Arc::new(Seen::new(W6_SESSIONS));
    let handler = {
        let seen = seen.clone();
        move |ctx: JobContext| {
            let seen = seen.clone();
            async move {
                let m: crate::workloads::Msg = ctx.payload()?;
                let s = m.g as usize;
                seen.start(s, origin.elapsed().as_micros() as u64);
                tokio::time::sleep(W6_HANDLER).await;
                seen.end(s);
                Ok::<(), JobError>(())
            }
        }
    };
    let elapsed = drain(
        &client,
        &backend,
        handler,
        &seen.done,
        p.jobs,
        concurrency,
        None,
    )
    .await?;
    f.cleanup(backend).await;
    let ideal = f64::from(W6_STARTS_PER_SEC) * W6_SESSIONS as f64;
    let mut r = Report::new(f.name(), "W6", p.jobs, elapsed);
    r.groups = Some(W6_SESSIONS * W6_GROUPS_PER_SESSION);
    r.concurrency = Some(concurrency);
    r.of_ideal = Some(r.jobs_per_sec / ideal);
    eprintln!(
        "W6: {:.0} jobs/s = {:.1}% of {ideal:.0}/s; most running at once in a session {}, \
         closest starts of a session {:.1} ms",
        r.jobs_per_sec,
        100.0 * r.jobs_per_sec / ideal,
        seen.most_at_once.load(Ordering::Relaxed),
        seen.closest_starts.load(Ordering::Relaxed) as f64 / 1_000.0
    );
    Ok(vec![r])
}

/// W5-sessions: claim + acknowledge `min(p.jobs, …)` jobs with `p.backlog`
/// jobs waiting in 10,000 sessions of which 9,000 cannot start a job
/// (4,500 paused, 4,500 waiting an hour for their rate) and come first
/// in the queue's order; then, as `W5-sessions-open`, the same with every
/// session open, which tells the cost of the blocked sessions from the
/// cost of sessions themselves.
pub async fn w5_sessions<F: Factory>(f: &F, p: &Params) -> Result<Vec<Report>, String> {
    let mut out = Vec::new();
    for blocked in [true, false] {
        out.push(w5_sessions_round(f, p, blocked).await?);
    }
    Ok(out)
}

async fn w5_sessions_round<F: Factory>(f: &F, p: &Params, blocked: bool) -> Result<Report, String> {
    let name = if blocked {
        "W5-sessions"
    } else {
        "W5-sessions-open"
    };
    let (client, backend) = setup(f).await?;
    let per_session = (p.backlog / W5S_SESSIONS).max(1);
    let held = if blocked { W5S_PAUSED + W5S_LIMITED } else { 0 };
    eprintln!(
        "{name}: {} jobs waiting in {W5S_SESSIONS} sessions, {held} of them paused or \
         rate-limited",
        per_session * W5S_SESSIONS
    );
    let hourly = SessionLimits::new().rate(Rate::new(1, Duration::from_secs(3600)));
    for s in 0..held {
        let key = format!("s{s}");
        if s < W5S_PAUSED {
            client.pause_session(QUEUE, &key).await.map_err(err)?;
        } else {
            client
                .set_session_limits(QUEUE, &key, hourly)
                .await
                .map_err(err)?;
        }
    }
    fill_sessions(&client, per_session).await?;
    if blocked {
        spend_limited_starts(&backend, &client).await?;
    }

    let sample = p.jobs.min((W5S_SESSIONS - held) * per_session);
    let mut r = claim_rounds(f, &client, &backend, name, sample).await?;
    r.groups = Some(W5S_SESSIONS);
    f.cleanup(backend).await;
    Ok(r)
}

/// Enqueues `per_session` jobs into every session, blocked sessions first
/// and ahead by priority, so a claim that scanned them would pay for it.
async fn fill_sessions<B: Store>(client: &Client<B>, per_session: u64) -> Result<(), String> {
    let total = per_session * W5S_SESSIONS;
    let mut next = 0;
    while next < total {
        let end = (next + 10_000).min(total);
        let batch = (next..end).map(|i| {
            let s = i / per_session;
            let blocked = s < W5S_PAUSED + W5S_LIMITED;
            Enqueue::new(QUEUE, &msg(s, i))
                .session(format!("s{s}"))
                .group(format!("s{s}:contact"))
                .priority(if blocked { -1 } else { 0 })
        });
        client.enqueue_many(batch).await.map_err(err)?;
        next = end;
        if next % 200_000 == 0 {
            eprintln!("  filled {next}/{total}");
        }
    }
    Ok(())
}

/// Starts (and completes) one job of every rate-limited session, so each
/// waits an hour for its next start.
async fn spend_limited_starts<B: Store + Sessions>(
    backend: &B,
    client: &Client<B>,
) -> Result<(), String> {
    let mut left = W5S_LIMITED as usize;
    while left > 0 {
        let n = claim_and_complete(client, backend, left.min(1_000)).await?;
        if n == 0 {
            return Err("W5-sessions: the limited sessions did not start".into());
        }
        left = left.saturating_sub(n);
    }
    Ok(())
}
