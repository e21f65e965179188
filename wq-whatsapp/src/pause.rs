//! Why the pipeline pauses a session, as the store keeps it.
//!
//! The pause and its reason live in the store ([`wq_core::PauseChange`]),
//! not in the process that took it: any process's supervisor can resume a
//! session paused for a lost link once the link is back, or for a rate
//! limit once its wait is over, even if the process that paused it died.
//! A pause for a reason the pipeline resumes from never replaces another
//! pause, and the pipeline resumes only a pause for exactly that reason,
//! so it never lifts an operator's pause or a ban.

use std::time::Duration;

use wq_core::{PauseChange, Timestamp};

use crate::transport::SessionState;

/// How every reason the pipeline stores begins.
pub const PAUSE_PREFIX: &str = "whatsapp: ";
const LINK_DOWN: &str = "whatsapp: link down";
const RATE_LIMITED: &str = "whatsapp: rate limited until ";

/// Why the pipeline paused a session.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PauseReason {
    /// Its link is down; it resumes when the link is back.
    Disconnected,
    /// WhatsApp throttles the whole number; it resumes after the wait.
    RateLimited,
    /// Logged out, replaced or banned: an operator must act.
    Stopped(SessionState),
    /// A ban signal with this code: an operator must act.
    BanSignal(i64),
    /// Too many of its latest sends were rejected: an operator must act.
    Rejections {
        /// Rejected sends in the window.
        rejected: usize,
        /// Sends in the window.
        of: usize,
    },
}

impl PauseReason {
    /// Whether the pipeline resumes the session by itself.
    pub const fn resumes(&self) -> bool {
        matches!(self, PauseReason::Disconnected | PauseReason::RateLimited)
    }

    /// The reason as the store keeps it; a rate limit's with the time it
    /// ends (`now + wait`), so that any process knows when to resume.
    pub fn stored(&self, now: Timestamp, wait: Duration) -> String {
        match self {
            PauseReason::Disconnected => LINK_DOWN.into(),
            PauseReason::RateLimited => format!("{RATE_LIMITED}{}", (now + wait).as_micros()),
            PauseReason::Stopped(state) => format!("{PAUSE_PREFIX}session {state:?}"),
            PauseReason::BanSignal(code) => format!("{PAUSE_PREFIX}ban signal {code}"),
            PauseReason::Rejections { rejected, of } => {
                format!("{PAUSE_PREFIX}{rejected} of the last {of} sends rejected")
            }
        }
    }

    /// The change that takes this pause: one the pipeline resumes from
    /// keeps a pause in force (an operator's, a ban's); one that needs an
    /// operator replaces it.
    pub(crate) fn change(&self, now: Timestamp, wait: Duration) -> PauseChange {
        let reason = self.stored(now, wait);
        if self.resumes() {
            PauseChange::PauseUnlessPaused(reason)
        } else {
            PauseChange::Pause(reason)
        }
    }
}

/// A stored pause the pipeline resumes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Resumable {
    /// When the session's link is up.
    LinkDown,
    /// From this time on.
    After(Timestamp),
}

impl Resumable {
    /// The pause a stored reason describes, if the pipeline resumes from it.
    pub(crate) fn of(stored: &str) -> Option<Self> {
        if stored == LINK_DOWN {
            return Some(Resumable::LinkDown);
        }
        let micros = stored.strip_prefix(RATE_LIMITED)?.parse().ok()?;
        Some(Resumable::After(Timestamp::from_micros(micros)))
    }

    /// The reason a lost link's pause is stored under.
    pub(crate) fn link_down() -> &'static str {
        LINK_DOWN
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resumable_reasons_read_back_and_others_do_not() {
        let now = Timestamp::from_micros(1_764_000_000_000_000);
        let wait = Duration::from_secs(30);
        let stored = |r: PauseReason| r.stored(now, wait);
        assert_eq!(
            Resumable::of(&stored(PauseReason::Disconnected)),
            Some(Resumable::LinkDown)
        );
        assert_eq!(
            Resumable::of(&stored(PauseReason::RateLimited)),
            Some(Resumable::After(now + wait))
        );
        for r in [
            PauseReason::Stopped(SessionState::Banned),
            PauseReason::BanSignal(463),
            PauseReason::Rejections {
                rejected: 11,
                of: 50,
            },
        ] {
            let text = stored(r.clone());
            assert!(text.starts_with(PAUSE_PREFIX), "{text}");
            assert_eq!(Resumable::of(&text), None, "{r:?} needs an operator");
            assert!(matches!(r.change(now, wait), PauseChange::Pause(_)));
        }
        assert_eq!(Resumable::of(wq_core::OPERATOR_PAUSE), None);
        assert!(matches!(
            PauseReason::Disconnected.change(now, wait),
            PauseChange::PauseUnlessPaused(_)
        ));
        for r in [
            PauseReason::Disconnected,
            PauseReason::RateLimited,
            PauseReason::Rejections {
                rejected: 11,
                of: 50,
            },
        ] {
            assert!(r.change(now, wait).validate().is_ok(), "{r:?}");
        }
    }
}
