//! The [`Lock`] trait: named leases with expiry.
//!
//! Used for leadership (one process runs rescue, promotion and pruning) and
//! for user-level mutual exclusion, e.g. one inbound handler per contact.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::error::StoreError;
use crate::time::Timestamp;

/// A held named lock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockLease {
    /// The lock's name.
    pub name: Arc<str>,
    /// Who holds it.
    pub holder: Arc<str>,
    /// Fencing token; larger for every new acquisition of the name.
    pub token: u64,
    /// When it lapses unless renewed.
    pub expires_at: Timestamp,
}

/// Named leases with expiry, renewal and release.
pub trait Lock: Send + Sync + 'static {
    /// Takes `name` for `ttl` if nobody holds it (or the holder's lease
    /// lapsed); `None` if someone else does.
    fn acquire_lock(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
        now: Timestamp,
    ) -> impl Future<Output = Result<Option<LockLease>, StoreError>> + Send;

    /// Extends a held lock; `None` if it lapsed or was taken over.
    fn renew_lock(
        &self,
        lease: &LockLease,
        ttl: Duration,
        now: Timestamp,
    ) -> impl Future<Output = Result<Option<LockLease>, StoreError>> + Send;

    /// Gives a lock up; false if it was no longer held under this token.
    fn release_lock(
        &self,
        lease: &LockLease,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
}
