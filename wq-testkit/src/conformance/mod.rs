//! The conformance suite: one test per guarantee of the design, each an
//! `async fn(&impl TestBackend) -> TestResult`. Backends run them all with
//! [`crate::conformance_tests!`].

mod admission;
mod enqueue;
mod events;
mod history;
mod lease;
mod ledger;
mod operations;
mod order;
mod retry;
mod sessions;
mod steps;
mod timing;
mod whatsapp;
mod worker;

pub use admission::*;
pub use enqueue::*;
pub use events::*;
pub use history::*;
pub use lease::*;
pub use ledger::{Ledger, Step, counting_handler, recording_handler, start_worker};
pub use operations::*;
pub use order::*;
pub use retry::*;
pub use sessions::*;
pub use steps::*;
pub use timing::*;
pub use whatsapp::*;
pub use worker::*;
