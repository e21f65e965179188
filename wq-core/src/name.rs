//! Cheap-to-clone names: queues, group keys and session keys.
//!
//! These types carry no validation of their own; every public entry point
//! checks names with [`crate::validate`] so that a bad one is reported with
//! the field it came from.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Wraps a name; validation happens where it enters the API.
            pub fn new(name: impl Into<Arc<str>>) -> Self {
                Self(name.into())
            }

            /// The name as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.into())
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                Self(s.into())
            }
        }

        impl From<&$name> for $name {
            fn from(s: &$name) -> Self {
                s.clone()
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }
    };
}

name_type!(
    /// The name of a queue, e.g. `message`, `automation`, `campaign`, `webhook`.
    QueueName
);

name_type!(
    /// The ordering key of a job: jobs of one group run in enqueue order,
    /// one at a time (e.g. `account:customer` orders each customer's jobs,
    /// `account` all of an account's).
    GroupKey
);

name_type!(
    /// The key of a session: jobs that share one run under the session's
    /// limits and pause (see [`crate::SessionLimits`]); e.g. the sending
    /// number whose messages must not go out in bursts.
    SessionKey
);
