//! Named locks: a hash per lock under the prefix's own hash tag, with a
//! fencing token from one counter. Expiry is judged by the caller's `now`;
//! the key's TTL only cleans up after holders that vanished.

use std::time::Duration;

use wq_core::{Lock, LockLease, StoreError, Timestamp};

use crate::error::driver;
use crate::scripts::SCRIPTS;
use crate::store::RedisStore;

/// How long a lock's key outlives its expiry before Redis deletes it.
const CLEANUP_AFTER: Duration = Duration::from_secs(3_600);

fn cleanup_ms(ttl: Duration) -> u64 {
    u64::try_from((ttl + CLEANUP_AFTER).as_millis()).unwrap_or(u64::MAX)
}

impl Lock for RedisStore {
    async fn acquire_lock(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
        now: Timestamp,
    ) -> Result<Option<LockLease>, StoreError> {
        let until = now + ttl;
        let token: Option<(u64,)> = SCRIPTS
            .lock_acquire
            .key(self.keys().lock(name))
            .key(self.keys().lock_token())
            .arg(holder)
            .arg(now.as_micros())
            .arg(until.as_micros())
            .arg(cleanup_ms(ttl))
            .invoke_async(&mut self.conn())
            .await
            .map_err(driver)?;
        Ok(token.map(|(token,)| LockLease {
            name: name.into(),
            holder: holder.into(),
            token,
            expires_at: until,
        }))
    }

    async fn renew_lock(
        &self,
        lease: &LockLease,
        ttl: Duration,
        now: Timestamp,
    ) -> Result<Option<LockLease>, StoreError> {
        let until = now + ttl;
        let renewed: bool = SCRIPTS
            .lock_renew
            .key(self.keys().lock(&lease.name))
            .arg(lease.token)
            .arg(now.as_micros())
            .arg(until.as_micros())
            .arg(cleanup_ms(ttl))
            .invoke_async(&mut self.conn())
            .await
            .map_err(driver)?;
        Ok(renewed.then(|| LockLease {
            expires_at: until,
            ..lease.clone()
        }))
    }

    async fn release_lock(&self, lease: &LockLease) -> Result<bool, StoreError> {
        SCRIPTS
            .lock_release
            .key(self.keys().lock(&lease.name))
            .arg(lease.token)
            .invoke_async(&mut self.conn())
            .await
            .map_err(driver)
    }
}
