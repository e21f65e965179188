//! Admissions: a session's budget of new groups.
//!
//! A WhatsApp number that starts many conversations with people it never
//! wrote to gets restricted, and the Cloud API caps the new people a number
//! may reach per 24 hours. In wq's words: a session may take on at most
//! [`Allowance::new`] groups it has not served before in any window of
//! [`Allowance::per`]. The store remembers the groups each session was
//! admitted to, so every process sees the same budget, and admits in one
//! atomic step, so two processes racing for the last place admit one group.
//!
//! ```
//! use std::time::Duration;
//! use wq::Allowance;
//!
//! let daily = Allowance::new(50, Duration::from_secs(24 * 3600));
//! assert!(daily.validate().is_ok());
//! assert_eq!(Allowance::new(0, daily.per).validate().unwrap_err().field, "allowance.new");
//! ```

use std::future::Future;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{StoreError, ValidationError};
use crate::name::{GroupKey, QueueName, SessionKey};
use crate::time::Timestamp;
use crate::validate::MAX_DELAY;

/// At most `new` groups a session has not served before, in any window of
/// length `per`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allowance {
    /// New groups per window (at least 1).
    pub new: u32,
    /// The window (more than zero, at most a year).
    pub per: Duration,
}

impl Allowance {
    /// `new` new groups per `per`.
    pub const fn new(new: u32, per: Duration) -> Self {
        Self { new, per }
    }

    /// Checks the fields, naming the bad one (`allowance.new`,
    /// `allowance.per`).
    pub fn validate(&self) -> Result<(), ValidationError> {
        if self.new == 0 {
            return Err(ValidationError::new("allowance.new", "must be at least 1"));
        }
        if self.per.is_zero() || self.per > MAX_DELAY {
            return Err(ValidationError::new(
                "allowance.per",
                "must be more than zero and at most a year",
            ));
        }
        Ok(())
    }
}

/// What [`Admissions::admit`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Admission {
    /// The session was admitted to the group before: nothing counted.
    Known,
    /// A new group, admitted now and counted in the window.
    Admitted,
    /// A new group the session may not take on before `until` (its
    /// allowance is spent, or admissions are held).
    Refused {
        /// When a place frees up (or the hold ends).
        until: Timestamp,
    },
}

/// The budget of new groups per session, kept in the store.
///
/// A session's admitted groups are remembered while its queue exists;
/// without an allowance every new group is admitted (and remembered, so
/// that setting an allowance later does not count old groups as new).
pub trait Admissions: Send + Sync + 'static {
    /// Sets (or, with `None`, lifts) a session's allowance; its admitted
    /// groups are kept.
    fn set_allowance(
        &self,
        queue: &QueueName,
        session: &SessionKey,
        allowance: Option<&Allowance>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Refuses the session new groups before `until` (the server said its
    /// quota is spent); a later hold replaces an earlier one.
    fn hold_admissions(
        &self,
        queue: &QueueName,
        session: &SessionKey,
        until: Timestamp,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Admits the session to `group` at `now`: [`Admission::Known`] if it
    /// was admitted before; else, unless held, admitted if fewer than the
    /// allowance's `new` groups were admitted in `(now - per, now]`; else
    /// refused until the oldest of those leaves the window. One atomic
    /// step per session: the same call sent again (its reply lost) answers
    /// `Known`.
    fn admit(
        &self,
        queue: &QueueName,
        session: &SessionKey,
        group: &GroupKey,
        now: Timestamp,
    ) -> impl Future<Output = Result<Admission, StoreError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowances_name_the_bad_field() {
        let day = Duration::from_secs(86_400);
        assert!(Allowance::new(1, day).validate().is_ok());
        assert_eq!(
            Allowance::new(0, day).validate().unwrap_err().field,
            "allowance.new"
        );
        for per in [Duration::ZERO, MAX_DELAY + Duration::from_secs(1)] {
            assert_eq!(
                Allowance::new(5, per).validate().unwrap_err().field,
                "allowance.per"
            );
        }
    }
}
