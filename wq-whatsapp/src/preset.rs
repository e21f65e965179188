//! Sending defaults for a kind of number: how fast a session sends, how
//! far apart two messages to one contact go, how failures are retried and
//! how the pipeline types (see `docs/whatsapp.md` for the reasons).

use std::time::Duration;

use wq_core::{
    Admissions, Allowance, QueueConfig, QueueName, Rate, RetryPolicy, SessionKey, SessionLimits,
    Sessions, StoreError,
};

/// A day, the window of WhatsApp's limits on new chats.
const DAY: Duration = Duration::from_secs(24 * 3600);

use crate::pipeline::{PipelineConfig, Typing};
#[cfg(doc)]
use crate::transport::BridgeEvent;

/// Defaults for one kind of number.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Preset {
    /// Each session's limits: sends at once and their rate.
    pub session: SessionLimits,
    /// Each session's allowance of contacts it never wrote to.
    pub new_chats: Allowance,
    /// The least time between two messages to one contact.
    pub contact_gap: Duration,
    /// Retries of failed sends.
    pub retry: RetryPolicy,
    /// The pipeline's configuration.
    pub pipeline: PipelineConfig,
}

impl Preset {
    /// A number on an unofficial bridge (Baileys, whatsmeow, gateways over
    /// WhatsApp Web), where bursts get numbers banned: one send at a time,
    /// at most 12 a minute with up to 2 s of random extra spacing, 3 s
    /// between two messages to one contact, typing sized to each message
    /// and shown in steps that hold no worker slot (a message between steps
    /// takes no start from the rate, so typing never delays the sends), and
    /// at most 50 contacts it never wrote to in any 24 hours.
    pub fn unofficial() -> Self {
        Self {
            session: SessionLimits::new()
                .max_running(1)
                .rate(Rate::new(12, Duration::from_secs(60)).jitter(Duration::from_secs(2))),
            new_chats: Allowance::new(50, DAY),
            contact_gap: Duration::from_secs(3),
            retry: RetryPolicy {
                max_attempts: 8,
                base: Duration::from_secs(5),
                cap: Duration::from_secs(600),
                ..RetryPolicy::default()
            },
            pipeline: PipelineConfig::default(),
        }
    }

    /// A number on Meta's Cloud API: up to 80 messages a second per number
    /// (error 130429 past it), one message per 6 s to one user (131056),
    /// no typing (the API has no presence), sends accepted by the server
    /// when the call returns, and 250 new people in any 24 hours (the
    /// first messaging limit tier; a [`BridgeEvent::Quota`] raises it).
    pub fn cloud_api() -> Self {
        Self {
            session: SessionLimits::new()
                .max_running(16)
                .rate(Rate::new(80, Duration::from_secs(1))),
            new_chats: Allowance::new(250, DAY),
            contact_gap: Duration::from_secs(6),
            retry: RetryPolicy {
                max_attempts: 10,
                base: Duration::from_secs(2),
                cap: Duration::from_secs(300),
                ..RetryPolicy::default()
            },
            pipeline: PipelineConfig::default().typing(Typing::Off),
        }
    }

    /// Settings for a queue of messages named `name` under this preset.
    pub fn queue(&self, name: impl Into<QueueName>) -> QueueConfig {
        QueueConfig::new(name)
            .retry(self.retry.clone())
            .group_gap(self.contact_gap)
    }

    /// Gives session `instance` of `queue` this preset's limits and
    /// allowance of new chats.
    pub async fn declare_session<S: Sessions + Admissions>(
        &self,
        sessions: &S,
        queue: &QueueName,
        instance: &str,
    ) -> Result<(), StoreError> {
        let session = SessionKey::new(instance);
        sessions
            .set_session_limits(queue, &session, &self.session)
            .await?;
        sessions
            .set_allowance(queue, &session, Some(&self.new_chats))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_valid_and_space_their_sends() {
        for preset in [Preset::unofficial(), Preset::cloud_api()] {
            preset.session.validate().expect("valid limits");
            preset.new_chats.validate().expect("a valid allowance");
            let config = preset.queue("message");
            assert_eq!(config.group_gap, preset.contact_gap);
        }
        let rate = Preset::unofficial().session.rate.expect("a rate");
        assert_eq!(rate.spacing(), Duration::from_secs(5));
        let cloud = Preset::cloud_api().session.rate.expect("a rate");
        assert_eq!(cloud.spacing(), Duration::from_micros(12_500));
    }
}
