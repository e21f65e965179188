//! The HTTP service (`wq-server`) on Postgres, each test in its own
//! schema: its API, tokens and tenants, health, metrics and malformed
//! requests.
#![cfg(feature = "server")]

mod support;

wq_testkit::server_tests!(support::Postgres);
