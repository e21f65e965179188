//! Reaching a server that may not be up yet: workers often start before
//! their database (under systemd or Kubernetes), so a backend's `connect`
//! keeps trying, with backoff and a warning per try, instead of failing at
//! once and leaving the process to loop by hand.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use crate::error::StoreError;

/// The first wait between two tries.
const FIRST_RETRY: Duration = Duration::from_millis(100);
/// The longest wait between two tries.
const MAX_RETRY: Duration = Duration::from_secs(5);
/// How long one try may take when less time is left (with a limit of zero,
/// say): a try cut shorter than a connection needs would always fail.
const MIN_TRY: Duration = Duration::from_secs(5);

/// Why [`keep_trying`] stopped.
#[derive(Debug)]
pub enum Unreached<E> {
    /// A failure that time will not mend (a refused password, a malformed
    /// address): returned at its first occurrence.
    Refused(E),
    /// The limit passed while the server stayed unreachable.
    GaveUp(StoreError),
}

/// Calls `attempt` (given how long it may take) until it succeeds, fails
/// with an error `transient` does not forgive, or `limit` has passed;
/// waits 100 ms doubling to 5 s between tries and logs each failed one at
/// `warn` level. `what` names the server in the log and the final error
/// (`"Postgres"`), `server` its address.
pub async fn keep_trying<E, Fut>(
    what: &str,
    server: &str,
    limit: Duration,
    mut attempt: impl FnMut(Duration) -> Fut,
    transient: impl Fn(&E) -> bool,
) -> Result<(), Unreached<E>>
where
    E: fmt::Display,
    Fut: Future<Output = Result<(), E>>,
{
    let started = tokio::time::Instant::now();
    let mut delay = FIRST_RETRY;
    let mut tries = 0u32;
    loop {
        tries += 1;
        let left = limit.saturating_sub(started.elapsed());
        let failure = match attempt(left.max(MIN_TRY)).await {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        if !transient(&failure) {
            return Err(Unreached::Refused(failure));
        }
        let left = limit.saturating_sub(started.elapsed());
        if left.is_zero() {
            return Err(Unreached::GaveUp(StoreError::backend(format!(
                "{what} at {server} not reachable: gave up after {tries} tries in {:?} \
                 (connect_timeout {limit:?}); last error: {failure}",
                started.elapsed()
            ))));
        }
        let wait = delay.min(left);
        tracing::warn!(
            server = %server,
            error = %failure,
            tries,
            retry_in = ?wait,
            "{what} not reachable yet; trying again in {wait:?}"
        );
        tokio::time::sleep(wait).await;
        delay = (delay * 2).min(MAX_RETRY);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn tries_until_success() {
        let calls = AtomicU32::new(0);
        let out = keep_trying(
            "test",
            "here",
            Duration::from_secs(30),
            |_| async {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                if n < 3 { Err("down") } else { Ok(()) }
            },
            |_| true,
        )
        .await;
        assert!(out.is_ok());
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn refuses_at_once_what_time_will_not_mend() {
        let calls = AtomicU32::new(0);
        let out = keep_trying(
            "test",
            "here",
            Duration::from_secs(30),
            |_| async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err::<(), _>("bad password")
            },
            |_| false,
        )
        .await;
        assert!(matches!(out, Err(Unreached::Refused("bad password"))));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_at_the_limit() {
        let started = tokio::time::Instant::now();
        let out = keep_trying(
            "test",
            "here",
            Duration::from_secs(2),
            |_| async { Err::<(), _>("down") },
            |_| true,
        )
        .await;
        let Err(Unreached::GaveUp(e)) = out else {
            panic!("expected to give up");
        };
        assert!(e.to_string().contains("gave up after"), "{e}");
        assert!(started.elapsed() >= Duration::from_secs(2));
        assert!(started.elapsed() < Duration::from_secs(3));
    }
}
