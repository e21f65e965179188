//! Errors, one type per layer: [`ValidationError`] for bad input,
//! [`StoreError`] for backends, [`Error`] for the client and the worker.

use std::fmt;

use crate::job::{JobId, JobState};
use crate::name::QueueName;

/// A boxed error from a backend's driver.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Input that was refused before anything was stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ValidationError {
    /// The field at fault, e.g. `payload`, `group`, `delay`, `max_attempts`.
    pub field: &'static str,
    /// Why it was refused.
    pub reason: String,
    /// Which job of a batch it was, when the input was a batch.
    pub index: Option<usize>,
}

/// How every refusal of an undeclared queue begins.
const UNKNOWN_QUEUE: &str = "unknown queue";

impl ValidationError {
    /// A refusal of `field` for `reason`.
    pub fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self {
            field,
            reason: reason.into(),
            index: None,
        }
    }

    /// The refusal of a queue nobody declared.
    pub fn unknown_queue(queue: &str) -> Self {
        Self::new(
            "queue",
            format!("{UNKNOWN_QUEUE} `{queue}` (declare it first)"),
        )
    }

    /// Whether this refuses an undeclared queue (an HTTP API answers 404).
    pub fn is_unknown_queue(&self) -> bool {
        self.field == "queue" && self.reason.starts_with(UNKNOWN_QUEUE)
    }

    /// The same refusal, located at position `index` of a batch.
    pub fn at(mut self, index: usize) -> Self {
        self.index = Some(index);
        self
    }
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid {}", self.field)?;
        if let Some(i) = self.index {
            write!(f, " (job #{i} of the batch)")?;
        }
        write!(f, ": {}", self.reason)
    }
}

/// What a backend can report.
///
/// More kinds may come: a match on it needs a catch-all arm.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The queue was never declared.
    #[error("unknown queue `{0}` (declare it first)")]
    UnknownQueue(QueueName),
    /// No job has this id (or it was pruned).
    #[error("job {0} not found")]
    NotFound(JobId),
    /// The job's state does not allow the operation.
    #[error("job {id} is {state}; cannot {action}")]
    InvalidState {
        /// The job.
        id: JobId,
        /// Its state when the operation was tried.
        state: JobState,
        /// What was tried, e.g. `cancel`.
        action: &'static str,
    },
    /// The backend refused input that slipped past the client's checks.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// The backend's driver failed (connection lost, server error...).
    #[error("backend error: {0}")]
    Backend(#[source] BoxError),
}

impl StoreError {
    /// Wraps a driver error.
    pub fn backend(e: impl Into<BoxError>) -> Self {
        Self::Backend(e.into())
    }
}

/// The error of the client and worker APIs.
///
/// More kinds may come: a match on it needs a catch-all arm.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Bad input; nothing was stored.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// The backend failed or refused.
    #[error(transparent)]
    Store(StoreError),
}

impl Error {
    /// The input field at fault, when the error is about input.
    ///
    /// An unknown queue is bad input too: it names the `queue` field.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            Error::Invalid(v) => Some(v.field),
            Error::Store(_) => None,
        }
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::UnknownQueue(q) => {
                Error::Invalid(ValidationError::unknown_queue(q.as_str()))
            }
            StoreError::Invalid(v) => Error::Invalid(v),
            other => Error::Store(other),
        }
    }
}
