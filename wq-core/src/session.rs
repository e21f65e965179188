//! Sessions: a second key beside the group, with limits kept in the store.
//!
//! A job may name a session. Every process sees the same session settings,
//! because the store keeps them and checks them inside the claim: at most
//! [`SessionLimits::max_running`] of the session's jobs run at once, its
//! starts are spaced by its [`Rate`], and a paused session hands out
//! nothing. A session that may not start a job now is skipped by the claim
//! and the others go on; it wakes the queue's workers when it may again.

use std::future::Future;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{StoreError, ValidationError};
use crate::name::{QueueName, SessionKey};
use crate::time::Timestamp;

/// Most starts per period a rate may allow.
pub const MAX_RATE_STARTS: u32 = 1_000_000;

/// How fast a session may start jobs: at most `starts` in any window of
/// length `per`, evenly spaced.
///
/// Two starts of the session are at least `per / starts` apart, plus a
/// pseudo-random extra of up to `jitter` drawn at each start
/// ([`Rate::spacing_after`]). There is no burst allowance: a session idle
/// for an hour still starts its next jobs one spacing apart, since bursts
/// are what a messaging provider punishes.
///
/// ```
/// use std::time::Duration;
/// use wq::Rate;
///
/// let rate = Rate::new(20, Duration::from_secs(1)).jitter(Duration::from_millis(10));
/// assert_eq!(rate.spacing(), Duration::from_millis(50));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rate {
    /// Starts allowed per period.
    pub starts: u32,
    /// The period.
    #[serde(with = "crate::time::serde_millis")]
    pub per: Duration,
    /// Most random extra spacing added after each start.
    #[serde(with = "crate::time::serde_millis", default)]
    pub jitter: Duration,
}

impl Rate {
    /// At most `starts` per `per`, no jitter.
    pub fn new(starts: u32, per: Duration) -> Self {
        Self {
            starts,
            per,
            jitter: Duration::ZERO,
        }
    }

    /// Adds up to `jitter` of random spacing after each start.
    pub fn jitter(mut self, jitter: Duration) -> Self {
        self.jitter = jitter;
        self
    }

    /// The least time between two starts: `per / starts`, in whole
    /// microseconds.
    pub fn spacing(&self) -> Duration {
        let micros = self.per.as_micros() / u128::from(self.starts.max(1));
        Duration::from_micros(u64::try_from(micros).unwrap_or(u64::MAX))
    }

    /// The spacing after a start under fencing token `token`: the spacing
    /// plus `jitter × h`, where `h = ((token × 40503) mod 65536) / 65536`.
    ///
    /// The fraction is a hash of the token rather than a random draw so
    /// that every backend computes it the same way inside its claim, with
    /// integer arithmetic that a Lua double holds exactly.
    pub fn spacing_after(&self, token: u64) -> Duration {
        let h = u128::from(token.wrapping_mul(40503) % 65536);
        let extra = self.jitter.as_micros() * h / 65536;
        self.spacing() + Duration::from_micros(u64::try_from(extra).unwrap_or(u64::MAX))
    }
}

/// A session's limits; the default has none.
///
/// ```
/// use std::time::Duration;
/// use wq::{Rate, SessionLimits};
///
/// // One send at a time, at most 20 starts a second.
/// let number = SessionLimits::new()
///     .max_running(1)
///     .rate(Rate::new(20, Duration::from_secs(1)));
/// assert_eq!(number.max_running, Some(1));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SessionLimits {
    /// Most jobs of the session running at once across all workers.
    pub max_running: Option<u32>,
    /// How fast the session may start jobs.
    pub rate: Option<Rate>,
}

impl SessionLimits {
    /// No limits.
    pub fn new() -> Self {
        Self::default()
    }

    /// At most `n` jobs running at once.
    pub fn max_running(mut self, n: u32) -> Self {
        self.max_running = Some(n);
        self
    }

    /// Starts spaced by `rate`.
    pub fn rate(mut self, rate: Rate) -> Self {
        self.rate = Some(rate);
        self
    }

    /// Checks the limits; each failure names its field.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if let Some(n) = self.max_running
            && (n == 0 || n > crate::validate::MAX_CONCURRENCY as u32)
        {
            return Err(ValidationError::new(
                "max_running",
                format!("{n} is outside 1..={}", crate::validate::MAX_CONCURRENCY),
            ));
        }
        if let Some(rate) = &self.rate {
            if rate.starts == 0 || rate.starts > MAX_RATE_STARTS {
                return Err(ValidationError::new(
                    "rate.starts",
                    format!("{} is outside 1..={MAX_RATE_STARTS}", rate.starts),
                ));
            }
            if rate.per < Duration::from_millis(1) {
                return Err(ValidationError::new("rate.per", "is shorter than 1 ms"));
            }
            crate::validate::delay("rate.per", rate.per)?;
            crate::validate::delay("rate.jitter", rate.jitter)?;
        }
        Ok(())
    }
}

/// A session as the store keeps it, for operators.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SessionInfo {
    /// The queue it belongs to.
    pub queue: QueueName,
    /// Its key.
    pub session: SessionKey,
    /// Its limits.
    pub limits: SessionLimits,
    /// Whether claiming its jobs is paused.
    pub paused: bool,
    /// Why, as the pause said ([`PauseChange`]); `None` when not paused.
    pub pause_reason: Option<String>,
    /// Its jobs running now.
    pub running: u64,
    /// Its jobs waiting (scheduled or available).
    pub waiting: u64,
    /// The earliest time its rate lets it start its next job (it may be
    /// past); `None` when it has no rate or has not started a job under one.
    pub next_start: Option<Timestamp>,
}

impl SessionInfo {
    /// A session of `queue` with no limits, not paused, with no jobs: what
    /// a backend starts from when it reads one back.
    pub fn new(queue: QueueName, session: SessionKey) -> Self {
        Self {
            queue,
            session,
            limits: SessionLimits::default(),
            paused: false,
            pause_reason: None,
            running: 0,
            waiting: 0,
            next_start: None,
        }
    }
}

/// The reason [`PauseChange::operator`] gives: a pause by a person, which
/// only a person lifts.
pub const OPERATOR_PAUSE: &str = "operator";

/// A change to a session's pause, applied in one atomic step against the
/// pause the store holds, so that whoever paused a session for one reason
/// is not undone by whoever resumes it for another: a process that paused a
/// number because its link went down resumes it with
/// [`ResumeIf`](PauseChange::ResumeIf) that reason, and leaves alone a pause
/// an operator took meanwhile. The reason is kept with the session
/// ([`SessionInfo::pause_reason`]), so any process can look after a pause
/// another one took. (Not `non_exhaustive`: every backend must apply every
/// change.)
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PauseChange {
    /// Pause for this reason, replacing the reason of a pause in force.
    Pause(String),
    /// Pause for this reason unless paused already: a pause in force keeps
    /// its reason.
    PauseUnlessPaused(String),
    /// Resume, whatever the reason.
    Resume,
    /// Resume only a pause for exactly this reason.
    ResumeIf(String),
}

impl PauseChange {
    /// A pause by an operator ([`OPERATOR_PAUSE`]).
    pub fn operator() -> Self {
        PauseChange::Pause(OPERATOR_PAUSE.into())
    }

    /// The reason must not be blank, at most [`MAX_PAUSE_REASON`] bytes,
    /// with no control characters (field `reason`).
    pub fn validate(&self) -> Result<(), ValidationError> {
        match self {
            PauseChange::Pause(r)
            | PauseChange::PauseUnlessPaused(r)
            | PauseChange::ResumeIf(r) => crate::validate::name_like("reason", r, MAX_PAUSE_REASON),
            PauseChange::Resume => Ok(()),
        }
    }

    /// What a session paused (`Some(reason)`) or not (`None`) becomes:
    /// `Some(new pause)` if the change applies, else `None`. Every backend
    /// applies this rule; the memory backend calls it.
    pub fn apply(&self, current: Option<&str>) -> Option<Option<String>> {
        match (self, current) {
            (PauseChange::Pause(r), Some(c)) if c == r => None,
            (PauseChange::Pause(r), _) => Some(Some(r.clone())),
            (PauseChange::PauseUnlessPaused(r), None) => Some(Some(r.clone())),
            (PauseChange::PauseUnlessPaused(_), Some(_)) => None,
            (PauseChange::Resume, Some(_)) => Some(None),
            (PauseChange::ResumeIf(r), Some(c)) if c == r => Some(None),
            (PauseChange::Resume | PauseChange::ResumeIf(_), _) => None,
        }
    }
}

/// The longest pause reason, in bytes.
pub const MAX_PAUSE_REASON: usize = 200;

/// Sessions of a queue: their limits, pause and counts.
///
/// A session belongs to one queue and exists once a job names it or an
/// operator sets it; its settings are kept until the queue is dropped.
pub trait Sessions: Send + Sync + 'static {
    /// Sets a session's limits (creating it if needed); its pause and
    /// counts are kept. Applies to the claims that follow.
    fn set_session_limits(
        &self,
        queue: &QueueName,
        session: &SessionKey,
        limits: &SessionLimits,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Pauses or resumes claiming a session's jobs (creating it if needed)
    /// as `change` says against the pause in force ([`PauseChange::apply`]);
    /// true if the pause or its reason changed. Enqueueing goes on, no
    /// attempt is spent and its groups keep their order. The caller passes
    /// a valid change ([`PauseChange::validate`]).
    fn set_session_paused(
        &self,
        queue: &QueueName,
        session: &SessionKey,
        change: &PauseChange,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// One session; `None` if no job or operator ever named it.
    fn session_info(
        &self,
        queue: &QueueName,
        session: &SessionKey,
    ) -> impl Future<Output = Result<Option<SessionInfo>, StoreError>> + Send;

    /// Up to `limit` sessions of a queue after `after`, by key.
    fn list_sessions(
        &self,
        queue: &QueueName,
        after: Option<&SessionKey>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<SessionInfo>, StoreError>> + Send;

    /// Up to `limit` paused sessions of a queue after `after`, by key: what
    /// a process looks at to lift pauses. The default pages through
    /// [`list_sessions`](Sessions::list_sessions); a backend whose listing
    /// counts each session's jobs reads the paused ones alone.
    fn paused_sessions(
        &self,
        queue: &QueueName,
        after: Option<&SessionKey>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<SessionInfo>, StoreError>> + Send {
        async move {
            let mut after = after.cloned();
            let mut out = Vec::new();
            while out.len() < limit {
                let page = self.list_sessions(queue, after.as_ref(), limit).await?;
                let done = page.len() < limit;
                after = page.last().map(|i| i.session.clone());
                out.extend(page.into_iter().filter(|i| i.paused));
                if done {
                    break;
                }
            }
            out.truncate(limit);
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spacing_divides_the_period_and_jitter_stays_within_bounds() {
        let rate = Rate::new(3, Duration::from_secs(1));
        assert_eq!(rate.spacing(), Duration::from_micros(333_333));
        let jittered = rate.jitter(Duration::from_millis(100));
        let mut seen = std::collections::BTreeSet::new();
        for token in 1..200 {
            let d = jittered.spacing_after(token);
            assert!(d >= rate.spacing() && d < rate.spacing() + Duration::from_millis(100));
            seen.insert(d);
        }
        assert!(seen.len() > 150, "the extra varies with the token");
        assert_eq!(rate.spacing_after(7), rate.spacing());
    }

    #[test]
    fn limits_name_the_bad_field() {
        let field = |l: SessionLimits| l.validate().unwrap_err().field;
        assert_eq!(field(SessionLimits::new().max_running(0)), "max_running");
        assert_eq!(
            field(SessionLimits::new().rate(Rate::new(0, Duration::from_secs(1)))),
            "rate.starts"
        );
        assert_eq!(
            field(SessionLimits::new().rate(Rate::new(1, Duration::ZERO))),
            "rate.per"
        );
        assert!(SessionLimits::new().max_running(1).validate().is_ok());
    }
}
