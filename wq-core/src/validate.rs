//! Input limits and the checks every public entry point runs before
//! anything is stored. Each failure names the field at fault.

use std::time::Duration;

use crate::error::ValidationError;
use crate::job::Payload;
use crate::queue::QueueConfig;

/// Longest queue name, in bytes.
pub const MAX_QUEUE_NAME: usize = 64;
/// Longest group key, in bytes.
pub const MAX_GROUP_KEY: usize = 256;
/// Longest session key, in bytes.
pub const MAX_SESSION_KEY: usize = 256;
/// Longest tenant, in bytes.
pub const MAX_TENANT: usize = 128;
/// Longest idempotency key, in bytes.
pub const MAX_IDEMPOTENCY_KEY: usize = 256;
/// Longest delay (and furthest `run_at`) accepted: about a year.
pub const MAX_DELAY: Duration = Duration::from_secs(366 * 24 * 3600);
/// Most attempts a job may be given.
pub const MAX_ATTEMPTS: u32 = 1_000;
/// Largest payload limit a queue may set.
pub const MAX_PAYLOAD_LIMIT: usize = 16 * 1024 * 1024;
/// Most jobs in one batch enqueue.
pub const MAX_BATCH: usize = 10_000;
/// Most concurrent handlers per queue and worker.
pub const MAX_CONCURRENCY: usize = 10_000;
/// Most jobs one listing returns.
pub const MAX_LIST: usize = 10_000;
/// Longest step name a handler may continue at, in bytes.
pub const MAX_STEP: usize = 64;

/// A queue name: 1 to 64 bytes of letters, digits, `_`, `-`, `.`, `:`.
pub fn queue_name(name: &str) -> Result<(), ValidationError> {
    if name.is_empty() || name.len() > MAX_QUEUE_NAME {
        return Err(ValidationError::new(
            "queue",
            format!("`{name}` must have 1 to {MAX_QUEUE_NAME} bytes"),
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':')))
    {
        return Err(ValidationError::new(
            "queue",
            format!("`{name}` has `{c}`; use letters, digits, `_`, `-`, `.` or `:`"),
        ));
    }
    Ok(())
}

/// A free-form key (group, tenant, idempotency key, a layer's own names):
/// not blank, at most `max` bytes, no control characters.
pub fn name_like(field: &'static str, value: &str, max: usize) -> Result<(), ValidationError> {
    if value.trim().is_empty() {
        return Err(ValidationError::new(field, "is empty"));
    }
    if value.len() > max {
        return Err(ValidationError::new(
            field,
            format!("is {} bytes; the limit is {max}", value.len()),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(ValidationError::new(field, "contains control characters"));
    }
    Ok(())
}

/// A step name (see [`JobError::Continue`](crate::JobError::Continue)):
/// not blank, at most [`MAX_STEP`] bytes, no control characters.
pub fn step(step: &str) -> Result<(), ValidationError> {
    name_like("step", step, MAX_STEP)
}

/// A payload: not empty, not `null`, within the queue's limit.
pub fn payload(p: &Payload, max_bytes: usize) -> Result<(), ValidationError> {
    if p.is_blank() {
        return Err(ValidationError::new("payload", "is empty"));
    }
    if p.len() > max_bytes {
        return Err(ValidationError::new(
            "payload",
            format!("is {} bytes; the queue allows {max_bytes}", p.len()),
        ));
    }
    Ok(())
}

/// A delay of at most [`MAX_DELAY`].
pub fn delay(field: &'static str, d: Duration) -> Result<(), ValidationError> {
    if d > MAX_DELAY {
        return Err(ValidationError::new(
            field,
            format!("{d:?} is longer than a year"),
        ));
    }
    Ok(())
}

/// Attempts between 1 and [`MAX_ATTEMPTS`].
pub fn max_attempts(n: u32) -> Result<(), ValidationError> {
    if n == 0 || n > MAX_ATTEMPTS {
        return Err(ValidationError::new(
            "max_attempts",
            format!("{n} is outside 1..={MAX_ATTEMPTS}"),
        ));
    }
    Ok(())
}

/// A queue's settings.
pub fn queue_config(c: &QueueConfig) -> Result<(), ValidationError> {
    queue_name(c.name.as_str())?;
    if c.concurrency == 0 || c.concurrency > MAX_CONCURRENCY {
        return Err(ValidationError::new(
            "concurrency",
            format!("{} is outside 1..={MAX_CONCURRENCY}", c.concurrency),
        ));
    }
    max_attempts(c.retry.max_attempts)?;
    if c.retry.cap < c.retry.base {
        return Err(ValidationError::new(
            "retry.cap",
            "is shorter than retry.base",
        ));
    }
    delay("retry.cap", c.retry.cap)?;
    delay("retry.disconnected_delay", c.retry.disconnected_delay)?;
    if c.lease < Duration::from_millis(100) || c.lease > Duration::from_secs(24 * 3600) {
        return Err(ValidationError::new(
            "lease",
            format!("{:?} is outside 100 ms..=24 h", c.lease),
        ));
    }
    if c.timeout.is_zero() || c.timeout > Duration::from_secs(24 * 3600) {
        return Err(ValidationError::new(
            "timeout",
            format!("{:?} is outside (0, 24 h]", c.timeout),
        ));
    }
    delay("group_gap", c.group_gap)?;
    if c.max_payload_bytes == 0 || c.max_payload_bytes > MAX_PAYLOAD_LIMIT {
        return Err(ValidationError::new(
            "max_payload_bytes",
            format!("{} is outside 1..={MAX_PAYLOAD_LIMIT}", c.max_payload_bytes),
        ));
    }
    Ok(())
}

/// A listing size between 1 and [`MAX_LIST`].
pub fn list_limit(n: usize) -> Result<(), ValidationError> {
    if n == 0 || n > MAX_LIST {
        return Err(ValidationError::new(
            "limit",
            format!("{n} is outside 1..={MAX_LIST}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_names() {
        assert!(queue_name("message").is_ok());
        assert!(queue_name("inst-1:campaign.v2_x").is_ok());
        for bad in ["", "has space", "ação", &"q".repeat(65)] {
            assert_eq!(queue_name(bad).unwrap_err().field, "queue", "{bad}");
        }
    }

    #[test]
    fn keys() {
        assert!(name_like("group", "tenant-1:customer-42", MAX_GROUP_KEY).is_ok());
        assert!(name_like("group", "  ", MAX_GROUP_KEY).is_err());
        assert!(name_like("group", "a\nb", MAX_GROUP_KEY).is_err());
        assert!(name_like("group", &"g".repeat(257), MAX_GROUP_KEY).is_err());
    }

    #[test]
    fn queue_settings() {
        assert!(queue_config(&QueueConfig::new("q")).is_ok());
        let field = |c: QueueConfig| queue_config(&c).unwrap_err().field;
        assert_eq!(field(QueueConfig::new("q").concurrency(0)), "concurrency");
        assert_eq!(field(QueueConfig::new("q").max_attempts(0)), "max_attempts");
        assert_eq!(field(QueueConfig::new("q").lease(Duration::ZERO)), "lease");
        assert_eq!(
            field(QueueConfig::new("q").timeout(Duration::ZERO)),
            "timeout"
        );
        assert_eq!(
            field(QueueConfig::new("q").max_payload_bytes(0)),
            "max_payload_bytes"
        );
        assert_eq!(field(QueueConfig::new("bad name")), "queue");
    }
}
