//! What this crate adds to the core's job types: [`EnqueueMessage`] turns
//! an [`OutboundMessage`] into a job, [`JobMessageId`] gives a running job
//! the message id it sends under.

use wq_core::{Enqueue, JobContext, Payload, QueueName, ValidationError};

use crate::message::{MessageId, OutboundMessage};

mod sealed {
    pub trait Sealed {}
    impl Sealed for wq_core::Enqueue {}
    impl Sealed for wq_core::JobContext {}
}

/// Adds `Enqueue::message` to [`Enqueue`]: bring the trait into scope and
/// build message jobs like any other.
///
/// ```
/// use wq::{Enqueue, EnqueueMessage, OutboundMessage};
///
/// let msg = OutboundMessage::text("inst-1", "+55 11 99999-8888", "Olá!")?;
/// let job = Enqueue::message("message", &msg);
/// # let _ = job;
/// # Ok::<(), wq::ValidationError>(())
/// ```
pub trait EnqueueMessage: sealed::Sealed {
    /// A job sending `msg` through a [`SendPipeline`](crate::SendPipeline)
    /// queue, checked (recipient, content limits) and kept in order per
    /// contact: the group is [`OutboundMessage::contact_group`], the
    /// session (whose limits and pause apply) and the tenant are the
    /// instance. A message that fails its checks is refused,
    /// naming the field, when the job is enqueued.
    fn message(queue: impl Into<QueueName>, msg: &OutboundMessage) -> Self;
}

impl EnqueueMessage for Enqueue {
    fn message(queue: impl Into<QueueName>, msg: &OutboundMessage) -> Self {
        let checked = msg.validate().and_then(|()| {
            Payload::from_json(msg)
                .map_err(|e| ValidationError::new("payload", format!("does not serialize: {e}")))
        });
        Enqueue::checked(queue, checked)
            .group(msg.contact_group())
            .session(msg.instance.as_str())
            .tenant(msg.instance.as_str())
    }
}

/// Adds `message_id` to [`JobContext`].
pub trait JobMessageId: sealed::Sealed {
    /// The WhatsApp message id pre-assigned to this job
    /// ([`MessageId::for_job`]): the same on every attempt, so a bridge can
    /// drop a resend after a lost acknowledgement.
    fn message_id(&self) -> MessageId;
}

impl JobMessageId for JobContext {
    fn message_id(&self) -> MessageId {
        MessageId::for_job(self.id())
    }
}

#[cfg(test)]
mod tests {
    use wq_core::{QueueConfig, Timestamp};

    use super::*;
    use crate::message::Content;

    #[test]
    fn message_jobs_are_grouped_per_contact_and_tagged_with_the_instance() {
        let msg = OutboundMessage::text("inst-1", "+55 11 99999-8888", "olá").unwrap();
        let job = Enqueue::message("message", &msg)
            .build(&QueueConfig::new("message"), Timestamp::from_millis(0))
            .unwrap();
        assert_eq!(job.group.unwrap().as_str(), "inst-1:5511999998888");
        assert_eq!(job.tenant.as_deref(), Some("inst-1"));
        assert_eq!(job.session.unwrap().as_str(), "inst-1");
        assert_eq!(job.payload.decode::<OutboundMessage>().unwrap(), msg);
    }

    #[test]
    fn invalid_messages_are_refused_when_built() {
        let mut msg = OutboundMessage::text("inst-1", "5511999998888", "olá").unwrap();
        msg.content = Content::Text { body: " ".into() };
        let err = Enqueue::message("message", &msg)
            .build(&QueueConfig::new("message"), Timestamp::from_millis(0))
            .unwrap_err();
        assert_eq!(err.field, "content.body");
    }
}
