//! What the API reads and writes, as JSON. Times are RFC 3339 strings in
//! UTC with microseconds; payloads and outputs are the JSON they were
//! stored as.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::{IntoParams, ToSchema};
use wq::{Attempt, Counts, Job, JobState, QueueInfo, SessionInfo, Timestamp};

/// Times as the API shows them.
fn time(t: Timestamp) -> String {
    t.to_string()
}

/// Stored JSON, as it was stored.
fn raw(text: &str) -> Box<RawValue> {
    // Payloads and outputs are JSON checked on the way in; should one not
    // be, it is shown as a string rather than failing the whole answer.
    RawValue::from_string(text.to_owned()).unwrap_or_else(|_| {
        RawValue::from_string(serde_json::Value::from(text).to_string())
            .expect("a JSON string is JSON")
    })
}

/// One job.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobView {
    /// Its id (a UUID).
    pub id: String,
    /// Its queue.
    pub queue: String,
    /// Its tenant.
    pub tenant: Option<String>,
    /// Its group (in WhatsApp: the contact): one at a time, in order.
    pub group: Option<String>,
    /// Its session (in WhatsApp: the sending number).
    pub session: Option<String>,
    /// `scheduled`, `available`, `running`, `completed`, `dead` or `cancelled`.
    pub state: String,
    /// Lower runs first.
    pub priority: i16,
    /// The attempt running or last run, from 1 (0: never run).
    pub attempt: u32,
    /// Attempts it may take.
    pub max_attempts: u32,
    /// When it may run.
    pub run_at: String,
    /// Its idempotency key.
    pub idempotency_key: Option<String>,
    /// The last failure.
    pub last_error: Option<String>,
    /// The step it continues at.
    pub step: Option<String>,
    /// Whether a cancellation waits for its running handler.
    pub cancel_requested: bool,
    /// The worker running it and until when its lease holds.
    pub lease: Option<LeaseView>,
    /// Its finished runs, oldest first.
    pub history: Vec<AttemptView>,
    /// When it was stored.
    pub created_at: String,
    /// Its last change.
    pub updated_at: String,
    /// When it finished.
    pub finished_at: Option<String>,
    /// What it carries.
    #[schema(value_type = Object)]
    pub payload: Box<RawValue>,
    /// What its handler stored on completion.
    #[schema(value_type = Option<Object>)]
    pub output: Option<Box<RawValue>>,
}

impl From<&Job> for JobView {
    fn from(j: &Job) -> Self {
        Self {
            id: j.id.to_string(),
            queue: j.queue.to_string(),
            tenant: j.tenant.as_deref().map(str::to_owned),
            group: j.group.as_ref().map(ToString::to_string),
            session: j.session.as_ref().map(ToString::to_string),
            state: j.state.as_str().to_owned(),
            priority: j.priority,
            attempt: j.attempt,
            max_attempts: j.max_attempts,
            run_at: time(j.run_at),
            idempotency_key: j.idempotency_key.as_deref().map(str::to_owned),
            last_error: j.last_error.clone(),
            step: j.step.clone(),
            cancel_requested: j.cancel_requested,
            lease: j.lease.as_ref().map(|l| LeaseView {
                worker: l.worker.to_string(),
                started_at: time(l.started_at),
                expires_at: time(l.expires_at),
            }),
            history: j.history.iter().map(AttemptView::from).collect(),
            created_at: time(j.created_at),
            updated_at: time(j.updated_at),
            finished_at: j.finished_at.map(time),
            payload: raw(j.payload.as_str()),
            output: j.output.as_ref().map(|o| raw(o.as_str())),
        }
    }
}

/// A running job's lease.
#[derive(Debug, Serialize, ToSchema)]
pub struct LeaseView {
    /// The worker.
    pub worker: String,
    /// When the run began.
    pub started_at: String,
    /// When the lease lapses unless extended.
    pub expires_at: String,
}

/// One finished run.
#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptView {
    /// Its attempt number.
    pub attempt: u32,
    /// When it began.
    pub started_at: String,
    /// When it ended.
    pub ended_at: String,
    /// The worker.
    pub worker: String,
    /// How it ended: `completed`, `retried`, `deferred`, `continued`,
    /// `released`, `dead`, `cancelled` or `lapsed`.
    pub outcome: String,
    /// The failure or the reason to wait.
    pub error: Option<String>,
}

impl From<&Attempt> for AttemptView {
    fn from(a: &Attempt) -> Self {
        Self {
            attempt: a.attempt,
            started_at: time(a.started_at),
            ended_at: time(a.ended_at),
            worker: a.worker.to_string(),
            outcome: a.outcome.as_str().to_owned(),
            error: a.error.clone(),
        }
    }
}

/// Jobs of a queue by state.
#[derive(Debug, Serialize, ToSchema)]
pub struct CountsView {
    /// Waiting for their time.
    pub scheduled: u64,
    /// Due.
    pub available: u64,
    /// Running.
    pub running: u64,
    /// Completed and still retained.
    pub completed: u64,
    /// Dead and still retained.
    pub dead: u64,
    /// Cancelled and still retained.
    pub cancelled: u64,
    /// Jobs ever finished (completed, dead or cancelled), retained or not:
    /// it only grows.
    pub finished: u64,
}

impl From<Counts> for CountsView {
    fn from(c: Counts) -> Self {
        Self {
            scheduled: c.scheduled,
            available: c.available,
            running: c.running,
            completed: c.completed,
            dead: c.dead,
            cancelled: c.cancelled,
            finished: c.finished,
        }
    }
}

/// A queue: its state and counts.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueueView {
    /// Its name.
    pub name: String,
    /// Whether claiming is paused.
    pub paused: bool,
    /// Workers' default concurrency for it.
    pub concurrency: usize,
    /// Jobs by state.
    pub counts: CountsView,
    /// How long the job next in line has been due, in milliseconds; absent
    /// when nothing is due.
    pub oldest_wait_ms: Option<u64>,
    /// Jobs finished per second since the previous reading (at least a
    /// second before, by this server); absent on the first.
    pub throughput_per_sec: Option<f64>,
}

impl QueueView {
    /// A queue with its counts, the wait of the front of its line and its
    /// throughput.
    pub fn new(
        info: &QueueInfo,
        counts: Counts,
        oldest_wait: Option<Duration>,
        throughput: Option<f64>,
    ) -> Self {
        Self {
            name: info.config.name.to_string(),
            paused: info.paused,
            concurrency: info.config.concurrency,
            counts: counts.into(),
            oldest_wait_ms: oldest_wait.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            throughput_per_sec: throughput,
        }
    }
}

/// A session (in WhatsApp: a sending number) of a queue.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionView {
    /// Its key.
    pub session: String,
    /// Whether its jobs are held.
    pub paused: bool,
    /// Why, as the pause said.
    pub pause_reason: Option<String>,
    /// Its jobs running now.
    pub running: u64,
    /// Its jobs waiting.
    pub waiting: u64,
    /// At most this many running at once.
    pub max_running: Option<u32>,
    /// When its rate lets it start a job next.
    pub next_start: Option<String>,
}

impl From<&SessionInfo> for SessionView {
    fn from(s: &SessionInfo) -> Self {
        Self {
            session: s.session.to_string(),
            paused: s.paused,
            pause_reason: s.pause_reason.clone(),
            running: s.running,
            waiting: s.waiting,
            max_running: s.limits.max_running,
            next_start: s.next_start.map(time),
        }
    }
}

/// A job to store.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnqueueBody {
    /// The queue (declared first).
    pub queue: String,
    /// What the job carries: any JSON.
    #[schema(value_type = Object)]
    pub payload: Box<RawValue>,
    /// Its group: jobs of a group run one at a time, in order.
    pub group: Option<String>,
    /// Its session: whose limits and pause apply.
    pub session: Option<String>,
    /// Its tenant (a tenant's token sets its own).
    pub tenant: Option<String>,
    /// Lower runs first (default 0).
    pub priority: Option<i16>,
    /// Run no earlier than this many milliseconds from now.
    pub delay_ms: Option<u64>,
    /// Attempts it may take.
    pub max_attempts: Option<u32>,
    /// A second enqueue with this key stores nothing and returns the first
    /// job (also from the `Idempotency-Key` header).
    pub idempotency_key: Option<String>,
}

/// Jobs to store, all or none.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchBody {
    /// The jobs, in order.
    pub jobs: Vec<EnqueueBody>,
}

/// A stored job, and whether this call stored it.
#[derive(Debug, Serialize, ToSchema)]
pub struct EnqueuedView {
    /// False when an idempotency key named a job stored before.
    pub created: bool,
    /// The job.
    pub job: JobView,
}

/// A page of jobs.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobPage {
    /// The jobs, in id order.
    pub jobs: Vec<JobView>,
    /// Pass as `after` for the next page; absent on the last one.
    pub next: Option<String>,
}

/// Which jobs to list.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// Only this queue.
    pub queue: Option<String>,
    /// Only this state.
    pub state: Option<String>,
    /// Only this group (with `queue`).
    pub group: Option<String>,
    /// Only this tenant.
    pub tenant: Option<String>,
    /// Only the job with this idempotency key (with `queue`).
    pub idempotency_key: Option<String>,
    /// Only jobs after this id: the `next` of the page before.
    pub after: Option<String>,
    /// At most this many (default 50).
    pub limit: Option<usize>,
}

/// Which dead jobs: those ids; or those of a group, of a tenant, or both;
/// or with nothing given, every dead job of the queue (a tenant's token:
/// every one of its own).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeadSelection {
    /// These ids only.
    pub ids: Option<Vec<String>>,
    /// Only this group's (in WhatsApp: this contact's).
    pub group: Option<String>,
    /// Only this tenant's.
    pub tenant: Option<String>,
}

/// How many jobs an action changed.
#[derive(Debug, Serialize, ToSchema)]
pub struct Affected {
    /// How many.
    pub affected: u64,
}

/// Where a waiting job stands.
#[derive(Debug, Serialize, ToSchema)]
pub struct PositionView {
    /// Jobs of its group ahead of it (0: it heads the group).
    pub in_group: Option<u64>,
    /// Waiting jobs of its queue ordered before it.
    pub in_queue: u64,
}

/// A group held back by its head: dead (in a queue that holds groups on a
/// dead head) or waiting to retry.
#[derive(Debug, Serialize, ToSchema)]
pub struct BlockedGroup {
    /// The group.
    pub group: String,
    /// The head that holds it.
    pub head: JobView,
    /// Unfinished jobs behind it in the group (as far as counted).
    pub behind: u64,
}

/// The state a name names, or a refusal naming `field`.
pub fn parse_state(field: &'static str, s: &str) -> Result<JobState, crate::ApiError> {
    s.parse::<JobState>().map_err(|_| {
        crate::ApiError::invalid(
            field,
            "one of scheduled, available, running, completed, dead, cancelled",
        )
    })
}
