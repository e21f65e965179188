//! The conformance suite: one test per guarantee of the design, each an
//! `async fn(&impl TestBackend) -> TestResult`. Backends run them all with
//! [`crate::conformance_tests!`], which groups them as the traits are
//! grouped: the engine's (`Store`, `Sessions`, `Admissions`, `Lock`,
//! `Scheduler`, and the layers built on them) and the operator's (`Admin`,
//! `Audit`).

mod admin;
mod admission;
mod enqueue;
mod events;
mod history;
mod lease;
mod ledger;
mod order;
mod retry;
mod sessions;
mod steps;
mod timing;
mod whatsapp;
mod worker;

pub use admin::*;
pub use admission::*;
pub use enqueue::*;
pub use events::*;
pub use history::*;
pub use lease::*;
pub use ledger::{Ledger, Step, counting_handler, recording_handler, start_worker};
pub use order::*;
pub use retry::*;
pub use sessions::*;
pub use steps::*;
pub use timing::*;
pub use whatsapp::*;
pub use worker::*;
