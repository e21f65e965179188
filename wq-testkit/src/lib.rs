//! # wq-testkit
//!
//! What every wq backend runs to prove the design's guarantees:
//!
//! - [`conformance`]: one test per guarantee (FIFO per group, one in flight,
//!   parallelism across groups, idempotent enqueue, retries and backoff,
//!   the dead-letter queue, delays and time chaining, priorities, cancel,
//!   pause, lease expiry and rescue, steps, fencing, retention, counts, positions,
//!   shutdown, bad input), expanded into `#[tokio::test]`s by
//!   [`conformance_tests!`];
//! - [`properties`]: state-machine property tests with proptest, expanded by
//!   [`property_tests!`];
//! - [`concurrency`]: enqueuers, workers and an operator racing on the same
//!   groups, checked against a ledger and the backend's audit, expanded by
//!   [`concurrency_tests!`];
//! - [`differential`]: random sequences of store calls run on the backend
//!   and on the memory backend, which must agree after every step,
//!   expanded by [`differential_tests!`];
//! - [`crash`](mod@crash): worker processes SIGKILLed while the server is
//!   cut off, for a backend's restart tests, checked against the workers'
//!   ledger files and the store;
//! - [`late_server`]: a port with nothing on it and a proxy that opens
//!   there later, for the tests of a backend's `connect`;
//! - [`app`]: for an application's own tests: what it enqueued, its
//!   handlers run until the queues are idle, time moved on a manual clock.
//!
//! A backend crate implements [`TestBackend`] (a fresh, isolated backend per
//! test) and invokes both macros from an integration test:
//!
//! ```
//! use wq::MemoryStore;
//! use wq_testkit::{Failure, TestBackend};
//!
//! struct Memory;
//!
//! impl TestBackend for Memory {
//!     type Backend = MemoryStore;
//!     async fn create(&self) -> Result<MemoryStore, Failure> {
//!         Ok(MemoryStore::new())
//!     }
//!     async fn destroy(&self, _: MemoryStore) {}
//! }
//!
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() {
//! // In tests/conformance.rs: wq_testkit::conformance_tests!(Memory);
//! wq_testkit::conformance::fifo_per_group(&Memory).await.expect("FIFO holds");
//! # }
//! ```
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

pub mod app;
#[cfg(feature = "bridge")]
pub mod bridge;
pub mod concurrency;
pub mod conformance;
pub mod crash;
pub mod differential;
mod harness;
pub mod late_server;
pub mod properties;
#[cfg(feature = "server")]
pub mod server;
pub mod wakeups;
#[cfg(feature = "whatsapp-e2e")]
pub mod whatsapp_e2e;

pub use harness::{
    Failure, PATIENCE, TEST_TIMEOUT, TestBackend, TestResult, ack, claim, complete_all, crash,
    declare, join, manual_client, must_get, quick_retry, run_bounded, secs, stop, stop_within,
    token, wait_until, with_backend, within,
};

/// Expands into one `#[tokio::test]` per conformance test, in a module
/// `engine` (the hot path's guarantees) and a module `admin` (the
/// operator's calls), each on a fresh
/// backend made by the given [`TestBackend`] expression and failed after
/// [`TEST_TIMEOUT`] if it hangs. The calling crate
/// needs `tokio` (with `macros` and `rt-multi-thread`) as a dev-dependency.
#[macro_export]
macro_rules! conformance_tests {
    ($backend:expr) => {
        $crate::__conformance_tests!(engine, $backend;
            fifo_per_group,
            one_in_flight_per_group,
            parallel_across_groups,
            claim_skips_blocked_groups,
            many_groups,
            enqueue_behind_a_running_head_waits,
            idempotent_enqueue,
            concurrent_idempotent_enqueue,
            concurrent_idempotent_enqueue_without_group,
            batch_enqueue_is_atomic,
            bad_input_is_refused,
            enqueue_returns_the_stored_job,
            retries_and_backoff,
            engine_retries_then_kills,
            retry_on_the_last_attempt_kills,
            dead_head_continue_or_hold,
            transport_errors_are_classified,
            delayed_jobs_wait,
            a_lone_delayed_job_becomes_claimable,
            worker_wakes_when_delay_ends,
            chaining_keeps_spacing,
            priorities_order_due_heads,
            repeated_jobs_run_once_per_slot,
            lapsed_leases_are_rescued,
            stale_workers_are_fenced,
            repeated_acks_answer_applied,
            heartbeats_keep_long_jobs,
            crashed_workers_jobs_run_again,
            a_crashed_leaders_jobs_run_again_within_two_leases,
            locks_exclude,
            retention_prunes_finished_jobs,
            shutdown_finishes_or_releases,
            idle_workers_wake_on_enqueue,
            timeouts_and_panics_fail_the_attempt,
            no_loss_under_failures,
            message_id_is_stable_across_attempts,
            steps_continue_without_spending_attempts,
            steps_free_the_slot,
            events_tell_each_transition,
            attempts_are_recorded,
            history_keeps_the_latest_runs,
            sessions_cap_running_jobs,
            session_rates_space_starts,
            steps_keep_their_place_and_take_no_start,
            paused_sessions_hold_their_jobs,
            pause_reasons_guard_resumes,
            new_groups_are_budgeted,
            admissions_race_for_the_last_place,
            claim_skips_blocked_sessions,
            group_gaps_space_a_groups_jobs,
            session_limits_hold_across_workers,
            rate_limited_sessions_wake_their_workers,
            pipeline_types_and_sends_in_order,
            inline_typing_sends_under_a_rate,
            stepped_typing_sends_under_a_rate,
            disconnected_sessions_pause_and_resume,
            another_process_resumes_a_lost_links_pause,
            lost_replies_are_looked_up_not_resent,
            ban_signals_pause_only_their_session,
            new_contacts_wait_for_the_allowance,
            written_sends_wait_for_the_server,
            written_sends_wait_inline,
        );
        $crate::__conformance_tests!(admin, $backend;
            cancel_waiting_and_running,
            cancel_stops_a_running_handler,
            pause_and_resume,
            counts_by_state,
            the_front_of_the_line_is_timed,
            the_leader_prunes_at_its_interval,
            positions_in_group_and_queue,
            listing_filters_and_pages,
            dead_jobs_retry_and_purge,
            sessions_are_listed_with_counts,
            the_leader_audits_its_queues,
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_tests {
    ($group:ident, $backend:expr; $($name:ident),* $(,)?) => {
        mod $group {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let backend = $backend;
                    $crate::run_bounded(stringify!($name), $crate::conformance::$name(&backend))
                        .await;
                }
            )*
        }
    };
}

/// Expands into one `#[tokio::test]` per test of the HTTP service's suite
/// (`server`, with the `server` feature), each on a fresh backend made by
/// the given [`TestBackend`] expression. The calling crate needs `tokio`
/// (with `macros` and `rt-multi-thread`) as a dev-dependency.
#[macro_export]
macro_rules! server_tests {
    ($backend:expr) => {
        $crate::__server_tests!($backend;
            api_stores_lists_and_cancels,
            api_refuses_bad_input_whole,
            api_repairs_dead_jobs_and_blocked_groups,
            api_pauses_queues_and_sessions,
            api_stores_whatsapp_messages,
            tokens_are_required_and_tenants_confined,
            health_metrics_and_openapi,
            malformed_requests_get_json_errors,
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __server_tests {
    ($backend:expr; $($name:ident),* $(,)?) => {$(
        #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let backend = $backend;
            $crate::run_bounded(stringify!($name), $crate::server::$name(&backend)).await;
        }
    )*};
}

/// Expands into one `#[tokio::test]` per test of [`concurrency`], each
/// running a few seeds on fresh backends made by the given [`TestBackend`]
/// expression. The calling crate needs `tokio` (with `macros` and
/// `rt-multi-thread`) as a dev-dependency.
#[macro_export]
macro_rules! concurrency_tests {
    ($backend:expr) => {
        $crate::__concurrency_tests!($backend;
            racing_enqueues_workers_and_cancels,
            lapsed_leases_are_rescued_under_races,
            batch_enqueues_race_head_acks,
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __concurrency_tests {
    ($backend:expr; $($name:ident),* $(,)?) => {$(
        #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let backend = $backend;
            if let Err(failure) = $crate::concurrency::$name(&backend).await {
                panic!("{} failed: {}", stringify!($name), failure);
            }
        }
    )*};
}

/// Expands into a `#[test] fn properties()` running `cases` random cases
/// (overridden by the `WQ_PROPTEST_CASES` environment variable).
#[macro_export]
macro_rules! property_tests {
    ($backend:expr, $cases:expr) => {
        #[test]
        fn properties() {
            $crate::properties::check(&$backend, $cases);
        }
    };
}

/// Expands into a `#[test] fn behaves_like_memory()` running `cases` random
/// [`differential`] cases (overridden by the `WQ_PROPTEST_CASES`
/// environment variable), each on a fresh backend made by the given
/// [`TestBackend`] expression beside a fresh `wq_memory::MemoryStore`, and a
/// `#[tokio::test] fn past_disagreements_stay_fixed()` replaying
/// [`differential::regressions`]. The calling crate needs `tokio` (with
/// `macros` and `rt-multi-thread`) as a dev-dependency.
#[macro_export]
macro_rules! differential_tests {
    ($backend:expr, $cases:expr) => {
        #[test]
        fn behaves_like_memory() {
            $crate::differential::check(&$backend, $cases);
        }

        #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn past_disagreements_stay_fixed() {
            let backend = $backend;
            $crate::run_bounded(
                "past_disagreements_stay_fixed",
                $crate::differential::replay_regressions(&backend),
            )
            .await;
        }
    };
}
