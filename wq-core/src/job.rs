//! The job model: identity, state, lease and payload.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::attempt::Attempt;
use crate::name::{GroupKey, QueueName, SessionKey};
use crate::time::Timestamp;

/// A job's id: a UUID v7, so ids sort roughly by creation time.
///
/// The id is assigned by the client before the job is stored and never
/// changes; an effect keyed by it (an id passed to the other side) happens
/// once even when a retry follows a lost acknowledgement.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(Uuid);

impl JobId {
    /// A fresh UUID v7.
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    /// Wraps an existing UUID (as read back from a backend).
    pub const fn from_uuid(id: Uuid) -> Self {
        Self(id)
    }

    /// The UUID.
    pub const fn as_uuid(&self) -> &Uuid {
        &self.0
    }
}

impl Default for JobId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl FromStr for JobId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::from_str(s).map(Self)
    }
}

/// Where a job is in its life.
///
/// `scheduled` → `available` → `running` → `completed`, or back to
/// `scheduled` for a retry, or `dead`, or `cancelled`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Waiting for its `run_at`.
    Scheduled,
    /// Due; runs when it heads its group and a worker is free.
    Available,
    /// Leased by a worker.
    Running,
    /// Finished successfully (terminal).
    Completed,
    /// Failed for good: the dead-letter queue (terminal).
    Dead,
    /// Cancelled by an operator (terminal).
    Cancelled,
}

impl JobState {
    /// Every state, in life order.
    pub const ALL: [JobState; 6] = [
        JobState::Scheduled,
        JobState::Available,
        JobState::Running,
        JobState::Completed,
        JobState::Dead,
        JobState::Cancelled,
    ];

    /// Whether the job will never run again on its own.
    pub const fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Completed | JobState::Dead | JobState::Cancelled
        )
    }

    /// Whether the job is waiting to run (scheduled or available).
    pub const fn is_waiting(self) -> bool {
        matches!(self, JobState::Scheduled | JobState::Available)
    }

    /// The lowercase name, as stored by backends.
    pub const fn as_str(self) -> &'static str {
        match self {
            JobState::Scheduled => "scheduled",
            JobState::Available => "available",
            JobState::Running => "running",
            JobState::Completed => "completed",
            JobState::Dead => "dead",
            JobState::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of parsing an unknown state name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown job state `{0}`")]
pub struct UnknownState(pub String);

impl FromStr for JobState {
    type Err = UnknownState;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownState(s.to_owned()))
    }
}

/// A worker's claim on a running job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The fencing token: every claim gets a new, larger one; an
    /// acknowledgement carrying an older token is refused.
    pub token: u64,
    /// When the claim lapses unless extended.
    pub expires_at: Timestamp,
    /// Who holds it (a worker id), for operators.
    pub worker: Arc<str>,
    /// When the claim began: the start of the run, as its history records.
    pub started_at: Timestamp,
}

/// A job's data: valid JSON text, shared cheaply between clones.
#[derive(Clone, PartialEq, Eq)]
pub struct Payload(Arc<str>);

impl Payload {
    /// Serializes `value` to JSON.
    pub fn from_json<T: Serialize + ?Sized>(value: &T) -> Result<Self, serde_json::Error> {
        serde_json::to_string(value).map(|s| Self(s.into()))
    }

    /// Takes JSON text as it is, after checking that it parses.
    pub fn from_raw(text: impl Into<Arc<str>>) -> Result<Self, serde_json::Error> {
        let text = text.into();
        serde_json::from_str::<&RawValue>(&text)?;
        Ok(Self(text))
    }

    /// Takes JSON text read back from a backend that stored it already checked.
    pub fn from_trusted(text: impl Into<Arc<str>>) -> Self {
        Self(text.into())
    }

    /// The JSON text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Size in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the text is empty (never true for a stored job).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether the payload is empty: no text, only white space, or `null`.
    pub fn is_blank(&self) -> bool {
        let t = self.0.trim();
        t.is_empty() || t == "null"
    }

    /// Deserializes the payload.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(&self.0)
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 120;
        if self.0.len() <= SHOWN {
            f.write_str(&self.0)
        } else {
            let cut = (0..=SHOWN)
                .rev()
                .find(|&i| self.0.is_char_boundary(i))
                .unwrap_or(0);
            write!(f, "{}… ({} bytes)", &self.0[..cut], self.0.len())
        }
    }
}

impl Serialize for Payload {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let raw: &RawValue = serde_json::from_str(&self.0).map_err(serde::ser::Error::custom)?;
        raw.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(d)?;
        Ok(Self(Arc::from(raw.get())))
    }
}

/// A stored job, as backends return it.
///
/// New fields may be added, so other crates build one with [`Job::new`] or
/// [`Job::enqueued`] and then set the public fields they read back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Job {
    /// Stable id (UUID v7).
    pub id: JobId,
    /// The queue it belongs to.
    pub queue: QueueName,
    /// The tenant (e.g. a customer or an account), for filtering and future limits.
    pub tenant: Option<Arc<str>>,
    /// The ordering key; `None` means no ordering duty.
    pub group: Option<GroupKey>,
    /// The session whose limits and pause apply; `None` means none.
    #[serde(default)]
    pub session: Option<SessionKey>,
    /// Enqueue order: increases with every enqueue into the same group
    /// (backends may share one counter across groups and queues).
    pub seq: u64,
    /// Lower runs first among due group heads.
    pub priority: i16,
    /// When it may run.
    pub run_at: Timestamp,
    /// Attempts started so far (a claim starts one; a deferral gives it back).
    pub attempt: u32,
    /// Attempts allowed before the job is dead.
    pub max_attempts: u32,
    /// Where it is in its life.
    pub state: JobState,
    /// Deduplication key, unique within the queue while the job is retained.
    pub idempotency_key: Option<Arc<str>>,
    /// The current claim, while running.
    pub lease: Option<Lease>,
    /// An operator asked to cancel it while it ran.
    pub cancel_requested: bool,
    /// The last failure's message (a failed attempt's, a wait's reason, a
    /// lapsed lease), while the job is not completed: completing clears it.
    pub last_error: Option<String>,
    /// The step the handler said to continue at, if it ended an attempt with
    /// [`JobError::Continue`](crate::JobError::Continue): a short name (1 to
    /// [`MAX_STEP`](crate::validate::MAX_STEP) bytes) the next run reads
    /// through [`JobContext::step`](crate::JobContext::step). It survives
    /// retries and crashes, and is cleared when a dead job is retried.
    #[serde(default)]
    pub step: Option<String>,
    /// What the handler stored with its success
    /// ([`JobContext::set_output`](crate::JobContext::set_output)), while
    /// the job is completed.
    #[serde(default)]
    pub output: Option<Payload>,
    /// Its finished runs, oldest first: at most
    /// [`MAX_HISTORY`](crate::attempt::MAX_HISTORY), the latest kept. The
    /// run in progress is not among them; its lease tells its start and
    /// worker.
    #[serde(default)]
    pub history: Vec<Attempt>,
    /// When it was stored.
    pub created_at: Timestamp,
    /// When its state last changed.
    pub updated_at: Timestamp,
    /// When it reached a terminal state.
    pub finished_at: Option<Timestamp>,
    /// The data the handler gets.
    pub payload: Payload,
}

impl Job {
    /// A job created at `created_at` and not yet touched: available at
    /// once, no tenant, group or idempotency key, sequence 0, priority 0,
    /// no attempt started, the default [`RetryPolicy`](crate::RetryPolicy)'s
    /// attempts, no lease.
    ///
    /// A backend reading a stored job back starts here and sets the fields
    /// it stores:
    ///
    /// ```
    /// use wq::{Job, JobId, JobState, Payload, Timestamp};
    ///
    /// let now = Timestamp::from_millis(1_700_000_000_000);
    /// let mut job = Job::new(JobId::new(), "message".into(), Payload::from_raw("1")?, now);
    /// job.state = JobState::Completed;
    /// job.finished_at = Some(now);
    /// assert!(job.state.is_terminal());
    /// # Ok::<(), serde_json::Error>(())
    /// ```
    pub fn new(id: JobId, queue: QueueName, payload: Payload, created_at: Timestamp) -> Self {
        Self {
            id,
            queue,
            tenant: None,
            group: None,
            session: None,
            seq: 0,
            priority: 0,
            run_at: created_at,
            attempt: 0,
            max_attempts: crate::RetryPolicy::default().max_attempts,
            state: JobState::Available,
            idempotency_key: None,
            lease: None,
            cancel_requested: false,
            last_error: None,
            step: None,
            output: None,
            history: Vec::new(),
            created_at,
            updated_at: created_at,
            finished_at: None,
            payload,
        }
    }

    /// `new` as a backend has just stored it at `now`: with the sequence,
    /// `run_at` (chaining resolved) and state the backend gave it, no
    /// attempt started yet.
    pub fn enqueued(
        new: NewJob,
        seq: u64,
        run_at: Timestamp,
        state: JobState,
        now: Timestamp,
    ) -> Self {
        Self {
            tenant: new.tenant,
            group: new.group,
            session: new.session,
            seq,
            priority: new.priority,
            run_at,
            max_attempts: new.max_attempts,
            state,
            idempotency_key: new.idempotency_key,
            ..Self::new(new.id, new.queue, new.payload, now)
        }
    }

    /// Whether the job is between steps: its last run ended with
    /// [`JobError::Continue`](crate::JobError::Continue). Such a job has
    /// started already, so once due it comes before every job of its
    /// priority that has not, and a session's rate does not count its next
    /// run as a start (docs/sessions.md).
    pub fn continued(&self) -> bool {
        self.history
            .last()
            .is_some_and(|run| run.outcome == crate::AttemptOutcome::Continued)
    }
}

/// When a new job should run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunAt {
    /// At this time (in the past means now).
    At(Timestamp),
    /// Time chaining: `max(group's last run_at, now) + offset`, computed by the
    /// backend atomically with the insert, so one group's jobs keep their
    /// spacing even with concurrent enqueuers. The client has already
    /// added the jitter into `offset`.
    Chained {
        /// Spacing after the group's previous job (delay + sampled jitter).
        offset: Duration,
    },
}

/// A validated job on its way into a [`crate::Store`].
///
/// Built by [`crate::Client`]; backends store it as it is.
#[derive(Clone, Debug, PartialEq)]
pub struct NewJob {
    /// Pre-assigned id.
    pub id: JobId,
    /// Target queue.
    pub queue: QueueName,
    /// Optional tenant.
    pub tenant: Option<Arc<str>>,
    /// Optional ordering key.
    pub group: Option<GroupKey>,
    /// Optional session.
    pub session: Option<SessionKey>,
    /// Priority (lower first).
    pub priority: i16,
    /// When to run.
    pub run_at: RunAt,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// Optional deduplication key.
    pub idempotency_key: Option<Arc<str>>,
    /// Data.
    pub payload: Payload,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_through_names() {
        for s in JobState::ALL {
            assert_eq!(s.as_str().parse::<JobState>(), Ok(s));
        }
        assert!("done".parse::<JobState>().is_err());
        let terminal: Vec<_> = JobState::ALL
            .into_iter()
            .filter(|s| s.is_terminal())
            .collect();
        assert_eq!(
            terminal,
            [JobState::Completed, JobState::Dead, JobState::Cancelled]
        );
    }

    #[test]
    fn payload_keeps_json_text_and_serializes_inline() {
        let p = Payload::from_raw(r#"{"to":"ana","text":"hi"}"#).unwrap();
        #[derive(Deserialize)]
        struct M {
            to: String,
        }
        assert_eq!(p.decode::<M>().unwrap().to, "ana");
        let wrapped = serde_json::to_string(&serde_json::json!({ "p": 1 })).unwrap();
        assert_eq!(wrapped, r#"{"p":1}"#);
        #[derive(Serialize, Deserialize)]
        struct W {
            payload: Payload,
        }
        let text = serde_json::to_string(&W { payload: p.clone() }).unwrap();
        assert_eq!(text, r#"{"payload":{"to":"ana","text":"hi"}}"#);
        let back: W = serde_json::from_str(&text).unwrap();
        assert_eq!(back.payload, p);
    }

    #[test]
    fn payload_rejects_invalid_json_and_detects_blank() {
        assert!(Payload::from_raw("{not json").is_err());
        assert!(Payload::from_raw("null").unwrap().is_blank());
        assert!(Payload::from_trusted("  ").is_blank());
        assert!(!Payload::from_raw("0").unwrap().is_blank());
    }

    #[test]
    fn job_ids_are_v7_and_ordered() {
        let a = JobId::new();
        let b = JobId::new();
        assert_eq!(a.as_uuid().get_version_num(), 7);
        assert!(a < b);
        assert_eq!(a.to_string().parse::<JobId>().unwrap(), a);
    }
}
