//! Key names. A queue's keys share the hash tag `{prefix:queue}`, so every
//! script of one queue runs on one slot of a Redis Cluster; the few keys
//! that belong to no queue (the registry, locks) share `{prefix}`.

use wq_core::{JobId, QueueName, ValidationError};

/// The longest prefix accepted.
const MAX_PREFIX: usize = 64;

/// The names under one prefix.
#[derive(Clone, Debug)]
pub(crate) struct Keys {
    prefix: String,
}

impl Keys {
    /// Checks `prefix`: 1 to 64 characters of `[A-Za-z0-9_.-]`, so that it
    /// can neither break a hash tag nor act as a glob in `SCAN` and
    /// `PSUBSCRIBE` patterns, and no prefix is the start of another's keys.
    pub fn new(prefix: &str) -> Result<Self, ValidationError> {
        let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
        if prefix.is_empty() || prefix.len() > MAX_PREFIX || !prefix.chars().all(valid) {
            return Err(ValidationError::new(
                "prefix",
                format!("`{prefix}` must be 1 to {MAX_PREFIX} characters of [A-Za-z0-9_.-]"),
            ));
        }
        Ok(Self {
            prefix: prefix.to_owned(),
        })
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The base every key of `queue` starts with: `KEYS[1]` of its scripts.
    pub fn base(&self, queue: &QueueName) -> String {
        format!("{{{}:{}}}", self.prefix, queue)
    }

    /// The hash of a queue's settings.
    pub fn config(&self, queue: &QueueName) -> String {
        format!("{}:cfg", self.base(queue))
    }

    /// The hash of a queue's counts by state.
    pub fn counts(&self, queue: &QueueName) -> String {
        format!("{}:counts", self.base(queue))
    }

    /// The hash of one job.
    pub fn job(&self, queue: &QueueName, id: JobId) -> String {
        format!("{}:j:{id}", self.base(queue))
    }

    /// The payload of one job.
    pub fn payload(&self, queue: &QueueName, id: JobId) -> String {
        format!("{}:p:{id}", self.base(queue))
    }

    /// The history of one job: its finished runs, as a JSON array.
    pub fn history(&self, queue: &QueueName, id: JobId) -> String {
        format!("{}:h:{id}", self.base(queue))
    }

    /// The output of one completed job.
    pub fn output(&self, queue: &QueueName, id: JobId) -> String {
        format!("{}:o:{id}", self.base(queue))
    }

    /// The set of declared queue names.
    pub fn registry(&self) -> String {
        format!("{{{}}}:queues", self.prefix)
    }

    /// A named lock.
    pub fn lock(&self, name: &str) -> String {
        format!("{{{}}}:lock:{name}", self.prefix)
    }

    /// The fencing-token counter of locks.
    pub fn lock_token(&self) -> String {
        format!("{{{}}}:lock-token", self.prefix)
    }

    /// The pattern of every queue's wake-up channel.
    pub fn wake_pattern(&self) -> String {
        format!("{{{}:*}}:wake", self.prefix)
    }

    /// The queue a wake-up channel belongs to.
    pub fn queue_of_channel(&self, channel: &str) -> Option<QueueName> {
        let rest = channel
            .strip_prefix('{')?
            .strip_prefix(self.prefix.as_str())?;
        let name = rest.strip_prefix(':')?.strip_suffix("}:wake")?;
        (!name.is_empty()).then(|| QueueName::from(name))
    }

    /// `SCAN` patterns covering every key under the prefix.
    pub fn patterns(&self) -> [String; 2] {
        [
            format!("{{{}}}:*", self.prefix),
            format!("{{{}:*", self.prefix),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queue_shares_one_hash_tag() {
        let k = Keys::new("wq").unwrap();
        let q = QueueName::from("message");
        let id = JobId::new();
        assert_eq!(k.base(&q), "{wq:message}");
        assert!(k.job(&q, id).starts_with("{wq:message}:j:"));
        assert!(k.payload(&q, id).starts_with("{wq:message}:p:"));
        assert_eq!(k.registry(), "{wq}:queues");
        assert_eq!(k.lock("wq:maintenance"), "{wq}:lock:wq:maintenance");
    }

    #[test]
    fn channels_name_their_queue() {
        let k = Keys::new("wq").unwrap();
        assert_eq!(
            k.queue_of_channel("{wq:message}:wake"),
            Some(QueueName::from("message"))
        );
        assert_eq!(k.queue_of_channel("{wq2:message}:wake"), None);
        assert_eq!(k.queue_of_channel("{wq:}:wake"), None);
    }

    #[test]
    fn prefixes_that_could_collide_are_refused() {
        for bad in ["", "a:b", "a{b", "a*", "a b", &"x".repeat(65)] {
            assert_eq!(Keys::new(bad).unwrap_err().field, "prefix", "{bad:?}");
        }
        assert!(Keys::new("wq-test_1.2").is_ok());
    }
}
