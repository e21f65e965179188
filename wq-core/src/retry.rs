//! Retry policy: exponential backoff with full jitter, and the mapping from a
//! handler's outcome to what the store should do with the job.

use std::time::Duration;

use rand::{Rng, RngExt};
use serde::{Deserialize, Serialize};

use crate::handler::JobError;
use crate::store::AckAction;
use crate::time::Timestamp;

/// Retries, backoff and dead-lettering for a queue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Attempts allowed before a job is dead (default 3).
    pub max_attempts: u32,
    /// Backoff before the second attempt; doubles after each failure (default 2 s).
    #[serde(with = "crate::time::serde_millis")]
    pub base: Duration,
    /// Longest backoff (default 10 min).
    #[serde(with = "crate::time::serde_millis")]
    pub cap: Duration,
    /// Full jitter: the wait is uniform in `[0, backoff]` (default on), so a
    /// burst of failures does not retry in lockstep.
    pub jitter: bool,
    /// How long a job waits after a [`JobError::Wait`] that names no delay
    /// (something it needs is unavailable, e.g. a lost connection); no
    /// attempt is spent (default 5 s).
    #[serde(with = "crate::time::serde_millis")]
    pub disconnected_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            base: Duration::from_secs(2),
            cap: Duration::from_secs(600),
            jitter: true,
            disconnected_delay: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// The backoff ceiling after `attempt` failed attempts (1 = the first):
    /// `min(cap, base * 2^(attempt-1))`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(32);
        self.base
            .checked_mul(1u32 << doublings.min(31))
            .map_or(self.cap, |d| d.min(self.cap))
    }

    /// The wait before retrying after `attempt` failed attempts.
    pub fn backoff<R: Rng + ?Sized>(&self, attempt: u32, rng: &mut R) -> Duration {
        let ceiling = self.ceiling(attempt);
        if !self.jitter || ceiling.is_zero() {
            return ceiling;
        }
        let micros = u64::try_from(ceiling.as_micros()).unwrap_or(u64::MAX);
        Duration::from_micros(rng.random_range(0..=micros))
    }
}

/// Why an attempt ended without the handler's own verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptEnd {
    /// The handler returned.
    Returned(Result<(), JobError>),
    /// The handler ran past the queue's timeout.
    TimedOut(Duration),
    /// The handler panicked.
    Panicked(String),
}

/// What to tell the store after attempt `attempt` (of `max_attempts`)
/// ended at `now`.
pub fn decide<R: Rng + ?Sized>(
    attempt: u32,
    max_attempts: u32,
    end: AttemptEnd,
    policy: &RetryPolicy,
    now: Timestamp,
    rng: &mut R,
) -> AckAction {
    let failure = match end {
        AttemptEnd::Returned(Ok(())) => return AckAction::complete(),
        AttemptEnd::Returned(Err(e)) => e,
        AttemptEnd::TimedOut(after) => JobError::retry(format!("timed out after {after:?}")),
        AttemptEnd::Panicked(msg) => JobError::retry(format!("handler panicked: {msg}")),
    };
    let fail = |reason: String, after: Option<Duration>, rng: &mut R| {
        if attempt >= max_attempts {
            AckAction::Kill { error: reason }
        } else {
            let wait = after.unwrap_or_else(|| policy.backoff(attempt, rng));
            AckAction::Retry {
                run_at: now + wait,
                error: reason,
            }
        }
    };
    match failure {
        JobError::Permanent { reason } => AckAction::Kill { error: reason },
        JobError::Wait { reason, after, .. } => AckAction::Defer {
            run_at: now + after.unwrap_or(policy.disconnected_delay),
            reason,
        },
        JobError::Continue { step, after } => match crate::validate::step(&step) {
            Ok(()) => AckAction::Continue {
                run_at: now + after,
                step,
            },
            // Storing it would break the backends' limits; the handler's
            // bug is reported where operators look, as a failed attempt.
            Err(e) => fail(format!("continue refused: {e}"), None, rng),
        },
        JobError::Retryable { reason, after } => fail(reason, after, rng),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn ceiling_doubles_from_base_and_stops_at_cap() {
        let p = RetryPolicy::default();
        assert_eq!(p.ceiling(1), Duration::from_secs(2));
        assert_eq!(p.ceiling(2), Duration::from_secs(4));
        assert_eq!(p.ceiling(5), Duration::from_secs(32));
        assert_eq!(p.ceiling(10), Duration::from_secs(600));
        assert_eq!(p.ceiling(u32::MAX), Duration::from_secs(600));
    }

    #[test]
    fn full_jitter_stays_within_the_ceiling_and_spreads() {
        let p = RetryPolicy::default();
        let mut rng = StdRng::seed_from_u64(7);
        let waits: Vec<_> = (0..1000).map(|_| p.backoff(3, &mut rng)).collect();
        assert!(waits.iter().all(|w| *w <= Duration::from_secs(8)));
        let below_half = waits
            .iter()
            .filter(|w| **w < Duration::from_secs(4))
            .count();
        assert!((350..650).contains(&below_half), "{below_half}");
        let fixed = RetryPolicy { jitter: false, ..p };
        assert_eq!(fixed.backoff(3, &mut rng), Duration::from_secs(8));
    }

    #[test]
    fn decide_maps_each_outcome() {
        let p = RetryPolicy {
            jitter: false,
            ..RetryPolicy::default()
        };
        let now = Timestamp::from_millis(1_000_000);
        let mut rng = StdRng::seed_from_u64(1);
        let ok = decide(1, 3, AttemptEnd::Returned(Ok(())), &p, now, &mut rng);
        assert_eq!(ok, AckAction::complete());

        let retry = decide(
            1,
            3,
            AttemptEnd::Returned(Err(JobError::retry("boom"))),
            &p,
            now,
            &mut rng,
        );
        assert_eq!(
            retry,
            AckAction::Retry {
                run_at: now + Duration::from_secs(2),
                error: "boom".into()
            }
        );

        let last = decide(
            3,
            3,
            AttemptEnd::Returned(Err(JobError::retry("boom"))),
            &p,
            now,
            &mut rng,
        );
        assert_eq!(
            last,
            AckAction::Kill {
                error: "boom".into()
            }
        );

        let waiting = decide(
            3,
            3,
            AttemptEnd::Returned(Err(JobError::wait("socket closed"))),
            &p,
            now,
            &mut rng,
        );
        assert!(
            matches!(waiting, AckAction::Defer { run_at, .. } if run_at == now + Duration::from_secs(5))
        );

        let limited = decide(
            1,
            3,
            AttemptEnd::Returned(Err(JobError::wait_for(
                "rate limited",
                Duration::from_secs(60),
            ))),
            &p,
            now,
            &mut rng,
        );
        assert!(
            matches!(limited, AckAction::Defer { run_at, .. } if run_at == now + Duration::from_secs(60))
        );

        let permanent = decide(
            1,
            3,
            AttemptEnd::Returned(Err(JobError::permanent("invalid number"))),
            &p,
            now,
            &mut rng,
        );
        assert_eq!(
            permanent,
            AckAction::Kill {
                error: "invalid number".into()
            }
        );

        let timed_out = decide(
            1,
            3,
            AttemptEnd::TimedOut(Duration::from_secs(1)),
            &p,
            now,
            &mut rng,
        );
        assert!(matches!(timed_out, AckAction::Retry { error, .. } if error.contains("timed out")));

        let explicit = decide(
            1,
            3,
            AttemptEnd::Returned(Err(JobError::Retryable {
                reason: "busy".into(),
                after: Some(Duration::from_secs(30)),
            })),
            &p,
            now,
            &mut rng,
        );
        assert!(
            matches!(explicit, AckAction::Retry { run_at, .. } if run_at == now + Duration::from_secs(30))
        );
    }

    #[test]
    fn continue_keeps_the_attempt_and_a_bad_step_fails_it() {
        let p = RetryPolicy::default();
        let now = Timestamp::from_millis(1_000_000);
        let mut rng = StdRng::seed_from_u64(3);
        let hour = Duration::from_secs(3600);
        let go = |step: String, attempt: u32, rng: &mut StdRng| {
            let end = AttemptEnd::Returned(Err(JobError::continue_at(step, hour)));
            decide(attempt, 3, end, &p, now, rng)
        };
        assert_eq!(
            go("send".into(), 3, &mut rng),
            AckAction::Continue {
                run_at: now + hour,
                step: "send".into()
            }
        );
        let long = "s".repeat(crate::validate::MAX_STEP + 1);
        assert!(matches!(
            go(long.clone(), 1, &mut rng),
            AckAction::Retry { error, .. } if error.contains("step") && error.contains("65 bytes")
        ));
        assert!(matches!(go(long, 3, &mut rng), AckAction::Kill { .. }));
        assert!(matches!(
            go(" ".into(), 1, &mut rng),
            AckAction::Retry { .. }
        ));
    }
}
