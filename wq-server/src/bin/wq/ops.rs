//! The operator's commands: stats, jobs, the dead-letter queue, pause,
//! resume, prune.
//!
//! Long operations go a batch at a time, each batch one store call applied
//! whole or not at all, and show their progress; Ctrl-C stops them between
//! two batches, so nothing is left half-applied.

use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use wq::{Backend, Client, Clock as _, DeadJobs, JobId, JobState, ListQuery};
use wq_server::view::JobView;

use crate::Failure;

/// Ids per batch of a long operation.
const BATCH: usize = 1_000;

#[derive(Subcommand, Debug)]
pub enum JobsCommand {
    /// Jobs matching the filters, in id order.
    List(ListArgs),
    /// One job, with its runs, as JSON.
    Show {
        /// The job's id.
        id: String,
    },
    /// Cancel a job.
    Cancel {
        /// The job's id.
        id: String,
    },
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// Only this queue.
    #[arg(long)]
    queue: Option<String>,
    /// Only this state.
    #[arg(long)]
    state: Option<String>,
    /// Only this group (with --queue).
    #[arg(long)]
    group: Option<String>,
    /// Only this tenant.
    #[arg(long)]
    tenant: Option<String>,
    /// Only jobs after this id.
    #[arg(long)]
    after: Option<String>,
    /// At most this many.
    #[arg(long, default_value_t = 50)]
    limit: usize,
}

#[derive(Subcommand, Debug)]
pub enum DeadCommand {
    /// A queue's dead jobs.
    List {
        /// The queue.
        queue: String,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Run dead jobs again with fresh attempts.
    Retry(DeadArgs),
    /// Delete dead jobs.
    Purge(DeadArgs),
}

#[derive(Args, Debug)]
pub struct DeadArgs {
    /// The queue.
    queue: String,
    /// These ids only; without them, every dead job of the queue.
    ids: Vec<String>,
}

#[derive(Args, Debug)]
pub struct PauseArgs {
    /// The queue.
    queue: String,
    /// Only this session (sending number) of it.
    #[arg(long)]
    session: Option<String>,
}

pub async fn stats<B: Backend>(client: &Client<B>) -> Result<(), Failure> {
    println!(
        "{:<24} {:>7} {:>10} {:>10} {:>8} {:>10} {:>8} {:>10} {:>12}",
        "queue",
        "paused",
        "scheduled",
        "available",
        "running",
        "completed",
        "dead",
        "cancelled",
        "oldest wait"
    );
    for q in client.queues().await? {
        let c = client.counts(q.config.name.as_str()).await?;
        let wait = client
            .oldest_wait(q.config.name.as_str())
            .await?
            .map_or_else(|| "-".to_owned(), |d| format!("{:.1} s", d.as_secs_f64()));
        println!(
            "{:<24} {:>7} {:>10} {:>10} {:>8} {:>10} {:>8} {:>10} {:>12}",
            q.config.name.as_str(),
            if q.paused { "yes" } else { "no" },
            c.scheduled,
            c.available,
            c.running,
            c.completed,
            c.dead,
            c.cancelled,
            wait
        );
    }
    Ok(())
}

pub async fn jobs<B: Backend>(client: &Client<B>, command: JobsCommand) -> Result<(), Failure> {
    match command {
        JobsCommand::List(a) => {
            let mut q = ListQuery::new().limit(a.limit);
            if let Some(v) = a.queue {
                q = q.queue(v.as_str());
            }
            if let Some(v) = a.state {
                q = q.state(v.parse::<JobState>()?);
            }
            if let Some(v) = a.group {
                q = q.group(v.as_str());
            }
            if let Some(v) = a.tenant {
                q = q.tenant(v);
            }
            if let Some(v) = a.after {
                q = q.after(id(&v)?);
            }
            print_jobs(&client.list(q).await?);
        }
        JobsCommand::Show { id: text } => {
            let job = client
                .get(id(&text)?)
                .await?
                .ok_or_else(|| format!("no job {text}"))?;
            println!("{}", serde_json::to_string_pretty(&JobView::from(&job))?);
        }
        JobsCommand::Cancel { id: text } => {
            let job = client.cancel(id(&text)?).await?;
            println!("{} {}", job.id, job.state.as_str());
        }
    }
    Ok(())
}

pub async fn dead<B: Backend>(client: &Client<B>, command: DeadCommand) -> Result<(), Failure> {
    let (args, retry) = match command {
        DeadCommand::List { queue, limit } => {
            print_jobs(&client.dead(&queue, limit).await?);
            return Ok(());
        }
        DeadCommand::Retry(a) => (a, true),
        DeadCommand::Purge(a) => (a, false),
    };
    let verb = if retry { "retried" } else { "purged" };
    let apply = |ids: Vec<JobId>| async move {
        if retry {
            client.retry_dead(DeadJobs::Ids(ids)).await
        } else {
            client.purge_dead(DeadJobs::Ids(ids)).await
        }
    };
    if !args.ids.is_empty() {
        // Only the named queue's jobs: an id of another queue is skipped.
        let mut ids = Vec::with_capacity(args.ids.len());
        for text in &args.ids {
            let job = client.get(id(text)?).await?;
            match job {
                Some(j) if j.queue.as_str() == args.queue => ids.push(j.id),
                _ => eprintln!("wq: {text} is not a job of {}: skipped", args.queue),
            }
        }
        println!("{} {verb}", apply(ids).await?);
        return Ok(());
    }
    let total = client.counts(&args.queue).await?.dead;
    let bar = progress(total, verb);
    let mut done = 0;
    let mut interrupt = Interrupt::new()?;
    loop {
        // Retried jobs leave the dead state and purged ones the store, so
        // the first page is always the next batch.
        let page: Vec<JobId> = client
            .list(
                ListQuery::new()
                    .queue(args.queue.as_str())
                    .state(JobState::Dead)
                    .limit(BATCH),
            )
            .await?
            .iter()
            .map(|j| j.id)
            .collect();
        if page.is_empty() {
            break;
        }
        let n = page.len();
        let applied = apply(page).await?;
        done += applied;
        bar.set_position(done);
        // Nothing applied: another operator got there first, or the jobs
        // cannot be changed; listing them again would not help.
        if n < BATCH || applied == 0 {
            break;
        }
        if interrupt.came() {
            bar.abandon();
            println!("{done} {verb}; interrupted between two batches, the rest are still dead");
            return Err(INTERRUPTED.into());
        }
    }
    bar.finish();
    println!("{done} {verb}");
    Ok(())
}

pub async fn pause<B: Backend>(
    client: &Client<B>,
    args: PauseArgs,
    pause: bool,
) -> Result<(), Failure> {
    match (args.session, pause) {
        (None, true) => client.pause(&args.queue).await?,
        (None, false) => client.resume(&args.queue).await?,
        (Some(s), true) => client.pause_session(&args.queue, &s).await?,
        (Some(s), false) => client.resume_session(&args.queue, &s).await?,
    }
    println!(
        "{} {}",
        args.queue,
        if pause { "paused" } else { "resumed" }
    );
    Ok(())
}

pub async fn prune<B: Backend>(store: &B) -> Result<(), Failure> {
    let clock = wq::SystemClock;
    let bar = ProgressBar::new_spinner().with_message("pruned");
    let mut total = 0;
    let mut interrupt = Interrupt::new()?;
    loop {
        let n = store.prune(clock.now(), BATCH).await?;
        total += n;
        bar.set_position(total);
        if n < BATCH as u64 {
            break;
        }
        if interrupt.came() {
            bar.abandon();
            println!("{total} pruned; interrupted between two batches");
            return Err(INTERRUPTED.into());
        }
    }
    bar.finish();
    println!("{total} pruned");
    Ok(())
}

fn print_jobs(jobs: &[wq::Job]) {
    for j in jobs {
        println!(
            "{} {:<9} {:<16} {:<20} attempt {}/{} run_at {}{}",
            j.id,
            j.state.as_str(),
            j.queue.as_str(),
            j.group.as_ref().map_or("-", |g| g.as_str()),
            j.attempt,
            j.max_attempts,
            j.run_at,
            j.last_error
                .as_deref()
                .map(|e| format!(" error: {e}"))
                .unwrap_or_default()
        );
    }
}

fn id(text: &str) -> Result<JobId, Failure> {
    text.parse::<JobId>()
        .map_err(|_| format!("`{text}` is not a job id").into())
}

fn progress(total: u64, verb: &str) -> ProgressBar {
    let bar = ProgressBar::new(total).with_message(verb.to_owned());
    if let Ok(style) = ProgressStyle::with_template("{bar:40} {pos}/{len} {msg} ({eta})") {
        bar.set_style(style);
    }
    bar
}

/// What an interrupted command fails with.
const INTERRUPTED: &str =
    "interrupted (Ctrl-C): every batch done is applied whole, the rest untouched";

/// Ctrl-C (SIGINT), caught from the start of a long operation so that it
/// stops the operation between two batches instead of the process.
#[cfg(unix)]
struct Interrupt(tokio::signal::unix::Signal);

#[cfg(unix)]
impl Interrupt {
    fn new() -> Result<Self, Failure> {
        Ok(Self(tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::interrupt(),
        )?))
    }

    /// Whether Ctrl-C came since the last look, without waiting.
    fn came(&mut self) -> bool {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        self.0.poll_recv(&mut cx).is_ready()
    }
}

/// Elsewhere Ctrl-C stops the process, between two batches or within one
/// (each batch is one store call, applied whole or not at all).
#[cfg(not(unix))]
struct Interrupt;

#[cfg(not(unix))]
impl Interrupt {
    fn new() -> Result<Self, Failure> {
        Ok(Self)
    }

    fn came(&mut self) -> bool {
        false
    }
}
